// Benchmark statistics and regression checks: `tegemma bench compare OLD.json NEW.json` and the report's
// `--baseline` mode.
//
// Each benchmark (keyed by its run name) is reduced to a median time over every sample available: the
// repetitions of one file (iteration entries), or the median/mean aggregate when only aggregates were
// written, and the samples of every file that holds the same benchmark (repeated runs). Its noise is the
// relative spread of those samples: Google Benchmark's "cv" aggregate when present, else stddev / mean, else
// the standard deviation of the samples over their mean; --noise files (extra repeated runs) add an estimate
// from the spread of their medians.
//
// A change is flagged when the time ratio new/old leaves 1 +- threshold, where
//   threshold = max(floor, k * noise),  noise = sqrt(noise_old^2 + noise_new^2)  (the noise of a ratio),
//   k = 3, floor = --threshold if given, else 2% when noise was measured, else 5% (no noise data at all).
// The 2% floor stands for what within-run repetitions cannot see: clocks and thermals differ between runs.
// A benchmark that ran before and errors now is a regression; one that errors in both is reported, not
// flagged. Exit code: 1 when anything is flagged as a regression, else 0 (2 is bad input, by the caller).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "reports/inputs.h"

namespace tg::reports {

// The counters a benchmark's throughput is read from, most telling first (higher is better for each).
inline constexpr const char* kThroughputCounters[] = {"tokens_per_second", "flops", "bytes_per_second",
                                                      "items_per_second"};

struct BenchStat {
  std::string name;                        // run name
  std::vector<std::string> sources;        // files it came from
  double time_ns = 0;                      // median over the samples
  std::vector<double> samples_ns;          // per-repetition times (or one aggregate median per file)
  std::optional<double> noise;             // relative spread of one measurement (fraction)
  std::string noise_source;                // "cv aggregate" | "stddev aggregate" | "repetitions" | ""
  std::map<std::string, double> counters;  // medians over the samples (iteration) or the mean/median aggregate
  std::string error;                       // set when every sample errored
  std::string label;
};

// Every benchmark of the given files, merged by run name. Order: first appearance.
class BenchSet {
 public:
  BenchSet() = default;
  explicit BenchSet(const std::vector<BenchFile>& files);
  const std::vector<BenchStat>& stats() const { return stats_; }
  const BenchStat* find(const std::string& name) const;
  // Context values of the files that hold `name` (e.g. the ceilings a fraction was computed against).
  const std::map<std::string, std::string>* context_of(const std::string& name) const;

 private:
  std::vector<BenchStat> stats_;
  std::map<std::string, std::size_t> index_;
  std::vector<std::map<std::string, std::string>> contexts_;
  std::map<std::string, std::size_t> context_index_;
};

// Relative spread of each benchmark's median across the given files (repeated runs of one suite);
// only benchmarks found in at least two files get an estimate.
std::map<std::string, double> noise_from_runs(const std::vector<BenchFile>& runs);

struct CompareOptions {
  std::optional<double> threshold;   // fraction (0.05 = 5%); the floor of every threshold when given
  double noise_k = 3.0;              // flagged beyond k standard deviations of the ratio
  double floor_with_noise = 0.02;    // the floor when noise was measured and no threshold was given
  double default_threshold = 0.05;   // used when nothing about the noise is known
  std::map<std::string, double> run_noise;  // from noise_from_runs (--noise files)
};

enum class Change { kSame, kRegression, kImprovement, kNewError, kStillError, kFixed, kRemoved, kAdded };
const char* to_string(Change c);

struct CompareRow {
  std::string name;
  double old_ns = 0, new_ns = 0;
  double time_ratio = 0;                  // new / old (> 1: slower)
  std::string counter;                    // the throughput counter compared ("" when none in both)
  double old_counter = 0, new_counter = 0, counter_ratio = 0;  // new / old (< 1: less throughput)
  std::optional<double> noise;            // relative noise of the ratio
  std::string noise_source;               // where the noise estimate came from
  double threshold = 0;                   // the change that is flagged (fraction)
  Change change = Change::kSame;
  std::string error;                      // the new (or old) error message
  bool flagged() const { return change == Change::kRegression || change == Change::kNewError; }
};

struct CompareResult {
  std::string old_source, new_source;
  CompareOptions options;
  std::vector<CompareRow> rows;  // in the new run's order, then the removed ones
  int64_t count(Change c) const;
  int64_t regressions() const { return count(Change::kRegression) + count(Change::kNewError); }
  int exit_code() const { return regressions() > 0 ? 1 : 0; }
  // A fixed-width table for the terminal plus a one-line verdict.
  std::string table() const;
  nlohmann::json to_json() const;
};

CompareResult compare_bench(const BenchSet& old_set, const BenchSet& new_set, const CompareOptions& opts);

}  // namespace tg::reports
