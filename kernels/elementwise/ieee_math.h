// Scalar math that computes the SAME BITS on the host and on the device, for the element-wise Gemma
// kernels (norm, GeGLU, RoPE, embedding) and their CPU twins.
//
// Why: the CPU twin is the golden; a CUDA kernel is tested bit for bit against it. Library functions
// (tanhf, cosf, rsqrtf) differ by an ulp or two between glibc and CUDA's libdevice, and nvcc contracts
// a * b + c into an FMA where g++ does not. So every rounding step here is spelled out:
//   - fmul/fadd/fsub/fdiv/fsqrt/ffma are single IEEE binary32 operations rounded to nearest even
//     (on the device the __f*_rn intrinsics, which nvcc never contracts or approximates; on the host the
//     plain operators and std::fma, with no contraction: the project builds C++ in ISO mode, where g++
//     uses -ffp-contract=off, and never with -ffast-math, checked below);
//   - the transcendental functions below are built only from those operations (and their double
//     counterparts), so the host and the device evaluate the identical sequence of roundings.
// Accuracy (measured against FP64 on the CPU; kernels/tests/test_activation_cpu.cpp, IeeeMath.*, re-checks it):
//   tanh_for_gelu: absolute error < 2^-21.7 on all of R (relative accuracy near 0 is NOT a goal: GELU
//                  only uses 1 + t and 1 - t^2);
//   sincos_angle:  cos/sin of a float angle via FP64 reduction and FP64 polynomials, rounded once to
//                  float: correctly rounded except in double-rounding corner cases (|angle| <= 2^20).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/float_bits.h"

#if defined(__FAST_MATH__) && !defined(__CUDA_ARCH__)
#error "kernels/elementwise/ieee_math.h needs IEEE float semantics on the host: do not build with -ffast-math"
#endif

#if defined(__CUDACC__)
#define TG_IEEE_FN __host__ __device__ __forceinline__
#else
#define TG_IEEE_FN inline
#endif

namespace tg::kernels::ieee {

// ---- Single IEEE operations (round to nearest even, never fused unless named fma) -----------------
TG_IEEE_FN float fmul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
TG_IEEE_FN float fadd(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
TG_IEEE_FN float fsub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
TG_IEEE_FN float fdiv(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
TG_IEEE_FN float fsqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
TG_IEEE_FN float ffma(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
// Round to the nearest integer, ties to even (exact).
TG_IEEE_FN float frint(float a) {
#if defined(__CUDA_ARCH__)
  return rintf(a);
#else
  return std::nearbyint(a);
#endif
}
TG_IEEE_FN double dmul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
TG_IEEE_FN double dfma(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
TG_IEEE_FN double drint(double a) {
#if defined(__CUDA_ARCH__)
  return rint(a);
#else
  return std::nearbyint(a);
#endif
}
using ::tg::kernels::bits_float;  // kernels/float_bits.h
using ::tg::kernels::float_bits;
// |x| with the sign bit cleared (NaN stays NaN).
TG_IEEE_FN float fabs_bits(float x) { return bits_float(float_bits(x) & 0x7FFFFFFFu); }
// The amax key of x: |x|'s bits, every NaN mapped to the canonical 0x7FFFFFFF. For non-negative floats
// the unsigned order of the bits is the float order, so amax = max over these keys is exact, independent
// of the order, and NaN-propagating with the canonical NaN (kernels/quantize's amax contract).
TG_IEEE_FN uint32_t abs_bits(float x) {
  const uint32_t a = float_bits(x) & 0x7FFFFFFFu;
  return a > 0x7F800000u ? 0x7FFFFFFFu : a;
}

// ---- tanh for GELU ------------------------------------------------------------------------------------
// Eigen's rational approximation (generic_fast_tanh_float, the FMA variant): y clamped to
// [-7.99881172, 7.99881172] (where it returns exactly +-1), t = y P(y^2) / Q(y^2), degrees 13/6.
// Absolute error < 2^-21.7 (measured over every third float in [0, 9]; the unit test re-checks a sample);
// NaN in -> NaN out. It is about a
// third cheaper than an exp-based tanh, which matters: GeGLU at Gemma-7B shapes is close to
// compute-bound on the H200.
TG_IEEE_FN float tanh_for_gelu(float y) {
  constexpr float kClamp = 7.99881172180175781f;
  const float x = y > kClamp ? kClamp : (y < -kClamp ? -kClamp : y);  // NaN passes through
  const float x2 = fmul(x, x);
  float p = ffma(x2, -2.76076847742355e-16f, 2.00018790482477e-13f);
  p = ffma(x2, p, -8.60467152213735e-11f);
  p = ffma(x2, p, 5.12229709037114e-08f);
  p = ffma(x2, p, 1.48572235717979e-05f);
  p = ffma(x2, p, 6.37261928875436e-04f);
  p = ffma(x2, p, 4.89352455891786e-03f);
  p = fmul(x, p);
  float q = ffma(x2, 1.19825839466702e-06f, 1.18534705686654e-04f);
  q = ffma(x2, q, 2.26843463243900e-03f);
  q = ffma(x2, q, 4.89352518554385e-03f);
  return fdiv(p, q);
}

// ---- GELU, tanh approximation (PyTorch gelu(approximate='tanh'), its CUDA kernel's operation order) --
// kBeta = sqrt(2/pi) = M_SQRT2 * M_2_SQRTPI * 0.5 rounded to float, kKappa = 0.044715f.
//   x3 = (x*x)*x; inner = kBeta * fma(kKappa, x3, x); t = tanh(inner); gelu = (0.5*x) * (1 + t)
// (nvcc contracts PyTorch's x + kKappa * x_cube into this FMA.)
inline constexpr float kGeluBeta = 0.7978845608028654f;
inline constexpr float kGeluKappa = 0.044715f;

struct GeluParts {
  float t;      // tanh(inner)
  float value;  // gelu(x)
};
TG_IEEE_FN GeluParts gelu_tanh_parts(float x) {
  const float x3 = fmul(fmul(x, x), x);
  const float inner = fmul(kGeluBeta, ffma(kGeluKappa, x3, x));
  const float t = tanh_for_gelu(inner);
  return {t, fmul(fmul(0.5f, x), fadd(1.0f, t))};
}
TG_IEEE_FN float gelu_tanh(float x) { return gelu_tanh_parts(x).value; }

// gelu(x) and d gelu / dx from one tanh. The derivative follows PyTorch's GeluBackward (tanh):
//   left = 0.5 x; right = 1 + t; left' = 0.5 right;
//   right' = left * (1 - t*t) * kBeta * (1 + 3 kKappa x^2);  gelu' = left' + right'
// (value is bit-identical to gelu_tanh(x): x*x*x is (x*x)*x in both).
struct GeluValueGrad {
  float value;
  float grad;
};
TG_IEEE_FN GeluValueGrad gelu_tanh_value_grad(float x) {
  const float x2 = fmul(x, x);
  const float x3 = fmul(x2, x);
  const float inner = fmul(kGeluBeta, ffma(kGeluKappa, x3, x));
  const float t = tanh_for_gelu(inner);
  const float left = fmul(0.5f, x);
  const float right = fadd(1.0f, t);
  const float left_d = fmul(0.5f, right);
  const float right_d = fmul(fmul(fmul(left, fsub(1.0f, fmul(t, t))), kGeluBeta), ffma(3.0f * kGeluKappa, x2, 1.0f));
  return {fmul(left, right), fadd(left_d, right_d)};
}
TG_IEEE_FN float gelu_tanh_grad(float x) { return gelu_tanh_value_grad(x).grad; }

// ---- sin and cos of a float angle ----------------------------------------------------------------
// FP64 evaluation rounded once to float: reduction by pi/2 (fdlibm's 33-bit pio2_1 + tail: exact for
// |k| < 2^20), fdlibm's __kernel_sin / __kernel_cos polynomials on [-pi/4, pi/4], quadrant fix-up.
struct SinCos {
  float sin;
  float cos;
};
TG_IEEE_FN SinCos sincos_angle(float angle) {
  const double x = angle;
  const double k = drint(dmul(x, 6.36619772367581382433e-01));  // 2/pi
  double r = dfma(k, -1.57079632673412561417e+00, x);           // pio2_1 (33 bits): exact product
  r = dfma(k, -6.07710050650619224932e-11, r);                  // pio2_1t
  const double z = dmul(r, r);
  // __kernel_sin(r) = r + r^3 (S1 + z S2 + ... ), __kernel_cos(r) = 1 - z/2 + z^2 (C1 + z C2 + ...)
  double ps = dfma(z, 1.58969099521155010221e-10, -2.50507602534068634195e-08);
  ps = dfma(z, ps, 2.75573137070700676789e-06);
  ps = dfma(z, ps, -1.98412698298579493134e-04);
  ps = dfma(z, ps, 8.33333333332248946124e-03);
  ps = dfma(z, ps, -1.66666666666666324348e-01);
  const double s = dfma(dmul(z, r), ps, r);
  double pc = dfma(z, -1.13596475577881948265e-11, 2.08757232129817482790e-09);
  pc = dfma(z, pc, -2.75573143513906633035e-07);
  pc = dfma(z, pc, 2.48015872894767294178e-05);
  pc = dfma(z, pc, -1.38888888888741095749e-03);
  pc = dfma(z, pc, 4.16666666666666019037e-02);
  const double c = dfma(dmul(z, z), pc, dfma(z, -0.5, 1.0));
  const int q = static_cast<int>(static_cast<int64_t>(k) & 3);
  double sv = s, cv = c;
  if (q == 1) {
    sv = c;
    cv = -s;
  } else if (q == 2) {
    sv = -s;
    cv = -c;
  } else if (q == 3) {
    sv = -c;
    cv = s;
  }
  return {static_cast<float>(sv), static_cast<float>(cv)};
}

}  // namespace tg::kernels::ieee
