// The per-pair arithmetic of the forward / backward RoPE (rope.h's formulas), shared by every CUDA kernel that
// rotates q or k -- rope_kernel and the decode step's kv_cache_write_rope -- so that they produce the same bits,
// with cos / sin either computed (cos_sin) or read from rope_cos_sin_table's table (cos_sin_from_table).
#pragma once

#include "kernels/elementwise/elementwise.cuh"
#include "kernels/elementwise/ieee_math.h"

namespace tg::kernels::rope_dev {

// c, s of one pair at position `pos` (sign +1 forward, -1 backward), rounded to A as HF casts cos / sin.
template <typename A>
__device__ __forceinline__ void cos_sin(float pos, float inv_freq, float sign, float& c, float& s) {
  const ieee::SinCos sc = ieee::sincos_angle(ieee::fmul(pos, inv_freq));
  c = ew::round_to<A>(sc.cos);
  s = ew::round_to<A>(sign * sc.sin);
}

// The table row of position `pos` (rope_cos_sin_table: F32 [positions, 2, half]), or null when there is no table or
// pos is outside [0, positions): the caller then computes with cos_sin (never a read out of bounds).
__device__ __forceinline__ const float* table_row(const float* table, int64_t positions, int64_t half, int64_t pos) {
  return table != nullptr && pos >= 0 && pos < positions ? table + pos * 2 * half : nullptr;
}

// cos_sin of the W consecutive pairs i0 .. i0 + W - 1 read from a table row instead of evaluated: the row holds the
// FP32 cos / sin that cos_sin computes for that position (the same ieee::sincos_angle(fmul(pos, inv_freq))), and
// they are rounded here exactly as there, so c, s are the same bits. W % 4 == 0: 16-byte loads (row + i0 and
// row + half + i0 16-byte aligned: the caller's vector-path condition).
template <typename A, int W>
__device__ __forceinline__ void cos_sin_from_table(const float* row, int64_t half, int64_t i0, float sign,
                                                   float (&c)[W], float (&s)[W]) {
  float cv[W], sv[W];
  if constexpr (W % 4 == 0) {
    const float4* cp = reinterpret_cast<const float4*>(row + i0);
    const float4* sp = reinterpret_cast<const float4*>(row + half + i0);
#pragma unroll
    for (int v = 0; v < W / 4; ++v) {  // all loads first
      const float4 a = __ldg(cp + v), b = __ldg(sp + v);
      cv[4 * v] = a.x, cv[4 * v + 1] = a.y, cv[4 * v + 2] = a.z, cv[4 * v + 3] = a.w;
      sv[4 * v] = b.x, sv[4 * v + 1] = b.y, sv[4 * v + 2] = b.z, sv[4 * v + 3] = b.w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < W; ++j) {
      cv[j] = __ldg(row + i0 + j);
      sv[j] = __ldg(row + half + i0 + j);
    }
  }
#pragma unroll
  for (int j = 0; j < W; ++j) {
    c[j] = ew::round_to<A>(cv[j]);
    s[j] = ew::round_to<A>(sign * sv[j]);
  }
}

// c, s of the W consecutive pairs i0 .. i0 + W - 1 at position `pos`: from the table row when `table` (null: none)
// covers pos, else computed with cos_sin -- the same bits either way. The one rule every RoPE kernel follows.
template <typename A, int W>
__device__ __forceinline__ void cos_sin_at(const float* table, int64_t positions, int64_t half, int64_t pos,
                                           const float* inv_freq, int64_t i0, float sign, float (&c)[W],
                                           float (&s)[W]) {
  if (const float* row = table_row(table, positions, half, pos); row != nullptr) {
    cos_sin_from_table<A, W>(row, half, i0, sign, c, s);
    return;
  }
  const float p = static_cast<float>(pos);
#pragma unroll
  for (int j = 0; j < W; ++j) cos_sin<A>(p, inv_freq[i0 + j], sign, c[j], s[j]);
}

// The rotated pair (x1 = x_i, x2 = x_(i + Dh/2)) before the store's rounding to A.
template <typename A>
__device__ __forceinline__ float rotated_first(float x1, float x2, float c, float s) {
  return ieee::fsub(ew::round_to<A>(ieee::fmul(x1, c)), ew::round_to<A>(ieee::fmul(x2, s)));
}
template <typename A>
__device__ __forceinline__ float rotated_second(float x1, float x2, float c, float s) {
  return ieee::fadd(ew::round_to<A>(ieee::fmul(x2, c)), ew::round_to<A>(ieee::fmul(x1, s)));
}

}  // namespace tg::kernels::rope_dev
