#include "reports/inputs.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>

#include "common/check.h"
#include "common/file_io.h"
#include "common/json_util.h"

namespace tg::reports {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Where a value sits: the file and the JSON path inside it ("benchmarks[3].real_time").
struct Where {
  std::string file, path;
  Where at(std::string_view key) const { return {file, path.empty() ? std::string(key) : path + "." + std::string(key)}; }
  Where at(std::size_t i) const { return {file, path + "[" + std::to_string(i) + "]"}; }
  std::string str() const { return file + (path.empty() ? "" : ": " + path); }
};

std::string describe(const json& j) {
  std::string d = j.dump();
  if (d.size() > 40) d = d.substr(0, 37) + "...";
  return std::string(j.type_name()) + " " + d;
}

[[noreturn]] void bad(const Where& w, const std::string& what) { TG_FAIL(w.str(), ": ", what); }

void need_object(const json& j, const Where& w) {
  if (!j.is_object()) bad(w, "expected an object, got " + describe(j));
}

const json& need(const json& j, std::string_view key, const Where& w) {
  need_object(j, w);
  auto it = j.find(std::string(key));
  if (it == j.end()) bad(w.at(key), "missing");
  return *it;
}

void need_array(const json& j, const Where& w) {
  if (!j.is_array()) bad(w, "expected an array, got " + describe(j));
}

const json* opt(const json& j, std::string_view key) {
  auto it = j.find(std::string(key));
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::string as_str(const json& v, const Where& w) {
  if (!v.is_string()) bad(w, "expected a string, got " + describe(v));
  return v.get<std::string>();
}
double as_num(const json& v, const Where& w) {
  if (!v.is_number()) bad(w, "expected a number, got " + describe(v));
  return v.get<double>();
}
int64_t as_int(const json& v, const Where& w) {
  if (!v.is_number_integer()) bad(w, "expected an integer, got " + describe(v));
  return v.get<int64_t>();
}
// A number, or "nan"/"inf"/"-inf" (parity/SCHEMA.md); null reads as NaN where `null_is_nan`.
double as_value(const json& v, const Where& w, bool null_is_nan = false) {
  if (v.is_number()) return v.get<double>();
  if (null_is_nan && v.is_null()) return std::numeric_limits<double>::quiet_NaN();
  if (v.is_string()) {
    const auto s = v.get<std::string>();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
  }
  bad(w, "expected a number or \"nan\"/\"inf\"/\"-inf\", got " + describe(v));
}

std::string str_field(const json& j, std::string_view key, const Where& w) { return as_str(need(j, key, w), w.at(key)); }
std::string opt_str(const json& j, std::string_view key, const Where& w) {
  const json* v = opt(j, key);
  return v ? as_str(*v, w.at(key)) : std::string();
}

// A scalar as text: strings as they are, numbers and booleans in their JSON form; containers are skipped.
std::map<std::string, std::string> scalars(const json& j) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : j.items()) {
    if (v.is_string()) out[k] = v.get<std::string>();
    else if (v.is_number() || v.is_boolean()) out[k] = v.dump();
  }
  return out;
}

double unit_to_ns(const std::string& unit, const Where& w) {
  if (unit == "ns") return 1;
  if (unit == "us") return 1e3;
  if (unit == "ms") return 1e6;
  if (unit == "s") return 1e9;
  bad(w, "unknown time unit \"" + unit + "\" (expected ns, us, ms or s)");
}

}  // namespace

// ---- detection -----------------------------------------------------------------------------------

FileKind detect_kind(const json& j) {
  if (!j.is_object()) return FileKind::kUnknown;
  if (j.contains("schema")) {
    return j["schema"] == "tegemma.parity" ? FileKind::kParity : FileKind::kUnknown;
  }
  if (j.contains("benchmarks")) return FileKind::kBench;
  if (j.contains("tests")) return FileKind::kGpuTests;
  if (j.contains("ctest_rc")) return FileKind::kCiSummary;
  return FileKind::kUnknown;
}

json parse_json_text(const std::string& text, const fs::path& source) {
  try {
    return json::parse(json_nonfinite_to_null(text));  // a raw Google Benchmark file's bare NaN reads as null
  } catch (const json::parse_error& e) {
    TG_FAIL(source.string(), ": malformed JSON at byte ", e.byte, ": ", e.what());
  }
}

// ---- benchmarks ----------------------------------------------------------------------------------

BenchFile parse_bench(const json& j, const fs::path& source) {
  const Where root{source.string(), ""};
  BenchFile f;
  f.path = source;
  const json& ctx = need(j, "context", root);
  need_object(ctx, root.at("context"));
  if (const json* v = opt(ctx, "json_schema_version")) {
    const int64_t sv = as_int(*v, root.at("context").at("json_schema_version"));
    if (sv != 1) bad(root.at("context").at("json_schema_version"), "unknown Google Benchmark JSON schema version " +
                                                                       std::to_string(sv) + " (this reader knows 1)");
  }
  f.context = scalars(ctx);
  const json& list = need(j, "benchmarks", root);
  if (!list.is_array()) bad(root.at("benchmarks"), "expected an array, got " + describe(list));
  static const std::set<std::string> kNotCounters = {"family_index", "per_family_instance_index", "repetitions",
                                                     "repetition_index", "threads", "iterations", "real_time",
                                                     "cpu_time"};
  for (std::size_t i = 0; i < list.size(); ++i) {
    const Where w = root.at("benchmarks").at(i);
    const json& b = list[i];
    need_object(b, w);
    BenchEntry e;
    e.name = str_field(b, "name", w);
    e.run_name = opt_str(b, "run_name", w);
    if (e.run_name.empty()) e.run_name = e.name;
    e.run_type = opt_str(b, "run_type", w);
    if (e.run_type.empty()) e.run_type = "iteration";
    if (e.run_type == "aggregate") e.aggregate_name = str_field(b, "aggregate_name", w);
    if (const json* v = opt(b, "repetitions")) e.repetitions = as_int(*v, w.at("repetitions"));
    if (const json* v = opt(b, "repetition_index")) e.repetition_index = as_int(*v, w.at("repetition_index"));
    if (const json* v = opt(b, "iterations")) e.iterations = as_int(*v, w.at("iterations"));
    e.label = opt_str(b, "label", w);
    const json* err = opt(b, "error_occurred");
    if (err && err->is_boolean() && err->get<bool>()) {
      e.error = opt_str(b, "error_message", w);
      if (e.error.empty()) e.error = "error (no message)";
    } else {
      // A "cv" aggregate holds fractions ("aggregate_unit": "percentage"), not times.
      const bool fraction = opt_str(b, "aggregate_unit", w) == "percentage";
      const double scale = fraction ? 1.0 : unit_to_ns(str_field(b, "time_unit", w), w.at("time_unit"));
      e.real_time_ns = as_num(need(b, "real_time", w), w.at("real_time")) * scale;
      if (const json* v = opt(b, "cpu_time")) e.cpu_time_ns = as_num(*v, w.at("cpu_time")) * scale;
    }
    for (const auto& [k, v] : b.items()) {
      if (v.is_number() && !kNotCounters.count(k)) e.counters[k] = v.get<double>();
    }
    f.entries.push_back(std::move(e));
  }
  return f;
}

// ---- parity --------------------------------------------------------------------------------------

ParityFile parse_parity(const json& j, const fs::path& source) {
  const Where root{source.string(), ""};
  ParityFile f;
  f.path = source;
  if (str_field(j, "schema", root) != "tegemma.parity") bad(root.at("schema"), "not a parity report");
  const int64_t sv = as_int(need(j, "schema_version", root), root.at("schema_version"));
  if (sv != 1) bad(root.at("schema_version"), "unknown parity schema_version " + std::to_string(sv) +
                                                   " (this reader knows 1; see parity/SCHEMA.md)");
  f.status = str_field(j, "status", root);
  f.exit_code = static_cast<int>(as_int(need(j, "exit_code", root), root.at("exit_code")));
  const json& prov = need(j, "provenance", root);
  need_object(prov, root.at("provenance"));
  f.provenance = scalars(prov);
  if (const json* m = opt(j, "model")) {
    need_object(*m, root.at("model"));
    f.model_source = opt_str(*m, "source", root.at("model"));
    f.size_class = opt_str(*m, "size_class", root.at("model"));
  }
  if (const json* p = opt(j, "prompts"); p && p->is_object() && p->contains("ids")) {
    const Where w = root.at("prompts").at("ids");
    need_array((*p)["ids"], w);
    for (std::size_t i = 0; i < (*p)["ids"].size(); ++i) f.prompt_ids.push_back(as_str((*p)["ids"][i], w.at(i)));
  }
  if (const json* t = opt(j, "thresholds"); t && t->is_object() && t->contains("thresholds_version")) {
    f.thresholds_version = as_int((*t)["thresholds_version"], root.at("thresholds").at("thresholds_version"));
  }
  if (const json* r = opt(j, "run"); r && r->is_object() && r->contains("rejudged")) {
    const Where w = root.at("run").at("rejudged");
    const json& rj = (*r)["rejudged"];
    need_object(rj, w);
    if (rj.contains("from") && rj["from"].is_object() && rj["from"].contains("thresholds_version")) {
      f.rejudged_from_version = as_int(rj["from"]["thresholds_version"], w.at("from").at("thresholds_version"));
    }
    if (rj.contains("changed_checks")) f.rejudged_changed_checks = as_int(rj["changed_checks"], w.at("changed_checks"));
  }
  const json& cs = need(j, "comparisons", root);
  if (!cs.is_array()) bad(root.at("comparisons"), "expected an array, got " + describe(cs));
  for (std::size_t ci = 0; ci < cs.size(); ++ci) {
    const Where w = root.at("comparisons").at(ci);
    const json& cj = cs[ci];
    ParityComparison c;
    c.kind = str_field(cj, "kind", w);
    c.reference = str_field(cj, "reference", w);
    c.test = str_field(cj, "test", w);
    c.reference_recipe = str_field(cj, "reference_recipe", w);
    c.test_recipe = str_field(cj, "test_recipe", w);
    c.precision = str_field(cj, "precision", w);
    c.size_class = str_field(cj, "size_class", w);
    c.status = str_field(cj, "status", w);
    if (c.status != "pass" && c.status != "fail" && c.status != "error") {
      bad(w.at("status"), "expected pass, fail or error, got \"" + c.status + "\"");
    }
    c.title = opt_str(cj, "title", w);
    if (c.title.empty()) c.title = (c.reference.empty() ? "" : c.reference + " vs ") + c.test + ": " + c.kind;
    c.error = opt_str(cj, "error", w);
    if (const json* th = opt(cj, "thresholds")) {
      need_object(*th, w.at("thresholds"));
      for (const auto& [metric, t] : th->items()) {
        const Where tw = w.at("thresholds").at(metric);
        c.thresholds[metric] = {as_value(need(t, "value", tw), tw.at("value")), opt_str(t, "bound", tw)};
      }
    }
    const json& checks = need(cj, "checks", w);
    if (!checks.is_array()) bad(w.at("checks"), "expected an array, got " + describe(checks));
    for (std::size_t k = 0; k < checks.size(); ++k) {
      const Where kw = w.at("checks").at(k);
      const json& kj = checks[k];
      ParityCheck ch;
      const json& s = need(kj, "subject", kw);
      need_object(s, kw.at("subject"));
      if (const json* v = opt(s, "prompt")) ch.prompt = static_cast<int>(as_int(*v, kw.at("subject").at("prompt")));
      if (const json* v = opt(s, "layer")) ch.layer = static_cast<int>(as_int(*v, kw.at("subject").at("layer")));
      ch.prompt_id = opt_str(s, "prompt_id", kw.at("subject"));
      ch.part = opt_str(s, "part", kw.at("subject"));
      ch.metric = str_field(kj, "metric", kw);
      ch.value = as_value(need(kj, "value", kw), kw.at("value"));
      ch.verdict = str_field(kj, "verdict", kw);
      if (ch.verdict != "pass" && ch.verdict != "fail" && ch.verdict != "near_tie" && ch.verdict != "info") {
        bad(kw.at("verdict"), "expected pass, fail, near_tie or info, got \"" + ch.verdict + "\"");
      }
      ch.detail = opt_str(kj, "detail", kw);
      c.checks.push_back(std::move(ch));
    }
    if (const json* se = opt(cj, "series")) {
      need_object(*se, w.at("series"));
      for (const auto& [name, pts] : se->items()) {
        const Where sw = w.at("series").at(name);
        if (!pts.is_array()) bad(sw, "expected an array of [x, y] points, got " + describe(pts));
        auto& out = c.series[name];
        for (std::size_t p = 0; p < pts.size(); ++p) {
          if (!pts[p].is_array() || pts[p].size() != 2) bad(sw.at(p), "expected [x, y], got " + describe(pts[p]));
          out.emplace_back(as_value(pts[p][0], sw.at(p)), as_value(pts[p][1], sw.at(p)));
        }
      }
    }
    if (const json* n = opt(cj, "notes")) {
      need_array(*n, w.at("notes"));
      for (std::size_t k = 0; k < n->size(); ++k) c.notes.push_back(as_str((*n)[k], w.at("notes").at(k)));
    }
    f.comparisons.push_back(std::move(c));
  }
  if (const json* e = opt(j, "errors")) {
    need_array(*e, root.at("errors"));
    for (std::size_t k = 0; k < e->size(); ++k) f.errors.push_back(as_str((*e)[k], root.at("errors").at(k)));
  }
  return f;
}

// ---- GPU tests, CI summaries ---------------------------------------------------------------------

int64_t GpuTestsFile::failed() const {
  return std::count_if(tests.begin(), tests.end(), [](const GpuTest& t) { return t.status == "fail"; });
}
int64_t GpuTestsFile::passed() const {
  return std::count_if(tests.begin(), tests.end(), [](const GpuTest& t) { return t.status == "run"; });
}

GpuTestsFile parse_gpu_tests(const json& j, const fs::path& source) {
  const Where root{source.string(), ""};
  GpuTestsFile f;
  f.path = source;
  f.commit = opt_str(j, "commit", root);
  f.gpu = opt_str(j, "gpu", root);
  f.labels = opt_str(j, "labels", root);
  f.excluded = opt_str(j, "excluded_regex", root);
  const json& tests = need(j, "tests", root);
  if (!tests.is_array()) bad(root.at("tests"), "expected an array, got " + describe(tests));
  for (std::size_t i = 0; i < tests.size(); ++i) {
    const Where w = root.at("tests").at(i);
    GpuTest t;
    t.name = str_field(tests[i], "name", w);
    t.status = str_field(tests[i], "status", w);
    if (const json* v = opt(tests[i], "time")) t.time_s = as_num(*v, w.at("time"));
    f.tests.push_back(std::move(t));
  }
  return f;
}

CiSummary parse_ci_summary(const json& j, const fs::path& source) {
  need_object(j, {source.string(), ""});
  return {source, scalars(j)};
}

// ---- training logs -------------------------------------------------------------------------------

void label_from_stem(const std::string& stem, TrainLog& log) {
  std::string engine, recipe, tok;
  auto take = [&] {
    std::string t;
    for (char c : tok) t += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (t == "reference" || t == "ref") engine = "reference";
    else if (t == "impl" || t == "hf") engine = t;
    else if (t == "bf16" || t == "delayed" || t == "current" || t == "block") recipe = t;
    tok.clear();
  };
  for (char c : stem) {
    if (c == '_' || c == '-' || c == '.' || c == ' ') take();
    else tok += c;
  }
  take();
  log.engine = engine;
  log.recipe = recipe;
  log.label = engine.empty() ? stem : recipe.empty() ? engine : engine + "[" + recipe + "]";
}

TrainLog parse_train_log(const std::string& text, const fs::path& source) {
  TrainLog log;
  log.path = source;
  label_from_stem(source.stem().string(), log);
  std::map<int64_t, TrainPoint> by_step;
  // step -> measurement keys given (one twice for a step is an error). `tegemma train` writes a step's training
  // record and its validation record as two lines: the descriptive keys (engine, recipe, ...) repeat, and must
  // agree with the rest of the log.
  std::map<int64_t, std::set<std::string>> seen;
  std::istringstream in(text);
  std::string line;
  std::string label, engine, recipe;
  for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const Where w{source.string() + ":" + std::to_string(lineno), ""};
    const json j = parse_json_text(line, w.file);
    need_object(j, w);
    const int64_t step = as_int(need(j, "step", w), w.at("step"));
    if (step < 0) bad(w.at("step"), "expected a step >= 0, got " + std::to_string(step));
    if (!j.contains("loss") && !j.contains("val_loss")) bad(w, "needs \"loss\" or \"val_loss\" (missing both)");
    TrainPoint& p = by_step[step];
    p.step = step;
    for (const auto& [k, v] : j.items()) {
      if (k == "step") continue;
      auto same = [&](std::string& field) {
        const std::string value = as_str(v, w.at(k));
        if (!field.empty() && field != value) bad(w.at(k), "\"" + value + "\" differs from \"" + field + "\" earlier in the log");
        field = value;
      };
      if (k == "label") { same(label); continue; }
      if (k == "engine") { same(engine); continue; }
      if (k == "recipe") { same(recipe); continue; }
      const bool measurement = k == "loss" || k == "val_loss" || k == "grad_norm" || k == "lr" || k == "tokens_per_s" ||
                               k == "tokens_per_second" || (k.size() > 4 && k.ends_with("_gib"));
      if (!measurement) continue;  // other descriptive fields (num_params, fp8 statistics, ...) are not plotted
      if (!seen[step].insert(k).second) bad(w.at(k), "given twice for step " + std::to_string(step));
      if (k == "loss") p.loss = as_value(v, w.at(k), true);
      else if (k == "val_loss") p.val_loss = as_value(v, w.at(k), true);
      else if (v.is_null()) continue;
      else if (k == "grad_norm") p.grad_norm = as_num(v, w.at(k));
      else if (k == "lr") p.lr = as_num(v, w.at(k));
      else if (k == "tokens_per_s" || k == "tokens_per_second") p.tokens_per_s = as_num(v, w.at(k));
      else if (k.size() > 4 && k.ends_with("_gib")) p.memory_gib[k] = as_num(v, w.at(k));
    }
  }
  if (by_step.empty()) TG_FAIL(source.string(), ": no training records (expected JSON lines with \"step\" and \"loss\")");
  for (auto& [s, p] : by_step) log.points.push_back(std::move(p));
  if (!engine.empty()) log.engine = engine;
  if (!recipe.empty()) log.recipe = recipe;
  if (!label.empty()) log.label = label;
  else if (!engine.empty() || !recipe.empty())
    log.label = log.engine.empty() ? log.label : log.recipe.empty() ? log.engine : log.engine + "[" + log.recipe + "]";
  return log;
}

// ---- loading -------------------------------------------------------------------------------------

static void load_parsed(const json& j, const fs::path& path, ResultSet& out) {
  switch (detect_kind(j)) {
    case FileKind::kBench: out.bench.push_back(parse_bench(j, path)); break;
    case FileKind::kParity: out.parity.push_back(parse_parity(j, path)); break;
    case FileKind::kGpuTests: out.gpu_tests.push_back(parse_gpu_tests(j, path)); break;
    case FileKind::kCiSummary: out.summaries.push_back(parse_ci_summary(j, path)); break;
    default: {
      std::string why = "not a benchmark, parity, GPU-test or CI-summary JSON";
      if (j.is_object() && j.contains("schema") && j["schema"].is_string()) {
        why = "schema \"" + j["schema"].get<std::string>() + "\" is not one the report reads";
      }
      out.skipped.push_back(path.string() + ": " + why);
    }
  }
}

void load_file(const fs::path& path, ResultSet& out) {
  const std::string ext = path.extension().string();
  TG_CHECK(ext == ".json" || ext == ".jsonl", path.string(), ": not a result file (expected .json or .jsonl)");
  const std::string text = read_file(path);
  try {
    if (ext == ".jsonl") out.train.push_back(parse_train_log(text, path));
    else load_parsed(parse_json_text(text, path), path, out);
  } catch (const json::exception& e) {  // a reader missed a type check: still name the file
    TG_FAIL(path.string(), ": unexpected JSON structure: ", e.what());
  }
}

ResultSet load_results(const std::vector<fs::path>& inputs) {
  ResultSet rs;
  rs.inputs = inputs;
  for (const auto& in : inputs) {
    TG_CHECK(fs::exists(in), in.string(), ": no such file or directory");
    if (!fs::is_directory(in)) {
      load_file(in, rs);
      continue;
    }
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(in)) {
      const auto ext = e.path().extension();
      if (e.is_regular_file() && (ext == ".json" || ext == ".jsonl")) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) load_file(f, rs);
  }
  return rs;
}

}  // namespace tg::reports
