#include "reports/bench_compare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/check.h"
#include "reports/format.h"

namespace tg::reports {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Sample standard deviation over the mean; nullopt for fewer than 2 samples or a zero mean.
std::optional<double> rel_spread(const std::vector<double>& v) {
  if (v.size() < 2) return std::nullopt;
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  if (mean <= 0) return std::nullopt;
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return std::sqrt(ss / static_cast<double>(v.size() - 1)) / mean;
}

// One benchmark as one file holds it: its repetitions and aggregates.
struct FileRun {
  std::vector<double> samples;
  std::map<std::string, std::vector<double>> counters;
  std::optional<double> noise;
  std::string noise_source, error, label;
};

std::vector<std::pair<std::string, FileRun>> runs_of(const BenchFile& f) {
  std::vector<std::pair<std::string, FileRun>> out;
  std::map<std::string, std::size_t> at;
  std::map<std::string, const BenchEntry*> median_agg, mean_agg, cv_agg, stddev_agg;
  for (const auto& e : f.entries) {
    if (!at.count(e.run_name)) {
      at[e.run_name] = out.size();
      out.emplace_back(e.run_name, FileRun{});
    }
    FileRun& r = out[at[e.run_name]].second;
    if (!e.label.empty()) r.label = e.label;
    if (!e.error.empty()) {
      if (r.error.empty()) r.error = e.error;
      continue;
    }
    if (e.run_type != "aggregate") {
      r.samples.push_back(e.real_time_ns);
      for (const auto& [k, v] : e.counters) r.counters[k].push_back(v);
    } else if (e.aggregate_name == "median") {
      median_agg[e.run_name] = &e;
    } else if (e.aggregate_name == "mean") {
      mean_agg[e.run_name] = &e;
    } else if (e.aggregate_name == "cv") {
      cv_agg[e.run_name] = &e;
    } else if (e.aggregate_name == "stddev") {
      stddev_agg[e.run_name] = &e;
    }
  }
  for (auto& [name, r] : out) {
    const BenchEntry* central = median_agg.count(name) ? median_agg[name] : mean_agg.count(name) ? mean_agg[name] : nullptr;
    if (r.samples.empty() && central) {  // aggregates only (--benchmark_report_aggregates_only)
      r.samples.push_back(central->real_time_ns);
      for (const auto& [k, v] : central->counters) r.counters[k].push_back(v);
    }
    if (cv_agg.count(name)) {
      r.noise = cv_agg[name]->real_time_ns;
      r.noise_source = "cv aggregate";
    } else if (stddev_agg.count(name) && mean_agg.count(name) && mean_agg[name]->real_time_ns > 0) {
      r.noise = stddev_agg[name]->real_time_ns / mean_agg[name]->real_time_ns;
      r.noise_source = "stddev aggregate";
    } else if (auto s = rel_spread(r.samples)) {
      r.noise = s;
      r.noise_source = "repetitions";
    }
    if (!r.samples.empty()) r.error.clear();  // some repetitions ran
  }
  return out;
}

std::string time_or_dash(double ns, bool have) { return have ? fmt_time_ns(ns) : "-"; }

nlohmann::json num_json(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

}  // namespace

// ---- BenchSet ------------------------------------------------------------------------------------

BenchSet::BenchSet(const std::vector<BenchFile>& files) {
  std::map<std::string, std::map<std::string, std::vector<double>>> counter_medians;  // name -> counter -> per file
  for (const auto& f : files) {
    const std::size_t ctx = contexts_.size();
    contexts_.push_back(f.context);
    for (auto& [name, run] : runs_of(f)) {
      if (!index_.count(name)) {
        index_[name] = stats_.size();
        BenchStat fresh;
        fresh.name = name;
        stats_.push_back(std::move(fresh));
        context_index_[name] = ctx;
      }
      BenchStat& s = stats_[index_[name]];
      s.sources.push_back(f.path.string());
      s.samples_ns.insert(s.samples_ns.end(), run.samples.begin(), run.samples.end());
      for (const auto& [k, v] : run.counters) counter_medians[name][k].push_back(median(v));
      if (run.noise && (!s.noise || *run.noise > *s.noise)) s.noise = run.noise, s.noise_source = run.noise_source;
      if (!run.label.empty()) s.label = run.label;
      if (run.samples.empty() && s.error.empty()) s.error = run.error;
    }
  }
  for (auto& s : stats_) {
    for (const auto& [k, v] : counter_medians[s.name]) s.counters[k] = median(v);
    s.time_ns = median(s.samples_ns);
    if (!s.samples_ns.empty()) s.error.clear();
    // Several files with this benchmark are repeated runs: their spread is noise too.
    if (s.sources.size() > 1) {
      if (auto r = rel_spread(s.samples_ns); r && (!s.noise || *r > *s.noise)) {
        s.noise = r;
        s.noise_source = "repeated runs";
      }
    }
  }
}

const BenchStat* BenchSet::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &stats_[it->second];
}

const std::map<std::string, std::string>* BenchSet::context_of(const std::string& name) const {
  auto it = context_index_.find(name);
  return it == context_index_.end() ? nullptr : &contexts_[it->second];
}

std::map<std::string, double> noise_from_runs(const std::vector<BenchFile>& runs) {
  std::map<std::string, std::vector<double>> medians;
  for (const auto& f : runs) {
    const BenchSet one({f});
    for (const auto& s : one.stats())
      if (s.error.empty() && std::isfinite(s.time_ns)) medians[s.name].push_back(s.time_ns);
  }
  std::map<std::string, double> out;
  for (const auto& [name, v] : medians)
    if (auto r = rel_spread(v)) out[name] = *r;
  return out;
}

// ---- comparison ----------------------------------------------------------------------------------

const char* to_string(Change c) {
  switch (c) {
    case Change::kSame: return "same";
    case Change::kRegression: return "REGRESSION";
    case Change::kImprovement: return "faster";
    case Change::kNewError: return "NEW ERROR";
    case Change::kStillError: return "error (both)";
    case Change::kFixed: return "fixed";
    case Change::kRemoved: return "removed";
    case Change::kAdded: return "added";
  }
  return "?";
}

int64_t CompareResult::count(Change c) const {
  return std::count_if(rows.begin(), rows.end(), [c](const CompareRow& r) { return r.change == c; });
}

CompareResult compare_bench(const BenchSet& old_set, const BenchSet& new_set, const CompareOptions& opts) {
  TG_CHECK(opts.noise_k > 0, "compare_bench: noise_k must be positive, got ", opts.noise_k);
  CompareResult res;
  res.options = opts;
  for (const auto& n : new_set.stats()) {
    CompareRow row;
    row.name = n.name;
    row.new_ns = n.time_ns;
    const BenchStat* o = old_set.find(n.name);
    if (!o) {
      row.change = Change::kAdded;
      row.error = n.error;
      res.rows.push_back(row);
      continue;
    }
    row.old_ns = o->time_ns;
    const bool old_err = !o->error.empty(), new_err = !n.error.empty();
    if (old_err || new_err) {
      row.change = old_err && new_err ? Change::kStillError : new_err ? Change::kNewError : Change::kFixed;
      row.error = new_err ? n.error : o->error;
      res.rows.push_back(row);
      continue;
    }
    row.time_ratio = o->time_ns > 0 ? n.time_ns / o->time_ns : std::nan("");
    for (const char* k : kThroughputCounters) {
      if (o->counters.count(k) && n.counters.count(k)) {
        row.counter = k;
        row.old_counter = o->counters.at(k);
        row.new_counter = n.counters.at(k);
        row.counter_ratio = row.old_counter > 0 ? row.new_counter / row.old_counter : std::nan("");
        break;
      }
    }
    // The noise of a ratio of two measurements; a side without an estimate is assumed as noisy as the other.
    if (o->noise || n.noise) {
      const double a = o->noise.value_or(*n.noise), b = n.noise.value_or(*o->noise);
      row.noise = std::sqrt(a * a + b * b);
      row.noise_source = o->noise ? o->noise_source : n.noise_source;
    }
    if (auto it = opts.run_noise.find(n.name); it != opts.run_noise.end()) {
      const double r = std::sqrt(2.0) * it->second;
      if (!row.noise || r > *row.noise) row.noise = r, row.noise_source = "noise runs";
    }
    if (opts.threshold) row.threshold = std::max(*opts.threshold, opts.noise_k * row.noise.value_or(0));
    else if (row.noise) row.threshold = std::max(opts.floor_with_noise, opts.noise_k * *row.noise);
    else row.threshold = opts.default_threshold;
    if (!std::isfinite(row.time_ratio)) row.change = Change::kSame;
    else if (row.time_ratio > 1 + row.threshold) row.change = Change::kRegression;
    else if (row.time_ratio < 1 / (1 + row.threshold)) row.change = Change::kImprovement;
    res.rows.push_back(row);
  }
  for (const auto& o : old_set.stats()) {
    if (new_set.find(o.name)) continue;
    CompareRow row;
    row.name = o.name;
    row.old_ns = o.time_ns;
    row.change = Change::kRemoved;
    res.rows.push_back(row);
  }
  return res;
}

std::string CompareResult::table() const {
  std::vector<std::vector<std::string>> t;
  t.push_back({"benchmark", "old", "new", "new/old", "counter", "new/old", "noise", "threshold", "change"});
  for (const auto& r : rows) {
    const bool have_old = r.change != Change::kAdded && r.old_ns > 0;
    const bool have_new = r.change != Change::kRemoved && r.new_ns > 0;
    const bool ratio = r.change == Change::kSame || r.change == Change::kRegression || r.change == Change::kImprovement;
    t.push_back({r.name, time_or_dash(r.old_ns, have_old), time_or_dash(r.new_ns, have_new),
                 ratio ? fmt_sig(r.time_ratio, 4) : "-", r.counter.empty() ? "-" : r.counter,
                 ratio && !r.counter.empty() ? fmt_sig(r.counter_ratio, 4) : "-",
                 r.noise ? fmt_pct(*r.noise, 1) : "-", ratio ? fmt_pct(r.threshold, 1) : "-",
                 std::string(to_string(r.change)) + (r.error.empty() ? "" : ": " + r.error)});
  }
  std::vector<std::size_t> w(t[0].size(), 0);
  for (const auto& row : t)
    for (std::size_t i = 0; i + 1 < row.size(); ++i) w[i] = std::max(w[i], row[i].size());
  std::string out;
  for (std::size_t k = 0; k < t.size(); ++k) {
    std::string line;
    for (std::size_t i = 0; i < t[k].size(); ++i) {
      std::string cell = t[k][i];
      if (i + 1 < t[k].size()) {
        const std::string pad(w[i] - cell.size(), ' ');
        cell = i == 0 || i == 4 ? cell + pad : pad + cell;  // names left, numbers right
      }
      line += (i ? "  " : "") + cell;
    }
    out += line + "\n";
    if (k == 0) {
      std::size_t total = 0;
      for (std::size_t i = 0; i + 1 < w.size(); ++i) total += w[i] + 2;
      out += std::string(total + 6, '-') + "\n";
    }
  }
  const int64_t compared = count(Change::kSame) + count(Change::kRegression) + count(Change::kImprovement);
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "\n%lld compared: %lld regressions, %lld new errors, %lld faster, %lld unchanged; %lld errors in both, "
                "%lld fixed, %lld added, %lld removed.\n",
                static_cast<long long>(compared), static_cast<long long>(count(Change::kRegression)),
                static_cast<long long>(count(Change::kNewError)), static_cast<long long>(count(Change::kImprovement)),
                static_cast<long long>(count(Change::kSame)), static_cast<long long>(count(Change::kStillError)),
                static_cast<long long>(count(Change::kFixed)), static_cast<long long>(count(Change::kAdded)),
                static_cast<long long>(count(Change::kRemoved)));
  out += buf;
  out += "Threshold: max(" +
         (options.threshold ? fmt_pct(*options.threshold, 1) + " (--threshold)"
                            : fmt_pct(options.floor_with_noise, 1) + " floor") +
         ", " + fmt_sig(options.noise_k, 2) + " x noise of the ratio); " + fmt_pct(options.default_threshold, 1) +
         " where no noise was measured" + (options.threshold ? " (or --threshold)" : "") + ".\n";
  out += regressions() ? "RESULT: regression\n" : "RESULT: no regression\n";
  return out;
}

nlohmann::json CompareResult::to_json() const {
  nlohmann::json rs = nlohmann::json::array();
  for (const auto& r : rows) {
    nlohmann::json j = {{"name", r.name}, {"change", to_string(r.change)}, {"flagged", r.flagged()}};
    if (r.change != Change::kAdded) j["old_ns"] = num_json(r.old_ns);
    if (r.change != Change::kRemoved) j["new_ns"] = num_json(r.new_ns);
    if (r.change == Change::kSame || r.change == Change::kRegression || r.change == Change::kImprovement) {
      j["time_ratio"] = num_json(r.time_ratio);
      j["threshold"] = r.threshold;
      if (!r.counter.empty()) {
        j["counter"] = r.counter;
        j["old_counter"] = num_json(r.old_counter);
        j["new_counter"] = num_json(r.new_counter);
        j["counter_ratio"] = num_json(r.counter_ratio);
      }
    }
    if (r.noise) {
      j["noise"] = *r.noise;
      j["noise_source"] = r.noise_source;
    }
    if (!r.error.empty()) j["error"] = r.error;
    rs.push_back(std::move(j));
  }
  nlohmann::json opts = {{"noise_k", options.noise_k},
                         {"floor_with_noise", options.floor_with_noise},
                         {"default_threshold", options.default_threshold}};
  if (options.threshold) opts["threshold"] = *options.threshold;
  return {{"schema", "tegemma.bench_compare"},
          {"schema_version", 1},
          {"old", old_source},
          {"new", new_source},
          {"options", opts},
          {"regressions", regressions()},
          {"exit_code", exit_code()},
          {"rows", rs}};
}

}  // namespace tg::reports
