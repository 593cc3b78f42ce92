// The Markdown summary: short enough for a CI job summary or a PR comment; the HTML has the detail.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "reports/format.h"
#include "reports/report_model.h"

namespace tg::reports::model {

namespace {

std::string upper(const std::string& s) {
  return s == "pass" ? "PASS" : s == "fail" ? "FAIL" : s == "error" ? "ERROR" : s;
}

std::string row(const std::vector<std::string>& cells) {
  std::string s = "|";
  for (const auto& c : cells) {
    s += ' ';
    s += md_cell(c);
    s += " |";
  }
  s += '\n';
  return s;
}

// A table header; the first `left` columns are left-aligned (text), the others right-aligned (numbers).
std::string header(const std::vector<std::string>& cells, std::size_t left = 1) {
  std::string s = row(cells) + "|";
  for (std::size_t i = 0; i < cells.size(); ++i) s += i < left ? " --- |" : " ---: |";
  return s + "\n";
}

// Median and extremes of the roofline fractions of a section ("quantize: 48 benchmarks, median 87% ...").
void kernel_summary(const Model& m, std::string& o) {
  std::string rows;
  for (const auto& sec : m.sections) {
    if (sec.id == "workloads" || sec.id == "gemm") continue;
    for (const char* unit : {"TFLOP/s", "TB/s"}) {
      std::vector<const BenchItem*> items;
      for (const auto& it : sec.items)
        if (it.unit == unit && it.frac && std::isfinite(it.value)) items.push_back(&it);
      if (items.empty()) continue;
      std::sort(items.begin(), items.end(), [](const BenchItem* a, const BenchItem* b) { return *a->frac < *b->frac; });
      const BenchItem* med = items[items.size() / 2];
      rows += row({sec.title + " (" + unit + ")", std::to_string(items.size()), fmt_pct(*med->frac),
                   fmt_pct(*items.back()->frac) + " `" + items.back()->stat->name + "`",
                   fmt_pct(*items.front()->frac) + " `" + items.front()->stat->name + "`"});
    }
  }
  if (rows.empty()) return;
  o += "\n### Kernels: fraction of the roofline\n\n";
  o += header({"section", "benchmarks", "median", "best", "worst"}) + rows;
}

// "commit `abc` · NVIDIA H200 · run ..." or every commit of the inputs with what its files are, and their time range.
std::string provenance_line(const RunProvenance& p) {
  std::string out = describe_commits(p, [](const std::string& text, const InputCommit&) { return "`" + text + "`"; });
  std::string gpus;
  for (const auto& g : p.gpus) gpus += (gpus.empty() ? "" : " / ") + g;
  if (!gpus.empty()) out += (out.empty() ? "" : " · ") + gpus;
  const std::string when = describe_when(p);
  if (!when.empty()) out += (out.empty() ? "" : " · ") + when;
  return out;
}

// "### Against the baseline (commit `abc`)", or for a baseline assembled from several runs the heading and a line
// with each of its commits.
std::string baseline_heading(const Model& m) {
  if (m.baseline.commits.size() == 1)
    return "### Against the baseline (commit `" + m.baseline.commits.front().commit + "`)\n\n";
  const std::string line = provenance_line(m.baseline);
  return "### Against the baseline\n\nBaseline: " + (line.empty() ? std::string("no commit recorded") : line) + ".\n\n";
}

// The headline table, compact: units in the workload column, the ceilings and the gaps to the targets below it.
void headline(const Model& m, std::string& o) {
  const Headline& H = m.headline;
  if (H.rows.empty()) return;
  o += "### Headline\n\n" + header({"workload", "impl FP8 (delayed)", "impl BF16", "LibTorch reference", "HF transformers",
                                     "impl FP8 / reference", "% of roofline (impl FP8)", "target (met?)"});
  for (const auto& r : H.rows) {
    char ratio[32] = "-";
    if (r.vs_reference) std::snprintf(ratio, sizeof ratio, "%.2fx", *r.vs_reference);
    const std::string fp8 = headline_value(r, r.impl_fp8);
    o += row({r.workload + " (" + r.unit + (r.higher_is_better ? ")" : ", lower is better)"),
              fp8 + (r.fp8_recipe.empty() || r.fp8_recipe == "delayed" || !r.impl_fp8.value ? "" : " (" + r.fp8_recipe + ")"),
              headline_value(r, r.impl_bf16), headline_value(r, r.reference), headline_value(r, r.hf), ratio,
              r.roofline_frac ? fmt_frac(*r.roofline_frac) : "-", headline_target(r)});
  }
  o += "\nimpl FP8 / reference > 1: impl is faster (time rows: reference time / impl time). % of roofline, impl FP8's "
       "benchmark:";
  for (const auto& r : H.rows) {
    const std::string note = headline_roofline_note(r);
    o += " " + r.workload + ": " + note + ";";
  }
  o.back() = '.';
  o += "\n";
  if (const auto multi = headline_multi_file_cells(H); !multi.empty()) {
    o += "\nMedian over several files:";
    for (const auto& x : multi) o += " " + x + ";";
    o.back() = '.';
    o += "\n";
  }
  if (H.any_fallback_counter)
    o += "\n\\* no `decode_tokens_per_second` in the benchmark: its `tokens_per_second`, end to end with the prefill (a decode-only figure would be higher).\n";
  if (!H.gaps.empty()) {
    o += "\nLargest gaps to targets:\n\n";
    for (std::size_t i = 0; i < H.gaps.size(); ++i)
      o += std::to_string(i + 1) + ". " + headline_gap(H.rows[H.gaps[i]]) + "\n";
  }
  o += "\n";
}

}  // namespace

std::string render_markdown(const Model& m) {
  std::string o = "## " + m.title + "\n\n";
  std::string meta = provenance_line(m.run);
  meta += (meta.empty() ? "" : " · ") + std::string("generated ") + m.generated_at;
  o += meta + "\n\n";

  if (m.has_parity) {
    o += "**Parity: " + upper(m.parity_status) + "**";
    for (const auto& v : m.verdicts) o += " · " + v.precision + " " + upper(v.status);
    o += "\n\n" + header({"recipe", "verdict", "comparisons", "failed", "could not run", "violations", "near-ties",
                          "first violation"});
    for (const auto& v : m.verdicts) {
      o += row({v.precision, upper(v.status), std::to_string(v.comparisons), std::to_string(v.failed),
                std::to_string(v.errors), std::to_string(v.violations), std::to_string(v.near_ties),
                v.first_failure.empty() ? "-" : v.first_failure});
    }
    o += "\n";
    for (const auto& n : m.parity_notes) o += "Verdicts: " + n + "\n\n";
  } else {
    o += "**Parity:** not measured in these inputs.\n\n";
  }
  for (const auto* f : m.gpu_tests) {
    o += "**GPU tests** (`" + f->path.filename().string() + "`" + (f->commit.empty() ? "" : ", commit " + f->commit) +
         "): " + std::to_string(f->passed()) + " passed, " + std::to_string(f->failed()) + " failed of " +
         std::to_string(f->tests.size()) + ".";
    if (f->failed()) {
      o += " Failing:";
      for (const auto& t : f->tests)
        if (t.status == "fail") o += " `" + t.name + "`";
    }
    o += "\n\n";
  }
  for (const auto& w : m.warnings) o += "**Warning:** " + w + "\n\n";
  if (m.bench_files) {
    o += "**Benchmarks:** " + std::to_string(m.bench.stats().size()) + " in " + std::to_string(m.bench_files) +
         " files; " + std::to_string(m.bench_errors.size()) + " reported an error";
    for (const auto* s : m.bench_errors) o += (s == m.bench_errors.front() ? ": " : ", ") + std::string("`") + s->name + "`";
    o += ".\n\n";
  }

  headline(m, o);

  if (m.bench_changes) {
    const CompareResult& r = *m.bench_changes;
    o += baseline_heading(m) + std::to_string(r.regressions()) + " regressions, " +
         std::to_string(r.count(Change::kImprovement)) + " faster, " + std::to_string(r.count(Change::kSame)) +
         " within the noise.\n\n";
    std::string rows;
    for (const auto& x : r.rows) {
      if (!x.flagged() && x.change != Change::kImprovement) continue;
      const bool ratio = x.change == Change::kRegression || x.change == Change::kImprovement;
      rows += row({"`" + x.name + "`", fmt_time_ns(x.old_ns), x.change == Change::kNewError ? "error" : fmt_time_ns(x.new_ns),
                   ratio ? fmt_change(x.time_ratio - 1) : "-", ratio ? fmt_pct(x.threshold, 1) : "-",
                   std::string(to_string(x.change)) + (x.error.empty() ? "" : ": " + x.error)});
    }
    if (!rows.empty()) o += header({"benchmark", "old", "new", "time change", "threshold", "verdict"}) + rows + "\n";
  } else if (m.has_baseline) {
    o += baseline_heading(m) + "No benchmark comparison (no benchmark JSON on one side).\n\n";
  }
  if (m.has_baseline && !m.tests_newly_failing.empty()) {
    o += "GPU tests newly failing:";
    for (const auto& t : m.tests_newly_failing) o += " `" + t + "`";
    o += "\n\n";
  }

  if (!m.workloads.rows.empty()) {
    o += "### Throughput per workload\n\n";
    std::vector<std::string> cols = {"workload"};
    cols.insert(cols.end(), m.workloads.engines.begin(), m.workloads.engines.end());
    o += header(cols);
    for (const auto& r : m.workloads.rows) {
      std::vector<std::string> cells = {r.workload};
      for (const auto& e : m.workloads.engines) {
        auto it = r.cell.find(e);
        cells.push_back(it == r.cell.end() ? "-" : it->second->text);
      }
      o += row(cells);
    }
    o += "\nCells: tokens/s · % of the roofline that binds (the GEMM ceiling for train and prefill, HBM for decode) · speedup over the reference.\n";
  }
  if (!m.gemm.rows.empty()) {
    o += "\n### GEMM throughput by shape\n\n";
    std::vector<std::string> cols = {"shape (M x N x K)", "unit"};
    cols.insert(cols.end(), m.gemm.variants.begin(), m.gemm.variants.end());
    cols.push_back("ours / _scaled_mm");
    o += header(cols);
    for (const auto& r : m.gemm.rows) {
      std::vector<std::string> cells = {r.group, r.unit};
      for (const auto& v : m.gemm.variants) {
        auto it = r.value.find(v);
        cells.push_back(r.errors.count(v) ? "error" : it == r.value.end() ? "-" : fmt_sig(it->second, 4, false));
      }
      char ratio[32];
      if (r.ours_vs_anchor) std::snprintf(ratio, sizeof ratio, "%.2fx", *r.ours_vs_anchor);
      cells.push_back(r.ours_vs_anchor ? ratio : "-");
      o += row(cells);
    }
    o += "\n`ours / _scaled_mm`: fp8_tensor_fast over at::_scaled_mm with fast accumulation, same shape.\n";
  }
  kernel_summary(m, o);

  if (!m.loss.curves.empty()) {
    o += "\n### Loss\n\n" + header({"curve", "steps", "final loss", "vs reference", "final val loss", "non-finite",
                                     "tokens/s"});
    const double ref = m.loss.reference >= 0 ? m.loss.curves[m.loss.reference].final_loss : std::nan("");
    for (const auto& c : m.loss.curves) {
      o += row({c.label, std::to_string(c.loss.size()), fmt_sig(c.final_loss, 5),
                c.is_reference || !std::isfinite(ref) ? "-" : fmt_change(c.final_loss / ref - 1),
                c.final_val ? fmt_sig(*c.final_val, 5) : "-", std::to_string(c.nonfinite),
                c.tokens_per_s ? fmt_si(*c.tokens_per_s) : "-"});
    }
  }
  if (!m.logits.rows.empty() && !m.logits.metrics.empty()) {
    o += "\n### Final logits (worst over prompts)\n\n";
    // A column whose rows are judged by different thresholds gets each row's threshold in its cells.
    std::vector<std::string> cols = {"comparison"};
    std::vector<bool> per_row;
    for (const auto& mt : m.logits.metrics) {
      per_row.push_back(m.logits.limit_per_row.count(mt) > 0);
      auto it = m.logits.threshold_text.find(mt);
      cols.push_back(mt + (per_row.back() ? " (threshold per row)"
                           : it == m.logits.threshold_text.end() || it->second.empty() ? "" : " (" + it->second + ")"));
    }
    o += header(cols);
    for (std::size_t r = 0; r < m.logits.rows.size(); ++r) {
      std::vector<std::string> cells = {m.logits.rows[r]};
      for (std::size_t k = 0; k < m.logits.cells[r].size(); ++k) {
        const HeatCell& c = m.logits.cells[r][k];
        cells.push_back(!c.present ? "-"
                                   : fmt_sig(c.value, 4) + (c.verdict == "fail" ? " **FAIL**" : "") +
                                         (per_row[k] ? " (" + (c.limit.empty() ? std::string("no threshold") : c.limit) + ")" : ""));
      }
      o += row(cells);
    }
  }
  if (!m.heat.empty()) {
    o += "\n### Per-layer taps\n\n" + header({"comparison", "verdict", "earliest failing layer", "worst cells"});
    for (const auto& t : m.heat) {
      std::string first = "-", worst;
      for (std::size_t r = 0; r < t.rows.size() && first == "-"; ++r)
        for (std::size_t k = 0; k < t.metrics.size(); ++k)
          if (t.cells[r][k].verdict == "fail") {
            first = t.rows[r] + " " + t.metrics[k];
            break;
          }
      for (std::size_t k = 0; k < t.metrics.size(); ++k) {
        double best = -2;
        std::string at;
        for (std::size_t r = 0; r < t.rows.size(); ++r)
          if (t.cells[r][k].present && t.cells[r][k].severity > best) best = t.cells[r][k].severity, at = t.rows[r] + " " + fmt_sig(t.cells[r][k].value, 4);
        if (best >= 0) worst += (worst.empty() ? "" : "; ") + t.metrics[k] + " " + at;
      }
      o += row({t.title, upper(t.status), first, worst.empty() ? "-" : worst});
    }
  }
  if (!m.generation.empty()) {
    o += "\n### Generation agreement\n\n" + header({"comparison", "prompts", "identical", "near-tie", "hard",
                                                     "mean agreement", "verdict"});
    for (const auto& g : m.generation)
      o += row({g.title, std::to_string(g.prompts), std::to_string(g.identical), std::to_string(g.near_ties),
                std::to_string(g.hard), fmt_pct(g.mean_agreement, 1), upper(g.status)});
  }
  if (!m.memory.empty()) {
    o += "\n### Memory\n\n" + header({"where", "what", "GiB"});
    for (const auto& r : m.memory) o += row({r.where, r.what, fmt_sig(r.gib, 4)});
  }
  if (!m.missing.empty()) {
    o += "\n<details><summary>Not in this report (no data in the inputs)</summary>\n\n";
    for (const auto& s : m.missing) o += "- " + s + "\n";
    o += "\n</details>\n";
  }
  o += "\n<details><summary>Provenance</summary>\n\n" + header({"field", "value"}, 2);
  for (const auto& r : m.provenance) {
    std::string v;
    for (const auto& [val, files] : r.values) {
      v += (v.empty() ? "" : "; ") + pretty_value(r.key, val);
      if (r.values.size() > 1) v += " (" + describe_files(m, files) + ")";
    }
    o += row({r.key, v});
  }
  o += "\n</details>\n";
  return o;
}

}  // namespace tg::reports::model
