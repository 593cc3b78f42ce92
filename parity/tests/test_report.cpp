// Verdicts, the exit-code rule, the JSON schema round trip and the terminal summary.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>
#include <string>

#include "common/check.h"
#include "common/tests/test_error.h"
#include "common/file_io.h"
#include "common/gemma_config.h"
#include "parity/prompts.h"
#include "parity/rejudge.h"
#include "parity/report.h"
#include "parity/thresholds.h"

namespace tg::parity {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using tg::testing::error_of;

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

Comparison make_comparison(const std::string& kind, const std::string& precision = "bf16") {
  Comparison c;
  c.kind = kind;
  c.reference = "reference[bf16]";
  c.test = "impl[" + precision + "]";
  c.reference_recipe = "bf16";
  c.test_recipe = precision;
  c.precision = precision;
  c.size_class = "small";  // the general (TE-derived) thresholds; the tiny class's are calibrated on the ci suite
  return c;
}

const Subject kLayer1{0, "len01", 1, "layer.1"};

TEST(ParityReport, JudgeAppliesBoundsAndRecordsThresholds) {
  const Thresholds th = Thresholds::builtin();
  Comparison c = make_comparison("forward");
  EXPECT_EQ(c.judge(th, kLayer1, "tap.cosine", 0.9995).verdict, Verdict::kPass);
  EXPECT_EQ(c.judge(th, kLayer1, "tap.cosine", 0.99).verdict, Verdict::kFail);
  EXPECT_EQ(c.judge(th, kLayer1, "tap.rmse_over_range", 0.02).verdict, Verdict::kFail);
  EXPECT_EQ(c.judge(th, kLayer1, "tap.cosine", std::numeric_limits<double>::quiet_NaN()).verdict, Verdict::kFail);
  EXPECT_EQ(c.judge(th, kLayer1, "tap.max_abs_err", 123.0).verdict, Verdict::kInfo);  // no default threshold
  EXPECT_EQ(c.judge(th, kLayer1, "not.a.metric", 1.0).verdict, Verdict::kInfo);
  EXPECT_EQ(c.judge(th, kLayer1, "tap.rtol", 5.0).verdict, Verdict::kInfo);  // a parameter is not a bound
  EXPECT_EQ(c.param(th, "tap.atol"), 0.1);
  EXPECT_TRUE(c.thresholds.count("tap.cosine"));
  EXPECT_TRUE(c.thresholds.count("tap.atol"));
  EXPECT_FALSE(c.thresholds.count("tap.max_abs_err"));
  EXPECT_EQ(c.count(Verdict::kFail), 3);
  EXPECT_EQ(c.status(), "fail");
  EXPECT_THAT(error_of([&] { c.param(th, "tap.max_abs_err"); }), HasSubstr("no threshold for tap.max_abs_err"));
  // The same value judged under FP8 thresholds passes.
  Comparison f = make_comparison("forward", "delayed");
  EXPECT_EQ(f.judge(th, kLayer1, "tap.cosine", 0.995).verdict, Verdict::kPass);
  EXPECT_EQ(f.thresholds.at("tap.cosine").precision_key, "fp8");
}

TEST(ParityReport, ExitCodeRule) {
  const Thresholds th = Thresholds::builtin();
  Report r;
  EXPECT_EQ(r.exit_code(), 2);  // nothing compared is not a pass
  EXPECT_EQ(r.status(), "error");

  r.comparisons.push_back(make_comparison("forward"));
  r.comparisons.back().judge(th, kLayer1, "tap.cosine", 1.0);
  EXPECT_EQ(r.exit_code(), 0);

  Comparison tie = make_comparison("generation");
  tie.add({{0, "len01", -1, "generation"}, "generation.first_divergence_step", 3, Verdict::kNearTie, "", ""});
  r.comparisons.push_back(tie);
  EXPECT_EQ(r.exit_code(), 0);  // near-ties never fail

  Comparison err = make_comparison("forward", "block");
  err.error = "impl: block recipe not implemented";
  r.comparisons.push_back(err);
  EXPECT_EQ(r.exit_code(), 2);
  EXPECT_EQ(r.status(), "error");

  Comparison bad = make_comparison("forward", "current");
  bad.judge(th, kLayer1, "tap.cosine", 0.5);
  r.comparisons.push_back(bad);
  EXPECT_EQ(r.exit_code(), 1);  // a violation outranks "could not run"
  EXPECT_EQ(r.status(), "fail");

  Report only_errors;
  only_errors.comparisons.push_back(make_comparison("forward"));
  only_errors.comparisons.back().judge(th, kLayer1, "tap.cosine", 1.0);
  only_errors.errors.push_back("--device cuda: no GPU");
  EXPECT_EQ(only_errors.exit_code(), 2);
}

Report sample_report() {
  const Thresholds th = Thresholds::builtin();
  Report r = Report::create();
  r.provenance["libtorch"] = "2.11.0";
  r.set_model(GemmaConfig::preset("tiny"), "preset:tiny");
  r.set_thresholds(th);
  r.set_prompts(PromptSet::builtin().runnable());
  r.seeds["weights"] = 1234;
  r.seeds["data"] = 18446744073709551615ull;
  r.run["suite"] = "ci";
  r.engines.push_back({"reference[bf16]", "reference", "bf16", "bf16", {{"libtorch", "2.11.0"}}});
  Comparison c = make_comparison("forward");
  c.judge(th, kLayer1, "tap.cosine", 0.5, "worst at position 3");
  c.judge(th, kLayer1, "tap.max_abs_err", std::numeric_limits<double>::infinity());
  c.judge(th, {2, "len03", -1, "logits"}, "logits.kl_max", std::numeric_limits<double>::quiet_NaN());
  c.add({{2, "len03", -1, "logits"}, "logits.top1_near_tie_disagreements", 1, Verdict::kNearTie,
         "logits.near_tie_margin", "position 1"});
  c.series["loss.step_diff"] = {{1, 0.5}, {2, std::numeric_limits<double>::quiet_NaN()}};
  c.notes.push_back("a note");
  r.comparisons.push_back(c);
  Comparison e = make_comparison("generation", "delayed:margin=1");
  e.precision = "delayed";
  e.error = "boom";
  r.comparisons.push_back(e);
  r.errors.push_back("outer error");
  return r;
}

TEST(ParityReport, JsonRoundTrip) {
  const Report r = sample_report();
  const nlohmann::json j = r.to_json();
  EXPECT_EQ(j["schema"], "tegemma.parity");
  EXPECT_EQ(j["schema_version"], 1);
  EXPECT_EQ(j["status"], "fail");
  EXPECT_EQ(j["exit_code"], 1);
  EXPECT_EQ(j["model"]["size_class"], "tiny");
  EXPECT_EQ(j["model"]["config"]["hidden_size"], 64);
  EXPECT_TRUE(j["provenance"].contains("commit"));
  EXPECT_TRUE(j["provenance"].contains("build_type"));
  EXPECT_EQ(j["provenance"]["libtorch"], "2.11.0");
  EXPECT_EQ(j["thresholds"]["sources"][0]["source"], "builtin:parity/thresholds.json");
  EXPECT_EQ(j["totals"]["violations"], 2);
  EXPECT_EQ(j["totals"]["near_ties"], 1);
  const auto& checks = j["comparisons"][0]["checks"];
  EXPECT_EQ(checks[1]["value"], "inf");
  EXPECT_EQ(checks[2]["value"], "nan");
  EXPECT_EQ(checks[2]["verdict"], "fail");
  EXPECT_EQ(j["comparisons"][0]["thresholds"]["tap.cosine"]["value"], 0.999);
  EXPECT_THAT(j["comparisons"][0]["thresholds"]["tap.cosine"]["reason"].get<std::string>(), HasSubstr("TE"));
  EXPECT_EQ(j["comparisons"][1]["status"], "error");
  EXPECT_EQ(j["comparisons"][1]["error"], "boom");

  // Through text and back: identical JSON.
  const Report back = Report::from_json(nlohmann::json::parse(j.dump()), "mem");
  EXPECT_EQ(back.to_json(), j);
  EXPECT_TRUE(std::isnan(back.comparisons[0].checks[2].value));
  EXPECT_EQ(back.seeds.at("data"), 18446744073709551615ull);

  // Atomic write + load.
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "tegemma_parity_report_test";
  std::filesystem::create_directories(dir);
  r.write(dir / "parity.json");
  EXPECT_EQ(Report::load(dir / "parity.json").to_json(), j);
  tg::remove_tree(dir);
}

TEST(ParityReport, FromJsonRejectsOtherSchemas) {
  nlohmann::json j = sample_report().to_json();
  nlohmann::json other = j;
  other["schema"] = "google.benchmark";
  EXPECT_THAT(error_of([&] { Report::from_json(other, "x.json"); }), HasSubstr("x.json: not a parity report"));
  other = j;
  other["schema_version"] = 99;
  EXPECT_THAT(error_of([&] { Report::from_json(other, "x.json"); }),
              HasSubstr("parity report schema_version 99 is not supported"));
  other = j;
  other["comparisons"][0]["checks"][0]["verdict"] = "maybe";
  EXPECT_THAT(error_of([&] { Report::from_json(other, "x.json"); }), HasSubstr("unknown verdict \"maybe\""));
  other = j;
  other["status"] = "pass";  // a tampered verdict
  EXPECT_THAT(error_of([&] { Report::from_json(other, "x.json"); }), HasSubstr("does not match"));
  other = j;
  other.erase("engines");
  EXPECT_THAT(error_of([&] { Report::from_json(other, "x.json"); }), HasSubstr("missing \"engines\""));
  EXPECT_THAT(error_of([&] { Report::load("/nonexistent/parity.json"); }), HasSubstr("/nonexistent/parity.json"));
}

TEST(ParityReport, SummaryAllPassIsOneLinePerComparison) {
  const Thresholds th = Thresholds::builtin();
  Report r;
  for (const char* kind : {"forward", "generation", "loss_curve"}) {
    r.comparisons.push_back(make_comparison(kind));
    for (int l = 0; l < 5; ++l) r.comparisons.back().judge(th, {0, "p", l, ""}, "tap.cosine", 1.0);
  }
  const std::string s = r.summary();
  EXPECT_EQ(count_lines(s), 4) << s;  // 3 comparisons + the verdict line
  EXPECT_THAT(s, HasSubstr("PASS  reference[bf16] vs impl[bf16]: forward (bf16, small): 5 checks"));
  EXPECT_THAT(s, HasSubstr("parity: PASS (exit 0): 3 comparisons"));
}

TEST(ParityReport, SummaryNamesEachViolationEarliestLayerFirst) {
  const Thresholds th = Thresholds::builtin();
  Report r;
  r.comparisons.push_back(make_comparison("forward"));
  Comparison& c = r.comparisons.back();
  c.judge(th, {0, "len01", -1, "logits"}, "logits.kl_max", 0.5, "at position 0");
  c.judge(th, {1, "len02", 2, "layer.2"}, "tap.cosine", 0.99);
  c.judge(th, {3, "len05", 1, "layer.1"}, "tap.rmse_over_range", 0.25, "rmse 1, reference range 4");
  c.judge(th, {3, "len05", 1, "layer.1"}, "tap.cosine", 0.95);
  c.judge(th, {4, "len08", 1, "layer.1"}, "tap.cosine", 0.9);
  c.judge(th, {5, "len13", 1, "layer.1"}, "tap.cosine", 1.0);
  c.judge(th, {3, "len05", 0, "layer.0"}, "tap.cosine", 1.0);
  const std::string s = r.summary();
  EXPECT_THAT(s, HasSubstr("FAIL  reference[bf16] vs impl[bf16]: forward (bf16, small): 5 of 7 checks violated; "
                           "earliest failing layer 1 (tap.cosine, tap.rmse_over_range)"));
  // Grouped per (layer, metric): the worst value, its threshold, how many prompts, where.
  EXPECT_THAT(s, HasSubstr("        layer 1: tap.cosine = 0.9 (min 0.999, bf16/any) in 2 of 3 prompts, worst at "
                           "prompt 4 (len08)\n"));
  EXPECT_THAT(s, HasSubstr("        layer 1: tap.rmse_over_range = 0.25 (max 0.016, bf16/any) at prompt 3 (len05): "
                           "rmse 1, reference range 4\n"));
  EXPECT_THAT(s, HasSubstr("        layer 2: tap.cosine = 0.99 (min 0.999, bf16/any) at prompt 1 (len02)\n"));
  EXPECT_THAT(s, HasSubstr("        logits: logits.kl_max = 0.5 (max 0.01, bf16/any) at prompt 0 (len01): at position 0"));
  EXPECT_LT(s.find("layer 1:"), s.find("layer 2:"));
  EXPECT_LT(s.find("layer 2:"), s.find("logits:"));
  EXPECT_THAT(s, Not(HasSubstr("layer 0:")));  // passing checks are not listed
  EXPECT_THAT(s, HasSubstr("parity: FAIL (exit 1): 1 comparison, 1 violated thresholds"));
  EXPECT_EQ(count_lines(s), 6) << s;
  SummaryOptions o;
  o.max_lines_per_comparison = 1;
  EXPECT_THAT(r.summary(o), HasSubstr("... and 3 more (layer, metric) groups with violations (see the JSON)"));
  // A NaN is the worst value of its group.
  c.judge(th, {6, "len16", 1, "layer.1"}, "tap.cosine", std::numeric_limits<double>::quiet_NaN());
  EXPECT_THAT(r.summary(), HasSubstr("layer 1: tap.cosine = nan (min 0.999, bf16/any) in 3 of 4 prompts, worst at "
                                     "prompt 6 (len16)"));
}

TEST(ParityReport, SummaryShowsErrors) {
  Report r;
  EXPECT_THAT(r.summary(), HasSubstr("parity: ERROR (exit 2): 0 comparisons (nothing was compared)"));
  r.comparisons.push_back(make_comparison("forward", "block"));
  r.comparisons.back().error = "impl: out of memory";
  const std::string s = r.summary();
  EXPECT_THAT(s, HasSubstr("ERROR reference[bf16] vs impl[block]: forward (block, small): could not run: impl: out of memory"));
  EXPECT_THAT(s, HasSubstr("parity: ERROR (exit 2): 1 comparison, 1 could not run"));
}


// --rejudge: recorded values judged again by another threshold set (parity/rejudge.h).
TEST(ParityRejudge, BoundsAreJudgedAgainParametersAndComputedLimitsAreNot) {
  const Thresholds th = Thresholds::builtin();
  Report r = Report::create();
  r.set_thresholds(th);
  Comparison c = make_comparison("forward");
  c.judge(th, kLayer1, "tap.cosine", 0.99);          // fail under the built-in 0.999
  c.judge(th, kLayer1, "tap.rmse_over_range", 0.001);  // pass
  c.param(th, "tap.atol");
  Check loss;                                          // a noise-relative verdict: its own computed limit
  loss.metric = "loss.tail_mean_rel_diff";
  loss.value = 0.5;
  loss.limit = 0.1;
  loss.verdict = Verdict::kFail;
  c.add(loss);
  r.comparisons.push_back(c);
  ASSERT_EQ(r.exit_code(), 1);

  const auto looser = [&](double cosine, double atol) {
    Thresholds t = th;
    t.override_with(Thresholds::parse(
        R"({"schema_version": 1, "thresholds_version": 99, "thresholds": {
             "tap.cosine": {"bf16": {"small": {"value": )" + std::to_string(cosine) + R"(, "reason": "test"}}},
             "tap.atol": {"bf16": {"small": {"value": )" + std::to_string(atol) + R"(, "reason": "test"}}}}})",
        "test-override"));
    return t;
  };
  const Report again = rejudge(r, looser(0.98, 0.1));
  const Comparison& a = again.comparisons[0];
  EXPECT_EQ(a.checks[0].verdict, Verdict::kPass);  // 0.99 >= 0.98 now
  EXPECT_EQ(a.checks[1].verdict, Verdict::kPass);
  EXPECT_EQ(a.checks[2].verdict, Verdict::kFail);  // the computed limit is kept
  EXPECT_EQ(a.thresholds.at("tap.cosine").value, 0.98);
  EXPECT_EQ(again.run["rejudged"]["changed_checks"], 1);
  ASSERT_EQ(again.thresholds["sources"].size(), 2u);  // the built-in set, then the override
  EXPECT_EQ(again.thresholds["sources"][1]["thresholds_version"], 99);
  EXPECT_EQ(again.run["rejudged"]["from"]["thresholds_version"], th.thresholds_version());
  // Stricter: the pass turns into a fail.
  EXPECT_EQ(rejudge(r, looser(0.9999, 0.1)).comparisons[0].checks[0].verdict, Verdict::kFail);
  // A parameter changed: the measured values depend on it, so it is refused.
  EXPECT_THAT(error_of([&] { rejudge(r, looser(0.98, 0.5)); }), HasSubstr("parameter tap.atol"));
  // The re-judged report survives its own schema round trip.
  const Report back = Report::from_json(again.to_json(), "rejudged");
  EXPECT_EQ(back.status(), again.status());
}

}  // namespace
}  // namespace tg::parity
