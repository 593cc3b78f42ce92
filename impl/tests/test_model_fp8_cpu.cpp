// The FP8 recipes on the CPU backend. The CPU twins emulate FP8 exactly (E4M3 casts with the recipe's scales,
// per-tensor and block scale layouts, FP8 GEMMs accumulated exactly), so these tests check the recipe
// mechanics and the quantization error of the impl model, with no GPU.
//
// Tolerance table (relative RMSE = RMSE / RMS of the reference logits):
//
//   comparison                       bound                              reason
//   -------------------------------  ---------------------------------  ------------------------------------------
//   FP8 (delayed, current) vs HF     rrmse(fp8, hf_f32) <= 2 * 16 * n   n = rrmse(HF BF16, HF FP32) of the same
//   FP32, HF fixtures                (n per prompt: 0.7% - 2.7%)        prompt measures how much the model amplifies
//                                                                       rounding noise. E4M3 rounds 16x coarser
//                                                                       than BF16 (2^-4 vs 2^-8 relative half-ulp).
//                                                                       Measured: 7x - 22x n (no GEMM-input cast
//                                                                       error is larger than one E4M3 half-ulp);
//                                                                       2x the ulp ratio leaves room for the
//                                                                       number of cast points, not for a bug
//                                                                       (a lost scale gives errors ~100%).
//   FP8 (any recipe) vs impl BF16,   rrmse <= 0.06                      measured 0.029 - 0.031 (2x margin); the
//   random tiny128 model                                                sqrt(2) * 2^-4 / sqrt(3) = 5% per GEMM,
//                                                                       diluted by the BF16 residual stream
//                                    kl_last <= 0.005                   KL ~ Var(logit error) / 2: measured 5e-4
//   top-1 agreement                  every position whose reference      4 sigma of the measured logit noise: a
//                                    top-2 margin >= 4 x the RMSE       flip there is a bug, not noise
//   delayed (calibrated on batch X)  bit for bit                        both scale every tensor by 448 / amax(X)
//   vs current scaling on X
//   FP8-only vs master storage       bit for bit                        the same FP8 weights (TE's
//                                                                       test_gpt_fp8_parameters, there 0.125/0.0675)
//   packed batch vs one by one       bit for bit for delayed (frozen)   row-local scaling; current scaling's amax
//                                    and block                          is batch-wide, so it is only close
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <string>

#include "common/check.h"
#include "impl/batch.h"
#include "impl/model.h"
#include "model_test_util.h"

namespace tg::impl {
namespace {

using testing::Fixture;
using testing::rows_of;
using testing::random_prompts;
using testing::span_of;

constexpr double kUlpRatio = 16.0;  // E4M3 half-ulp 2^-4 over BF16's 2^-8
constexpr double kRandomRelRmse = 0.06;
constexpr double kRandomKl = 0.005;

ModelOptions cpu_options(const std::string& recipe) {
  ModelOptions o;
  o.recipe = Recipe::parse(recipe);
  o.device = Device::CPU;
  return o;
}

ForwardOptions all_logits() {
  ForwardOptions fo;
  fo.logits = LogitsMode::kAll;
  return fo;
}

double rel_rmse(std::span<const float> test, std::span<const float> ref) {
  EXPECT_EQ(test.size(), ref.size());
  double se = 0, sr = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(test[i]) - ref[i];
    se += d * d;
    sr += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(se / sr);
}

double abs_rmse(std::span<const float> test, std::span<const float> ref) {
  double se = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) se += std::pow(static_cast<double>(test[i]) - ref[i], 2);
  return std::sqrt(se / static_cast<double>(ref.size()));
}

double kl(std::span<const float> p_logits, std::span<const float> q_logits) {
  auto lse = [](std::span<const float> x) {
    double m = -INFINITY, s = 0;
    for (float v : x) m = std::max(m, static_cast<double>(v));
    for (float v : x) s += std::exp(v - m);
    return m + std::log(s);
  };
  const double lp = lse(p_logits), lq = lse(q_logits);
  double k = 0;
  for (std::size_t i = 0; i < p_logits.size(); ++i) {
    const double lpi = p_logits[i] - lp, lqi = q_logits[i] - lq;
    k += std::exp(lpi) * (lpi - lqi);
  }
  return std::max(k, 0.0);
}

// Top-1 disagreements among the rows of [rows, V] logits whose reference margin is at least `margin`;
// returns {checked, wrong}.
std::pair<int64_t, int64_t> top1(const Tensor& ref, const Tensor& test, double margin) {
  int64_t checked = 0, wrong = 0;
  for (int64_t t = 0; t < ref.shape()[0]; ++t) {
    auto r = rows_of(ref, t, t + 1);
    std::vector<float> sorted(r.begin(), r.end());
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    if (sorted[0] - sorted[1] < margin) continue;
    ++checked;
    wrong += testing::argmax(rows_of(test, t, t + 1)) != testing::argmax(r);
  }
  return {checked, wrong};
}

RandomInit visible_init() {
  RandomInit init;
  init.std = 0.05;      // larger than HF's 0.02 so that the logits are not all ~0 and top-1 means something
  init.norm_std = 0.3;  // non-zero norm weights: a missing "1 +" cannot hide
  return init;
}

GemmaForCausalLM tiny128(const std::string& recipe, WeightStorage storage = WeightStorage::kMaster,
                         bool fp8_lm_head = false) {
  ModelOptions o = cpu_options(recipe);
  o.storage = storage;
  o.fp8_lm_head = fp8_lm_head;
  return GemmaForCausalLM::random(testing::tiny128_config(), 11, o, visible_init());
}

Batch tiny128_batch(uint64_t seed = 1, std::vector<int64_t> lengths = {37, 5, 90}) {
  return Batch::from_prompts(random_prompts(testing::tiny128_config().vocab_size, lengths, seed));
}

// ---- FP8 vs HF FP32 on the HF fixtures (per-tensor recipes: the fixtures' widths are not multiples of 128) ---

class FixtureFp8 : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(FixtureFp8, WithinTheUlpRatioOfHfBf16Noise) {
  const auto& [fixture, recipe] = GetParam();
  const Fixture fx(fixture);
  GemmaForCausalLM m = GemmaForCausalLM::load(fx.dir(), cpu_options(recipe));
  const auto prompts = fx.prompts();
  const Batch batch = Batch::from_prompts(prompts);
  m.calibrate({batch});  // delayed: scales from these prompts (no-op for current)
  const ForwardOutput out = m.run(batch, all_logits());
  int64_t checked = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const Tensor hf32 = fx.array("logits_f32/" + std::to_string(i)),
                 hf16 = fx.array("logits_bf16/" + std::to_string(i));
    const Tensor ours =
        Tensor::copy_of(out.logits.view().slice_rows(batch.cu_seqlens[i], batch.cu_seqlens[i + 1]), Device::CPU);
    const double n = rel_rmse(span_of(hf16), span_of(hf32)), e = rel_rmse(span_of(ours), span_of(hf32));
    EXPECT_LE(e, 2 * kUlpRatio * n) << fixture << " " << recipe << " prompt " << i;
    const auto [c, wrong] = top1(hf32, ours, 4 * abs_rmse(span_of(ours), span_of(hf32)));
    EXPECT_EQ(wrong, 0) << fixture << " " << recipe << " prompt " << i;
    checked += c;
    std::cout << "[impl " << recipe << "] " << fixture << " prompt " << i << ": rrmse vs HF f32 " << e << " = " << e / n
              << " x HF bf16's " << n << ", top1 " << c - wrong << "/" << c << ", kl_last "
              << kl(rows_of(hf32, hf32.shape()[0] - 1, hf32.shape()[0]),
                    rows_of(ours, ours.shape()[0] - 1, ours.shape()[0]))
              << "\n";
  }
  // Top-1 is checked only where the margin is clear of the noise; on gqa_bf16_sharded no position is (its
  // logits are nearly flat), so the rrmse bound carries that model.
  if (fixture != "gqa_bf16_sharded") {
    EXPECT_GT(checked, 3);
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, FixtureFp8,
                         ::testing::Combine(::testing::ValuesIn(testing::fixture_names()),
                                            ::testing::Values("delayed", "current")));

// ---- Every recipe on a random model whose widths suit block scaling ---------------------------------------

class RandomFp8 : public ::testing::TestWithParam<std::string> {};

TEST_P(RandomFp8, WithinTheRecipeBudgetOfBf16) {
  GemmaForCausalLM bf16 = tiny128("bf16"), fp8 = tiny128(GetParam());
  const Batch batch = tiny128_batch();
  fp8.calibrate({tiny128_batch(2), tiny128_batch(3)});  // delayed: calibrated on other prompts
  const ForwardOutput ref = bf16.run(batch, all_logits()), test = fp8.run(batch, all_logits());
  const double e = rel_rmse(span_of(test.logits), span_of(ref.logits));
  double worst_kl = 0;
  for (int64_t b = 0; b < batch.num_sequences(); ++b) {
    const int64_t r = batch.cu_seqlens[static_cast<std::size_t>(b + 1)] - 1;
    worst_kl = std::max(worst_kl, kl(rows_of(ref.logits, r, r + 1), rows_of(test.logits, r, r + 1)));
  }
  const auto [checked, wrong] = top1(ref.logits, test.logits, 4 * abs_rmse(span_of(test.logits), span_of(ref.logits)));
  std::cout << "[impl " << GetParam() << " vs bf16] tiny128: rrmse " << e << ", kl_last " << worst_kl << ", top1 "
            << checked - wrong << "/" << checked << "\n";
  EXPECT_LE(e, kRandomRelRmse);
  EXPECT_GT(e, 1e-4) << "FP8 changed nothing: is the recipe on?";
  EXPECT_LE(worst_kl, kRandomKl);
  EXPECT_EQ(wrong, 0);
  EXPECT_GT(checked, 50);
}

INSTANTIATE_TEST_SUITE_P(Recipes, RandomFp8,
                         ::testing::Values("delayed", "current", "block", "delayed:format=e4m3,margin=1",
                                           "delayed:len=16,algo=most_recent", "current:pow2=1", "block:pow2=0",
                                           "delayed:fprop=split", "current:eps=0.001"));

// ---- Recipe mechanics -------------------------------------------------------------------------------------

TEST(Fp8Recipes, DelayedCalibratedOnABatchEqualsCurrentScalingOnItBitwise) {
  // Calibration takes every tensor's amax over the batch, so the frozen scales are 448 / amax(batch): exactly
  // the scales current scaling computes on the fly for that batch (weights use the same rule in both).
  for (const std::string& which : {std::string("tiny128"), std::string("mqa_f32")}) {
    const bool fixture = which != "tiny128";
    std::optional<Fixture> fx;
    if (fixture) fx.emplace(which);
    auto make = [&](const char* r) { return fixture ? GemmaForCausalLM::load(fx->dir(), cpu_options(r)) : tiny128(r); };
    GemmaForCausalLM delayed = make("delayed"), current = make("current");
    const Batch batch = fixture ? Batch::from_prompts(fx->prompts()) : tiny128_batch();
    delayed.calibrate({batch});
    EXPECT_TRUE(delayed.precision().calibrated());
    EXPECT_TRUE(
        testing::bitwise_equal(delayed.run(batch, all_logits()).logits, current.run(batch, all_logits()).logits))
        << which;
  }
}

TEST(Fp8Recipes, CalibrationAccumulatesTheMaxOverBatches) {
  const Batch a = tiny128_batch(21, {50, 8}), b = tiny128_batch(22, {3, 70, 12});
  auto scales_after = [&](const std::vector<Batch>& batches) {
    GemmaForCausalLM m = tiny128("delayed");
    m.calibrate(batches);
    return Tensor::copy_of(m.precision().delayed()->scales().view(), Device::CPU);
  };
  const Tensor sa = scales_after({a}), sb = scales_after({b}), sab = scales_after({a, b}), sba = scales_after({b, a});
  EXPECT_TRUE(testing::bitwise_equal(sab, sba));  // order does not matter (TE's overwrite would: last batch wins)
  int64_t differ = 0;
  const GemmaForCausalLM probe = tiny128("delayed");
  const DelayedScalingState& st = *probe.precision().delayed();
  for (int i = 0; i < st.num_forward(); ++i) {
    // scale = 448 / amax is decreasing in amax: the scale of max(amax_a, amax_b) is min(scale_a, scale_b).
    const float want = std::min(sa.ptr<float>()[i], sb.ptr<float>()[i]);
    EXPECT_EQ(sab.ptr<float>()[i], want) << st.name(ScalingRef{ScalingDir::kForward, i});
    differ += sa.ptr<float>()[i] != sb.ptr<float>()[i];
  }
  EXPECT_GT(differ, 4) << "the two batches should lead to different scales for this test to mean anything";
}

TEST(Fp8Recipes, FrozenScalesDoNotMoveAndTrainingUpdatesThem) {
  GemmaForCausalLM m = tiny128("delayed");
  m.calibrate({tiny128_batch(5)});
  const DelayedScalingState& st = *m.precision().delayed();
  const Tensor h0 = Tensor::copy_of(st.amax_histories().view(), Device::CPU);
  const Tensor s0 = Tensor::copy_of(st.scales().view(), Device::CPU);
  m.run(tiny128_batch(6), all_logits());
  EXPECT_TRUE(testing::bitwise_equal(Tensor::copy_of(st.amax_histories().view(), Device::CPU), h0));
  EXPECT_TRUE(testing::bitwise_equal(Tensor::copy_of(st.scales().view(), Device::CPU), s0));
  // Training: the casts record the amax, one fused update turns it into new scales.
  m.precision().set_training(true);
  ForwardOptions fo = all_logits();
  fo.training = true;
  m.run(tiny128_batch(6, {200}), fo);
  const ScalingRef qkv_input{ScalingDir::kForward, 0};
  ASSERT_EQ(st.name(qkv_input), "layers.0.qkv.input");
  EXPECT_GT(st.amax(qkv_input).ptr<float>()[0], 0.0f);  // the cast recorded its amax
  m.precision().update_forward();
  const Tensor s1 = Tensor::copy_of(st.scales().view(), Device::CPU);
  EXPECT_FALSE(testing::bitwise_equal(s1, s0));
  EXPECT_EQ(st.amax(qkv_input).ptr<float>()[0], 0.0f);  // the slot was rolled into the history
}

TEST(Fp8Recipes, Fp8OnlyStorageGivesTheSameLogitsAsMasterStorage) {
  for (const char* r : {"delayed", "current", "block"}) {
    GemmaForCausalLM master = tiny128(r), fp8_only = tiny128(r, WeightStorage::kFp8Only);
    const Batch batch = tiny128_batch();
    master.calibrate({batch});
    fp8_only.calibrate({batch});
    EXPECT_LT(fp8_only.weights().bytes(), master.weights().bytes());
    EXPECT_TRUE(
        testing::bitwise_equal(master.run(batch, all_logits()).logits, fp8_only.run(batch, all_logits()).logits))
        << r;
  }
}

TEST(Fp8Recipes, PackingIsExactForRowLocalScaling) {
  const auto prompts = random_prompts(testing::tiny128_config().vocab_size, {37, 5, 90}, 1);
  for (const char* r : {"delayed", "block", "current"}) {
    GemmaForCausalLM m = tiny128(r);
    m.calibrate({Batch::from_prompts(prompts)});
    const ForwardOutput packed = m.run(Batch::from_prompts(prompts), all_logits());
    int64_t row = 0;
    for (const auto& p : prompts) {
      const ForwardOutput one = m.run(Batch::from_prompts({p}), all_logits());
      const int64_t n = static_cast<int64_t>(p.size());
      auto a = rows_of(packed.logits, row, row + n);
      if (std::string(r) == "current") {  // the amax is batch-wide: close, not equal
        EXPECT_LE(rel_rmse(a, span_of(one.logits)), kRandomRelRmse) << r;
      } else {
        EXPECT_EQ(std::memcmp(a.data(), one.logits.data(), one.logits.nbytes()), 0) << r << " prompt of " << n;
      }
      row += n;
    }
  }
}

TEST(Fp8Recipes, Fp8LmHeadAndLastPositionLogits) {
  const Batch batch = tiny128_batch();
  for (const char* r : {"delayed", "current", "block"}) {
    GemmaForCausalLM bf16_head = tiny128(r), fp8_head = tiny128(r, WeightStorage::kMaster, true);
    bf16_head.calibrate({batch});
    fp8_head.calibrate({batch});
    ForwardOptions last;  // kLastPerSequence (block: the 3 rows are padded to 128 for the GEMM)
    const ForwardOutput a = bf16_head.run(batch, last), b = fp8_head.run(batch, last);
    ASSERT_EQ(b.logits.shape(), (Shape{3, testing::tiny128_config().vocab_size}));
    const double e = rel_rmse(span_of(b.logits), span_of(a.logits));
    EXPECT_LE(e, kRandomRelRmse) << r;
    EXPECT_GT(e, 0.0) << r << ": the FP8 head changed nothing";
    // The last-position rows equal the all-position logits' rows.
    const ForwardOutput all = fp8_head.run(batch, all_logits());
    for (int64_t s = 0; s < 3; ++s) {
      const int64_t row = batch.cu_seqlens[static_cast<std::size_t>(s + 1)] - 1;
      auto want = rows_of(all.logits, row, row + 1), got = rows_of(b.logits, s, s + 1);
      if (std::string(r) == "block") {  // the head's 1x128 blocks are row-local: exact
        EXPECT_EQ(std::memcmp(want.data(), got.data(), got.size_bytes()), 0) << r;
      } else {  // per-tensor head: its input amax covers the rows it sees (3 vs all): close
        EXPECT_LE(rel_rmse(got, want), kRandomRelRmse) << r;
      }
    }
  }
}

TEST(Fp8Recipes, TrainingModeGivesTheSameLogits) {
  for (const char* r : {"delayed", "current", "block"}) {
    GemmaForCausalLM m = tiny128(r);
    const Batch batch = tiny128_batch();
    m.calibrate({batch});
    const Tensor infer = m.run(batch, all_logits()).logits;
    ForwardOptions fo = all_logits();
    fo.training = true;  // column-wise copies, per-layer buffers; same numbers
    EXPECT_TRUE(testing::bitwise_equal(m.run(batch, fo).logits, infer)) << r;
  }
}

TEST(Fp8Recipes, BlockScalingPadsRowsTo128) {
  GemmaForCausalLM m = tiny128("block");
  const Batch batch = tiny128_batch(9, {1, 2, 3});  // 6 tokens -> 128 rows
  const ForwardOutput out = m.run(batch, all_logits());
  ASSERT_EQ(out.logits.shape()[0], 6);
  for (int64_t i = 0; i < out.logits.numel(); ++i) ASSERT_TRUE(std::isfinite(out.logits.ptr<float>()[i]));
}

}  // namespace
}  // namespace tg::impl
