#include "parity/thresholds.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "common/check.h"
#include "common/file_io.h"
#include "impl/recipe.h"

namespace tg::parity {

namespace {

constexpr double kBig = std::numeric_limits<double>::max();

constexpr MetricSpec kSpecs[] = {
    // Per-layer residual stream (taps) and final logits: elementwise.
    {"tap.nonfinite", Bound::kMax, true, 0, kBig, true, "elements where exactly one side (or both, differently) is NaN/inf"},
    {"tap.max_abs_err", Bound::kMax, false, 0, kBig, false, "max |test - ref|"},
    {"tap.max_rel_err", Bound::kMax, false, 0, kBig, false, "max |test - ref| / max(|ref|, 1e-3 max|ref|)"},
    {"tap.rmse_over_range", Bound::kMax, true, 0, kBig, false, "RMSE / (max(ref) - min(ref)): TE's FP8 attention check"},
    {"tap.cosine", Bound::kMin, true, -1, 1, false, "cosine similarity of the flattened arrays"},
    {"tap.mismatch_fraction", Bound::kMax, true, 0, 1, false, "share of elements with |t - r| > tap.atol + tap.rtol |r|"},
    {"tap.rtol", Bound::kParam, true, 0, kBig, false, "rtol of the allclose rule behind tap.mismatch_fraction"},
    {"tap.atol", Bound::kParam, true, 0, kBig, false, "atol of the allclose rule behind tap.mismatch_fraction"},
    {"logits.nonfinite", Bound::kMax, true, 0, kBig, true, "elements where exactly one side (or both, differently) is NaN/inf"},
    {"logits.max_abs_err", Bound::kMax, false, 0, kBig, false, "max |test - ref|"},
    {"logits.max_rel_err", Bound::kMax, false, 0, kBig, false, "max |test - ref| / max(|ref|, 1e-3 max|ref|)"},
    {"logits.rmse_over_range", Bound::kMax, true, 0, kBig, false, "RMSE / (max(ref) - min(ref)) over the [S, V] logits"},
    {"logits.cosine", Bound::kMin, true, -1, 1, false, "cosine similarity of the flattened [S, V] logits"},
    {"logits.mismatch_fraction", Bound::kMax, true, 0, 1, false, "share of logits with |t - r| > logits.atol + logits.rtol |r|"},
    {"logits.rtol", Bound::kParam, true, 0, kBig, false, "rtol of the allclose rule behind logits.mismatch_fraction"},
    {"logits.atol", Bound::kParam, true, 0, kBig, false, "atol of the allclose rule behind logits.mismatch_fraction"},
    // Final logits: next-token distributions per position.
    {"logits.kl_max", Bound::kMax, true, 0, kBig, false, "max over positions of KL(softmax(ref) || softmax(test)), nats"},
    {"logits.kl_mean", Bound::kMax, true, 0, kBig, false, "mean over positions of KL(softmax(ref) || softmax(test)), nats"},
    {"logits.top1_agreement", Bound::kMin, false, 0, 1, false, "share of positions whose argmax agrees"},
    {"logits.top1_hard_disagreements", Bound::kMax, true, 0, kBig, true, "argmax disagreements that are not near-ties"},
    {"logits.top5_overlap", Bound::kMin, true, 0, 1, false, "mean share of the reference's top-5 in the test's top-5"},
    {"logits.near_tie_margin", Bound::kParam, true, 0, kBig, false, "a disagreement where ref[ref_choice] - ref[test_choice] is below this is a near-tie (logits and generations)"},
    // Greedy generations.
    {"generation.token_agreement", Bound::kMin, false, 0, 1, false, "common prefix / longer generation"},
    // Loss curves.
    {"loss.max_abs_step_diff", Bound::kMax, false, 0, kBig, false, "max over common steps of |test - ref| training loss"},
    {"loss.mean_abs_step_diff", Bound::kMax, false, 0, kBig, false, "mean over common steps of |test - ref| training loss"},
    {"loss.tail_mean_rel_diff", Bound::kMax, true, 0, kBig, false, "|mean(test) - mean(ref)| / mean(ref) over the last 10% of common steps"},
    {"loss.final_val_ratio", Bound::kMax, true, 0, kBig, false, "test / ref validation loss at the last step both have one"},
    {"loss.final_val_rel_diff", Bound::kMax, false, 0, kBig, false, "|test - ref| / ref validation loss at the last step both have one (two-sided)"},
    {"loss.min_val_rel_diff", Bound::kMax, false, 0, kBig, false, "|min(test) - min(ref)| / min(ref) validation loss over the steps both have one"},
    {"loss.window_mean_abs_rel_diff", Bound::kMax, false, 0, kBig, false, "per window of the common steps (loss.windows of them): mean of |test - ref| / ref training loss"},
    {"loss.windows", Bound::kParam, true, 1, 1000, true, "the number of windows the common steps are cut into for loss.window_mean_abs_rel_diff"},
    {"loss.noise_k", Bound::kParam, true, 1, 100, false, "noise-relative verdict (a noise run given): distance <= k x the reference-vs-noise-run distance + loss.noise_floor"},
    {"loss.noise_floor", Bound::kParam, true, 0, 1, false, "noise-relative verdict: the absolute floor added to k x the noise distance (relative-difference units)"},
    {"loss.nonfinite_steps", Bound::kMax, true, 0, kBig, true, "steps with a NaN/inf training loss (per curve)"},
    {"loss.spikes", Bound::kMax, true, 0, kBig, true, "steps with loss > loss.spike_factor x the running median (per curve)"},
    {"loss.spike_factor", Bound::kParam, true, 1.0, kBig, false, "spike rule: loss > factor x median of the previous window"},
    {"loss.spike_window", Bound::kParam, true, 1, 1e6, true, "spike rule: the number of previous finite losses in the median"},
};

bool is_fp8_precision(std::string_view p) { return p == "delayed" || p == "current" || p == "block"; }

template <std::size_t N>
bool one_of(std::string_view s, const std::string_view (&set)[N]) {
  return std::find(std::begin(set), std::end(set), s) != std::end(set);
}

template <std::size_t N>
std::string join(const std::string_view (&set)[N]) {
  std::string out;
  for (auto s : set) out += (out.empty() ? "" : ", ") + std::string(s);
  return out;
}

std::string known_metrics() {
  std::string out;
  for (const auto& s : kSpecs) out += (out.empty() ? "" : ", ") + std::string(s.key);
  return out;
}

Bound bound_from_string(std::string_view s, std::string_view where) {
  if (s == "max") return Bound::kMax;
  if (s == "min") return Bound::kMin;
  if (s == "param") return Bound::kParam;
  TG_FAIL(where, ".bound: expected \"max\", \"min\" or \"param\", got \"", s, "\"");
}

}  // namespace

std::string_view to_string(Bound b) {
  switch (b) {
    case Bound::kMax: return "max";
    case Bound::kMin: return "min";
    case Bound::kParam: return "param";
  }
  return "?";
}

std::span<const MetricSpec> metric_specs() { return kSpecs; }

const MetricSpec* find_metric_spec(std::string_view key) {
  for (const auto& s : kSpecs)
    if (s.key == key) return &s;
  return nullptr;
}

std::string size_class_of(const GemmaConfig& cfg) {
  const int64_t n = cfg.num_params();
  if (n < 50'000'000) return "tiny";
  if (n < 1'000'000'000) return "small";
  if (n < 5'000'000'000) return "2b";
  return "7b";
}

std::string precision_of(std::string_view recipe) {
  return std::string(impl::Recipe::parse(recipe).name());
}

std::string canonical_recipe(std::string_view recipe) { return impl::Recipe::parse(recipe).to_string(); }

std::string comparison_precision(std::string_view ref_recipe, std::string_view test_recipe) {
  const std::string r = precision_of(ref_recipe), t = precision_of(test_recipe);
  if (t == "bf16" && r != "bf16") return r;
  return t;
}

bool Threshold::passes(double measured) const {
  switch (bound) {
    case Bound::kMax: return measured <= value;  // NaN compares false
    case Bound::kMin: return measured >= value;
    case Bound::kParam: return true;
  }
  return false;
}

nlohmann::json Threshold::to_json() const {
  return {{"metric", metric},       {"precision", precision_key}, {"size", size_key},
          {"value", value},         {"bound", to_string(bound)},  {"reason", reason},
          {"source", source}};
}

Threshold Threshold::from_json(const nlohmann::json& j, std::string_view metric, std::string_view where) {
  TG_CHECK(j.is_object(), where, ": expected an object, got ", j.type_name());
  Threshold t;
  t.metric = std::string(metric);
  auto str = [&](const char* key) {
    TG_CHECK(j.contains(key) && j[key].is_string(), where, ".", key, ": expected a string");
    return j[key].get<std::string>();
  };
  t.precision_key = str("precision");
  t.size_key = str("size");
  t.reason = str("reason");
  t.source = str("source");
  t.bound = bound_from_string(str("bound"), where);
  TG_CHECK(j.contains("value") && j["value"].is_number(), where, ".value: expected a number");
  t.value = j["value"].get<double>();
  return t;
}

// ---- Parsing -------------------------------------------------------------------------------------------

Thresholds Thresholds::parse(std::string_view json_text, std::string_view source) {
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    TG_FAIL(source, ": not valid JSON (", e.what(), ")");
  }
  TG_CHECK(root.is_object(), source, ": expected a JSON object at the top, got ", root.type_name());
  for (const auto& [key, _] : root.items()) {
    TG_CHECK(key == "schema_version" || key == "thresholds_version" || key == "description" ||
                 key == "thresholds",
             source, ": unknown top-level key \"", key,
             "\" (expected schema_version, thresholds_version, description, thresholds)");
  }
  TG_CHECK(root.contains("schema_version"), source, ": missing \"schema_version\"");
  TG_CHECK(root["schema_version"].is_number_integer(), source, ": schema_version: expected an integer, got ",
           root["schema_version"].dump());
  const int64_t sv = root["schema_version"].get<int64_t>();
  TG_CHECK(sv == kSchemaVersion, source, ": schema_version ", sv, " is not supported (this build reads ",
           kSchemaVersion, ")");
  TG_CHECK(root.contains("thresholds_version"), source, ": missing \"thresholds_version\"");
  const auto& tv = root["thresholds_version"];
  TG_CHECK(tv.is_number_integer() && tv.get<int64_t>() >= 1, source,
           ": thresholds_version: expected an integer >= 1, got ", tv.dump());
  if (root.contains("description"))
    TG_CHECK(root["description"].is_string(), source, ": description: expected a string");
  TG_CHECK(root.contains("thresholds") && root["thresholds"].is_object(), source,
           ": missing \"thresholds\" object");

  Thresholds out;
  out.sources_.emplace_back(std::string(source), static_cast<int>(tv.get<int64_t>()));
  for (const auto& [metric, by_prec] : root["thresholds"].items()) {
    const std::string mpath = "thresholds." + metric;
    const MetricSpec* spec = find_metric_spec(metric);
    TG_CHECK(spec, source, ": unknown metric \"", mpath, "\" (known: ", known_metrics(), ")");
    TG_CHECK(by_prec.is_object(), source, ": ", mpath, ": expected an object keyed by precision, got ",
             by_prec.type_name());
    for (const auto& [prec, by_size] : by_prec.items()) {
      const std::string ppath = mpath + "." + prec;
      TG_CHECK(one_of(prec, kPrecisionKeys), source, ": unknown precision \"", ppath, "\" (expected one of ",
               join(kPrecisionKeys), ")");
      TG_CHECK(by_size.is_object(), source, ": ", ppath, ": expected an object keyed by size, got ",
               by_size.type_name());
      for (const auto& [size, entry] : by_size.items()) {
        const std::string path = ppath + "." + size;
        TG_CHECK(one_of(size, kSizeKeys), source, ": unknown size class \"", path, "\" (expected one of ",
                 join(kSizeKeys), ")");
        TG_CHECK(entry.is_object(), source, ": ", path, ": expected {\"value\", \"reason\"}, got ",
                 entry.type_name());
        for (const auto& [k, _] : entry.items()) {
          TG_CHECK(k == "value" || k == "reason" || k == "bound", source, ": unknown key \"", path, ".", k,
                   "\" (expected value, reason, bound)");
        }
        TG_CHECK(entry.contains("value"), source, ": ", path, ": missing \"value\"");
        TG_CHECK(entry["value"].is_number(), source, ": ", path, ".value: expected a number, got ",
                 entry["value"].dump());
        const double v = entry["value"].get<double>();
        TG_CHECK(std::isfinite(v) && v >= spec->lo && v <= spec->hi, source, ": ", path, ".value: ", v,
                 " is outside the allowed range [", spec->lo, ", ", spec->hi, "] of ", metric);
        TG_CHECK(!spec->integer || v == std::floor(v), source, ": ", path, ".value: expected a whole number, got ",
                 v);
        TG_CHECK(entry.contains("reason"), source, ": ", path, ": missing \"reason\" (every value needs one)");
        TG_CHECK(entry["reason"].is_string(), source, ": ", path, ".reason: expected a string, got ",
                 entry["reason"].dump());
        const std::string reason = entry["reason"].get<std::string>();
        TG_CHECK(reason.find_first_not_of(" \t\n") != std::string::npos, source, ": ", path,
                 ".reason: must not be empty");
        if (entry.contains("bound")) {
          TG_CHECK(entry["bound"].is_string(), source, ": ", path, ".bound: expected a string, got ",
                   entry["bound"].dump());
          const Bound b = bound_from_string(entry["bound"].get<std::string>(), std::string(source) + ": " + path);
          TG_CHECK(b == spec->bound, source, ": ", path, ".bound: ", metric, " is a \"", to_string(spec->bound),
                   "\" metric, the file says \"", to_string(b), "\"");
        }
        Threshold t;
        t.metric = metric;
        t.precision_key = prec;
        t.size_key = size;
        t.value = v;
        t.bound = spec->bound;
        t.reason = reason;
        t.source = std::string(source);
        out.entries_[{metric, prec, size}] = std::move(t);
      }
    }
  }
  return out;
}

Thresholds Thresholds::load(const std::filesystem::path& path) { return parse(read_file(path), path.string()); }

Thresholds Thresholds::builtin() {
  Thresholds t = parse(builtin_thresholds_json(), "builtin:parity/thresholds.json");
  t.check_complete();
  return t;
}

Thresholds Thresholds::resolve(const std::filesystem::path& override_file) {
  Thresholds t = builtin();
  if (!override_file.empty()) t.override_with(load(override_file));
  return t;
}

void Thresholds::override_with(const Thresholds& other) {
  for (const auto& [key, t] : other.entries_) entries_[key] = t;
  sources_.insert(sources_.end(), other.sources_.begin(), other.sources_.end());
}

void Thresholds::check_complete() const {
  for (const auto& spec : kSpecs) {
    if (!spec.required) continue;
    for (auto prec : kPrecisions) {
      for (auto size : kSizeClasses) {
        TG_CHECK(find(spec.key, prec, size).has_value(), sources_.empty() ? "thresholds" : sources_[0].first,
                 ": required metric ", spec.key, " has no value for precision ", prec, ", size ", size,
                 " (add it under ", prec, " or a group, at that size or \"any\")");
      }
    }
  }
}

std::optional<Threshold> Thresholds::find(std::string_view metric, std::string_view precision,
                                          std::string_view size_class) const {
  std::vector<std::string_view> precs{precision};
  if (is_fp8_precision(precision)) precs.push_back("fp8");
  precs.push_back("any");
  for (auto p : precs) {
    for (auto z : {size_class, std::string_view("any")}) {
      auto it = entries_.find({std::string(metric), std::string(p), std::string(z)});
      if (it != entries_.end()) return it->second;
    }
  }
  return std::nullopt;
}

Threshold Thresholds::get(std::string_view metric, std::string_view precision,
                          std::string_view size_class) const {
  auto t = find(metric, precision, size_class);
  TG_CHECK(t.has_value(), "no threshold for ", metric, " at precision ", precision, ", size ", size_class);
  return *t;
}

nlohmann::json Thresholds::to_json() const {
  nlohmann::json th = nlohmann::json::object();
  for (const auto& [key, t] : entries_) {
    const auto& [m, p, z] = key;
    th[m][p][z] = {{"value", t.value}, {"bound", to_string(t.bound)}, {"reason", t.reason}};
  }
  nlohmann::json src = nlohmann::json::array();
  for (const auto& [s, v] : sources_) src.push_back({{"source", s}, {"thresholds_version", v}});
  return {{"schema_version", kSchemaVersion},
          {"thresholds_version", thresholds_version() > 0 ? thresholds_version() : 1},
          {"description", "merged from: " + src.dump()},
          {"thresholds", th}};
}

}  // namespace tg::parity
