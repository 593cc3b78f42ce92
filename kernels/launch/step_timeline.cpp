#include "kernels/launch/step_timeline.h"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <mutex>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/file_io.h"
#if TEGEMMA_HAVE_CUDA
#include <cuda_runtime.h>

#include "common/cuda_check.h"
#endif

namespace tg::kernels {

namespace {
struct Registry {
  std::mutex mu;
  std::vector<StepTimelineSetter> setters;  // one per translation unit with kernels (launch.cuh)
  std::vector<StepTimelineLaunch> launches;
  bool active = false;
};
Registry& registry() {
  static Registry r;  // constructed on first use: the translation units register during static initialisation
  return r;
}
}  // namespace

bool step_timeline_built() {
#if TEGEMMA_STEP_TIMELINE && TEGEMMA_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

bool register_step_timeline_setter(StepTimelineSetter setter) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.setters.push_back(setter);
  return true;
}

bool step_timeline_active() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.active;
}

void step_timeline_note_launch(const void* kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                               bool capturing) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (!r.active) return;
  std::string name = "?";
#if TEGEMMA_HAVE_CUDA
  const char* n = nullptr;
  if (cudaFuncGetName(&n, kernel) == cudaSuccess && n != nullptr) {
    int status = 0;
    const std::unique_ptr<char, void (*)(void*)> demangled(abi::__cxa_demangle(n, nullptr, nullptr, &status), std::free);
    name = status == 0 && demangled ? demangled.get() : n;
  }
#else
  (void)kernel;
#endif
  r.launches.push_back(StepTimelineLaunch{std::move(name), {gx, gy, gz}, bx, capturing});
}

StepTimeline::StepTimeline(std::size_t capacity) : capacity_(capacity) {
  TG_CHECK(step_timeline_built(),
           "step timeline: this build records none; configure a profiling build with -DTEGEMMA_STEP_TIMELINE=ON "
           "(ci/step_timeline.sh does)");
  TG_CHECK(capacity > 0, "step timeline: capacity must be > 0");
#if TEGEMMA_HAVE_CUDA
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  TG_CHECK(!r.active, "step timeline: one is already recording (one at a time per process)");
  buffer_ = Buffer((2 + 4 * capacity) * sizeof(unsigned long long), Device::CUDA);
  const unsigned long long head[2] = {0, capacity};
  TG_CHECK_CUDA(cudaMemcpy(buffer_.data(), head, sizeof head, cudaMemcpyHostToDevice));
  for (StepTimelineSetter set : r.setters) set(static_cast<unsigned long long*>(buffer_.data()));
  r.launches.clear();
  r.active = true;
#endif
}

StepTimeline::~StepTimeline() {
#if TEGEMMA_HAVE_CUDA
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.active = false;
  try {  // a destructor must not throw: a failing device leaves the stale pointers to a process that is failing
    TG_CHECK_CUDA(cudaDeviceSynchronize());  // no kernel may still append once the buffer is freed
    for (StepTimelineSetter set : r.setters) set(nullptr);
  } catch (const Error&) {
  }
#endif
}

std::vector<StepTimelineRecord> StepTimeline::records(std::uint64_t* total) const {
  std::vector<StepTimelineRecord> out;
#if TEGEMMA_HAVE_CUDA
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  unsigned long long head[2] = {0, 0};  // records appended, capacity
  TG_CHECK_CUDA(cudaMemcpy(head, buffer_.data(), sizeof head, cudaMemcpyDeviceToHost));
  if (total != nullptr) *total = head[0];
  const std::size_t n = std::min<std::size_t>(head[0], capacity_);
  std::vector<unsigned long long> words(4 * n);  // only the records written, not the whole buffer
  TG_CHECK_CUDA(cudaMemcpy(words.data(), static_cast<const unsigned long long*>(buffer_.data()) + 2,
                           words.size() * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned long long* w = &words[4 * i];
    out.push_back(StepTimelineRecord{w[0], w[1],
                                     {static_cast<unsigned>(w[2]), static_cast<unsigned>(w[2] >> 32),
                                      static_cast<unsigned>(w[3])},
                                     static_cast<unsigned>(w[3] >> 32)});
  }
#else
  if (total != nullptr) *total = 0;
#endif
  return out;
}

std::vector<StepTimelineLaunch> StepTimeline::launches() const {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.launches;
}

void StepTimeline::write_json(const std::string& path) const {
  std::uint64_t total = 0;
  const std::vector<StepTimelineRecord> recs = records(&total);
  nlohmann::json j;
  nlohmann::json ls = nlohmann::json::array();
  for (const StepTimelineLaunch& l : launches()) {
    ls.push_back({{"kernel", l.kernel},
                  {"grid", {l.grid[0], l.grid[1], l.grid[2]}},
                  {"block", l.block},
                  {"captured", l.captured}});
  }
  nlohmann::json rs = nlohmann::json::array();
  for (const StepTimelineRecord& r : recs) {
    rs.push_back({r.entry_ns, r.wait_ns, r.grid[0], r.grid[1], r.grid[2], r.block});
  }
  j["launches"] = ls;
  j["record_fields"] = {"entry_ns", "wait_ns", "grid_x", "grid_y", "grid_z", "block_x"};
  j["records"] = rs;
  j["dropped"] = total - recs.size();
  write_file_atomic(path, j.dump() + "\n");
}

}  // namespace tg::kernels
