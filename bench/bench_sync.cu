// bench_sync: what one dependent kernel boundary costs on this GPU, by the ways a decode step could order its
// kernels (issue 7: the batch-1 step is ~160 dependent kernels, and the time between them is most of its gap to the
// weight-bandwidth roofline).
//
// The workload is a chain of L = 64 dependent steps with an all-to-all dependency, as between two GEMVs: step i's
// G blocks of 128 threads each read the whole vector x_i (2048 floats, through L2), reduce it, and write their
// 2048 / G slice of x_(i+1). The chain is captured once in a CUDA graph and replayed; the figure is the replay time
// divided by L (the reported time / 64), i.e. the boundary's latency plus ~1 us of dependent work. Modes:
//   stream   L kernels, ordinary launches (each starts when the one before has completed)
//   pdl      L kernels, programmatic dependent launch: dev::pdl_wait() first, then pdl_launch_dependents() (what the
//            decode step does today, kernels/launch/programmatic_launch.h)
//   pdl_first  the same, trigger before the wait (the order session 17 measured and dropped: dev::pdl_enter)
//   flag     L kernels, PDL launch attribute for early residency but no griddepcontrol.wait: thread 0 spins on a
//            global arrival counter (ld.acquire.gpu) until all G blocks of the step before have arrived, then the
//            block triggers its dependents and works; each block arrives (threadfence + atomicAdd) after writing
//            its slice. Counters zeroed by one memset node per replay.
//   barrier  one kernel of G blocks (G <= one resident wave) running the L steps with a grid barrier (arrival
//            counter per step, same spin) between them: the persistent-kernel form
// G = 132 (one block per SM), 528 and 4096 (the gemma-2b fc1 GEMV's grid: several waves, and 4096 same-address
// arrivals per step in flag mode; not for the barrier mode, which needs one resident wave). No roofline applies (a
// latency probe: 8 KB per block per step from L2, nothing from HBM once warm); the JSON's hbm_roofline_frac counts
// the L2 bytes read, for completeness only.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bench/common/bench_util.h"
#include "common/cuda_check.h"
#include "common/tensor.h"
#include "kernels/launch/device_info.h"
#include "kernels/launch/launch.cuh"
#include "kernels/launch/programmatic_launch.h"

namespace tg::bench {
namespace {

constexpr int kThreads = 128;
constexpr int kN = 2048;     // floats in x_i
constexpr int kSteps = 64;   // L

enum Mode : int { kStream = 0, kPdl = 1, kPdlFirst = 2, kFlag = 3, kBarrier = 4 };

__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Thread 0 waits until *counter >= expected, then the block proceeds (bar.sync orders the block after it).
__device__ __forceinline__ void wait_count(const unsigned* counter, unsigned expected) {
  if (threadIdx.x == 0) {
    while (load_acquire(counter) < expected) {
    }
  }
  __syncthreads();
}

// After the block's stores: one arrival on *counter, ordered after them.
__device__ __forceinline__ void arrive(unsigned* counter) {
  __threadfence();  // every thread's stores ordered before the arrival (not only thread 0's)
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(counter, 1u);
}

// One step's work: the block sums all of x (through L2: x was written by other blocks), then writes its slice of y.
__device__ __forceinline__ void step_work(const float* x, float* y) {
  __shared__ float part[kThreads / 32];
  float s = 0.0f;
  for (int i = threadIdx.x; i < kN; i += kThreads) s += __ldcg(x + i);
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = s;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += part[w];
  const int per_block = (kN + gridDim.x - 1) / gridDim.x;
  for (int j = threadIdx.x; j < per_block; j += kThreads) {
    const int i = blockIdx.x * per_block + j;
    if (i < kN) y[i] = total * 1e-4f + static_cast<float>(i);
  }
}

template <int kMode>
__global__ void __launch_bounds__(kThreads) chain_step(const float* x, float* y, const unsigned* in, unsigned* out,
                                                       unsigned expected) {
  if constexpr (kMode == kPdlFirst) kernels::dev::pdl_launch_dependents();
  if constexpr (kMode == kPdl || kMode == kPdlFirst) kernels::dev::pdl_wait();
  if constexpr (kMode == kFlag) wait_count(in, expected);
  if constexpr (kMode == kPdl || kMode == kFlag) kernels::dev::pdl_launch_dependents();
  step_work(x, y);
  if constexpr (kMode == kFlag) arrive(out);
}

// The persistent form: step i reads buffer i % 2, writes the other; counters[i] counts step i's arrivals.
__global__ void __launch_bounds__(kThreads) chain_persistent(float* buf, unsigned* counters, int steps) {
  for (int i = 0; i < steps; ++i) {
    if (i > 0) wait_count(counters + i - 1, gridDim.x);
    step_work(buf + (i % 2) * kN, buf + ((i + 1) % 2) * kN);
    arrive(counters + i);
  }
}

// Both buffers after the chain launched eagerly in stream order (no PDL) from zeros, per G (cached).
const std::vector<float>& stream_order_result(int blocks) {
  static std::map<int, std::vector<float>> results;
  auto it = results.find(blocks);
  if (it != results.end()) return it->second;
  Tensor buf = Tensor::zeros(DType::F32, {2, kN}, Device::CUDA);
  Tensor counters = Tensor::zeros(DType::I32, {kSteps + 1}, Device::CUDA);
  float* b = buf.ptr<float>();
  auto* c = reinterpret_cast<unsigned*>(counters.data());
  for (int i = 0; i < kSteps; ++i) {
    kernels::cuda::launch(chain_step<kStream>, blocks, kThreads, 0, nullptr, b + (i % 2) * kN, b + ((i + 1) % 2) * kN,
                          c + i, c + i + 1, 0u);
  }
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  const Tensor host = buf.to(Device::CPU);
  const float* h = host.ptr<float>();
  return results.emplace(blocks, std::vector<float>(h, h + 2 * kN)).first->second;
}

void bm_chain(benchmark::State& state, int mode, int blocks) {
  try {
    const int max_resident =
        kernels::cuda::sm_count() * kernels::cuda::resident_blocks(reinterpret_cast<const void*>(chain_persistent),
                                                                   kThreads, 0);
    if (mode == kBarrier && blocks > max_resident) {  // a grid barrier with blocks not yet resident never opens
      state.SkipWithError("barrier mode needs one resident wave");
      return;
    }
    Tensor buf = Tensor::zeros(DType::F32, {2, kN}, Device::CUDA);
    Tensor counters = Tensor::zeros(DType::I32, {kSteps + 1}, Device::CUDA);
    cudaStream_t s = nullptr;
    TG_CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    float* b = buf.ptr<float>();
    auto* c = reinterpret_cast<unsigned*>(counters.data());
    auto enqueue = [&] {
      // Zeroed per replay: the counters, and x_0 (so that every replay computes the same final vector).
      TG_CHECK_CUDA(cudaMemsetAsync(c, 0, (kSteps + 1) * sizeof(unsigned), s));
      TG_CHECK_CUDA(cudaMemsetAsync(b, 0, 2 * kN * sizeof(float), s));
      if (mode == kBarrier) {
        kernels::cuda::launch(chain_persistent, blocks, kThreads, 0, s, b, c, kSteps);
        return;
      }
      const kernels::ProgrammaticLaunchScope pdl(mode != kStream);
      for (int i = 0; i < kSteps; ++i) {
        const float* x = b + (i % 2) * kN;
        float* y = b + ((i + 1) % 2) * kN;
        // Step 0 waits for nothing (its counter is never arrived on: expected 0).
        const unsigned expected = i == 0 ? 0u : static_cast<unsigned>(blocks);
        const auto step = [&](auto kernel) {
          kernels::cuda::launch(kernel, blocks, kThreads, 0, s, x, y, c + i, c + i + 1, expected);
        };
        if (mode == kStream) step(chain_step<kStream>);
        if (mode == kPdl) step(chain_step<kPdl>);
        if (mode == kPdlFirst) step(chain_step<kPdlFirst>);
        if (mode == kFlag) step(chain_step<kFlag>);
      }
    };
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    TG_CHECK_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    enqueue();
    TG_CHECK_CUDA(cudaStreamEndCapture(s, &graph));
    TG_CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (int w = 0; w < 3; ++w) TG_CHECK_CUDA(cudaGraphLaunch(exec, s));
    TG_CHECK_CUDA(cudaStreamSynchronize(s));
    // Self-check: every block's arithmetic is fixed, so each mode must leave the stream-ordered chain's final vector
    // (computed once per G); a mode that let a step read x before its producers finished would differ.
    const Tensor got = buf.to(Device::CPU);
    const std::vector<float>& want = stream_order_result(blocks);
    if (std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) != 0) {
      state.SkipWithError("the chain's final vector differs from stream order: a dependency was not respected");
      return;
    }
    for (auto _ : state) {
      CudaEventTimer timer(state, s);
      TG_CHECK_CUDA(cudaGraphLaunch(exec, s));
    }
    TG_CHECK_CUDA(cudaStreamSynchronize(s));
    TG_CHECK_CUDA(cudaGraphExecDestroy(exec));
    TG_CHECK_CUDA(cudaGraphDestroy(graph));
    TG_CHECK_CUDA(cudaStreamDestroy(s));
    set_roofline(state, static_cast<double>(kSteps) * blocks * kN * sizeof(float), 0.0);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void register_all() {
  const char* names[] = {"stream", "pdl", "pdl_first", "flag", "barrier"};
  for (int mode = kStream; mode <= kBarrier; ++mode) {
    for (const int blocks : {132, 528, 4096}) {
      if (mode == kBarrier && blocks > 528) continue;  // not one resident wave (bm_chain checks the rest)
      const std::string name = std::string("sync/") + names[mode] + "/G" + std::to_string(blocks) + "/L" +
                               std::to_string(kSteps);
      benchmark::RegisterBenchmark(name.c_str(), [mode, blocks](benchmark::State& st) { bm_chain(st, mode, blocks); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace
}  // namespace tg::bench

int main(int argc, char** argv) {
  tg::bench::register_all();
  return tg::bench::bench_main(argc, argv);
}
