// The inputs of a report: result directories holding benchmark JSON, parity reports, training logs and GPU
// test summaries. Each file's kind is detected from its name and content (reports/README.md lists the rules);
// every reader is strict: malformed JSON, an unknown schema version or a missing or mistyped field throws
// tg::Error naming the file and the field ("run/bench_gemm.json: benchmarks[3].real_time: expected a number,
// got string"). Files of no known kind are listed in ResultSet::skipped, never silently used.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace tg::reports {

// ---- Google Benchmark JSON -----------------------------------------------------------------------

struct BenchEntry {
  std::string name;            // as written, e.g. "gemm/bf16/bf16xbf16->bf16/8192x2560x2048/manual_time_mean"
  std::string run_name;        // without the aggregate suffix (the key that matches across files)
  std::string run_type;        // "iteration" | "aggregate"
  std::string aggregate_name;  // aggregates: "mean" | "median" | "stddev" | "cv" | ...
  int64_t repetitions = 1, repetition_index = 0, iterations = 0;
  // Converted to nanoseconds from time_unit; for a "cv" aggregate this is the coefficient of variation
  // (a fraction), as Google Benchmark writes it.
  double real_time_ns = 0, cpu_time_ns = 0;
  std::map<std::string, double> counters;  // every other numeric member (bytes_per_second, flops, ...)
  std::string error;                       // error_message of a benchmark that reported an error
  std::string label;
};

struct BenchFile {
  std::filesystem::path path;
  std::map<std::string, std::string> context;  // strings as written; numbers in their JSON text form
  std::vector<BenchEntry> entries;
};

// ---- parity reports (parity/SCHEMA.md, schema_version 1) -----------------------------------------

struct ParityCheck {
  int prompt = -1;
  std::string prompt_id;
  int layer = -1;
  std::string part;  // "layer.<i>", "logits", "generation", "loss", "curve:<label>"
  std::string metric;
  double value = 0;  // "nan"/"inf"/"-inf" decoded
  std::string verdict;  // pass | fail | near_tie | info
  std::string detail;
};

struct ParityThreshold {
  double value = 0;
  std::string bound;  // min | max | param
};

struct ParityComparison {
  std::string kind;  // forward | generation | loss_curve | loss_health
  std::string title, reference, test, reference_recipe, test_recipe, precision, size_class, status, error;
  std::map<std::string, ParityThreshold> thresholds;
  std::vector<ParityCheck> checks;
  std::map<std::string, std::vector<std::pair<double, double>>> series;
  std::vector<std::string> notes;
};

struct ParityFile {
  std::filesystem::path path;
  std::string status;  // pass | fail | error
  int exit_code = 0;
  std::map<std::string, std::string> provenance;
  std::string model_source, size_class;
  std::vector<std::string> prompt_ids;
  std::vector<ParityComparison> comparisons;
  std::vector<std::string> errors;
  int64_t thresholds_version = 0;          // the set that judged the verdicts (0: not recorded)
  int64_t rejudged_from_version = 0;       // `tegemma parity --rejudge`: the set the run was judged with first (0: none)
  int64_t rejudged_changed_checks = 0;
};

// ---- training logs (JSON lines, one object per step) ----------------------------------------------

struct TrainPoint {
  int64_t step = 0;
  std::optional<double> loss, val_loss;  // NaN when the log wrote null or "nan"
  std::optional<double> grad_norm, lr, tokens_per_s;
  std::map<std::string, double> memory_gib;  // numeric fields whose name ends in "_gib"
};

struct TrainLog {
  std::filesystem::path path;
  std::string label;   // "reference[bf16]", "impl[delayed]", or the file stem
  std::string engine;  // reference | impl | hf | "" (unknown)
  std::string recipe;  // bf16 | delayed | current | block | "" (unknown)
  std::vector<TrainPoint> points;  // sorted by step
};

// ---- GPU test summaries (ci/gpu_suite.sh) ---------------------------------------------------------

struct GpuTest {
  std::string name, status;  // status as ctest/gtest wrote it: run (passed) | fail | skipped | notrun | ...
  double time_s = 0;
};

struct GpuTestsFile {
  std::filesystem::path path;
  std::string commit, gpu, labels, excluded;
  std::vector<GpuTest> tests;
  int64_t failed() const;
  int64_t passed() const;
};

// A small JSON summary of a CI job (gpu_tests_summary.json: commit, ctest_rc, timings).
struct CiSummary {
  std::filesystem::path path;
  std::map<std::string, std::string> fields;
};

// ---- the whole input ------------------------------------------------------------------------------

enum class FileKind { kBench, kParity, kTrainLog, kGpuTests, kCiSummary, kUnknown };

struct ResultSet {
  std::vector<std::filesystem::path> inputs;  // what was asked for (directories or files)
  std::vector<BenchFile> bench;
  std::vector<ParityFile> parity;
  std::vector<TrainLog> train;
  std::vector<GpuTestsFile> gpu_tests;
  std::vector<CiSummary> summaries;
  std::vector<std::string> skipped;  // "path: why" for files of no known kind
  bool empty() const {
    return bench.empty() && parity.empty() && train.empty() && gpu_tests.empty() && summaries.empty();
  }
};

// The kind of a parsed .json document (training logs are .jsonl and never reach this).
FileKind detect_kind(const nlohmann::json& j);

// Readers. `source` names the file in error messages.
BenchFile parse_bench(const nlohmann::json& j, const std::filesystem::path& source);
ParityFile parse_parity(const nlohmann::json& j, const std::filesystem::path& source);
GpuTestsFile parse_gpu_tests(const nlohmann::json& j, const std::filesystem::path& source);
CiSummary parse_ci_summary(const nlohmann::json& j, const std::filesystem::path& source);
TrainLog parse_train_log(const std::string& text, const std::filesystem::path& source);

// Parses text as JSON; a syntax error throws tg::Error naming `source` and the byte offset.
nlohmann::json parse_json_text(const std::string& text, const std::filesystem::path& source);
// Reads one file (kind detected) into `out`. Throws on bad input; a file of no known kind goes to skipped.
void load_file(const std::filesystem::path& path, ResultSet& out);
// Reads every *.json / *.jsonl under each directory (recursively, sorted by path) and each file given.
// Throws tg::Error when an input does not exist.
ResultSet load_results(const std::vector<std::filesystem::path>& inputs);

// "impl[delayed]"-style label, engine and recipe from a training log's file stem ("train_impl_delayed",
// "loss-reference-bf16"); empty engine/recipe when the stem does not say.
void label_from_stem(const std::string& stem, TrainLog& log);

}  // namespace tg::reports
