#include "bench/common/bench_util.h"

#include <dlfcn.h>

#include <algorithm>
#include <exception>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/cuda_check.h"
#include "common/file_io.h"
#include "common/fp8_tensor.h"
#include "common/json_util.h"
#include "common/numeric.h"
#include "kernels/gemm/gemm.h"
#include "kernels/provenance.h"
#include "kernels/quantize/quantize.h"
#include "kernels/recipe/recipe.h"

namespace tg::bench {

namespace {
std::map<Ceiling, double>& measured() {
  static std::map<Ceiling, double> m;
  return m;
}
}  // namespace

double gemm_ceiling(Ceiling c) {
  auto it = measured().find(c);
  if (it != measured().end()) return it->second;
  return c == Ceiling::kBf16Gemm ? kDocBf16GemmFlops : kDocFp8GemmFlops;
}

void set_measured_ceiling(Ceiling c, double flops_per_second) { measured()[c] = flops_per_second; }

void set_roofline(benchmark::State& state, double bytes, double flops, Ceiling ceiling) {
  using benchmark::Counter;
  if (bytes > 0) {
    state.counters["bytes_per_second"] = Counter(bytes, Counter::kIsIterationInvariantRate);
    state.counters["hbm_roofline_frac"] = Counter(bytes / kHbmBytesPerSecond, Counter::kIsIterationInvariantRate);
  }
  if (flops > 0) {
    state.counters["flops"] = Counter(flops, Counter::kIsIterationInvariantRate);
    state.counters["gemm_roofline_frac"] =
        Counter(flops / gemm_ceiling(ceiling), Counter::kIsIterationInvariantRate);
  }
}

void set_tokens(benchmark::State& state, double tokens_per_iteration) {
  state.counters["tokens_per_second"] =
      benchmark::Counter(tokens_per_iteration, benchmark::Counter::kIsIterationInvariantRate);
}

double layer_linear_params(const GemmaConfig& c) {
  const double d = static_cast<double>(c.hidden_size), q = static_cast<double>(c.q_dim()),
               kv = static_cast<double>(c.kv_dim()), f = static_cast<double>(c.intermediate_size);
  return d * (q + 2 * kv) + q * d + 3 * d * f;
}

double layer_attention_flops(const GemmaConfig& c, double batch, double pairs) {
  return 4.0 * batch * static_cast<double>(c.num_attention_heads) * static_cast<double>(c.head_dim) * pairs;
}

void bm_gemm_ceiling(benchmark::State& state, Ceiling c) {
  if (!cuda_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const bool fp8 = c == Ceiling::kFp8Gemm;
  constexpr int64_t n = kCeilingGemmSize;
  constexpr int kCallsPerIteration = 10;
  try {
    const Tensor a = random_device(DType::BF16, {n, n}, 1);
    Tensor out = Tensor::empty(DType::BF16, {n, n}, Device::CUDA);
    Fp8Tensor qa;
    if (fp8) {
      qa = Fp8Tensor::per_tensor(DType::E4M3, n, n, /*rowwise=*/true, /*columnwise=*/false, Device::CUDA);
      kernels::compute_amax(a.view(), qa.view().amax);
      kernels::current_scaling_scale(qa.view().amax, qa.view().scale, TensorView{}, kernels::ScaleRule{});
      kernels::quantize(a.view(), qa.view());
    }
    kernels::GemmOptions opt;
    opt.split_accumulate = false;  // FP8: fast accumulation (the ceiling); ignored by the BF16 GEMM
    auto op = [&] {
      if (fp8) {
        kernels::gemm_fp8(qa.view(), qa.view(), out.view(), opt);
      } else {
        kernels::gemm(a.view(), a.view(), out.view());
      }
    };
    op();  // warm-up: heuristic, workspace
    TG_CHECK_CUDA(cudaDeviceSynchronize());
    double seconds = 0;
    cudaEvent_t e0{}, e1{};
    TG_CHECK_CUDA(cudaEventCreate(&e0));
    TG_CHECK_CUDA(cudaEventCreate(&e1));
    for (auto _ : state) {
      TG_CHECK_CUDA(cudaEventRecord(e0, nullptr));
      for (int i = 0; i < kCallsPerIteration; ++i) op();
      TG_CHECK_CUDA(cudaEventRecord(e1, nullptr));
      TG_CHECK_CUDA(cudaEventSynchronize(e1));
      float ms = 0;
      TG_CHECK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
      const double per_call = static_cast<double>(ms) * 1e-3 / kCallsPerIteration;
      state.SetIterationTime(per_call);
      seconds += per_call;
    }
    TG_CHECK_CUDA(cudaEventDestroy(e0));
    TG_CHECK_CUDA(cudaEventDestroy(e1));
    const double flops = 2.0 * n * n * n;
    if (seconds > 0) set_measured_ceiling(c, flops * static_cast<double>(state.iterations()) / seconds);
    set_roofline(state, 0.0, flops, c);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

L2Flusher::L2Flusher() {
  int dev = 0, l2 = 0;
  TG_CHECK_CUDA(cudaGetDevice(&dev));
  TG_CHECK_CUDA(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  // >= 2 x L2 bytes of BF16 as the 2-D view compute_amax takes ([rows, 1024]).
  const int64_t cols = 1024;
  buf_ = Tensor::empty(DType::BF16, {(static_cast<int64_t>(l2) + cols - 1) / cols, cols}, Device::CUDA);
  TG_CHECK_CUDA(cudaMemset(buf_.data(), 0, buf_.nbytes()));
  amax_ = Tensor::empty(DType::F32, {1}, Device::CUDA);
}

void L2Flusher::flush(cudaStream_t stream) {
  // A read of 2 x L2, never a write: it evicts every line (the timed work then reads its operands from HBM), and
  // the dirty lines of earlier work are written back here, before the timed region, instead of during it. The
  // previous flush, a memset of the buffer, left up to an L2 (~50 MB) of dirty lines whose write-back the timed
  // kernel paid for: ~12 us at 4.1 TB/s, uncounted bytes that made the decode GEMM / GEMV / attention figures
  // (5-60 us kernels) look slower than they are inside a decode step.
  kernels::compute_amax(buf_.view(), amax_.view(), Stream{stream});
}

CudaEventTimer::CudaEventTimer(benchmark::State& state, cudaStream_t stream, bool flush_l2)
    : state_(state), stream_(stream) {
  if (flush_l2) {
    static L2Flusher flusher;
    flusher.flush(stream_);
  }
  TG_CHECK_CUDA(cudaEventCreate(&start_));
  TG_CHECK_CUDA(cudaEventCreate(&stop_));
  TG_CHECK_CUDA(cudaEventRecord(start_, stream_));
}

CudaEventTimer::~CudaEventTimer() {
  // Destructors must not throw: a CUDA failure here is reported through the benchmark's error state.
  float ms = 0.0f;
  if (cudaEventRecord(stop_, stream_) != cudaSuccess || cudaEventSynchronize(stop_) != cudaSuccess ||
      cudaEventElapsedTime(&ms, start_, stop_) != cudaSuccess) {
    state_.SkipWithError("CUDA error while timing");
  }
  state_.SetIterationTime(static_cast<double>(ms) / 1000.0);
  (void)cudaEventDestroy(start_);
  (void)cudaEventDestroy(stop_);
}

// NVML is reached through dlopen: it ships with the driver (libnvidia-ml.so.1), not with the toolkit
// on the build machine, so there is nothing to link against at build time. The three entry points
// used are part of NVML's stable C ABI (0 = NVML_SUCCESS, clock type 1 = NVML_CLOCK_SM).
int sm_clock_mhz() {
  using InitFn = int (*)();
  using HandleFn = int (*)(unsigned int, void**);
  using ClockFn = int (*)(void*, int, unsigned int*);
  static void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return -1;
  static auto init = reinterpret_cast<InitFn>(dlsym(lib, "nvmlInit_v2"));
  static auto handle = reinterpret_cast<HandleFn>(dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  static auto clock = reinterpret_cast<ClockFn>(dlsym(lib, "nvmlDeviceGetClockInfo"));
  static const bool ok = init && handle && clock && init() == 0;
  if (!ok) return -1;
  void* dev = nullptr;
  unsigned int mhz = 0;
  constexpr int kClockSm = 1;
  if (handle(0, &dev) != 0 || clock(dev, kClockSm, &mhz) != 0) return -1;
  return static_cast<int>(mhz);
}

namespace {
// The 16 MiB host pattern of `dtype` (Irwin-Hall(4) draws from one fixed stream), made once per dtype: drawing it
// took ~0.1 s a call, and the rotating-buffer benchmarks call random_device for every buffer set of every
// repetition (session 5: most of the full suite's 4 s per quantize benchmark was outside the timed loops).
const std::vector<uint8_t>& host_pattern(DType dtype) {
  static std::map<DType, std::vector<uint8_t>> cache;
  auto it = cache.find(dtype);
  if (it != cache.end()) return it->second;
  const std::size_t esize = dtype_size(dtype);
  std::vector<uint8_t> pattern((std::size_t{16} << 20) / esize * esize);
  uint64_t s = 0x9E3779B97F4A7C15ull;
  for (std::size_t i = 0; i < pattern.size() / esize; ++i) {
    double acc = 0.0;
    for (int r = 0; r < 4; ++r) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      acc += static_cast<double>(s >> 11) * 0x1.0p-53;
    }
    const uint32_t bits = encode(dtype, static_cast<float>((acc - 2.0) * 1.7320508));
    std::memcpy(pattern.data() + i * esize, &bits, esize);  // little-endian: the low bytes
  }
  return cache.emplace(dtype, std::move(pattern)).first->second;
}
}  // namespace

Tensor random_device(DType dtype, Shape shape, uint64_t seed) {
  Tensor t = Tensor::empty(dtype, shape, Device::CUDA);
  const std::vector<uint8_t>& base = host_pattern(dtype);
  // Each seed starts the pattern at its own element (a rotation): different seeds give different tensors (buffer
  // sets differ, operands are not copies of each other) at the cost of one 16 MiB host copy.
  const std::size_t esize = dtype_size(dtype), elements = base.size() / esize;
  const std::size_t start = static_cast<std::size_t>((seed * 0xD1B54A32D192ED03ull) >> 17) % elements * esize;
  std::vector<uint8_t> pattern(base.size());
  std::rotate_copy(base.begin(), base.begin() + static_cast<std::ptrdiff_t>(start), base.end(), pattern.begin());
  // One upload of the pattern, then the tensor doubles itself device to device: byte x = pattern[x mod 16 MiB]
  // as before (every copied prefix is a whole number of patterns), but gigabyte tensors (bench_train_kernels'
  // logits and AdamW state) fill at HBM speed instead of one pageable 16 MiB upload after another.
  char* dst = static_cast<char*>(t.data());
  const std::size_t total = t.nbytes();
  std::size_t filled = std::min(pattern.size(), total);
  if (filled > 0) TG_CHECK_CUDA(cudaMemcpy(dst, pattern.data(), filled, cudaMemcpyHostToDevice));
  while (filled < total) {
    const std::size_t n = std::min(filled, total - filled);
    TG_CHECK_CUDA(cudaMemcpy(dst + filled, dst, n, cudaMemcpyDeviceToDevice));
    filled += n;
  }
  // The tensor is complete on return, as with the synchronous uploads before (for users on any stream).
  if (total > pattern.size()) TG_CHECK_CUDA(cudaStreamSynchronize(nullptr));
  return t;
}

void add_context(const std::string& key, const std::string& value) { benchmark::AddCustomContext(key, value); }

namespace {
std::string out_path(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const std::string prefix = "--benchmark_out=";
    if (a.rfind(prefix, 0) == 0) return a.substr(prefix.size());
  }
  return "";
}
}  // namespace

int bench_main(int argc, char** argv) {
  const std::string out = out_path(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  if (!cuda_available()) {
    std::fprintf(stderr, "no CUDA device: the benchmarks need a GPU\n");
    return 2;
  }
  for (const auto& [k, v] : kernels::provenance()) add_context("tegemma_" + k, v);
  add_context("hbm_roofline_bytes_per_second", std::to_string(kHbmBytesPerSecond));
  add_context("sm_clock_mhz_before", std::to_string(sm_clock_mhz()));
  benchmark::RunSpecifiedBenchmarks();
  const int after = sm_clock_mhz();
  benchmark::Shutdown();
  std::fprintf(stderr, "SM clock after the run: %d MHz\n", after);
  if (!out.empty()) {
    // Google Benchmark writes the context before the run; append the clock after it, atomically.
    try {
      // Bare NaN / inf (the cv of a counter that is 0 in every repetition) become null: the file is JSON again.
      nlohmann::json j = nlohmann::json::parse(json_nonfinite_to_null(read_file(out)));
      j["context"]["sm_clock_mhz_after"] = std::to_string(after);
      for (const auto& c : {Ceiling::kBf16Gemm, Ceiling::kFp8Gemm}) {
        j["context"][c == Ceiling::kBf16Gemm ? "bf16_gemm_ceiling_flops" : "fp8_gemm_ceiling_flops"] =
            std::to_string(gemm_ceiling(c));
      }
      write_file_atomic(out, j.dump(2));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "could not annotate %s: %s\n", out.c_str(), e.what());
      return 1;
    }
  }
  return 0;
}

}  // namespace tg::bench
