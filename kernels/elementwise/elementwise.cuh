// Device building blocks of the element-wise Gemma kernels (norm, activation, rope, embedding):
// 8-element vector access for BF16/F32 rows, rounding to the storage type, and the per-tensor FP8
// epilogue (quantize, amax, scale_inv, transposed copy through a shared-memory tile).
// Host-side contract of the FP8 epilogue: kernels/elementwise/fp8_out.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/fp8_tensor.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/elementwise/ieee_math.h"

namespace tg::kernels::ew {

using dev::bf16_t;

// ---- 8 consecutive elements of a BF16 or F32 row ------------------------------------------------
// Raw storage (so a row cached in registers costs 4 registers per chunk in BF16), converted on use.
template <typename T>
struct Pack8;
template <>
struct Pack8<bf16_t> {
  uint4 v;
  __device__ __forceinline__ float get(int i) const {
    const uint32_t word = (i >> 1) == 0 ? v.x : (i >> 1) == 1 ? v.y : (i >> 1) == 2 ? v.z : v.w;
    return __uint_as_float((i & 1) ? (word & 0xFFFF0000u) : (word << 16));
  }
};
template <>
struct Pack8<float> {
  float4 a, b;
  __device__ __forceinline__ float get(int i) const {
    switch (i) {
      case 0:
        return a.x;
      case 1:
        return a.y;
      case 2:
        return a.z;
      case 3:
        return a.w;
      case 4:
        return b.x;
      case 5:
        return b.y;
      case 6:
        return b.z;
      default:
        return b.w;
    }
  }
};

// Aligned vector load of 8 elements (16-byte aligned for BF16, 32 for F32 rows of a multiple of 8).
template <typename T>
__device__ __forceinline__ Pack8<T> load8(const T* p);
template <>
__device__ __forceinline__ Pack8<bf16_t> load8<bf16_t>(const bf16_t* p) {
  return {*reinterpret_cast<const uint4*>(p)};
}
template <>
__device__ __forceinline__ Pack8<float> load8<float>(const float* p) {
  const float4* q = reinterpret_cast<const float4*>(p);
  return {q[0], q[1]};
}
// Element-wise load of the first n (0..8) elements; the rest read as 0.
template <typename T>
__device__ __forceinline__ Pack8<T> load8_partial(const T* p, int n);
template <>
__device__ __forceinline__ Pack8<bf16_t> load8_partial<bf16_t>(const bf16_t* p, int n) {
  const uint16_t* s = reinterpret_cast<const uint16_t*>(p);
  uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    if (i < n) w[i >> 1] |= static_cast<uint32_t>(s[i]) << ((i & 1) * 16);
  }
  return {make_uint4(w[0], w[1], w[2], w[3])};
}
template <>
__device__ __forceinline__ Pack8<float> load8_partial<float>(const float* p, int n) {
  float f[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = i < n ? p[i] : 0.0f;
  return {make_float4(f[0], f[1], f[2], f[3]), make_float4(f[4], f[5], f[6], f[7])};
}
template <typename T>
__device__ __forceinline__ Pack8<T> load8_any(const T* p, int n, bool vec) {
  return vec && n == 8 ? load8<T>(p) : load8_partial<T>(p, n);
}
template <typename T>
__device__ __forceinline__ void unpack8(const Pack8<T>& pk, float (&f)[8]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = pk.get(i);
}

// 8 floats rounded to T (RNE) in raw storage.
template <typename T>
__device__ __forceinline__ Pack8<T> pack8(const float (&f)[8]);
template <>
__device__ __forceinline__ Pack8<bf16_t> pack8<bf16_t>(const float (&f)[8]) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    w[i] = *reinterpret_cast<const uint32_t*>(&h);
  }
  return {make_uint4(w[0], w[1], w[2], w[3])};
}
template <>
__device__ __forceinline__ Pack8<float> pack8<float>(const float (&f)[8]) {
  return {make_float4(f[0], f[1], f[2], f[3]), make_float4(f[4], f[5], f[6], f[7])};
}

// Stores of 8 floats rounded to T (RNE): vector (aligned) or the first n elements.
template <typename T>
__device__ __forceinline__ void store8(T* p, const float (&f)[8]);
template <>
__device__ __forceinline__ void store8<bf16_t>(bf16_t* p, const float (&f)[8]) {
  *reinterpret_cast<uint4*>(p) = pack8<bf16_t>(f).v;
}
template <>
__device__ __forceinline__ void store8<float>(float* p, const float (&f)[8]) {
  const Pack8<float> pk = pack8<float>(f);
  float4* q = reinterpret_cast<float4*>(p);
  q[0] = pk.a;
  q[1] = pk.b;
}
template <typename T>
__device__ __forceinline__ void store8_any(T* p, const float (&f)[8], int n, bool vec) {
  if (vec && n == 8) {
    store8<T>(p, f);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if (i < n) p[i] = dev::from_float<T>(f[i]);
    }
  }
}

// The value a store to T holds (RNE; identity for F32).
template <typename T>
__device__ __forceinline__ float round_to(float x) {
  return dev::to_float<T>(dev::from_float<T>(x));
}

// ---- Per-tensor FP8 epilogue ----------------------------------------------------------------------
struct Fp8Out {
  uint8_t* data = nullptr;      // [rows, cols] or null
  uint8_t* col_data = nullptr;  // [cols, rows] or null
  const float* scale = nullptr;
  float* scale_inv = nullptr;
  float* col_scale_inv = nullptr;
  uint32_t* amax = nullptr;  // F32 [1] viewed as bits (max of non-negative floats = max of bits)
  int64_t rows = 0, cols = 0;
};

inline Fp8Out make_fp8_out(const Fp8View& v) {
  Fp8Out o;
  o.data = v.has_rowwise() ? static_cast<uint8_t*>(v.data.data) : nullptr;
  o.col_data = v.has_columnwise() ? static_cast<uint8_t*>(v.columnwise_data.data) : nullptr;
  o.scale = v.scale.ptr<float>();
  o.scale_inv = v.scale_inv.empty() ? nullptr : v.scale_inv.ptr<float>();
  o.col_scale_inv = v.columnwise_scale_inv.empty() ? nullptr : v.columnwise_scale_inv.ptr<float>();
  o.amax = v.amax.empty() ? nullptr : static_cast<uint32_t*>(v.amax.data);
  o.rows = v.rows();
  o.cols = v.cols();
  return o;
}

// 8 values -> 8 FP8 bytes (little-endian in a uint2): fp8(fmul(v, scale)), RNE, saturating.
template <typename Fp8>
__device__ __forceinline__ uint2 quantize8(const float (&v)[8], float scale) {
  constexpr __nv_fp8_interpretation_t kind = std::is_same_v<Fp8, dev::e4m3_t> ? __NV_E4M3 : __NV_E5M2;
  uint32_t w[2] = {0, 0};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 pair = make_float2(ieee::fmul(v[2 * i], scale), ieee::fmul(v[2 * i + 1], scale));
    const uint32_t two = __nv_cvt_float2_to_fp8x2(pair, __NV_SATFINITE, kind);
    w[i >> 1] |= (two & 0xFFFFu) << ((i & 1) * 16);
  }
  return make_uint2(w[0], w[1]);
}

// Stores the first n bytes of q (8 FP8 values) at p; one 8-byte store when vec && n == 8.
__device__ __forceinline__ void store_fp8x8(uint8_t* p, uint2 q, int n, bool vec) {
  if (vec && n == 8) {
    *reinterpret_cast<uint2*>(p) = q;
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if (i < n) p[i] = static_cast<uint8_t>((i < 4 ? q.x : q.y) >> ((i & 3) * 8));
    }
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Block-wide amax: every thread passes its max of |v| bits; one atomic per block. Call from all
// threads of the block (it synchronises); blockDim.x a multiple of 32, at most 1024.
__device__ __forceinline__ void block_amax_commit(uint32_t* amax, uint32_t bits) {
  __shared__ uint32_t warp_max[32];
  bits = __reduce_max_sync(0xFFFFFFFFu, bits);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) warp_max[warp] = bits;
  __syncthreads();
  if (warp == 0) {
    const int nw = blockDim.x >> 5;
    uint32_t m = lane < nw ? warp_max[lane] : 0u;
    m = __reduce_max_sync(0xFFFFFFFFu, m);
    if (lane == 0 && amax != nullptr && m != 0u) atomicMax(amax, m);
  }
}

// scale_inv = 1 / scale, written by one thread of the grid.
__device__ __forceinline__ void write_scale_inv(const Fp8Out& o) {
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) {
    const float inv = ieee::fdiv(1.0f, *o.scale);
    if (o.scale_inv != nullptr) *o.scale_inv = inv;
    if (o.col_scale_inv != nullptr) *o.col_scale_inv = inv;
  }
}

// Writes the transpose of a [tile_rows, tile_cols] byte tile held in shared memory (row pitch `pitch`
// bytes, a multiple of 4) to col_data[(c0 + c) * ld + r0 + r]. The fast path moves 4 columns x 16 rows
// per thread (16 shared-memory words in, four 16-byte stores out; consecutive threads take consecutive
// 16-row groups of the same columns, so a warp writes whole 32-byte sectors); it needs 16-byte aligned
// destinations (ld, r0 multiples of 16, aligned base) and whole 16-row groups / 4-column groups.
// Otherwise one byte per thread. Call from all threads after the tile is complete (__syncthreads).
__device__ __forceinline__ void store_transposed_tile(const uint8_t* tile, int pitch, int tile_rows, int tile_cols,
                                                      uint8_t* col_data, int64_t ld, int64_t r0, int64_t c0) {
  const bool fast = tile_rows % 16 == 0 && tile_cols % 4 == 0 && ld % 16 == 0 && r0 % 16 == 0 &&
                    (reinterpret_cast<uintptr_t>(col_data) & 15u) == 0;
  if (fast) {
    const int row_groups = tile_rows / 16, units = row_groups * (tile_cols / 4);
    for (int u = threadIdx.x; u < units; u += blockDim.x) {
      const int rg = u % row_groups, cg = u / row_groups;
      uint32_t out[4][4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {  // rows rg*16 + 4q .. +3
        const uint8_t* base = tile + (rg * 16 + 4 * q) * pitch + cg * 4;
        const uint32_t w0 = *reinterpret_cast<const uint32_t*>(base);
        const uint32_t w1 = *reinterpret_cast<const uint32_t*>(base + pitch);
        const uint32_t w2 = *reinterpret_cast<const uint32_t*>(base + 2 * pitch);
        const uint32_t w3 = *reinterpret_cast<const uint32_t*>(base + 3 * pitch);
        const uint32_t lo01 = __byte_perm(w0, w1, 0x5140), hi01 = __byte_perm(w0, w1, 0x7362);
        const uint32_t lo23 = __byte_perm(w2, w3, 0x5140), hi23 = __byte_perm(w2, w3, 0x7362);
        out[0][q] = __byte_perm(lo01, lo23, 0x5410);  // column cg*4 + 0, rows 4q..4q+3
        out[1][q] = __byte_perm(lo01, lo23, 0x7632);
        out[2][q] = __byte_perm(hi01, hi23, 0x5410);
        out[3][q] = __byte_perm(hi01, hi23, 0x7632);
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        uint8_t* dst = col_data + (c0 + cg * 4 + k) * ld + r0 + rg * 16;
        *reinterpret_cast<uint4*>(dst) = make_uint4(out[k][0], out[k][1], out[k][2], out[k][3]);
      }
    }
  } else {
    const int n = tile_rows * tile_cols;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int c = i / tile_rows, r = i % tile_rows;
      col_data[(c0 + c) * ld + r0 + r] = tile[r * pitch + c];
    }
  }
}

}  // namespace tg::kernels::ew

// Runtime dtype -> BF16 or F32 element type (the activation types of the element-wise kernels).
#define TG_DISPATCH_BF16_F32(dtype, what, ...)                                 \
  switch (dtype) {                                                             \
    TG_DISPATCH_FLOAT_CASE(F32, float, __VA_ARGS__)                            \
    TG_DISPATCH_FLOAT_CASE(BF16, ::tg::kernels::dev::bf16_t, __VA_ARGS__)      \
    default:                                                                   \
      TG_FAIL(what, ": unsupported dtype ", dtype, " (expected F32 or BF16)"); \
  }
#define TG_DISPATCH_FP8(dtype, what, ...)                                             \
  switch (dtype) {                                                                    \
    TG_DISPATCH_FLOAT_CASE(E4M3, ::tg::kernels::dev::e4m3_t, __VA_ARGS__)             \
    TG_DISPATCH_FLOAT_CASE(E5M2, ::tg::kernels::dev::e5m2_t, __VA_ARGS__)             \
    default:                                                                          \
      TG_FAIL(what, ": unsupported dtype ", dtype, " (expected F8_E4M3 or F8_E5M2)"); \
  }
