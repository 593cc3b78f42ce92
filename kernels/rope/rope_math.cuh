// The per-pair arithmetic of the forward / backward RoPE (rope.h's formulas), shared by every CUDA kernel that
// rotates q or k -- rope_kernel and the decode step's kv_cache_write_rope -- so that they produce the same bits.
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
