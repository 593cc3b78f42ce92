#include "parity/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>
#include <tuple>

#include "common/check.h"
#include "common/file_io.h"
#include "kernels/provenance.h"
#include "parity/engine.h"
#include "parity/prompts.h"

namespace tg::parity {

namespace {

std::string fmt(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

const nlohmann::json& member(const nlohmann::json& j, const char* key, std::string_view where) {
  TG_CHECK(j.is_object() && j.contains(key), where, ": missing \"", key, "\"");
  return j.at(key);
}

std::string str_member(const nlohmann::json& j, const char* key, std::string_view where) {
  const auto& v = member(j, key, where);
  TG_CHECK(v.is_string(), where, ".", key, ": expected a string, got ", v.type_name());
  return v.get<std::string>();
}

std::string opt_str(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

Provenance provenance_from_json(const nlohmann::json& j, std::string_view where) {
  TG_CHECK(j.is_object(), where, ": expected an object of strings");
  Provenance p;
  for (const auto& [k, v] : j.items()) {
    TG_CHECK(v.is_string(), where, ".", k, ": expected a string");
    p[k] = v.get<std::string>();
  }
  return p;
}

// Summary groups, in display order: layers in order, then the final logits, then everything else.
using GroupKey = std::tuple<int, int, std::string, std::string>;  // order, layer, part, metric
GroupKey group_key(const Check& c) {
  const int order = c.subject.layer >= 0 ? 0 : c.subject.part == "logits" ? 1 : 2;
  return {order, c.subject.layer, c.subject.part, c.metric};
}

// Whether failed check `a` is further beyond its threshold than `b` (NaN is the worst).
bool worse(const Check& a, const Check& b, const Comparison& c) {
  auto it = c.thresholds.find(a.judged_by());
  if (it == c.thresholds.end() || it->second.bound == Bound::kParam) return false;  // keep the first
  if (std::isnan(a.value) || std::isnan(b.value)) return std::isnan(a.value) && !std::isnan(b.value);
  return it->second.bound == Bound::kMax ? a.value > b.value : a.value < b.value;
}

}  // namespace

nlohmann::json number_to_json(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

double number_from_json(const nlohmann::json& j, std::string_view what) {
  if (j.is_number()) return j.get<double>();
  if (j.is_string()) {
    const std::string s = j.get<std::string>();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
  }
  TG_FAIL(what, ": expected a number or \"nan\"/\"inf\"/\"-inf\", got ", j.dump());
}

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::kPass: return "pass";
    case Verdict::kFail: return "fail";
    case Verdict::kNearTie: return "near_tie";
    case Verdict::kInfo: return "info";
  }
  return "?";
}

Verdict verdict_from_string(std::string_view s) {
  for (Verdict v : {Verdict::kPass, Verdict::kFail, Verdict::kNearTie, Verdict::kInfo})
    if (to_string(v) == s) return v;
  TG_FAIL("unknown verdict \"", s, "\" (expected pass, fail, near_tie, info)");
}

// ---- Subject / Check ---------------------------------------------------------------------------------

std::string Subject::describe() const {
  std::string out;
  if (prompt >= 0) out = "prompt " + std::to_string(prompt) + (prompt_id.empty() ? "" : " (" + prompt_id + ")");
  std::string where = layer >= 0 ? "layer " + std::to_string(layer) : part;
  if (!where.empty()) out += (out.empty() ? "" : ", ") + where;
  return out.empty() ? "-" : out;
}

nlohmann::json Subject::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  if (prompt >= 0) j["prompt"] = prompt;
  if (!prompt_id.empty()) j["prompt_id"] = prompt_id;
  if (layer >= 0) j["layer"] = layer;
  if (!part.empty()) j["part"] = part;
  return j;
}

Subject Subject::from_json(const nlohmann::json& j) {
  TG_CHECK(j.is_object(), "subject: expected an object");
  Subject s;
  if (j.contains("prompt")) s.prompt = j["prompt"].get<int>();
  s.prompt_id = opt_str(j, "prompt_id");
  if (j.contains("layer")) s.layer = j["layer"].get<int>();
  s.part = opt_str(j, "part");
  return s;
}

// ---- Comparison ----------------------------------------------------------------------------------------

std::string Comparison::title() const {
  return (reference.empty() ? test : reference + " vs " + test) + ": " + kind;
}

int64_t Comparison::count(Verdict v) const {
  return std::count_if(checks.begin(), checks.end(), [v](const Check& c) { return c.verdict == v; });
}

std::string Comparison::status() const {
  if (count(Verdict::kFail) > 0) return "fail";
  if (!error.empty()) return "error";
  return "pass";
}

const Check& Comparison::judge(const Thresholds& th, Subject subject, std::string metric, double value,
                               std::string detail, std::string threshold_metric) {
  const std::string& key = threshold_metric.empty() ? metric : threshold_metric;
  Verdict v = Verdict::kInfo;
  auto it = thresholds.find(key);
  if (it == thresholds.end()) {
    if (auto t = th.find(key, precision, size_class)) it = thresholds.emplace(key, *t).first;
  }
  if (it != thresholds.end() && it->second.bound != Bound::kParam)
    v = it->second.passes(value) ? Verdict::kPass : Verdict::kFail;
  return add({std::move(subject), std::move(metric), value, v, std::move(threshold_metric), std::move(detail)});
}

double Comparison::param(const Thresholds& th, const std::string& metric) {
  auto it = thresholds.find(metric);
  if (it == thresholds.end()) it = thresholds.emplace(metric, th.get(metric, precision, size_class)).first;
  return it->second.value;
}

const Check& Comparison::add(Check c) {
  checks.push_back(std::move(c));
  return checks.back();
}

nlohmann::json Comparison::to_json() const {
  nlohmann::json j;
  j["kind"] = kind;
  j["title"] = title();
  j["reference"] = reference;
  j["test"] = test;
  j["reference_recipe"] = reference_recipe;
  j["test_recipe"] = test_recipe;
  j["precision"] = precision;
  j["size_class"] = size_class;
  j["status"] = status();
  if (!error.empty()) j["error"] = error;
  j["counts"] = {{"checks", checks.size()},
                 {"pass", count(Verdict::kPass)},
                 {"fail", count(Verdict::kFail)},
                 {"near_tie", count(Verdict::kNearTie)},
                 {"info", count(Verdict::kInfo)}};
  nlohmann::json th = nlohmann::json::object();
  for (const auto& [k, t] : thresholds) th[k] = t.to_json();
  j["thresholds"] = th;
  nlohmann::json cs = nlohmann::json::array();
  for (const auto& c : checks) {
    nlohmann::json cj = {{"subject", c.subject.to_json()},
                         {"metric", c.metric},
                         {"value", number_to_json(c.value)},
                         {"verdict", to_string(c.verdict)}};
    if (!c.threshold_metric.empty()) cj["threshold_metric"] = c.threshold_metric;
    if (!std::isnan(c.limit)) cj["limit"] = number_to_json(c.limit);
    if (!c.detail.empty()) cj["detail"] = c.detail;
    cs.push_back(std::move(cj));
  }
  j["checks"] = std::move(cs);
  nlohmann::json se = nlohmann::json::object();
  for (const auto& [name, pts] : series) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& [x, y] : pts) a.push_back({number_to_json(x), number_to_json(y)});
    se[name] = std::move(a);
  }
  j["series"] = std::move(se);
  j["notes"] = notes;
  return j;
}

Comparison Comparison::from_json(const nlohmann::json& j) {
  TG_CHECK(j.is_object(), "comparison: expected an object");
  Comparison c;
  const std::string where = "comparison " + opt_str(j, "title");
  c.kind = str_member(j, "kind", where);
  c.reference = str_member(j, "reference", where);
  c.test = str_member(j, "test", where);
  c.reference_recipe = str_member(j, "reference_recipe", where);
  c.test_recipe = str_member(j, "test_recipe", where);
  c.precision = str_member(j, "precision", where);
  c.size_class = str_member(j, "size_class", where);
  c.error = opt_str(j, "error");
  for (const auto& [k, t] : member(j, "thresholds", where).items())
    c.thresholds.emplace(k, Threshold::from_json(t, k, where + ".thresholds." + k));
  for (const auto& cj : member(j, "checks", where)) {
    Check ch;
    ch.subject = Subject::from_json(member(cj, "subject", where));
    ch.metric = str_member(cj, "metric", where);
    ch.value = number_from_json(member(cj, "value", where), where + " " + ch.metric);
    ch.verdict = verdict_from_string(str_member(cj, "verdict", where));
    ch.threshold_metric = opt_str(cj, "threshold_metric");
    ch.detail = opt_str(cj, "detail");
    if (cj.contains("limit")) ch.limit = number_from_json(cj["limit"], where + " " + ch.metric + ".limit");
    c.checks.push_back(std::move(ch));
  }
  if (j.contains("series")) {
    for (const auto& [name, pts] : j["series"].items()) {
      auto& s = c.series[name];
      for (const auto& p : pts) {
        TG_CHECK(p.is_array() && p.size() == 2, where, ".series.", name, ": expected [x, y] pairs");
        s.emplace_back(number_from_json(p[0], name), number_from_json(p[1], name));
      }
    }
  }
  if (j.contains("notes")) c.notes = j["notes"].get<std::vector<std::string>>();
  TG_CHECK(str_member(j, "status", where) == c.status(), where, ": status \"", j["status"].get<std::string>(),
           "\" does not match its checks (", c.status(), ")");
  return c;
}

// ---- Report --------------------------------------------------------------------------------------------

Report Report::create() {
  Report r;
  r.provenance = kernels::provenance();
  return r;
}

void Report::set_model(const GemmaConfig& cfg, std::string_view source) {
  model = {{"source", source},
           {"size_class", size_class_of(cfg)},
           {"num_params", cfg.num_params()},
           {"config", nlohmann::json::parse(cfg.to_json_text())}};
}

void Report::set_thresholds(const Thresholds& th) {
  nlohmann::json src = nlohmann::json::array();
  for (const auto& [s, v] : th.sources()) src.push_back({{"source", s}, {"thresholds_version", v}});
  thresholds = {{"schema_version", Thresholds::kSchemaVersion},
                {"thresholds_version", th.thresholds_version()},
                {"sources", src}};
}

void Report::set_prompts(const PromptSet& set) { prompts = set.summary_json(); }

std::string Report::add_engine(const Engine& engine) {
  EngineInfo e;
  e.name = engine.name();
  e.recipe = canonical_recipe(engine.precision());
  e.precision = precision_of(e.recipe);
  e.label = e.name + "[" + e.precision + "]";
  e.provenance = engine.provenance();
  for (const auto& x : engines)
    if (x.label == e.label && x.recipe == e.recipe) return e.label;
  engines.push_back(e);
  return e.label;
}

std::string Report::status() const {
  bool any_error = !errors.empty() || comparisons.empty();
  for (const auto& c : comparisons) {
    const std::string s = c.status();
    if (s == "fail") return "fail";
    any_error = any_error || s == "error";
  }
  return any_error ? "error" : "pass";
}

int Report::exit_code() const {
  const std::string s = status();
  return s == "pass" ? 0 : s == "fail" ? 1 : 2;
}

nlohmann::json Report::to_json() const {
  nlohmann::json j;
  j["schema"] = kSchemaName;
  j["schema_version"] = kSchemaVersion;
  j["status"] = status();
  j["exit_code"] = exit_code();
  j["provenance"] = provenance;
  j["model"] = model;
  j["seeds"] = seeds;
  j["thresholds"] = thresholds;
  j["prompts"] = prompts;
  j["run"] = run;
  nlohmann::json es = nlohmann::json::array();
  for (const auto& e : engines) {
    es.push_back({{"label", e.label},
                  {"name", e.name},
                  {"recipe", e.recipe},
                  {"precision", e.precision},
                  {"provenance", e.provenance}});
  }
  j["engines"] = es;
  int64_t n_checks = 0, n_fail = 0, n_tie = 0, n_pass_cmp = 0, n_fail_cmp = 0, n_err_cmp = 0;
  nlohmann::json cs = nlohmann::json::array();
  for (const auto& c : comparisons) {
    n_checks += static_cast<int64_t>(c.checks.size());
    n_fail += c.count(Verdict::kFail);
    n_tie += c.count(Verdict::kNearTie);
    const std::string s = c.status();
    (s == "pass" ? n_pass_cmp : s == "fail" ? n_fail_cmp : n_err_cmp) += 1;
    cs.push_back(c.to_json());
  }
  j["totals"] = {{"comparisons", comparisons.size()},
                 {"passed", n_pass_cmp},
                 {"failed", n_fail_cmp},
                 {"errors", n_err_cmp},
                 {"checks", n_checks},
                 {"violations", n_fail},
                 {"near_ties", n_tie}};
  j["comparisons"] = std::move(cs);
  j["errors"] = errors;
  return j;
}

Report Report::from_json(const nlohmann::json& j, std::string_view source) {
  TG_CHECK(j.is_object(), source, ": expected a JSON object");
  TG_CHECK(j.contains("schema") && j["schema"] == kSchemaName, source, ": not a parity report (\"schema\" is not \"",
           kSchemaName, "\")");
  TG_CHECK(j.contains("schema_version") && j["schema_version"].is_number_integer(), source,
           ": missing integer \"schema_version\"");
  const int64_t sv = j["schema_version"].get<int64_t>();
  TG_CHECK(sv == kSchemaVersion, source, ": parity report schema_version ", sv,
           " is not supported (this build reads ", kSchemaVersion, ")");
  Report r;
  try {
    r.provenance = provenance_from_json(member(j, "provenance", source), "provenance");
    r.model = member(j, "model", source);
    for (const auto& [k, v] : member(j, "seeds", source).items()) r.seeds[k] = v.get<uint64_t>();
    r.thresholds = member(j, "thresholds", source);
    r.prompts = member(j, "prompts", source);
    r.run = member(j, "run", source);
    for (const auto& e : member(j, "engines", source)) {
      EngineInfo info;
      info.label = str_member(e, "label", "engine");
      info.name = str_member(e, "name", "engine");
      info.recipe = str_member(e, "recipe", "engine");
      info.precision = str_member(e, "precision", "engine");
      info.provenance = provenance_from_json(member(e, "provenance", "engine"), "engine.provenance");
      r.engines.push_back(std::move(info));
    }
    for (const auto& c : member(j, "comparisons", source)) r.comparisons.push_back(Comparison::from_json(c));
    r.errors = member(j, "errors", source).get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    TG_FAIL(source, ": malformed parity report (", e.what(), ")");
  }
  TG_CHECK(j.contains("status") && j["status"] == r.status(), source, ": \"status\" does not match the checks");
  return r;
}

Report Report::load(const std::filesystem::path& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    TG_FAIL(path.string(), ": not valid JSON (", e.what(), ")");
  }
  return from_json(j, path.string());
}

void Report::write(const std::filesystem::path& path) const { write_file_atomic(path, to_json().dump(2) + "\n"); }

std::string Report::summary(const SummaryOptions& opts) const {
  const char* red = opts.color ? "\033[31m" : "";
  const char* green = opts.color ? "\033[32m" : "";
  const char* yellow = opts.color ? "\033[33m" : "";
  const char* reset = opts.color ? "\033[0m" : "";
  std::ostringstream os;
  int n_fail = 0, n_err = 0;
  for (const auto& c : comparisons) {
    const std::string s = c.status();
    const int64_t ties = c.count(Verdict::kNearTie);
    const std::string ctx = " (" + c.precision + ", " + c.size_class + ")";
    if (s == "pass") {
      os << green << "PASS " << reset << " " << c.title() << ctx << ": " << c.checks.size() << " checks";
      if (ties > 0) os << ", " << yellow << ties << " near-tie" << (ties > 1 ? "s" : "") << reset;
      os << "\n";
    } else if (s == "error") {
      ++n_err;
      os << red << "ERROR" << reset << " " << c.title() << ctx << ": could not run: " << c.error << "\n";
      continue;
    } else {
      ++n_fail;
      // Violations grouped by where (layer, logits, generation, curve) and metric, earliest layer first:
      // one line per group with its worst value, so a bug that breaks every prompt reads as one line.
      struct Group {
        const Check* worst = nullptr;
        int failed = 0, total = 0;
      };
      std::map<GroupKey, Group> groups;
      int64_t n_bad = 0;
      for (const auto& ch : c.checks) {
        Group& g = groups[group_key(ch)];
        ++g.total;
        if (ch.verdict != Verdict::kFail) continue;
        ++g.failed;
        ++n_bad;
        if (!g.worst || worse(ch, *g.worst, c)) g.worst = &ch;
      }
      std::erase_if(groups, [](const auto& kv) { return kv.second.failed == 0; });
      os << red << "FAIL " << reset << " " << c.title() << ctx << ": " << n_bad << " of " << c.checks.size()
         << " checks violated";
      const Check& first = *groups.begin()->second.worst;
      if (first.subject.layer >= 0) {
        os << "; earliest failing layer " << first.subject.layer << " (";
        bool sep = false;
        for (const auto& [key, g] : groups) {
          if (g.worst->subject.layer != first.subject.layer) break;
          os << (sep ? ", " : "") << g.worst->metric;
          sep = true;
        }
        os << ")";
      }
      if (ties > 0) os << "; " << ties << " near-tie" << (ties > 1 ? "s" : "");
      if (!c.error.empty()) os << "; also could not finish: " << c.error;
      os << "\n";
      int shown = 0;
      for (const auto& [key, g] : groups) {
        if (shown == opts.max_lines_per_comparison) break;
        ++shown;
        const Check& b = *g.worst;
        os << "        " << (b.subject.layer >= 0 ? "layer " + std::to_string(b.subject.layer) : b.subject.part)
           << ": " << b.metric << " = " << fmt(b.value);
        auto it = c.thresholds.find(b.judged_by());
        if (!std::isnan(b.limit)) {
          os << " (max " << fmt(b.limit) << ", noise-relative)";
        } else if (it != c.thresholds.end()) {
          const Threshold& t = it->second;
          os << " (" << (t.bound == Bound::kMin ? "min " : t.bound == Bound::kMax ? "max " : "")
             << (b.threshold_metric.empty() ? "" : b.threshold_metric + " ") << fmt(t.value) << ", "
             << t.precision_key << "/" << t.size_key << ")";
        }
        if (b.subject.prompt >= 0) {
          const std::string at = "prompt " + std::to_string(b.subject.prompt) +
                                 (b.subject.prompt_id.empty() ? "" : " (" + b.subject.prompt_id + ")");
          if (g.total > 1) {
            os << " in " << g.failed << " of " << g.total << " prompts, worst at " << at;
          } else {
            os << " at " << at;
          }
        }
        if (!b.detail.empty()) os << ": " << b.detail;
        os << "\n";
      }
      if (static_cast<int>(groups.size()) > shown)
        os << "        ... and " << groups.size() - shown << " more (layer, metric) groups with violations (see the JSON)\n";
    }
  }
  for (const auto& e : errors) {
    ++n_err;
    os << red << "ERROR" << reset << " " << e << "\n";
  }
  const int code = exit_code();
  os << "parity: " << (code == 0 ? green : red) << (code == 0 ? "PASS" : code == 1 ? "FAIL" : "ERROR") << reset
     << " (exit " << code << "): " << comparisons.size() << " comparison" << (comparisons.size() == 1 ? "" : "s");
  if (n_fail > 0) os << ", " << n_fail << " violated thresholds";
  if (n_err > 0) os << ", " << n_err << " could not run";
  if (comparisons.empty()) os << " (nothing was compared)";
  os << "\n";
  return os.str();
}

}  // namespace tg::parity
