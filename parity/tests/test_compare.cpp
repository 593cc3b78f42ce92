// The comparison runners with fake engines: could-not-run handling, generation near-ties, loss curves.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "impl/recipe.h"
#include "parity/compare.h"
#include "parity/tests/fake_engine.h"

namespace tg::parity {
namespace {

// The general (TE-derived) thresholds: the tiny class's are calibrated on the real ci models (thresholds.json).
constexpr const char* kSize = "small";

using ::testing::HasSubstr;
using fake::FakeEngine;
using fake::FakeOptions;

PromptSet small_prompts() {
  return PromptSet::parse(R"({"schema_version": 1, "name": "small", "prompts": [
      {"id": "a", "tokens": [2]}, {"id": "b", "tokens": [2, 17, 33, 5]}, {"id": "c", "tokens": [2, 40, 41, 42, 43, 9, 1]}]})",
                          "small.json");
}

FakeOptions bf16() {
  FakeOptions o;
  o.precision = FakeOptions::kBF16;
  return o;
}

// Logits in BF16: a malformed engine result.
class WrongDtypeEngine : public FakeEngine {
 public:
  using FakeEngine::FakeEngine;
  ForwardResult forward(const std::vector<TokenIds>& prompts, const ForwardOptions& o) override {
    ForwardResult r = FakeEngine::forward(prompts, o);
    for (auto& p : r.prompts) p.logits = Tensor::zeros(DType::BF16, p.logits.shape());
    return r;
  }
};

// ---- Could not run --------------------------------------------------------------------------------------

TEST(ParityCompare, ThrowingEngineIsAnErrorNotACrash) {
  const Thresholds th = Thresholds::builtin();
  FakeOptions o = bf16();
  o.throw_in_forward = true;
  FakeEngine ref("reference", "bf16", bf16()), bad("impl", "block", o);
  Report r;
  const Comparison& c = compare_forward(r, ref, bad, small_prompts(), {th, kSize});
  EXPECT_EQ(c.status(), "error");
  EXPECT_THAT(c.error, HasSubstr("impl: simulated failure"));
  EXPECT_EQ(r.exit_code(), 2);
  EXPECT_THAT(r.summary(), HasSubstr("ERROR reference[bf16] vs impl[block]: forward"));
  // The next comparison still runs.
  FakeEngine good("impl", "bf16", bf16());
  compare_forward(r, ref, good, small_prompts(), {th, kSize});
  EXPECT_EQ(r.comparisons.back().status(), "pass");
  EXPECT_EQ(r.exit_code(), 2);
  EXPECT_EQ(r.engines.size(), 3u);  // reference[bf16], impl[block], impl[bf16]
  // Reports carry canonical recipe strings (every field explicit).
  EXPECT_EQ(r.engines[1].recipe, impl::Recipe::parse("block").to_string());
  EXPECT_EQ(r.comparisons[0].test_recipe, impl::Recipe::parse("block").to_string());
  EXPECT_THAT(r.engines[1].recipe, HasSubstr("pow2="));
}

TEST(ParityCompare, MalformedResultsAreErrors) {
  const Thresholds th = Thresholds::builtin();
  FakeEngine ref("reference", "bf16", bf16());
  FakeOptions o = bf16();
  o.drop_tap = 1;
  FakeEngine fewer("impl", "bf16", o);
  Report r;
  compare_forward(r, ref, fewer, small_prompts(), {th, kSize});
  EXPECT_THAT(r.comparisons.back().error, HasSubstr("prompt 0 (a): reference[bf16] returned 3 taps, impl[bf16] 2"));
  WrongDtypeEngine wrong("impl", "bf16", bf16());
  compare_forward(r, ref, wrong, small_prompts(), {th, kSize});
  EXPECT_THAT(r.comparisons.back().error, HasSubstr("impl[bf16] logits of prompt 0 (a): expected F32, got BF16"));
  FakeEngine bad_recipe("impl", "fp4", bf16());
  compare_forward(r, ref, bad_recipe, small_prompts(), {th, kSize});
  EXPECT_THAT(r.comparisons.back().error, HasSubstr("fp4"));
  EXPECT_EQ(r.comparisons.back().title(), "reference[bf16] vs impl: forward");  // names the engine anyway
  PromptSet none = small_prompts();
  none.prompts.clear();
  compare_forward(r, ref, ref, none, {th, kSize});
  EXPECT_THAT(r.comparisons.back().error, HasSubstr("small.json: no prompts to run"));
  const Comparison& g = compare_generation(r, ref, ref, none, {}, {th, kSize});
  EXPECT_EQ(g.status(), "error");
  EXPECT_EQ(r.exit_code(), 2);
}

// ---- Generation ------------------------------------------------------------------------------------------

struct GenRun {
  Report report;
  const Comparison& c() const { return report.comparisons.at(0); }
};

GenRun run_generation(FakeEngine& ref, FakeEngine& test, const Thresholds& th) {
  GenRun g;
  GenerateOptions gen;
  gen.max_new_tokens = 8;
  compare_generation(g.report, ref, test, small_prompts(), gen, {th, kSize});
  return g;
}

// The reference's gap between its own token and `token` after prompt `p` + its first `step` tokens.
double ref_gap(FakeEngine& ref, const TokenIds& prompt, const TokenIds& gen, int step, int32_t token) {
  TokenIds prefix = prompt;
  prefix.insert(prefix.end(), gen.begin(), gen.begin() + step);
  const std::vector<float> all = ref.logits_of(prefix);
  const std::vector<float> row(all.end() - 64, all.end());
  return double(row[gen[step]]) - double(row[token]);
}

Thresholds with_margin(double margin) {
  Thresholds th = Thresholds::builtin();
  th.override_with(Thresholds::parse(
      R"({"schema_version": 1, "thresholds_version": 1, "thresholds": {"logits.near_tie_margin": {"bf16": {"any": {"value": )" +
          std::to_string(margin) + R"(, "reason": "test"}}}}})",
      "margin.json"));
  return th;
}

TEST(ParityCompare, IdenticalGenerationsPass) {
  FakeEngine ref("reference", "bf16", bf16()), test("impl", "bf16", bf16());
  const GenRun g = run_generation(ref, test, Thresholds::builtin());
  EXPECT_EQ(g.report.exit_code(), 0) << g.report.summary();
  int divergence_checks = 0;
  for (const auto& ch : g.c().checks) {
    if (ch.metric != "generation.first_divergence_step") continue;
    ++divergence_checks;
    EXPECT_EQ(ch.value, -1.0);
    EXPECT_EQ(ch.verdict, Verdict::kPass);
  }
  EXPECT_EQ(divergence_checks, 3);
}

TEST(ParityCompare, DivergenceAtANearTieIsReportedNotFailed) {
  FakeEngine ref("reference", "bf16", bf16());
  const PromptSet prompts = small_prompts();
  GenerateOptions gen;
  gen.max_new_tokens = 8;
  const std::vector<TokenIds> ref_gen = ref.generate_greedy(prompts.token_ids(), gen);
  // Force prompt 1 at step 3 onto the reference's runner-up there.
  TokenIds prefix = prompts.prompts[1].tokens;
  prefix.insert(prefix.end(), ref_gen[1].begin(), ref_gen[1].begin() + 3);
  const std::vector<float> all = ref.logits_of(prefix);
  const std::vector<float> row(all.end() - 64, all.end());
  const int32_t runner_up = top_k(row, 2)[1];
  const double gap = ref_gap(ref, prompts.prompts[1].tokens, ref_gen[1], 3, runner_up);
  ASSERT_GT(gap, 0.0);

  FakeOptions o = bf16();
  o.forced[{1, 3}] = runner_up;
  FakeEngine test("impl", "bf16", o);

  // A margin above the gap: a near-tie, exit 0, reported on the summary line.
  const GenRun tie = run_generation(ref, test, with_margin(gap * 1.5));
  EXPECT_EQ(tie.report.exit_code(), 0) << tie.report.summary();
  EXPECT_EQ(tie.c().count(Verdict::kNearTie), 1);
  EXPECT_THAT(tie.report.summary(), HasSubstr("1 near-tie"));
  const Check* div = nullptr;
  for (const auto& ch : tie.c().checks)
    if (ch.metric == "generation.first_divergence_step" && ch.subject.prompt == 1) div = &ch;
  ASSERT_NE(div, nullptr);
  EXPECT_EQ(div->value, 3.0);
  EXPECT_EQ(div->verdict, Verdict::kNearTie);
  EXPECT_THAT(div->detail, HasSubstr("step 3: ref token " + std::to_string(ref_gen[1][3]) + ", test token " +
                                     std::to_string(runner_up)));
  for (const auto& ch : tie.c().checks) {
    if (ch.subject.prompt != 1) continue;
    if (ch.metric == "generation.ref_gap_at_divergence") {
      EXPECT_NEAR(ch.value, gap, 1e-12);
    }
    if (ch.metric == "generation.ref_margin_at_divergence") {
      EXPECT_NEAR(ch.value, gap, 1e-12);  // the test picked the runner-up: gap == top-2 margin
    }
  }

  // A margin below the gap: the same divergence fails and is named.
  const GenRun hard = run_generation(ref, test, with_margin(gap * 0.5));
  EXPECT_EQ(hard.report.exit_code(), 1);
  EXPECT_THAT(hard.report.summary(), HasSubstr("generation: generation.first_divergence_step = 3 "
                                               "(logits.near_tie_margin"));
  EXPECT_THAT(hard.report.summary(), HasSubstr("in 1 of 3 prompts, worst at prompt 1 (b): step 3"));
}

TEST(ParityCompare, DivergenceToAnUnlikelyTokenFails) {
  FakeEngine ref("reference", "bf16", bf16());
  const PromptSet prompts = small_prompts();
  TokenIds prefix = prompts.prompts[2].tokens;
  const std::vector<float> all = ref.logits_of(prefix);
  const std::vector<float> row(all.end() - 64, all.end());
  const int32_t worst = top_k(row, 64).back();
  FakeOptions o = bf16();
  o.forced[{2, 0}] = worst;
  FakeEngine test("impl", "bf16", o);
  const GenRun g = run_generation(ref, test, Thresholds::builtin());
  EXPECT_EQ(g.report.exit_code(), 1);
  EXPECT_THAT(g.report.summary(), HasSubstr("generation.first_divergence_step = 0"));
  EXPECT_THAT(g.report.summary(), HasSubstr(">= near-tie margin 0.2"));
}

// ---- Loss curves -----------------------------------------------------------------------------------------

LossCurve make_curve(int steps, double tail_factor, std::optional<double> val = {}) {
  LossCurve c;
  c.source = "mem";
  for (int i = 0; i < steps; ++i) {
    double l = 2.0 + 6.0 * std::exp(-i / 20.0) + 0.01 * std::sin(i);
    if (i >= steps * 9 / 10) l *= tail_factor;
    c.points.push_back({i, l, std::nullopt});
  }
  if (val) c.points.back().val_loss = *val;
  return c;
}

TEST(ParityCompare, LossCurvesWithinTwoPercentPassForFp8) {
  const Thresholds th = Thresholds::builtin();
  Report r;
  const Comparison& c = compare_loss(r, make_curve(200, 1.0, 2.5), "reference", "bf16", make_curve(200, 1.015, 2.54),
                                     "impl", "delayed", {th, "small"});
  EXPECT_EQ(c.status(), "pass") << r.summary();
  EXPECT_EQ(c.title(), "reference[bf16] vs impl[delayed]: loss_curve");
  EXPECT_EQ(c.thresholds.at("loss.tail_mean_rel_diff").value, 0.02);
  EXPECT_EQ(c.series.at("loss.step_diff").size(), 200u);
  EXPECT_EQ(r.exit_code(), 0);
}

TEST(ParityCompare, LossCurveViolationsAreNamed) {
  const Thresholds th = Thresholds::builtin();
  Report r;
  compare_loss(r, make_curve(200, 1.0, 2.5), "reference", "bf16", make_curve(200, 1.03, 2.6), "impl", "delayed",
               {th, "small"});
  const std::string s = r.summary();
  EXPECT_EQ(r.exit_code(), 1);
  EXPECT_THAT(s, HasSubstr("loss: loss.tail_mean_rel_diff = 0.03"));
  EXPECT_THAT(s, HasSubstr("(max 0.02, fp8/any)"));
  EXPECT_THAT(s, HasSubstr("loss: loss.final_val_ratio = 1.04 (max 1.02, fp8/any)"));
  // The tiny (CI) class has looser, stated tolerances.
  Report tiny;
  compare_loss(tiny, make_curve(200, 1.0, 2.5), "reference", "bf16", make_curve(200, 1.03, 2.6), "impl", "delayed",
               {th, "tiny"});
  EXPECT_EQ(tiny.exit_code(), 0) << tiny.summary();
}

TEST(ParityCompare, DivergingCurveFailsHealth) {
  const Thresholds th = Thresholds::builtin();
  LossCurve bad = make_curve(100, 1.0);
  bad.points[60].loss = std::numeric_limits<double>::quiet_NaN();
  bad.points[80].loss = 50.0;
  Report r;
  compare_loss(r, make_curve(100, 1.0), "reference", "bf16", bad, "impl", "block", {th, "small"});
  const std::string s = r.summary();
  EXPECT_EQ(r.exit_code(), 1);
  EXPECT_THAT(s, HasSubstr("curve:impl[block]: loss.nonfinite_steps = 1 (max 0, any/any): first at step 60"));
  EXPECT_THAT(s, HasSubstr("curve:impl[block]: loss.spikes = 1 (max 0, any/any): first at step 80: loss 50 > 2 x "
                           "running median"));
  EXPECT_THAT(r.comparisons[0].notes,
              ::testing::Contains(HasSubstr("no step has a validation loss in both curves")));

  Report one;
  check_loss_health(one, bad, "impl", "block", {th, "small"});
  EXPECT_EQ(one.exit_code(), 1);
  EXPECT_EQ(one.comparisons[0].title(), "impl[block]: loss_health");
  Report healthy;
  check_loss_health(healthy, make_curve(100, 1.0), "impl", "bf16", {th, "small"});
  EXPECT_EQ(healthy.exit_code(), 0) << healthy.summary();
  Report short_run;
  check_loss_health(short_run, make_curve(5, 1.0), "impl", "bf16", {th, "tiny"});
  EXPECT_THAT(short_run.comparisons[0].notes, ::testing::Contains(HasSubstr("spikes were not looked for")));
}

// The noise-relative verdict. ref: the make_curve shape; the noise run: the reference with another init
// seed, modelled as a steady 1% offset with a wiggle (validation 2.53 vs 2.5: 1.2%).
LossCurve scaled(const LossCurve& c, double factor, double wiggle = 0.0, std::optional<double> val = {}) {
  LossCurve out = c;
  for (auto& p : out.points) {
    if (p.loss) *p.loss *= factor + wiggle * std::sin(double(p.step));
    p.val_loss.reset();
  }
  if (val) out.points.back().val_loss = *val;
  return out;
}

TEST(ParityCompare, ImplWithinNoisePassesNoiseRelative) {
  const Thresholds th = Thresholds::builtin();
  const LossCurve ref = make_curve(200, 1.0, 2.5);
  const LossCurve noise = scaled(ref, 1.01, 0.003, 2.53);
  // 1.5% above the reference: over the fixed 1% bf16 threshold, within 2 x the 1% noise + 0.25%.
  const LossCurve impl = scaled(ref, 1.015, 0.0, 2.53);
  Report fixed;
  compare_loss(fixed, ref, "reference", "bf16", impl, "impl", "bf16", {th, "small"});
  EXPECT_EQ(fixed.exit_code(), 1) << "the fallback: fixed thresholds";
  EXPECT_THAT(fixed.summary(), HasSubstr("loss.tail_mean_rel_diff = 0.015 (max 0.01, bf16/any)"));

  Report r;
  const Comparison& c =
      compare_loss(r, ref, "reference", "bf16", impl, "impl", "bf16", {th, "small"}, {&noise, "reference_seed2[bf16]"});
  EXPECT_EQ(c.status(), "pass") << r.summary();
  EXPECT_EQ(c.thresholds.at("loss.noise_k").value, 2.0);
  EXPECT_EQ(c.thresholds.at("loss.noise_floor").value, 0.0025);
  EXPECT_EQ(c.thresholds.count("loss.tail_mean_rel_diff"), 0u) << "the fixed threshold is not consulted";
  auto check = [&](const std::string& metric, const std::string& part = "loss") -> const Check& {
    for (const auto& ch : c.checks)
      if (ch.metric == metric && ch.subject.part == part) return ch;
    ADD_FAILURE() << "no check " << metric << " on " << part;
    return c.checks.front();
  };
  const Check& tail = check("loss.tail_mean_rel_diff");
  EXPECT_EQ(tail.verdict, Verdict::kPass);
  EXPECT_NEAR(tail.value, 0.015, 1e-9);
  const double noise_tail = check("loss.noise.tail_mean_rel_diff").value;
  EXPECT_NEAR(noise_tail, 0.01, 0.003);
  EXPECT_DOUBLE_EQ(tail.limit, 2.0 * noise_tail + 0.0025);
  EXPECT_EQ(check("loss.noise.tail_mean_rel_diff").verdict, Verdict::kInfo);
  EXPECT_EQ(check("loss.final_val_rel_diff").verdict, Verdict::kPass);
  EXPECT_NEAR(check("loss.noise.final_val_rel_diff").value, 0.012, 1e-9);
  EXPECT_EQ(check("loss.min_val_rel_diff").verdict, Verdict::kPass);
  EXPECT_EQ(check("loss.final_val_ratio").verdict, Verdict::kInfo);
  for (int w = 0; w < 5; ++w)
    EXPECT_EQ(check("loss.window_mean_abs_rel_diff", "loss.window." + std::to_string(w)).verdict, Verdict::kPass);
  EXPECT_THAT(c.notes, ::testing::Contains(HasSubstr("noise-relative verdicts")));
  EXPECT_EQ(c.series.at("loss.noise").size(), 200u);
  // The limit survives the JSON round trip.
  const Comparison back = Comparison::from_json(c.to_json());
  EXPECT_DOUBLE_EQ(back.checks[2].limit, c.checks[2].limit);
  EXPECT_TRUE(std::isnan(back.checks[0].limit));
}

TEST(ParityCompare, PlantedFivePercentOffsetFailsNoiseRelative) {
  const Thresholds th = Thresholds::builtin();
  const LossCurve ref = make_curve(200, 1.0, 2.5);
  const LossCurve noise = scaled(ref, 1.01, 0.003, 2.53);
  const LossCurve impl = scaled(ref, 1.05, 0.0, 2.625);  // a planted bug: every loss 5% high
  Report r;
  compare_loss(r, ref, "reference", "bf16", impl, "impl", "bf16", {th, "small"}, {&noise, "reference_seed2[bf16]"});
  EXPECT_EQ(r.exit_code(), 1);
  const std::string s = r.summary();
  EXPECT_THAT(s, HasSubstr("FAIL  reference[bf16] vs impl[bf16]: loss_curve"));
  EXPECT_THAT(s, HasSubstr("loss: loss.tail_mean_rel_diff = 0.05 (max 0.02"));
  EXPECT_THAT(s, HasSubstr("noise-relative): mean of the last 20 steps"));
  EXPECT_THAT(s, HasSubstr("noise (reference[bf16] vs reference_seed2[bf16]) 0.01"));
  EXPECT_THAT(s, HasSubstr("loss: loss.final_val_rel_diff = 0.05 (max 0.0265, noise-relative)"));
  EXPECT_THAT(s, HasSubstr("loss.window.0: loss.window_mean_abs_rel_diff = 0.05"));
  EXPECT_THAT(s, HasSubstr("loss.window.4: loss.window_mean_abs_rel_diff = 0.05"));
  // The same 5% with a noise run 3x noisier is within 2 x noise + floor: the verdict follows the measured noise.
  const LossCurve loud_noise = scaled(ref, 1.03, 0.003, 2.575);
  Report loud;
  compare_loss(loud, ref, "reference", "bf16", impl, "impl", "bf16", {th, "small"},
               {&loud_noise, "reference_seed2[bf16]"});
  EXPECT_EQ(loud.exit_code(), 0) << loud.summary();
}

TEST(ParityCompare, NoiseRunOverOtherStepsFallsBackToFixedThresholds) {
  const Thresholds th = Thresholds::builtin();
  const LossCurve ref = make_curve(200, 1.0, 2.5);
  LossCurve short_noise = scaled(make_curve(100, 1.0), 1.01, 0.0, 2.53);
  Report r;
  const Comparison& c = compare_loss(r, ref, "reference", "bf16", scaled(ref, 1.015, 0.0, 2.53), "impl", "bf16",
                                     {th, "small"}, {&short_noise, "reference_seed2[bf16]"});
  EXPECT_EQ(c.status(), "fail") << "fixed 1% bf16 threshold";
  EXPECT_THAT(c.notes, ::testing::Contains(HasSubstr("judged with the fixed thresholds instead")));
  EXPECT_EQ(c.thresholds.at("loss.tail_mean_rel_diff").value, 0.01);
}

TEST(ParityCompare, UnrelatedCurvesAreAnError) {
  const Thresholds th = Thresholds::builtin();
  LossCurve later = make_curve(10, 1.0);
  for (auto& p : later.points) p.step += 1000;
  Report r;
  compare_loss(r, make_curve(10, 1.0), "reference", "bf16", later, "impl", "bf16", {th, "tiny"});
  EXPECT_THAT(r.comparisons[0].error, HasSubstr("share no step"));
  EXPECT_EQ(r.exit_code(), 2);
}

}  // namespace
}  // namespace tg::parity
