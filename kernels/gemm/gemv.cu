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
  int m, n, k;  // k: K (elements)
  int chunks;  // 16-byte W chunks per row: K / (16 / sizeof(W element))
  float alpha;
  bool out_f32;
};

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
template <bool kXE4m3>
__device__ __forceinline__ void load_x8(const GemvParams& p, int r, int64_t k, float (&f)[8]) {
  if constexpr (kXE4m3) {
    const uint8_t* row = static_cast<const uint8_t*>(p.x) + static_cast<int64_t>(r) * p.ldx;
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(row + k));
    unpack8<true>(make_uint4(v.x, v.y, 0u, 0u), 0, f);
  } else {
    const __nv_bfloat16* row = static_cast<const __nv_bfloat16*>(p.x) + static_cast<int64_t>(r) * p.ldx;
    unpack8<false>(__ldg(reinterpret_cast<const uint4*>(row + k)), 0, f);
  }
}

// The x elements of W chunk `chunk` for row 0 (kRows == 1 preloads them next to the W loads): E4M3 x with E4M3 W
// is one 16-byte vector (16 codes), BF16 x is one (BF16 W: 8 elements) or two (E4M3 W: 16 elements) vectors.
template <bool kWE4m3, bool kXE4m3>
__device__ __forceinline__ void load_x_chunk(const GemvParams& p, int64_t chunk, uint4 (&xv)[2]) {
  if constexpr (kXE4m3) {
    xv[0] = __ldg(reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.x)) + chunk);
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

// The epilogue's scale: (alpha * x_scale_inv) * w_scale_inv, in that order (FP32).
__device__ __forceinline__ float out_scale(const GemvParams& p) {
  float scale = p.alpha;
  if (p.x_scale_inv != nullptr) scale *= *p.x_scale_inv;
  if (p.w_scale_inv != nullptr) scale *= *p.w_scale_inv;
  return scale;
}
// out[r, col] = acc * scale (+ residual[r, col], FP32), one rounding to out's dtype (RNE).
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
// kSplit > 1 (one-column warps only): the kSplit warps of a group share one column, warp s of the group taking the
// s-th contiguous slice of K (whole 32-chunk stripes); each slice is summed as above, then the slices' sums are
// added in slice order through shared memory and the group's first warp finishes the column. More warps and more
// loads in flight per column for the narrow, long-K shapes (k_split() below says when).
template <bool kWE4m3, bool kXE4m3, int kRows, int kCols, int kSplit = 1>
__device__ __forceinline__ void gemv_body(const GemvParams p) {
  constexpr int kChunkElems = kWE4m3 ? 16 : 8;  // W elements per 16-byte chunk
  constexpr int kHalves = kChunkElems / 8;      // 8-element pieces per chunk
  constexpr int kUnroll = kLoadsPerLane / kCols;
  constexpr bool kPreloadX = kRows == 1;
  static_assert(kSplit == 1 || (kCols == 1 && kWarps % kSplit == 0), "K splits: one-column warps, whole groups");
  const int lane = threadIdx.x % 32;
  const int warp_in_block = threadIdx.x / 32;
  const int split = warp_in_block % kSplit;
  const int64_t warp_id = static_cast<int64_t>(blockIdx.x) * (kWarps / kSplit) + warp_in_block / kSplit;
  const int64_t col0 = warp_id * kCols;
  // This warp's chunks: [k_begin, k_end) (the whole row without a split).
  const int slice = kSplit == 1 ? p.chunks : ((p.chunks + 32 * kSplit - 1) / (32 * kSplit)) * 32;
  const int k_begin = min(p.chunks, split * slice);
  const int k_end = kSplit == 1 ? p.chunks : min(p.chunks, k_begin + slice);

  // Columns past N re-read the last row (harmless, never stored) so the loop stays branch-free.
  const uint4* wrow[kCols];
#pragma unroll
  for (int c = 0; c < kCols; ++c) {
    const int64_t col = col0 < p.n ? col0 + c : p.n - 1;
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
  const bool active = col0 < p.n;
  dev::pdl_wait();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  dev::pdl_launch_dependents();
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
    load_w(base);
    if constexpr (kPreloadX) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int chunk = base + 32 * u;
        if (chunk < k_end) load_x_chunk<kWE4m3, kXE4m3>(p, chunk, xv[u]);  // past the end: never read
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
            load_x8<kXE4m3>(p, r, k, xf);
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

  const float scale = out_scale(p);
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
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      // Lane (r * kCols + c) % 32 stores (r, c): the stores spread over the lanes.
      if (r < p.m && col0 + c < p.n && lane == (r * kCols + c) % 32) store_out(p, r, col0 + c, acc[r][c], scale);
    }
  }
}

template <bool kWE4m3, bool kXE4m3, int kRows, int kCols, int kSplit = 1>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const GemvParams p) {
  gemv_body<kWE4m3, kXE4m3, kRows, kCols, kSplit>(p);
}

// ---- The tensor-core path (tuning::set_gemv_mma): E4M3 x with E4M3 W, any M <= 16 -----------------------------
// The CUDA-core loop above spends ~65-83 instructions per 16-byte W chunk (each code converted to FP32 and FMA'd,
// x converted again by every warp); this one spends ~5.5: the codes become F16 pairs (one F2FP per 2 codes, exact:
// every E4M3 value is an F16 value) and mma.sync.m16n8k16 (F16 x F16 -> FP32 accumulate) multiplies them exactly
// and adds them in the tensor core. A = x (16 token rows; rows >= M re-read row M - 1 and are never stored, rows
// g + 8 are zero when M <= 8), B = 8 W rows (the warp's 8 output columns).
// Lane (g, t) = (lane / 4, lane % 4) loads 16 bytes of W row n0 + g at k = 64 i + 16 t (round i) and the same 16
// bytes of x rows g (and g + 8). Bytes 4j .. 4j + 3 feed the round's j-th MMA: B's pairs (k 2t, 2t + 1) = bytes
// 4j, 4j + 1 and (2t + 8, 2t + 9) = bytes 4j + 2, 4j + 3. That permutes k the same way for every row, so A takes the
// same bytes of x and the dot products are unchanged. D's lane (g, t) then holds tokens g (d0, d1) and g + 8 (d2,
// d3) of W rows n0 + 2t, n0 + 2t + 1: no butterfly. K is split over kSplit warps of a block as in the loop above
// (whole 64-element rounds; slices added in slice order through shared memory).
constexpr int kMmaThreads = 256;
constexpr int kMmaWarps = kMmaThreads / 32;
constexpr int kMmaCols = 8;     // W rows (output columns) per warp: the MMA's N
constexpr int kMmaUnroll = 8;   // 16-byte W loads in flight per lane per iteration
constexpr int kMmaRoundK = 64;  // K per round: 4 lanes x 16 codes

// The 4 E4M3 codes of u -> two F16 pairs: lo = bytes 0, 1 and hi = bytes 2, 3 (exact; F2FP reads each half).
__device__ __forceinline__ void f16x2_of_e4m3x4(uint32_t u, uint32_t& lo, uint32_t& hi) {
  asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.rn.f16x2.e4m3x2 %0, l;\n\tcvt.rn.f16x2.e4m3x2 %1, h;\n\t}"
      : "=r"(lo), "=r"(hi)
      : "r"(u));
}
// 16-byte loads as volatile asm: they stay ahead of the (volatile) MMAs of the same iteration, so all of an
// iteration's loads are in flight before its first use (ptxas otherwise interleaves them with the arithmetic).
__device__ __forceinline__ uint4 ld_stream(const void* p) {  // W: read once (ld.global.cs)
  uint4 v;
  asm volatile("ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ uint4 ld_shared_ro(const void* p) {  // x: read by every warp (ld.global.nc, L1)
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
// d += A (16 x 16, F16, row-major fragment a0..a3) * B (16 x 8, F16, column fragment b0, b1), FP32.
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <bool kTall, int kSplit>
__global__ void __launch_bounds__(kMmaThreads) gemv_mma_kernel(const GemvParams p) {
  static_assert(kMmaWarps % kSplit == 0, "K splits: whole warp groups");
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int split = warp % kSplit;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * (kMmaWarps / kSplit) + warp / kSplit) * kMmaCols;
  const bool active = n0 < p.n;  // whole warps (and whole split groups)
  const uint8_t* w = static_cast<const uint8_t*>(p.w) + min(n0 + g, static_cast<int64_t>(p.n) - 1) * p.ldw;
  const uint8_t* x0 = static_cast<const uint8_t*>(p.x) + static_cast<int64_t>(min(g, p.m - 1)) * p.ldx;
  const uint8_t* x1 = kTall ? static_cast<const uint8_t*>(p.x) + static_cast<int64_t>(min(g + 8, p.m - 1)) * p.ldx : x0;
  const int rounds = (p.k + kMmaRoundK - 1) / kMmaRoundK;
  const int per = (rounds + kSplit - 1) / kSplit;
  const int r_begin = min(rounds, split * per), r_end = min(rounds, r_begin + per);
  dev::pdl_wait();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  dev::pdl_launch_dependents();
  if (kSplit == 1 && !active) return;

  float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  // kTail: the slice's last iteration, where rounds past r_end or lanes past K load zeros (0 * 0 adds nothing).
  // Lane pointers at this lane's 16 bytes of round i0 (advanced by whole iterations: immediate load offsets).
  const int k_lane = r_begin * kMmaRoundK + 16 * t;
  const uint8_t *wb = w + k_lane, *xb = x0 + k_lane, *xb8 = x1 + k_lane;
  const auto step = [&](int i0, auto tail) {
    constexpr bool kTail = decltype(tail)::value;
    uint4 wv[kMmaUnroll], xv[kMmaUnroll];
    [[maybe_unused]] uint4 xv8[kMmaUnroll];  // rows g + 8 (kTall)
    const int k0 = i0 * kMmaRoundK + 16 * t;
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      const bool in = !kTail || (i0 + u < r_end && k0 + u * kMmaRoundK < p.k);
      const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
      wv[u] = in ? ld_stream(wb + u * kMmaRoundK) : zero;
      xv[u] = in ? ld_shared_ro(xb + u * kMmaRoundK) : zero;
      if constexpr (kTall) xv8[u] = in ? ld_shared_ro(xb8 + u * kMmaRoundK) : zero;
    }
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      if (kTail && i0 + u >= r_end) break;  // warp-uniform: every lane runs every MMA
      const uint32_t wr[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
      const uint32_t xr[4] = {xv[u].x, xv[u].y, xv[u].z, xv[u].w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        uint32_t a0, a1 = 0u, a2, a3 = 0u, b0, b1;
        f16x2_of_e4m3x4(xr[j], a0, a2);
        if constexpr (kTall) {
          const uint32_t x8[4] = {xv8[u].x, xv8[u].y, xv8[u].z, xv8[u].w};
          f16x2_of_e4m3x4(x8[j], a1, a3);
        }
        f16x2_of_e4m3x4(wr[j], b0, b1);
        mma_f16_16816(d, a0, a1, a2, a3, b0, b1);
      }
    }
  };
  // Rounds wholly inside K run without predicates; the rest (at most one iteration) with them.
  const int r_full = min(r_end, p.k / kMmaRoundK);
  int i0 = r_begin;
  if (active) {
    for (; i0 + kMmaUnroll <= r_full; i0 += kMmaUnroll) {
      step(i0, std::false_type{});
      wb += kMmaUnroll * kMmaRoundK;
      xb += kMmaUnroll * kMmaRoundK;
      if constexpr (kTall) xb8 += kMmaUnroll * kMmaRoundK;
    }
    if (i0 < r_end) step(i0, std::true_type{});
  }
  if constexpr (kSplit > 1) {
    // The slices' sums, added in slice order by the group's first warp (fixed order: same bits every run).
    __shared__ float part[kMmaWarps][4][32];
#pragma unroll
    for (int i = 0; i < 4; ++i) part[warp][i][lane] = d[i];
    __syncthreads();
    if (split != 0 || !active) return;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float sum = part[warp][i][lane];
#pragma unroll
      for (int s = 1; s < kSplit; ++s) sum += part[warp + s][i][lane];
      d[i] = sum;
    }
  }
  const float scale = out_scale(p);
  const int64_t col = n0 + 2 * t;
#pragma unroll
  for (int h = 0; h < (kTall ? 2 : 1); ++h) {
    const int r = g + 8 * h;
    if (r >= p.m) continue;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      if (col + c < p.n) store_out(p, r, col + c, d[2 * h + c], scale);
    }
  }
}

// The rule (tuning::GemvMma::kRule): the tensor-core path for M >= 2, the CUDA-core loop at M = 1. H200 session 14
// (946dd66, bench_gemm alone, us, tensor cores / CUDA-core loop / cuBLASLt FP8): M = 4: 2b QKV 6.30 / 12.76 / 7.10,
// fc1 24.30 / 37.91 / 20.88, fc2 14.04 / 68.45 / 14.98, lm_head 132.1 / 206.6 / 127.8, 7b fc2 23.85 / 83.69 / 25.17;
// M = 16: 2b fc1 24.3 / 128.8 / 20.9, fc2 15.8 / 245.6 / 15.1 (the loop's FMAs per byte grow with M). M = 1: the
// tensor cores win alone on the narrow shapes (7b O 7.68 / 8.58, 2b fc2 13.73 / 14.21) and lose on the wide ones
// (2b fc1 24.25 / 20.56, lm_head 131.3 / 119.1: each load instruction reads 64 bytes of 8 rows instead of 512 of
// one), and inside the decode step even the narrow-only rule lost on gemma-7b (B1 336.4 vs 346.9 tok/s; 2b 945.7
// vs 942.6), so M = 1 stays on the loop. Decode B4 (gemma-2b, delayed + FP8 head): 3250.5 vs 1757.1 tok/s.

// The tensor-core path's K split: the fewest warps per 8 columns (1, 2, 4, 8) that put >= 16 warps on each of 132
// SMs, and no more than the 64-element rounds of K.
int mma_k_split(int64_t n, int64_t k) {
  constexpr int64_t kTargetWarps = 132 * 16;
  const int64_t groups = (n + kMmaCols - 1) / kMmaCols, rounds = (k + kMmaRoundK - 1) / kMmaRoundK;
  int split = 1;
  while (split < kMmaWarps && groups * split < kTargetWarps && 2 * split <= rounds) split *= 2;
  return split;
}
void launch_mma(const GemvParams& p, cudaStream_t stream) {
  const int split = mma_k_split(p.n, p.k);
  const int64_t groups = (p.n + kMmaCols - 1) / kMmaCols;
  const unsigned blocks = static_cast<unsigned>((groups * split + kMmaWarps - 1) / kMmaWarps);
  auto go = [&](auto kernel) { launch(kernel, blocks, kMmaThreads, 0, stream, p); };
  const bool tall = p.m > 8;
  switch (split) {
    case 8: return tall ? go(gemv_mma_kernel<true, 8>) : go(gemv_mma_kernel<false, 8>);
    case 4: return tall ? go(gemv_mma_kernel<true, 4>) : go(gemv_mma_kernel<false, 4>);
    case 2: return tall ? go(gemv_mma_kernel<true, 2>) : go(gemv_mma_kernel<false, 2>);
    default: return tall ? go(gemv_mma_kernel<true, 1>) : go(gemv_mma_kernel<false, 1>);
  }
}

// ---- decode_mlp: RMSNorm -> fc1 -> GeGLU -> fc2 (+ h) of a B1 decode step in one persistent kernel -------------
constexpr int kMlpThreads = 512;
constexpr int kMlpWarps = kMlpThreads / 32;

struct MlpParams {
  __nv_bfloat16* h;  // [D], read by the norm, then h[n] += fc2 row n
  const __nv_bfloat16* norm_w;
  float eps, inv_d;
  const float* ln_scale;
  const uint8_t* w1;  // [2F, D]
  const float* w1_scale_inv;
  int64_t ldw1;
  const float* act_scale;
  float* act_scale_inv;
  uint8_t* act;  // [F]
  const uint8_t* w2;  // [D, F]
  const float* w2_scale_inv;
  int64_t ldw2;
  int* barrier;  // [2]: arrivals, generation
  int d, f;
};

// One warp's FP32 lane sums of kCols W rows against E4M3 x codes in shared memory over 16-byte chunks
// [k_begin, k_end): gemv_body's arithmetic at M = 1 (chunks lane, lane + 32, ... ascending; in each chunk the two
// 8-element halves, fmaf in element order), so the butterfly after it gives the unfused GEMV's bits.
template <int kCols>
__device__ __forceinline__ void lane_sums(const uint4* const (&wrow)[kCols], const uint8_t* xs, int k_begin,
                                          int k_end, int lane, float (&acc)[kCols]) {
  constexpr int kUnroll = kLoadsPerLane / kCols;
#pragma unroll
  for (int c = 0; c < kCols; ++c) acc[c] = 0.0f;
  for (int base = k_begin + lane; base < k_end; base += 32 * kUnroll) {
    uint4 wv[kUnroll][kCols], xv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = base + 32 * u;
      if (chunk < k_end) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) wv[u][c] = __ldcs(wrow[c] + chunk);
        xv[u] = reinterpret_cast<const uint4*>(xs)[chunk];
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + 32 * u >= k_end) break;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float wf[kCols][8], xf[8];
#pragma unroll
        for (int c = 0; c < kCols; ++c) unpack8<true>(wv[u][c], hh, wf[c]);
        unpack8<true>(xv[u], hh, xf);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
#pragma unroll
          for (int c = 0; c < kCols; ++c) acc[c] = fmaf(xf[e], wf[c][e], acc[c]);
        }
      }
    }
  }
}

// L2 prefetch of `bytes` bytes from p (128-byte lines spread over the warp's lanes): weights a phase will read
// next, requested while the warp would otherwise wait.
__device__ __forceinline__ void prefetch_l2(const uint8_t* p, int64_t bytes, int lane) {
  for (int64_t off = 128 * lane; off < bytes; off += 128 * 32) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
  }
}

// Every block of the grid arrives before any leaves. barrier[0] counts arrivals (the last one resets it),
// barrier[1] is the generation the others wait to change; both stay consistent from call to call. A wait longer
// than ~10 s traps (a grid that is not all resident would otherwise hang the stream).
__device__ __forceinline__ void grid_barrier(int* barrier) {
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile int* gen = barrier + 1;
    const int g = *gen;
    __threadfence();  // this block's writes before its arrival
    if (atomicAdd(barrier, 1) == static_cast<int>(gridDim.x) - 1) {
      atomicExch(barrier, 0);
      __threadfence();
      atomicAdd(barrier + 1, 1);
    } else {
      for (unsigned spins = 0; *gen == g; ++spins) {
        if (spins > (1u << 24)) __trap();  // ~16M polls of >= 0.5 us each
        __nanosleep(32);
      }
    }
    __threadfence();  // the other blocks' writes before this block's reads
  }
  __syncthreads();
}

template <int kSplit>
__global__ void __launch_bounds__(kMlpThreads, 1) decode_mlp_kernel(const MlpParams p) {
  extern __shared__ __align__(16) uint8_t smem[];  // xs [D] (fc1's x), then xa [F] (fc2's x)
  __shared__ float rstd_s;
  __shared__ float part[kMlpWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warps = static_cast<int>(gridDim.x) * kMlpWarps;
  const int gw = static_cast<int>(blockIdx.x) * kMlpWarps + warp;
  const int d_chunks = p.d / 16, f_chunks = p.f / 16;

  // The first gate / up rows' weights into L2 before waiting on the previous kernel (they do not depend on it).
  if (gw < p.f) {
    prefetch_l2(p.w1 + static_cast<int64_t>(gw) * p.ldw1, p.d, lane);
    prefetch_l2(p.w1 + static_cast<int64_t>(gw + p.f) * p.ldw1, p.d, lane);
  }
  dev::pdl_wait();

  // Phase 1 (every block): xs = E4M3(RMSNorm(h) * ln_scale), rmsnorm_forward_fp8's arithmetic (one warp sums the
  // squares in the norm kernel's order, then the element-wise pass over the block).
  uint8_t* xs = smem;
  const uint4* hrow = reinterpret_cast<const uint4*>(p.h);
  if (warp == 0) {
    float acc = 0.0f;
    for (int c = lane; c < p.d / 8; c += 32) {
      const ew::Pack8<ew::bf16_t> hv{hrow[c]};
#pragma unroll
      for (int i = 0; i < 8; ++i) acc = ieee::ffma(hv.get(i), hv.get(i), acc);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc = ieee::fadd(acc, __shfl_xor_sync(0xFFFFFFFFu, acc, o));
    if (lane == 0) rstd_s = ieee::fdiv(1.0f, ieee::fsqrt(ieee::fadd(ieee::fmul(acc, p.inv_d), p.eps)));
  }
  __syncthreads();
  {
    const float rstd = rstd_s, scale = *p.ln_scale;
    for (int c = threadIdx.x; c < p.d / 8; c += kMlpThreads) {
      const ew::Pack8<ew::bf16_t> hv{hrow[c]};
      const ew::Pack8<ew::bf16_t> wv{__ldg(reinterpret_cast<const uint4*>(p.norm_w) + c)};
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        v[e] = ew::round_to<ew::bf16_t>(ieee::fmul(ieee::fmul(hv.get(e), rstd), ieee::fadd(1.0f, wv.get(e))));
      }
      *reinterpret_cast<uint2*>(xs + 8 * c) = ew::quantize8<dev::e4m3_t>(v, scale);
    }
  }
  __syncthreads();

  // Phase 2: act[j] = E4M3(GeGLU(gate_j, up_j) * act_scale), gate / up rows j and j + F in one warp; the unfused
  // chain's roundings (fc1 output to BF16, gelu to BF16, the product to BF16).
  {
    const float scale = ieee::fdiv(1.0f, *p.ln_scale) * *p.w1_scale_inv;  // (1 * x_scale_inv) * w_scale_inv
    const float act_scale = *p.act_scale;
    for (int j = gw; j < p.f; j += warps) {
      const uint4* rows[2] = {reinterpret_cast<const uint4*>(p.w1 + static_cast<int64_t>(j) * p.ldw1),
                              reinterpret_cast<const uint4*>(p.w1 + static_cast<int64_t>(j + p.f) * p.ldw1)};
      float acc[2];
      lane_sums<2>(rows, xs, 0, d_chunks, lane, acc);
      acc[0] = dev::warp_sum(acc[0]);
      acc[1] = dev::warp_sum(acc[1]);
      if (lane == 0) {
        const float g = ew::round_to<ew::bf16_t>(acc[0] * scale);
        const float u = ew::round_to<ew::bf16_t>(acc[1] * scale);
        const float a = ew::round_to<ew::bf16_t>(ieee::fmul(ew::round_to<ew::bf16_t>(ieee::gelu_tanh(g)), u));
        p.act[j] = static_cast<uint8_t>(__nv_cvt_float_to_fp8(ieee::fmul(a, act_scale), __NV_SATFINITE, __NV_E4M3));
      }
    }
    if (gw == 0 && lane == 0) *p.act_scale_inv = ieee::fdiv(1.0f, act_scale);
  }

  // fc2's split: kSplit warps per output row, warp s of a group taking the s-th slice of whole 32-chunk stripes
  // (gemv's k_split rule and slice arithmetic: the same bits as the unfused GEMV).
  constexpr int kGroups = kMlpWarps / kSplit;
  const int split = warp % kSplit;
  const int slice = kSplit == 1 ? f_chunks : ((f_chunks + 32 * kSplit - 1) / (32 * kSplit)) * 32;
  const int k_begin = min(f_chunks, split * slice);
  const int k_end = kSplit == 1 ? f_chunks : min(f_chunks, k_begin + slice);
  const int rounds = (p.d + static_cast<int>(gridDim.x) * kGroups - 1) / (static_cast<int>(gridDim.x) * kGroups);
  auto row_of = [&](int r) { return (r * static_cast<int>(gridDim.x) + static_cast<int>(blockIdx.x)) * kGroups + warp / kSplit; };
  // The first fc2 slice this warp streams, into L2 while the grid meets.
  if (row_of(0) < p.d) {
    prefetch_l2(p.w2 + static_cast<int64_t>(row_of(0)) * p.ldw2 + 16 * static_cast<int64_t>(k_begin),
                16 * static_cast<int64_t>(k_end - k_begin), lane);
  }
  grid_barrier(p.barrier);
  dev::pdl_launch_dependents();

  // Phase 3: h[n] += fc2 row n . act (act staged from L2 into shared memory: written by other blocks in this
  // kernel, so not through the read-only path).
  uint8_t* xa = smem + p.d;
  for (int c = threadIdx.x; c < f_chunks; c += kMlpThreads) {
    reinterpret_cast<uint4*>(xa)[c] = __ldcg(reinterpret_cast<const uint4*>(p.act) + c);
  }
  __syncthreads();
  const float scale = ieee::fdiv(1.0f, *p.act_scale) * *p.w2_scale_inv;
  GemvParams out{};
  out.out = p.h;
  out.residual = p.h;
  for (int r = 0; r < rounds; ++r) {
    const int n = row_of(r);
    const bool active = n < p.d;  // whole split groups
    float acc[1] = {0.0f};
    if (active) {
      const uint4* rows[1] = {reinterpret_cast<const uint4*>(p.w2 + static_cast<int64_t>(n) * p.ldw2)};
      lane_sums<1>(rows, xa, k_begin, k_end, lane, acc);
      acc[0] = dev::warp_sum(acc[0]);
    }
    if constexpr (kSplit > 1) {
      if (lane == 0) part[warp] = acc[0];
      __syncthreads();
      if (split == 0) {
        float sum = part[warp];
#pragma unroll
        for (int s = 1; s < kSplit; ++s) sum += part[warp + s];
        acc[0] = sum;
      }
      __syncthreads();  // part is reused next round
    }
    if (active && split == 0 && lane == 0) store_out(out, 0, n, acc[0], scale);  // gemv's epilogue, h as residual
  }
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
// 7b 1x3072x4096 10.9 vs 10.5); split 4 never beat 2 (7b fc2 26.9).
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
      launch(gemv_kernel<kWE4m3, kXE4m3, kRows, 1, kS>, blocks_for(warps, kS), kThreads, 0, stream, p);
    });
  } else {
    launch(gemv_kernel<kWE4m3, kXE4m3, kRows, kWide>, blocks_for(warps, 1), kThreads, 0, stream, p);
  }
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
// TEGEMMA_GEMV_MMA (read once: rule, always or never; unset: rule) for the decode A/B runs; set_gemv_mma overrides it.
std::atomic<GemvMma>& mma_setting() {
  static std::atomic<GemvMma> v{[] {
    const char* e = std::getenv("TEGEMMA_GEMV_MMA");
    const std::string s = e == nullptr ? "" : e;
    if (s.empty() || s == "rule") return GemvMma::kRule;
    if (s == "always") return GemvMma::kAlways;
    TG_CHECK(s == "never", "TEGEMMA_GEMV_MMA must be rule, always or never, got '", s, "'");
    return GemvMma::kNever;
  }()};
  return v;
}
}  // namespace
void set_gemv_k_split(int split) {
  TG_CHECK(split == 0 || split == 1 || split == 2 || split == 4, "set_gemv_k_split: 0, 1, 2 or 4, got ", split);
  k_split_setting().store(split);
}
int gemv_k_split() { return k_split_setting().load(); }
void set_gemv_mma(GemvMma mode) { mma_setting().store(mode); }
GemvMma gemv_mma() { return mma_setting().load(); }

}  // namespace tuning

bool gemv_takes_mma(DType x, DType w, int64_t m) {
  if (x != DType::E4M3 || w != DType::E4M3) return false;
  switch (tuning::gemv_mma()) {
    case tuning::GemvMma::kAlways: return true;
    case tuning::GemvMma::kNever: return false;
    default: return m >= 2;
  }
}

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
  const cudaStream_t s = cuda_stream(stream);
  if (gemv_takes_mma(x.data.dtype, w.data.dtype, d.m)) {
    launch_mma(p, s);
  } else if (!w_fp8) {
    dispatch<false, false>(p, s);
  } else if (!x_fp8) {
    dispatch<true, false>(p, s);
  } else {
    dispatch<true, true>(p, s);
  }
  TG_CHECK_LAUNCH("gemv_kernel");
}

void decode_mlp(const DecodeMlpArgs& a, Stream stream) {
  TG_NVTX_FN();
  const auto [d, f] = detail::check_decode_mlp(a);
  check_device(a.h, Device::CUDA, "cuda::decode_mlp(h)");
  TG_CHECK(2 * f <= INT32_MAX && d <= INT32_MAX, "decode_mlp: D = ", d, ", F = ", f, " is beyond the kernel's int range");
  MlpParams p{};
  p.h = static_cast<__nv_bfloat16*>(a.h.data);
  p.norm_w = a.norm_weight.ptr<const __nv_bfloat16>();
  p.eps = a.eps;
  p.inv_d = 1.0f / static_cast<float>(d);  // as rmsnorm_forward's inv_d (one IEEE division)
  p.ln_scale = a.ln_scale.ptr<const float>();
  p.w1 = static_cast<const uint8_t*>(a.fc1.data.data);
  p.w1_scale_inv = a.fc1.scale_inv.ptr<const float>();
  p.ldw1 = a.fc1.data.strides[0];
  p.act_scale = a.act.scale.ptr<const float>();
  p.act_scale_inv = a.act.scale_inv.ptr<float>();
  p.act = static_cast<uint8_t*>(a.act.data.data);
  p.w2 = static_cast<const uint8_t*>(a.fc2.data.data);
  p.w2_scale_inv = a.fc2.scale_inv.ptr<const float>();
  p.ldw2 = a.fc2.data.strides[0];
  p.barrier = a.barrier.ptr<int>();
  p.d = static_cast<int>(d);
  p.f = static_cast<int>(f);
  const std::size_t smem = static_cast<std::size_t>(d + f);
  TG_CHECK(smem <= static_cast<std::size_t>(max_smem_per_block()), "decode_mlp: x and act need D + F = ", smem,
           " bytes of shared memory, the device has ", max_smem_per_block());
  const cudaStream_t s = cuda_stream(stream);
  auto go = [&](auto kernel) {
    // One wave: every block resident at once (the grid barrier waits for all of them).
    const int per_sm = resident_blocks(reinterpret_cast<const void*>(kernel), kMlpThreads, smem);
    TG_CHECK(per_sm >= 1, "decode_mlp: the kernel does not fit on a multiprocessor with ", smem, " bytes of shared memory");
    launch(kernel, static_cast<unsigned>(per_sm * sm_count()), kMlpThreads, smem, s, p);
  };
  // fc2's K split: gemv's rule for this one-column shape (so the bits match the unfused GEMV).
  switch (k_split(f)) {
    case 4: go(decode_mlp_kernel<4>); break;
    case 2: go(decode_mlp_kernel<2>); break;
    default: go(decode_mlp_kernel<1>); break;
  }
  TG_CHECK_LAUNCH("decode_mlp_kernel");
}

}  // namespace tg::kernels::cuda
