// gemv on the CUDA cores: see gemv.h for the contract and the design.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <utility>

#include "common/cuda_check.h"
#include "common/env.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_sync.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/elementwise/elementwise.cuh"
#include "kernels/gemm/gemv.h"
#include "kernels/launch/device_info.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kLoadsPerLane = 8;  // 16-byte W loads in flight per lane per iteration (128 bytes)

struct GemvParams {
  const void* x;
  const void* w;
  const float* x_scale_inv;  // nullptr: BF16 x
  const float* w_scale_inv;  // nullptr: BF16 W
  void* out;
  const void* residual;      // nullptr: none (may equal out)
  int64_t ldx, ldw, ldo, ldr;  // elements
  int m, n;
  int chunks;  // 16-byte W chunks per row: K / (16 / sizeof(W element))
  float alpha;
  bool out_f32;
  bool early_w;   // issue the first iteration's W loads (registers) before waiting on the previous kernel (PDL)
  // gemv_stream_kernel: chunks per K slice (a multiple of kStageChunks; == chunks without split-K), and with
  // gridDim.y > 1 the split-K workspace: partials [gridDim.y, m, n] F32 and one arrival counter per blockIdx.x.
  int slice_chunks;
  float* partials;
  unsigned* counters;
  // gemv_fused (kPro != kNone): x is BF16 [m, k] at x (row stride ldx); its E4M3 copy is staged in shared memory.
  const float* x_scale;
  const __nv_bfloat16* norm_w;  // kRmsNorm: [k]
  float eps, inv_k;
  int k;
  // GeGLU epilogue (kGeglu): W = [gate; up] with n = 2F rows; act [m, F] E4M3 (row stride F), scale, scale_inv.
  uint8_t* act;
  const float* act_scale;
  float* act_scale_inv;
};

enum Prologue : int { kNone = 0, kCast = 1, kNorm = 2 };

// x element loads: through the read-only path from global memory, plain loads from the shared-memory copy.
template <bool kShared, typename T>
__device__ __forceinline__ T ldx(const T* p) {
  if constexpr (kShared) {
    return *p;
  } else {
    return __ldg(p);
  }
}

// gemv_fused's prologue: the E4M3 codes of x's m rows (after the RMSNorm when kNorm) into xs [m, k] in the exact
// arithmetic of rmsnorm_forward_fp8 / quantize (see gemv.h): the sums of squares one warp per row (the norm kernel's
// order), the element-wise pass over the whole block. Every thread of the block takes part.
template <int kPro>
__device__ __forceinline__ void stage_x(const GemvParams& p, uint8_t* xs) {
  __shared__ float rstd_s[kGemvFusedMaxRows];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int chunks = p.k / 8;  // 8-element BF16 chunks
  const float scale = *p.x_scale;
  auto row_of = [&](int r) {
    return reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.x) + static_cast<int64_t>(r) * p.ldx);
  };
  if constexpr (kPro == kNorm) {
    // Pass 1, one warp per row: the row's sum of squares in the norm kernel's order, then rstd.
    for (int r = warp; r < p.m; r += kWarps) {
      const uint4* row = row_of(r);
      float acc = 0.0f;
      for (int c = lane; c < chunks; c += 32) {
        const ew::Pack8<ew::bf16_t> h{__ldg(row + c)};
#pragma unroll
        for (int i = 0; i < 8; ++i) acc = ieee::ffma(h.get(i), h.get(i), acc);
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc = ieee::fadd(acc, __shfl_xor_sync(0xFFFFFFFFu, acc, o));
      if (lane == 0) rstd_s[r] = ieee::fdiv(1.0f, ieee::fsqrt(ieee::fadd(ieee::fmul(acc, p.inv_k), p.eps)));
    }
    __syncthreads();
  }
  // Pass 2, element-wise over the whole block: y (BF16), then the E4M3 codes.
  for (int i = threadIdx.x; i < p.m * chunks; i += kThreads) {
    const int r = i / chunks, c = i % chunks;
    const ew::Pack8<ew::bf16_t> h{__ldg(row_of(r) + c)};
    float v[8];
    if constexpr (kPro == kNorm) {
      const float rstd = rstd_s[r];
      const ew::Pack8<ew::bf16_t> w{__ldg(reinterpret_cast<const uint4*>(p.norm_w) + c)};
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        v[e] = ew::round_to<ew::bf16_t>(ieee::fmul(ieee::fmul(h.get(e), rstd), ieee::fadd(1.0f, w.get(e))));
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = h.get(e);
    }
    *reinterpret_cast<uint2*>(xs + static_cast<int64_t>(r) * p.k + 8 * c) = ew::quantize8<dev::e4m3_t>(v, scale);
  }
}

// Two BF16 in a 32-bit word -> floats (exact).
__device__ __forceinline__ float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// Two E4M3 codes in the low 16 bits of u -> floats (exact: E4M3 -> f16 is exact, cvt.rn.f16x2.e4m3x2).
__device__ __forceinline__ float2 e4m3x2(uint32_t u) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(u & 0xffffu), __NV_E4M3);
  return __half22float2(__half2(h));
}

// The 8 floats of a 16-byte vector's half `half` (0: bytes 0-7, 1: bytes 8-15) of E4M3, or of all 16 bytes of BF16.
template <bool kE4m3>
__device__ __forceinline__ void unpack8(const uint4& v, int half, float (&f)[8]) {
  if constexpr (kE4m3) {
    const uint32_t a = half == 0 ? v.x : v.z, b = half == 0 ? v.y : v.w;
    const float2 p0 = e4m3x2(a), p1 = e4m3x2(a >> 16), p2 = e4m3x2(b), p3 = e4m3x2(b >> 16);
    f[0] = p0.x; f[1] = p0.y; f[2] = p1.x; f[3] = p1.y;
    f[4] = p2.x; f[5] = p2.y; f[6] = p3.x; f[7] = p3.y;
  } else {
    f[0] = bf16_lo(v.x); f[1] = bf16_hi(v.x); f[2] = bf16_lo(v.y); f[3] = bf16_hi(v.y);
    f[4] = bf16_lo(v.z); f[5] = bf16_hi(v.z); f[6] = bf16_lo(v.w); f[7] = bf16_hi(v.w);
  }
}

// 8 consecutive x elements of row r starting at element k (16-byte aligned for BF16, 8-byte for E4M3) -> floats.
template <bool kXE4m3, bool kShared>
__device__ __forceinline__ void load_x8(const GemvParams& p, int r, int64_t k, float (&f)[8]) {
  if constexpr (kXE4m3) {
    const uint8_t* row = static_cast<const uint8_t*>(p.x) + static_cast<int64_t>(r) * p.ldx;
    const uint2 v = ldx<kShared>(reinterpret_cast<const uint2*>(row + k));
    unpack8<true>(make_uint4(v.x, v.y, 0u, 0u), 0, f);
  } else {
    const __nv_bfloat16* row = static_cast<const __nv_bfloat16*>(p.x) + static_cast<int64_t>(r) * p.ldx;
    unpack8<false>(__ldg(reinterpret_cast<const uint4*>(row + k)), 0, f);
  }
}

// The x elements of W chunk `chunk` for row 0 (kRows == 1 preloads them next to the W loads): E4M3 x with E4M3 W
// is one 16-byte vector (16 codes), BF16 x is one (BF16 W: 8 elements) or two (E4M3 W: 16 elements) vectors.
template <bool kWE4m3, bool kXE4m3, bool kShared>
__device__ __forceinline__ void load_x_chunk(const GemvParams& p, int64_t chunk, uint4 (&xv)[2]) {
  if constexpr (kXE4m3) {
    xv[0] = ldx<kShared>(reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.x)) + chunk);
  } else if constexpr (kWE4m3) {
    const uint4* row = reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.x));
    xv[0] = __ldg(row + 2 * chunk);
    xv[1] = __ldg(row + 2 * chunk + 1);
  } else {
    xv[0] = __ldg(reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.x)) + chunk);
  }
}
// The 8 floats of x piece h (8-element half of a 16-element chunk, or the whole 8-element chunk).
template <bool kXE4m3>
__device__ __forceinline__ void unpack_x(const uint4 (&xv)[2], int h, float (&f)[8]) {
  if constexpr (kXE4m3) {
    unpack8<true>(xv[0], h, f);
  } else {
    unpack8<false>(xv[h], 0, f);
  }
}

// The epilogue of one output element (both kernels): v = acc * scale (FP32), + residual (FP32), one rounding.
__device__ __forceinline__ void store_out(const GemvParams& p, int r, int64_t col, float acc, float scale) {
  float v = acc * scale;
  if (p.out_f32) {
    if (p.residual != nullptr) v += static_cast<const float*>(p.residual)[r * p.ldr + col];
    static_cast<float*>(p.out)[r * p.ldo + col] = v;
  } else {
    if (p.residual != nullptr) v += __bfloat162float(static_cast<const __nv_bfloat16*>(p.residual)[r * p.ldr + col]);
    static_cast<__nv_bfloat16*>(p.out)[r * p.ldo + col] = __float2bfloat16_rn(v);
  }
}

// Warp w of the grid owns columns [w * kCols, w * kCols + kCols). Lane l accumulates chunks l, l + 32, ... of those
// W rows against the matching x elements of every row r < m; a fixed butterfly then sums the lanes. kRows == 1
// loads x next to W (both in flight before any use); more rows read x per piece through L1 (re-used across the
// kCols columns).
//
// gemv_fused: kPro stages x's E4M3 codes in shared memory first (stage_x and its barriers, before any warp may
// leave), and kGeglu makes warp w own output column w of act from W rows w (gate) and w + F (up) (kCols == 2).
template <bool kWE4m3, bool kXE4m3, int kRows, int kCols, int kPro = kNone, bool kGeglu = false>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const GemvParams p) {
  constexpr int kChunkElems = kWE4m3 ? 16 : 8;  // W elements per 16-byte chunk
  constexpr int kHalves = kChunkElems / 8;      // 8-element pieces per chunk
  constexpr int kUnroll = kLoadsPerLane / kCols;
  constexpr bool kPreloadX = kRows == 1;
  constexpr bool kStaged = kPro != kNone;
  static_assert(!kStaged || (kWE4m3 && kXE4m3), "the fused prologue feeds E4M3 x to E4M3 W");
  static_assert(!kGeglu || (kCols == 2 && kStaged), "the GeGLU epilogue pairs gate and up rows");
  const int lane = threadIdx.x % 32;
  const int64_t warp_id = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t col0 = kGeglu ? warp_id : warp_id * kCols;
  const int64_t n_out = kGeglu ? p.n / 2 : p.n;
  const int64_t col_step = kGeglu ? p.n / 2 : 1;

  // Columns past N re-read the last row (harmless, never stored) so the loop stays branch-free.
  const uint4* wrow[kCols];
#pragma unroll
  for (int c = 0; c < kCols; ++c) {
    const int64_t col = col0 < n_out ? col0 + c * col_step : p.n - 1;
    wrow[c] = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.w) + col * p.ldw * (kWE4m3 ? 1 : 2));
  }
  // W chunks of one iteration: lane l takes chunks base + 32 u (u < kUnroll) of each of its kCols rows.
  uint4 wv[kUnroll][kCols];
  auto load_w = [&](int base) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = base + 32 * u;
#pragma unroll
      for (int c = 0; c < kCols; ++c) wv[u][c] = chunk < p.chunks ? __ldcs(wrow[c] + chunk) : make_uint4(0, 0, 0, 0);
    }
  };
  // early_w: the first iteration's weights are requested before the wait (they never depend on the previous
  // kernel), so under PDL their latency overlaps the previous kernel's tail and gemv_fused's prologue.
  const bool early = p.early_w && col0 < n_out;
  if (early) load_w(lane);
  dev::pdl_wait();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  dev::pdl_launch_dependents();
  GemvParams q = p;
  if constexpr (kStaged) {
    extern __shared__ __align__(16) uint8_t xs[];
    stage_x<kPro>(p, xs);
    __syncthreads();
    q.x = xs;
    q.ldx = p.k;
  }
  if (col0 >= n_out) return;  // whole warps only: no block-level synchronisation below

  float acc[kRows][kCols];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0f;
  }

  for (int base = lane; base < p.chunks; base += 32 * kUnroll) {
    uint4 xv[kPreloadX ? kUnroll : 1][2];
    if (!early || base != lane) load_w(base);
    if constexpr (kPreloadX) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int chunk = base + 32 * u;
        if (chunk < p.chunks) {
          load_x_chunk<kWE4m3, kXE4m3, kStaged>(q, chunk, xv[u]);
        } else {
          xv[u][0] = xv[u][1] = make_uint4(0, 0, 0, 0);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = base + 32 * u;
      if (chunk >= p.chunks) break;  // the row's tail: lanes past the end stop (uniform until the last iteration)
#pragma unroll
      for (int h = 0; h < kHalves; ++h) {
        float wf[kCols][8];
#pragma unroll
        for (int c = 0; c < kCols; ++c) unpack8<kWE4m3>(wv[u][c], h, wf[c]);
        const int64_t k = static_cast<int64_t>(chunk) * kChunkElems + 8 * h;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          if (r >= p.m) break;
          float xf[8];
          if constexpr (kPreloadX) {
            unpack_x<kXE4m3>(xv[u], h, xf);
          } else {
            load_x8<kXE4m3, kStaged>(q, r, k, xf);
          }
#pragma unroll
          for (int e = 0; e < 8; ++e) {
#pragma unroll
            for (int c = 0; c < kCols; ++c) acc[r][c] = fmaf(xf[e], wf[c][e], acc[r][c]);
          }
        }
      }
    }
  }

  float scale = p.alpha;
  if constexpr (kStaged) {
    scale *= ieee::fdiv(1.0f, *p.x_scale);  // the scale_inv the unfused producer writes
  } else {
    if (p.x_scale_inv != nullptr) scale *= *p.x_scale_inv;
  }
  if (p.w_scale_inv != nullptr) scale *= *p.w_scale_inv;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = dev::warp_sum(acc[r][c]);  // xor butterfly: every lane has it
  }
  if constexpr (kGeglu) {
    // The unfused chain: fc1 = BF16(acc * scale); a = BF16(gelu_tanh(gate)) * up -> BF16 -> E4M3(a * act_scale).
    const float act_scale = *p.act_scale;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r < p.m && lane == r % 32) {
        const float g = ew::round_to<ew::bf16_t>(acc[r][0] * scale);
        const float u = ew::round_to<ew::bf16_t>(acc[r][1] * scale);
        const float a = ew::round_to<ew::bf16_t>(ieee::fmul(ew::round_to<ew::bf16_t>(ieee::gelu_tanh(g)), u));
        p.act[static_cast<int64_t>(r) * n_out + col0] = static_cast<uint8_t>(
            __nv_cvt_float_to_fp8(ieee::fmul(a, act_scale), __NV_SATFINITE, __NV_E4M3));
      }
    }
    if (col0 == 0 && lane == 0 && p.act_scale_inv != nullptr) *p.act_scale_inv = ieee::fdiv(1.0f, act_scale);
  } else {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int64_t col = col0 + c;
        // Lane (r * kCols + c) % 32 stores (r, c): the stores spread over the lanes.
        if (r < p.m && col < p.n && lane == (r * kCols + c) % 32) store_out(p, r, col, acc[r][c], scale);
      }
    }
  }
}

// ---- The streamed kernel (narrow N): W through a shared-memory ring, optional split-K ----------------------------
// Why (first principles; H200: 132 SMs, HBM 4.1 TB/s = 31 B/ns per SM): by Little's law an SM keeps its share of
// HBM busy only with >= 31 B/ns x latency bytes in flight -- about 31 KB at an idle-HBM latency near 1 us, 45-60 KB
// at the 1.5-2 us latency of a loaded HBM. gemv_kernel holds its loads in registers: 8 x 16 B per lane = 4 KB per
// warp, and only while the warp is not computing (it loads, waits, computes, loads again). Its E4M3 one-column form
// uses 84 registers, so at most 5 blocks (20 warps) fit an SM, and the narrow shapes do not even fill that: 2b fc2
// (N = 2048) is 512 blocks = 3.9 blocks = 15.5 warps per SM, <= 62 KB in flight at the peak of a load phase and
// much less on average -- the 48% of HBM measured. More warps alone do not fix it (a 2-4-warp K split per column in
// one block measured no faster, session 3: the registers cap the resident warps, and the extra blocks become waves).
// This kernel decouples the bytes in flight from the registers: each warp streams its W row through a ring of
// kStages stages x kStageChunks 16-byte chunks per lane in shared memory (cp.async, L2 evict-first), so while it
// computes stage t, stages t + 1 .. t + kStages - 1 are in flight: 3 x 2 KB = 6 KB per warp at every moment, 24 KB
// per 4-warp block (ring 32 KB). 2b fc2: 3.9 blocks per SM -> ~93 KB in flight per SM (3x the 31 KB floor, 1.5-2x
// the loaded-latency need), 7b fc2 (N = 3072: 768 blocks, 5.8 per SM) ~140 KB. The ring also takes the loads off the
// arithmetic's critical path: the warp never waits a full round trip between two compute phases.
// Split-K (gridDim.y = S > 1) is for the shapes whose N / 4 blocks cannot fill the device even at its occupancy
// (N < ~1600 at M = 1): block (b, s) does K slice s of columns 4b .. 4b + 3, writes its FP32 partials, and the last
// block of the S to arrive (atomic counter per b, __threadfence before and after) sums them in the fixed order
// s = 0 .. S - 1, applies the epilogue and resets the counter to 0 (so a CUDA-graph replay needs no memset node).
// The split count is chosen so that the whole grid is one wave: with more blocks than the device holds at once
// the last partial wave costs more than the split gains (the Gemma shapes of the target -- 2b fc2 / o / qkv,
// 7b fc2 / o -- already fit one wave at S = 1, so they run unsplit; see pick_splits()).
// Numerics: lane l takes chunks l, l + 32, ... of its slice, ascending, fmaf, as gemv_kernel's lane l; the same
// butterfly and epilogue. So at S = 1 the result is gemv_kernel's, bit for bit (tested); with S > 1 the partials'
// sum regroups the FP32 additions (deterministic: the order is fixed, not the arrival order), within gemv.h's bound.
constexpr int kStages = 4;       // ring stages per warp
constexpr int kStageChunks = 4;  // 16-byte chunks per lane per stage: one stage = 128 chunks = 2 KB per warp
constexpr int kStageSpan = 32 * kStageChunks;
constexpr int kMaxSplits = static_cast<int>(kGemvMaxSplits);

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, uint64_t policy) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "l"(policy)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

template <bool kWE4m3, bool kXE4m3, int kRows>
__global__ void __launch_bounds__(kThreads) gemv_stream_kernel(const GemvParams p) {
  constexpr int kChunkElems = kWE4m3 ? 16 : 8;
  constexpr int kHalves = kChunkElems / 8;
  constexpr bool kPreloadX = kRows == 1;
  __shared__ uint4 ring[kWarps][kStages][kStageChunks][32];  // [.][.][u][lane]: a lane's 16 B, conflict-free
  __shared__ bool last_s;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const bool valid = col < p.n;
  const int split = static_cast<int>(blockIdx.y);
  const int c_begin = split * p.slice_chunks;
  const int c_end = min(c_begin + p.slice_chunks, p.chunks);
  // Stages of this warp's slice (0 for the columns past N: those warps only take part in the split's barriers).
  const int stages = valid ? (c_end - c_begin + kStageSpan - 1) / kStageSpan : 0;
  const uint4* wrow = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.w) +
                                                     (valid ? col : 0) * p.ldw * (kWE4m3 ? 1 : 2));
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  // Stage t into ring slot t % kStages; one commit group per stage, empty past the end (uniform group counting).
  auto issue = [&](int t) {
    if (t < stages) {
#pragma unroll
      for (int u = 0; u < kStageChunks; ++u) {
        const int chunk = c_begin + t * kStageSpan + 32 * u + lane;
        if (chunk < c_end) cp_async16(&ring[warp][t % kStages][u][lane], wrow + chunk, policy);
      }
    }
    cp_async_commit();
  };
  // early_w: the ring's first stages are requested before the wait (W never depends on the previous kernel).
  if (p.early_w) {
#pragma unroll
    for (int t = 0; t < kStages - 1; ++t) issue(t);
  }
  dev::pdl_wait();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  dev::pdl_launch_dependents();
  if (!p.early_w) {
#pragma unroll
    for (int t = 0; t < kStages - 1; ++t) issue(t);
  }

  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
  for (int t = 0; t < stages; ++t) {
    cp_async_wait<kStages - 2>();  // stage t has landed (this lane's own copies: no barrier needed)
    issue(t + kStages - 1);        // into the slot stage t - 1 used, already consumed
    const int slot = t % kStages;
    const int base = c_begin + t * kStageSpan + lane;
    uint4 xv[kPreloadX ? kStageChunks : 1][2];
    if constexpr (kPreloadX) {
#pragma unroll
      for (int u = 0; u < kStageChunks; ++u) {
        const int chunk = base + 32 * u;
        if (chunk < c_end) {
          load_x_chunk<kWE4m3, kXE4m3, false>(p, chunk, xv[u]);
        } else {
          xv[u][0] = xv[u][1] = make_uint4(0, 0, 0, 0);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kStageChunks; ++u) {
      const int chunk = base + 32 * u;
      if (chunk >= c_end) break;  // the slice's tail (uniform until the last stage)
      const uint4 wv = ring[warp][slot][u][lane];
#pragma unroll
      for (int h = 0; h < kHalves; ++h) {
        float wf[8];
        unpack8<kWE4m3>(wv, h, wf);
        const int64_t k = static_cast<int64_t>(chunk) * kChunkElems + 8 * h;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          if (r >= p.m) break;
          float xf[8];
          if constexpr (kPreloadX) {
            unpack_x<kXE4m3>(xv[u], h, xf);
          } else {
            load_x8<kXE4m3, false>(p, r, k, xf);
          }
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r] = fmaf(xf[e], wf[e], acc[r]);
        }
      }
    }
  }
  cp_async_wait<0>();  // no copy outlives the block (the trailing groups are empty)

  float scale = p.alpha;
  if (p.x_scale_inv != nullptr) scale *= *p.x_scale_inv;
  if (p.w_scale_inv != nullptr) scale *= *p.w_scale_inv;
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = dev::warp_sum(acc[r]);
  if (gridDim.y == 1) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (valid && r < p.m && lane == r % 32) store_out(p, r, col, acc[r], scale);
    }
    return;
  }
  // Split-K: partials [split, r, col] (F32, unscaled), then the arrival count of this column group.
  const int64_t plane = static_cast<int64_t>(p.m) * p.n;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (valid && r < p.m && lane == r % 32) p.partials[split * plane + r * static_cast<int64_t>(p.n) + col] = acc[r];
  }
  __threadfence();  // the partials are visible device-wide before the arrival is
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned arrived = atomicAdd(&p.counters[blockIdx.x], 1u);
    last_s = arrived == gridDim.y - 1;
  }
  __syncthreads();
  if (!last_s) return;
  __threadfence();  // acquire side: the other splits' partials are read after their arrivals
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (valid && r < p.m && lane == r % 32) {
      const float* part = p.partials + r * static_cast<int64_t>(p.n) + col;
      float v = __ldcg(part);  // L2: never a stale L1 line
      for (int s = 1; s < static_cast<int>(gridDim.y); ++s) v += __ldcg(part + s * plane);  // fixed order
      store_out(p, r, col, v, scale);
    }
  }
  if (threadIdx.x == 0) p.counters[blockIdx.x] = 0u;  // every split has arrived: ready for the next launch / replay
}

// Columns per warp: one while that still gives >= 64 warps per SM-sized slice of the grid (the small-N shapes:
// more warps, more loads in flight); otherwise 2 (M <= 2) or 4 (M >= 4: x is re-read from L1 once per kCols
// columns, which is what limits the larger M).
int columns_per_warp(int64_t n, int rows) {
  constexpr int64_t kWarpsForOneColumn = 132 * 64;
  if (n < kWarpsForOneColumn) return 1;
  return rows >= 4 ? 4 : 2;
}

// ---- Split-K workspace and the streamed kernel's launch ---------------------------------------------------------
// One workspace per (device, stream), as the cuBLASLt workspaces (kernels/gemm/gemm_cublaslt.cpp): two streams
// running split GEMVs at the same time never share partials or counters; launches on one stream are ordered, and a
// launch's last block resets its counters before the grid completes. Made on first use outside stream capture
// (zeroed then); a capture that finds none runs unsplit (nothing is allocated or memset inside a capture: a
// captured decode step's GEMVs have their workspace from the eager warm-up). Never destroyed by a static
// destructor; release_gemv_state() frees it (kernels/library_state.h).
constexpr std::size_t kCounterSlots = 1 << 16;           // column groups (blockIdx.x) a split launch may have
constexpr std::size_t kPartialFloats = std::size_t{1} << 20;  // S x M x N partials (4 MiB)
constexpr std::size_t kWorkspaceBytes = kCounterSlots * sizeof(unsigned) + kPartialFloats * sizeof(float);

std::mutex g_ws_mutex;
std::map<std::pair<int, cudaStream_t>, Buffer>& workspaces() {
  static auto& w = *new std::map<std::pair<int, cudaStream_t>, Buffer>();  // never destroyed (see above)
  return w;
}
// The (device, stream)'s workspace, or nullptr while the stream is being captured and none exists yet.
void* split_workspace(cudaStream_t stream) {
  int device = 0;
  TG_CHECK_CUDA(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(g_ws_mutex);
  auto& all = workspaces();
  auto it = all.find({device, stream});
  if (it != all.end()) return it->second.data();
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  TG_CHECK_CUDA(cudaStreamIsCapturing(stream, &capturing));
  if (capturing != cudaStreamCaptureStatusNone) return nullptr;
  it = all.emplace(std::make_pair(device, stream), Buffer(kWorkspaceBytes, Device::CUDA)).first;
  TG_CHECK_CUDA(cudaMemsetAsync(it->second.data(), 0, kWorkspaceBytes, stream));  // counters 0 (partials: tidy)
  return it->second.data();
}

std::atomic<int> g_split_setting{0};        // tuning::set_gemv_split
thread_local int t_last_splits = 0;         // gemv_last_splits()

// Split count of the streamed kernel for `blocks_x` column groups of `row_stages` ring stages each: the largest S
// that keeps the grid within one wave of resident blocks (see the kernel's comment), at most kMaxSplits and the row's
// stages, and within the workspace. `forced` (tuning knob) > 0 asks for that S (still clamped to the row and the
// workspace).
int pick_splits(int64_t blocks_x, int64_t m, int64_t n, int row_stages, int resident_per_sm, int forced) {
  int64_t s = forced > 0 ? forced : (static_cast<int64_t>(resident_per_sm) * sm_count()) / blocks_x;
  s = std::clamp<int64_t>(s, 1, std::min<int64_t>(kMaxSplits, row_stages));
  if (blocks_x > static_cast<int64_t>(kCounterSlots)) return 1;
  while (s > 1 && static_cast<std::size_t>(s * m * n) > kPartialFloats) --s;
  return static_cast<int>(s);
}

// x bytes one K slice of the streamed kernel reads per column (m rows) that the default still sends to it: at full
// occupancy the ring takes ~200 KB of an SM's 256 KB of L1 / shared memory, leaving ~28 KB of L1 for x, which every
// warp of the SM re-reads. A larger x would be re-read from L2 once per column (m x xbytes per W byte: at M >= 2 or
// BF16 x more L2 traffic than HBM traffic), so those shapes stay on gemv_kernel, whose L1 holds x. This keeps the
// decoder's FP8 M = 1 narrow GEMMs (x E4M3: 2b fc2 16 KB, 7b fc2 24 KB, O / QKV <= 4 KB) on the streamed kernel.
constexpr int64_t kStreamXBytes = 24 * 1024;

// Launches the streamed kernel; false (nothing launched) when `forced` is 0 (auto) and x's slice does not fit L1.
template <bool kWE4m3, bool kXE4m3, int kRows>
bool launch_stream(GemvParams p, cudaStream_t stream, int forced) {
  const auto kernel = gemv_stream_kernel<kWE4m3, kXE4m3, kRows>;
  const int64_t blocks_x = (p.n + kWarps - 1) / kWarps;
  const int row_stages = (p.chunks + kStageSpan - 1) / kStageSpan;
  const int resident = resident_blocks(reinterpret_cast<const void*>(kernel), kThreads, 0);
  int splits = pick_splits(blocks_x, p.m, p.n, row_stages, resident, forced);
  if (forced == 0) {
    const int64_t chunk_x_bytes = (kWE4m3 ? 16 : 8) * (kXE4m3 ? 1 : 2);
    const int64_t slice_chunks = static_cast<int64_t>((row_stages + splits - 1) / splits) * kStageSpan;
    if (static_cast<int64_t>(p.m) * std::min<int64_t>(slice_chunks, p.chunks) * chunk_x_bytes > kStreamXBytes) {
      return false;
    }
  }
  void* ws = splits > 1 ? split_workspace(stream) : nullptr;
  if (ws == nullptr) splits = 1;
  // Slices of whole stages: S' = ceil(stages / ceil(stages / S)) <= S non-empty slices.
  const int stages_per_slice = (row_stages + splits - 1) / splits;
  splits = (row_stages + stages_per_slice - 1) / stages_per_slice;
  p.slice_chunks = splits > 1 ? stages_per_slice * kStageSpan : p.chunks;
  if (splits > 1) {
    p.counters = static_cast<unsigned*>(ws);
    p.partials = reinterpret_cast<float*>(static_cast<uint8_t*>(ws) + kCounterSlots * sizeof(unsigned));
  }
  t_last_splits = splits;
  launch(kernel, dim3(static_cast<unsigned>(blocks_x), static_cast<unsigned>(splits)), kThreads, 0, stream, p);
  return true;
}

// The narrow shapes (one column per warp) take the streamed kernel when x's slice fits L1 beside the ring (above),
// unless the tuning knob asks for gemv_kernel;
// the wide ones (fc1, lm_head, 7b qkv: >= 64 warps per SM of columns, at 84-99% of HBM) stay on gemv_kernel.
template <bool kWE4m3, bool kXE4m3, int kRows>
void launch_rows(const GemvParams& p, cudaStream_t stream) {
  const int cols = columns_per_warp(p.n, kRows);
  const int setting = g_split_setting.load(std::memory_order_relaxed);
  if (setting != kGemvSplitOff && (cols == 1 || setting > 0)) {
    if (launch_stream<kWE4m3, kXE4m3, kRows>(p, stream, setting)) return;
  }
  t_last_splits = 0;
  const int64_t warps = (p.n + cols - 1) / cols;
  const auto blocks = static_cast<unsigned>((warps + kWarps - 1) / kWarps);
  constexpr int kWide = kRows >= 4 ? 4 : 2;
  if (cols == 1) {
    launch(gemv_kernel<kWE4m3, kXE4m3, kRows, 1>, blocks, kThreads, 0, stream, p);
  } else {
    launch(gemv_kernel<kWE4m3, kXE4m3, kRows, kWide>, blocks, kThreads, 0, stream, p);
  }
}

// gemv_fused: E4M3 x staged in shared memory (m * k bytes), E4M3 W; kGeglu pairs gate / up rows in each warp.
template <int kPro, bool kGeglu, int kRows>
void launch_fused_rows(const GemvParams& p, cudaStream_t stream) {
  const int cols = kGeglu ? 2 : columns_per_warp(p.n, kRows);
  const int64_t warps = kGeglu ? p.n / 2 : (p.n + cols - 1) / cols;
  const auto blocks = static_cast<unsigned>((warps + kWarps - 1) / kWarps);
  const std::size_t smem = static_cast<std::size_t>(p.m) * static_cast<std::size_t>(p.k);
  constexpr int kWide = kRows >= 4 ? 4 : 2;
  auto go = [&](auto kernel) {
    (void)resident_blocks(reinterpret_cast<const void*>(kernel), kThreads, smem);  // the opt-in above 48 KB
    launch(kernel, blocks, kThreads, smem, stream, p);
  };
  if constexpr (kGeglu) {
    go(gemv_kernel<true, true, kRows, 2, kPro, true>);
  } else {
    if (cols == 1) {
      go(gemv_kernel<true, true, kRows, 1, kPro, false>);
    } else {
      go(gemv_kernel<true, true, kRows, kWide, kPro, false>);
    }
  }
}
template <int kPro, bool kGeglu>
void launch_fused(const GemvParams& p, cudaStream_t stream) {
  static_assert(kGemvFusedMaxRows == 4, "launch_fused() instantiates row tiles up to 4");
  if (p.m <= 1) return launch_fused_rows<kPro, kGeglu, 1>(p, stream);
  if (p.m <= 2) return launch_fused_rows<kPro, kGeglu, 2>(p, stream);
  launch_fused_rows<kPro, kGeglu, 4>(p, stream);
}

// TEGEMMA_GEMV_EARLY_W=1: the first weight loads before the PDL wait (GemvParams::early_w). Opt-in: measured neutral
// alone and a gain only together with TEGEMMA_DECODE_FUSED on gemma-2b (ci/decode_ab.sh, docs/bench_log.md session 5).
bool early_weights() {
  static const bool on = env_switch("TEGEMMA_GEMV_EARLY_W", false);
  return on;
}

template <bool kWE4m3, bool kXE4m3>
void dispatch(const GemvParams& p, cudaStream_t stream) {
  if (p.m <= 1) return launch_rows<kWE4m3, kXE4m3, 1>(p, stream);
  if (p.m <= 2) return launch_rows<kWE4m3, kXE4m3, 2>(p, stream);
  if (p.m <= 4) return launch_rows<kWE4m3, kXE4m3, 4>(p, stream);
  if (p.m <= 8) return launch_rows<kWE4m3, kXE4m3, 8>(p, stream);
  launch_rows<kWE4m3, kXE4m3, 16>(p, stream);
}

}  // namespace

namespace tuning {
void set_gemv_split(int splits) {
  TG_CHECK(splits >= kGemvSplitOff && splits <= kGemvMaxSplits, "tuning::set_gemv_split: splits = ", splits,
           ", expected ", kGemvSplitOff, " (gemv_kernel), 0 (auto) or 1 .. ", kGemvMaxSplits);
  g_split_setting.store(splits);
}
int gemv_split() { return g_split_setting.load(); }
}  // namespace tuning

int gemv_last_splits() { return t_last_splits; }

void release_gemv_state() {
  std::lock_guard<std::mutex> lock(g_ws_mutex);
  auto& all = workspaces();
  if (all.empty()) return;
  std::set<int> devices;
  for (const auto& [key, buffer] : all) devices.insert(key.first);
  state_release::synchronize_devices(devices);  // throws before anything is freed
  all.clear();  // cudaFree (Buffer)
}

void gemv(const GemvOperand& x, const GemvOperand& w, const TensorView& out, const GemvOptions& opt,
          const TensorView& residual, Stream stream) {
  TG_NVTX_FN();
  const detail::GemvDims d = detail::check_gemv(x, w, out, residual);
  check_device(out, Device::CUDA, "cuda::gemv(out)");
  static_assert(kGemvMaxRows == 16, "launch() instantiates row tiles up to 16");
  const bool w_fp8 = w.data.dtype == DType::E4M3, x_fp8 = x.data.dtype == DType::E4M3;
  const int64_t chunks = d.k / (w_fp8 ? 16 : 8);
  TG_CHECK(chunks <= INT32_MAX && d.n <= INT32_MAX, "gemv: N = ", d.n, ", K = ", d.k, " is beyond the kernel's int range");
  GemvParams p{};
  p.x = x.data.data;
  p.w = w.data.data;
  p.x_scale_inv = x_fp8 ? x.scale_inv.ptr<const float>() : nullptr;
  p.w_scale_inv = w_fp8 ? w.scale_inv.ptr<const float>() : nullptr;
  p.out = out.data;
  p.residual = residual.empty() ? nullptr : residual.data;
  p.ldx = d.ldx;
  p.ldw = d.ldw;
  p.ldo = d.ldo;
  p.ldr = d.ldr;
  p.m = static_cast<int>(d.m);
  p.n = static_cast<int>(d.n);
  p.chunks = static_cast<int>(chunks);
  p.alpha = opt.alpha;
  p.out_f32 = out.dtype == DType::F32;
  p.early_w = early_weights();
  const cudaStream_t s = cuda_stream(stream);
  if (!w_fp8) {
    dispatch<false, false>(p, s);
  } else if (!x_fp8) {
    dispatch<true, false>(p, s);
  } else {
    dispatch<true, true>(p, s);
  }
  TG_CHECK_LAUNCH("gemv_kernel");
}

void gemv_fused(const GemvFusedArgs& a, Stream stream) {
  TG_NVTX_FN();
  const detail::GemvDims d = detail::check_gemv_fused(a);
  check_device(a.x, Device::CUDA, "cuda::gemv_fused(x)");
  const bool geglu = !a.act.data.empty();
  TG_CHECK(d.k <= INT32_MAX && d.n <= INT32_MAX, "gemv_fused: N = ", d.n, ", K = ", d.k, " is beyond the kernel's int range");
  const std::size_t smem = static_cast<std::size_t>(d.m * d.k);
  TG_CHECK(smem <= static_cast<std::size_t>(max_smem_per_block()), "gemv_fused: the staged x needs M x K = ", smem,
           " bytes of shared memory, the device has ", max_smem_per_block());
  GemvParams p{};
  p.x = a.x.data;
  p.w = a.w.data.data;
  p.w_scale_inv = a.w.scale_inv.ptr<const float>();
  p.ldx = d.ldx;
  p.ldw = d.ldw;
  p.m = static_cast<int>(d.m);
  p.n = static_cast<int>(d.n);
  p.k = static_cast<int>(d.k);
  p.chunks = static_cast<int>(d.k / 16);
  p.alpha = 1.0f;
  p.early_w = early_weights();
  p.x_scale = a.x_scale.ptr<const float>();
  p.norm_w = a.prologue == GemvPrologue::kRmsNorm ? a.norm_weight.ptr<const __nv_bfloat16>() : nullptr;
  p.eps = a.eps;
  p.inv_k = 1.0f / static_cast<float>(d.k);  // as rmsnorm_forward's inv_d (one IEEE division)
  if (geglu) {
    p.act = static_cast<uint8_t*>(a.act.data.data);
    p.act_scale = a.act.scale.ptr<const float>();
    p.act_scale_inv = a.act.scale_inv.empty() ? nullptr : a.act.scale_inv.ptr<float>();
  } else {
    p.out = a.out.data;
    p.residual = a.residual.empty() ? nullptr : a.residual.data;
    p.ldo = d.ldo;
    p.ldr = d.ldr;
  }
  const cudaStream_t s = cuda_stream(stream);
  if (a.prologue == GemvPrologue::kRmsNorm) {
    if (geglu) {
      launch_fused<kNorm, true>(p, s);
    } else {
      launch_fused<kNorm, false>(p, s);
    }
  } else {
    TG_CHECK(!geglu, "gemv_fused: the GeGLU epilogue follows an RMSNorm prologue (fc1); cast + GeGLU is not built");
    launch_fused<kCast, false>(p, s);
  }
  TG_CHECK_LAUNCH("gemv_kernel (fused)");
}

}  // namespace tg::kernels::cuda
