// Thresholds as data. parity/thresholds.json (compiled in as the default; `--thresholds FILE` overrides
// entries of it) holds, per metric, per precision and per model size class, a value and the written reason
// for it. The metric registry below (metric_specs()) is the code side: which metrics exist, whether a value
// is an upper bound, a lower bound or a parameter of a metric, and which values are allowed.
//
// File schema (version 1; parity/SCHEMA.md):
//   { "schema_version": 1, "thresholds_version": <int >= 1>, "description": "...",
//     "thresholds": { "<metric>": { "<precision>": { "<size>": { "value": <number>, "reason": "<text>",
//                                                                 "bound": "max|min|param" (optional) } } } } }
//   precision: bf16 | delayed | current | block, or the groups fp8 (the three FP8 recipes) and any
//   size:      tiny | small | 2b | 7b | any
// Lookup for (metric, precision P, size Z), first found wins:
//   (P, Z), (P, any), (fp8, Z), (fp8, any) [FP8 recipes only], (any, Z), (any, any).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/gemma_config.h"

namespace tg::parity {

enum class Bound : uint8_t {
  kMax,    // a measured value passes when value <= threshold
  kMin,    // a measured value passes when value >= threshold
  kParam,  // not a bound: a parameter of a metric (rtol, atol, a margin, a window)
};
std::string_view to_string(Bound b);

struct MetricSpec {
  std::string_view key;          // "tap.cosine"
  Bound bound;
  bool required;                 // the default file must resolve it for every precision and size
  double lo, hi;                 // allowed values (inclusive)
  bool integer;                  // the value must be a whole number
  std::string_view description;  // for SCHEMA.md and error messages
};
// Every metric that can carry a threshold. Metrics a comparison reports without one (e.g.
// generation.first_divergence_step) are informational and listed in SCHEMA.md.
std::span<const MetricSpec> metric_specs();
const MetricSpec* find_metric_spec(std::string_view key);  // nullptr if unknown

inline constexpr std::string_view kPrecisions[] = {"bf16", "delayed", "current", "block"};
inline constexpr std::string_view kPrecisionKeys[] = {"bf16", "delayed", "current", "block", "fp8", "any"};
inline constexpr std::string_view kSizeClasses[] = {"tiny", "small", "2b", "7b"};
inline constexpr std::string_view kSizeKeys[] = {"tiny", "small", "2b", "7b", "any"};

// The size class of a model by parameter count: < 50M tiny, < 1B small, < 5B 2b, otherwise 7b
// (the presets tiny 0.1M, small 188M, gemma-2b 2.5B, gemma-7b 8.5B land in their own classes).
std::string size_class_of(const GemmaConfig& cfg);

// "bf16", "delayed", "current" or "block" for a recipe string (impl::Recipe::parse syntax).
std::string precision_of(std::string_view recipe);
// The canonical form of a recipe string (every field explicit): what reports record.
std::string canonical_recipe(std::string_view recipe);
// The precision whose thresholds judge a comparison of two engines: the FP8 side if exactly one is FP8
// (its quantization error dominates), the test side otherwise.
std::string comparison_precision(std::string_view ref_recipe, std::string_view test_recipe);

struct Threshold {
  std::string metric;
  std::string precision_key;  // where the entry was found: may be a group ("fp8", "any")
  std::string size_key;
  double value = 0.0;
  Bound bound = Bound::kMax;
  std::string reason;
  std::string source;         // the file it came from

  // NaN never passes. Parameters always "pass" (they are not bounds).
  bool passes(double measured) const;
  nlohmann::json to_json() const;
  static Threshold from_json(const nlohmann::json& j, std::string_view metric, std::string_view where);
};

class Thresholds {
 public:
  static constexpr int kSchemaVersion = 1;

  // Parses and validates one file (every error names `source` and the JSON path of the bad entry).
  static Thresholds parse(std::string_view json_text, std::string_view source);
  static Thresholds load(const std::filesystem::path& path);
  // parity/thresholds.json as compiled in, validated and checked complete.
  static Thresholds builtin();
  // builtin(), then the entries of `override_file` (if not empty) replacing those with the same key.
  static Thresholds resolve(const std::filesystem::path& override_file);

  // Entries of `other` replace those of *this with the same (metric, precision, size); others are kept.
  void override_with(const Thresholds& other);
  // Throws unless every required metric resolves for every precision and size class.
  void check_complete() const;

  std::optional<Threshold> find(std::string_view metric, std::string_view precision,
                                std::string_view size_class) const;
  // find() or a tg::Error naming the metric, precision and size.
  Threshold get(std::string_view metric, std::string_view precision, std::string_view size_class) const;

  // The files this set was built from, in order: {source, thresholds_version}.
  const std::vector<std::pair<std::string, int>>& sources() const { return sources_; }
  int thresholds_version() const { return sources_.empty() ? 0 : sources_.front().second; }
  std::size_t size() const { return entries_.size(); }
  // The schema above (the merged entries; "thresholds_version" of the first source; "sources" listed).
  nlohmann::json to_json() const;

 private:
  using Key = std::tuple<std::string, std::string, std::string>;  // metric, precision key, size key
  std::map<Key, Threshold> entries_;
  std::vector<std::pair<std::string, int>> sources_;
};

// The compiled-in text of parity/thresholds.json and parity/prompts/default.json (generated at build time).
std::string_view builtin_thresholds_json();
std::string_view builtin_prompts_json();

}  // namespace tg::parity
