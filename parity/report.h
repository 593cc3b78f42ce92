// Verdicts and output of the parity harness. A Report collects Comparisons (one engine pair and one kind
// of work: forward, generation, loss curves); a Comparison holds Checks (one metric measured on one
// subject: a prompt and layer, a prompt's logits, a generation, a loss curve) and the thresholds that
// judged them. The report is written as versioned JSON (parity/SCHEMA.md) and summarised on the terminal.
//
// Exit code (Report::exit_code): 1 if any check failed (a threshold was violated); otherwise 2 if anything
// could not run (an engine threw, bad input) or nothing was compared; otherwise 0. Near-ties never fail.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/gemma_config.h"
#include "common/provenance.h"
#include "parity/thresholds.h"

namespace tg::parity {

class Engine;
struct PromptSet;

enum class Verdict : uint8_t {
  kPass,     // within its threshold
  kFail,     // threshold violated
  kNearTie,  // a divergence at a near-tie of the reference: reported, not a failure
  kInfo,     // measured, no threshold applies
};
std::string_view to_string(Verdict v);
Verdict verdict_from_string(std::string_view s);  // throws on unknown names

struct Subject {
  int prompt = -1;        // index in the prompt set (-1: not per prompt)
  std::string prompt_id;
  int layer = -1;         // layer index of a tap (-1: not a layer)
  std::string part;       // "layer.<i>", "logits", "generation", "loss", "curve:<label>"
  // "prompt 3 (len08), layer 5" / "prompt 0 (len01), logits" / "loss"
  std::string describe() const;
  nlohmann::json to_json() const;
  static Subject from_json(const nlohmann::json& j);
};

struct Check {
  Subject subject;
  std::string metric;
  double value = 0.0;
  Verdict verdict = Verdict::kInfo;
  std::string threshold_metric;  // the threshold that judged it, when not `metric` itself ("" = metric)
  std::string detail;            // where the worst element is, the values there, ...
  // A bound computed for this check from measured data (the noise-relative loss verdicts: k x the noise
  // run's distance + a floor; compare.h), which `value` must not exceed. NaN: the threshold's value is the
  // bound.
  double limit = std::numeric_limits<double>::quiet_NaN();
  const std::string& judged_by() const { return threshold_metric.empty() ? metric : threshold_metric; }
};

struct Comparison {
  std::string kind;                     // "forward" | "generation" | "loss_curve" | "loss_health"
  std::string reference, test;          // engine labels ("reference[bf16]"); reference empty for loss_health
  std::string reference_recipe, test_recipe;  // full recipe strings
  std::string precision;                // the precision whose thresholds apply (thresholds.h)
  std::string size_class;
  std::map<std::string, Threshold> thresholds;  // every threshold consulted, by metric
  std::vector<Check> checks;
  // Per-step data for plots, e.g. "loss.step_diff": (step, test - ref).
  std::map<std::string, std::vector<std::pair<double, double>>> series;
  std::vector<std::string> notes;       // what was not measured and why
  std::string error;                    // non-empty: could not run

  std::string title() const;            // "reference[bf16] vs impl[delayed]: forward"
  std::string status() const;           // "pass" | "fail" | "error"
  int64_t count(Verdict v) const;

  // Judges `value` against the threshold of `threshold_metric` (default: `metric`) for this comparison's
  // precision and size class, records that threshold, and appends the check: pass/fail for a bound, info
  // when no threshold applies (or the threshold is a parameter).
  const Check& judge(const Thresholds& th, Subject subject, std::string metric, double value,
                     std::string detail = {}, std::string threshold_metric = {});
  // A parameter (rtol, atol, near-tie margin, ...): recorded and returned; throws if the set lacks it.
  double param(const Thresholds& th, const std::string& metric);
  // Appends a check whose verdict the caller decided (generation divergences: pass / near-tie / fail).
  const Check& add(Check c);

  nlohmann::json to_json() const;
  static Comparison from_json(const nlohmann::json& j);
};

struct EngineInfo {
  std::string label;       // "impl[delayed]"
  std::string name;        // "impl"
  std::string recipe;      // canonical recipe string
  std::string precision;   // bf16 | delayed | current | block
  Provenance provenance;   // what the engine reported (e.g. libtorch)
};

struct SummaryOptions {
  // Violations are grouped by (layer or part, metric); at most this many group lines per comparison.
  int max_lines_per_comparison = 12;
  bool color = false;
};

struct Report {
  static constexpr int kSchemaVersion = 1;
  static constexpr std::string_view kSchemaName = "tegemma.parity";

  Provenance provenance;   // kernels::provenance() from create(); the caller adds e.g. "libtorch"
  nlohmann::json model = nlohmann::json::object();       // {"source", "size_class", "config"}
  std::map<std::string, uint64_t> seeds;                 // "weights", "data", ...
  nlohmann::json thresholds = nlohmann::json::object();  // {"thresholds_version", "sources"}
  nlohmann::json prompts = nlohmann::json::object();     // PromptSet::summary_json()
  nlohmann::json run = nlohmann::json::object();         // free-form: suite, device, command line
  std::vector<EngineInfo> engines;
  std::vector<Comparison> comparisons;
  std::vector<std::string> errors;  // could-not-run errors outside any comparison

  // An empty report with provenance = kernels::provenance() (commit, build, GPU, CUDA, cuBLASLt, cuDNN).
  static Report create();

  void set_model(const GemmaConfig& cfg, std::string_view source);
  void set_thresholds(const Thresholds& th);
  void set_prompts(const PromptSet& set);
  // Records the engine (once per label and recipe) and returns its label "name[precision]".
  std::string add_engine(const Engine& engine);

  int exit_code() const;
  std::string status() const;  // "pass" | "fail" | "error"

  nlohmann::json to_json() const;
  // Reads what to_json wrote; throws naming `source` on a schema mismatch.
  static Report from_json(const nlohmann::json& j, std::string_view source);
  static Report load(const std::filesystem::path& path);
  // Atomic: the file is complete or untouched.
  void write(const std::filesystem::path& path) const;

  // One line per comparison; for a failing one, then one line per (layer or part, metric) with violations,
  // earliest layer first: the worst measured value, its threshold, how many prompts violated it and where
  // the worst one is; then a final verdict line. Every single violation is in the JSON.
  std::string summary(const SummaryOptions& opts = {}) const;
};

// Encoding of doubles in the JSON: numbers, except NaN/inf which become "nan", "inf", "-inf".
nlohmann::json number_to_json(double v);
double number_from_json(const nlohmann::json& j, std::string_view what);

}  // namespace tg::parity
