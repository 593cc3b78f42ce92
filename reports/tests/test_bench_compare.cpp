// `bench compare`: ratios, noise estimates and thresholds on fixture pairs. A planted 20% regression is
// flagged; differences at the noise level are not; a benchmark that starts failing is flagged.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "common/file_io.h"
#include "reports/bench_compare.h"

namespace tg::reports {
namespace {

namespace fs = std::filesystem;
const fs::path kCompare = fs::path(TEGEMMA_SOURCE_DIR) / "reports/tests/fixtures/compare";

BenchFile load(const std::string& name) {
  const fs::path p = kCompare / name;
  return parse_bench(parse_json_text(read_file(p), p), p);
}

const CompareRow& row(const CompareResult& r, const std::string& name) {
  for (const auto& x : r.rows)
    if (x.name == name) return x;
  ADD_FAILURE() << "no row " << name;
  static CompareRow none;
  return none;
}

TEST(BenchSet, MediansAndNoiseComeFromRepetitionsAndAggregates) {
  const BenchSet s({load("old.json")});
  const BenchStat* a = s.find("bm/a/manual_time");
  ASSERT_NE(a, nullptr);
  EXPECT_DOUBLE_EQ(a->time_ns, 100e3);  // median of 100, 101, 99 us
  EXPECT_EQ(a->samples_ns.size(), 3u);  // the aggregates are not samples
  ASSERT_TRUE(a->noise.has_value());
  EXPECT_NEAR(*a->noise, 0.01, 1e-9);   // the cv aggregate: stddev 1 / mean 100
  EXPECT_EQ(a->noise_source, "cv aggregate");
  EXPECT_NEAR(a->counters.at("items_per_second"), 1e9, 1e9 * 0.011);
  EXPECT_EQ(s.stats().size(), 5u);
}

TEST(BenchCompare, PlantedTwentyPercentRegressionIsFlaggedNoiseIsNot) {
  const CompareResult r = compare_bench(BenchSet({load("old.json")}), BenchSet({load("new_regressed.json")}), {});
  const CompareRow& a = row(r, "bm/a/manual_time");
  EXPECT_NEAR(a.time_ratio, 1.2, 1e-12);
  EXPECT_EQ(a.counter, "items_per_second");
  EXPECT_NEAR(a.counter_ratio, 1 / 1.2, 1e-9);
  ASSERT_TRUE(a.noise.has_value());
  EXPECT_NEAR(*a.noise, std::sqrt(2.0) * 0.01, 1e-9);          // noise of a ratio of two 1% measurements
  EXPECT_NEAR(a.threshold, 3 * std::sqrt(2.0) * 0.01, 1e-9);   // 4.2%: above the 2% floor
  EXPECT_EQ(a.change, Change::kRegression);

  const CompareRow& b = row(r, "bm/b/manual_time");
  EXPECT_NEAR(b.time_ratio, 1.01, 1e-12);
  EXPECT_EQ(b.change, Change::kSame);          // +1% with 1% noise
  const CompareRow& c = row(r, "bm/c/manual_time");
  EXPECT_NEAR(c.time_ratio, 0.97, 1e-12);
  EXPECT_EQ(c.change, Change::kSame);          // -3% is inside 3 x 1.4%
  EXPECT_EQ(row(r, "bm/err_new/manual_time").change, Change::kNewError);
  EXPECT_EQ(row(r, "bm/err_new/manual_time").error, "fixture: planted error");
  EXPECT_EQ(row(r, "bm/removed/manual_time").change, Change::kRemoved);
  EXPECT_EQ(row(r, "bm/added/manual_time").change, Change::kAdded);
  EXPECT_EQ(r.regressions(), 2);
  EXPECT_EQ(r.exit_code(), 1);

  const std::string t = r.table();
  EXPECT_NE(t.find("bm/a/manual_time"), std::string::npos);
  EXPECT_NE(t.find("REGRESSION"), std::string::npos);
  EXPECT_NE(t.find("NEW ERROR: fixture: planted error"), std::string::npos);
  EXPECT_NE(t.find(" 1.2 "), std::string::npos) << t;
  EXPECT_NE(t.find("RESULT: regression"), std::string::npos);

  const auto j = r.to_json();
  EXPECT_EQ(j["schema"], "tegemma.bench_compare");
  EXPECT_EQ(j["exit_code"], 1);
  EXPECT_EQ(j["regressions"], 2);
  EXPECT_EQ(j["rows"][0]["name"], "bm/a/manual_time");
  EXPECT_EQ(j["rows"][0]["change"], "REGRESSION");
  EXPECT_EQ(j["rows"][0]["flagged"], true);
}

TEST(BenchCompare, NoiseLevelDifferencesPassWithExitCodeZero) {
  const CompareResult r = compare_bench(BenchSet({load("old.json")}), BenchSet({load("new_ok.json")}), {});
  EXPECT_EQ(r.regressions(), 0);
  EXPECT_EQ(r.exit_code(), 0);
  for (const auto& x : r.rows) EXPECT_EQ(x.change, Change::kSame) << x.name << " ratio " << x.time_ratio;
  EXPECT_NE(r.table().find("RESULT: no regression"), std::string::npos);
}

TEST(BenchCompare, WithoutNoiseDataTheDefaultFivePercentApplies) {
  const CompareResult r = compare_bench(BenchSet({load("single_old.json")}), BenchSet({load("single_new.json")}), {});
  EXPECT_FALSE(row(r, "bm/x/manual_time").noise.has_value());
  EXPECT_DOUBLE_EQ(row(r, "bm/x/manual_time").threshold, 0.05);
  EXPECT_EQ(row(r, "bm/x/manual_time").change, Change::kSame);        // +4%
  EXPECT_EQ(row(r, "bm/y/manual_time").change, Change::kRegression);  // +6%
  EXPECT_EQ(row(r, "bm/y/manual_time").counter, "tokens_per_second");
  EXPECT_NEAR(row(r, "bm/y/manual_time").counter_ratio, 1 / 1.06, 1e-9);
  EXPECT_EQ(r.exit_code(), 1);

  CompareOptions loose;
  loose.threshold = 0.10;
  EXPECT_EQ(compare_bench(BenchSet({load("single_old.json")}), BenchSet({load("single_new.json")}), loose).exit_code(), 0);
}

TEST(BenchCompare, RepeatedRunsSetTheNoise) {
  // bm/x is steady across the three runs (cv 0.5%): its +4% is now beyond 3 x the noise; bm/y varies by 10%
  // between runs: its +6% is noise.
  CompareOptions opts;
  opts.run_noise = noise_from_runs({load("noise_1.json"), load("noise_2.json"), load("noise_3.json")});
  ASSERT_EQ(opts.run_noise.size(), 2u);
  EXPECT_NEAR(opts.run_noise.at("bm/y/manual_time"), 0.10, 1e-9);
  const CompareResult r = compare_bench(BenchSet({load("single_old.json")}), BenchSet({load("single_new.json")}), opts);
  EXPECT_EQ(row(r, "bm/x/manual_time").change, Change::kRegression);
  EXPECT_EQ(row(r, "bm/x/manual_time").noise_source, "noise runs");
  EXPECT_EQ(row(r, "bm/y/manual_time").change, Change::kSame);
  EXPECT_NEAR(row(r, "bm/y/manual_time").threshold, 3 * std::sqrt(2.0) * 0.10, 1e-9);
}

TEST(BenchCompare, FilesWithTheSameBenchmarksAreRepeatedRuns) {
  const BenchSet s({load("noise_1.json"), load("noise_2.json"), load("noise_3.json")});
  const BenchStat* y = s.find("bm/y/manual_time");
  ASSERT_NE(y, nullptr);
  EXPECT_EQ(y->sources.size(), 3u);
  EXPECT_DOUBLE_EQ(y->time_ns, 100e3);
  EXPECT_EQ(y->noise_source, "repeated runs");
  EXPECT_NEAR(*y->noise, 0.10, 1e-9);
}

TEST(BenchCompare, ErrorsInBothRunsAreReportedNotFlagged) {
  const BenchSet errs({load("new_regressed.json")});
  const CompareResult r = compare_bench(errs, errs, {});
  EXPECT_EQ(row(r, "bm/err_new/manual_time").change, Change::kStillError);
  EXPECT_EQ(row(r, "bm/a/manual_time").change, Change::kSame);
  EXPECT_DOUBLE_EQ(row(r, "bm/a/manual_time").time_ratio, 1.0);
  EXPECT_EQ(r.exit_code(), 0);
  const CompareResult fixed = compare_bench(errs, BenchSet({load("old.json")}), {});
  EXPECT_EQ(row(fixed, "bm/err_new/manual_time").change, Change::kFixed);
}

}  // namespace
}  // namespace tg::reports
