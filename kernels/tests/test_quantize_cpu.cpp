// CPU twin of kernels/quantize against hand-checked tensors (FP8 codes worked out by hand from the E4M3 / E5M2
// definitions in common/dtype.h), the round-trip error bound, and the block-scale layout helpers.
#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/numeric.h"
#include "kernels/quantize/block_layout.h"
#include "kernels/quantize/quantize.h"
#include "kernels/tests/quantize_test_util.h"

namespace tg {
namespace {

using kernels::BlockQuantOptions;
using testing::bits;
using testing::byte_at;
using testing::host_tensor;
using testing::make_fp8;

constexpr uint32_t kCanonicalNan = 0x7FFFFFFFu;

void set_scale(const Fp8View& v, float s) { v.scale.ptr<float>()[0] = s; }

// ---- Per-tensor ---------------------------------------------------------------------------------------------------

// x (BF16) times scale 2; codes by hand:
//   2 -> E4M3 0x40 (exp 8, 1.0) / E5M2 0x40;  -1 -> 0xB8 / 0xBC;
//   bf16(0.3) = 0.30078125, x2 = 0.6015625 -> 0.625 (E4M3 1.25*2^-1 = 0x32; E5M2 1.25*2^-1 = 0x39);
//   600 -> E4M3 saturates to 448 (0x7E); E5M2 640 (1.25*2^9 = 0x61);
//   2000 -> 0x7E / 2048 (0x68);  -4000 -> -448 (0xFE) / -4096 (0xEC);  0 -> 0x00;  -0 -> 0x80;
//   bf16(0.001) x2 = 0.0019989 -> E4M3 subnormal 1 * 2^-9 (0x01); E5M2 normal 2^-9 (0x18).
const std::vector<float> kPerTensorX = {1.0f, -0.5f, 0.3f, 300.0f, 1000.0f, -2000.0f, 0.0f, -0.0f, 0.001f};
const std::vector<uint8_t> kPerTensorE4M3 = {0x40, 0xB8, 0x32, 0x7E, 0x7E, 0xFE, 0x00, 0x80, 0x01};
const std::vector<uint8_t> kPerTensorE5M2 = {0x40, 0xBC, 0x39, 0x61, 0x68, 0xEC, 0x00, 0x80, 0x18};

TEST(QuantizeCpu, PerTensorHandChecked) {
  for (DType fp8 : {DType::E4M3, DType::E5M2}) {
    const auto& want = fp8 == DType::E4M3 ? kPerTensorE4M3 : kPerTensorE5M2;
    Tensor x = host_tensor(DType::BF16, {1, 9}, kPerTensorX);
    Fp8Tensor out = Fp8Tensor::per_tensor(fp8, 1, 9, true, true, Device::CPU);
    set_scale(out.view(), 2.0f);
    kernels::quantize(x, out.view());
    for (int i = 0; i < 9; ++i) {
      EXPECT_EQ(byte_at(out.view().data, i), want[i]) << dtype_name(fp8) << " element " << i;
      EXPECT_EQ(byte_at(out.view().columnwise_data, i), want[i]) << dtype_name(fp8) << " transposed element " << i;
    }
    EXPECT_EQ(out.view().scale_inv.ptr<float>()[0], 0.5f);
    EXPECT_EQ(out.view().amax.ptr<float>()[0], 2000.0f);
  }
}

TEST(QuantizeCpu, PerTensorInfAndNanReachTheAmax) {
  Tensor x = host_tensor(DType::F32, {2, 2}, {1.0f, INFINITY, -3.0f, 0.5f});
  Fp8Tensor out = Fp8Tensor::per_tensor(DType::E4M3, 2, 2, true, false, Device::CPU);
  kernels::quantize(x, out.view());
  EXPECT_EQ(out.view().amax.ptr<float>()[0], INFINITY);
  EXPECT_EQ(byte_at(out.view().data, 1), 0x7E);  // inf saturates to 448

  Tensor y = host_tensor(DType::F16, {2, 2}, {1.0f, NAN, -INFINITY, 0.5f});
  Fp8Tensor out2 = Fp8Tensor::per_tensor(DType::E5M2, 2, 2, true, false, Device::CPU);
  kernels::quantize(y, out2.view());
  EXPECT_EQ(bits(out2.view().amax.ptr<float>()[0]), kCanonicalNan);
  EXPECT_EQ(byte_at(out2.view().data, 1), 0x7F);  // NaN stays NaN
  EXPECT_EQ(byte_at(out2.view().data, 2), 0xFB);  // -inf saturates to -57344
}

TEST(QuantizeCpu, PerTensorAmaxIsMaxReducedIntoTheOldValue) {
  Tensor x = host_tensor(DType::F32, {1, 3}, {1.0f, -7.5f, 3.0f});
  Fp8Tensor out = Fp8Tensor::per_tensor(DType::E4M3, 1, 3, true, false, Device::CPU);
  out.view().amax.ptr<float>()[0] = 100.0f;
  kernels::quantize(x, out.view());
  EXPECT_EQ(out.view().amax.ptr<float>()[0], 100.0f);
  out.view().amax.ptr<float>()[0] = 2.0f;
  kernels::quantize(x, out.view());
  EXPECT_EQ(out.view().amax.ptr<float>()[0], 7.5f);
  // No amax tensor: nothing to update, still quantizes.
  Fp8View no_amax = out.view();
  no_amax.amax = TensorView();
  EXPECT_NO_THROW(kernels::quantize(x, no_amax));
}

TEST(QuantizeCpu, PerTensorTransposeIsExact) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{7, 13}, {1, 1}, {129, 77}, {16, 32}}) {
    Tensor x = testing::random_varied(DType::BF16, rows, cols, 11);
    Fp8Tensor both = Fp8Tensor::per_tensor(DType::E4M3, rows, cols, true, true, Device::CPU);
    Fp8Tensor col_only = Fp8Tensor::per_tensor(DType::E4M3, rows, cols, false, true, Device::CPU);
    set_scale(both.view(), 3.0f);
    set_scale(col_only.view(), 3.0f);
    kernels::quantize(x, both.view());
    kernels::quantize(x, col_only.view());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const uint8_t q = byte_at(both.view().data, r * cols + c);
        ASSERT_EQ(q, encode(DType::E4M3, testing::host_at(x, r * cols + c) * 3.0f));
        ASSERT_EQ(byte_at(both.view().columnwise_data, c * rows + r), q)
            << rows << "x" << cols << " at " << r << "," << c;
        ASSERT_EQ(byte_at(col_only.view().columnwise_data, c * rows + r), q);
      }
    }
    EXPECT_EQ(col_only.view().columnwise_scale_inv.ptr<float>()[0], 1.0f / 3.0f);
  }
}

// ---- Block 1x128 --------------------------------------------------------------------------------------------------

// F32 x [2, 256]:
//   row 0, strip 0: 0.25 except x[0][5] = -3   -> amax 3, 448/3 = 149.3 -> pow2 128: 0.25*128 = 32 (0x60),
//                                                 -384 = -1.5*2^8 (0xFC); scale_inv 1/128
//   row 0, strip 1: zeros                      -> amax 0 -> scale 1, scale_inv 1
//   row 1, strip 0: 1e-3                       -> 448/1e-3 ~ 448000 -> pow2 2^18: 262.1 -> 256 (0x78); 2^-18
//   row 1, strip 1: 1.0 except x[1][130] = inf -> amax inf -> scale 1: 1.0 (0x38), inf -> 448 (0x7E); 1
// Row-wise scale tensor [ceil(256/128), round_up(2, 4)] = [2, 4], entry (strip j, row i) at j*4 + i; padding stays 1.
std::vector<float> block_x_2x256() {
  std::vector<float> x(2 * 256);
  for (int c = 0; c < 256; ++c) {
    x[c] = c < 128 ? 0.25f : 0.0f;
    x[256 + c] = c < 128 ? 1e-3f : 1.0f;
  }
  x[5] = -3.0f;
  x[256 + 130] = INFINITY;
  return x;
}

TEST(QuantizeCpu, Block1x128RowwiseHandChecked) {
  Tensor x = host_tensor(DType::F32, {2, 256}, block_x_2x256());
  Fp8Tensor out =
      kernels::make_block_fp8_tensor(ScalingMode::kBlock1x128, DType::E4M3, 2, 256, true, false, Device::CPU);
  kernels::quantize(x, out.view());
  const float* si = out.view().scale_inv.ptr<float>();
  EXPECT_EQ(si[0], 1.0f / 128);
  EXPECT_EQ(si[1], std::ldexp(1.0f, -18));
  EXPECT_EQ(si[4], 1.0f);
  EXPECT_EQ(si[5], 1.0f);
  for (int pad : {2, 3, 6, 7}) EXPECT_EQ(si[pad], 1.0f) << "padding entry " << pad << " was written";
  const TensorView& q = out.view().data;
  EXPECT_EQ(byte_at(q, 0), 0x60);
  EXPECT_EQ(byte_at(q, 5), 0xFC);
  EXPECT_EQ(byte_at(q, 200), 0x00);
  EXPECT_EQ(byte_at(q, 256 + 7), 0x78);
  EXPECT_EQ(byte_at(q, 256 + 129), 0x38);
  EXPECT_EQ(byte_at(q, 256 + 130), 0x7E);
}

TEST(QuantizeCpu, Block1x128PlainFp32Scales) {
  Tensor x = host_tensor(DType::F32, {2, 256}, block_x_2x256());
  Fp8Tensor out =
      kernels::make_block_fp8_tensor(ScalingMode::kBlock1x128, DType::E4M3, 2, 256, true, false, Device::CPU);
  kernels::quantize(x, out.view(), BlockQuantOptions{.power_2_scale = false});
  const float s = 448.0f / 3.0f;  // 149.33333
  EXPECT_EQ(out.view().scale_inv.ptr<float>()[0], 1.0f / s);
  EXPECT_NE(out.view().scale_inv.ptr<float>()[0], 1.0f / 128);
  EXPECT_EQ(byte_at(out.view().data, 0), 0x61);  // 0.25 * 149.33 = 37.33 -> 36 = 1.125 * 2^5
  EXPECT_EQ(byte_at(out.view().data, 5), 0xFE);  // -448 exactly representable: the block max maps to the max
}

// Column-wise copy of the same x: [256, 2], 1x128 strips of x^T = 128x1 blocks of x (here the 2 rows that exist).
//   column 5:   {-3, 1e-3}  -> amax 3 -> 128: -384 (0xFC), 0.128 = 1.024*2^-3 -> 0.125 (0x20)
//   column 130: {0, inf}    -> scale 1: 0, 448 (0x7E)
//   column 200: {0, 1}      -> 448 -> pow2 256: 0, 256 (0x78)
// Column-wise scale tensor [ceil(2/128), round_up(256, 4)] = [1, 256], entry of column c at c.
TEST(QuantizeCpu, Block1x128ColumnwiseIsQuantizedFromTheSource) {
  Tensor x = host_tensor(DType::F32, {2, 256}, block_x_2x256());
  Fp8Tensor out =
      kernels::make_block_fp8_tensor(ScalingMode::kBlock1x128, DType::E4M3, 2, 256, true, true, Device::CPU);
  kernels::quantize(x, out.view());
  const TensorView& qt = out.view().columnwise_data;
  const float* st = out.view().columnwise_scale_inv.ptr<float>();
  ASSERT_EQ(out.view().columnwise_scale_inv.shape, (Shape{1, 256}));
  EXPECT_EQ(st[5], 1.0f / 128);
  EXPECT_EQ(byte_at(qt, 5 * 2 + 0), 0xFC);
  EXPECT_EQ(byte_at(qt, 5 * 2 + 1), 0x20);
  EXPECT_EQ(st[130], 1.0f);
  EXPECT_EQ(byte_at(qt, 130 * 2 + 1), 0x7E);
  EXPECT_EQ(st[200], 1.0f / 256);
  EXPECT_EQ(byte_at(qt, 200 * 2 + 1), 0x78);
  // Not the transpose of the row-wise copy: x[1][5] = 1e-3 is 0x78 row-wise (scale 2^18) but 0x20 column-wise.
  EXPECT_EQ(byte_at(out.view().data, 256 + 5), 0x78);
}

// ---- Block 128x128 ------------------------------------------------------------------------------------------------

// F32 x [130, 260]: tiles 2 x 3 (the last row and column of tiles are partial).
//   (0,0) 0.5 with one 2.0 -> 448/2 = 224 -> 128: 2*128 = 256 (0x78), 0.5*128 = 64 (0x68); scale_inv 1/128
//   (0,1) 0.75             -> 597.3 -> 512;     (0,2) cols 256..259, 10  -> 44.8 -> 32
//   (1,0) zeros            -> 1;                (1,1) one NaN -> 1 (NaN -> 0x7F);   (1,2) 448 -> 1
// Row-wise scales [2, round_up(3, 4)] = [2, 4] at i*4 + j; column-wise [3, round_up(2, 4)] = [3, 4] at j*4 + i.
TEST(QuantizeCpu, Block128x128HandChecked) {
  const int64_t R = 130, C = 260;
  std::vector<float> v(R * C, 0.0f);
  auto at = [&](int64_t r, int64_t c) -> float& { return v[static_cast<std::size_t>(r * C + c)]; };
  for (int64_t r = 0; r < 128; ++r) {
    for (int64_t c = 0; c < 128; ++c) at(r, c) = 0.5f;
    for (int64_t c = 128; c < 256; ++c) at(r, c) = 0.75f;
    for (int64_t c = 256; c < C; ++c) at(r, c) = 10.0f;
  }
  at(3, 4) = 2.0f;
  at(129, 200) = NAN;
  at(128, 259) = 448.0f;
  Tensor x = host_tensor(DType::F32, {R, C}, v);
  Fp8Tensor out =
      kernels::make_block_fp8_tensor(ScalingMode::kBlock128x128, DType::E4M3, R, C, true, true, Device::CPU);
  kernels::quantize(x, out.view());
  ASSERT_EQ(out.view().scale_inv.shape, (Shape{2, 4}));
  ASSERT_EQ(out.view().columnwise_scale_inv.shape, (Shape{3, 4}));
  const float want[2][3] = {{1.0f / 128, 1.0f / 512, 1.0f / 32}, {1.0f, 1.0f, 1.0f}};
  const float* si = out.view().scale_inv.ptr<float>();
  const float* st = out.view().columnwise_scale_inv.ptr<float>();
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      EXPECT_EQ(si[i * 4 + j], want[i][j]) << "tile " << i << "," << j;
      EXPECT_EQ(st[j * 4 + i], want[i][j]) << "transposed tile " << j << "," << i;
    }
  }
  const TensorView& q = out.view().data;
  EXPECT_EQ(byte_at(q, 3 * C + 4), 0x78);
  EXPECT_EQ(byte_at(q, 0), 0x68);
  EXPECT_EQ(byte_at(q, 129 * C + 200), 0x7F);
  EXPECT_EQ(byte_at(q, 128 * C + 259), 0x7E);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t c = 0; c < C; ++c) {
      ASSERT_EQ(byte_at(out.view().columnwise_data, c * R + r), byte_at(q, r * C + c)) << r << "," << c;
    }
  }
}

// Tiny amax: 448 / amax overflows FP32 -> value_for_inf = the input dtype's largest finite value (TE).
//   BF16 max = (2 - 2^-7) * 2^127; amax 2^-130: pow2 -> 2^127, q(2^-3) = 0x20; plain -> q(0.249) = 0.25 (0x28).
TEST(QuantizeCpu, BlockScaleOverflowUsesTheInputDtypeMax) {
  const float tiny = std::ldexp(1.0f, -130);
  Tensor x = host_tensor(DType::BF16, {1, 128}, std::vector<float>(128, tiny));
  for (bool pow2 : {true, false}) {
    Fp8Tensor out =
        kernels::make_block_fp8_tensor(ScalingMode::kBlock1x128, DType::E4M3, 1, 128, true, false, Device::CPU);
    kernels::quantize(x, out.view(), BlockQuantOptions{.power_2_scale = pow2});
    const float bf16_max = std::bit_cast<float>(0x7F7F0000u);
    EXPECT_EQ(out.view().scale_inv.ptr<float>()[0], pow2 ? std::ldexp(1.0f, -127) : 1.0f / bf16_max);
    EXPECT_EQ(byte_at(out.view().data, 0), pow2 ? 0x20 : 0x28);
  }
}

TEST(QuantizeCpu, BlockAmaxEpsilonFloorsTheAmax) {
  Tensor x = host_tensor(DType::F32, {1, 128}, std::vector<float>(128, 0.5f));
  Fp8Tensor out =
      kernels::make_block_fp8_tensor(ScalingMode::kBlock1x128, DType::E4M3, 1, 128, true, false, Device::CPU);
  kernels::quantize(x, out.view(), BlockQuantOptions{.power_2_scale = true, .amax_epsilon = 1.0f});
  EXPECT_EQ(out.view().scale_inv.ptr<float>()[0], 1.0f / 256);  // amax 1 -> 448 -> 256
  EXPECT_EQ(byte_at(out.view().data, 0), 0x70);                 // 0.5 * 256 = 128
}

TEST(QuantizeCpu, BlockE5M2UsesItsOwnMax) {
  Tensor x = host_tensor(DType::F32, {1, 128}, std::vector<float>(128, 1.0f));
  Fp8Tensor out =
      kernels::make_block_fp8_tensor(ScalingMode::kBlock1x128, DType::E5M2, 1, 128, true, false, Device::CPU);
  kernels::quantize(x, out.view());
  EXPECT_EQ(out.view().scale_inv.ptr<float>()[0], 1.0f / 32768);  // 57344 -> 2^15
  EXPECT_EQ(byte_at(out.view().data, 0), 0x78);                   // 2^15 = E5M2 exp 30
}

// ---- Round trip ---------------------------------------------------------------------------------------------------
// dequantize(quantize(x)) vs x. Two bounds:
//  - TE's test_quantized_tensor.py tolerance: E4M3 rtol 0.125 / atol 0.0675, E5M2 rtol 0.25 / atol 0.125 (about 2 eps
//    of each format; E4M3 eps 0.0625, E5M2 eps 0.125), the project's stated FP8 budget;
//  - the tight one this rounding actually allows: half an ulp, 2^-(m+1) |x| (m = 3 or 2 mantissa bits), or half the
//    smallest subnormal step 2^(emin - m - 1) times scale_inv for values that land in the subnormal range, plus
//    FP32 slack. Scales here never saturate (every scale maps its block amax to <= the FP8 max).
struct RoundTripCase {
  ScalingMode mode;
  bool columnwise;
};

void check_round_trip(DType in_dtype, DType fp8, const RoundTripCase& rc, int64_t rows, int64_t cols) {
  Tensor x = testing::random_varied(in_dtype, rows, cols, 5);
  Fp8Tensor q = make_fp8(rc.mode, fp8, rows, cols, true, true, Device::CPU);
  if (rc.mode == ScalingMode::kPerTensor) {
    float amax = 0;
    for (int64_t i = 0; i < x.numel(); ++i) amax = std::max(amax, std::fabs(testing::host_at(x, i)));
    set_scale(q.view(), static_cast<float>(dtype_max(fp8)) / amax);  // current scaling without pow2
  }
  kernels::quantize(x, q.view());
  const Shape yshape = rc.columnwise ? Shape{cols, rows} : Shape{rows, cols};
  Tensor y = Tensor::empty(DType::F32, yshape);
  kernels::dequantize(q.view(), rc.columnwise, y);
  const bool e4m3 = fp8 == DType::E4M3;
  const double rtol = e4m3 ? 0.125 : 0.25, atol = e4m3 ? 0.0675 : 0.125;
  const int m = e4m3 ? 3 : 2, emin = e4m3 ? -6 : -14;
  const float* sinv = (rc.columnwise ? q.view().columnwise_scale_inv : q.view().scale_inv).ptr<float>();
  int64_t bad_te = 0, bad_tight = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double xv = testing::host_at(x, r * cols + c);
      const int64_t yi = rc.columnwise ? c * rows + r : r * cols + c;
      const double yv = y.ptr<float>()[yi];
      const double err = std::fabs(yv - xv);
      if (err > atol + rtol * std::fabs(xv)) ++bad_te;
      const double s_inv = rc.mode == ScalingMode::kPerTensor
                               ? sinv[0]
                               : sinv[kernels::block_scale_index(rc.mode, rows, cols, rc.columnwise, r, c)];
      const double tight = std::ldexp(std::fabs(xv), -(m + 1)) + std::ldexp(s_inv, emin - m - 1);
      if (err > tight + 1e-6 * std::fabs(xv)) ++bad_tight;  // FP32 roundings of x*s, 1/s, q*s_inv
    }
  }
  EXPECT_EQ(bad_te, 0) << dtype_name(in_dtype) << "->" << dtype_name(fp8) << " " << scaling_mode_name(rc.mode)
                       << (rc.columnwise ? " column-wise" : " row-wise");
  EXPECT_EQ(bad_tight, 0) << dtype_name(in_dtype) << "->" << dtype_name(fp8) << " " << scaling_mode_name(rc.mode)
                          << (rc.columnwise ? " column-wise" : " row-wise");
}

TEST(QuantizeCpu, RoundTripWithinTheFp8ErrorBound) {
  for (DType in_dtype : {DType::F32, DType::BF16, DType::F16}) {
    for (DType fp8 : {DType::E4M3, DType::E5M2}) {
      for (RoundTripCase rc : {RoundTripCase{ScalingMode::kPerTensor, false},
                               {ScalingMode::kPerTensor, true},
                               {ScalingMode::kBlock1x128, false},
                               {ScalingMode::kBlock1x128, true},
                               {ScalingMode::kBlock128x128, false},
                               {ScalingMode::kBlock128x128, true}}) {
        // F16 cannot hold the 2^-12 .. 2^12 spread well at the low end; its own subnormals are exact inputs anyway.
        check_round_trip(in_dtype, fp8, rc, 200, 300);
      }
    }
  }
}

TEST(QuantizeCpu, DequantizeHandChecked) {
  // Per tensor: E4M3 0x40 (2.0) * scale_inv 0.5 = 1; 0xFE (-448) * 0.5 = -224; 0x7F (NaN) stays NaN.
  Fp8Tensor q = Fp8Tensor::per_tensor(DType::E4M3, 1, 3, true, false, Device::CPU);
  q.view().data.ptr<uint8_t>()[0] = 0x40;
  q.view().data.ptr<uint8_t>()[1] = 0xFE;
  q.view().data.ptr<uint8_t>()[2] = 0x7F;
  q.view().scale_inv.ptr<float>()[0] = 0.5f;
  Tensor y = Tensor::empty(DType::BF16, {1, 3});
  kernels::dequantize(q.view(), false, y);
  EXPECT_EQ(testing::host_at(y, 0), 1.0f);
  EXPECT_EQ(testing::host_at(y, 1), -224.0f);
  EXPECT_EQ(y.ptr<uint16_t>()[2], 0x7FFF);  // canonical BF16 NaN
}

// ---- Standalone amax ------------------------------------------------------------------------------------------------
TEST(QuantizeCpu, ComputeAmaxOverwrites) {
  Tensor amax = Tensor::empty(DType::F32, {1});
  amax.ptr<float>()[0] = 1e9f;
  kernels::compute_amax(host_tensor(DType::BF16, {1, 3}, {1.0f, -7.5f, 3.0f}), amax);
  EXPECT_EQ(amax.ptr<float>()[0], 7.5f);
  kernels::compute_amax(host_tensor(DType::F32, {1, 3}, {1.0f, -INFINITY, 3.0f}), amax);
  EXPECT_EQ(amax.ptr<float>()[0], INFINITY);
  kernels::compute_amax(host_tensor(DType::F16, {1, 4}, {1.0f, INFINITY, NAN, 3.0f}), amax);
  EXPECT_EQ(bits(amax.ptr<float>()[0]), kCanonicalNan);
  kernels::compute_amax(host_tensor(DType::F32, {2, 2}, {0.0f, -0.0f, 0.0f, 0.0f}), amax);
  EXPECT_EQ(bits(amax.ptr<float>()[0]), 0u);
}

// ---- Layout helpers -------------------------------------------------------------------------------------------------
TEST(BlockLayout, ShapesAndIndicesAreConsistent) {
  using kernels::block_scale_index;
  using kernels::block_scale_shape;
  for (ScalingMode mode : {ScalingMode::kBlock1x128, ScalingMode::kBlock128x128}) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {7, 13}, {129, 77}, {256, 384}, {130, 260}}) {
      for (bool colw : {false, true}) {
        const Shape s = block_scale_shape(mode, rows, cols, colw);
        const int64_t n = s.numel();
        std::set<int64_t> used;
        // Elements of one block share one index; different blocks never do.
        std::map<std::pair<int64_t, int64_t>, int64_t> by_block;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) {
            const int64_t i = block_scale_index(mode, rows, cols, colw, r, c);
            ASSERT_GE(i, 0);
            ASSERT_LT(i, n);
            // The block of (r, c): 1x128 row-wise (r, c/128); column-wise (r/128, c); 128x128 (r/128, c/128).
            const std::pair<int64_t, int64_t> blk = mode == ScalingMode::kBlock128x128 ? std::pair{r / 128, c / 128}
                                                    : colw                             ? std::pair{r / 128, c}
                                                                                       : std::pair{r, c / 128};
            auto [it, fresh] = by_block.emplace(blk, i);
            ASSERT_EQ(it->second, i) << "two indices for one block";
            if (fresh) {
              ASSERT_TRUE(used.insert(i).second) << "two blocks share index " << i;
            }
          }
        }
        // Every scale row is padded to 4 floats; the padding is exactly what is not used.
        EXPECT_EQ(s[1] % 4, 0);
        const int64_t blocks = static_cast<int64_t>(used.size());
        const int64_t m = colw ? cols : rows, k = colw ? rows : cols;
        const int64_t want_blocks =
            mode == ScalingMode::kBlock1x128 ? m * ((k + 127) / 128) : ((m + 127) / 128) * ((k + 127) / 128);
        EXPECT_EQ(blocks, want_blocks);
        EXPECT_LT(n - blocks, 4 * s[0]);
      }
    }
  }
  // 128x128: the column-wise scale of (r, c) is the row-wise scale's transposed slot.
  const int64_t rows = 300, cols = 520;
  const Shape sr = block_scale_shape(ScalingMode::kBlock128x128, rows, cols, false);
  const Shape sc = block_scale_shape(ScalingMode::kBlock128x128, rows, cols, true);
  EXPECT_EQ(sr, (Shape{3, 8}));  // ceil(300/128) = 3, round_up(ceil(520/128) = 5, 4) = 8
  EXPECT_EQ(sc, (Shape{5, 4}));
  EXPECT_EQ(kernels::block_scale_index(ScalingMode::kBlock128x128, rows, cols, false, 290, 515), 2 * 8 + 4);
  EXPECT_EQ(kernels::block_scale_index(ScalingMode::kBlock128x128, rows, cols, true, 290, 515), 4 * 4 + 2);
  // 1x128 hand values: [5, 300]: row-wise [3, 8] at (c/128)*8 + r; column-wise [1, 300] at (r/128)*300 + c.
  EXPECT_EQ(block_scale_shape(ScalingMode::kBlock1x128, 5, 300, false), (Shape{3, 8}));
  EXPECT_EQ(block_scale_shape(ScalingMode::kBlock1x128, 5, 300, true), (Shape{1, 300}));
  EXPECT_EQ(kernels::block_scale_index(ScalingMode::kBlock1x128, 5, 300, false, 4, 299), 2 * 8 + 4);
  EXPECT_EQ(kernels::block_scale_index(ScalingMode::kBlock1x128, 5, 300, true, 4, 299), 299);
}

TEST(BlockLayout, AllocatorAndChecks) {
  Fp8Tensor t =
      kernels::make_block_fp8_tensor(ScalingMode::kBlock1x128, DType::E4M3, 256, 384, true, true, Device::CPU);
  EXPECT_EQ(t.view().data.shape, (Shape{256, 384}));
  EXPECT_EQ(t.view().columnwise_data.shape, (Shape{384, 256}));
  EXPECT_EQ(t.view().scale_inv.shape, (Shape{3, 256}));
  EXPECT_EQ(t.view().columnwise_scale_inv.shape, (Shape{2, 384}));
  EXPECT_NO_THROW(kernels::check_block_scales(t.view(), "t"));
  EXPECT_NO_THROW(kernels::check_block_gemm_operand(256, 384, "t"));
  EXPECT_THROW(kernels::check_block_gemm_operand(100, 384, "t"), Error);
  EXPECT_THROW(kernels::check_block_gemm_operand(256, 200, "t"), Error);
  EXPECT_THROW(kernels::make_block_fp8_tensor(ScalingMode::kPerTensor, DType::E4M3, 4, 4, true, false, Device::CPU),
               Error);
  // A scale tensor with the wrong (unpadded) shape is refused with a message naming the tensor.
  Fp8Tensor bad = Fp8Tensor::with_layout(ScalingMode::kBlock1x128, DType::E4M3, 2, 256, true, false, Shape{2, 2},
                                         Shape{1}, Device::CPU);
  try {
    kernels::check_block_scales(bad.view(), "weight");
    ADD_FAILURE() << "expected a layout error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 4]"), std::string::npos) << e.what();
  }
}

// ---- Argument checks ------------------------------------------------------------------------------------------------
TEST(QuantizeCpu, RejectsBadArguments) {
  Fp8Tensor out = Fp8Tensor::per_tensor(DType::E4M3, 4, 8, true, true, Device::CPU);
  auto msg_of = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(msg_of([&] { kernels::quantize(Tensor::empty(DType::BF16, {32}), out.view()); }).find("2-D"),
            std::string::npos);
  EXPECT_NE(msg_of([&] {
              kernels::quantize(Tensor::empty(DType::I32, {4, 8}), out.view());
            }).find("I32"),
            std::string::npos);
  EXPECT_NE(msg_of([&] {
              kernels::quantize(Tensor::empty(DType::BF16, {8, 4}), out.view());
            }).find("out.data"),
            std::string::npos);
  Fp8View no_scale = out.view();
  no_scale.scale = TensorView();
  EXPECT_NE(msg_of([&] {
              kernels::quantize(Tensor::empty(DType::BF16, {4, 8}), no_scale);
            }).find("out.scale"),
            std::string::npos);
  Fp8View nothing = out.view();
  nothing.data = TensorView();
  nothing.columnwise_data = TensorView();
  EXPECT_THROW(kernels::quantize(Tensor::empty(DType::BF16, {4, 8}), nothing), Error);
  Fp8Tensor blk = kernels::make_block_fp8_tensor(ScalingMode::kBlock1x128, DType::E4M3, 4, 8, true, false, Device::CPU);
  EXPECT_THROW(kernels::quantize(Tensor::empty(DType::BF16, {4, 16}), blk.view()), Error);
  EXPECT_THROW(kernels::dequantize(out.view(), false, Tensor::empty(DType::F32, {8, 4})), Error);
  EXPECT_THROW(kernels::dequantize(blk.view(), true, Tensor::empty(DType::F32, {8, 4})), Error);  // no column copy
  EXPECT_THROW(kernels::compute_amax(Tensor::empty(DType::BF16, {4, 8}), Tensor::empty(DType::F32, {2})), Error);
}

}  // namespace
}  // namespace tg
