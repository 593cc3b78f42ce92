#include "reports/report_model.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <tuple>

#include "common/gemma_config.h"
#include "common/provenance.h"
#include "reports/format.h"

namespace tg::reports::model {

namespace {

constexpr const char* kRecipeOrder[] = {"bf16", "delayed", "current", "block"};

int recipe_rank(const std::string& p) {
  for (int i = 0; i < 4; ++i)
    if (p == kRecipeOrder[i]) return i;
  return 4;
}

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::optional<double> counter(const BenchStat& s, const char* k) {
  auto it = s.counters.find(k);
  if (it == s.counters.end() || !std::isfinite(it->second)) return std::nullopt;
  return it->second;
}

double ctx_double(const std::map<std::string, std::string>* ctx, const char* key, double fallback) {
  if (!ctx) return fallback;
  auto it = ctx->find(key);
  if (it == ctx->end()) return fallback;
  try {
    return std::stod(it->second);
  } catch (...) {
    return fallback;
  }
}

// ---- parity ----------------------------------------------------------------------------------------

bool lower_is_worse(const ParityComparison& c, const std::string& metric) {
  if (auto it = c.thresholds.find(metric); it != c.thresholds.end() && !it->second.bound.empty()) {
    return it->second.bound == "min";
  }
  for (const char* m : {"cosine", "agreement", "overlap"})
    if (metric.find(m) != std::string::npos) return true;
  return false;
}

int verdict_rank(const std::string& v) { return v == "fail" ? 3 : v == "near_tie" ? 2 : v == "pass" ? 1 : 0; }

std::string threshold_text(const ParityComparison& c, const std::string& metric) {
  auto it = c.thresholds.find(metric);
  if (it == c.thresholds.end() || it->second.bound == "param") return "";
  return (it->second.bound == "min" ? ">= " : "<= ") + fmt_sig(it->second.value, 4);
}

double severity(const ParityComparison& c, const std::string& metric, double v) {
  auto it = c.thresholds.find(metric);
  if (it == c.thresholds.end() || it->second.bound == "param" || it->second.bound.empty()) return -1;
  if (!std::isfinite(v)) return 2;
  const double t = it->second.value;
  if (it->second.bound == "min") return t < 1 ? std::max(0.0, (1 - v) / (1 - t)) : (v >= t ? 0 : 2);
  return t > 0 ? std::max(0.0, v / t) : (v > 0 ? 2 : 0);
}

std::string where(const ParityCheck& k) {
  std::string s;
  if (k.layer >= 0) s = "layer " + std::to_string(k.layer);
  else if (!k.part.empty()) s = k.part;
  if (k.prompt >= 0) s += (s.empty() ? "" : ", ") + std::string("prompt ") + std::to_string(k.prompt) +
                          (k.prompt_id.empty() ? "" : " (" + k.prompt_id + ")");
  return s;
}

std::vector<std::string> ordered_metrics(const std::set<std::string>& present, std::initializer_list<const char*> pref) {
  std::vector<std::string> out;
  for (const char* m : pref)
    if (present.count(m)) out.push_back(m);
  for (const auto& m : present)
    if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
  return out;
}

bool is_worse(const ParityComparison& c, const ParityCheck& k, double than) {
  return (lower_is_worse(c, k.metric) ? k.value < than : k.value > than) || (std::isnan(k.value) && !std::isnan(than));
}

// One heat-map cell from its checks (the prompts of one metric at one layer, or at the logits). Some metrics are
// judged once over all prompts pooled, with each prompt's own value as an unjudged "info" check (mismatch_fraction:
// the share of elements beyond the allclose tolerance); then the cell shows and colours the judged value, and the
// worst single prompt, which no threshold applies to, is named in the tooltip. Otherwise the cell is the worst value
// over the prompts.
void fill_cell(HeatCell& cell, const ParityComparison& c, const std::vector<const ParityCheck*>& checks) {
  bool judged = false;
  for (const auto* k : checks) judged |= k->verdict != "info";
  int n = 0;
  const ParityCheck* worst_info = nullptr;
  for (const auto* k : checks) {
    if (judged && k->verdict == "info") {
      if (!worst_info || is_worse(c, *k, worst_info->value)) worst_info = k;
      continue;
    }
    ++n;
    if (!cell.present || is_worse(c, *k, cell.value)) {
      cell.value = k->value;
      const std::string w = where(*k);
      cell.tooltip = (w.empty() ? "" : (k->prompt >= 0 ? "worst at " : "at ") + w) +
                     (k->detail.empty() ? "" : (w.empty() ? "" : ": ") + k->detail);
    }
    if (verdict_rank(k->verdict) > verdict_rank(cell.verdict) || !cell.present) cell.verdict = k->verdict;
    cell.present = true;
  }
  if (!cell.present) return;
  if (n > 1) cell.tooltip += " (" + std::to_string(n) + " prompts)";
  if (worst_info)
    cell.tooltip += "; judged pooled over the prompts; worst single prompt (not judged) " + fmt_sig(worst_info->value, 4) +
                    " at " + where(*worst_info);
  cell.severity = severity(c, checks.front()->metric, cell.value);
  cell.limit = threshold_text(c, checks.front()->metric);
}

// A column's header shows its threshold only when every row of it is judged by that one threshold.
void column_limits(HeatTable& t) {
  for (std::size_t col = 0; col < t.metrics.size(); ++col) {
    std::set<std::string> limits;
    for (const auto& row : t.cells)
      if (row[col].present) limits.insert(row[col].limit);
    const std::string& mt = t.metrics[col];
    if (limits.size() > 1) {
      t.limit_per_row.insert(mt);
      t.threshold_text.erase(mt);
    } else if (limits.size() == 1) {
      t.threshold_text[mt] = *limits.begin();
    }
  }
}

void analyze_parity(const ResultSet& rs, Model& m) {
  std::map<std::string, RecipeVerdict> by;
  for (const auto& f : rs.parity) {
    m.has_parity = true;
    for (const auto& e : f.errors) m.parity_errors.push_back(f.path.string() + ": " + e);
    if (f.rejudged_from_version > 0) {
      m.parity_notes.push_back(f.path.filename().string() + ": re-judged with thresholds v" +
                               std::to_string(f.thresholds_version) + " (the run was judged with v" +
                               std::to_string(f.rejudged_from_version) + "; " +
                               std::to_string(f.rejudged_changed_checks) + " check verdicts changed)");
    } else if (f.thresholds_version > 0) {
      m.parity_notes.push_back(f.path.filename().string() + ": thresholds v" + std::to_string(f.thresholds_version));
    }
    for (const auto& c : f.comparisons) {
      const std::string p = c.precision.empty() ? "(unknown)" : c.precision;
      RecipeVerdict& v = by[p];
      v.precision = p;
      ++v.comparisons;
      v.failed += c.status == "fail";
      v.errors += c.status == "error";
      if (!c.error.empty()) m.parity_errors.push_back(c.title + ": " + c.error);
      for (const auto& k : c.checks) {
        v.near_ties += k.verdict == "near_tie";
        if (k.verdict != "fail") continue;
        if (v.violations++ == 0) {
          v.first_failure = c.title + ": " + where(k) + " " + k.metric + " " + fmt_sig(k.value, 4) +
                            (threshold_text(c, k.metric).empty() ? "" : " (threshold " + threshold_text(c, k.metric) + ")");
        }
      }
    }
  }
  for (auto& [p, v] : by) v.status = v.failed ? "fail" : v.errors ? "error" : "pass";
  for (const auto& [p, v] : by) m.verdicts.push_back(v);
  std::stable_sort(m.verdicts.begin(), m.verdicts.end(),
                   [](const auto& a, const auto& b) { return recipe_rank(a.precision) < recipe_rank(b.precision); });
  if (m.has_parity) {
    bool fail = false, error = !m.parity_errors.empty();
    for (const auto& v : m.verdicts) fail |= v.status == "fail", error |= v.status == "error";
    for (const auto& f : rs.parity) error |= f.status == "error";
    m.parity_status = fail ? "fail" : error || m.verdicts.empty() ? "error" : "pass";
  }

  // Per-layer heat maps and the cross-comparison logits table.
  std::set<std::string> logits_metrics;
  std::vector<const ParityComparison*> forward;
  for (const auto& f : rs.parity)
    for (const auto& c : f.comparisons)
      if (c.kind == "forward") forward.push_back(&c);
  for (const auto* c : forward)
    for (const auto& k : c->checks)
      if (k.part == "logits") logits_metrics.insert(k.metric);
  m.logits.title = "Final logits, worst over prompts";
  m.logits.metrics = ordered_metrics(logits_metrics, {"logits.kl_max", "logits.kl_mean", "logits.top1_agreement",
                                                      "logits.top1_hard_disagreements",
                                                      "logits.top1_near_tie_disagreements", "logits.top5_overlap",
                                                      "logits.cosine", "logits.rmse_over_range",
                                                      "logits.max_abs_err", "logits.mismatch_fraction"});
  for (const auto* c : forward) {
    HeatTable t;
    t.title = c->title;
    t.status = c->status;
    std::set<std::string> metrics;
    int max_layer = -1;
    for (const auto& k : c->checks) {
      if (k.layer < 0) continue;
      metrics.insert(k.metric);
      max_layer = std::max(max_layer, k.layer);
    }
    t.metrics = ordered_metrics(metrics, {"tap.cosine", "tap.rmse_over_range", "tap.max_abs_err", "tap.max_rel_err",
                                          "tap.mismatch_fraction", "tap.nonfinite"});
    for (const auto& mt : t.metrics) t.threshold_text[mt] = threshold_text(*c, mt);
    for (int l = 0; l <= max_layer; ++l) t.rows.push_back("layer " + std::to_string(l));
    t.cells.assign(t.rows.size(), std::vector<HeatCell>(t.metrics.size()));
    std::map<std::pair<int, std::size_t>, std::vector<const ParityCheck*>> by_cell;
    for (const auto& k : c->checks) {
      if (k.layer < 0) continue;
      const std::size_t col = std::find(t.metrics.begin(), t.metrics.end(), k.metric) - t.metrics.begin();
      by_cell[{k.layer, col}].push_back(&k);
    }
    for (const auto& [rc, checks] : by_cell) fill_cell(t.cells[rc.first][rc.second], *c, checks);
    column_limits(t);
    if (!t.rows.empty()) m.heat.push_back(std::move(t));

    m.logits.rows.push_back(c->title);
    m.logits.cells.emplace_back(m.logits.metrics.size());
    std::map<std::size_t, std::vector<const ParityCheck*>> by_col;
    for (const auto& k : c->checks) {
      auto it = std::find(m.logits.metrics.begin(), m.logits.metrics.end(), k.metric);
      if (k.part != "logits" || it == m.logits.metrics.end()) continue;
      by_col[it - m.logits.metrics.begin()].push_back(&k);
    }
    for (const auto& [col, checks] : by_col) fill_cell(m.logits.cells.back()[col], *c, checks);
  }
  // One row per comparison: its precision and size class pick its thresholds, so a column may mix several.
  column_limits(m.logits);

  for (const auto& f : rs.parity) {
    for (const auto& c : f.comparisons) {
      if (c.kind != "generation") continue;
      GenerationRow g;
      g.title = c.title;
      g.status = c.status;
      g.comparison = &c;
      std::vector<double> agree;
      for (const auto& k : c.checks) {
        if (k.metric == "generation.token_agreement") agree.push_back(k.value);
        if (k.metric != "generation.first_divergence_step") continue;
        ++g.prompts;
        g.identical += k.value < 0;
        g.near_ties += k.verdict == "near_tie";
        g.hard += k.verdict == "fail";
      }
      for (double a : agree) g.mean_agreement += a / static_cast<double>(agree.size()), g.min_agreement = std::min(g.min_agreement, a);
      if (agree.empty()) g.min_agreement = std::nan(""), g.mean_agreement = std::nan("");
      m.generation.push_back(g);
    }
  }
}

// ---- loss curves -------------------------------------------------------------------------------------

// The mean of the `window` values centred on each point (odd window), for the points with a whole window on both
// sides: no point is the mean of fewer values than the others. Non-finite values are left out of their
// windows; a window with no finite value gives NaN (a gap in the line).
std::vector<std::pair<double, double>> moving_mean(const std::vector<std::pair<double, double>>& pts, int window) {
  const std::size_t n = pts.size(), w = static_cast<std::size_t>(std::max(1, window)), half = w / 2;
  std::vector<std::pair<double, double>> out;
  if (n < w) return out;
  std::vector<double> sum(n + 1, 0.0);
  std::vector<std::size_t> finite(n + 1, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const bool ok = std::isfinite(pts[i].second);
    sum[i + 1] = sum[i] + (ok ? pts[i].second : 0.0);
    finite[i + 1] = finite[i] + (ok ? 1 : 0);
  }
  for (std::size_t i = half; i + half < n; ++i) {
    const std::size_t a = i - half, b = i + half + 1;
    const std::size_t k = finite[b] - finite[a];
    out.emplace_back(pts[i].first, k ? (sum[b] - sum[a]) / static_cast<double>(k) : std::nan(""));
  }
  return out;
}

void finish_curve(Curve& c) {
  std::vector<double> finite;
  for (const auto& [s, l] : c.loss) {
    if (std::isfinite(l)) finite.push_back(l);
    else ++c.nonfinite;
  }
  const std::size_t tail = std::max<std::size_t>(1, finite.size() / 10);
  c.final_loss = std::nan("");
  if (!finite.empty()) {
    double sum = 0;
    for (std::size_t i = finite.size() - tail; i < finite.size(); ++i) sum += finite[i];
    c.final_loss = sum / static_cast<double>(tail);
  }
  for (auto it = c.val_loss.rbegin(); it != c.val_loss.rend(); ++it) {
    if (std::isfinite(it->second)) {
      c.final_val = it->second;
      break;
    }
  }
}

Curve new_curve(const std::string& label, const std::string& source) {
  Curve c;
  c.label = label;
  c.source = source;
  return c;
}

void split_label(const std::string& label, std::string& engine, std::string& recipe) {
  const auto b = label.find('[');
  engine = label.substr(0, b);
  recipe = b == std::string::npos ? "" : label.substr(b + 1, label.find_first_of(":]", b + 1) - b - 1);
}

void analyze_loss(const ResultSet& rs, Model& m) {
  LossSection& L = m.loss;
  std::set<std::string> labels;
  for (const auto& log : rs.train) {
    if (!labels.insert(log.label).second) continue;
    Curve c = new_curve(log.label, log.path.string());
    c.engine = log.engine;
    c.recipe = log.recipe;
    std::vector<double> tps;
    for (std::size_t i = 0; i < log.points.size(); ++i) {
      const auto& p = log.points[i];
      if (p.loss) c.loss.emplace_back(double(p.step), *p.loss);
      if (p.val_loss) c.val_loss.emplace_back(double(p.step), *p.val_loss);
      if (p.tokens_per_s && i >= log.points.size() / 10) tps.push_back(*p.tokens_per_s);
      for (const auto& [k, v] : p.memory_gib) {
        auto it = std::find_if(m.memory.begin(), m.memory.end(),
                               [&](const MemoryRow& r) { return r.source == c.source && r.what == k; });
        if (it == m.memory.end()) m.memory.push_back({"training: " + log.label, k, c.source, v});
        else it->gib = std::max(it->gib, v);
      }
    }
    if (!tps.empty()) c.tokens_per_s = median(tps);
    finish_curve(c);
    L.curves.push_back(std::move(c));
  }
  for (const auto& f : rs.parity) {
    for (const auto& cmp : f.comparisons) {
      if (cmp.kind != "loss_curve" && cmp.kind != "loss_health") continue;
      L.comparisons.push_back(&cmp);
      for (const auto& [series, label] : {std::pair<const char*, const std::string*>{"loss.reference", &cmp.reference},
                                          std::pair<const char*, const std::string*>{"loss.test", &cmp.test}}) {
        auto it = cmp.series.find(series);
        if (it == cmp.series.end() || label->empty() || !labels.insert(*label).second) continue;
        Curve c = new_curve(*label, f.path.string());
        split_label(*label, c.engine, c.recipe);
        c.loss = it->second;
        finish_curve(c);
        L.curves.push_back(std::move(c));
      }
    }
  }
  std::stable_sort(L.curves.begin(), L.curves.end(), [](const Curve& a, const Curve& b) {
    auto rank = [](const Curve& c) { return (c.engine == "reference" ? 0 : c.engine == "impl" ? 10 : 20) + recipe_rank(c.recipe); };
    return rank(a) < rank(b);
  });
  for (std::size_t i = 0; i < L.curves.size(); ++i) {
    if (L.curves[i].engine == "reference" && (L.curves[i].recipe.empty() || L.curves[i].recipe == "bf16")) {
      L.reference = static_cast<int>(i);
      L.curves[i].is_reference = true;
      break;
    }
  }
  if (L.reference < 0) return;
  std::map<double, double> ref, ref_val;
  for (const auto& [s, l] : L.curves[L.reference].loss) ref[s] = l;
  for (const auto& [s, l] : L.curves[L.reference].val_loss) ref_val[s] = l;
  std::size_t longest = 0;
  for (std::size_t i = 0; i < L.curves.size(); ++i) {
    if (static_cast<int>(i) == L.reference) continue;
    LossDiff d;
    d.label = L.curves[i].label;
    for (const auto& [s, l] : L.curves[i].loss) {
      auto it = ref.find(s);
      if (it != ref.end()) d.raw.emplace_back(s, l - it->second);
    }
    for (const auto& [s, l] : L.curves[i].val_loss) {
      auto it = ref_val.find(s);
      if (it != ref_val.end()) d.val.emplace_back(s, l - it->second);
    }
    longest = std::max(longest, d.raw.size());
    L.diffs.push_back(std::move(d));
  }
  // About 5% of the steps, odd so that each mean is centred on its step: 101 for a 2000-step run.
  L.diff_steps = static_cast<int>(longest);
  L.smooth_window = std::max(1, static_cast<int>(std::lround(0.05 * static_cast<double>(longest))));
  if (L.smooth_window % 2 == 0) ++L.smooth_window;
  for (auto& d : L.diffs) d.smoothed = moving_mean(d.raw, L.smooth_window);
}

// ---- benchmarks ----------------------------------------------------------------------------------

// "gemm/bf16/bf16xbf16->bf16/8192x2560x2048/manual_time" -> {"gemm", "bf16", "bf16xbf16->bf16", "8192x2560x2048"}
std::vector<std::string> name_parts(const std::string& name) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : name + "/") {
    if (c != '/') {
      cur += c;
      continue;
    }
    parts.push_back(cur);
    cur.clear();
  }
  while (parts.size() > 1) {
    const std::string& last = parts.back();
    if (last == "manual_time" || last == "real_time" || last == "process_time" || last.find(':') != std::string::npos)
      parts.pop_back();
    else
      break;
  }
  return parts;
}

// The Gemma layer a GEMM shape M x N x K belongs to, from the presets' dimensions ("gemma-2b QKV").
std::string gemma_gemm_role(const std::string& shape) {
  int64_t m = 0, n = 0, k = 0;
  if (std::sscanf(shape.c_str(), "%" SCNd64 "x%" SCNd64 "x%" SCNd64, &m, &n, &k) != 3) return "";
  for (const char* p : {"gemma-2b", "gemma-7b"}) {
    const GemmaConfig c = GemmaConfig::preset(p);
    const int64_t D = c.hidden_size, F = c.intermediate_size, Dh = c.head_dim;
    const int64_t H = c.num_attention_heads, Hkv = c.num_key_value_heads;
    const std::pair<const char*, std::pair<int64_t, int64_t>> roles[] = {
        {"QKV", {(H + 2 * Hkv) * Dh, D}}, {"attention out", {D, H * Dh}}, {"fc1 (gate+up)", {2 * F, D}},
        {"fc2", {D, F}},                  {"lm_head", {c.vocab_size, D}}};
    for (const auto& [role, nk] : roles)
      if (nk.first == n && nk.second == k) return std::string(p) + " " + role + (m <= 64 ? ", decode" : "");
  }
  return "";
}

std::string engine_display(const std::string& e) {
  if (e == "reference") return "reference (LibTorch BF16)";
  if (e.rfind("impl_", 0) == 0) return "impl " + e.substr(5);
  if (e == "hf" || e.rfind("hf_", 0) == 0) return "HF transformers" + (e.size() > 3 ? " " + e.substr(3) : "");
  return e;
}

std::string gemm_display(const std::string& v) {
  if (v == "torch_scaled_mm_fast") return "at::_scaled_mm fast";
  if (v == "torch_scaled_mm_split") return "at::_scaled_mm split";
  if (v == "torch_matmul") return "torch matmul (BF16)";
  return v;
}

bool is_fp8_name(const std::string& n) {
  return n.find("e4m3") != std::string::npos || n.find("fp8") != std::string::npos ||
         n.find("delayed") != std::string::npos || n.find("current") != std::string::npos ||
         n.find("block") != std::string::npos;
}

struct Placement {
  std::string section, group, series;
};

Placement place(const std::vector<std::string>& p) {
  const std::string& fam = p[0];
  auto join = [&](std::size_t from, std::size_t to) {
    std::string s;
    for (std::size_t i = from; i < to && i < p.size(); ++i) s += (s.empty() ? "" : " ") + p[i];
    return s;
  };
  if (fam == "e2e" && p.size() >= 5) {  // e2e/<workload>/<engine>/<dtype or recipe>/<preset>/<shape...>
    if (p[1] == "ceiling") return {"workloads", "", join(1, p.size())};
    const std::string series = p[2] == "impl" ? "impl " + p[3]
                               : engine_display(p[2]) + (p[3] == "bf16" ? "" : " " + p[3]);
    return {"workloads", p[4] + " " + p[1] + " " + join(5, p.size()), series};
  }
  if (fam == "model" || fam == "train" || fam == "generate" || fam == "e2e") {
    if (p.size() >= 2 && p[1].rfind("ceiling", 0) == 0) return {"workloads", "", p[1]};
    if (p.size() == 4) return {"workloads", p[1] + " " + fam + " " + p[3], engine_display(p[2])};
    return {"workloads", join(1, p.size() - 1), p.back()};
  }
  if (fam == "gemm" && p.size() == 4) {
    if (p[1].rfind("ceiling", 0) == 0) return {"gemm", "", p[1]};
    const std::string role = gemma_gemm_role(p[3]);
    return {"gemm", p[3] + (role.empty() ? "" : " (" + role + ")"), gemm_display(p[1])};
  }
  if (fam == "quantize" && p.size() == 4) return {"quantize", p[3], p[1] + (p[2].find("e4m3->") == 0 ? " " + p[2] : "")};
  if (fam == "attention" && p.size() >= 2) {
    if (p[1] == "decode" && p.size() == 6) return {"attention", p[2] + " decode, " + p[3] + " KV cache, " + p[4], p[5]};
    if (p[1] == "kv_append") return {"attention", "", join(1, p.size())};
    if (p.size() == 6) return {"attention", p[2] + " " + p[1] + " " + p[5], p[3] + " " + p[4]};
    return {"attention", join(1, p.size() - 1), p.back()};
  }
  static const std::set<std::string> kElementwise = {"rmsnorm", "rmsnorm+residual", "rmsnorm_bwd",
                                                     "geglu", "geglu_bwd",
                                                     "rope", "rope_bwd", "rope_computed", "rope_bwd_computed",
                                                     "embedding", "embedding_bwd", "layernorm",
                                                     "softmax", "cross_entropy", "adamw"};
  const std::string section = kElementwise.count(fam) ? "elementwise" : "other";
  if (p.size() == 1) return {section, fam, fam};
  if (p.size() == 2) return {section, fam, p[1]};
  return {section, fam + " " + p.back(), join(1, p.size() - 1)};
}

void measure(BenchItem& it, const std::vector<std::string>& parts, const BenchSet& set) {
  const BenchStat& s = *it.stat;
  const auto* ctx = set.context_of(s.name);
  const auto tokens = counter(s, "tokens_per_second"), flops = counter(s, "flops");
  const auto bytes = counter(s, "bytes_per_second"), gfrac = counter(s, "gemm_roofline_frac");
  const auto hfrac = counter(s, "hbm_roofline_frac");
  it.speedup_vs_reference = counter(s, "speedup_vs_reference");
  const double hbm = ctx_double(ctx, "hbm_roofline_bytes_per_second", 4.1e12);
  const bool fp8 = is_fp8_name(s.name);
  const double ceil = ctx_double(ctx, fp8 ? "fp8_gemm_ceiling_flops" : "bf16_gemm_ceiling_flops", std::nan(""));
  const std::string ceil_text = std::string(fp8 ? "FP8" : "BF16") + " GEMM ceiling" +
                                (std::isfinite(ceil) ? " (" + fmt_sig(ceil / 1e12, 4) + " TFLOP/s)" : "");
  if (!s.error.empty()) {
    it.value = std::nan("");
    it.text = "error: no result (see the benchmark errors)";
    it.unit = tokens ? "tokens/s" : flops ? "TFLOP/s" : bytes ? "TB/s" : "";
    return;
  }
  if (parts[0] == "model" || parts[0] == "train" || parts[0] == "generate" || parts[0] == "e2e") {
    if (tokens) {
      it.unit = "tokens/s";
      it.value = *tokens;
      // The roofline that binds: HBM for decode (bytes counted), the GEMM ceiling for train and prefill.
      const bool hbm_bound = hfrac && (!gfrac || *hfrac > *gfrac);
      it.frac = hbm_bound ? hfrac : gfrac;
      it.frac_of = hbm_bound ? "HBM roofline (" + fmt_sig(hbm / 1e12, 3) + " TB/s)" : ceil_text;
      it.text = fmt_si(*tokens) + " tok/s" + (it.frac ? " · " + fmt_frac(*it.frac) + (hbm_bound ? " HBM" : " GEMM") : "") +
                (it.speedup_vs_reference ? " · " + fmt_sig(*it.speedup_vs_reference, 3) + "x ref" : "");
      return;
    }
  }
  if (flops && (!hfrac || (gfrac && *gfrac >= *hfrac))) {
    it.unit = "TFLOP/s";
    it.value = *flops / 1e12;
    it.frac = gfrac;
    it.frac_of = ceil_text;
    it.text = fmt_sig(it.value, 4, false) + " TF/s" + (gfrac ? " · " + fmt_frac(*gfrac) : "");
  } else if (bytes) {
    it.unit = "TB/s";
    it.value = *bytes / 1e12;
    it.frac = hfrac;
    it.frac_of = "HBM roofline (" + fmt_sig(hbm / 1e12, 3) + " TB/s)";
    it.text = fmt_sig(it.value, 3, false) + " TB/s" + (hfrac ? " · " + fmt_frac(*hfrac) : "");
  } else if (tokens) {
    it.unit = "tokens/s";
    it.value = *tokens;
    it.text = fmt_si(*tokens) + " tok/s";
  } else {
    it.unit = "";
    it.value = s.time_ns;
    it.text = fmt_time_ns(s.time_ns);
  }
}

// Ceiling reference lines for a TFLOP/s chart: the ceilings its benchmarks were divided by, marked
// "measured" when a ceiling benchmark of the same run reproduces the value.
std::vector<RefLine> ceiling_lines(const std::vector<const BenchItem*>& items, const BenchSet& set) {
  std::vector<RefLine> out;
  std::set<std::string> done;
  for (const auto* it : items) {
    const auto* ctx = set.context_of(it->stat->name);
    for (const auto& [key, which] : {std::pair{"bf16_gemm_ceiling_flops", "BF16"}, std::pair{"fp8_gemm_ceiling_flops", "FP8"}}) {
      if (std::string(which) == "FP8" && !is_fp8_name(it->stat->name)) continue;
      const double v = ctx_double(ctx, key, std::nan(""));
      if (!std::isfinite(v)) continue;
      // bench/ sets the context's ceiling from its ceiling benchmark when that ran first in the same binary.
      bool measured = false;
      const std::string& file = it->stat->sources.front();
      for (const auto& s : set.stats()) {
        const bool ceiling = s.name.find("/ceiling") != std::string::npos && is_fp8_name(s.name) == (std::string(which) == "FP8");
        if (ceiling && s.error.empty() && std::find(s.sources.begin(), s.sources.end(), file) != s.sources.end())
          measured = true;
      }
      const std::string label = std::string(which) + " ceiling " + fmt_sig(v / 1e12, 4) + " TF/s (" +
                                (measured ? "measured in this run" : "documented") + ")";
      if (done.insert(label).second) out.push_back({v / 1e12, label, std::string(which) == "BF16" ? "#2c7bb6" : "#d7191c"});
    }
  }
  return out;
}

void analyze_bench(const ResultSet& rs, Model& m) {
  m.bench = BenchSet(rs.bench);
  m.bench_files = static_cast<int>(rs.bench.size());
  struct Def {
    const char* id;
    const char* title;
    const char* blurb;
  };
  static const Def kDefs[] = {
      {"workloads", "Throughput per workload",
       "End-to-end benchmarks: impl per recipe beside the LibTorch reference and the HF transformers anchor. "
       "Labels: tokens/s, % of the roofline that binds (the GEMM ceiling for train and prefill, HBM for decode), "
       "speedup over the reference."},
      {"gemm", "GEMMs",
       "TFLOP/s by shape (M x N x K) for every GEMM variant beside the at::_scaled_mm / torch matmul anchors; dashed "
       "lines are the ceilings the fractions are computed against. Shapes that are memory-bound (decode, small M) "
       "are charted in TB/s against the HBM roofline."},
      {"attention", "Attention", "Prefill and training passes in TFLOP/s (fraction of the BF16 GEMM ceiling); decode "
                                 "in TB/s of KV cache and weights read (fraction of the HBM roofline)."},
      {"quantize", "Quantize and cast kernels", "Achieved bandwidth and fraction of the HBM roofline; d2d_copy is "
                                                "the device-to-device copy measured in the same run."},
      {"elementwise", "Norms, activations, RoPE, embedding", "Achieved bandwidth and fraction of the HBM roofline."},
      {"other", "Other benchmarks", ""},
  };
  for (const auto& d : kDefs) m.sections.push_back(BenchSection{d.id, d.title, d.blurb, {}, {}});
  auto section = [&](const std::string& id) -> BenchSection& {
    for (auto& s : m.sections)
      if (s.id == id) return s;
    return m.sections.back();
  };
  for (const auto& s : m.bench.stats()) {
    const auto parts = name_parts(s.name);
    const Placement pl = place(parts);
    BenchItem it;
    it.stat = &s;
    it.group = pl.group;
    it.series = pl.series;
    measure(it, parts, m.bench);
    section(pl.section).items.push_back(std::move(it));
    if (!s.error.empty()) m.bench_errors.push_back(&s);
    for (const auto& [k, v] : s.counters) {
      if (k.size() > 4 && k.ends_with("_gib"))
        m.memory.push_back({pl.group.empty() ? s.name : pl.group, pl.series + " " + k, s.sources.front(), v});
    }
  }
  std::erase_if(m.sections, [](const BenchSection& s) { return s.items.empty(); });

  for (auto& sec : m.sections) {
    std::vector<std::string> units;
    for (const auto& it : sec.items)
      if (!it.group.empty() && !it.unit.empty() && std::find(units.begin(), units.end(), it.unit) == units.end())
        units.push_back(it.unit);
    // A benchmark that errored has no unit: it still gets its row in the section's first chart, saying so.
    for (auto& it : sec.items)
      if (!it.stat->error.empty() && !it.group.empty() && it.unit.empty() && !units.empty()) it.unit = units.front();
    for (const auto& unit : units) {
      ChartData ch;
      ch.id = sec.id + "-" + (unit == "TFLOP/s" ? "tflops" : unit == "TB/s" ? "tbs" : "tokens");
      ch.unit = unit;
      std::vector<const BenchItem*> all;
      for (const auto& it : sec.items) {
        if (it.group.empty() || it.unit != unit) continue;
        auto g = std::find_if(ch.groups.begin(), ch.groups.end(), [&](const auto& x) { return x.first == it.group; });
        if (g == ch.groups.end()) ch.groups.emplace_back(it.group, std::vector<const BenchItem*>{&it});
        else g->second.push_back(&it);
        all.push_back(&it);
      }
      if (unit == "TFLOP/s") {
        ch.title = sec.title + ": TFLOP/s" + (sec.id == "gemm" ? " by shape" : "");
        ch.value_label = "TFLOP/s (higher is better); labels: TFLOP/s · % of the GEMM ceiling";
        ch.ref_lines = ceiling_lines(all, m.bench);
      } else if (unit == "TB/s") {
        ch.title = sec.title + (sec.id == "gemm" ? ", memory-bound shapes" : "") + ": TB/s";
        ch.value_label = "TB/s (higher is better); labels: TB/s · % of the HBM roofline";
        const double hbm = ctx_double(m.bench.context_of(all.front()->stat->name), "hbm_roofline_bytes_per_second", 4.1e12);
        ch.ref_lines.push_back({hbm / 1e12, "HBM roofline " + fmt_sig(hbm / 1e12, 3) + " TB/s", "#d7191c"});
      } else {
        ch.title = sec.title + ": tokens/s";
        // Workloads span 100 tok/s (decode) to 200k tok/s (prefill): one axis would flatten the decode bars.
        ch.value_label = "% of the fastest in each workload (higher is better); labels: absolute tokens/s";
        ch.per_group_scale = true;
      }
      sec.charts.push_back(std::move(ch));
    }
  }

  for (const auto& sec : m.sections) {
    if (sec.id == "gemm") {
      for (const auto& it : sec.items) {
        if (it.group.empty()) continue;
        if (std::find(m.gemm.variants.begin(), m.gemm.variants.end(), it.series) == m.gemm.variants.end())
          m.gemm.variants.push_back(it.series);
        auto r = std::find_if(m.gemm.rows.begin(), m.gemm.rows.end(), [&](const auto& x) { return x.group == it.group; });
        if (r == m.gemm.rows.end()) {
          GemmTable::Row row;
          row.group = it.group;
          const auto paren = it.group.find(" (");
          row.shape = it.group.substr(0, paren);
          if (paren != std::string::npos) row.annotation = it.group.substr(paren + 2, it.group.size() - paren - 3);
          row.unit = it.unit;
          m.gemm.rows.push_back(row);
          r = m.gemm.rows.end() - 1;
        }
        if (!it.stat->error.empty()) r->errors.insert(it.series);
        else if (std::isfinite(it.value) && it.unit == r->unit) r->value[it.series] = it.value;
      }
      for (auto& r : m.gemm.rows) {
        auto a = r.value.find("fp8_tensor_fast"), b = r.value.find("at::_scaled_mm fast");
        if (a != r.value.end() && b != r.value.end() && b->second > 0) r.ours_vs_anchor = a->second / b->second;
      }
    }
    if (sec.id == "workloads") {
      for (const auto& it : sec.items) {
        if (it.group.empty()) continue;
        if (std::find(m.workloads.engines.begin(), m.workloads.engines.end(), it.series) == m.workloads.engines.end())
          m.workloads.engines.push_back(it.series);
        auto r = std::find_if(m.workloads.rows.begin(), m.workloads.rows.end(),
                              [&](const auto& x) { return x.workload == it.group; });
        if (r == m.workloads.rows.end()) {
          m.workloads.rows.push_back({it.group, {}});
          r = m.workloads.rows.end() - 1;
        }
        r->cell[it.series] = &it;
      }
    }
  }
}

// ---- headline ------------------------------------------------------------------------------------------

// The key a headline name is matched against: the run name without an aggregate suffix and without the trailing
// iterations:N / min_time:... / manual_time parts ("e2e/decode/impl/delayed/gemma-2b/B1/P128+N256"). Matching the
// whole key, not a string prefix, keeps `impl/delayed` from also taking `impl/delayed+fp8kv`.
std::string headline_key(const BenchEntry& e) {
  std::string n = e.run_name;
  // A file without run_name names an aggregate "<run>_median": the suffix is not part of the benchmark.
  if (e.run_type == "aggregate" && !e.aggregate_name.empty() && n == e.name && n.ends_with("_" + e.aggregate_name))
    n.resize(n.size() - e.aggregate_name.size() - 1);
  std::string key;
  for (const auto& p : name_parts(n)) key += (key.empty() ? "" : "/") + p;
  return key;
}

// One benchmark as the input files hold it.
struct HeadlineReading {
  bool found = false;
  std::optional<double> time_ns;
  std::map<std::string, double> counters;
  std::string run_name, error;
  std::vector<std::string> files;
  const BenchFile* first = nullptr;  // its context names the ceilings the fractions were computed against
};

// Per file: Google Benchmark's `_median` aggregate when the file has one (the median over its repetitions, robust
// to one slow repetition, which `_mean` is not), else the median of its repetitions, else its `_mean` aggregate.
// Over files (repeated runs of one suite): the median of those.
HeadlineReading read_headline(const std::vector<BenchFile>& files, const std::string& key) {
  HeadlineReading r;
  std::vector<double> times;
  std::map<std::string, std::vector<double>> counters;
  for (const auto& f : files) {
    const BenchEntry *med = nullptr, *mean = nullptr;
    std::vector<const BenchEntry*> reps;
    std::string error;
    bool here = false;
    for (const auto& e : f.entries) {
      if (headline_key(e) != key) continue;
      here = true;
      if (r.run_name.empty() || e.run_type != "aggregate") r.run_name = e.run_name;
      if (!e.error.empty()) {
        if (error.empty()) error = e.error;
      } else if (e.run_type != "aggregate") {
        reps.push_back(&e);
      } else if (e.aggregate_name == "median") {
        med = &e;
      } else if (e.aggregate_name == "mean") {
        mean = &e;
      }
    }
    if (!here) continue;
    r.found = true;
    r.files.push_back(f.path.filename().string());
    if (!r.first) r.first = &f;
    if (!med && reps.empty() && !mean) {
      if (r.error.empty()) r.error = error;
      continue;
    }
    if (med || (reps.empty() && mean)) {
      const BenchEntry* agg = med ? med : mean;
      times.push_back(agg->real_time_ns);
      for (const auto& [k, v] : agg->counters) counters[k].push_back(v);
    } else {
      std::vector<double> t;
      std::map<std::string, std::vector<double>> c;
      for (const auto* e : reps) {
        t.push_back(e->real_time_ns);
        for (const auto& [k, v] : e->counters) c[k].push_back(v);
      }
      times.push_back(median(t));
      for (const auto& [k, v] : c) counters[k].push_back(median(v));
    }
  }
  if (!times.empty()) {
    r.time_ns = median(times);
    for (const auto& [k, v] : counters) r.counters[k] = median(v);
    r.error.clear();  // some file has a result
  }
  return r;
}

enum class HeadlineMeasure { kTokens, kDecodeTokens, kSeconds, kMillis };

struct HeadlineSpec {
  std::string workload;
  HeadlineMeasure measure;
  bool hbm_bound;  // decode: the weight-bandwidth roofline; prefill, train and TTFT: the GEMM ceiling
  // Candidate names per engine, the first one any input holds wins (e.g. the FP8 lm_head variant before plain
  // delayed; bench_model's reference before bench_reference's).
  std::vector<std::string> fp8, bf16, reference, hf;
  std::optional<double> target;
  std::string target_text;
};

// The headline workloads, in the order they are shown. Targets are issue 7's (bench/bench_generate.cpp lists them).
std::vector<HeadlineSpec> headline_specs() {
  std::vector<HeadlineSpec> s;
  for (const auto& [preset, bxs] : {std::pair<std::string, std::string>{"gemma-2b", "8x2048"}, {"gemma-7b", "4x2048"}}) {
    const std::string x = "B" + bxs.substr(0, bxs.find('x')) + "xS" + bxs.substr(bxs.find('x') + 1);  // B8xS2048
    const std::string m = "model/" + preset + "/";
    s.push_back({"prefill " + preset + " " + bxs, HeadlineMeasure::kTokens, false,
                 {m + "impl_delayed/" + bxs}, {m + "impl_bf16/" + bxs},
                 {m + "reference/" + bxs, "e2e/prefill/reference/bf16/" + preset + "/" + x},
                 {"e2e/prefill/hf/bf16/" + preset + "/" + x, m + "hf/" + bxs}, std::nullopt, ""});
  }
  {
    const std::string t = "/gemma-2b/B4xS2048";
    s.push_back({"train step gemma-2b 4x2048", HeadlineMeasure::kTokens, false, {"e2e/train_step/impl/delayed" + t},
                 {"e2e/train_step/impl/bf16" + t}, {"e2e/train_step/reference/bf16" + t}, {"e2e/train_step/hf/bf16" + t},
                 std::nullopt, ""});
  }
  for (const auto& [preset, target] : {std::pair<std::string, double>{"gemma-2b", 1200}, {"gemma-7b", 380}}) {
    const std::string shape = "/" + preset + "/B1/P128+N256";
    s.push_back({"decode batch 1 " + preset + " P128+N256", HeadlineMeasure::kDecodeTokens, true,
                 {"e2e/decode/impl/delayed+fp8head" + shape, "e2e/decode/impl/delayed" + shape},
                 {"e2e/decode/impl/bf16" + shape}, {"e2e/decode/reference/bf16" + shape},
                 {"e2e/decode/hf/bf16" + shape}, target, fmt_sig(target, 4) + " tok/s"});
  }
  {
    const std::string shape = "/gemma-7b/B64/P20+N492";
    // FP8: the configuration built for the 2.5 s target first (FP8 KV cache and lm_head), else plain delayed.
    s.push_back({"TE tutorial gemma-7b B64 P20+N492", HeadlineMeasure::kSeconds, true,
                 {"e2e/decode/impl/delayed+fp8kv+fp8head" + shape, "e2e/decode/impl/delayed" + shape},
                 {"e2e/decode/impl/bf16" + shape}, {"e2e/decode/reference/bf16" + shape},
                 {"e2e/decode/hf/bf16" + shape}, 2.5, "<= 2.5 s"});
  }
  {
    const std::string shape = "/gemma-2b/B1/P2048";
    s.push_back({"time to first token gemma-2b B1 P2048", HeadlineMeasure::kMillis, false, {"e2e/ttft/impl/delayed" + shape},
                 {"e2e/ttft/impl/bf16" + shape}, {"e2e/ttft/reference/bf16" + shape}, {"e2e/ttft/hf/bf16" + shape},
                 std::nullopt, ""});
  }
  return s;
}

// The first candidate any input holds, as a cell in the row's unit.
HeadlineCell headline_cell(const std::vector<BenchFile>& files, const std::vector<std::string>& names,
                           HeadlineMeasure how, HeadlineReading* reading = nullptr, std::string* matched = nullptr) {
  HeadlineCell c;
  for (const auto& name : names) {
    HeadlineReading r = read_headline(files, name);
    if (!r.found) continue;
    c.present = true;
    c.bench = r.run_name;
    c.files = r.files;
    c.error = r.error;
    if (r.time_ns) {
      auto ctr = [&](const char* k) -> std::optional<double> {
        auto it = r.counters.find(k);
        if (it == r.counters.end() || !std::isfinite(it->second)) return std::nullopt;
        return it->second;
      };
      // Time rows: the benchmark's real time (end to end of the whole workload: manual time), else its `seconds`.
      const double scale = how == HeadlineMeasure::kSeconds ? 1e9 : 1e6;
      switch (how) {
        case HeadlineMeasure::kDecodeTokens:
          if ((c.value = ctr("decode_tokens_per_second"))) {
            c.counter = "decode_tokens_per_second";
            break;
          }
          [[fallthrough]];
        case HeadlineMeasure::kTokens:
          if ((c.value = ctr("tokens_per_second"))) c.counter = "tokens_per_second";
          break;
        case HeadlineMeasure::kSeconds:
        case HeadlineMeasure::kMillis:
          if (std::isfinite(*r.time_ns) && *r.time_ns > 0) {
            c.value = *r.time_ns / scale;
            c.counter = "real_time";
          } else if (auto sec = ctr("seconds")) {
            c.value = *sec * 1e9 / scale;
            c.counter = "seconds";
          }
          break;
      }
    }
    if (matched) *matched = name;
    if (reading) *reading = std::move(r);
    return c;
  }
  return c;
}

void analyze_headline(const ResultSet& rs, Model& m) {
  for (const auto& spec : headline_specs()) {
    HeadlineRow row;
    row.workload = spec.workload;
    row.higher_is_better = spec.measure == HeadlineMeasure::kTokens || spec.measure == HeadlineMeasure::kDecodeTokens;
    row.unit = spec.measure == HeadlineMeasure::kTokens         ? "tokens/s"
               : spec.measure == HeadlineMeasure::kDecodeTokens ? "decode tokens/s"
               : spec.measure == HeadlineMeasure::kSeconds      ? "s"
                                                                : "ms";
    HeadlineReading fp8;
    std::string fp8_name;
    row.impl_fp8 = headline_cell(rs.bench, spec.fp8, spec.measure, &fp8, &fp8_name);
    row.impl_bf16 = headline_cell(rs.bench, spec.bf16, spec.measure);
    row.reference = headline_cell(rs.bench, spec.reference, spec.measure);
    row.hf = headline_cell(rs.bench, spec.hf, spec.measure);
    if (!row.impl_fp8.present && !row.impl_bf16.present && !row.reference.present && !row.hf.present) continue;
    if (row.impl_fp8.present) row.fp8_recipe = name_parts(fp8_name)[fp8_name.rfind("model/", 0) == 0 ? 2 : 3];
    if (row.fp8_recipe.rfind("impl_", 0) == 0) row.fp8_recipe = row.fp8_recipe.substr(5);

    const auto& f = row.impl_fp8.value;
    const auto& r = row.reference.value;
    if (f && r && *f > 0 && *r > 0) row.vs_reference = row.higher_is_better ? *f / *r : *r / *f;

    // The impl FP8 benchmark's own fraction of the ceiling that binds it.
    if (fp8.time_ns) {
      const auto* ctx = fp8.first ? &fp8.first->context : nullptr;
      auto take = [&](const char* k) {
        auto it = fp8.counters.find(k);
        if (it == fp8.counters.end() || !std::isfinite(it->second)) return false;
        row.roofline_frac = it->second;
        row.roofline_counter = k;
        return true;
      };
      // bench/ puts the ceiling it divided by in the context: the one its ceiling benchmark measured when that ran
      // first in the same file, else the documented value. A fraction of a documented ceiling reads differently
      // (1360 vs ~1500 TFLOP/s measured for FP8 on an H200), so the caption says which.
      auto ceiling = [&](const char* which, const char* key) {
        const double v = ctx_double(ctx, key, std::nan(""));
        if (!std::isfinite(v)) return std::string("the ") + which + " GEMM ceiling";
        bool measured = false;
        for (const auto& e : fp8.first->entries)
          measured |= e.name.find("ceiling") != std::string::npos && e.error.empty() &&
                      is_fp8_name(e.name) == (std::string(which) == "FP8");
        return std::string("the ") + which + " GEMM ceiling (" + fmt_sig(v / 1e12, 4) + " TFLOP/s, " +
               (measured ? "measured in this run" : "documented") + ")";
      };
      if (spec.hbm_bound) {
        if (take("hbm_roofline_frac")) {
          const double hbm = ctx_double(ctx, "hbm_roofline_bytes_per_second", 4.1e12);
          row.roofline_of = "the weight-bandwidth roofline (HBM " + fmt_sig(hbm / 1e12, 3) + " TB/s)";
        }
      } else if (take("fp8_ceiling_frac")) {
        row.roofline_of = ceiling("FP8", "fp8_gemm_ceiling_flops");
      } else if (take("gemm_roofline_frac")) {
        // bench_model divides its FP8 recipes by the FP8 ceiling; bench_train's gemm_roofline_frac is against the
        // BF16 ceiling for every recipe (its FP8 fraction is fp8_ceiling_frac, taken above).
        row.roofline_of = fp8_name.rfind("model/", 0) == 0 ? ceiling("FP8", "fp8_gemm_ceiling_flops")
                                                           : ceiling("BF16", "bf16_gemm_ceiling_flops");
      }
    }

    if (!row.roofline_frac)  // the caption still says which counter this row reads
      row.roofline_counter = spec.hbm_bound ? "hbm_roofline_frac" : "fp8_ceiling_frac or gemm_roofline_frac";
    if (spec.target) {
      row.target = spec.target;
      row.target_text = spec.target_text;
      row.target_source = "issue 7";
      if (f && *f > 0) row.target_reached = row.higher_is_better ? *f / *spec.target : *spec.target / *f;
    }
    if (spec.measure == HeadlineMeasure::kDecodeTokens)
      for (const auto* c : {&row.impl_fp8, &row.impl_bf16, &row.reference, &row.hf})
        m.headline.any_fallback_counter |= c->value && c->counter == "tokens_per_second";
    m.headline.rows.push_back(std::move(row));
  }
  for (std::size_t i = 0; i < m.headline.rows.size(); ++i) {
    const HeadlineRow& row = m.headline.rows[i];
    if (row.target_reached && !row.target_met()) m.headline.gaps.push_back(i);
  }
  std::stable_sort(m.headline.gaps.begin(), m.headline.gaps.end(), [&](std::size_t a, std::size_t b) {
    return *m.headline.rows[a].target_reached < *m.headline.rows[b].target_reached;
  });
}

// ---- provenance --------------------------------------------------------------------------------------

void add_prov(std::vector<ProvenanceRow>& rows, const std::string& key, const std::string& value, const std::string& file) {
  if (value.empty()) return;
  auto r = std::find_if(rows.begin(), rows.end(), [&](const ProvenanceRow& x) { return x.key == key; });
  if (r == rows.end()) {
    rows.push_back({key, {}});
    r = rows.end() - 1;
  }
  auto v = std::find_if(r->values.begin(), r->values.end(), [&](const auto& x) { return x.first == value; });
  if (v == r->values.end()) r->values.push_back({value, {file}});
  else if (std::find(v->second.begin(), v->second.end(), file) == v->second.end()) v->second.push_back(file);
}

std::vector<ProvenanceRow> collect_provenance(const ResultSet& rs) {
  std::vector<ProvenanceRow> rows;
  static const std::set<std::string> kSkip = {"executable", "date", "host_name", "num_cpus", "mhz_per_cpu",
                                              "cpu_scaling_enabled", "json_schema_version"};
  for (const auto& f : rs.bench) {
    for (const auto& [k, v] : f.context) {
      if (kSkip.count(k)) continue;
      std::string key = k.rfind("tegemma_", 0) == 0 ? k.substr(8) : k;
      if (key == "torch_version") key = "torch";
      if (key == "library_build_type") key = "benchmark_library_build";
      add_prov(rows, key, v, f.path.filename().string());
    }
  }
  for (const auto& f : rs.parity)
    for (const auto& [k, v] : f.provenance) add_prov(rows, k, v, f.path.filename().string());
  for (const auto& f : rs.gpu_tests) {
    add_prov(rows, "commit", f.commit, f.path.filename().string());
    add_prov(rows, "gpu", f.gpu, f.path.filename().string());
  }
  for (const auto& f : rs.summaries) add_prov(rows, "commit", f.fields.count("commit") ? f.fields.at("commit") : "",
                                              f.path.filename().string());
  static const std::vector<std::string> kOrder = {
      "gpu", "gpu_cc", "gpu_sm_count", "cuda_driver", "cuda_runtime", "cublaslt", "cudnn", "cudnn_compiled", "torch",
      "libtorch", "commit", "version", "build_type", "compiler", "host", "when", "sm_clock_mhz_before",
      "sm_clock_mhz_after", "hbm_roofline_bytes_per_second", "bf16_gemm_ceiling_flops", "fp8_gemm_ceiling_flops",
      "benchmark_library_build"};
  auto rank = [&](const std::string& k) {
    auto it = std::find(kOrder.begin(), kOrder.end(), k);
    return it == kOrder.end() ? kOrder.size() : static_cast<std::size_t>(it - kOrder.begin());
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const auto& a, const auto& b) {
    return rank(a.key) != rank(b.key) ? rank(a.key) < rank(b.key) : a.key < b.key;
  });
  return rows;
}

// Files whose SM clock after the run is well below the others': the GPU may have throttled during it.
void clock_warnings(const ResultSet& rs, Model& m) {
  double best = 0;
  std::vector<std::pair<std::string, double>> after;
  for (const auto& f : rs.bench) {
    auto it = f.context.find("sm_clock_mhz_after");
    if (it == f.context.end()) continue;
    const double v = std::atof(it->second.c_str());
    if (v <= 0) continue;
    after.emplace_back(f.path.filename().string(), v);
    best = std::max(best, v);
  }
  for (const auto& [file, v] : after)
    if (v < 0.9 * best)
      m.warnings.push_back(file + ": SM clock " + fmt_sig(v, 4) + " MHz after the run, below the " + fmt_sig(best, 4) +
                           " MHz of other runs (throttling?): its figures may be low.");
}

// What a parity file holds, for the header line: "parity" (forward / generation comparisons), "loss curves"
// (loss_curve / loss_health comparisons: `tegemma parity --loss-curves`), or both.
std::vector<std::string> parity_kinds(const ParityFile& f) {
  bool parity = f.comparisons.empty(), loss = false;
  for (const auto& c : f.comparisons) {
    if (c.kind == "loss_curve" || c.kind == "loss_health") loss = true;
    else parity = true;
  }
  std::vector<std::string> out;
  if (parity) out.push_back("parity");
  if (loss) out.push_back("loss curves");
  return out;
}

// Every commit, GPU and time of the inputs: a report may combine files of several runs (benchmarks of one commit,
// parity of another), and its header must say so rather than show one of them.
RunProvenance run_provenance(const ResultSet& rs, const std::vector<ProvenanceRow>& rows) {
  RunProvenance p;
  auto add = [&](const std::string& commit, const std::vector<std::string>& kinds, const std::filesystem::path& file) {
    if (commit.empty()) return;
    auto it = std::find_if(p.commits.begin(), p.commits.end(), [&](const InputCommit& c) { return c.commit == commit; });
    if (it == p.commits.end()) {
      p.commits.push_back({commit, {}, {}});
      it = p.commits.end() - 1;
    }
    for (const auto& k : kinds)
      if (std::find(it->kinds.begin(), it->kinds.end(), k) == it->kinds.end()) it->kinds.push_back(k);
    it->files.push_back(file.filename().string());
  };
  auto ctx = [](const std::map<std::string, std::string>& m, const char* k) {
    auto it = m.find(k);
    return it == m.end() ? std::string() : it->second;
  };
  for (const auto& f : rs.bench) {
    const std::string c = ctx(f.context, "tegemma_commit");
    add(c.empty() ? ctx(f.context, "commit") : c, {"benchmarks"}, f.path);
  }
  for (const auto& f : rs.parity) add(ctx(f.provenance, "commit"), parity_kinds(f), f.path);
  for (const auto& f : rs.gpu_tests) add(f.commit, {"GPU tests"}, f.path);
  for (const auto& f : rs.summaries) add(ctx(f.fields, "commit"), {"CI summary"}, f.path);
  std::stable_sort(p.commits.begin(), p.commits.end(),
                   [](const InputCommit& a, const InputCommit& b) { return a.files.size() > b.files.size(); });
  for (const auto& r : rows) {
    if (r.key == "gpu") {
      std::vector<std::pair<std::string, std::size_t>> v;
      for (const auto& [value, files] : r.values) v.emplace_back(value, files.size());
      std::stable_sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
      for (const auto& [value, n] : v) p.gpus.push_back(value);
    }
    if (r.key == "when") {
      for (const auto& [value, files] : r.values) {
        if (p.first_when.empty() || value < p.first_when) p.first_when = value;
        if (p.last_when.empty() || value > p.last_when) p.last_when = value;
      }
    }
  }
  return p;
}

}  // namespace

std::string describe_commits(const RunProvenance& p,
                             const std::function<std::string(const std::string& text, const InputCommit& c)>& code) {
  if (p.commits.empty()) return "";
  if (p.commits.size() == 1) return "commit " + code(p.commits.front().commit, p.commits.front());
  std::string out = "inputs from " + std::to_string(p.commits.size()) + " commits: ";
  for (std::size_t i = 0; i < p.commits.size(); ++i) {
    const InputCommit& c = p.commits[i];
    std::string kinds;
    for (const auto& k : c.kinds) kinds += (kinds.empty() ? "" : ", ") + k;
    // Seven hex digits, as the run folders (reports/runs/<date>-<gpu>-<commit>) and `git log --oneline` name them;
    // a suffix such as "-dirty" (a build from a modified checkout) is kept.
    const std::size_t hex = c.commit.find_first_not_of("0123456789abcdefABCDEF");
    const std::string shown =
        hex == std::string::npos ? c.commit.substr(0, 7) : hex > 7 ? c.commit.substr(0, 7) + c.commit.substr(hex) : c.commit;
    out += (i ? ", " : "") + code(shown, c) + " (" + kinds + ")";
  }
  return out;
}

std::string describe_when(const RunProvenance& p) {
  if (p.first_when.empty()) return "";
  if (p.first_when == p.last_when) return "run " + p.first_when;
  // "2026-11-30T08:05:59Z": the same UTC day gives "runs 2026-11-30 08:05–11:01 UTC".
  auto iso_utc = [](const std::string& t) {
    return t.size() >= 17 && t[4] == '-' && t[7] == '-' && t[10] == 'T' && t[13] == ':' && t.back() == 'Z';
  };
  const std::string& a = p.first_when;
  const std::string& b = p.last_when;
  if (iso_utc(a) && iso_utc(b)) {
    if (a.compare(0, 10, b, 0, 10) == 0)
      return "runs " + a.substr(0, 10) + " " + a.substr(11, 5) + "–" + b.substr(11, 5) + " UTC";
    return "runs " + a.substr(0, 10) + " " + a.substr(11, 5) + " – " + b.substr(0, 10) + " " + b.substr(11, 5) + " UTC";
  }
  return "runs " + a + " – " + b;
}

std::string headline_value(const HeadlineRow& r, const HeadlineCell& c) {
  if (!c.present) return "-";
  if (!c.value) return c.error.empty() ? "-" : "error";
  const std::string v = r.unit == "s" || r.unit == "ms" ? fmt_sig(*c.value, 3) : fmt_si(*c.value);
  return v + (r.unit == "decode tokens/s" && c.counter == "tokens_per_second" ? " *" : "");
}

std::string headline_target(const HeadlineRow& r) {
  if (!r.target) return "-";
  if (!r.target_reached) return r.target_text + ": not measured";
  return r.target_text + ": " + (r.target_met() ? "yes" : "no") + " (" + fmt_pct(*r.target_reached) + ")";
}

std::string headline_roofline_note(const HeadlineRow& r) {
  if (!r.impl_fp8.present) return "no impl FP8 benchmark";
  if (!r.roofline_frac) return r.roofline_counter + ": not reported";
  return r.roofline_counter + ": " + r.roofline_of;
}

std::vector<std::string> headline_multi_file_cells(const Headline& h) {
  std::vector<std::string> out;
  for (const auto& r : h.rows) {
    std::vector<std::pair<std::string, std::string>> groups;  // files -> engines, in column order
    for (const auto& [engine, c] : {std::pair<const char*, const HeadlineCell*>{"impl FP8", &r.impl_fp8},
                                    {"impl BF16", &r.impl_bf16}, {"reference", &r.reference}, {"HF", &r.hf}}) {
      if (c->files.size() < 2) continue;
      std::string files;
      for (const auto& f : c->files) files += (files.empty() ? "" : ", ") + f;
      auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return x.first == files; });
      if (g == groups.end()) groups.emplace_back(files, engine);
      else g->second += std::string(", ") + engine;
    }
    for (const auto& [files, engines] : groups) out.push_back(r.workload + " (" + engines + "): " + files);
  }
  return out;
}

std::string headline_gap(const HeadlineRow& r) {
  std::string v = headline_value(r, r.impl_fp8);
  if (v.ends_with(" *")) v.resize(v.size() - 2);  // the unit below says which counter
  const std::string unit = r.impl_fp8.counter == "tokens_per_second" ? "tokens/s" : r.unit;
  return r.workload + ": " + v + " " + unit + ", " +
         (r.target_reached ? fmt_pct(*r.target_reached) : std::string("-")) + " of the target " + r.target_text +
         (r.target_source.empty() ? "" : " (" + r.target_source + ")");
}

std::string describe_files(const Model& m, const std::vector<std::string>& files) {
  const std::set<std::string> s(files.begin(), files.end());
  if (s == m.provenance_files && s.size() > 1) return "all inputs";
  if (s == m.bench_file_names && s.size() > 1) return "all " + std::to_string(s.size()) + " benchmark files";
  std::string out;
  for (const auto& f : files) out += (out.empty() ? "" : ", ") + f;
  return out;
}

Model analyze(const ResultSet& cur, const ResultSet* base, const ReportOptions& opts) {
  Model m;
  m.title = opts.title;
  m.generated_at = opts.generated_at.empty() ? utc_now_iso8601() : opts.generated_at;
  for (const auto& p : cur.inputs) m.inputs.push_back(p.string());
  m.skipped = cur.skipped;
  analyze_parity(cur, m);
  analyze_loss(cur, m);
  analyze_bench(cur, m);
  analyze_headline(cur, m);
  for (const auto& f : cur.gpu_tests) m.gpu_tests.push_back(&f);
  m.provenance = collect_provenance(cur);
  for (const auto& f : cur.bench) m.bench_file_names.insert(f.path.filename().string());
  for (const auto& r : m.provenance)
    for (const auto& [v, files] : r.values) m.provenance_files.insert(files.begin(), files.end());
  clock_warnings(cur, m);
  m.run = run_provenance(cur, m.provenance);

  if (!m.has_parity) m.missing.push_back("Parity verdict: no parity report (JSON with \"schema\": \"tegemma.parity\") in the inputs.");
  if (m.loss.curves.empty())
    m.missing.push_back("Loss curves: no training logs (*.jsonl) and no parity loss comparison in the inputs.");
  else if (m.loss.reference < 0)
    m.missing.push_back("Loss difference to the reference: no reference[bf16] curve in the inputs.");
  if (m.heat.empty()) m.missing.push_back("Per-layer logits parity: no forward comparison with per-layer taps in the inputs.");
  if (m.generation.empty()) m.missing.push_back("Generation agreement: no generation comparison in the inputs.");
  if (m.headline.rows.empty())
    m.missing.push_back("Headline: none of its end-to-end workloads (model/<preset>/<engine>/<BxS> prefill, "
                        "e2e/train_step, e2e/decode, e2e/ttft of gemma-2b / gemma-7b) in the inputs.");
  if (m.workloads.rows.empty())
    m.missing.push_back("Throughput per workload: no end-to-end benchmarks (e2e/... or model/<preset>/<engine>/<BxS>) "
                        "in the inputs.");
  if (m.gemm.rows.empty()) m.missing.push_back("GEMM TFLOP/s: no gemm/ benchmarks in the inputs.");
  if (m.memory.empty())
    m.missing.push_back("Memory: no memory figures (benchmark counters or training-log fields ending in _gib) in the inputs.");
  if (m.gpu_tests.empty()) m.missing.push_back("GPU tests: no gpu_tests.json in the inputs.");

  if (base) {
    m.has_baseline = true;
    m.baseline = run_provenance(*base, collect_provenance(*base));
    if (!base->bench.empty() && !cur.bench.empty()) {
      m.bench_changes = compare_bench(BenchSet(base->bench), m.bench, opts.compare);
      m.bench_changes->old_source = "baseline";
      m.bench_changes->new_source = "current";
    }
    Model b;
    analyze_parity(*base, b);
    for (const auto& v : m.verdicts) {
      std::optional<RecipeVerdict> then;
      for (const auto& w : b.verdicts)
        if (w.precision == v.precision) then = w;
      m.verdict_changes.emplace_back(v, then);
    }
    std::map<std::string, std::string> before;
    for (const auto& f : base->gpu_tests)
      for (const auto& t : f.tests) before[t.name] = t.status;
    for (const auto* f : m.gpu_tests) {
      for (const auto& t : f->tests) {
        auto it = before.find(t.name);
        if (t.status == "fail" && (it == before.end() || it->second != "fail")) m.tests_newly_failing.push_back(t.name);
        if (t.status == "run" && it != before.end() && it->second == "fail") m.tests_fixed.push_back(t.name);
      }
    }
    analyze_loss(*base, b);
    for (const auto& c : m.loss.curves)
      for (const auto& d : b.loss.curves)
        if (c.label == d.label) m.loss_changes.push_back({c.label, {d.final_loss, c.final_loss}});
  }
  return m;
}

}  // namespace tg::reports::model
