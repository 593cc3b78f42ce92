// Metrics on hand-computed arrays; KL properties; generation and loss-curve metrics.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "common/check.h"
#include "common/tests/test_error.h"
#include "parity/metrics.h"

namespace tg::parity {
namespace {

using ::testing::HasSubstr;
constexpr float kNaNf = std::numeric_limits<float>::quiet_NaN();
constexpr float kInff = std::numeric_limits<float>::infinity();

using tg::testing::error_of;

// ---- compare_arrays / count_mismatches --------------------------------------------------------------

TEST(ParityMetrics, ArrayStatsHandComputed) {
  const std::vector<float> r{1.0f, -2.0f, 4.0f, 0.5f}, t{1.25f, -2.0f, 3.5f, 0.5f};
  const ArrayStats s = compare_arrays(r, t);
  EXPECT_EQ(s.count, 4);
  EXPECT_EQ(s.nonfinite, 0);
  EXPECT_DOUBLE_EQ(s.max_abs_err, 0.5);
  EXPECT_EQ(s.max_abs_index, 2);
  EXPECT_DOUBLE_EQ(s.rel_floor, 4e-3);      // 1e-3 x max|r| = 1e-3 x 4
  EXPECT_DOUBLE_EQ(s.max_rel_err, 0.25);    // 0.25 / 1 beats 0.5 / 4
  EXPECT_EQ(s.max_rel_index, 0);
  EXPECT_NEAR(s.rmse, 0.2795084971874737, 1e-15);   // sqrt((0.0625 + 0.25) / 4)
  EXPECT_DOUBLE_EQ(s.ref_range, 6.0);                 // 4 - (-2)
  EXPECT_NEAR(s.rmse_over_range, 0.04658474953124562, 1e-15);
  EXPECT_NEAR(s.cosine, 0.9953279829326578, 1e-15);  // 19.5 / sqrt(21.25 x 18.0625)
}

TEST(ParityMetrics, RelativeErrorFloorIgnoresCancellationNoise) {
  // Element 1 is 1e6x smaller than the largest; without the floor its rel error would be 1.0.
  const std::vector<float> r{1000.0f, 0.001f}, t{1000.0f, 0.002f};
  const ArrayStats s = compare_arrays(r, t);
  EXPECT_DOUBLE_EQ(s.rel_floor, 1.0);
  EXPECT_NEAR(s.max_rel_err, 0.001, 1e-9);
  // Above the floor the plain relative error applies.
  const std::vector<float> r2{1000.0f, 10.0f}, t2{1000.0f, 11.0f};
  EXPECT_NEAR(compare_arrays(r2, t2).max_rel_err, 0.1, 1e-6);
}

TEST(ParityMetrics, IdenticalArrays) {
  const std::vector<float> r{1.5f, -3.0f, 0.0f, 7.0f};
  const ArrayStats s = compare_arrays(r, r);
  EXPECT_EQ(s.max_abs_err, 0.0);
  EXPECT_EQ(s.max_abs_index, -1);
  EXPECT_EQ(s.rmse_over_range, 0.0);
  EXPECT_NEAR(s.cosine, 1.0, 1e-15);
  EXPECT_EQ(count_mismatches(r, r, 0.0, 0.0), 0);
}

TEST(ParityMetrics, DegenerateArrays) {
  const std::vector<float> z{0.0f, 0.0f}, one{0.0f, 1.0f}, c{2.0f, 2.0f}, c2{2.0f, 2.5f};
  EXPECT_EQ(compare_arrays(z, z).cosine, 1.0);
  EXPECT_EQ(compare_arrays(z, one).cosine, 0.0);
  EXPECT_EQ(compare_arrays(c, c).rmse_over_range, 0.0);  // constant reference, no error
  EXPECT_TRUE(std::isinf(compare_arrays(c, c2).rmse_over_range));  // constant reference, an error
}

TEST(ParityMetrics, NonFiniteValuesNeverLookSmall) {
  const std::vector<float> r{1.0f, 2.0f, kInff, 4.0f}, t{1.0f, kNaNf, kInff, 4.0f};
  const ArrayStats s = compare_arrays(r, t);
  EXPECT_EQ(s.nonfinite, 1);  // equal infinities are equal
  EXPECT_EQ(s.first_nonfinite_index, 1);
  EXPECT_TRUE(std::isinf(s.max_abs_err));
  EXPECT_TRUE(std::isinf(s.rmse_over_range));
  EXPECT_TRUE(std::isnan(s.cosine));
  const std::vector<float> t2{1.0f, 2.0f, -kInff, 4.0f};
  EXPECT_EQ(compare_arrays(r, t2).nonfinite, 1);
  EXPECT_EQ(count_mismatches(r, t, 1.0, 1.0), 1);
  EXPECT_EQ(count_mismatches(r, t2, 1.0, 1.0), 1);
  const std::vector<float> nan2{kNaNf}, nan1{kNaNf};
  EXPECT_EQ(count_mismatches(nan2, nan1, 1.0, 1.0), 1);  // torch.allclose: equal_nan=False
}

TEST(ParityMetrics, MismatchesFollowAllcloseRule) {
  const std::vector<float> r{1.0f, -2.0f, 4.0f, 0.5f}, t{1.25f, -2.0f, 3.5f, 0.5f};
  // errors {0.25, 0, 0.5, 0}; tolerances atol + rtol|r| = {0.2, 0.3, 0.5, 0.15}: only element 0 exceeds
  // (0.5 <= 0.5 is close, as in torch.allclose).
  EXPECT_EQ(count_mismatches(r, t, 0.1, 0.1), 1);
  EXPECT_EQ(count_mismatches(r, t, 0.0, 0.0), 2);
  EXPECT_EQ(count_mismatches(r, t, 0.0, 0.5), 0);
}

TEST(ParityMetrics, ArrayErrors) {
  const std::vector<float> a{1.0f, 2.0f}, b{1.0f}, e;
  EXPECT_THAT(error_of([&] { compare_arrays(a, b); }), HasSubstr("sizes differ: 2 vs 1"));
  EXPECT_THAT(error_of([&] { compare_arrays(e, e); }), HasSubstr("empty"));
  EXPECT_THAT(error_of([&] { count_mismatches(a, a, -1.0, 0.0); }), HasSubstr("rtol and atol must be >= 0"));
}

// ---- KL / top-k ------------------------------------------------------------------------------------------

TEST(ParityMetrics, KlHandComputed) {
  // p = softmax(0, ln 3) = (1/4, 3/4), q = uniform: KL = 1/4 ln(1/2) + 3/4 ln(3/2).
  const std::vector<float> r{0.0f, std::log(3.0f)}, t{0.0f, 0.0f};
  EXPECT_NEAR(kl_divergence(r, t), 0.13081203594113697, 1e-7);
}

TEST(ParityMetrics, KlZeroForIdenticalAndShiftInvariant) {
  const std::vector<float> r{0.3f, -1.2f, 5.0f, 2.2f};
  EXPECT_EQ(kl_divergence(r, r), 0.0);
  std::vector<float> shifted = r;
  for (auto& x : shifted) x += 1000.0f;  // softmax is invariant to a shift (exact in float here? near enough)
  EXPECT_LT(kl_divergence(r, shifted), 1e-9);
}

TEST(ParityMetrics, KlPositiveAndAsymmetric) {
  const std::vector<float> r{2.0f, 0.0f, -1.0f}, t{0.0f, 2.0f, -1.0f}, u{0.0f, 0.0f, 0.0f};
  EXPECT_GT(kl_divergence(r, t), 0.1);
  EXPECT_GT(kl_divergence(r, u), 0.0);
  EXPECT_GT(kl_divergence(u, r), 0.0);
  EXPECT_NE(kl_divergence(r, u), kl_divergence(u, r));
}

TEST(ParityMetrics, KlStableWithLargeLogits) {
  // Logits around 1e4 overflow a naive exp(); log-softmax in double keeps the exact value of the small case.
  const std::vector<float> small_r{0.0f, -1.0f}, small_t{0.0f, -2.0f};
  const std::vector<float> big_r{1e4f, 1e4f - 1.0f}, big_t{1e4f, 1e4f - 2.0f};
  const double expected = 0.0826077448947449;  // KL(softmax(0, -1) || softmax(0, -2))
  EXPECT_NEAR(kl_divergence(small_r, small_t), expected, 1e-12);
  EXPECT_NEAR(kl_divergence(big_r, big_t), expected, 1e-12);
  const std::vector<float> neg{-1e4f, 1e4f, 0.0f}, neg_t{1e4f, -1e4f, 0.0f};
  const double kl = kl_divergence(neg, neg_t);
  EXPECT_TRUE(std::isfinite(kl));
  EXPECT_NEAR(kl, 2e4, 1e-6 * 2e4);  // p puts all mass on token 1, where log q = -2e4
  EXPECT_EQ(kl_divergence(neg, neg), 0.0);
}

TEST(ParityMetrics, KlNaNOnNonFinite) {
  const std::vector<float> r{0.0f, 1.0f}, t{0.0f, kNaNf}, i{kInff, 0.0f};
  EXPECT_TRUE(std::isnan(kl_divergence(r, t)));
  EXPECT_TRUE(std::isnan(kl_divergence(i, r)));
}

TEST(ParityMetrics, TopKOrderTiesAndNaN) {
  const std::vector<float> x{1.0f, 3.0f, kNaNf, 3.0f, -kInff, 2.0f};
  EXPECT_EQ(top_k(x, 3), (std::vector<int32_t>{1, 3, 5}));  // tie 3.0 -> lower index first
  EXPECT_EQ(top_k(x, 10), (std::vector<int32_t>{1, 3, 5, 0, 4, 2}));  // NaN last
}

TEST(ParityMetrics, LogitRowMarginsAndOverlap) {
  const std::vector<float> r{5.0f, 4.9f, 1.0f, 0.0f, -1.0f, -2.0f, -3.0f};
  const std::vector<float> t{4.9f, 5.0f, 1.0f, 0.0f, -4.0f, -3.0f, -2.0f};
  const RowStats s = compare_logit_row(r, t);
  EXPECT_EQ(s.ref_top1, 0);
  EXPECT_EQ(s.test_top1, 1);
  EXPECT_NEAR(s.ref_margin, 0.1, 1e-6);
  EXPECT_NEAR(s.ref_gap_to_test_top1, 0.1, 1e-6);
  EXPECT_EQ(s.top5_overlap, 4);  // top5(r) = {0, 1, 2, 3, 4}, top5(t) = {1, 0, 2, 3, 6}
}

TEST(ParityMetrics, LogitsNearTieVersusHardDisagreement) {
  // Row 0 identical; row 1 swaps two logits 0.1 apart; row 2 picks a token the reference ranks 3.0 lower.
  const std::vector<float> r{1.0f, 0.0f, -1.0f,  //
                             3.0f, 2.9f, 0.0f,   //
                             3.0f, 1.0f, 0.0f};
  const std::vector<float> t{1.0f, 0.0f, -1.0f,  //
                             2.9f, 3.0f, 0.0f,   //
                             3.0f, 1.0f, 4.0f};
  const LogitsStats s = compare_logits(r, t, 3, 0.2);
  EXPECT_EQ(s.rows, 3);
  EXPECT_EQ(s.top1_disagreements, 2);
  EXPECT_EQ(s.top1_hard_disagreements, 1);
  EXPECT_EQ(s.first_hard_row, 2);
  EXPECT_EQ(s.first_near_tie_row, 1);
  EXPECT_NEAR(s.top1_agreement, 1.0 / 3.0, 1e-12);
  EXPECT_EQ(s.kl_max_row, 2);
  EXPECT_GT(s.kl_max, s.kl_mean);
  EXPECT_NEAR(s.ref_margins[1], 0.1, 1e-6);
  EXPECT_EQ(s.top5_overlap, 1.0);  // k = min(5, V = 3): the sets are always equal
  // With a margin below 0.1 the swap is a hard disagreement too.
  EXPECT_EQ(compare_logits(r, t, 3, 0.05).top1_hard_disagreements, 2);
  EXPECT_THAT(error_of([&] { compare_logits(r, t, 4, 0.2); }), HasSubstr("not whole rows of vocab 4"));
}

// ---- Generations -----------------------------------------------------------------------------------------

TEST(ParityMetrics, Generations) {
  const std::vector<int32_t> a{5, 6, 7, 8}, b{5, 6, 9, 8}, c{5, 6}, e;
  GenerationStats s = compare_generations(a, a);
  EXPECT_EQ(s.first_divergence, -1);
  EXPECT_EQ(s.token_agreement, 1.0);
  s = compare_generations(a, b);
  EXPECT_EQ(s.first_divergence, 2);
  EXPECT_EQ(s.ref_token, 7);
  EXPECT_EQ(s.test_token, 9);
  EXPECT_EQ(s.common_prefix, 2);
  EXPECT_DOUBLE_EQ(s.token_agreement, 0.5);
  s = compare_generations(a, c);  // the test stopped early
  EXPECT_EQ(s.first_divergence, 2);
  EXPECT_EQ(s.test_token, -1);
  EXPECT_EQ(compare_generations(e, e).token_agreement, 1.0);
}

// ---- Loss curves -----------------------------------------------------------------------------------------

TEST(ParityMetrics, ParseLossCurve) {
  const std::string text =
      "{\"step\": 2, \"loss\": 3.0, \"lr\": 0.1}\n"
      "\n"
      "{\"step\": 1, \"loss\": 4.0, \"grad_norm\": 2.5}\n"
      "{\"step\": 2, \"val_loss\": 3.5}\n"
      "{\"step\": 3, \"loss\": null}\n"
      "{\"step\": 4, \"loss\": \"inf\"}";
  const LossCurve c = parse_loss_curve(text, "run.jsonl");
  ASSERT_EQ(c.points.size(), 4u);
  EXPECT_EQ(c.points[0].step, 1);
  EXPECT_EQ(*c.points[1].loss, 3.0);
  EXPECT_EQ(*c.points[1].val_loss, 3.5);
  EXPECT_FALSE(c.points[0].val_loss.has_value());
  EXPECT_TRUE(std::isnan(*c.points[2].loss));
  EXPECT_TRUE(std::isinf(*c.points[3].loss));
}

TEST(ParityMetrics, ParseLossCurveErrorsNameTheLine) {
  auto err = [](const std::string& t) { return error_of([&] { parse_loss_curve(t, "run.jsonl"); }); };
  EXPECT_THAT(err("{\"step\": 1, \"loss\": 2}\n{oops"), HasSubstr("run.jsonl:2: not valid JSON"));
  EXPECT_THAT(err("{\"loss\": 2}"), HasSubstr("run.jsonl:1: missing \"step\""));
  EXPECT_THAT(err("{\"step\": -1, \"loss\": 2}"), HasSubstr("\"step\" must be an integer >= 0"));
  EXPECT_THAT(err("{\"step\": 1.5, \"loss\": 2}"), HasSubstr("\"step\" must be an integer >= 0"));
  EXPECT_THAT(err("{\"step\": 1}"), HasSubstr("needs \"loss\" or \"val_loss\""));
  EXPECT_THAT(err("{\"step\": 1, \"loss\": \"low\"}"), HasSubstr("\"loss\" must be a number"));
  EXPECT_THAT(err("{\"step\": 1, \"loss\": 2}\n{\"step\": 1, \"loss\": 3}"),
              HasSubstr("run.jsonl:2: step 1 has a second \"loss\""));
  EXPECT_THAT(err("[1, 2]"), HasSubstr("expected a JSON object"));
  EXPECT_THAT(err("\n\n"), HasSubstr("no loss records"));
}

LossCurve curve(const std::vector<double>& losses, std::optional<double> final_val = {}) {
  LossCurve c;
  c.source = "test";
  for (std::size_t i = 0; i < losses.size(); ++i) c.points.push_back({int64_t(i), losses[i], std::nullopt});
  if (final_val) c.points.back().val_loss = final_val;
  return c;
}

TEST(ParityMetrics, CompareLossCurvesHandComputed) {
  // 20 steps: the tail is the last 2. ref = 10 - 0.25 i; test = ref + 0.5 on the last two steps.
  std::vector<double> r, t;
  for (int i = 0; i < 20; ++i) {
    r.push_back(10.0 - 0.25 * i);
    t.push_back(r.back() + (i >= 18 ? 0.5 : (i == 3 ? -1.0 : 0.0)));
  }
  const LossComparison c = compare_loss_curves(curve(r, 2.0), curve(t, 2.1));
  EXPECT_EQ(c.common_steps, 20);
  EXPECT_EQ(c.tail_steps, 2);
  EXPECT_DOUBLE_EQ(c.tail_mean_ref, (5.5 + 5.25) / 2);
  EXPECT_DOUBLE_EQ(c.tail_mean_test, (6.0 + 5.75) / 2);
  EXPECT_DOUBLE_EQ(c.tail_mean_rel_diff, 0.5 / 5.375);
  EXPECT_DOUBLE_EQ(c.max_abs_step_diff, 1.0);
  EXPECT_EQ(c.max_abs_step_diff_step, 3);
  EXPECT_DOUBLE_EQ(c.mean_abs_step_diff, 2.0 / 20);
  ASSERT_TRUE(c.final_val_step.has_value());
  EXPECT_EQ(*c.final_val_step, 19);
  EXPECT_DOUBLE_EQ(c.final_val_ratio, 1.05);
  EXPECT_DOUBLE_EQ(c.step_diffs[3], -1.0);
  // Short curves: at least one tail step; only common steps count.
  const LossComparison s = compare_loss_curves(curve({4.0, 3.0, 2.0}), curve({4.0, 3.5}));
  EXPECT_EQ(s.common_steps, 2);
  EXPECT_EQ(s.tail_steps, 1);
  EXPECT_DOUBLE_EQ(s.tail_mean_rel_diff, 0.5 / 3.0);
  EXPECT_FALSE(s.final_val_step.has_value());
  LossCurve other = curve({1.0});
  other.points[0].step = 100;
  EXPECT_THAT(error_of([&] { compare_loss_curves(curve({1.0}), other); }), HasSubstr("share no step"));
}

TEST(ParityMetrics, CompareLossCurvesWindowsAndMinimumValidation) {
  // 10 steps in 3 windows: [0, 3), [3, 6), [6, 10) (lo = 10 w / 3). ref = 4 everywhere; test = 4.4 at steps
  // 0-2 (|rel| 0.1), 4 at 3-5, 3.8 at 6-9 (0.05).
  std::vector<double> r(10, 4.0), t;
  for (int i = 0; i < 10; ++i) t.push_back(i < 3 ? 4.4 : i < 6 ? 4.0 : 3.8);
  LossCurve rc = curve(r), tc = curve(t);
  // Validation at steps 2, 5, 9: ref 5, 3, 4 (min 3); test 5.5, 3.3, 4.2 (min 3.3); the test's step-7 value
  // has no reference partner and does not count.
  for (auto [step, rv, tv] : {std::tuple{2, 5.0, 5.5}, {5, 3.0, 3.3}, {9, 4.0, 4.2}}) {
    rc.points[step].val_loss = rv;
    tc.points[step].val_loss = tv;
  }
  tc.points[7].val_loss = 1.0;
  const LossComparison c = compare_loss_curves(rc, tc, 3);
  ASSERT_EQ(c.windows.size(), 3u);
  EXPECT_EQ(c.windows[0].first_step, 0);
  EXPECT_EQ(c.windows[0].last_step, 2);
  EXPECT_EQ(c.windows[1].first_step, 3);
  EXPECT_EQ(c.windows[1].last_step, 5);
  EXPECT_EQ(c.windows[2].first_step, 6);
  EXPECT_EQ(c.windows[2].last_step, 9);
  EXPECT_EQ(c.windows[2].steps, 4);
  EXPECT_NEAR(c.windows[0].mean_abs_rel_diff, 0.1, 1e-12);
  EXPECT_DOUBLE_EQ(c.windows[1].mean_abs_rel_diff, 0.0);
  EXPECT_NEAR(c.windows[2].mean_abs_rel_diff, 0.05, 1e-12);
  EXPECT_EQ(c.val_steps, 3);
  EXPECT_DOUBLE_EQ(c.min_val_ref, 3.0);
  EXPECT_DOUBLE_EQ(c.min_val_test, 3.3);
  EXPECT_NEAR(c.min_val_rel_diff, 0.1, 1e-12);
  EXPECT_NEAR(c.final_val_rel_diff, 0.05, 1e-12);  // step 9: |4.2 - 4| / 4
  // More windows than steps: one per step. A lower test validation loss is a distance too (two-sided).
  const LossComparison s = compare_loss_curves(curve({4.0, 2.0}, 2.0), curve({4.0, 1.0}, 1.5), 5);
  ASSERT_EQ(s.windows.size(), 2u);
  EXPECT_DOUBLE_EQ(s.windows[1].mean_abs_rel_diff, 0.5);
  EXPECT_DOUBLE_EQ(s.final_val_rel_diff, 0.25);
  EXPECT_THAT(error_of([&] { compare_loss_curves(rc, tc, 0); }), HasSubstr("windows must be >= 1"));
}

TEST(ParityMetrics, CompareLossCurvesDivergedRunIsNaN) {
  const LossComparison c =
      compare_loss_curves(curve({3.0, 2.0, 1.0}), curve({3.0, std::numeric_limits<double>::quiet_NaN(), 1.0}));
  EXPECT_TRUE(std::isnan(c.max_abs_step_diff));
  EXPECT_EQ(c.max_abs_step_diff_step, 1);
}

TEST(ParityMetrics, CurveHealth) {
  std::vector<double> l(30, 2.0);
  l[15] = 4.5;   // > 2 x median 2.0: a spike
  l[20] = 3.9;   // < 2 x 2.0: noise
  l[25] = std::numeric_limits<double>::quiet_NaN();
  l[26] = std::numeric_limits<double>::infinity();
  l[3] = 100.0;  // inside the first window: not judged (no median yet)
  const CurveHealth h = check_curve_health(curve(l), 2.0, 10);
  EXPECT_EQ(h.steps, 30);
  EXPECT_EQ(h.nonfinite, 2);
  EXPECT_EQ(h.first_nonfinite_step, 25);
  EXPECT_EQ(h.spikes, 1);
  EXPECT_EQ(h.first_spike_step, 15);
  EXPECT_DOUBLE_EQ(h.first_spike_loss, 4.5);
  EXPECT_DOUBLE_EQ(h.first_spike_median, 2.0);
  EXPECT_EQ(check_curve_health(curve(std::vector<double>(30, 2.0)), 2.0, 10).spikes, 0);
  EXPECT_THAT(error_of([&] { check_curve_health(curve(l), 1.0, 10); }), HasSubstr("spike_factor must be > 1"));
}

}  // namespace
}  // namespace tg::parity
