// Bit-exact scalar conversions between float and the low-precision formats, on the CPU.
//
// These are the golden rounding rules of the project: every CUDA kernel that rounds must agree with
// them bit for bit (tests/gpu compare them with the CUDA intrinsics over every float class).
//
//   float -> BF16 / F16 : round to nearest even; overflow -> inf (as __float2bfloat16_rn / __float2half_rn);
//                         NaN -> canonical NaN 0x7FFF.
//   float -> E4M3 / E5M2: round to nearest even, saturate to the finite max (as cvt.rn.satfinite, i.e.
//                         __nv_cvt_float_to_fp8(x, __NV_SATFINITE, ...)); +-inf -> +-max; NaN -> 0x7F.
//   float -> E8M0       : round toward +inf to a power of two, saturate (as cvt.rp.satfinite.ue8m0x2);
//                         NaN -> 0xFF.
// All "to float" conversions are exact.
#pragma once

#include <bit>
#include <cstdint>

#include "common/dtype.h"

namespace tg {

namespace numeric_detail {

// Rounds |x| (given as fp32 bits without sign) to a floating format with `man_bits` mantissa bits and
// exponent bias `bias`, returning the magnitude code (exponent<<man_bits | mantissa) before any
// overflow handling. Round to nearest, ties to even, on the exact integer significand.
constexpr uint32_t round_magnitude(uint32_t abs_bits, int man_bits, int bias) {
  const int exp32 = static_cast<int>(abs_bits >> 23);
  if (exp32 == 0) return 0;  // fp32 subnormals are far below every target's smallest subnormal
  const int e = exp32 - 127;
  const uint32_t sig = (abs_bits & 0x7FFFFFu) | 0x800000u;  // 24-bit significand with implicit 1
  const int min_exp = 1 - bias;
  int shift = 23 - man_bits;
  const bool subnormal = e < min_exp;
  if (subnormal) shift += min_exp - e;
  if (shift > 25) return 0;  // below half the smallest subnormal
  uint32_t q = sig >> shift;
  const uint32_t rem = sig & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  // Normal: q = 2^m + mantissa carries the implicit 1 into the exponent field; a rounding carry to
  // 2^(m+1) bumps the exponent naturally. Subnormal: q is the code (q == 2^m is the smallest normal).
  return subnormal ? q : (static_cast<uint32_t>(e - min_exp) << man_bits) + q;
}

constexpr float from_parts(uint32_t sign, int exp_field, uint32_t mant, int man_bits, int bias) {
  // Exact decode of sign/exponent/mantissa fields of a small float format into fp32.
  if (exp_field == 0) {
    if (mant == 0) return std::bit_cast<float>(sign << 31);
    // Subnormal: mant * 2^(1 - bias - man_bits); normalise into fp32 (always normal in fp32).
    int e = 1 - bias;
    while ((mant & (1u << man_bits)) == 0) {
      mant <<= 1;
      --e;
    }
    mant &= (1u << man_bits) - 1u;
    return std::bit_cast<float>((sign << 31) | (static_cast<uint32_t>(e + 127) << 23) |
                                (mant << (23 - man_bits)));
  }
  return std::bit_cast<float>((sign << 31) | (static_cast<uint32_t>(exp_field - bias + 127) << 23) |
                              (mant << (23 - man_bits)));
}

}  // namespace numeric_detail

// ---- BF16 ---------------------------------------------------------------------------------------
constexpr uint16_t float_to_bf16_bits(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
constexpr float bf16_bits_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }
// Round-trip through BF16: the value a BF16 store of `f` holds.
constexpr float round_bf16(float f) { return bf16_bits_to_float(float_to_bf16_bits(f)); }

// ---- F16 (IEEE binary16) ------------------------------------------------------------------------
constexpr uint16_t float_to_f16_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return 0x7FFF;
  if (abs == 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u);
  uint32_t code = numeric_detail::round_magnitude(abs, 10, 15);
  if (code >= 0x7C00u) code = 0x7C00u;  // overflow -> inf (no saturation, as __float2half_rn)
  return static_cast<uint16_t>(sign | code);
}
constexpr float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = h >> 15;
  const int exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) {
    return mant ? std::bit_cast<float>(0x7FFFFFFFu) : std::bit_cast<float>((sign << 31) | 0x7F800000u);
  }
  return numeric_detail::from_parts(sign, exp, mant, 10, 15);
}

// ---- E4M3 ---------------------------------------------------------------------------------------
constexpr uint8_t float_to_e4m3_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return 0x7F;
  uint32_t code = abs == 0x7F800000u ? 0x7Eu : numeric_detail::round_magnitude(abs, 3, 7);
  if (code > 0x7Eu) code = 0x7Eu;  // satfinite: 448
  return static_cast<uint8_t>(sign | code);
}
constexpr float e4m3_bits_to_float(uint8_t b) {
  const uint32_t sign = b >> 7;
  const int exp = (b >> 3) & 0xF;
  const uint32_t mant = b & 0x7u;
  if (exp == 0xF && mant == 0x7) return std::bit_cast<float>(0x7FFFFFFFu);  // the only NaN
  return numeric_detail::from_parts(sign, exp, mant, 3, 7);
}

// ---- E5M2 ---------------------------------------------------------------------------------------
constexpr uint8_t float_to_e5m2_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return 0x7F;
  uint32_t code = abs == 0x7F800000u ? 0x7Bu : numeric_detail::round_magnitude(abs, 2, 15);
  if (code > 0x7Bu) code = 0x7Bu;  // satfinite: 57344
  return static_cast<uint8_t>(sign | code);
}
constexpr float e5m2_bits_to_float(uint8_t b) {
  const uint32_t sign = b >> 7;
  const int exp = (b >> 2) & 0x1F;
  const uint32_t mant = b & 0x3u;
  if (exp == 0x1F) {
    return mant ? std::bit_cast<float>(0x7FFFFFFFu) : std::bit_cast<float>((sign << 31) | 0x7F800000u);
  }
  return numeric_detail::from_parts(sign, exp, mant, 2, 15);
}

// ---- E8M0 (power-of-two scale) ------------------------------------------------------------------
constexpr uint8_t float_to_e8m0_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0xFF;
  if ((u >> 31) || (u & 0x7FFFFFFFu) == 0) return 0x00;   // non-positive -> smallest (2^-127)
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs >= 0x7F000000u) return 0xFE;                    // >= 2^127 (incl. inf) saturates
  uint32_t e = abs >> 23;
  if (e == 0) return (abs & 0x7FFFFFu) > 0x400000u ? 1 : 0;  // fp32 subnormal: 2^-127 or 2^-126
  if (abs & 0x7FFFFFu) ++e;  // round toward +inf
  return static_cast<uint8_t>(e > 0xFE ? 0xFE : e);
}
constexpr float e8m0_bits_to_float(uint8_t b) {
  if (b == 0xFF) return std::bit_cast<float>(0x7FFFFFFFu);
  if (b == 0) return std::bit_cast<float>(0x00400000u);  // 2^-127 (fp32 subnormal)
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 23);
}

// ---- Generic helpers ----------------------------------------------------------------------------
// Rounds `f` to `t` and back: the value a store in format `t` holds (F32 and F64 pass through).
float round_to(DType t, float f);
// Encodes `f` into `t`'s bit pattern (1 or 2 bytes, little-endian in the low bits).
uint32_t encode(DType t, float f);
// Decodes a bit pattern of `t` to float.
float decode(DType t, uint32_t bits);

}  // namespace tg
