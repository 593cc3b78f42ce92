// CPU conversion rules (common/numeric.h) against independent oracles:
//  - FP8: brute force over all 256 codes (nearest finite value, ties to the even code, saturation).
//  - BF16/F16: exact double arithmetic on the two neighbouring representable values.
//  - Hand-checked values from the format definitions.
// The bit-for-bit comparison with the CUDA intrinsics is kernels/tests/test_convert_gpu.cpp.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "common/check.h"
#include "common/numeric.h"

namespace tg {
namespace {

float f(uint32_t bits) { return std::bit_cast<float>(bits); }

// Independent FP8 oracle: the finite code nearest to x (ties -> even code), saturating to +-max.
uint8_t fp8_oracle(float x, DType t) {
  if (std::isnan(x)) return 0x7F;
  const double max = dtype_max(t);
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const double ax = std::fabs(static_cast<double>(x));
  if (ax >= max) return sign | encode(t, static_cast<float>(max));
  int best = -1;
  double best_err = 0;
  for (int c = 0; c < 128; ++c) {
    const float v = decode(t, static_cast<uint32_t>(c));
    if (!std::isfinite(v)) continue;
    const double err = std::fabs(static_cast<double>(v) - ax);
    if (best < 0 || err < best_err || (err == best_err && (c & 1) == 0)) {
      best = c;
      best_err = err;
    }
  }
  return sign | static_cast<uint8_t>(best);
}

std::vector<float> interesting_floats() {
  std::vector<float> v;
  // Every BF16 value (as float) covers every exponent and the top mantissa bits.
  for (uint32_t b = 0; b < 65536; ++b) v.push_back(f(b << 16));
  // Values just around every BF16 value (ties and off-by-one-ulp neighbours for every format).
  for (uint32_t b = 0; b < 65536; b += 7) {
    const uint32_t base = b << 16;
    for (uint32_t d : {0x7FFFu, 0x8000u, 0x8001u, 0x1u, 0xFFFFu}) v.push_back(f(base | d));
  }
  std::mt19937 rng(1234);
  for (int i = 0; i < 200000; ++i) v.push_back(f(rng()));
  return v;
}

TEST(Numeric, Fp8HandCheckedValues) {
  // E4M3: max 448, smallest subnormal 2^-9, smallest normal 2^-6, NaN 0x7F.
  EXPECT_EQ(float_to_e4m3_bits(448.0f), 0x7E);
  EXPECT_EQ(float_to_e4m3_bits(1e6f), 0x7E);
  EXPECT_EQ(float_to_e4m3_bits(-1e6f), 0xFE);
  EXPECT_EQ(float_to_e4m3_bits(std::numeric_limits<float>::infinity()), 0x7E);
  EXPECT_EQ(float_to_e4m3_bits(std::nanf("")), 0x7F);
  EXPECT_EQ(float_to_e4m3_bits(std::ldexp(1.0f, -9)), 0x01);
  EXPECT_EQ(float_to_e4m3_bits(std::ldexp(1.0f, -10)), 0x00);       // tie 0 / 2^-9 -> even (0)
  EXPECT_EQ(float_to_e4m3_bits(std::ldexp(3.0f, -10)), 0x02);       // tie 2^-9 / 2^-8 -> even (code 2)
  EXPECT_EQ(float_to_e4m3_bits(std::ldexp(1.0f, -6)), 0x08);
  EXPECT_EQ(float_to_e4m3_bits(1.0f), 0x38);
  EXPECT_EQ(float_to_e4m3_bits(1.0625f), 0x38);  // tie 1 / 1.125 -> even (1.0)
  EXPECT_EQ(float_to_e4m3_bits(1.1875f), 0x3A);  // tie 1.125 / 1.25 -> even (1.25)
  EXPECT_EQ(float_to_e4m3_bits(-0.0f), 0x80);
  EXPECT_FLOAT_EQ(e4m3_bits_to_float(0x7E), 448.0f);
  EXPECT_TRUE(std::isnan(e4m3_bits_to_float(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_bits_to_float(0xFF)));
  EXPECT_FLOAT_EQ(e4m3_bits_to_float(0x01), std::ldexp(1.0f, -9));
  // E5M2: max 57344, inf 0x7C (decoding only: conversions saturate), smallest subnormal 2^-16.
  EXPECT_EQ(float_to_e5m2_bits(57344.0f), 0x7B);
  EXPECT_EQ(float_to_e5m2_bits(61440.0f), 0x7B);  // would round to inf without saturation
  EXPECT_EQ(float_to_e5m2_bits(std::numeric_limits<float>::infinity()), 0x7B);
  EXPECT_EQ(float_to_e5m2_bits(-std::numeric_limits<float>::infinity()), 0xFB);
  EXPECT_EQ(float_to_e5m2_bits(std::nanf("")), 0x7F);
  EXPECT_EQ(float_to_e5m2_bits(std::ldexp(1.0f, -16)), 0x01);
  EXPECT_EQ(float_to_e5m2_bits(1.0f), 0x3C);
  EXPECT_TRUE(std::isinf(e5m2_bits_to_float(0x7C)));
  EXPECT_FLOAT_EQ(e5m2_bits_to_float(0x7B), 57344.0f);
}

TEST(Numeric, Fp8MatchesBruteForceOracle) {
  const auto xs = interesting_floats();
  for (DType t : {DType::E4M3, DType::E5M2}) {
    int failures = 0;
    for (float x : xs) {
      const uint32_t got = encode(t, x), want = fp8_oracle(x, t);
      if (got != want && ++failures <= 5) {
        ADD_FAILURE() << dtype_name(t) << " x=" << x << " (0x" << std::hex << std::bit_cast<uint32_t>(x)
                      << ") got 0x" << got << " want 0x" << want;
      }
    }
    EXPECT_EQ(failures, 0) << dtype_name(t);
  }
}

TEST(Numeric, Fp8DecodeEncodeRoundTripsEveryCode) {
  for (DType t : {DType::E4M3, DType::E5M2}) {
    for (uint32_t c = 0; c < 256; ++c) {
      const float v = decode(t, c);
      if (std::isnan(v)) continue;
      if (std::isinf(v)) {
        EXPECT_EQ(t, DType::E5M2);
        continue;
      }
      EXPECT_EQ(encode(t, v), c) << dtype_name(t) << " code " << c;
    }
  }
}

// Double-precision oracle for RNE into a format with `man` mantissa bits (BF16: 7, F16: 10).
double rne_oracle(double x, int man, int min_exp, double max_finite, bool saturate) {
  if (x == 0) return x;
  const double ax = std::fabs(x);
  int e = std::ilogb(ax);
  if (e < min_exp) e = min_exp;
  const double ulp = std::ldexp(1.0, e - man);
  const double q = ax / ulp;
  double r = std::nearbyint(q);  // FE_TONEAREST: ties to even
  double v = r * ulp;
  if (v > max_finite) v = saturate ? max_finite : std::numeric_limits<double>::infinity();
  return std::copysign(v, x);
}

TEST(Numeric, Bf16AndF16MatchDoubleOracle) {
  const auto xs = interesting_floats();
  int bf_fail = 0, h_fail = 0;
  for (float x : xs) {
    if (std::isnan(x)) {
      EXPECT_EQ(float_to_bf16_bits(x), 0x7FFF);
      EXPECT_EQ(float_to_f16_bits(x), 0x7FFF);
      continue;
    }
    if (std::isinf(x)) {
      EXPECT_EQ(bf16_bits_to_float(float_to_bf16_bits(x)), x);
      EXPECT_EQ(f16_bits_to_float(float_to_f16_bits(x)), x);
      continue;
    }
    // BF16 has fp32's exponent range; overflow past the max rounds to inf (no saturation).
    const double want_bf = rne_oracle(x, 7, -126, 3.3895313892515355e38, false);
    const double got_bf = bf16_bits_to_float(float_to_bf16_bits(x));
    if (!(got_bf == want_bf) && ++bf_fail <= 5) ADD_FAILURE() << "bf16 x=" << x << " got " << got_bf << " want " << want_bf;
    const double want_h = rne_oracle(x, 10, -14, 65504.0, false);
    // F16 rounds values >= 65520 (the midpoint past max) to inf.
    const double got_h = f16_bits_to_float(float_to_f16_bits(x));
    if (!(got_h == want_h) && ++h_fail <= 5) ADD_FAILURE() << "f16 x=" << x << " got " << got_h << " want " << want_h;
  }
  EXPECT_EQ(bf_fail, 0);
  EXPECT_EQ(h_fail, 0);
}

TEST(Numeric, Bf16KnownValues) {
  EXPECT_EQ(float_to_bf16_bits(1.0f), 0x3F80);
  EXPECT_EQ(round_bf16(std::sqrt(3072.0f)), 55.5f);  // the Gemma-7B embedding scale (docs/gemma.md 2.1)
  EXPECT_EQ(round_bf16(std::sqrt(2048.0f)), 45.25f);
  EXPECT_EQ(float_to_bf16_bits(f(0x3F808000)), 0x3F80);  // tie -> even
  EXPECT_EQ(float_to_bf16_bits(f(0x3F818000)), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(float_to_bf16_bits(f(0x7F7FFFFF)), 0x7F80);  // FLT_MAX rounds to inf
}

TEST(Numeric, E8M0PowerOfTwoScales) {
  EXPECT_EQ(float_to_e8m0_bits(1.0f), 127);
  EXPECT_EQ(float_to_e8m0_bits(1.5f), 128);  // rounds up to 2
  EXPECT_EQ(float_to_e8m0_bits(0.25f), 125);
  EXPECT_EQ(float_to_e8m0_bits(std::nanf("")), 0xFF);
  EXPECT_EQ(float_to_e8m0_bits(std::numeric_limits<float>::infinity()), 0xFE);
  EXPECT_EQ(e8m0_bits_to_float(127), 1.0f);
  EXPECT_EQ(e8m0_bits_to_float(130), 8.0f);
  EXPECT_TRUE(std::isnan(e8m0_bits_to_float(0xFF)));
  for (uint32_t c = 1; c < 0xFF; ++c) EXPECT_EQ(float_to_e8m0_bits(e8m0_bits_to_float(c)), c);
}

TEST(Numeric, DTypeNamesRoundTrip) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::E4M3, DType::E5M2, DType::E8M0, DType::F64, DType::I32,
                  DType::I64, DType::U8}) {
    EXPECT_EQ(parse_dtype(dtype_name(t)), t);
  }
  EXPECT_EQ(parse_dtype("bf16"), DType::BF16);
  EXPECT_THROW(parse_dtype("F8_E3M4"), Error);
}

}  // namespace
}  // namespace tg
