// gemv's streaming path (M = 1, E4M3 x with E4M3 W; gemv.h "The streaming path" has the contract and the why).
//
// One block per SM (grid = min(SMs, N)); block b owns the contiguous W rows [b N / G, (b + 1) N / G), i.e. one
// contiguous byte range of a packed W. Warp 16 (the producer) streams that range through a ring of shared-memory
// stages with bulk copies (cp.async.bulk, the TMA engine's 1-D form: one instruction per stage, completion counted
// in bytes on the stage's `full` mbarrier); warps 0-15 (the consumers) take the rows round robin (block row j to warp
// j % 16), each row with the M = 1 CUDA-core loop's arithmetic (lane l: 16-byte chunks l, l + 32, ... ascending,
// fmaf in element order, then the xor butterfly and gemv's epilogue), and release a stage on its `empty` mbarrier
// (one arrival per consumer warp) for the producer to refill.
//
// The point is the order of events under PDL: the producer starts the weight stream BEFORE the PDL wait (W is not
// written inside a decode step's PDL chain: gemv.h states the condition), so while the kernel before it runs, each
// block fills its ring (up to ~190 KB per SM, ~25 MB over 132 SMs: all of a Gemma QKV / O weight, a third of fc2).
// The consumers wait (griddepcontrol.wait), stage x in shared memory and compute. And the kernel lets its own
// dependents launch at once, so the next kernel's blocks are resident (in their own wait) before this one ends.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "common/cuda_check.h"
#include "common/check.h"
#include "common/env.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/gemm/gemv.h"
#include "kernels/gemm/gemv_device.cuh"
#include "kernels/launch/device_info.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {

constexpr int kConsumerWarps = 16;
constexpr int kStreamThreads = 32 * (kConsumerWarps + 1);  // + the producer warp
constexpr int kStageTarget = 16384;                         // bytes per stage: whole W rows, at least one
constexpr int kMinStages = 2;

// ---- mbarrier and bulk-copy primitives (PTX ISA 8.0, sm_90) --------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
// Makes the initialised barriers visible to the async proxy (the bulk copies' complete_tx) and the other threads.
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
// The producer's arrival: one arrival plus `bytes` of expected transaction count for this phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
      : "=r"(done)
      : "r"(smem_addr(bar)), "r"(parity)
      : "memory");
  return done != 0;
}
// Waits for the phase with this parity to complete. A barrier that never completes is a bug (a miscounted
// arrival or byte count): trap after ~10 s of clock rather than hang the process.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  if (mbar_try_wait(bar, parity)) return;
  const long long start = clock64();
  while (!mbar_try_wait(bar, parity)) {
    if (clock64() - start > (1LL << 34)) __trap();
  }
}
// bytes (a multiple of 16, both addresses 16-byte aligned) from global src to shared dst; completion counted on bar.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
// bar.sync on a named barrier for the consumer warps only (the producer never joins).
__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;" ::"r"(kConsumerWarps * 32) : "memory");
}

// One warp's FP32 lane sum of a W row against x, both E4M3 codes in shared memory, `chunks` 16-byte chunks: lane l
// takes chunks l, l + 32, ... ascending, the two 8-element halves of each in element order (gemv_body's M = 1
// arithmetic, so the butterfly after it gives the CUDA-core loop's bits).
__device__ __forceinline__ float lane_dot(const uint4* w, const uint4* x, int chunks, int lane) {
  constexpr int kUnroll = kLoadsPerLane;
  float acc = 0.0f;
  for (int base = lane; base < chunks; base += 32 * kUnroll) {
    uint4 wv[kUnroll], xv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = base + 32 * u;
      if (chunk < chunks) {
        wv[u] = w[chunk];
        xv[u] = x[chunk];
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + 32 * u >= chunks) break;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float wf[8], xf[8];
        unpack8<true>(wv[u], h, wf);
        unpack8<true>(xv[u], h, xf);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc = fmaf(xf[e], wf[e], acc);
      }
    }
  }
  return acc;
}

// Shared memory: [ring: stages x stage_bytes][x: K bytes][full: stages x 8][empty: stages x 8].
__global__ void __launch_bounds__(kStreamThreads, 1)
    gemv_stream_kernel(const GemvParams p, int rows_per_stage, int stages) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int k = p.k;  // bytes per W row and of x (E4M3)
  const int stage_bytes = rows_per_stage * k;
  uint8_t* ring = smem;
  uint8_t* xs = smem + static_cast<int64_t>(stages) * stage_bytes;
  uint64_t* full = reinterpret_cast<uint64_t*>(xs + k);
  uint64_t* empty = full + stages;
  const int64_t row0 = static_cast<int64_t>(p.n) * blockIdx.x / gridDim.x;
  const int rows = static_cast<int>(static_cast<int64_t>(p.n) * (blockIdx.x + 1) / gridDim.x - row0);
  const int nstages = (rows + rows_per_stage - 1) / rows_per_stage;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumerWarps);
    }
    mbar_init_fence();
  }
  __syncthreads();
  // The next kernel may be scheduled now: it only runs past its own PDL wait once this grid has completed.
  dev::pdl_launch_dependents();

  if (warp == kConsumerWarps) {
    // The producer: the block's W bytes, stage by stage; before the PDL wait (W is constant in the chain).
    if (lane == 0) {
      const uint8_t* src = static_cast<const uint8_t*>(p.w) + row0 * k;
      for (int i = 0; i < nstages; ++i) {
        const int slot = i % stages;
        if (i >= stages) mbar_wait(&empty[slot], ((i / stages) - 1) & 1);
        const uint32_t bytes = static_cast<uint32_t>(min(rows_per_stage, rows - i * rows_per_stage)) * k;
        mbar_arrive_expect_tx(&full[slot], bytes);
        bulk_copy(ring + static_cast<int64_t>(slot) * stage_bytes, src + static_cast<int64_t>(i) * stage_bytes, bytes,
                  &full[slot]);
      }
    }
    return;
  }

  // The consumers: x (written by the kernel before this one) after the PDL wait, into shared memory.
  dev::pdl_wait();
  const int chunks = k / 16;
  for (int c = threadIdx.x; c < chunks; c += kConsumerWarps * 32) {
    reinterpret_cast<uint4*>(xs)[c] = __ldg(static_cast<const uint4*>(p.x) + c);
  }
  consumers_sync();
  const float scale = out_scale(p);
  const uint4* x = reinterpret_cast<const uint4*>(xs);
  for (int i = 0; i < nstages; ++i) {
    const int slot = i % stages;
    const int first = i * rows_per_stage, n_rows = min(rows_per_stage, rows - first);
    mbar_wait(&full[slot], (i / stages) & 1);
    const uint8_t* stage = ring + static_cast<int64_t>(slot) * stage_bytes;
    // This warp's rows of the stage: block rows j with j % kConsumerWarps == warp.
    for (int r = (warp - first % kConsumerWarps + kConsumerWarps) % kConsumerWarps; r < n_rows; r += kConsumerWarps) {
      const float acc = dev::warp_sum(lane_dot(reinterpret_cast<const uint4*>(stage + static_cast<int64_t>(r) * k), x,
                                               chunks, lane));
      if (lane == 0) store_out(p, 0, row0 + first + r, acc, scale);
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[slot]);
  }
}

struct StreamLayout {
  int rows_per_stage = 0, stages = 0;
  std::size_t smem = 0;
};
// The ring for rows of k bytes in ring_bytes of shared memory: stages of whole rows near kStageTarget bytes.
StreamLayout stream_layout(int64_t k, int64_t ring_bytes) {
  StreamLayout l;
  l.rows_per_stage = static_cast<int>(std::max<int64_t>(1, kStageTarget / k));
  const int64_t stage_bytes = l.rows_per_stage * k;
  l.stages = static_cast<int>(std::min<int64_t>(64, ring_bytes / stage_bytes));
  l.smem = static_cast<std::size_t>(l.stages * stage_bytes + k + 16 * l.stages);
  return l;
}

}  // namespace

namespace tuning {
namespace {
// TEGEMMA_GEMV_STREAM_KB (read once: the ring's KB, 0 = off) for the decode A/B runs; set_gemv_stream_kb overrides.
std::atomic<int>& stream_kb_setting() {
  static std::atomic<int> v{static_cast<int>(env_int("TEGEMMA_GEMV_STREAM_KB", kGemvStreamKbDefault, 0, 224))};
  return v;
}
}  // namespace
void set_gemv_stream_kb(int kb) {
  TG_CHECK(kb >= 0 && kb <= 224, "set_gemv_stream_kb: KB in [0, 224], got ", kb);
  stream_kb_setting().store(kb);
}
int gemv_stream_kb() { return stream_kb_setting().load(); }
}  // namespace tuning

bool gemv_takes_stream(DType x, DType w, int64_t m, int64_t k, int64_t ldw) {
  if (x != DType::E4M3 || w != DType::E4M3 || m != 1 || ldw != k || k % 16 != 0) return false;
  const int kb = tuning::gemv_stream_kb();
  if (kb == 0) return false;
  const StreamLayout l = stream_layout(k, static_cast<int64_t>(kb) * 1024);
  return l.stages >= kMinStages && l.smem <= static_cast<std::size_t>(max_smem_per_block());
}

void launch_gemv_stream(const GemvParams& p, cudaStream_t stream) {
  const StreamLayout l = stream_layout(p.k, static_cast<int64_t>(tuning::gemv_stream_kb()) * 1024);
  TG_CHECK(l.stages >= kMinStages && p.m == 1 && p.ldw == p.k, "gemv stream path: not eligible (K = ", p.k,
           ", ldw = ", p.ldw, ", M = ", p.m, ")");
  resident_blocks(reinterpret_cast<const void*>(gemv_stream_kernel), kStreamThreads, l.smem);  // raises the limit
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(sm_count(), p.n));
  launch(gemv_stream_kernel, grid, kStreamThreads, l.smem, stream, p, l.rows_per_stage, l.stages);
}

}  // namespace tg::kernels::cuda
