// CUDA kernels of kernels/quantize (contract in quantize.h; the CPU twin quantize_cpu.cpp is the golden).
//
// Kernels
//   cast_kernel            per-tensor, row-wise copy only: flat, one 16-byte input vector per unit, kUnroll units
//                          in flight per thread (cast: 4, or 1 below 2^20 elements; amax: 16), grid-stride; also the
//                          standalone amax (no stores).
//   cast_transpose_kernel  everything with a column-wise copy, and all block modes. One 128x128 tile per block of
//                          256 threads; each thread owns an 8x8 sub-tile (8 rows x one 16-byte vector of 8 columns):
//                            - loads: 8 independent 16-byte loads; a warp covers 2 rows x 128 columns per load;
//                            - row-wise FP8 straight from registers (8-byte stores, a warp writes 2 x 128 B);
//                            - column-wise: an 8x8 byte transpose in registers (byte permutes), 8-byte stores into
//                              a 128x128 B shared tile with the 8-byte chunk index XOR-swizzled by the column
//                              group (conflict-free both ways), then 16-byte stores of 16 rows of one column;
//                            - amax: per thread, warp shuffles, shared memory across warps; per tensor one atomic
//                              per block.
//   dequantize_kernel      8 elements per thread step.
// Every kernel has an aligned (vector) and a general (element-wise, any shape) instantiation; the launcher picks.
//
// Amax is computed on the float bits with the sign cleared: for non-negative floats integer order is float order,
// and every NaN is above inf, so an unsigned max propagates NaN (canonicalised to 0x7FFFFFFF at the end).
#include <cuda.h>  // types of the driver's stream memory operations (reached through cudaGetDriverEntryPointByVersion)
#include <cuda_fp8.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/quantize/block_layout.h"
#include "kernels/quantize/quantize.h"
#include "kernels/recipe/scale_math.h"
#include "kernels/launch/device_info.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {

using dev::bf16_t;
using dev::f16_t;

constexpr uint32_t kCanonicalNan = 0x7FFFFFFFu;
constexpr int kModePerTensor = 0, kMode1x128 = 1, kMode128x128 = 2;

// ---- Elements ---------------------------------------------------------------------------------------------------
// 8 consecutive input elements (16 bytes for BF16/F16, 32 bytes for F32).
template <typename IT>
struct Vec8 {
  uint4 u;
};
template <>
struct Vec8<float> {
  float4 a, b;
};

template <typename IT>
__device__ __forceinline__ Vec8<IT> load8(const IT* p) {
  Vec8<IT> v;
  if constexpr (sizeof(IT) == 4) {
    v.a = __ldg(reinterpret_cast<const float4*>(p));
    v.b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  } else {
    v.u = __ldg(reinterpret_cast<const uint4*>(p));
  }
  return v;
}

template <typename IT>
__device__ __forceinline__ Vec8<IT> zero8() {
  Vec8<IT> v;
  if constexpr (sizeof(IT) == 4) {
    v.a = make_float4(0.f, 0.f, 0.f, 0.f);
    v.b = v.a;
  } else {
    v.u = make_uint4(0u, 0u, 0u, 0u);
  }
  return v;
}

// Element-wise load of up to 8 elements (n valid, the rest zero: zero never raises an amax).
template <typename IT>
__device__ __forceinline__ Vec8<IT> load8_partial(const IT* p, int n) {
  Vec8<IT> v = zero8<IT>();
  IT* e = reinterpret_cast<IT*>(&v);
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    if (k < n) e[k] = p[k];
  }
  return v;
}

// Element k of a Vec8 as float (exact).
template <typename IT>
__device__ __forceinline__ float elem(const Vec8<IT>& v, int k) {
  if constexpr (sizeof(IT) == 4) {
    const float f[8] = {v.a.x, v.a.y, v.a.z, v.a.w, v.b.x, v.b.y, v.b.z, v.b.w};
    return f[k];
  } else {
    const uint32_t w[4] = {v.u.x, v.u.y, v.u.z, v.u.w};
    const uint32_t h = (k & 1) ? (w[k >> 1] >> 16) : (w[k >> 1] & 0xFFFFu);
    if constexpr (std::is_same_v<IT, bf16_t>) {
      return __uint_as_float(h << 16);
    } else {
      return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
    }
  }
}

// |v| as an order-preserving key: float bits with the sign cleared (NaN keys are above inf).
__device__ __forceinline__ uint32_t abs_key(float v) { return __float_as_uint(v) & 0x7FFFFFFFu; }

template <typename IT>
__device__ __forceinline__ uint32_t abs_key8(const Vec8<IT>& v) {
  uint32_t m = 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) m = max(m, abs_key(elem(v, k)));
  return m;
}

// The amax value of a key: the float itself, or the canonical NaN.
__device__ __forceinline__ float key_to_amax(uint32_t key) {
  return __uint_as_float(key > 0x7F800000u ? kCanonicalNan : key);
}

// Two products x * s, each rounded to FP32, to two FP8 codes (low byte = a): cvt.rn.satfinite.{e4m3,e5m2}x2.f32.
template <bool kE5M2>
__device__ __forceinline__ uint32_t cvt2(float a, float b, float s) {
  const float2 p = make_float2(__fmul_rn(a, s), __fmul_rn(b, s));
  return __nv_cvt_float2_to_fp8x2(p, __NV_SATFINITE, kE5M2 ? __NV_E5M2 : __NV_E4M3);
}

// 8 elements quantized with one scale -> 8 FP8 bytes (element k in byte k).
template <bool kE5M2, typename IT>
__device__ __forceinline__ uint2 quant8(const Vec8<IT>& v, float s) {
  const uint32_t w0 = cvt2<kE5M2>(elem(v, 0), elem(v, 1), s), w1 = cvt2<kE5M2>(elem(v, 2), elem(v, 3), s);
  const uint32_t w2 = cvt2<kE5M2>(elem(v, 4), elem(v, 5), s), w3 = cvt2<kE5M2>(elem(v, 6), elem(v, 7), s);
  return make_uint2(w0 | (w1 << 16), w2 | (w3 << 16));
}

// 8 elements, element k quantized with its own scale s[k].
template <bool kE5M2, typename IT>
__device__ __forceinline__ uint2 quant8_cols(const Vec8<IT>& v, const float (&s)[8]) {
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 p = make_float2(__fmul_rn(elem(v, 2 * k), s[2 * k]), __fmul_rn(elem(v, 2 * k + 1), s[2 * k + 1]));
    w[k] = __nv_cvt_float2_to_fp8x2(p, __NV_SATFINITE, kE5M2 ? __NV_E5M2 : __NV_E4M3);
  }
  return make_uint2(w[0] | (w[1] << 16), w[2] | (w[3] << 16));
}

// 4x4 byte transpose: a[i] holds row i (byte j = column j); returns b[j] holding column j (byte i = row i).
__device__ __forceinline__ void transpose4x4(uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t& b0,
                                             uint32_t& b1, uint32_t& b2, uint32_t& b3) {
  const uint32_t t0 = __byte_perm(a0, a1, 0x5140), t1 = __byte_perm(a0, a1, 0x7362);
  const uint32_t t2 = __byte_perm(a2, a3, 0x5140), t3 = __byte_perm(a2, a3, 0x7362);
  b0 = __byte_perm(t0, t2, 0x5410);
  b1 = __byte_perm(t0, t2, 0x7632);
  b2 = __byte_perm(t1, t3, 0x5410);
  b3 = __byte_perm(t1, t3, 0x7632);
}

// 8x8 byte transpose: r[i] = row i (8 bytes, byte j = column j) -> c[j] = column j (byte i = row i).
__device__ __forceinline__ void transpose8x8(const uint2 (&r)[8], uint2 (&c)[8]) {
  transpose4x4(r[0].x, r[1].x, r[2].x, r[3].x, c[0].x, c[1].x, c[2].x, c[3].x);  // rows 0-3, cols 0-3
  transpose4x4(r[4].x, r[5].x, r[6].x, r[7].x, c[0].y, c[1].y, c[2].y, c[3].y);  // rows 4-7, cols 0-3
  transpose4x4(r[0].y, r[1].y, r[2].y, r[3].y, c[4].x, c[5].x, c[6].x, c[7].x);  // rows 0-3, cols 4-7
  transpose4x4(r[4].y, r[5].y, r[6].y, r[7].y, c[4].y, c[5].y, c[6].y, c[7].y);  // rows 4-7, cols 4-7
}

// Block-wide unsigned max (every thread gets the result). `scratch` holds >= blockDim.x / 32 words.
__device__ __forceinline__ uint32_t block_max_u32(uint32_t v, uint32_t* scratch) {
  v = __reduce_max_sync(0xFFFFFFFFu, v);
  __syncthreads();  // scratch may be in use by the caller before this call
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  uint32_t m = 0;
  for (unsigned w = 0; w < blockDim.x / 32; ++w) m = max(m, scratch[w]);
  return m;
}

// Max-reduces an amax key into *amax (float bits, atomicMax on int: a negative old value is replaced, NaN wins).
// Only this kernel's atomics write *amax while it runs, so the value only grows: a plain read that is already >= the
// block's value means the atomic would be a no-op. Skipping it spares most of the same-address atomics, which the L2
// serialises at the very end of the kernel, when every block finishes at once.
// filter = false (compute_amax's default since session 21, tuning::set_amax_filter): the atomic unconditionally (a
// reduction with no value returned, RED), one L2 round trip less on each block's last path but every block's atomic
// at the end (compute_amax's 264 blocks at 8192x3072: 15.57 vs 15.71 us on its old grid, H200).
__device__ __forceinline__ void amax_max(float* amax, uint32_t key, bool filter = true) {
  const int v = __float_as_int(key_to_amax(key));
  if (!filter || v > *reinterpret_cast<const volatile int*>(amax)) atomicMax(reinterpret_cast<int*>(amax), v);
}

// ---- Per-tensor cast (row-wise only) and standalone amax --------------------------------------------------------
constexpr int kFlatThreads = 256;
constexpr int kFlatUnroll = 4;   // 16-byte loads in flight per thread (64 bytes): cast
// Below this many elements the cast gives each thread one 16-byte vector (kUnroll = 1, 4x the blocks): the
// kFlatUnroll grid would have fewer blocks than SMs (BF16: 2^20 / (256 x 4 x 8) = 128 on 132). See quantize().
constexpr int64_t kSmallCastElements = int64_t{1} << 20;
constexpr int kAmaxUnroll = 16;  // the standalone amax: no stores, more loads in flight (see compute_amax)

// Elements per 16-byte input vector: 8 for BF16/F16 (8 FP8 bytes out), 4 for F32 (4 bytes out).
template <typename IT>
constexpr int kFlatVecElems = 16 / static_cast<int>(sizeof(IT));

// The amax key of one 16-byte input vector.
template <typename IT>
__device__ __forceinline__ uint32_t abs_key16(const uint4& u) {
  if constexpr (sizeof(IT) == 4) {
    return max(max(u.x & 0x7FFFFFFFu, u.y & 0x7FFFFFFFu), max(u.z & 0x7FFFFFFFu, u.w & 0x7FFFFFFFu));
  } else {
    return abs_key8(Vec8<IT>{u});
  }
}

// Quantizes one 16-byte input vector (vector index v) into q.
template <bool kE5M2, typename IT>
__device__ __forceinline__ void quant_store16(uint8_t* q, int64_t v, const uint4& u, float s) {
  if constexpr (sizeof(IT) == 4) {
    const uint32_t lo = cvt2<kE5M2>(__uint_as_float(u.x), __uint_as_float(u.y), s);
    const uint32_t hi = cvt2<kE5M2>(__uint_as_float(u.z), __uint_as_float(u.w), s);
    reinterpret_cast<uint32_t*>(q)[v] = lo | (hi << 16);
  } else {
    reinterpret_cast<uint2*>(q)[v] = quant8<kE5M2>(Vec8<IT>{u}, s);
  }
}

// kStore: write q (cast); otherwise amax only. kVec: x and q are 16-byte aligned (any n; the tail is element-wise).
// The unit is one 16-byte input vector, thread t of the grid takes vectors t, t + stride, ... (kUnroll of them
// per loop step, all loads issued before any use): every warp-wide load covers 512 contiguous bytes (whole 32-byte
// sectors, no half-used sector that a second instruction must fetch again) and every store 256 (BF16) or 128 (F32)
// contiguous bytes.
// Grid: any size (grid-stride; the launcher makes it one resident wave). Block: kFlatThreads.
// kMinBlocks: __launch_bounds__'s resident-blocks hint. Spelled out (even as 1) it changes ptxas's register target:
// with __launch_bounds__(256) alone the amax instantiation compiled to 32 registers and kept ~3 of its 16 loads in
// flight (docs/amax_analysis.md); with (256, 1) it takes 80 registers and issues all 16 before the first use, 3
// blocks per SM: H200 8192x3072 16.5-16.8 -> 15.64 us (74.5 -> 78.4% of HBM, session 9; the per-tensor E4M3 cast
// 40 -> 64 registers, 8192x3072 at 86%). compute_amax compiles it for 2 (its default) and 4 as well.
template <typename IT, bool kE5M2, bool kStore, bool kVec, int kUnroll = kFlatUnroll, int kMinBlocks = 1>
__global__ void __launch_bounds__(kFlatThreads, kMinBlocks)
    cast_kernel(const IT* __restrict__ x, uint8_t* __restrict__ q, const float* __restrict__ scale_ptr,
                float* __restrict__ scale_inv, float* __restrict__ scale_inv2, float* __restrict__ amax, int64_t n,
                bool filter_amax) {
  dev::pdl_enter();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  __shared__ uint32_t scratch[kFlatThreads / 32];
  constexpr int kEl = kFlatVecElems<IT>;
  const float s = kStore ? *scale_ptr : 1.0f;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  uint32_t key = 0;
  int64_t done = 0;  // elements covered by the vector loop
  if constexpr (kVec) {
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    const int64_t nvec = n / kEl;
    done = nvec * kEl;
    for (int64_t v0 = tid; v0 < nvec; v0 += stride * kUnroll) {
      uint4 in[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t v = v0 + u * stride;
        in[u] = v < nvec ? __ldg(xv + v) : make_uint4(0u, 0u, 0u, 0u);  // zero never raises the amax
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        key = max(key, abs_key16<IT>(in[u]));
        if constexpr (kStore) {
          const int64_t v = v0 + u * stride;
          if (v < nvec) quant_store16<kE5M2, IT>(q, v, in[u], s);
        }
      }
    }
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    const float v = dev::to_float(x[i]);
    key = max(key, abs_key(v));
    if constexpr (kStore) {
      q[i] =
          static_cast<uint8_t>(__nv_cvt_float_to_fp8(__fmul_rn(v, s), __NV_SATFINITE, kE5M2 ? __NV_E5M2 : __NV_E4M3));
    }
  }
  if (amax != nullptr) {  // uniform: the barriers inside are safe
    key = block_max_u32(key, scratch);
    if (threadIdx.x == 0) amax_max(amax, key, filter_amax);  // compute_amax zeroed it before the launch
  }
  if constexpr (kStore) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      const float si = scale_reciprocal(s);
      if (scale_inv != nullptr) *scale_inv = si;
      if (scale_inv2 != nullptr) *scale_inv2 = si;
    }
  }
}

// ---- Fused cast + transpose, per-tensor and block modes ---------------------------------------------------------
constexpr int kTileCols = 128;  // columns of x per tile: 16 vectors of 8

struct TileArgs {
  const void* x;       // [rows, cols]
  uint8_t* q;          // [rows, cols] row-wise FP8 or null
  uint8_t* qt;         // [cols, rows] column-wise FP8 or null
  float* scale_inv;    // row-wise scale_inv (per tensor [1] or block layout) or null
  float* scale_inv_t;  // column-wise scale_inv or null
  const float* scale;  // per tensor: the scale
  float* amax;         // per tensor: max-reduced amax or null
  int64_t rows, cols;
  ScaleRule rule;  // block modes
};

// One tile of kRows rows x 128 columns per block of 2 * kRows threads (kRows = 128 or 256: 1 or 2 blocks of 128
// rows; taller tiles give longer contiguous runs in the transposed output). Thread t owns the 8x8 sub-tile at
// row group rg = t / 16, column vector cv = t % 16; warp w holds row groups 2w and 2w + 1, so warps
// [8h, 8h + 8) hold the 128-row half h of the tile.
// Grid: (ceil(cols / 128), ceil(rows / kRows)).
// kAligned: rows % 16 == 0, cols % 16 == 0 and 16-byte aligned pointers (vector loads and stores);
// otherwise every access is element-wise with bounds checks.
// Registers: at most 64 per thread for 16-bit inputs (4 blocks of 256 or 2 of 512 threads per SM), 128 for F32.
template <typename IT>
constexpr int tile_min_blocks(int threads) {
  return (sizeof(IT) == 4 ? 32768 : 65536) / (threads * 64);
}

template <typename IT, bool kE5M2, int kMode, bool kAligned, int kRows>
__global__ void __launch_bounds__(2 * kRows, tile_min_blocks<IT>(2 * kRows)) cast_transpose_kernel(const TileArgs a) {
  constexpr int kThreads = 2 * kRows, kWarps = kThreads / 32, kHalves = kRows / 128;
  // The transposed FP8 tile: row c = column c of x within the tile, kRows / 8 chunks of 8 bytes (8 rows of x
  // each). Chunk g of row c is stored at position g ^ (c / 8): both the 8-byte writes (a half-warp writes the 16
  // column groups of one row group) and the 16-byte reads (a quarter-warp reads 128 contiguous bytes of one row)
  // are bank-conflict free.
  __shared__ alignas(16) uint8_t s_t[kTileCols][kRows];
  __shared__ uint32_t s_colkey[kWarps][kTileCols];  // 1x128: per-warp column amax keys
  __shared__ float s_colscale[kHalves][kTileCols];  // 1x128: column scales of each 128-row half
  __shared__ uint32_t s_scratch[kWarps];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int cv = tid & 15;     // this thread's 8-column vector within the tile
  const int rg = tid >> 4;     // this thread's 8-row group within the tile
  const int half = warp >> 3;  // this thread's 128-row half of the tile
  const int64_t rows = a.rows, cols = a.cols;
  const int64_t tile_r = static_cast<int64_t>(blockIdx.y) * kRows;
  const int64_t tile_c = static_cast<int64_t>(blockIdx.x) * kTileCols;
  const int64_t r0 = tile_r + rg * 8, c0 = tile_c + cv * 8;
  const int64_t half_r = tile_r + 128 * half;  // first row of this thread's 128-row half
  const IT* x = static_cast<const IT*>(a.x);
  const bool want_row = a.q != nullptr, want_col = a.qt != nullptr;

  // 1. Load the 8x8 sub-tile (out-of-range elements read as 0).
  const int ncols = c0 >= cols ? 0 : (cols - c0 >= 8 ? 8 : static_cast<int>(cols - c0));
  Vec8<IT> v[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t r = r0 + i;
    if (r < rows && ncols > 0) {
      if constexpr (kAligned) {
        v[i] = load8(x + r * cols + c0);
      } else {
        v[i] = load8_partial(x + r * cols + c0, ncols);
      }
    } else {
      v[i] = zero8<IT>();
    }
  }

  // 2. Scales.
  float s_row[8];  // scale of each of the 8 rows (row-wise copy)
  float s_col[8];  // 1x128: scale of each of the 8 columns (column-wise copy)
  if constexpr (kMode == kModePerTensor) {
    const float s = *a.scale;
#pragma unroll
    for (int i = 0; i < 8; ++i) s_row[i] = s;
  } else if constexpr (kMode == kMode128x128) {
    // One 128x128 block per half: reduce over the 8 warps of the half.
    uint32_t key = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) key = max(key, abs_key8(v[i]));
    key = __reduce_max_sync(0xFFFFFFFFu, key);
    if (lane == 0) s_scratch[warp] = key;
    __syncthreads();
    key = s_scratch[half * 8];
#pragma unroll
    for (int w = 1; w < 8; ++w) key = max(key, s_scratch[half * 8 + w]);
    const float s = scale_from_amax(key_to_amax(key), a.rule);
#pragma unroll
    for (int i = 0; i < 8; ++i) s_row[i] = s;
  } else {  // kMode1x128
    if (want_row) {
      // Row strips: the 16 lanes of a half-warp hold the 128 columns of the same 8 rows.
      uint32_t rk[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        rk[i] = abs_key8(v[i]);
#pragma unroll
        for (int o = 1; o < 16; o <<= 1) rk[i] = max(rk[i], __shfl_xor_sync(0xFFFFFFFFu, rk[i], o));
      }
      // Lane cv < 8 of each half-warp computes the scale of row cv; the others fetch it.
      uint32_t mine = rk[0];
#pragma unroll
      for (int i = 1; i < 8; ++i) mine = cv == i ? rk[i] : mine;
      const float s_mine = scale_from_amax(key_to_amax(mine), a.rule);
#pragma unroll
      for (int i = 0; i < 8; ++i) s_row[i] = __shfl_sync(0xFFFFFFFFu, s_mine, (lane & 16) | i);
      if (cv < 8 && r0 + cv < rows) {
        a.scale_inv[block_scale_index(ScalingMode::kBlock1x128, rows, cols, false, r0 + cv, tile_c)] =
            scale_reciprocal(s_mine);
      }
    }
    if (want_col) {
      // Column strips (128x1 blocks of x): reduce over the 8 rows here, the other row group of the warp, then the
      // 8 warps of the half.
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        uint32_t k = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) k = max(k, abs_key(elem(v[i], j)));
        k = max(k, __shfl_xor_sync(0xFFFFFFFFu, k, 16));
        if (lane < 16) s_colkey[warp][cv * 8 + j] = k;
      }
      __syncthreads();
      if (tid < kHalves * kTileCols) {
        const int c = tid & (kTileCols - 1), h = tid / kTileCols;
        uint32_t k = s_colkey[h * 8][c];
#pragma unroll
        for (int w = 1; w < 8; ++w) k = max(k, s_colkey[h * 8 + w][c]);
        const float s = scale_from_amax(key_to_amax(k), a.rule);
        s_colscale[h][c] = s;
        if (tile_c + c < cols && tile_r + 128 * h < rows) {
          a.scale_inv_t[block_scale_index(ScalingMode::kBlock1x128, rows, cols, true, tile_r + 128 * h, tile_c + c)] =
              scale_reciprocal(s);
        }
      }
      __syncthreads();
#pragma unroll
      for (int j = 0; j < 8; ++j) s_col[j] = s_colscale[half][cv * 8 + j];
    }
  }

  // 3. Row-wise FP8 (also the source of the transposed copy when both copies share the scale).
  uint2 qr[8];
  const bool need_qr = want_row || (want_col && kMode != kMode1x128);
  if (need_qr) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      qr[i] = quant8<kE5M2>(v[i], s_row[i]);
      const int64_t r = r0 + i;
      if (want_row && r < rows && ncols > 0) {
        uint8_t* dst = a.q + r * cols + c0;
        if constexpr (kAligned) {
          *reinterpret_cast<uint2*>(dst) = qr[i];
        } else {
          const uint8_t* b = reinterpret_cast<const uint8_t*>(&qr[i]);
          for (int k = 0; k < ncols; ++k) dst[k] = b[k];
        }
      }
    }
  }

  // 4. Column-wise FP8 through the swizzled shared tile.
  if (want_col) {
    uint2 qc[8];
    if constexpr (kMode == kMode1x128) {
#pragma unroll
      for (int i = 0; i < 8; ++i) qc[i] = quant8_cols<kE5M2>(v[i], s_col);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) qc[i] = qr[i];
    }
    uint2 t[8];
    transpose8x8(qc, t);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      *reinterpret_cast<uint2*>(&s_t[cv * 8 + j][8 * (rg ^ cv)]) = t[j];
    }
    __syncthreads();
    // 128 tile columns x (kRows / 16) chunks of 16 rows; a quarter-warp writes 128 contiguous output bytes.
    constexpr int kChunks = kRows / 16;
#pragma unroll
    for (int p = 0; p < kTileCols * kChunks / kThreads; ++p) {
      const int id = tid + p * kThreads;
      const int c = id / kChunks, h = id % kChunks;  // tile column c, rows [16h, 16h + 16) of the tile
      const int g = c >> 3;                          // the column vector that wrote row c of s_t
      uint4 val = *reinterpret_cast<const uint4*>(&s_t[c][16 * (h ^ (g >> 1))]);
      if (g & 1) val = make_uint4(val.z, val.w, val.x, val.y);  // chunks 2h, 2h+1 were stored swapped
      const int64_t oc = tile_c + c, orow = tile_r + 16 * h;
      if (oc < cols && orow < rows) {
        uint8_t* dst = a.qt + oc * rows + orow;
        if constexpr (kAligned) {
          *reinterpret_cast<uint4*>(dst) = val;
        } else {
          const uint8_t* b = reinterpret_cast<const uint8_t*>(&val);
          const int n = rows - orow >= 16 ? 16 : static_cast<int>(rows - orow);
          for (int k = 0; k < n; ++k) dst[k] = b[k];
        }
      }
    }
  }

  // 5. Scale bookkeeping (after the stores: fewer live registers).
  if constexpr (kMode == kMode128x128) {
    if ((tid & 255) == 0 && half_r < rows) {
      const float si = scale_reciprocal(s_row[0]);
      constexpr ScalingMode m = ScalingMode::kBlock128x128;
      if (a.scale_inv != nullptr) a.scale_inv[block_scale_index(m, rows, cols, false, half_r, tile_c)] = si;
      if (a.scale_inv_t != nullptr) a.scale_inv_t[block_scale_index(m, rows, cols, true, half_r, tile_c)] = si;
    }
  }
  if constexpr (kMode == kModePerTensor) {
    if (a.amax != nullptr) {  // uniform
      uint32_t key = 0;
#pragma unroll
      for (int i = 0; i < 8; ++i) key = max(key, abs_key8(v[i]));
      key = block_max_u32(key, s_scratch);
      if (tid == 0) amax_max(a.amax, key);
    }
    if (blockIdx.x == 0 && blockIdx.y == 0 && tid == 0) {
      const float si = scale_reciprocal(*a.scale);
      if (a.scale_inv != nullptr) *a.scale_inv = si;
      if (a.scale_inv_t != nullptr) *a.scale_inv_t = si;
    }
  }
}

// ---- Dequantize -------------------------------------------------------------------------------------------------
constexpr int kDeqThreads = 256;

template <typename OT>
__device__ __forceinline__ void store_out(OT* p, float v) {
  *p = dev::from_float<OT>(v);
}

// y [m, k] = decode(q) * scale_inv. kVec: k % 8 == 0 and 16-byte aligned y (8 elements per thread step).
// Grid: any (grid-stride); block: kDeqThreads.
template <typename OT, bool kE5M2, int kMode, bool kVec>
__global__ void __launch_bounds__(kDeqThreads)
    dequantize_kernel(const uint8_t* __restrict__ q, const float* __restrict__ s, OT* __restrict__ y, int64_t m,
                      int64_t k) {
  constexpr ScalingMode mode = kMode == kMode1x128     ? ScalingMode::kBlock1x128
                               : kMode == kMode128x128 ? ScalingMode::kBlock128x128
                                                       : ScalingMode::kPerTensor;
  const __nv_fp8_interpretation_t fmt = kE5M2 ? __NV_E5M2 : __NV_E4M3;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const float s0 = kMode == kModePerTensor ? s[0] : 0.0f;
  if constexpr (kVec) {
    const uint32_t kv = static_cast<uint32_t>(k / 8);  // vectors per row
    const int64_t nvec = m * (k / 8);
    for (int64_t v = tid; v < nvec; v += stride) {
      const uint32_t i = static_cast<uint32_t>(v) / kv, j = (static_cast<uint32_t>(v) - i * kv) * 8;
      const float sc = kMode == kModePerTensor ? s0 : s[block_scale_offset(mode, m, k, i, j)];
      const uint2 raw = *reinterpret_cast<const uint2*>(q + v * 8);
      const uint32_t w[2] = {raw.x, raw.y};
      alignas(16) OT out[8];
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        const __half2 pair = __half2(__nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>((w[h >> 1] >> (16 * (h & 1))) & 0xFFFFu), fmt));
        const float2 f = __half22float2(pair);
        out[2 * h] = dev::from_float<OT>(__fmul_rn(f.x, sc));
        out[2 * h + 1] = dev::from_float<OT>(__fmul_rn(f.y, sc));
      }
      if constexpr (sizeof(OT) == 4) {
        reinterpret_cast<uint4*>(y + v * 8)[0] = reinterpret_cast<const uint4*>(out)[0];
        reinterpret_cast<uint4*>(y + v * 8)[1] = reinterpret_cast<const uint4*>(out)[1];
      } else {
        *reinterpret_cast<uint4*>(y + v * 8) = *reinterpret_cast<const uint4*>(out);
      }
    }
  } else {
    const int64_t n = m * k;
    for (int64_t e = tid; e < n; e += stride) {
      const int64_t i = e / k, j = e - i * k;
      const float sc = kMode == kModePerTensor ? s0 : s[block_scale_offset(mode, m, k, i, j)];
      const float f = __half2float(__half(__nv_cvt_fp8_to_halfraw(q[e], fmt)));
      store_out(y + e, __fmul_rn(f, sc));
    }
  }
}

// ---- Launch helpers ---------------------------------------------------------------------------------------------

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Grid for a grid-stride kernel: enough blocks for `work` items of `per_block` each, but never more than fit on
// the device at once (blocks that wait for a second wave would run alone at the end).
template <auto Kernel>
int resident_grid(int threads, int64_t work, int64_t per_block) {
  const int per_sm = resident_blocks(reinterpret_cast<const void*>(Kernel), threads, 0);
  const int64_t want = (work + per_block - 1) / per_block;
  const int64_t cap = static_cast<int64_t>(sm_count()) * per_sm;
  return static_cast<int>(want < 1 ? 1 : (want < cap ? want : cap));
}

template <typename F>
void dispatch_input(DType t, F&& f) {
  switch (t) {
    case DType::F32:
      f(float{});
      break;
    case DType::BF16:
      f(bf16_t{});
      break;
    case DType::F16:
      f(f16_t{});
      break;
    default:
      TG_FAIL("quantize: unsupported input dtype ", t, " (expected F32, BF16 or F16)");
  }
}

template <typename F>
void dispatch_fp8(DType t, F&& f) {
  if (t == DType::E4M3)
    f(std::false_type{});
  else if (t == DType::E5M2)
    f(std::true_type{});
  else
    TG_FAIL("quantize: unsupported FP8 dtype ", t, " (expected F8_E4M3 or F8_E5M2)");
}

template <typename F>
void dispatch_mode(ScalingMode m, F&& f) {
  switch (m) {
    case ScalingMode::kPerTensor:
      f(std::integral_constant<int, kModePerTensor>{});
      break;
    case ScalingMode::kBlock1x128:
      f(std::integral_constant<int, kMode1x128>{});
      break;
    case ScalingMode::kBlock128x128:
      f(std::integral_constant<int, kMode128x128>{});
      break;
  }
}

template <typename F>
void dispatch_bool(bool b, F&& f) {
  if (b)
    f(std::true_type{});
  else
    f(std::false_type{});
}

}  // namespace

void quantize(const TensorView& x, const Fp8View& out, const BlockQuantOptions& block, Stream stream) {
  TG_NVTX_FN();
  detail::check_quantize_args(x, out, Device::CUDA, "quantize");
  const int64_t rows = x.shape[0], cols = x.shape[1];
  const cudaStream_t st = cuda_stream(stream);
  uint8_t* q = out.has_rowwise() ? out.data.ptr<uint8_t>() : nullptr;
  uint8_t* qt = out.has_columnwise() ? out.columnwise_data.ptr<uint8_t>() : nullptr;
  float* si = out.has_rowwise() ? out.scale_inv.ptr<float>() : nullptr;
  float* si_t = out.has_columnwise() ? out.columnwise_scale_inv.ptr<float>() : nullptr;

  if (out.mode == ScalingMode::kPerTensor && qt == nullptr) {
    // Row-wise only: the flat kernel (any shape; the tail past the last 16-element vector is element-wise).
    const int64_t n = rows * cols;
    const bool vec = aligned16(x.data) && aligned16(q);
    float* amax = out.amax.empty() ? nullptr : out.amax.ptr<float>();
    // Small n (a decode step's activations) takes one 16-byte vector per thread and 4x the blocks. ncu on the
    // H200, gemma-7b decode at batch 64: the attention output's cast ([64, 4096] BF16 -> E4M3, 262144 elements)
    // ran 2.86 us on a 32-block grid (256 threads x 4 vectors x 8 elements per block: a quarter of the SMs);
    // kUnroll = 1 gives it 128 blocks. Large n keeps kFlatUnroll (its grid is one resident wave, and the loads
    // in flight per thread are what keeps HBM busy there). Each element is converted on its own and the amax is
    // a max, so both grids write the same bits.
    const bool small = n < kSmallCastElements;
    dispatch_input(x.dtype, [&](auto it) {
      using IT = decltype(it);
      dispatch_fp8(out.dtype(), [&](auto e5) {
        dispatch_bool(vec, [&](auto v) {
          auto go = [&](auto unroll) {
            constexpr int kUnroll = decltype(unroll)::value;
            constexpr auto kernel = cast_kernel<IT, decltype(e5)::value, true, decltype(v)::value, kUnroll>;
            constexpr int64_t kPerBlock = int64_t{kFlatThreads} * kUnroll * kFlatVecElems<IT>;
            const int grid = resident_grid<kernel>(kFlatThreads, n, kPerBlock);
            launch(kernel, grid, kFlatThreads, 0, st, static_cast<const IT*>(x.data), q,
                   out.scale.ptr<const float>(), si, nullptr, amax, n, /*filter_amax=*/true);
          };
          if (small) {
            go(std::integral_constant<int, 1>{});
          } else {
            go(std::integral_constant<int, kFlatUnroll>{});
          }
        });
      });
    });
    TG_CHECK_LAUNCH("cast_kernel");
    return;
  }

  TileArgs a{};
  a.x = x.data;
  a.q = q;
  a.qt = qt;
  a.scale_inv = si;
  // Per tensor, the column-wise scale_inv is usually the same buffer as the row-wise one: write it once.
  a.scale_inv_t = (out.mode == ScalingMode::kPerTensor && si_t == si) ? nullptr : si_t;
  a.scale = out.mode == ScalingMode::kPerTensor ? out.scale.ptr<const float>() : nullptr;
  a.amax = (out.mode == ScalingMode::kPerTensor && !out.amax.empty()) ? out.amax.ptr<float>() : nullptr;
  a.rows = rows;
  a.cols = cols;
  a.rule = ScaleRule{static_cast<float>(dtype_max(out.dtype())), block.amax_epsilon, block.power_2_scale,
                     detail::input_dtype_max(x.dtype)};
  if (rows == 0 || cols == 0) {
    if (out.mode != ScalingMode::kPerTensor) return;  // no blocks, no scales
  }
  const int tile_setting = cuda::tuning::cast_transpose_tile_rows();
  const int tile_rows = tile_setting != 0 ? tile_setting : (rows * cols < (int64_t{1} << 26) ? 128 : 256);
  const int64_t gx = (cols + kTileCols - 1) / kTileCols, gy = (rows + tile_rows - 1) / tile_rows;
  TG_CHECK(gy <= 65535, "quantize: at most ", int64_t{65535} * tile_rows, " rows per call, got ", rows);
  const dim3 grid(static_cast<unsigned>(gx < 1 ? 1 : gx), static_cast<unsigned>(gy < 1 ? 1 : gy));
  const bool aligned = rows % 16 == 0 && cols % 16 == 0 && aligned16(x.data) && aligned16(q) && aligned16(qt);
  dispatch_input(x.dtype, [&](auto it) {
    using IT = decltype(it);
    dispatch_fp8(out.dtype(), [&](auto e5) {
      dispatch_mode(out.mode, [&](auto mode) {
        dispatch_bool(aligned, [&](auto al) {
          constexpr bool kE5 = decltype(e5)::value, kAl = decltype(al)::value;
          constexpr int kMode = decltype(mode)::value;
          if (tile_rows == 256) {
            cast_transpose_kernel<IT, kE5, kMode, kAl, 256><<<grid, 512, 0, st>>>(a);
          } else {
            cast_transpose_kernel<IT, kE5, kMode, kAl, 128><<<grid, 256, 0, st>>>(a);
          }
        });
      });
    });
  });
  TG_CHECK_LAUNCH("cast_transpose_kernel");
}

namespace {
// cuStreamWriteValue32 (the driver's v2 stream memory operations, on by default on every platform since CUDA 11.7),
// looked up once through the runtime (no link against libcuda); null where the driver does not give it.
using WriteValue32Fn = CUresult (*)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
WriteValue32Fn write_value32() {
  static const WriteValue32Fn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuStreamWriteValue32", &p, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return WriteValue32Fn{nullptr};
    }
    return reinterpret_cast<WriteValue32Fn>(p);
  }();
  return fn;
}

// compute_amax's zeroing of its output word, in stream order before the kernel: a 4-byte memset node (the default),
// or with tuning::set_amax_zero_memop(true) a stream memory operation written by the GPU's front end (no memset
// launch; falls back to the memset where the driver has no cuStreamWriteValue32).
void zero_amax_word(void* word, cudaStream_t st) {
  if (tuning::amax_zero_memop()) {
    if (const WriteValue32Fn fn = write_value32()) {
      const CUresult r = fn(reinterpret_cast<CUstream>(st), reinterpret_cast<CUdeviceptr>(word), 0u,
                            CU_STREAM_WRITE_VALUE_DEFAULT);
      TG_CHECK(r == CUDA_SUCCESS, "compute_amax: cuStreamWriteValue32 failed (CUresult ", static_cast<int>(r), ")");
      return;
    }
  }
  TG_CHECK_CUDA(cudaMemsetAsync(word, 0, sizeof(float), st));
}

// compute_amax's launch of one cast_kernel<..., kStore = false> instantiation: one resident wave, at most `cap`
// blocks when cap > 0.
template <auto Kernel, typename IT>
void launch_amax(const IT* x, float* amax, int64_t n, int cap, cudaStream_t st) {
  constexpr int64_t kPerBlock = int64_t{kFlatThreads} * kAmaxUnroll * kFlatVecElems<IT>;
  int grid = resident_grid<Kernel>(kFlatThreads, n, kPerBlock);
  if (cap > 0) grid = std::min(grid, cap);
  launch(Kernel, grid, kFlatThreads, 0, st, x, nullptr, nullptr, nullptr, nullptr, amax, n, tuning::amax_filter());
}
}  // namespace

void compute_amax(const TensorView& x, const TensorView& amax, Stream stream) {
  TG_NVTX_FN();
  detail::check_amax_args(x, amax, Device::CUDA, "compute_amax");
  const cudaStream_t st = cuda_stream(stream);
  // Zeroed (a memset node, or the stream write of tuning::set_amax_zero_memop), then max-reduced. An in-kernel
  // overwrite (each block's max into a running word, a ticket counter, the last block copies and resets) measured
  // slower on the H200: 74.2% vs 76.9% of HBM at 8192x3072 (bench_kernels, 2026-11-30), so the simpler form stays.
  // Loads in flight per thread, H200, % of HBM (session 6): 8192x3072 in three runs 4: 72.5-73.7, 8: 68.0-68.8,
  // 16: 73.9-74.7; 8192x8192 90.3 / 90.6 / 91.1; 8192x24576 102.7 / 102.8 / 103.4: 16 (kAmaxUnroll).
  zero_amax_word(amax.data, st);
  const int64_t n = x.numel();
  if (n == 0) return;
  const bool vec = aligned16(x.data);
  // Sized by kAmaxUnroll vectors per thread, capped at 2 blocks per SM, compiled for 2 resident blocks (80
  // registers, all 16 loads issued before the first use), every block's end-of-block atomic unconditional. H200,
  // session 21, 5 interleaved repetitions each, us at 8192x3072 / 8192x8192: this default 15.54 / 34.51; the
  // (256, 1) kernel's whole wave (3 per SM, the default of sessions 9-20) 15.71 / 35.95, unconditional 15.57 / 35.81;
  // 2 per SM with the filtered atomic 15.65 / 34.64; 4 per SM (64 registers) 16.87 / 34.48. Earlier: a wide grid (4
  // loads per thread, every block the tensor needs), 16.5 us at 8192x3072 (session 8); at 32 registers, filling the
  // wave (1056 blocks, one vector per thread), slower (session 9: 16.5 -> 16.8 us, 4096x2048 8.9 -> 11.8 us).
  // tuning::set_amax_blocks_per_sm / set_amax_filter select the alternatives (quantize.h). Measured slower and
  // removed (session 23, medians of 5 interleaved runs): the loads with the L2::256B prefetch-size hint, 8192x3072
  // 16.11 vs 15.64 us, 8192x8192 35.90 vs 34.60, 8192x24576 100.37 vs 94.08.
  const int per_sm = tuning::amax_blocks_per_sm();
  const int cap = (per_sm == 0 ? 2 : per_sm) * sm_count();
  dispatch_input(x.dtype, [&](auto it) {
    using IT = decltype(it);
    const auto* xp = static_cast<const IT*>(x.data);
    dispatch_bool(vec, [&](auto v) {
      constexpr bool kV = decltype(v)::value;
      if (per_sm == 1 || per_sm == 3)
        launch_amax<cast_kernel<IT, false, false, kV, kAmaxUnroll, 1>>(xp, amax.ptr<float>(), n, cap, st);
      else if (per_sm == 4)
        launch_amax<cast_kernel<IT, false, false, kV, kAmaxUnroll, 4>>(xp, amax.ptr<float>(), n, cap, st);
      else
        launch_amax<cast_kernel<IT, false, false, kV, kAmaxUnroll, 2>>(xp, amax.ptr<float>(), n, cap, st);
    });
  });
  TG_CHECK_LAUNCH("cast_kernel(amax)");
}

void dequantize(const Fp8View& in, bool columnwise, const TensorView& y, Stream stream) {
  TG_NVTX_FN();
  detail::check_dequantize_args(in, columnwise, y, Device::CUDA, "dequantize");
  const TensorView& q = columnwise ? in.columnwise_data : in.data;
  const TensorView& s = columnwise ? in.columnwise_scale_inv : in.scale_inv;
  const int64_t m = q.shape[0], k = q.shape[1];
  if (m * k == 0) return;
  const bool vec = k % 8 == 0 && aligned16(y.data) && aligned16(q.data) && (m * (k / 8)) < (int64_t{1} << 32);
  const int64_t work = vec ? m * (k / 8) : m * k;
  const cudaStream_t st = cuda_stream(stream);
  auto launch = [&](auto ot) {
    using OT = decltype(ot);
    dispatch_fp8(q.dtype, [&](auto e5) {
      dispatch_mode(in.mode, [&](auto mode) {
        dispatch_bool(vec, [&](auto v) {
          constexpr auto kernel = dequantize_kernel<OT, decltype(e5)::value, decltype(mode)::value, decltype(v)::value>;
          const int grid = resident_grid<kernel>(kDeqThreads, work, kDeqThreads * 2);
          kernel<<<grid, kDeqThreads, 0, st>>>(q.ptr<const uint8_t>(), s.ptr<const float>(), y.ptr<OT>(), m, k);
        });
      });
    });
  };
  switch (y.dtype) {
    case DType::F32:
      launch(float{});
      break;
    case DType::BF16:
      launch(bf16_t{});
      break;
    case DType::F16:
      launch(f16_t{});
      break;
    default:
      TG_FAIL("dequantize: unsupported output dtype ", y.dtype);
  }
  TG_CHECK_LAUNCH("dequantize_kernel");
}

namespace tuning {
namespace {
std::atomic<int> g_tile_rows{0};           // 0: by size (quantize.h)
std::atomic<int> g_amax_blocks_per_sm{0};  // 0: compute_amax's default grid (quantize.h)
std::atomic<bool> g_amax_filter{false};     // compute_amax's unconditional atomic (quantize.h)
std::atomic<bool> g_amax_zero_memop{false};  // compute_amax's memset node (quantize.h)
}  // namespace
void set_cast_transpose_tile_rows(int rows) {
  TG_CHECK(rows == 0 || rows == 128 || rows == 256, "set_cast_transpose_tile_rows: expected 0, 128 or 256, got ", rows);
  g_tile_rows.store(rows, std::memory_order_relaxed);
}
int cast_transpose_tile_rows() { return g_tile_rows.load(std::memory_order_relaxed); }
void set_amax_blocks_per_sm(int blocks) {
  TG_CHECK(blocks >= 0 && blocks <= 4, "set_amax_blocks_per_sm: expected 0 (the default), 1, 2, 3 or 4, got ",
           blocks);
  g_amax_blocks_per_sm.store(blocks, std::memory_order_relaxed);
}
int amax_blocks_per_sm() { return g_amax_blocks_per_sm.load(std::memory_order_relaxed); }
void set_amax_filter(bool on) { g_amax_filter.store(on, std::memory_order_relaxed); }
bool amax_filter() { return g_amax_filter.load(std::memory_order_relaxed); }
void set_amax_zero_memop(bool on) { g_amax_zero_memop.store(on, std::memory_order_relaxed); }
bool amax_zero_memop() { return g_amax_zero_memop.load(std::memory_order_relaxed); }

}  // namespace tuning

}  // namespace tg::kernels::cuda
