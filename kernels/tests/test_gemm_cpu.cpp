// CPU twins of kernels/gemm against an independent FP64 triple loop (exact: the twin accumulates in double and
// rounds once, so its output must equal round(FP64) bit for bit), hand-checked values, and the argument checks
// that the CPU twin and the cuBLASLt wrapper share.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "common/numeric.h"
#include "kernels/gemm/gemm.h"
#include "kernels/quantize/block_layout.h"
#include "kernels/tests/gemm_test_util.h"

namespace tg::kernels {
namespace {

using testing::bits_at;
using testing::element;
using testing::expected_bits;
using testing::make_fp8_operand;
using testing::random_matrix;
using testing::scalar_f32;

struct Shape3 {
  int64_t m, n, k;
};
void PrintTo(const Shape3& s, std::ostream* os) { *os << "[M, N, K] = [" << s.m << ", " << s.n << ", " << s.k << "]"; }
std::string shape_name(const ::testing::TestParamInfo<Shape3>& info) {
  return std::to_string(info.param.m) + "x" + std::to_string(info.param.n) + "x" + std::to_string(info.param.k);
}

// ---- Hand-checked values ---------------------------------------------------------------------------------------
TEST(GemmCpu, Bf16HandChecked) {
  // A = [[1, 2, 3], [4, 5, 6]], B = [[1, 0, -1], [2, 2, 2]]  ->  A * B^T = [[-2, 12], [-2, 30]]
  const float av[] = {1, 2, 3, 4, 5, 6}, bv[] = {1, 0, -1, 2, 2, 2};
  Tensor a = Tensor::empty(DType::BF16, {2, 3}), b = Tensor::empty(DType::BF16, {2, 3});
  for (int i = 0; i < 6; ++i) {
    a.ptr<uint16_t>()[i] = float_to_bf16_bits(av[i]);
    b.ptr<uint16_t>()[i] = float_to_bf16_bits(bv[i]);
  }
  Tensor out = Tensor::empty(DType::F32, {2, 2});
  gemm(a, b, out);
  const float want[] = {-2, 12, -2, 30};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out.ptr<float>()[i], want[i]) << "element " << i;
  // beta = 1 accumulates, alpha scales: out = 0.5 * A B^T + out
  gemm(a, b, out, {.alpha = 0.5f, .beta = 1.0f});
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out.ptr<float>()[i], 1.5f * want[i]) << "element " << i;
}

TEST(GemmCpu, Fp8PerTensorHandChecked) {
  // A = [1, 16] of 1.0 (E4M3) with scale_inv 0.5, B = [8, 16] of 2.0 with scale_inv 0.25: out = 16 * 0.5 * 0.5 = 4.
  Fp8Tensor a = Fp8Tensor::per_tensor(DType::E4M3, 1, 16, true, false, Device::CPU);
  Fp8Tensor b = Fp8Tensor::per_tensor(DType::E4M3, 8, 16, true, false, Device::CPU);
  std::memset(a.view().data.data, float_to_e4m3_bits(1.0f), 16);
  std::memset(b.view().data.data, float_to_e4m3_bits(2.0f), 8 * 16);
  a.view().scale_inv.ptr<float>()[0] = 0.5f;
  b.view().scale_inv.ptr<float>()[0] = 0.25f;
  Tensor out = Tensor::empty(DType::BF16, {1, 8});  // rows of 8 BF16 = 16 bytes, the FP8 GEMM minimum
  gemm_fp8(a.view(), b.view(), out);
  for (int j = 0; j < 8; ++j) EXPECT_EQ(bf16_bits_to_float(out.ptr<uint16_t>()[j]), 4.0f) << "column " << j;
  // FP8 out with out_scale 96 -> 384 in E4M3 (representable), amax 4 (before out_scale).
  Tensor out8 = Tensor::empty(DType::E4M3, {1, 16});
  Fp8Tensor b16 = Fp8Tensor::per_tensor(DType::E4M3, 16, 16, true, false, Device::CPU);
  std::memset(b16.view().data.data, float_to_e4m3_bits(2.0f), 256);
  b16.view().scale_inv.ptr<float>()[0] = 0.25f;
  Tensor amax = scalar_f32(-1.0f, Device::CPU), oscale = scalar_f32(96.0f, Device::CPU);
  gemm_fp8(a.view(), b16.view(), out8, {}, {}, amax, oscale);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(e4m3_bits_to_float(out8.ptr<uint8_t>()[j]), 384.0f) << "column " << j;
  EXPECT_EQ(amax.ptr<float>()[0], 4.0f);
}

TEST(GemmCpu, Fp8BlockHandChecked) {
  // A [8, 256] 1x128: every element 1.0, scale_inv 1 in the first K block and 2 in the second.
  // B [8, 256] 128x128: every element 1.0, scale_inv 0.5 (one row tile, two K tiles).
  // out = 128 * 1 * 0.5 + 128 * 2 * 0.5 = 192.
  Fp8Tensor a = make_block_fp8_tensor(ScalingMode::kBlock1x128, DType::E4M3, 8, 256, true, false, Device::CPU);
  Fp8Tensor b = make_block_fp8_tensor(ScalingMode::kBlock128x128, DType::E4M3, 8, 256, true, false, Device::CPU);
  std::memset(a.view().data.data, float_to_e4m3_bits(1.0f), 8 * 256);
  std::memset(b.view().data.data, float_to_e4m3_bits(1.0f), 8 * 256);
  for (int64_t i = 0; i < 8; ++i) {
    a.view().scale_inv.ptr<float>()[block_scale_offset(ScalingMode::kBlock1x128, 8, 256, i, 0)] = 1.0f;
    a.view().scale_inv.ptr<float>()[block_scale_offset(ScalingMode::kBlock1x128, 8, 256, i, 128)] = 2.0f;
  }
  b.view().scale_inv.ptr<float>()[block_scale_offset(ScalingMode::kBlock128x128, 8, 256, 0, 0)] = 0.5f;
  b.view().scale_inv.ptr<float>()[block_scale_offset(ScalingMode::kBlock128x128, 8, 256, 0, 128)] = 0.5f;
  Tensor out = Tensor::empty(DType::F32, {8, 8});
  gemm_fp8(a.view(), b.view(), out);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(out.ptr<float>()[i], 192.0f) << "element " << i;
}

// ---- Twins against an FP64 triple loop -------------------------------------------------------------------------
class GemmCpuBf16 : public ::testing::TestWithParam<Shape3> {};

TEST_P(GemmCpuBf16, MatchesFp64TripleLoop) {
  const auto [m, n, k] = GetParam();
  for (DType out_t : {DType::BF16, DType::F32}) {
    for (const GemmOptions opt : {GemmOptions{}, GemmOptions{.alpha = -0.75f, .beta = 1.0f}}) {
      // A and out are column slices of wider matrices (row stride > row length); B is contiguous.
      Tensor a_wide = random_matrix(DType::BF16, m, k + 3, 1 + m * 7 + k);
      Tensor b = random_matrix(DType::BF16, n, k, 2 + n * 5 + k);
      Tensor out_wide = random_matrix(out_t, m, n + 5, 3 + n);
      const TensorView a = a_wide.view().slice_cols(1, 1 + k);
      const TensorView out = out_wide.view().slice_cols(2, 2 + n);
      std::vector<double> old(static_cast<std::size_t>(m * n));
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) old[i * n + j] = element(out, i, j);
      gemm(a, b, out, opt);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0.0;
          for (int64_t x = k - 1; x >= 0; --x) acc += element(a, i, x) * element(b, j, x);  // reverse order
          const double v = opt.alpha * acc + opt.beta * old[i * n + j];
          ASSERT_EQ(bits_at(out, i, j), expected_bits(out_t, v))
              << "out[" << i << ", " << j << "] " << out_t << " [M, N, K] = [" << m << ", " << n << ", " << k
              << "], alpha " << opt.alpha << " beta " << opt.beta << ": got " << element(out, i, j) << ", FP64 " << v;
        }
      }
      // The padding columns of the wide output are untouched.
      for (int64_t i = 0; i < m; ++i) {
        EXPECT_EQ(bits_at(out_wide, i, 0), bits_at(random_matrix(out_t, m, n + 5, 3 + n), i, 0));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(OddShapes, GemmCpuBf16,
                         ::testing::Values(Shape3{1, 1, 1}, Shape3{3, 5, 7}, Shape3{17, 33, 65}, Shape3{2, 48, 129},
                                           Shape3{31, 9, 256}),
                         shape_name);

struct Fp8Case {
  DType a, b, out;
};

class GemmCpuFp8PerTensor : public ::testing::TestWithParam<Shape3> {};

TEST_P(GemmCpuFp8PerTensor, MatchesFp64TripleLoop) {
  const auto [m, n, k] = GetParam();
  const std::vector<Fp8Case> cases = {
      {DType::E4M3, DType::E4M3, DType::BF16}, {DType::E4M3, DType::E4M3, DType::F32},
      {DType::E4M3, DType::E4M3, DType::E4M3}, {DType::E5M2, DType::E4M3, DType::BF16},
      {DType::E4M3, DType::E5M2, DType::F32},  {DType::E5M2, DType::E4M3, DType::E5M2},
      {DType::E4M3, DType::E5M2, DType::E4M3}};
  uint64_t seed = 100;
  for (const Fp8Case& c : cases) {
    const bool fp8_out = is_fp8(c.out);
    if (fp8_out && n % 16 != 0) continue;  // an FP8 out's rows must be 16-byte multiples
    const auto a = make_fp8_operand(c.a, ScalingMode::kPerTensor, m, k, ++seed, 0.5, false);
    const auto b = make_fp8_operand(c.b, ScalingMode::kPerTensor, n, k, ++seed, 0.5, false);
    const GemmOptions opt{.alpha = fp8_out ? 1.0f : 1.5f, .beta = fp8_out ? 0.0f : 1.0f, .split_accumulate = false};
    Tensor out = random_matrix(c.out, m, n, ++seed);
    std::vector<double> old(static_cast<std::size_t>(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) old[i * n + j] = element(out, i, j);
    Tensor amax = scalar_f32(-1.0f, Device::CPU), oscale = scalar_f32(24.0f, Device::CPU);
    gemm_fp8(a.view(Device::CPU), b.view(Device::CPU), out, opt, {}, fp8_out ? amax.view() : TensorView{},
             fp8_out ? oscale.view() : TensorView{});
    double want_amax = 0.0;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0.0;
        for (int64_t x = 0; x < k; ++x) acc += a.deq(i, x) * b.deq(j, x);
        const double v = opt.alpha * acc + opt.beta * old[i * n + j];
        want_amax = std::max(want_amax, std::fabs(v));
        ASSERT_EQ(bits_at(out, i, j), expected_bits(c.out, fp8_out ? v * 24.0 : v))
            << c.a << " x " << c.b << " -> " << c.out << " out[" << i << ", " << j << "], FP64 " << v;
      }
    }
    if (fp8_out) {
      EXPECT_EQ(amax.ptr<float>()[0], static_cast<float>(want_amax)) << c.a << " x " << c.b << " -> " << c.out;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(OddShapes, GemmCpuFp8PerTensor,
                         ::testing::Values(Shape3{1, 16, 16}, Shape3{3, 8, 32}, Shape3{17, 48, 48},
                                           Shape3{33, 40, 160}, Shape3{5, 32, 272}),
                         shape_name);

struct BlockCase {
  ScalingMode a, b;
};

class GemmCpuFp8Block : public ::testing::TestWithParam<Shape3> {};

TEST_P(GemmCpuFp8Block, MatchesFp64TripleLoop) {
  const auto [m, n, k] = GetParam();
  uint64_t seed = 500;
  for (const BlockCase bc : {BlockCase{ScalingMode::kBlock1x128, ScalingMode::kBlock128x128},
                             BlockCase{ScalingMode::kBlock1x128, ScalingMode::kBlock1x128},
                             BlockCase{ScalingMode::kBlock128x128, ScalingMode::kBlock1x128}}) {
    for (DType out_t : {DType::BF16, DType::F32}) {
      // Scale padding is NaN (make_fp8_operand): a twin that read it would produce NaN here.
      const auto a = make_fp8_operand(DType::E4M3, bc.a, m, k, ++seed, 0.3, false, /*pow2_scales=*/true);
      const auto b = make_fp8_operand(DType::E4M3, bc.b, n, k, ++seed, 0.3, false, /*pow2_scales=*/false);
      Tensor out = Tensor::empty(out_t, {m, n});
      gemm_fp8(a.view(Device::CPU), b.view(Device::CPU), out);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0.0;
          for (int64_t x = 0; x < k; ++x) acc += a.deq(i, x) * b.deq(j, x);
          ASSERT_EQ(bits_at(out, i, j), expected_bits(out_t, acc))
              << scaling_mode_name(bc.a) << " x " << scaling_mode_name(bc.b) << " -> " << out_t << " out[" << i
              << ", " << j << "], FP64 " << acc;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(OddShapes, GemmCpuFp8Block,
                         ::testing::Values(Shape3{8, 8, 128}, Shape3{24, 40, 256}, Shape3{136, 16, 384},
                                           Shape3{8, 264, 128}),
                         shape_name);

// ---- as_columnwise --------------------------------------------------------------------------------------------
TEST(GemmCpu, ColumnwiseCopyGivesTheTransposedProduct) {
  // dgrad-style: out = A * (W^T)^T with W [16, 32] given only through its column-wise copy W^T [32, 16].
  const int64_t m = 5, n = 32, k = 16;
  Fp8Tensor w = Fp8Tensor::per_tensor(DType::E4M3, k, n, true, true, Device::CPU);  // W is [K=16, N=32]
  Tensor wr = random_matrix(DType::E4M3, k, n, 7);
  std::memcpy(w.view().data.data, wr.data(), static_cast<std::size_t>(k * n));
  for (int64_t r = 0; r < k; ++r)
    for (int64_t c = 0; c < n; ++c) w.view().columnwise_data.ptr<uint8_t>()[c * k + r] = wr.ptr<uint8_t>()[r * n + c];
  w.view().scale_inv.ptr<float>()[0] = 0.125f;  // shared by both copies (per-tensor)
  const auto a = make_fp8_operand(DType::E5M2, ScalingMode::kPerTensor, m, k, 8, 1.0, false);
  Tensor out = Tensor::empty(DType::F32, {m, n});
  gemm_fp8(a.view(Device::CPU), as_columnwise(w.view()), out);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      for (int64_t x = 0; x < k; ++x) acc += a.deq(i, x) * element(wr, x, j) * 0.125;
      EXPECT_EQ(out.ptr<float>()[i * n + j], static_cast<float>(acc)) << "out[" << i << ", " << j << "]";
    }
  }
  Fp8Tensor rowonly = Fp8Tensor::per_tensor(DType::E4M3, k, n, true, false, Device::CPU);
  TG_EXPECT_THROW_MSG(as_columnwise(rowonly.view()), "missing column-wise usage");
}

// ---- Argument checks (shared by the CPU twin and the cuBLASLt wrapper) -----------------------------------------
TEST(GemmCpu, ArgumentChecks) {
  using testing::Fp8Operand;
  const auto pt = [](DType t, int64_t r, int64_t c, uint64_t seed) {
    return make_fp8_operand(t, ScalingMode::kPerTensor, r, c, seed, 1.0, false);
  };
  Tensor out16 = Tensor::empty(DType::BF16, {16, 16});

  // BF16 GEMM dtypes and shapes.
  Tensor a = random_matrix(DType::BF16, 4, 8, 1), b = random_matrix(DType::BF16, 6, 8, 2);
  Tensor af = random_matrix(DType::F32, 4, 8, 3), bk = random_matrix(DType::BF16, 6, 9, 4);
  Tensor out = Tensor::empty(DType::BF16, {4, 6}), out_f16 = Tensor::empty(DType::F16, {4, 6});
  TG_EXPECT_THROW_MSG(gemm(af, b, out), "gemm(A): expected dtype BF16");
  TG_EXPECT_THROW_MSG(gemm(a, bk, out), "same K");
  TG_EXPECT_THROW_MSG(gemm(a, b, out_f16), "out must be BF16 or F32");
  TG_EXPECT_THROW_MSG(gemm(a, b, Tensor::empty(DType::BF16, {4, 5})), "out must be [M, N] = [4, 6]");
  TG_EXPECT_THROW_MSG(gemm(a.view().reshape({32}), b, out), "must be 2-D");
  TG_EXPECT_THROW_MSG(gemm(a, b, TensorView(out.data(), DType::BF16, {4, 6}, {1, 4}, Device::CPU)),
                      "unit inner stride");

  // FP8 dtype pairings.
  const Fp8Operand e5a = pt(DType::E5M2, 16, 16, 5), e5b = pt(DType::E5M2, 16, 16, 6);
  const Fp8Operand e4a = pt(DType::E4M3, 16, 16, 7), e4b = pt(DType::E4M3, 16, 16, 8);
  TG_EXPECT_THROW_MSG(gemm_fp8(e5a.view(Device::CPU), e5b.view(Device::CPU), out16), "E5M2 x E5M2");
  Fp8View bf16_as_fp8 = e4b.view(Device::CPU);
  Tensor bf = random_matrix(DType::BF16, 16, 16, 9);
  bf16_as_fp8.data = bf;
  TG_EXPECT_THROW_MSG(gemm_fp8(e4a.view(Device::CPU), bf16_as_fp8, out16), "B must be F8_E4M3 or F8_E5M2");
  Tensor out_e5 = Tensor::empty(DType::E5M2, {16, 16});
  Tensor one = scalar_f32(1.0f, Device::CPU);
  TG_EXPECT_THROW_MSG(gemm_fp8(e4a.view(Device::CPU), e4b.view(Device::CPU), out_e5, {}, {}, {}, one),
                      "an F8_E5M2 out needs an E5M2 operand");

  // FP8 divisibility: K, leading dimensions, out row bytes.
  const Fp8Operand k40a = pt(DType::E4M3, 16, 40, 10), k40b = pt(DType::E4M3, 16, 40, 11);
  TG_EXPECT_THROW_MSG(gemm_fp8(k40a.view(Device::CPU), k40b.view(Device::CPU), out16), "multiple of 16");
  const Fp8Operand n12 = pt(DType::E4M3, 12, 16, 12);
  TG_EXPECT_THROW_MSG(gemm_fp8(e4a.view(Device::CPU), n12.view(Device::CPU), Tensor::empty(DType::BF16, {16, 12})),
                      "multiple of 16 bytes");
  const Fp8Operand wide = pt(DType::E4M3, 16, 40, 13);
  Fp8View sliced = wide.view(Device::CPU);
  sliced.data = sliced.data.slice_cols(0, 16);  // row stride 40: not a multiple of 16
  TG_EXPECT_THROW_MSG(gemm_fp8(sliced, e4b.view(Device::CPU), out16), "row stride 40 must be a multiple of 16");

  // Output scale / amax / beta rules.
  Tensor out8 = Tensor::empty(DType::E4M3, {16, 16}), amax = scalar_f32(0.0f, Device::CPU);
  TG_EXPECT_THROW_MSG(gemm_fp8(e4a.view(Device::CPU), e4b.view(Device::CPU), out8), "out_scale");
  TG_EXPECT_THROW_MSG(gemm_fp8(e4a.view(Device::CPU), e4b.view(Device::CPU), out16, {}, {}, amax),
                      "out_amax is only computed for an FP8 out");
  TG_EXPECT_THROW_MSG(gemm_fp8(e4a.view(Device::CPU), e4b.view(Device::CPU), out8, {.beta = 1.0f}, {}, {}, one),
                      "beta must be 0");

  // Scale pointers: F32 [1], 16-byte aligned (the docs/gpu-machine.md pitfall: scales 4 bytes apart).
  Tensor two_scales = Tensor::empty(DType::F32, {2});
  two_scales.ptr<float>()[0] = two_scales.ptr<float>()[1] = 1.0f;
  Fp8View packed = e4b.view(Device::CPU);
  packed.scale_inv = two_scales.view().slice_rows(1, 2);
  TG_EXPECT_THROW_MSG(gemm_fp8(e4a.view(Device::CPU), packed, out16), "16-byte aligned");
  Fp8View no_scale = e4b.view(Device::CPU);
  no_scale.scale_inv = {};
  TG_EXPECT_THROW_MSG(gemm_fp8(e4a.view(Device::CPU), no_scale, out16), "B scale_inv is missing");

  // Block scaling rules.
  const auto blk = [](ScalingMode mode, int64_t r, int64_t c, uint64_t seed) {
    return make_fp8_operand(DType::E4M3, mode, r, c, seed, 1.0, false);
  };
  const Fp8Operand x = blk(ScalingMode::kBlock1x128, 16, 128, 20), w = blk(ScalingMode::kBlock128x128, 16, 128, 21);
  const Fp8Operand w2 = blk(ScalingMode::kBlock128x128, 16, 128, 22);
  const Fp8Operand xt = pt(DType::E4M3, 16, 128, 23);
  TG_EXPECT_THROW_MSG(gemm_fp8(xt.view(Device::CPU), w.view(Device::CPU), out16), "cannot be mixed");
  TG_EXPECT_THROW_MSG(gemm_fp8(w2.view(Device::CPU), w.view(Device::CPU), out16), "at most one may be");
  TG_EXPECT_THROW_MSG(gemm_fp8(x.view(Device::CPU), w.view(Device::CPU), out16, {.split_accumulate = false}),
                      "split accumulation");
  Tensor out8b = Tensor::empty(DType::E4M3, {16, 16});
  TG_EXPECT_THROW_MSG(gemm_fp8(x.view(Device::CPU), w.view(Device::CPU), out8b, {}, {}, {}, one), "write BF16 or F32");
  const Fp8Operand xk = blk(ScalingMode::kBlock1x128, 16, 144, 24), wk = blk(ScalingMode::kBlock128x128, 16, 144, 25);
  TG_EXPECT_THROW_MSG(gemm_fp8(xk.view(Device::CPU), wk.view(Device::CPU), out16), "K % 128 == 0");
  const Fp8Operand x4 = blk(ScalingMode::kBlock1x128, 4, 128, 26);
  TG_EXPECT_THROW_MSG(gemm_fp8(x4.view(Device::CPU), w.view(Device::CPU), Tensor::empty(DType::BF16, {4, 16})),
                      "M % 8 == 0");
  Fp8View bad_scales = w.view(Device::CPU);
  bad_scales.scale_inv = x.scale_h;  // a 1x128 layout where a 128x128 one belongs
  TG_EXPECT_THROW_MSG(gemm_fp8(x.view(Device::CPU), bad_scales, out16), "expected shape");
}

}  // namespace
}  // namespace tg::kernels
