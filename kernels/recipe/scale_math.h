// The FP8 scale rules of the three Hopper recipes, as scalar __host__ __device__ functions: the one
// definition that the recipe kernels, the quantize kernels (block scales) and their CPU twins share,
// so that the CPU twin and the GPU compute the same bits.
//
// Semantics are TE's (transformer_engine/common/recipe/recipe_common.cuh::compute_scale_from_amax and
// delayed_scaling.cu's kernels); see docs/transformer-engine.md section 2.
//
//   scale_from_amax (current scaling and block scaling):
//     amax < epsilon -> amax = epsilon      (NaN compares false: stays NaN)
//     amax inf, NaN or 0 -> scale 1
//     scale = fp8_max / amax, rounded to nearest even (never a fast-math reciprocal)
//     scale inf (amax tiny) -> value_for_inf (FLT_MAX; TE's block kernels use the input dtype's max)
//     power_2_scale -> keep sign and exponent bits only, i.e. round the scale DOWN to a power of two
//
//   delayed_scale (delayed scaling; no epsilon, no power of two):
//     amax finite and > 0 -> scaled_max / amax (RN), scaled_max = fp8_max * 2^-margin
//     otherwise (0, inf, NaN) -> the previous scale
//     scale inf -> FLT_MAX
//
// Both sides must compute IEEE single precision with denormals: on the host no -ffast-math (checked
// below), on the device no -ftz=true / --use_fast_math for the files that include this header (the
// project builds without them). The inf/NaN tests are bit tests so they survive fast-math anyway.
#pragma once

#include <cfloat>
#include <cstdint>
#include <cstring>

#include "kernels/float_bits.h"

#if defined(__FAST_MATH__) && !defined(__CUDA_ARCH__)
#error "kernels/recipe/scale_math.h needs IEEE float semantics on the host: do not build with -ffast-math"
#endif

#if defined(__CUDACC__)
#define TG_SCALE_FN __host__ __device__ __forceinline__
#else
#define TG_SCALE_FN inline
#endif

namespace tg::kernels {

// Everything a scale computation from a single amax needs (current scaling, block scaling).
struct ScaleRule {
  float fp8_max = 448.0f;          // 448 (E4M3) or 57344 (E5M2)
  float amax_epsilon = 0.0f;       // floor for amax (current scaling's amax_epsilon; 0 for block)
  bool power_2_scale = false;      // round the scale down to a power of two
  float value_for_inf = FLT_MAX;   // the scale when fp8_max / amax overflows
};


// True for +-inf and NaN (exponent all ones); a bit test, so it holds under fast-math too.
TG_SCALE_FN bool scale_is_inf_or_nan(float x) { return (float_bits(x) & 0x7F800000u) == 0x7F800000u; }
TG_SCALE_FN bool scale_is_inf(float x) { return (float_bits(x) & 0x7FFFFFFFu) == 0x7F800000u; }

// a / b rounded to nearest even. On the device __fdiv_rn is spelled out (as TE does) so that the result
// does not depend on --use_fast_math / -prec-div; on the host `/` is the IEEE division.
TG_SCALE_FN float scale_div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// a * b rounded to nearest even, never contracted into an FMA.
TG_SCALE_FN float scale_mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// Rounds a positive scale down to a power of two by clearing the mantissa bits (TE's 0xFF800000 mask).
// Scales reaching this are normal floats (fp8_max / amax >= 448 / FLT_MAX), so the result is never 0.
TG_SCALE_FN float round_down_pow2(float scale) { return bits_float(float_bits(scale) & 0xFF800000u); }

// The scale the quantizer multiplies by: current scaling (per tensor) and block scaling (per block).
TG_SCALE_FN float scale_from_amax(float amax, const ScaleRule& rule) {
  if (amax < rule.amax_epsilon) amax = rule.amax_epsilon;  // NaN compares false: handled next
  if (scale_is_inf_or_nan(amax) || amax == 0.0f) return 1.0f;
  float scale = scale_div_rn(rule.fp8_max, amax);
  if (scale_is_inf(scale)) scale = rule.value_for_inf;
  if (rule.power_2_scale) scale = round_down_pow2(scale);
  return scale;
}

// The block-scaling rule (Float8BlockScaling): no epsilon; `value_for_inf` is the largest finite value of
// the high-precision input dtype as in TE (F32: FLT_MAX, BF16: 0x1.FEp127, F16: 65504).
TG_SCALE_FN float block_scale_from_amax(float block_amax, float fp8_max, bool power_2_scale,
                                        float value_for_inf) {
  return scale_from_amax(block_amax, ScaleRule{fp8_max, 0.0f, power_2_scale, value_for_inf});
}

// fp8_max * 2^-margin: the value an amax maps to under delayed scaling. Exact for margin in [0, 64].
TG_SCALE_FN float delayed_scaled_max(float fp8_max, int margin) {
  return scale_mul_rn(fp8_max, bits_float(static_cast<uint32_t>(127 - margin) << 23));
}

// Delayed scaling's new scale from the amax chosen by the history algorithm.
TG_SCALE_FN float delayed_scale(float amax, float previous_scale, float scaled_max) {
  float scale = (!scale_is_inf_or_nan(amax) && amax > 0.0f) ? scale_div_rn(scaled_max, amax) : previous_scale;
  if (scale_is_inf(scale)) scale = FLT_MAX;  // amax so tiny that the quotient overflows: the best we can do
  return scale;
}

// scale_inv = 1 / scale, rounded to nearest even (what dequantization multiplies by).
TG_SCALE_FN float scale_reciprocal(float scale) { return scale_div_rn(1.0f, scale); }

// max(m, a) that skips NaN `a` (CUDA fmaxf semantics for a non-NaN running max starting at 0): the amax
// history algorithm "max" of TE's kernel ignores NaN entries this way.
TG_SCALE_FN float amax_max(float m, float a) { return a > m ? a : m; }

}  // namespace tg::kernels
