// CPU twin of the Gemma RMSNorm (kernels/norm): hand-checked values, the (1 + w) trap, an FP64 oracle,
// FP8 fused == BF16 + cast, the fused residual add, backward vs FP64 finite differences, argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/numeric.h"
#include "kernels/norm/norm.h"
#include "kernels/tests/elementwise_test_util.h"

namespace tg {
namespace {

using testing::values;

Tensor from_values(DType dtype, Shape shape, const std::vector<float>& v) {
  Tensor t = Tensor::empty(dtype, shape);
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::F32)
      t.ptr<float>()[i] = v[i];
    else
      t.ptr<uint16_t>()[i] = static_cast<uint16_t>(encode(dtype, v[i]));
  }
  return t;
}

// FP64 Gemma RMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + w).
std::vector<double> rmsnorm_f64(const std::vector<double>& x, const std::vector<double>& w, int64_t t_count, int64_t d,
                                double eps, std::vector<double>* rstd = nullptr) {
  std::vector<double> y(x.size());
  for (int64_t t = 0; t < t_count; ++t) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += x[t * d + j] * x[t * d + j];
    const double r = 1.0 / std::sqrt(ss / d + eps);
    if (rstd) rstd->push_back(r);
    for (int64_t j = 0; j < d; ++j) y[t * d + j] = x[t * d + j] * r * (1.0 + w[j]);
  }
  return y;
}

// One BF16 ulp at |v| (the spacing of BF16 numbers there).
double bf16_ulp(double v) {
  const int e = std::ilogb(std::max(std::fabs(v), 1e-30));
  return std::ldexp(1.0, e - 7);
}

TEST(NormCpu, HandCheckedValuesAndTheOnePlusWTrap) {
  // x = [1, 2, 3, 4]: mean(x^2) = 7.5, rstd = 1/sqrt(7.5 + 1e-6) = 0.36514834...
  Tensor x = from_values(DType::BF16, {1, 4}, {1, 2, 3, 4});
  Tensor rstd = Tensor::empty(DType::F32, {1});
  Tensor y = Tensor::empty(DType::BF16, {1, 4});
  // w = 0 (Gemma's init): the output is the plain normalised x, NOT zero (a Llama-style x * w would be 0).
  Tensor w0 = from_values(DType::BF16, {4}, {0, 0, 0, 0});
  kernels::rmsnorm_forward(x, w0, kernels::kGemmaRmsNormEps, y, rstd);
  EXPECT_NEAR(rstd.ptr<float>()[0], 0.36514834, 2e-7);
  std::vector<double> got = values(y);
  // BF16 of 0.3651483, 0.7302967, 1.0954451, 1.4605935:
  EXPECT_EQ(got, (std::vector<double>{0.365234375, 0.73046875, 1.09375, 1.4609375}));
  // w = [0.5, -1, 1, 0]: scales by (1 + w) = [1.5, 0, 2, 1].
  Tensor w1 = from_values(DType::BF16, {4}, {0.5f, -1.0f, 1.0f, 0.0f});
  kernels::rmsnorm_forward(x, w1, kernels::kGemmaRmsNormEps, y, rstd);
  got = values(y);
  EXPECT_EQ(got, (std::vector<double>{0.546875, 0.0, 2.1875, 1.4609375}));  // BF16 of 0.5477, 0, 2.1909, 1.4606
}

TEST(NormCpu, MatchesFp64OracleF32AndBf16) {
  struct Case {
    int64_t t, d;
  };
  for (const Case c : {Case{1, 1}, Case{7, 37}, Case{5, 256}, Case{3, 3072}, Case{2, 4608}}) {
    for (DType a : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(::testing::Message() << "T=" << c.t << " D=" << c.d << " " << a);
      Tensor x = testing::random_host(a, {c.t, c.d}, 11, 2.0f);
      Tensor w = testing::random_host(DType::F32, {c.d}, 12, 0.3f);
      Tensor y = Tensor::empty(a, {c.t, c.d});
      Tensor rstd = Tensor::empty(DType::F32, {c.t});
      kernels::rmsnorm_forward(x, w, 1e-6f, y, rstd);
      std::vector<double> r64;
      const std::vector<double> want = rmsnorm_f64(values(x), values(w), c.t, c.d, 1e-6, &r64);
      const std::vector<double> got = values(y);
      for (int64_t t = 0; t < c.t; ++t) {
        // rstd: FP32 sum of D squares (relative error <= D * 2^-24 in the worst case; far less in practice)
        // then three RN ops.
        EXPECT_NEAR(rstd.ptr<float>()[t], r64[t], r64[t] * (4e-7 + c.d * 6e-8)) << "row " << t;
      }
      for (size_t i = 0; i < got.size(); ++i) {
        // F32: a few ulps from rstd and the two products. BF16: the final rounding (half an ulp) plus the
        // FP32 error can cross one rounding boundary: at most one BF16 ulp.
        const double tol = a == DType::F32 ? std::fabs(want[i]) * (1e-6 + c.d * 6e-8) + 1e-30 : bf16_ulp(want[i]);
        ASSERT_NEAR(got[i], want[i], tol) << "element " << i;
      }
    }
  }
}

TEST(NormCpu, WeightInBf16OrF32GivesTheSameResult) {
  Tensor x = testing::random_host(DType::BF16, {3, 64}, 21);
  Tensor wb = testing::random_host(DType::BF16, {64}, 22, 0.5f);
  Tensor wf = Tensor::empty(DType::F32, {64});
  for (int64_t j = 0; j < 64; ++j) wf.ptr<float>()[j] = decode(DType::BF16, wb.ptr<uint16_t>()[j]);
  Tensor y1 = Tensor::empty(DType::BF16, {3, 64}), y2 = Tensor::empty(DType::BF16, {3, 64});
  Tensor r = Tensor::empty(DType::F32, {3});
  kernels::rmsnorm_forward(x, wb, 1e-6f, y1, r);
  kernels::rmsnorm_forward(x, wf, 1e-6f, y2, r);
  EXPECT_TRUE(testing::bits_equal(y1, y2));
}

TEST(NormCpu, FusedResidualAddRoundsTheSumThenNormalises) {
  const int64_t t_count = 5, d = 40;
  Tensor h = testing::random_host(DType::BF16, {t_count, d}, 31);
  Tensor a = testing::random_host(DType::BF16, {t_count, d}, 32);
  Tensor w = testing::random_host(DType::BF16, {d}, 33, 0.2f);
  Tensor h_fused = Tensor::copy_of(h, Device::CPU);
  Tensor y_fused = Tensor::empty(DType::BF16, {t_count, d}), r_fused = Tensor::empty(DType::F32, {t_count});
  kernels::rmsnorm_forward(a, w, 1e-6f, y_fused, r_fused, h_fused);
  // Unfused: h + a in BF16 (HF's residual add), then the norm of the sum.
  Tensor sum = Tensor::empty(DType::BF16, {t_count, d});
  for (int64_t i = 0; i < t_count * d; ++i) {
    const float s = decode(DType::BF16, h.ptr<uint16_t>()[i]) + decode(DType::BF16, a.ptr<uint16_t>()[i]);
    sum.ptr<uint16_t>()[i] = float_to_bf16_bits(s);
  }
  Tensor y = Tensor::empty(DType::BF16, {t_count, d}), r = Tensor::empty(DType::F32, {t_count});
  kernels::rmsnorm_forward(sum, w, 1e-6f, y, r);
  EXPECT_TRUE(testing::bits_equal(h_fused, sum));
  EXPECT_TRUE(testing::bits_equal(y_fused, y));
  EXPECT_TRUE(testing::bits_equal(r_fused, r));
}

TEST(NormCpu, Fp8OutputEqualsBf16OutputThenCast) {
  const int64_t t_count = 6, d = 24;
  for (DType fp8 : {DType::E4M3, DType::E5M2}) {
    Tensor x = testing::random_host(DType::BF16, {t_count, d}, 41, 3.0f);
    Tensor w = testing::random_host(DType::BF16, {d}, 42, 0.4f);
    Tensor y = Tensor::empty(DType::BF16, {t_count, d}), r = Tensor::empty(DType::F32, {t_count});
    Tensor amax_hp = testing::scalar_f32(0.0f, Device::CPU);
    kernels::rmsnorm_forward(x, w, 1e-6f, y, r, {}, amax_hp);
    const float scale = 37.5f;  // large enough that E4M3 saturates for the biggest values
    Fp8Tensor q = testing::fp8_output(fp8, t_count, d, true, true, scale, 0.5f, Device::CPU);
    Tensor r2 = Tensor::empty(DType::F32, {t_count});
    kernels::rmsnorm_forward_fp8(x, w, 1e-6f, q.view(), r2);
    const std::vector<double> yv = values(y);
    double amax_y = 0;
    for (double v : yv) amax_y = std::max(amax_y, std::fabs(v));
    double amax = 0.5;  // the starting amax takes part in the max
    for (int64_t t = 0; t < t_count; ++t) {
      for (int64_t j = 0; j < d; ++j) {
        const float v = static_cast<float>(yv[t * d + j]);
        const auto want = static_cast<uint8_t>(encode(fp8, v * scale));
        ASSERT_EQ(q.view().data.ptr<uint8_t>()[t * d + j], want) << t << "," << j;
        ASSERT_EQ(q.view().columnwise_data.ptr<uint8_t>()[j * t_count + t], want) << t << "," << j;
        amax = std::max(amax, std::fabs(yv[t * d + j]));
      }
    }
    EXPECT_EQ(testing::read_scalar(q.view().amax), amax);
    EXPECT_EQ(testing::read_scalar(amax_hp), amax_y);
    EXPECT_EQ(testing::read_scalar(q.view().scale_inv), 1.0f / scale);
    EXPECT_TRUE(testing::bits_equal(r, r2));
  }
}

TEST(NormCpu, AmaxIsNanPropagating) {
  Tensor x = from_values(DType::F32, {1, 3}, {1.0f, NAN, 2.0f});
  Tensor w = from_values(DType::F32, {3}, {0, 0, 0});
  Tensor y = Tensor::empty(DType::F32, {1, 3}), r = Tensor::empty(DType::F32, {1});
  Tensor amax = testing::scalar_f32(1e30f, Device::CPU);
  kernels::rmsnorm_forward(x, w, 1e-6f, y, r, {}, amax);
  uint32_t bits;
  std::memcpy(&bits, amax.data(), 4);
  EXPECT_EQ(bits, 0x7FFFFFFFu);
}

// Backward vs central finite differences of the FP64 forward, L = sum(G * y) so dy = G.
TEST(NormCpu, BackwardMatchesFp64FiniteDifferences) {
  for (const bool with_dres : {false, true}) {
    const int64_t t_count = 37, d = 13;  // 3 dw groups (16 + 16 + 5 rows), D not a multiple of 8
    Tensor x = testing::random_host(DType::F32, {t_count, d}, 51, 1.5f);
    Tensor w = testing::random_host(DType::F32, {d}, 52, 0.3f);
    Tensor g = testing::random_host(DType::F32, {t_count, d}, 53);
    Tensor dres = testing::random_host(DType::F32, {t_count, d}, 54);
    Tensor y = Tensor::empty(DType::F32, {t_count, d}), rstd = Tensor::empty(DType::F32, {t_count});
    kernels::rmsnorm_forward(x, w, 1e-6f, y, rstd);
    Tensor dx = Tensor::empty(DType::F32, {t_count, d}), dw = Tensor::empty(DType::F32, {d});
    Tensor ws = Tensor::empty(DType::F32, {kernels::rmsnorm_backward_workspace_rows(t_count), d});
    kernels::rmsnorm_backward(g, x, w, rstd, dx, dw, ws, with_dres ? dres.view() : TensorView{});

    std::vector<double> xv = values(x), wv = values(w);
    const std::vector<double> gv = values(g), dv = values(dres);
    auto loss = [&](const std::vector<double>& xs, const std::vector<double>& ws_) {
      const std::vector<double> yy = rmsnorm_f64(xs, ws_, t_count, d, 1e-6);
      double l = 0;
      for (size_t i = 0; i < yy.size(); ++i) l += gv[i] * yy[i];
      return l;
    };
    const double h = 1e-6;
    const std::vector<double> dxv = values(dx), dwv = values(dw);
    for (size_t i = 0; i < xv.size(); ++i) {
      const double x0 = xv[i];
      xv[i] = x0 + h;
      const double lp = loss(xv, wv);
      xv[i] = x0 - h;
      const double lm = loss(xv, wv);
      xv[i] = x0;
      const double want = (lp - lm) / (2 * h) + (with_dres ? dv[i] : 0.0);
      ASSERT_NEAR(dxv[i], want, 2e-5 * (1 + std::fabs(want))) << "dx[" << i << "]";
    }
    for (int64_t j = 0; j < d; ++j) {
      const double w0 = wv[j];
      wv[j] = w0 + h;
      const double lp = loss(xv, wv);
      wv[j] = w0 - h;
      const double lm = loss(xv, wv);
      wv[j] = w0;
      const double want = (lp - lm) / (2 * h);
      ASSERT_NEAR(dwv[j], want, 2e-5 * (1 + std::fabs(want))) << "dw[" << j << "]";
    }
  }
}

TEST(NormCpu, BackwardBf16AgreesWithF32Backward) {
  // BF16 activations: dx is the F32 formula rounded once (plus the BF16 dresidual add); dw stays FP32.
  const int64_t t_count = 20, d = 48;
  Tensor x = testing::random_host(DType::BF16, {t_count, d}, 61);
  Tensor dy = testing::random_host(DType::BF16, {t_count, d}, 62);
  Tensor w = testing::random_host(DType::BF16, {d}, 63, 0.2f);
  Tensor y = Tensor::empty(DType::BF16, {t_count, d}), rstd = Tensor::empty(DType::F32, {t_count});
  kernels::rmsnorm_forward(x, w, 1e-6f, y, rstd);
  Tensor dx = Tensor::empty(DType::BF16, {t_count, d}), dw = Tensor::empty(DType::F32, {d});
  Tensor ws = Tensor::empty(DType::F32, {kernels::rmsnorm_backward_workspace_rows(t_count), d});
  kernels::rmsnorm_backward(dy, x, w, rstd, dx, dw, ws);
  // The same in F32 with the BF16 values.
  auto to_f32 = [](const Tensor& t) {
    Tensor o = Tensor::empty(DType::F32, t.shape());
    const std::vector<double> v = values(t);
    for (size_t i = 0; i < v.size(); ++i) o.ptr<float>()[i] = static_cast<float>(v[i]);
    return o;
  };
  Tensor dx32 = Tensor::empty(DType::F32, {t_count, d}), dw32 = Tensor::empty(DType::F32, {d});
  kernels::rmsnorm_backward(to_f32(dy), to_f32(x), w, rstd, dx32, dw32, ws);
  const std::vector<double> a = values(dx), b = values(dx32);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], round_bf16(static_cast<float>(b[i]))) << i;
  EXPECT_TRUE(testing::bits_equal(dw, dw32));
}

TEST(NormCpu, RejectsBadArguments) {
  Tensor x = Tensor::zeros(DType::BF16, {4, 8});
  Tensor w = Tensor::zeros(DType::BF16, {8});
  Tensor y = Tensor::empty(DType::BF16, {4, 8}), r = Tensor::empty(DType::F32, {4});
  EXPECT_NO_THROW(kernels::rmsnorm_forward(x, w, 1e-6f, y, r));
  EXPECT_THROW(kernels::rmsnorm_forward(x, Tensor::zeros(DType::BF16, {7}), 1e-6f, y, r), Error);
  EXPECT_THROW(kernels::rmsnorm_forward(x, w, 0.0f, y, r), Error);
  EXPECT_THROW(kernels::rmsnorm_forward(x, w, 1e-6f, Tensor::empty(DType::F32, {4, 8}), r), Error);
  EXPECT_THROW(kernels::rmsnorm_forward(x, w, 1e-6f, y, Tensor::empty(DType::F32, {3})), Error);
  EXPECT_THROW(kernels::rmsnorm_forward(Tensor::zeros(DType::I32, {4, 8}), w, 1e-6f, y, r), Error);
  EXPECT_THROW(kernels::rmsnorm_forward(x, w, 1e-6f, y, r, Tensor::zeros(DType::BF16, {4, 9})), Error);
  Fp8Tensor q = Fp8Tensor::per_tensor(DType::E4M3, 4, 9, true, false, Device::CPU);
  EXPECT_THROW(kernels::rmsnorm_forward_fp8(x, w, 1e-6f, q.view(), r), Error);
  Fp8Tensor q2 = Fp8Tensor::per_tensor(DType::E4M3, 4, 8, true, true, Device::CPU);
  Fp8View no_scale = q2.view();
  no_scale.scale = {};
  EXPECT_THROW(kernels::rmsnorm_forward_fp8(x, w, 1e-6f, no_scale, r), Error);
  Tensor dx = Tensor::empty(DType::BF16, {4, 8}), dw = Tensor::empty(DType::F32, {8});
  Tensor ws_bad = Tensor::empty(DType::F32, {1, 8});
  EXPECT_THROW(kernels::rmsnorm_backward(y, x, w, r, dx, dw, ws_bad), Error);
  Tensor ws = Tensor::empty(DType::F32, {kernels::rmsnorm_backward_workspace_rows(4), 8});
  EXPECT_NO_THROW(kernels::rmsnorm_backward(y, x, w, r, dx, dw, ws));
}

}  // namespace
}  // namespace tg
