// Backward of every module of the impl model (embedding, RMSNorm, the QKV LayerNormLinear, RoPE, attention,
// the o-projection, LayerNormMLP with GeGLU, the final norm, the tied lm_head, the fused cross-entropy) against
// finite differences of an FP64 Gemma (train_test_util.h: written from gemma.md, no impl/kernels code), on
// the CPU backend, for BF16 and each FP8 recipe.
//
// What is compared, per parameter tensor (each tensor's gradient is the end of a different module's backward
// chain, and every chain runs through the input gradients of all the modules above it):
//   directional: for 6 random Gaussian directions u, <g_impl, u> against the central difference
//     (L(w + eps u) - L(w - eps u)) / (2 eps) of the FP64 loss; error = rms_k(<g, u_k> - fd_k) / rms_k(fd_k),
//     an estimate of ||g_impl - g|| / ||g|| (E <e, u>^2 = ||e||^2 for standard normal u).
//   coordinates (BF16 only): the 8 largest |g_impl| entries and 8 random ones, each against its own central
//     difference; error = max |g_impl_j - fd_j| / max_j |fd_j| over the sampled j.
// FD accuracy: eps = 1e-4 on weights of size ~0.1, so the truncation error (eps^2 L''' / 6) and the FP64
// rounding (1e-16 / eps) are both below 1e-8 relative: the FD gradient is exact for these purposes.
//
// Tolerances (data, with reasons; the measured values are printed by every run):
//   BF16  error <= 0.03 (directional) and 0.04 (coordinates). The impl rounds every activation and every
//         activation gradient to BF16 (unit roundoff 2^-9 = 0.2%); a gradient is the end of a chain of ~20-40
//         such roundings through two layers and back, which accumulate like a random walk: sqrt(30) * 0.2% ~ 1%.
//         Measured 0.004 - 0.017 (directional), 0.004 - 0.014 (coordinates). A real bug (a missing RMSNorm term,
//         a transposed GEMM operand, a wrong RoPE sign, a lost residual branch, a GQA head mapping error) moves
//         a gradient by tens of percent or more: PlantedBugIsCaught plants one (RoPE rotating the wrong way in
//         one layer) and sees errors of 0.65 (20x the tolerance; only layer 1 and positions > 0 are affected).
//   FP8   error <= 0.5 per tensor and <= 0.2 averaged over the tensors (delayed, current, block, and current
//         with E4M3 gradients). Measured (tiny128, 2 layers, 12 tokens): max 0.36, mean 0.13 - 0.16 for every
//         recipe. E4M3 gradients are barely better than E5M2 ones (0.149 vs 0.154): the error is dominated by the
//         forward's E4M3 casts of weights and activations (half-ulp 6%: the FP8 forward is a slightly different
//         function, whose gradient differs by about that relative perturbation at every layer), compounded over
//         the layers. Delayed scaling runs its first step at scale 1 (TE's behaviour before any amax history).
//         The check: FP8 training computes the gradient to FP8 accuracy (a wrong copy, a missing scale_inv or a
//         transposed operand gives errors >= 1), and it is not silently the BF16 path (error vs BF16 > 1e-3).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "impl/model.h"
#include "impl/optimizer.h"
#include "model_test_util.h"
#include "train_test_util.h"

namespace tg::impl {
namespace {

using testing::Fp64Gemma;
using testing::host_values;

constexpr double kBf16DirTol = 0.03, kBf16CoordTol = 0.04, kFp8DirTol = 0.5, kFp8MeanTol = 0.2;

struct Problem {
  Batch batch;
  std::vector<int32_t> targets;
};

// Two packed sequences (5 and 7 tokens; positions restart per sequence), targets with two ignored.
Problem make_problem(const GemmaConfig& cfg, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int64_t>> prompts{std::vector<int64_t>(5), std::vector<int64_t>(7)};
  for (auto& p : prompts)
    for (auto& t : p) t = static_cast<int64_t>(rng() % cfg.vocab_size);
  Problem pr;
  pr.batch = Batch::from_prompts(prompts);
  for (int64_t t = 0; t < pr.batch.num_tokens(); ++t) pr.targets.push_back(static_cast<int32_t>(rng() % cfg.vocab_size));
  pr.targets[2] = pr.targets[9] = -100;
  return pr;
}

struct ImplGrads {
  double loss = 0;
  std::vector<std::vector<double>> grads;  // Optimizer parameter order
};

ImplGrads impl_grads(const GemmaConfig& cfg, const std::string& recipe, const Problem& pr) {
  ModelOptions o;
  o.recipe = Recipe::parse(recipe);
  GemmaForCausalLM model = GemmaForCausalLM::random(cfg, 7, o, RandomInit{0.1, 0.1, true});
  model.precision().set_training(true);
  if (o.recipe.is_fp8()) quantize_weights(model.weights(), o.recipe, false, /*columnwise=*/true);
  Optimizer opt(model, {});
  opt.zero_grads();
  Tensor loss = Tensor::zeros(DType::F32, {1});
  int64_t n = 0;
  for (int32_t t : pr.targets) n += t >= 0;
  model.forward_backward(pr.batch, pr.targets, 1.0f / static_cast<float>(n), opt.grads(), loss.view());
  ImplGrads r;
  r.loss = loss.ptr<float>()[0];
  for (const Parameter& p : opt.parameters()) r.grads.push_back(host_values(p.grad));
  return r;
}

struct FdOracle {
  Fp64Gemma g;
  double loss = 0;
  std::vector<std::vector<std::vector<double>>> dirs;  // [param][k] direction
  std::vector<std::vector<double>> fd_dir;             // [param][k]
  std::vector<std::string> names;

  FdOracle(const GemmaConfig& cfg, const Problem& pr) {
    ModelOptions o;
    GemmaForCausalLM model = GemmaForCausalLM::random(cfg, 7, o, RandomInit{0.1, 0.1, true});
    g = Fp64Gemma::from(model.weights());
    Optimizer opt(model, {});
    for (const Parameter& p : opt.parameters()) names.push_back(p.name);
    loss = g.loss(pr.batch, pr.targets);
    std::mt19937 rng(123);
    std::normal_distribution<double> nd(0, 1);
    const auto params = g.params();
    for (std::vector<double>* w : params) {
      dirs.emplace_back();
      fd_dir.emplace_back();
      for (int k = 0; k < 6; ++k) {
        std::vector<double> u(w->size());
        for (double& x : u) x = nd(rng);
        fd_dir.back().push_back(directional(*w, u, pr));
        dirs.back().push_back(std::move(u));
      }
    }
  }
  double directional(std::vector<double>& w, const std::vector<double>& u, const Problem& pr) {
    constexpr double eps = 1e-4;
    const std::vector<double> w0 = w;
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = w0[i] + eps * u[i];
    const double lp = g.loss(pr.batch, pr.targets);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = w0[i] - eps * u[i];
    const double lm = g.loss(pr.batch, pr.targets);
    w = w0;
    return (lp - lm) / (2 * eps);
  }
  double coordinate(std::size_t param, std::size_t j, const Problem& pr) {
    std::vector<double> u(g.params()[param]->size(), 0.0);
    u[j] = 1.0;
    return directional(*g.params()[param], u, pr);
  }
  // rms_k(<grad, u_k> - fd_k) / rms_k(fd_k)
  double dir_error(std::size_t param, const std::vector<double>& grad) const {
    double se = 0, sr = 0;
    for (std::size_t k = 0; k < dirs[param].size(); ++k) {
      double dot = 0;
      for (std::size_t i = 0; i < grad.size(); ++i) dot += grad[i] * dirs[param][k][i];
      se += (dot - fd_dir[param][k]) * (dot - fd_dir[param][k]);
      sr += fd_dir[param][k] * fd_dir[param][k];
    }
    return std::sqrt(se / sr);
  }
};

const FdOracle& oracle_tiny(const Problem& pr) {
  static const FdOracle o(testing::tiny_config(), pr);
  return o;
}
const FdOracle& oracle_tiny128(const Problem& pr) {
  static const FdOracle o(testing::tiny128_config(), pr);
  return o;
}

TEST(BackwardCpu, Bf16MatchesFp64FiniteDifferences) {
  const GemmaConfig cfg = testing::tiny_config();
  const Problem pr = make_problem(cfg, 1);
  FdOracle& fd = const_cast<FdOracle&>(oracle_tiny(pr));
  const ImplGrads ig = impl_grads(cfg, "bf16", pr);
  EXPECT_NEAR(ig.loss, fd.loss, 5e-3 * fd.loss) << "the fused cross-entropy's loss";
  std::mt19937 rng(5);
  for (std::size_t p = 0; p < ig.grads.size(); ++p) {
    const std::vector<double>& gr = ig.grads[p];
    const double dir = fd.dir_error(p, gr);
    // Coordinates: the 8 largest |g_impl| and 8 random ones.
    std::vector<std::size_t> idx(gr.size());
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::partial_sort(idx.begin(), idx.begin() + std::min<std::size_t>(8, idx.size()), idx.end(),
                      [&](std::size_t a, std::size_t b) { return std::fabs(gr[a]) > std::fabs(gr[b]); });
    std::vector<std::size_t> pick(idx.begin(), idx.begin() + std::min<std::size_t>(8, idx.size()));
    for (int k = 0; k < 8; ++k) pick.push_back(rng() % gr.size());
    double err = 0, scale = 0;
    for (std::size_t j : pick) {
      const double want = fd.coordinate(p, j, pr);
      err = std::max(err, std::fabs(gr[j] - want));
      scale = std::max(scale, std::fabs(want));
    }
    const double coord = err / scale;
    std::cout << "[ grad bf16 ] " << fd.names[p] << ": directional " << dir << ", coordinates " << coord << "\n";
    EXPECT_LE(dir, kBf16DirTol) << fd.names[p];
    EXPECT_LE(coord, kBf16CoordTol) << fd.names[p];
    EXPECT_GT(scale, 0.0) << fd.names[p] << ": an all-zero gradient checks nothing";
  }
}

class BackwardFp8Cpu : public ::testing::TestWithParam<std::string> {};

TEST_P(BackwardFp8Cpu, MatchesFp64ToFp8Accuracy) {
  const GemmaConfig cfg = testing::tiny128_config();  // every GEMM width a multiple of 128 (block scaling)
  const Problem pr = make_problem(cfg, 2);
  const FdOracle& fd = oracle_tiny128(pr);
  const ImplGrads fp8 = impl_grads(cfg, GetParam(), pr), bf16 = impl_grads(cfg, "bf16", pr);
  double mean = 0;
  for (std::size_t p = 0; p < fp8.grads.size(); ++p) {
    const double dir = fd.dir_error(p, fp8.grads[p]), dir_bf16 = fd.dir_error(p, bf16.grads[p]);
    double se = 0, sr = 0;
    for (std::size_t i = 0; i < fp8.grads[p].size(); ++i) {
      se += std::pow(fp8.grads[p][i] - bf16.grads[p][i], 2);
      sr += bf16.grads[p][i] * bf16.grads[p][i];
    }
    const double vs_bf16 = std::sqrt(se / sr);
    std::cout << "[ grad " << GetParam() << " ] " << fd.names[p] << ": directional " << dir << " (bf16 " << dir_bf16
              << "), vs bf16 " << vs_bf16 << "\n";
    mean += dir / static_cast<double>(fp8.grads.size());
    EXPECT_LE(dir, kFp8DirTol) << fd.names[p];
    EXPECT_LE(dir_bf16, kBf16DirTol) << fd.names[p];
    // Norm weights of the first layer see FP8 only through later layers; every linear weight sees it directly.
    if (fd.names[p].find("norm") == std::string::npos && fd.names[p] != "embed") {
      EXPECT_GT(vs_bf16, 1e-3) << fd.names[p] << ": the FP8 gradient equals BF16's (is FP8 used?)";
    }
  }
  std::cout << "[ grad " << GetParam() << " ] mean directional error " << mean << "\n";
  EXPECT_LE(mean, kFp8MeanTol);
}

// The check can fail: a forward bug planted into layer 1 (RoPE rotating by -angle; the backward consistently
// differentiates the wrong function) must show up as gradient errors far above the BF16 tolerance.
TEST(BackwardCpu, PlantedBugIsCaught) {
  const GemmaConfig cfg = testing::tiny_config();
  const Problem pr = make_problem(cfg, 1);
  const FdOracle& fd = oracle_tiny(pr);
  ModelOptions o;
  o.fault = FaultInjection::parse("rope_swap:layer=1");
  GemmaForCausalLM model = GemmaForCausalLM::random(cfg, 7, o, RandomInit{0.1, 0.1, true});
  Optimizer opt(model, {});
  opt.zero_grads();
  Tensor loss = Tensor::zeros(DType::F32, {1});
  model.forward_backward(pr.batch, pr.targets, 0.1f, opt.grads(), loss.view());
  double worst = 0;
  for (std::size_t p = 0; p < opt.parameters().size(); ++p) {
    worst = std::max(worst, fd.dir_error(p, host_values(opt.parameters()[p].grad)));
  }
  std::cout << "[ grad planted rope_swap ] worst directional error " << worst << "\n";
  EXPECT_GT(worst, 10 * kBf16DirTol);
}

INSTANTIATE_TEST_SUITE_P(Recipes, BackwardFp8Cpu,
                         ::testing::Values("delayed", "current", "block", "current:format=e4m3"));

}  // namespace
}  // namespace tg::impl
