// Device pieces of the Gemma RMSNorm forward shared by the norm kernels (norm.cu) and the GEMV's fused RMSNorm
// prologue (kernels/gemm/gemv.cu, GemvNorm): the LANE ORDER's butterfly, rstd, and the amax's NaN-propagating max,
// so both compute the same bits (norm.h states the arithmetic).
#pragma once

#include "kernels/elementwise/elementwise.cuh"

namespace tg::kernels::norm_device {

// The LANE ORDER's last step: for o = 16, 8, 4, 2, 1 every lane adds lane (l xor o)'s partial (every lane ends
// with the same bits: IEEE addition is commutative).
__device__ __forceinline__ float warp_butterfly_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = ieee::fadd(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}

// rstd = 1 / sqrt(ss * (1 / D) + eps), each step one RN float op (norm.h).
__device__ __forceinline__ float rstd_of(float sum_sq, float inv_d, float eps) {
  return ieee::fdiv(1.0f, ieee::fsqrt(ieee::fadd(ieee::fmul(sum_sq, inv_d), eps)));
}

// max(m, |y|) that propagates NaN (the forward's amax; m >= 0 or NaN).
__device__ __forceinline__ float max_abs_nan(float m, float y) {
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(m), "f"(fabsf(y)));
  return r;
}

}  // namespace tg::kernels::norm_device
