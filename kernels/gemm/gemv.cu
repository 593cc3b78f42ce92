// gemv on the CUDA cores: see gemv.h for the contract and the design.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "common/cuda_check.h"
#include "common/env.h"
#include "common/nvtx.h"
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
  int m, n, k;  // k: K (elements), both kernels (the K-split rule; gemv_fused's staging)
  int chunks;  // 16-byte W chunks per row: K / (16 / sizeof(W element))
  float alpha;
  bool out_f32;
  bool early_w;   // issue the first iteration's W loads (registers) before waiting on the previous kernel (PDL)
  // gemv_fused (kPro != kNone): x is BF16 [m, k] at x (row stride ldx); its E4M3 copy is staged in shared memory.
  const float* x_scale;
  const __nv_bfloat16* norm_w;  // kRmsNorm: [k]
  float eps, inv_k;
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

// Warp w of the grid owns columns [w * kCols, w * kCols + kCols). Lane l accumulates chunks l, l + 32, ... of those
// W rows against the matching x elements of every row r < m; a fixed butterfly then sums the lanes. kRows == 1
// loads x next to W (both in flight before any use); more rows read x per piece through L1 (re-used across the
// kCols columns).
//
// gemv_fused: kPro stages x's E4M3 codes in shared memory first (stage_x and its barriers, before any warp may
// leave), and kGeglu makes warp w own output column w of act from W rows w (gate) and w + F (up) (kCols == 2).
//
// kSplit > 1 (one-column warps only): the kSplit warps of a group share one column, warp s of the group taking the
// s-th contiguous slice of K (whole 32-chunk stripes); each slice is summed as above, then the slices' sums are
// added in slice order through shared memory and the group's first warp finishes the column. More warps and more
// loads in flight per column for the narrow, long-K shapes (k_split() below says when).
template <bool kWE4m3, bool kXE4m3, int kRows, int kCols, int kPro = kNone, bool kGeglu = false, int kSplit = 1>
__device__ __forceinline__ void gemv_body(const GemvParams p) {
  constexpr int kChunkElems = kWE4m3 ? 16 : 8;  // W elements per 16-byte chunk
  constexpr int kHalves = kChunkElems / 8;      // 8-element pieces per chunk
  constexpr int kUnroll = kLoadsPerLane / kCols;
  constexpr bool kPreloadX = kRows == 1;
  constexpr bool kStaged = kPro != kNone;
  static_assert(!kStaged || (kWE4m3 && kXE4m3), "the fused prologue feeds E4M3 x to E4M3 W");
  static_assert(!kGeglu || (kCols == 2 && kStaged), "the GeGLU epilogue pairs gate and up rows");
  static_assert(kSplit == 1 || (!kGeglu && kWarps % kSplit == 0), "K splits: whole warp groups, no GeGLU pairs");
  const int lane = threadIdx.x % 32;
  const int warp_in_block = threadIdx.x / 32;
  const int split = warp_in_block % kSplit;
  const int64_t warp_id = static_cast<int64_t>(blockIdx.x) * (kWarps / kSplit) + warp_in_block / kSplit;
  const int64_t col0 = kGeglu ? warp_id : warp_id * kCols;
  const int64_t n_out = kGeglu ? p.n / 2 : p.n;
  const int64_t col_step = kGeglu ? p.n / 2 : 1;
  // This warp's chunks: [k_begin, k_end) (the whole row without a split).
  const int slice = kSplit == 1 ? p.chunks : ((p.chunks + 32 * kSplit - 1) / (32 * kSplit)) * 32;
  const int k_begin = min(p.chunks, split * slice);
  const int k_end = kSplit == 1 ? p.chunks : min(p.chunks, k_begin + slice);

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
      for (int c = 0; c < kCols; ++c) {
        if (chunk < k_end) wv[u][c] = __ldcs(wrow[c] + chunk);  // past the end: never read (the loop below stops)
      }
    }
  };
  // early_w: the first iteration's weights are requested before the wait (they never depend on the previous
  // kernel), so under PDL their latency overlaps the previous kernel's tail and gemv_fused's prologue.
  const bool active = col0 < n_out;
  const bool early = p.early_w && active;
  if (early) load_w(k_begin + lane);
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
  // Whole warps only: without a split no block-level synchronisation follows; with one, a whole group is past N
  // or not, and the groups of a block meet at the one barrier below whatever they did.
  if (kSplit == 1 && !active) return;

  float acc[kRows][kCols];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0f;
  }

  for (int base = k_begin + lane; active && base < k_end; base += 32 * kUnroll) {
    uint4 xv[kPreloadX ? kUnroll : 1][2];
    if (!early || base != k_begin + lane) load_w(base);  // early_w loaded the first iteration's
    if constexpr (kPreloadX) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int chunk = base + 32 * u;
        if (chunk < k_end) load_x_chunk<kWE4m3, kXE4m3, kStaged>(q, chunk, xv[u]);  // past the end: never read
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = base + 32 * u;
      if (chunk >= k_end) break;  // the slice's tail: lanes past the end stop (uniform until the last iteration)
#pragma unroll
      for (int h = 0; h < kHalves; ++h) {
        float wf[kCols][8];
#pragma unroll
        for (int c = 0; c < kCols; ++c) unpack8<kWE4m3>(wv[u][c], h, wf[c]);
        const int64_t k = static_cast<int64_t>(chunk) * kChunkElems + 8 * h;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          if (r > 0 && r >= p.m) break;  // row 0 always exists (M >= 1, checked): no branch for it
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
  if constexpr (kSplit > 1) {
    // The slices' sums of each column, added in slice order by the group's first warp (fixed order: same bits).
    __shared__ float part[kWarps][kRows][kCols];
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) part[warp_in_block][r][c] = acc[r][c];
      }
    }
    __syncthreads();
    if (split != 0 || !active) return;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        float sum = part[warp_in_block][r][c];
#pragma unroll
        for (int s = 1; s < kSplit; ++s) sum += part[warp_in_block + s][r][c];
        acc[r][c] = sum;
      }
    }
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
        if (r < p.m && col < p.n && lane == (r * kCols + c) % 32) {
          float v = acc[r][c] * scale;
          if (p.out_f32) {
            if (p.residual != nullptr) v += static_cast<const float*>(p.residual)[r * p.ldr + col];
            static_cast<float*>(p.out)[r * p.ldo + col] = v;
          } else {
            if (p.residual != nullptr) v += __bfloat162float(static_cast<const __nv_bfloat16*>(p.residual)[r * p.ldr + col]);
            static_cast<__nv_bfloat16*>(p.out)[r * p.ldo + col] = __float2bfloat16_rn(v);
          }
        }
      }
    }
  }
}

template <bool kWE4m3, bool kXE4m3, int kRows, int kCols, int kPro = kNone, bool kGeglu = false, int kSplit = 1>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const GemvParams p) {
  gemv_body<kWE4m3, kXE4m3, kRows, kCols, kPro, kGeglu, kSplit>(p);
}

// Columns per warp: one while that still gives >= 64 warps per SM-sized slice of the grid (the small-N shapes:
// more warps, more loads in flight); otherwise 2 (M <= 2) or 4 (M >= 4: x is re-read from L1 once per kCols
// columns, which is what limits the larger M).
int columns_per_warp(int64_t n, int rows) {
  constexpr int64_t kWarpsForOneColumn = 132 * 64;
  if (n < kWarpsForOneColumn) return 1;
  return rows >= 4 ? 4 : 2;
}

// Warps per column (kSplit) of the one-column shapes: tuning::set_gemv_k_split's value when set (1, 2, 4), else
// 2 for K >= 24576 (the 7b fc2) and 1 below. H200, session 8 (commit 2f59713), M = 1 E4M3, split 2 vs 1: 7b fc2
// 1x3072x24576 26.2 vs 28.3 us; 2b fc2 1x2048x16384 16.1 vs 15.9; QKV / O slower (2b 1x2560x2048 8.46 vs 7.83,
// 7b 1x3072x4096 10.9 vs 10.5); split 4 never beat 2 (7b fc2 26.9). gemv and gemv_fused call it alike (same bits).
int k_split(int64_t k) {
  constexpr int64_t kSplitFromK = 24576;
  const int forced = tuning::gemv_k_split();
  if (forced != 0) return forced;
  return k >= kSplitFromK ? 2 : 1;
}
unsigned blocks_for(int64_t column_groups, int split) {
  return static_cast<unsigned>((column_groups * split + kWarps - 1) / kWarps);
}
// f(std::integral_constant<int, S>{}) with S = k_split(k): the one-column kernels' split as a template argument.
template <typename F>
void with_k_split(int64_t k, F&& f) {
  switch (k_split(k)) {
    case 4: return f(std::integral_constant<int, 4>{});
    case 2: return f(std::integral_constant<int, 2>{});
    default: return f(std::integral_constant<int, 1>{});
  }
}

template <bool kWE4m3, bool kXE4m3, int kRows>
void launch_rows(const GemvParams& p, cudaStream_t stream) {
  const int cols = columns_per_warp(p.n, kRows);
  const int64_t warps = (p.n + cols - 1) / cols;
  constexpr int kWide = kRows >= 4 ? 4 : 2;
  if (cols == 1) {
    with_k_split(p.k, [&](auto split) {
      constexpr int kS = decltype(split)::value;
      launch(gemv_kernel<kWE4m3, kXE4m3, kRows, 1, kNone, false, kS>, blocks_for(warps, kS), kThreads, 0, stream, p);
    });
  } else {
    launch(gemv_kernel<kWE4m3, kXE4m3, kRows, kWide>, blocks_for(warps, 1), kThreads, 0, stream, p);
  }
}

// gemv_fused: E4M3 x staged in shared memory (m * k bytes), E4M3 W; kGeglu pairs gate / up rows in each warp.
template <int kPro, bool kGeglu, int kRows>
void launch_fused_rows(const GemvParams& p, cudaStream_t stream) {
  const int cols = kGeglu ? 2 : columns_per_warp(p.n, kRows);
  const int64_t warps = kGeglu ? p.n / 2 : (p.n + cols - 1) / cols;
  const std::size_t smem = static_cast<std::size_t>(p.m) * static_cast<std::size_t>(p.k);
  constexpr int kWide = kRows >= 4 ? 4 : 2;
  auto go = [&](auto kernel, int split, int64_t column_groups) {
    (void)resident_blocks(reinterpret_cast<const void*>(kernel), kThreads, smem);  // the opt-in above 48 KB
    launch(kernel, blocks_for(column_groups, split), kThreads, smem, stream, p);
  };
  if constexpr (kGeglu) {
    go(gemv_kernel<true, true, kRows, 2, kPro, true>, 1, warps);
  } else {
    if (cols == 1) {
      // The same split as the unfused GEMV of this shape: gemv_fused == the unfused kernels, bit for bit.
      with_k_split(p.k, [&](auto split) {
        constexpr int kS = decltype(split)::value;
        go(gemv_kernel<true, true, kRows, 1, kPro, false, kS>, kS, warps);
      });
    } else {
      go(gemv_kernel<true, true, kRows, kWide, kPro, false>, 1, warps);
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
namespace {
// TEGEMMA_GEMV_KSPLIT (read once: 0, 1, 2 or 4) for the decode A/B runs; set_gemv_k_split overrides it.
std::atomic<int>& k_split_setting() {
  static std::atomic<int> v{[] {
    const char* e = std::getenv("TEGEMMA_GEMV_KSPLIT");
    if (e == nullptr || *e == '\0') return 0;
    const std::string s(e);
    TG_CHECK(s == "0" || s == "1" || s == "2" || s == "4", "TEGEMMA_GEMV_KSPLIT must be 0, 1, 2 or 4, got '", s, "'");
    return std::stoi(s);
  }()};
  return v;
}
}  // namespace
void set_gemv_k_split(int split) {
  TG_CHECK(split == 0 || split == 1 || split == 2 || split == 4, "set_gemv_k_split: 0, 1, 2 or 4, got ", split);
  k_split_setting().store(split);
}
int gemv_k_split() { return k_split_setting().load(); }

}  // namespace tuning

void gemv(const GemvOperand& x, const GemvOperand& w, const TensorView& out, const GemvOptions& opt,
          const TensorView& residual, Stream stream) {
  TG_NVTX_FN();
  const detail::GemvDims d = detail::check_gemv(x, w, out, residual);
  check_device(out, Device::CUDA, "cuda::gemv(out)");
  static_assert(kGemvMaxRows == 16, "launch() instantiates row tiles up to 16");
  const bool w_fp8 = w.data.dtype == DType::E4M3, x_fp8 = x.data.dtype == DType::E4M3;
  const int64_t chunks = d.k / (w_fp8 ? 16 : 8);
  TG_CHECK(d.k <= INT32_MAX && d.n <= INT32_MAX, "gemv: N = ", d.n, ", K = ", d.k, " is beyond the kernel's int range");
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
  p.k = static_cast<int>(d.k);
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
