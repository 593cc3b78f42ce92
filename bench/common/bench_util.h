// The benchmark harness shared by every bench_* binary.
//
//  - CudaEventTimer: RAII timer built inside `for (auto _ : state)`; records CUDA events on the work's
//    stream around the body and sets the manual iteration time (register with ->UseManualTime()).
//    Optionally flushes L2 first (a memset over a buffer twice the L2 size), for inputs that fit in L2.
//  - Roofline counters: set_roofline(state, bytes, flops, ceiling) adds bytes/s, FLOP/s and the fraction
//    of the HBM roofline (4.1 TB/s, docs/gpu-machine.md) and of a GEMM ceiling measured in the same run.
//  - bm_gemm_ceiling(state, c): the in-run GEMM ceiling benchmark (8192^3 through kernels/gemm) that bench_model,
//    bench_train and bench_layer register first, so their gemm_roofline_frac is against this run's ceiling.
//  - TG_BENCH_MAIN(): main() that puts provenance (GPU, driver, CUDA, cuBLASLt, cuDNN, commit, build
//    type, SM clock before the run) into the JSON context, runs, and appends the SM clock after the run
//    to the JSON file (--benchmark_out) so throttling is visible.
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "common/cuda_check.h"
#include "common/gemma_config.h"
#include "common/tensor.h"

namespace tg::bench {

// HBM roofline used for every memory-bound figure: device-to-device copy on the H200 (gpu-machine.md).
inline constexpr double kHbmBytesPerSecond = 4.1e12;
// GEMM ceilings (FLOP/s) used when the in-run measurement is not available (bench filtered out).
inline constexpr double kDocBf16GemmFlops = 804e12;   // LibTorch 8192^3 BF16 on the H200
inline constexpr double kDocFp8GemmFlops = 1360e12;   // torch._scaled_mm 8192^3 E4M3 on the H200

enum class Ceiling { kBf16Gemm, kFp8Gemm };
// The measured ceiling if a ceiling benchmark ran earlier in this process, else the documented one.
double gemm_ceiling(Ceiling c);
void set_measured_ceiling(Ceiling c, double flops_per_second);

// The ceiling benchmark body: out[n, n] = A A^T with n = kCeilingGemmSize through kernels/gemm, A drawn by
// random_device (never zeros: GEMM power, and so the clocks, depend on the data); BF16, or per-tensor E4M3 quantized
// from that A with the current-scaling rule (kernels/recipe, E4M3 max 448) and fast accumulation. One untimed call,
// then 10 back-to-back calls per timed iteration (CUDA events on the default stream; the time per call is
// reported). Records the mean FLOP/s with set_measured_ceiling and sets the roofline counters (fraction 1.0 by
// construction). Register it before the benchmarks that refer to it, with UseManualTime().
inline constexpr int64_t kCeilingGemmSize = 8192;
void bm_gemm_ceiling(benchmark::State& state, Ceiling c);

// Adds counters: "bytes_per_second" and "hbm_roofline_frac" when bytes > 0; "flops" (FLOP/s) and
// "gemm_roofline_frac" (vs `ceiling`) when flops > 0. Values are per iteration.
void set_roofline(benchmark::State& state, double bytes, double flops, Ceiling ceiling = Ceiling::kBf16Gemm);
// Adds a tokens/s counter.
void set_tokens(benchmark::State& state, double tokens_per_iteration);

// Evicts the L2 by reading a buffer of twice its size (no stores: it leaves no dirty lines behind).
class L2Flusher {
 public:
  L2Flusher();
  void flush(cudaStream_t stream);

 private:
  Tensor buf_;
  Tensor amax_;
};

class CudaEventTimer {
 public:
  CudaEventTimer(benchmark::State& state, cudaStream_t stream = nullptr, bool flush_l2 = false);
  ~CudaEventTimer();
  CudaEventTimer(const CudaEventTimer&) = delete;
  CudaEventTimer& operator=(const CudaEventTimer&) = delete;

 private:
  benchmark::State& state_;
  cudaStream_t stream_;
  cudaEvent_t start_{}, stop_{};
};

// The Gemma FLOP model the benchmarks share: the weights of one decoder layer's linear maps (fused QKV, O, gate and
// up, down: D (H + 2 Hkv) Dh + H Dh D + 3 D F), and one layer's causal attention FLOPs for `batch` sequences with
// `pairs` query-key pairs each (QK^T and PV: 4 H Dh per pair; causal_pairs(S) = S (S + 1) / 2 for a prefill).
double layer_linear_params(const GemmaConfig& c);
double layer_attention_flops(const GemmaConfig& c, double batch, double pairs);
inline double causal_pairs(double s) { return s * (s + 1) / 2; }

// Runs body `warmups` times untimed (plans, workspaces, caches), waits for the device, then runs it once per
// benchmark iteration between CUDA events on the legacy default stream (an L2 flush before each when asked).
// Exceptions propagate to the caller (which reports them with state.SkipWithError).
template <typename F>
void time_iterations(benchmark::State& state, F&& body, int warmups = 1, bool flush_l2 = false) {
  for (int i = 0; i < warmups; ++i) body();
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  for (auto _ : state) {
    CudaEventTimer timer(state, nullptr, flush_l2);
    body();
  }
}

// A device tensor of `shape` in `dtype` (any float format), filled by tiling a 16 MiB host pattern of about
// N(0, 1) values (Irwin-Hall(4), drawn once per dtype), started at an element chosen by `seed`. Never zeros: GEMM
// power, and so clocks, depend on the data.
Tensor random_device(DType dtype, Shape shape, uint64_t seed);

// Adds a key to the JSON context (call before RunSpecifiedBenchmarks, e.g. from a binary's setup).
void add_context(const std::string& key, const std::string& value);
int bench_main(int argc, char** argv);
// The current SM clock of device 0 in MHz (NVML), or -1 when unavailable.
int sm_clock_mhz();

}  // namespace tg::bench

#define TG_BENCH_MAIN() \
  int main(int argc, char** argv) { return ::tg::bench::bench_main(argc, argv); }
