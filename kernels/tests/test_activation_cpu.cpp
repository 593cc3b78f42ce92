// CPU twin of GeGLU (kernels/activation): the tanh GELU against FP64 and hand values (and NOT the erf
// GELU), gate = first half, HF's rounding points, FP8 fused == BF16 + cast, backward vs FP64 finite
// differences, argument checks. Also the accuracy of the shared IEEE math (kernels/elementwise/ieee_math.h).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <vector>

#include "common/numeric.h"
#include "kernels/activation/activation.h"
#include "kernels/elementwise/ieee_math.h"
#include "kernels/tests/elementwise_test_util.h"

namespace tg {
namespace {

using testing::values;

double gelu_tanh_f64(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
double gelu_tanh_grad_f64(double x) {
  const double k = std::sqrt(2.0 / M_PI), u = k * (x + 0.044715 * x * x * x), t = std::tanh(u);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
}
double gelu_erf_f64(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

Tensor fc1_from(const std::vector<float>& gate, const std::vector<float>& up) {
  const auto f = static_cast<int64_t>(gate.size());
  Tensor t = Tensor::empty(DType::F32, {1, 2 * f});
  for (int64_t j = 0; j < f; ++j) {
    t.ptr<float>()[j] = gate[j];
    t.ptr<float>()[f + j] = up[j];
  }
  return t;
}

TEST(IeeeMath, TanhForGeluIsWithinItsStatedAbsoluteError) {
  double worst = 0;
  for (uint32_t u = 0; u <= 0x41200000u; u += 97) {  // [0, 10], every 97th float
    const float y = std::bit_cast<float>(u);
    worst = std::max(worst, std::fabs(kernels::ieee::tanh_for_gelu(y) - std::tanh(static_cast<double>(y))));
    ASSERT_EQ(kernels::ieee::tanh_for_gelu(-y), -kernels::ieee::tanh_for_gelu(y)) << y;  // odd
  }
  EXPECT_LT(worst, std::ldexp(1.0, -21) * 0.62);  // 2^-21.7
  EXPECT_EQ(kernels::ieee::tanh_for_gelu(9.0f), 1.0f);
  EXPECT_EQ(kernels::ieee::tanh_for_gelu(-100.0f), -1.0f);
  EXPECT_TRUE(std::isnan(kernels::ieee::tanh_for_gelu(NAN)));
}

TEST(IeeeMath, SinCosAreCorrectlyRoundedOnASample) {
  int64_t mismatches = 0, n = 0;
  for (uint32_t u = 0; u <= 0x48000000u; u += 4099) {  // [0, 131072]: angles of positions up to 128k
    const float a = std::bit_cast<float>(u);
    const kernels::ieee::SinCos sc = kernels::ieee::sincos_angle(a);
    mismatches += sc.sin != static_cast<float>(std::sin(static_cast<double>(a)));
    mismatches += sc.cos != static_cast<float>(std::cos(static_cast<double>(a)));
    n += 2;
  }
  EXPECT_EQ(mismatches, 0) << "of " << n;
}

TEST(ActivationCpu, GeluIsTheTanhApproximationNotErf) {
  // gelu_tanh(x) vs FP64: a few FP32 ulps (the tanh is within 2^-21.7 absolute); hand values from the
  // formula: gelu_tanh(1) = 0.841191990608, gelu_tanh(-1) = -0.158808009392, gelu_tanh(2) = 1.954597694087.
  EXPECT_NEAR(kernels::ieee::gelu_tanh(1.0f), 0.841191990608, 3e-7);
  EXPECT_NEAR(kernels::ieee::gelu_tanh(-1.0f), -0.158808009392, 3e-7);
  EXPECT_NEAR(kernels::ieee::gelu_tanh(2.0f), 1.954597694087, 3e-7);
  // The erf GELU (trap 11 of gemma.md) differs by 1.5e-4 at x = 1: far more than the tolerance above.
  EXPECT_GT(std::fabs(gelu_erf_f64(1.0) - 0.841191990608), 1e-4);
  for (float x = -12.0f; x <= 12.0f; x += 0.0137f) {
    const double want = gelu_tanh_f64(x);
    // |error| <= 0.5|x| * 2^-21.7 (the tanh) + a few ulps of the result.
    ASSERT_NEAR(kernels::ieee::gelu_tanh(x), want, 0.5 * std::fabs(x) * 3.2e-7 + std::fabs(want) * 4e-7 + 1e-30)
        << "x=" << x;
    // The derivative amplifies the tanh's error through (1 - t^2) * x * (1 + 3 kKappa x^2).
    ASSERT_NEAR(kernels::ieee::gelu_tanh_grad(x), gelu_tanh_grad_f64(x), 1e-6 * (1 + x * x)) << "x=" << x;
  }
  EXPECT_EQ(kernels::ieee::gelu_tanh(-20.0f), -0.0f);  // 1 + t == 0 exactly, as PyTorch's FP32 result
}

TEST(ActivationCpu, GateIsTheFirstHalf) {
  Tensor fc1 = fc1_from({1.0f}, {2.0f});
  Tensor out = Tensor::empty(DType::F32, {1, 1});
  kernels::geglu_forward(fc1, out);
  EXPECT_NEAR(out.ptr<float>()[0], 2.0 * gelu_tanh_f64(1.0), 1e-6);     // gelu(gate) * up = 1.68238
  EXPECT_GT(std::fabs(out.ptr<float>()[0] - gelu_tanh_f64(2.0)), 0.2);  // not gelu(up) * gate = 1.95460
}

TEST(ActivationCpu, Bf16RoundingPointsAreHfs) {
  const int64_t t_count = 9, f = 77;
  Tensor fc1 = testing::random_host(DType::BF16, {t_count, 2 * f}, 1, 2.0f);
  Tensor out = Tensor::empty(DType::BF16, {t_count, f});
  kernels::geglu_forward(fc1, out);
  const std::vector<double> in = values(fc1), got = values(out);
  int64_t differs_from_single_rounding = 0;
  for (int64_t t = 0; t < t_count; ++t) {
    for (int64_t j = 0; j < f; ++j) {
      const auto g = static_cast<float>(in[t * 2 * f + j]), u = static_cast<float>(in[t * 2 * f + f + j]);
      // HF: act_fn(gate) is a BF16 tensor, then BF16 * BF16.
      const float want = round_bf16(round_bf16(kernels::ieee::gelu_tanh(g)) * u);
      ASSERT_EQ(got[t * f + j], want) << t << "," << j;
      differs_from_single_rounding += want != round_bf16(kernels::ieee::gelu_tanh(g) * u);
      // Against FP64: two BF16 roundings (at most ~1.5 ulps) plus, for negative gates, the absolute error
      // of 1 + tanh (as in PyTorch, 1 + t cancels: <= 0.5 |g| * 2^-21.7 + an ulp of 1, times |u|).
      const double exact = gelu_tanh_f64(g) * u;
      const double tol = 1.6 * std::ldexp(1.0, std::ilogb(std::max(std::fabs(exact), 1e-30)) - 7) +
                         0.5 * std::fabs(g) * std::fabs(u) * 4e-7;
      ASSERT_NEAR(got[t * f + j], exact, tol) << t << "," << j;
    }
  }
  EXPECT_GT(differs_from_single_rounding, 0) << "the test data should exercise the intermediate rounding";
}

TEST(ActivationCpu, Fp8OutputsEqualHighPrecisionThenCast) {
  const int64_t t_count = 5, f = 24;
  for (DType fp8 : {DType::E4M3, DType::E5M2}) {
    Tensor fc1 = testing::random_host(DType::BF16, {t_count, 2 * f}, 2, 2.0f);
    Tensor dout = testing::random_host(DType::BF16, {t_count, f}, 3);
    Tensor out = Tensor::empty(DType::BF16, {t_count, f});
    Tensor amax = testing::scalar_f32(0.0f, Device::CPU);
    kernels::geglu_forward(fc1, out, amax);
    Tensor dfc1 = Tensor::empty(DType::BF16, {t_count, 2 * f});
    kernels::geglu_backward(dout, fc1, dfc1);
    const float scale = 64.0f;
    Fp8Tensor q = testing::fp8_output(fp8, t_count, f, true, true, scale, 0.0f, Device::CPU);
    kernels::geglu_forward_fp8(fc1, q.view());
    Fp8Tensor qb = testing::fp8_output(fp8, t_count, 2 * f, true, true, scale, 0.0f, Device::CPU);
    kernels::geglu_backward_fp8(dout, fc1, qb.view());
    auto check = [&](const Tensor& hp, const Fp8Tensor& q8, int64_t cols, double* amax_out) {
      const std::vector<double> v = values(hp);
      double amax_v = 0;
      for (int64_t t = 0; t < t_count; ++t) {
        for (int64_t j = 0; j < cols; ++j) {
          const auto x = static_cast<float>(v[t * cols + j]);
          const auto want = static_cast<uint8_t>(encode(fp8, x * scale));
          ASSERT_EQ(q8.view().data.ptr<uint8_t>()[t * cols + j], want);
          ASSERT_EQ(q8.view().columnwise_data.ptr<uint8_t>()[j * t_count + t], want);
          amax_v = std::max(amax_v, std::fabs(v[t * cols + j]));
        }
      }
      EXPECT_EQ(testing::read_scalar(q8.view().amax), amax_v);
      EXPECT_EQ(testing::read_scalar(q8.view().scale_inv), 1.0f / scale);
      *amax_out = amax_v;
    };
    double amax_fwd = -1, amax_bwd = -1;
    check(out, q, f, &amax_fwd);
    EXPECT_EQ(amax_fwd, testing::read_scalar(amax));
    check(dfc1, qb, 2 * f, &amax_bwd);
    EXPECT_GT(amax_bwd, 0.0);
  }
}

TEST(ActivationCpu, BackwardMatchesFp64FiniteDifferences) {
  const int64_t t_count = 4, f = 11;
  Tensor fc1 = testing::random_host(DType::F32, {t_count, 2 * f}, 4, 1.5f);
  Tensor g = testing::random_host(DType::F32, {t_count, f}, 5);
  Tensor dfc1 = Tensor::empty(DType::F32, {t_count, 2 * f});
  kernels::geglu_backward(g, fc1, dfc1);
  std::vector<double> x = values(fc1);
  const std::vector<double> gv = values(g), got = values(dfc1);
  auto loss = [&] {
    double l = 0;
    for (int64_t t = 0; t < t_count; ++t) {
      for (int64_t j = 0; j < f; ++j) l += gv[t * f + j] * gelu_tanh_f64(x[t * 2 * f + j]) * x[t * 2 * f + f + j];
    }
    return l;
  };
  const double h = 1e-6;
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    const double want = (lp - lm) / (2 * h);
    // FP32 twin vs FP64: the GELU derivative carries the tanh's 2^-21.7 error times up to ~|x|^3 / 10.
    ASSERT_NEAR(got[i], want, 1e-4 * (1 + std::fabs(want))) << "d_fc1[" << i << "]";
  }
}

TEST(ActivationCpu, BackwardBf16RoundingPoints) {
  const int64_t t_count = 3, f = 40;
  Tensor fc1 = testing::random_host(DType::BF16, {t_count, 2 * f}, 6, 2.0f);
  Tensor dout = testing::random_host(DType::BF16, {t_count, f}, 7);
  Tensor dfc1 = Tensor::empty(DType::BF16, {t_count, 2 * f});
  kernels::geglu_backward(dout, fc1, dfc1);
  const std::vector<double> in = values(fc1), d = values(dout), got = values(dfc1);
  for (int64_t t = 0; t < t_count; ++t) {
    for (int64_t j = 0; j < f; ++j) {
      const auto g = static_cast<float>(in[t * 2 * f + j]), u = static_cast<float>(in[t * 2 * f + f + j]);
      const auto dy = static_cast<float>(d[t * f + j]);
      const float act = round_bf16(kernels::ieee::gelu_tanh(g));
      const float da = round_bf16(dy * u);
      ASSERT_EQ(got[t * 2 * f + f + j], round_bf16(dy * act));
      ASSERT_EQ(got[t * 2 * f + j], round_bf16(da * kernels::ieee::gelu_tanh_grad(g)));
    }
  }
}

TEST(ActivationCpu, RejectsBadArguments) {
  Tensor fc1 = Tensor::zeros(DType::BF16, {4, 16});
  EXPECT_NO_THROW(kernels::geglu_forward(fc1, Tensor::empty(DType::BF16, {4, 8})));
  EXPECT_THROW(kernels::geglu_forward(fc1, Tensor::empty(DType::BF16, {4, 16})), Error);
  EXPECT_THROW(kernels::geglu_forward(Tensor::zeros(DType::BF16, {4, 15}), Tensor::empty(DType::BF16, {4, 7})), Error);
  EXPECT_THROW(kernels::geglu_forward(Tensor::zeros(DType::I32, {4, 16}), Tensor::empty(DType::BF16, {4, 8})), Error);
  EXPECT_THROW(kernels::geglu_backward(Tensor::zeros(DType::F32, {4, 8}), fc1, Tensor::empty(DType::BF16, {4, 16})),
               Error);  // dout must have fc1's dtype
  EXPECT_THROW(kernels::geglu_backward(Tensor::zeros(DType::BF16, {4, 8}), fc1, Tensor::empty(DType::BF16, {4, 8})),
               Error);
  Fp8Tensor q = Fp8Tensor::per_tensor(DType::E4M3, 8, 4, true, false, Device::CPU);  // transposed shape
  EXPECT_THROW(kernels::geglu_forward_fp8(fc1, q.view()), Error);
}

}  // namespace
}  // namespace tg
