// CPU twin of kernels/loss (fused cross-entropy + gradient) against hand-checked values and an independent FP64
// oracle (log-sum-exp written the naive way in long double on small, well-scaled rows), the ignore index,
// the mean over non-ignored targets, stability at huge logits, in-place use, and the argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/numeric.h"
#include "kernels/loss/loss.h"
#include "kernels/tests/gemm_test_util.h"  // TG_EXPECT_THROW_MSG

namespace tg::kernels {
namespace {

Tensor f32(std::initializer_list<float> v, Shape shape) {
  Tensor t = Tensor::empty(DType::F32, shape);
  std::copy(v.begin(), v.end(), t.ptr<float>());
  return t;
}
Tensor i32(std::vector<int32_t> v) {
  Tensor t = Tensor::empty(DType::I32, {static_cast<int64_t>(v.size())});
  std::copy(v.begin(), v.end(), t.ptr<int32_t>());
  return t;
}

TEST(LossCpu, HandChecked) {
  // Row 0: logits {0, 0, ln 2}: softmax {1/4, 1/4, 1/2}; target 2 -> loss -ln(1/2) = ln 2.
  // Row 1: logits {1, 1, 1}, target 0 -> loss ln 3. Row 2 ignored. scale = 1/2 (two targets).
  const float ln2 = static_cast<float>(std::log(2.0));
  Tensor x = f32({0, 0, ln2, 1, 1, 1, 5, -5, 0}, {3, 3});
  Tensor y = i32({2, 0, kIgnoreIndex});
  Tensor d = Tensor::empty(DType::F32, {3, 3}), rl = Tensor::empty(DType::F32, {3});
  Tensor loss = f32({0.25f}, {1});  // accumulates into the existing value
  cross_entropy(x, y, 0.5f, d, rl, loss);
  EXPECT_NEAR(rl.ptr<float>()[0], std::log(2.0), 1e-7);
  EXPECT_NEAR(rl.ptr<float>()[1], std::log(3.0), 1e-7);
  EXPECT_EQ(rl.ptr<float>()[2], 0.0f);
  EXPECT_NEAR(loss.ptr<float>()[0], 0.25 + 0.5 * (std::log(2.0) + std::log(3.0)), 1e-7);
  const float want[9] = {0.125f, 0.125f, -0.25f, (1 / 3.0f - 1) * 0.5f, 1 / 6.0f, 1 / 6.0f, 0, 0, 0};
  for (int i = 0; i < 9; ++i) EXPECT_NEAR(d.ptr<float>()[i], want[i], 1e-7) << "dlogits element " << i;
}

// Naive FP64 oracle: loss_t = -log(softmax(x_t)[y_t]), grad = (softmax - onehot) * scale.
struct Oracle {
  std::vector<double> row_loss, grad;
  double mean = 0;
};
Oracle oracle(const std::vector<double>& x, const std::vector<int32_t>& y, int64_t v, double scale) {
  Oracle o;
  const int64_t t_count = static_cast<int64_t>(y.size());
  o.row_loss.assign(static_cast<std::size_t>(t_count), 0.0);
  o.grad.assign(x.size(), 0.0);
  for (int64_t t = 0; t < t_count; ++t) {
    if (y[t] == kIgnoreIndex) continue;
    long double z = 0;
    for (int64_t j = 0; j < v; ++j) z += std::exp(static_cast<long double>(x[t * v + j]));
    for (int64_t j = 0; j < v; ++j) {
      const double p = static_cast<double>(std::exp(static_cast<long double>(x[t * v + j])) / z);
      o.grad[t * v + j] = (p - (j == y[t])) * scale;
    }
    o.row_loss[t] = static_cast<double>(std::log(z) - x[t * v + y[t]]);
    o.mean += o.row_loss[t] * scale;
  }
  return o;
}

class LossCpuShapes : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, DType>> {};

TEST_P(LossCpuShapes, MatchesFp64Oracle) {
  const auto [t_count, v, dtype] = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(t_count * 131 + v));
  std::normal_distribution<float> dist(0.0f, 3.0f);
  // logits as a column slice of a wider buffer (row stride > V), values exact in the dtype
  Tensor wide = Tensor::empty(dtype, {t_count, v + 5});
  std::vector<double> x(static_cast<std::size_t>(t_count * v));
  for (int64_t t = 0; t < t_count; ++t) {
    for (int64_t j = 0; j < v + 5; ++j) {
      const float f = round_to(dtype, dist(rng));
      if (dtype == DType::F32) {
        wide.ptr<float>()[t * (v + 5) + j] = f;
      } else {
        wide.ptr<uint16_t>()[t * (v + 5) + j] = float_to_bf16_bits(f);
      }
      if (j >= 2 && j < v + 2) x[static_cast<std::size_t>(t * v + j - 2)] = f;
    }
  }
  const TensorView logits = wide.view().slice_cols(2, v + 2);
  std::vector<int32_t> y(static_cast<std::size_t>(t_count));
  int64_t count = 0;
  for (int64_t t = 0; t < t_count; ++t) {
    y[t] = (t % 3 == 1) ? kIgnoreIndex : static_cast<int32_t>(rng() % static_cast<uint32_t>(v));
    count += y[t] != kIgnoreIndex;
  }
  const double scale = 1.0 / std::max<int64_t>(count, 1);
  const Oracle o = oracle(x, y, v, static_cast<float>(scale));
  for (const DType out_t : {DType::F32, DType::BF16}) {
    Tensor d = Tensor::empty(out_t, {t_count, v}), rl = Tensor::empty(DType::F32, {t_count});
    Tensor loss = Tensor::zeros(DType::F32, {1});
    cross_entropy(logits, i32(y), static_cast<float>(scale), d, rl, loss);
    // row_loss: one F32 rounding of an FP64-exact value (|loss| < 30: 2^-24 relative).
    for (int64_t t = 0; t < t_count; ++t) {
      EXPECT_NEAR(rl.ptr<float>()[t], o.row_loss[t], 4e-7 * (1 + std::fabs(o.row_loss[t]))) << "row " << t;
    }
    EXPECT_NEAR(loss.ptr<float>()[0], o.mean, 1e-6 * (1 + o.mean));
    // dlogits: one rounding to the output dtype (through F32): half an ulp of it, relative.
    const double ulp = out_t == DType::F32 ? 0x1p-24 : 0x1p-8;
    for (int64_t i = 0; i < t_count * v; ++i) {
      const double got = out_t == DType::F32 ? d.ptr<float>()[i] : bf16_bits_to_float(d.ptr<uint16_t>()[i]);
      ASSERT_NEAR(got, o.grad[i], ulp * std::fabs(o.grad[i]) + 1e-30) << "element " << i << " " << out_t;
      if (y[i / v] == kIgnoreIndex) {
        ASSERT_EQ(got, 0.0) << "ignored row " << i / v;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LossCpuShapes,
                         ::testing::Values(std::make_tuple(1, 1, DType::F32), std::make_tuple(7, 13, DType::F32),
                                           std::make_tuple(5, 384, DType::BF16),
                                           std::make_tuple(3, 1031, DType::BF16)));

TEST(LossCpu, StableAtHugeLogits) {
  // exp(3e38) overflows any float; the max subtraction keeps every exponent <= 0.
  Tensor x = f32({3e38f, 3e38f, -3e38f, 1e4f, 1e4f + 2.0f, -1e4f}, {2, 3});
  Tensor d = Tensor::empty(DType::F32, {2, 3}), rl = Tensor::empty(DType::F32, {2});
  Tensor loss = Tensor::zeros(DType::F32, {1});
  cross_entropy(x, i32({0, 1}), 1.0f, d, rl, loss);
  EXPECT_NEAR(rl.ptr<float>()[0], std::log(2.0), 1e-6);
  EXPECT_NEAR(rl.ptr<float>()[1], std::log1p(std::exp(-2.0)), 1e-6);
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(std::isfinite(d.ptr<float>()[i])) << i;
  EXPECT_NEAR(d.ptr<float>()[0], -0.5, 1e-7);
  EXPECT_EQ(d.ptr<float>()[2], 0.0f);
}

TEST(LossCpu, InPlaceEqualsSeparateOutput) {
  Tensor x = Tensor::empty(DType::BF16, {4, 50});
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (int i = 0; i < 200; ++i) x.ptr<uint16_t>()[i] = float_to_bf16_bits(dist(rng));
  Tensor y = i32({3, kIgnoreIndex, 49, 0});
  Tensor sep = Tensor::empty(DType::BF16, {4, 50}), rl1 = Tensor::empty(DType::F32, {4}),
         rl2 = Tensor::empty(DType::F32, {4});
  cross_entropy(x, y, 1.0f / 3, sep, rl1, {});
  cross_entropy(x, y, 1.0f / 3, x, rl2, {});  // in place
  EXPECT_EQ(std::memcmp(x.data(), sep.data(), x.nbytes()), 0);
  EXPECT_EQ(std::memcmp(rl1.data(), rl2.data(), rl1.nbytes()), 0);
}

TEST(LossCpu, ReductionOrderIsTheDocumentedOne) {
  // 2050 rows: lanes 0 and 1 get three rows, the rest two. The twin must equal the documented tree exactly.
  const int64_t t_count = 2050, v = 2;
  Tensor x = Tensor::empty(DType::F32, {t_count, v});
  std::vector<int32_t> yv(t_count);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-4, 4);
  for (int64_t i = 0; i < t_count * v; ++i) x.ptr<float>()[i] = u(rng);
  for (int64_t t = 0; t < t_count; ++t) yv[t] = static_cast<int32_t>(t % 2);
  Tensor rl = Tensor::empty(DType::F32, {t_count}), loss = Tensor::zeros(DType::F32, {1});
  cross_entropy(x, i32(yv), 0.001f, {}, rl, loss);
  std::vector<double> lane(kLossReduceLanes, 0.0);
  for (int64_t t = 0; t < t_count; ++t) lane[t % kLossReduceLanes] += rl.ptr<float>()[t];
  for (int o = kLossReduceLanes / 2; o >= 1; o /= 2)
    for (int i = 0; i < o; ++i) lane[i] += lane[i + o];
  EXPECT_EQ(loss.ptr<float>()[0], static_cast<float>(0.001f * lane[0]));
}

TEST(LossCpu, BadArgumentsAreNamed) {
  Tensor x = Tensor::zeros(DType::F32, {2, 4}), rl = Tensor::empty(DType::F32, {2});
  TG_EXPECT_THROW_MSG(cross_entropy(x, i32({0, 4}), 1.0f, {}, rl, {}), "target of row 1 is 4");
  TG_EXPECT_THROW_MSG(cross_entropy(x, i32({0, -1}), 1.0f, {}, rl, {}), "target of row 1 is -1");
  TG_EXPECT_THROW_MSG(cross_entropy(x, i32({0}), 1.0f, {}, rl, {}), "cpu::cross_entropy(targets)");
  TG_EXPECT_THROW_MSG(cross_entropy(x, i32({0, 1}), 1.0f, {}, Tensor::empty(DType::F32, {3}), {}), "cpu::cross_entropy(row_loss)");
  TG_EXPECT_THROW_MSG(cross_entropy(x, i32({0, 1}), NAN, {}, rl, {}), "scale must be finite");
  TG_EXPECT_THROW_MSG(cross_entropy(x, i32({0, 1}), 1.0f, Tensor::empty(DType::F32, {2, 3}), rl, {}), "dlogits");
  TG_EXPECT_THROW_MSG(cross_entropy(Tensor::zeros(DType::I32, {2, 4}), i32({0, 1}), 1.0f, {}, rl, {}), "BF16 or F32");
}

}  // namespace
}  // namespace tg::kernels
