// CPU twin of kernels/optim (multi-tensor AdamW with global-norm clipping and the non-finite skip) against a
// scalar FP64 AdamW written from torch.optim.AdamW's documented algorithm, the documented reduction ORDER
// (bit for bit: it is what makes CPU and CUDA identical), the skip on NaN / inf, and accumulate.
//
// Tolerance of the FP64 comparison (stated, with its reason): the twin rounds every operation to FP32, the
// oracle does not. Per step the parameter picks up at most a few FP32 half-ulps of |p| (the decay and the final
// add) plus a few half-ulps of the update term (|lr * m / d| <= ~lr * 3 here): after S steps
//   |p32 - p64| <= S * (4 * 2^-24 * |p| + 8 * 2^-24 * 3 * lr)
// and the moments by a few half-ulps of their terms per step; we assert 2x that. A wrong bias correction, a missing decay, clipping not applied
// or applied twice all move p by O(lr) = 10^5 x the bound.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/numeric.h"
#include "kernels/optim/optim.h"
#include "kernels/tests/gemm_test_util.h"  // TG_EXPECT_THROW_MSG

namespace tg::kernels {
namespace {

struct HostParam {
  std::vector<float> p, g, m, v;
  std::vector<uint16_t> copy;
  bool decay = true;
  bool with_copy = true;
};

// Views into HostParam storage (host tensors).
AdamWParam views(HostParam& h) {
  const int64_t n = static_cast<int64_t>(h.p.size());
  AdamWParam a;
  a.param = TensorView(h.p.data(), DType::F32, {n});
  a.grad = TensorView(h.g.data(), DType::F32, {n});
  a.exp_avg = TensorView(h.m.data(), DType::F32, {n});
  a.exp_avg_sq = TensorView(h.v.data(), DType::F32, {n});
  if (h.with_copy) a.copy = TensorView(h.copy.data(), DType::BF16, {n});
  a.decay = h.decay;
  return a;
}

HostParam make_param(int64_t n, uint32_t seed, bool decay, float grad_std) {
  HostParam h;
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  h.p.resize(n);
  h.g.resize(n);
  h.m.assign(n, 0.0f);
  h.v.assign(n, 0.0f);
  h.copy.assign(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    h.p[i] = 0.05f * dist(rng);
    h.g[i] = grad_std * dist(rng);
  }
  h.decay = decay;
  return h;
}

// torch.optim.AdamW (decoupled weight decay, bias correction), with clip_grad_norm_ before it, in FP64.
struct Fp64Adam {
  std::vector<std::vector<double>> p, m, v;
  int64_t step = 0;
  double last_norm = 0, last_coef = 0;
  void run(const std::vector<HostParam>& params, const std::vector<std::vector<float>>& grads, const AdamWHyper& h) {
    double sumsq = 0;
    for (const auto& g : grads)
      for (float x : g) sumsq += static_cast<double>(x) * x;
    last_norm = std::sqrt(sumsq);
    last_coef = h.max_grad_norm > 0 ? std::min(1.0, h.max_grad_norm / (last_norm + 1e-6)) : 1.0;
    ++step;
    const double bc1 = 1 - std::pow(h.beta1, static_cast<double>(step));
    const double bc2 = 1 - std::pow(h.beta2, static_cast<double>(step));
    for (std::size_t i = 0; i < params.size(); ++i) {
      for (std::size_t j = 0; j < p[i].size(); ++j) {
        const double g = grads[i][j] * last_coef;
        if (params[i].decay) p[i][j] *= 1 - h.lr * h.weight_decay;
        m[i][j] = h.beta1 * m[i][j] + (1 - h.beta1) * g;
        v[i][j] = h.beta2 * v[i][j] + (1 - h.beta2) * g * g;
        p[i][j] -= h.lr / bc1 * m[i][j] / (std::sqrt(v[i][j]) / std::sqrt(bc2) + h.eps);
      }
    }
  }
};

Tensor status_tensor() { return Tensor::zeros(DType::F32, {4}); }

TEST(OptimCpu, AdamWMatchesFp64OverSteps) {
  for (const double max_norm : {0.0, 100.0, 0.05}) {  // no clipping, clipping inactive (norm ~5 < 100), active
    std::vector<HostParam> ps;
    ps.push_back(make_param(1, 1, true, 0.02f));
    ps.push_back(make_param(kAdamWChunk + 4463, 2, true, 0.01f));  // two chunks, a short second one
    ps.push_back(make_param(333, 3, false, 0.05f));                // a norm weight: no decay, no BF16 copy
    ps[2].with_copy = false;
    std::vector<AdamWParam> table_params;
    for (auto& h : ps) table_params.push_back(views(h));
    const AdamWTable table(table_params);
    Tensor state = adamw_initial_state(Device::CPU), status = status_tensor(), ws = adamw_workspace(table);
    Fp64Adam ref;
    for (auto& h : ps) {
      ref.p.emplace_back(h.p.begin(), h.p.end());
      ref.m.emplace_back(h.p.size(), 0.0);
      ref.v.emplace_back(h.p.size(), 0.0);
    }
    AdamWHyper hyper{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1,
                     .max_grad_norm = max_norm};
    std::mt19937 rng(99);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    const int steps = 6;
    for (int s = 0; s < steps; ++s) {
      std::vector<std::vector<float>> grads;
      for (auto& h : ps) {
        for (float& g : h.g) g = 0.02f * dist(rng);
        grads.push_back(h.g);
      }
      hyper.lr = 1e-3 * (s + 1) / steps;  // the schedule changes lr every step
      adamw_step(table, hyper, state, status, ws);
      ref.run(ps, grads, hyper);
      EXPECT_NEAR(status.ptr<float>()[0], ref.last_norm, 1e-6 * ref.last_norm);
      EXPECT_NEAR(status.ptr<float>()[1], ref.last_coef, 1e-6);
      EXPECT_EQ(status.ptr<float>()[2], 0.0f);
    }
    if (max_norm == 0.05) {
      EXPECT_LT(ref.last_coef, 0.5) << "the clipping case must clip";
    }
    EXPECT_EQ(state.ptr<double>()[0], steps);
    EXPECT_NEAR(state.ptr<double>()[1], std::pow(0.9, steps), 1e-15);
    for (std::size_t i = 0; i < ps.size(); ++i) {
      for (std::size_t j = 0; j < ps[i].p.size(); ++j) {
        const double bound = 2 * steps * (4 * 0x1p-24 * std::fabs(ref.p[i][j]) + 8 * 0x1p-24 * 3 * 1e-3);
        ASSERT_NEAR(ps[i].p[j], ref.p[i][j], bound) << "param " << i << " element " << j << " max_norm " << max_norm;
        // m: a few half-ulps of its terms (|m|, 0.1 |g| <= ~0.01) per step; v: no cancellation (all terms >= 0),
        // four roundings per step, relative.
        ASSERT_NEAR(ps[i].m[j], ref.m[i][j], 1e-6 * std::fabs(ref.m[i][j]) + steps * 4 * 0x1p-24 * 0.01);
        ASSERT_NEAR(ps[i].v[j], ref.v[i][j], 4e-6 * std::fabs(ref.v[i][j]) + 1e-20);
        if (ps[i].with_copy) {
          ASSERT_EQ(ps[i].copy[j], float_to_bf16_bits(ps[i].p[j]));
        }
      }
    }
  }
}

TEST(OptimCpu, NormFollowsTheDocumentedOrderBitForBit) {
  std::vector<HostParam> ps;
  ps.push_back(make_param(2 * kAdamWChunk + 17, 5, true, 1.0f));
  ps.push_back(make_param(1025, 6, false, 3.0f));
  std::vector<AdamWParam> tp;
  for (auto& h : ps) tp.push_back(views(h));
  const AdamWTable table(tp);
  ASSERT_EQ(table.num_chunks(), 4);
  Tensor state = adamw_initial_state(Device::CPU), status = status_tensor(), ws = adamw_workspace(table);
  adamw_step(table, AdamWHyper{}, state, status, ws);
  std::vector<double> partials;
  for (auto& h : ps) {
    for (std::size_t b = 0; b < h.g.size(); b += kAdamWChunk) {
      double lane[kAdamWLanes] = {};
      for (std::size_t j = b; j < std::min(h.g.size(), b + kAdamWChunk); ++j)
        lane[(j - b) % kAdamWLanes] += static_cast<double>(h.g[j]) * h.g[j];
      for (int o = kAdamWLanes / 2; o >= 1; o /= 2)
        for (int l = 0; l < o; ++l) lane[l] += lane[l + o];
      partials.push_back(lane[0]);
    }
  }
  std::vector<double> lane(kAdamWReduceLanes, 0.0);
  for (std::size_t c = 0; c < partials.size(); ++c) lane[c % kAdamWReduceLanes] += partials[c];
  for (int o = kAdamWReduceLanes / 2; o >= 1; o /= 2)
    for (int l = 0; l < o; ++l) lane[l] += lane[l + o];
  EXPECT_EQ(status.ptr<float>()[3], static_cast<float>(lane[0]));
  EXPECT_EQ(status.ptr<float>()[0], static_cast<float>(std::sqrt(lane[0])));
}

TEST(OptimCpu, NonFiniteGradientSkipsTheStep) {
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    std::vector<HostParam> ps;
    ps.push_back(make_param(100, 7, true, 0.1f));
    ps.push_back(make_param(5000, 8, true, 0.1f));
    std::vector<AdamWParam> tp;
    for (auto& h : ps) tp.push_back(views(h));
    const AdamWTable table(tp);
    Tensor state = adamw_initial_state(Device::CPU), status = status_tensor(), ws = adamw_workspace(table);
    const AdamWHyper hyper{.lr = 1e-2, .weight_decay = 0.1};
    adamw_step(table, hyper, state, status, ws);  // one good step: non-zero moments to protect
    const std::vector<HostParam> before = ps;
    const Tensor state_before = Tensor::copy_of(state, Device::CPU);
    ps[1].g[4321] = bad;
    adamw_step(table, hyper, state, status, ws);
    EXPECT_EQ(status.ptr<float>()[2], 1.0f) << "skipped flag for " << bad;
    for (std::size_t i = 0; i < ps.size(); ++i) {
      EXPECT_EQ(ps[i].p, before[i].p) << "weights changed by a skipped step (" << bad << ")";
      EXPECT_EQ(ps[i].m, before[i].m);
      EXPECT_EQ(ps[i].v, before[i].v);
      EXPECT_EQ(ps[i].copy, before[i].copy);
    }
    EXPECT_EQ(std::memcmp(state.data(), state_before.data(), state.nbytes()), 0) << "AdamW step counter moved";
    ps[1].g[4321] = 0.0f;  // the next good step proceeds
    adamw_step(table, hyper, state, status, ws);
    EXPECT_EQ(status.ptr<float>()[2], 0.0f);
    EXPECT_EQ(state.ptr<double>()[0], 2.0);
  }
}

TEST(OptimCpu, Accumulate) {
  std::vector<float> dst{1.0f, 2.0f, -3.0f}, src{0.5f, 0.25f, 3.0f};
  std::vector<uint16_t> src16{float_to_bf16_bits(1.5f), float_to_bf16_bits(-2.0f), float_to_bf16_bits(0.0f)};
  accumulate(TensorView(dst.data(), DType::F32, {3}), TensorView(src.data(), DType::F32, {3}));
  EXPECT_EQ(dst, (std::vector<float>{1.5f, 2.25f, 0.0f}));
  accumulate(TensorView(dst.data(), DType::F32, {3}), TensorView(src16.data(), DType::BF16, {3}));
  EXPECT_EQ(dst, (std::vector<float>{3.0f, 0.25f, 0.0f}));
  TG_EXPECT_THROW_MSG(accumulate(TensorView(dst.data(), DType::F32, {3}), TensorView(src.data(), DType::F32, {2})),
                      "src has 2 elements, dst 3");
}

TEST(OptimCpu, BadTablesAndArgumentsAreNamed) {
  HostParam a = make_param(10, 1, true, 0.1f);
  AdamWParam p = views(a);
  AdamWParam bad = p;
  bad.grad = TensorView(a.g.data(), DType::F32, {9});
  TG_EXPECT_THROW_MSG(AdamWTable({p, bad}), "parameter 1: grad has 9 elements, the param 10");
  bad = p;
  bad.copy = TensorView(a.copy.data(), DType::F32, {10});
  TG_EXPECT_THROW_MSG(AdamWTable({bad}), "copy must be BF16");
  TG_EXPECT_THROW_MSG(AdamWTable(std::vector<AdamWParam>{}), "no parameters");
  const AdamWTable table({p});
  Tensor state = adamw_initial_state(Device::CPU), status = status_tensor(), ws = adamw_workspace(table);
  TG_EXPECT_THROW_MSG(adamw_step(table, AdamWHyper{.beta1 = 1.0}, state, status, ws), "betas must be in [0, 1)");
  TG_EXPECT_THROW_MSG(adamw_step(table, AdamWHyper{.lr = -1}, state, status, ws), "lr must be");
  TG_EXPECT_THROW_MSG(adamw_step(table, AdamWHyper{}, Tensor::zeros(DType::F32, {3}), status, ws), "state must be");
}

}  // namespace
}  // namespace tg::kernels
