#include "kernels/launch/device_info.h"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "common/cuda_check.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {
std::mutex& mutex() {
  static std::mutex mu;
  return mu;
}
int attribute(cudaDeviceAttr attr) {
  static auto* cache = new std::map<std::pair<int, int>, int>();  // (device, attribute) -> value; immortal
  const int device = current_device();
  const std::lock_guard<std::mutex> lock(mutex());
  const auto key = std::make_pair(device, static_cast<int>(attr));
  if (const auto it = cache->find(key); it != cache->end()) return it->second;
  int v = 0;
  TG_CHECK_CUDA(cudaDeviceGetAttribute(&v, attr, device));
  cache->emplace(key, v);
  return v;
}
}  // namespace

int current_device() {
  int device = 0;
  TG_CHECK_CUDA(cudaGetDevice(&device));
  return device;
}

int sm_count() { return attribute(cudaDevAttrMultiProcessorCount); }

int max_smem_per_block() { return attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin); }

int resident_blocks(const void* kernel, int threads, std::size_t smem) {
  struct SmemState {
    std::size_t static_bytes = 0;  // the kernel's own __shared__ arrays
    std::size_t limit = 0;         // the dynamic limit set so far (0: the default 48 KB minus the static size)
  };
  // (device, kernel) -> its shared-memory state; (device, kernel, threads, smem) -> blocks.
  static auto* states = new std::map<std::pair<int, const void*>, SmemState>();
  static auto* blocks = new std::map<std::tuple<int, const void*, int, std::size_t>, int>();
  const int device = current_device();
  const std::lock_guard<std::mutex> lock(mutex());
  if (smem > 0) {
    // The opt-in is needed once static + dynamic shared memory passes 48 KB (the decode split kernel with 8 heads
    // per block has 17 KB of static arrays beside 32 KB of E4M3 tiles and failed to launch without it).
    const auto [it, fresh] = states->try_emplace(std::make_pair(device, kernel));
    SmemState& st = it->second;
    if (fresh) {
      cudaFuncAttributes fa{};
      TG_CHECK_CUDA(cudaFuncGetAttributes(&fa, kernel));
      st.static_bytes = fa.sharedSizeBytes;
    }
    if (st.static_bytes + smem > 48 * 1024 && smem > st.limit) {
      TG_CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      st.limit = smem;
    }
  }
  const auto key = std::make_tuple(device, kernel, threads, smem);
  if (const auto it = blocks->find(key); it != blocks->end()) return it->second;
  int n = 0;
  TG_CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem));
  n = n < 1 ? 1 : n;
  blocks->emplace(key, n);
  return n;
}

void launch_failed(cudaError_t err, const void* kernel, dim3 grid, dim3 block, std::size_t smem) {
  (void)cudaGetLastError();  // a refused launch leaves a non-sticky error behind: clear it for the next check
  const char* name = nullptr;
  if (cudaFuncGetName(&name, kernel) != cudaSuccess || name == nullptr) name = "(unnamed kernel)";
  TG_FAIL("CUDA error ", static_cast<long>(err), " (", cudaGetErrorString(err), ") launching ", name, " with grid (",
          grid.x, ", ", grid.y, ", ", grid.z, "), block (", block.x, ", ", block.y, ", ", block.z, "), ", smem,
          " B of dynamic shared memory");
}

}  // namespace tg::kernels::cuda
