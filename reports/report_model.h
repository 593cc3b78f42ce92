// Internal to reports/: what the HTML and the Markdown renderers both show, computed once from the inputs so
// the two outputs never disagree. Nothing here is invented: every figure comes from an input file, and a
// section whose inputs are absent has `present == false` plus the note that says what is missing.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "reports/bench_compare.h"
#include "reports/inputs.h"
#include "reports/report.h"
#include "reports/svg.h"

namespace tg::reports::model {

// ---- parity verdicts -------------------------------------------------------------------------------

struct RecipeVerdict {
  std::string precision;  // bf16 | delayed | current | block (the precision whose thresholds judged it)
  std::string status;     // pass | fail | error
  int comparisons = 0, failed = 0, errors = 0;
  int64_t violations = 0, near_ties = 0;
  std::string first_failure;  // "impl[delayed] forward: layer 3 tap.cosine 0.97 (min 0.99)"
};

// ---- loss curves -----------------------------------------------------------------------------------

struct Curve {
  std::string label, engine, recipe, source;
  std::vector<std::pair<double, double>> loss;      // (step, loss)
  std::vector<std::pair<double, double>> val_loss;  // (step, val_loss)
  std::optional<double> tokens_per_s;               // median after the first 10% of steps (warm-up)
  int64_t nonfinite = 0;
  double final_loss = 0;  // mean of the last 10% of finite training losses (at least one)
  std::optional<double> final_val;
  bool is_reference = false;
};

// One curve's difference to the reference curve, at the steps both have.
struct LossDiff {
  std::string label;
  std::vector<std::pair<double, double>> raw;       // (step, loss - reference loss), per training step
  std::vector<std::pair<double, double>> smoothed;  // centered moving mean of `raw` over LossSection::smooth_window
  std::vector<std::pair<double, double>> val;       // (step, val_loss - reference val_loss), unsmoothed
};

struct LossSection {
  std::vector<Curve> curves;
  int reference = -1;  // index into curves
  // Per-step training-loss differences carry the batch-to-batch noise of both runs (about +-0.1 nats on the
  // small config), which hides differences of a few 0.1%: the chart plots their moving mean over this many steps
  // (odd, about 5% of the longest difference series; 1 = no smoothing).
  int smooth_window = 1;
  int diff_steps = 0;              // the most common steps of any difference series
  std::vector<LossDiff> diffs;     // one per non-reference curve, in curve order
  std::vector<const ParityComparison*> comparisons;  // loss_curve / loss_health comparisons (their checks)
};

// ---- parity tables ---------------------------------------------------------------------------------

struct HeatCell {
  bool present = false;
  double value = 0;
  std::string verdict;    // the worst verdict over prompts
  double severity = -1;   // value relative to its threshold, 0 (best) .. 1 (at the threshold) .. >1; -1: none
  std::string limit;      // the threshold that judged this cell (its comparison's): ">= 0.99", "" = none
  std::string tooltip;
};

struct HeatTable {
  std::string title;  // the comparison's title
  std::string status;
  std::vector<std::string> metrics;   // columns
  std::vector<std::string> rows;      // "layer 0", ..., "logits"
  std::vector<std::vector<HeatCell>> cells;
  // metric -> the threshold of every cell of that column (">= 0.99", "<= 0.1", "" = none), when they all share
  // one. A column whose rows are judged by different thresholds (the final-logits table: one row per comparison,
  // each with its precision's and size's limits) is in limit_per_row instead and has no entry here: each of its
  // cells shows its own limit.
  std::map<std::string, std::string> threshold_text;
  std::set<std::string> limit_per_row;
};

struct GenerationRow {
  std::string title, status;
  int prompts = 0, identical = 0, near_ties = 0, hard = 0;
  double mean_agreement = 0, min_agreement = 1;
  const ParityComparison* comparison = nullptr;
};

// ---- benchmarks ------------------------------------------------------------------------------------

struct BenchItem {
  const BenchStat* stat = nullptr;
  std::string group, series;  // chart placement
  std::string unit;           // "TFLOP/s" | "TB/s" | "tokens/s" | "" (time only)
  double value = 0;           // in `unit`
  std::optional<double> frac; // fraction of the roofline for its unit
  std::string frac_of;        // "BF16 GEMM ceiling", "HBM 4.1 TB/s", ...
  std::optional<double> speedup_vs_reference;
  std::string text;           // value label
};

struct ChartData {
  std::string id, title, value_label, unit;
  bool per_group_scale = false;  // bars relative to each group's best (BarChart::per_group_scale)
  std::vector<std::pair<std::string, std::vector<const BenchItem*>>> groups;
  std::vector<RefLine> ref_lines;
};

struct BenchSection {
  std::string id, title, blurb;
  std::vector<BenchItem> items;  // every benchmark of the section, in input order
  std::vector<ChartData> charts;
};

struct GemmTable {
  std::vector<std::string> variants;  // columns, first appearance
  struct Row {
    std::string group;                    // the chart's group label: "8192x2560x2048 (gemma-2b QKV)"
    std::string shape, annotation, unit;  // "8192x2560x2048", "gemma-2b QKV", "TFLOP/s"
    std::map<std::string, double> value;  // variant -> value in unit
    std::set<std::string> errors;         // variants whose benchmark reported an error
    std::optional<double> ours_vs_anchor;  // fp8_tensor_fast / torch_scaled_mm_fast
  };
  std::vector<Row> rows;
};

struct WorkloadTable {
  std::vector<std::string> engines;  // columns
  struct Row {
    std::string workload;
    std::map<std::string, const BenchItem*> cell;
  };
  std::vector<Row> rows;
};

// ---- headline: the end-to-end workloads the project is judged by, one row each -------------------------------

// One engine's figure for one headline workload: the median over the input files that hold the benchmark, each
// file giving its `_median` aggregate when it wrote one, else the median of its repetitions, else its `_mean`.
struct HeadlineCell {
  bool present = false;            // some benchmark matched (it may have reported an error)
  std::optional<double> value;     // in the row's unit; empty when it errored or lacks the counter
  std::string bench;               // the run name it came from
  std::string counter;             // what `value` is: "tokens_per_second", "decode_tokens_per_second", "real_time"
  std::vector<std::string> files;  // file names
  std::string error;               // the benchmark's error message, when every sample errored
};

struct HeadlineRow {
  std::string workload;  // "decode batch 1 gemma-2b P128+N256"
  std::string unit;      // "tokens/s" | "decode tokens/s" | "s" | "ms"
  bool higher_is_better = true;
  HeadlineCell impl_fp8, impl_bf16, reference, hf;
  std::string fp8_recipe;                // the impl FP8 variant used: "delayed" or "delayed+fp8head"
  std::optional<double> vs_reference;    // impl FP8 over the reference, inverted for time rows: > 1 = impl faster
  std::optional<double> roofline_frac;   // impl FP8's fraction of the ceiling below
  std::string roofline_counter;          // hbm_roofline_frac | gemm_roofline_frac | fp8_ceiling_frac (the one expected
                                         // when impl FP8 reports none)
  std::string roofline_of;               // "the weight-bandwidth (HBM) roofline, 4.1 TB/s", "the FP8 GEMM ceiling, ..."
  std::optional<double> target;          // in `unit`
  std::string target_text;               // "1200 tok/s", "<= 2.5 s"
  std::string target_source;             // where the target is set ("issue 7")
  std::optional<double> target_reached;  // impl FP8's fraction of the target (inverted for time rows); >= 1: met
  bool target_met() const { return target_reached && *target_reached >= 1; }
};

struct Headline {
  std::vector<HeadlineRow> rows;  // the fixed workload order; a workload no input measured has no row
  std::vector<std::size_t> gaps;  // rows whose target impl FP8 misses, least of the target reached first
  bool any_fallback_counter = false;  // a decode cell is tokens_per_second (no decode_tokens_per_second)
};

struct MemoryRow {
  std::string where, what, source;  // "gemma-2b 8x2048", "impl_delayed weights_gib", file
  double gib = 0;
};

// ---- provenance ------------------------------------------------------------------------------------

struct ProvenanceRow {
  std::string key;
  std::vector<std::pair<std::string, std::vector<std::string>>> values;  // value -> files that say so
};

// ---- the whole report ------------------------------------------------------------------------------

// The commits the inputs were measured at, for the header line: one entry per commit, with what its files are.
struct InputCommit {
  std::string commit;              // as the files write it (12 hex digits)
  std::vector<std::string> kinds;  // "benchmarks", "parity", "loss curves", "GPU tests", "CI summary"
  std::vector<std::string> files;  // file names
};

// Where and when the inputs of one side (the current run or the baseline) were measured.
struct RunProvenance {
  std::vector<InputCommit> commits;  // most files first, then first seen
  std::vector<std::string> gpus;     // distinct values, most files first
  std::string first_when, last_when; // the earliest and the latest "when" of any input (ISO 8601 UTC)
};

// "commit `75e96646184e`" for one commit, else "inputs from 3 commits: 75e9664 (benchmarks), c0fd767 (parity), ...";
// `code` wraps each hash (HTML: <code title=...>, Markdown: backquotes) and gets the hash and its files.
std::string describe_commits(const RunProvenance& p,
                             const std::function<std::string(const std::string& text, const InputCommit& c)>& code);
// "run 2026-11-30T08:05:59Z" for one time, "runs 2026-11-30 08:05-11:01 UTC" for a range of one day, else
// "runs 2026-11-29 23:10 - 2026-11-30 01:00 UTC"; "" when no input carries a time.
std::string describe_when(const RunProvenance& p);

struct Model {
  std::string title, generated_at;
  RunProvenance run;               // the header line: every commit and GPU of the inputs, and their time range
  std::vector<std::string> inputs, skipped, missing;  // missing: one line per omitted section

  bool has_parity = false;
  std::string parity_status;  // pass | fail | error (all parity files together)
  std::vector<RecipeVerdict> verdicts;
  std::vector<std::string> parity_errors;
  // Which thresholds judged the verdicts, per parity file: "thresholds v4" or, after `tegemma parity --rejudge`,
  // "re-judged with thresholds v4 (the run was judged with v3; 280 check verdicts changed)".
  std::vector<std::string> parity_notes;

  LossSection loss;
  std::vector<HeatTable> heat;          // per forward comparison (per-layer taps)
  HeatTable logits;                      // one row per forward comparison (final logits, worst over prompts)
  std::vector<GenerationRow> generation;

  BenchSet bench;
  Headline headline;                    // right after the verdict
  std::vector<BenchSection> sections;   // workloads, gemm, quantize, elementwise, attention, other
  GemmTable gemm;
  WorkloadTable workloads;
  std::vector<const BenchStat*> bench_errors;
  int bench_files = 0;

  std::vector<MemoryRow> memory;
  std::vector<const GpuTestsFile*> gpu_tests;
  std::vector<ProvenanceRow> provenance;
  std::set<std::string> provenance_files, bench_file_names;  // for "all inputs" in the provenance table
  std::vector<std::string> warnings;                          // e.g. a run whose SM clock dropped

  // Baseline comparison.
  bool has_baseline = false;
  RunProvenance baseline;
  std::optional<CompareResult> bench_changes;
  std::vector<std::pair<RecipeVerdict, std::optional<RecipeVerdict>>> verdict_changes;  // now, then
  std::vector<std::string> tests_newly_failing, tests_fixed;
  std::vector<std::pair<std::string, std::pair<double, double>>> loss_changes;  // label -> (then, now) final loss
};

// The headline's texts, shared by both renderers so they never disagree.
// A cell: "230k" (tokens/s), "3.94" (s), "9.51" (ms); "666 *" for a decode cell that is tokens_per_second (the
// benchmark reports no decode_tokens_per_second); "error"; "-" when no input has the benchmark or its counter.
std::string headline_value(const HeadlineRow& r, const HeadlineCell& c);
// "1200 tok/s: no (56%)", "<= 2.5 s: yes (104%)", "1200 tok/s: not measured"; "-" without a target.
std::string headline_target(const HeadlineRow& r);
// Which ceiling the row's "% of roofline" is against: "gemm_roofline_frac: the FP8 GEMM ceiling (1360 TFLOP/s,
// documented)",
// "hbm_roofline_frac: not reported", "no impl FP8 benchmark".
std::string headline_roofline_note(const HeadlineRow& r);
// The cells that are a median over several input files, grouped by row and files ("decode batch 1 gemma-2b
// P128+N256 (impl FP8, impl BF16): bench_generate.json, bench_generate_b1.json"): the same benchmark in files of
// repeated runs, or of runs at different commits, which a reader should know before quoting the figure.
std::vector<std::string> headline_multi_file_cells(const Headline& h);
// "decode batch 1 gemma-2b P128+N256: 666 decode tokens/s, 56% of the target 1200 tok/s (issue 7)".
std::string headline_gap(const HeadlineRow& r);

// "all inputs", "all 4 benchmark files" or the file names.
std::string describe_files(const Model& m, const std::vector<std::string>& files);

Model analyze(const ResultSet& current, const ResultSet* baseline, const ReportOptions& opts);

std::string render_html(const Model& m);
std::string render_markdown(const Model& m);

}  // namespace tg::reports::model
