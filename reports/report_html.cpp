// The HTML report: one file, inline CSS and SVG, no scripts, nothing fetched. It is also well-formed XML
// (after the doctype), which the tests check.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "reports/format.h"
#include "reports/report_model.h"
#include "reports/svg.h"

namespace tg::reports::model {

namespace {

std::string h(std::string_view s) { return xml_escape(s); }

// Escaped, with line-break opportunities after '_' and '/' (long identifiers in narrow table headers).
std::string breakable(std::string_view s) {
  std::string out;
  for (char c : s) {
    out += xml_escape(std::string_view(&c, 1));
    if (c == '_' || c == '/') out += "<wbr/>";
  }
  return out;
}

std::string ratio_text(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fx", r);
  return buf;
}

constexpr const char* kCss = R"css(
body{margin:0;background:#eef0f3;color:#1f2328;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","DejaVu Sans",Arial,sans-serif}
main{max-width:940px;margin:0 auto;padding:22px 28px 48px;background:#fff}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:30px 0 8px;padding-top:10px;border-top:1px solid #e3e5e8}
h3{font-size:15px;margin:18px 0 6px}
p{margin:6px 0}
.meta{color:#57606a;margin:0 0 10px}
nav.toc{font-size:13px;margin:6px 0 14px;display:flex;flex-wrap:wrap;row-gap:4px}
nav.toc a{margin-right:12px;color:#0969da;text-decoration:none;white-space:nowrap}
.banner{border-radius:6px;padding:10px 16px;margin:8px 0;font-size:17px;font-weight:600}
.pass{background:#dafbe1;border:1px solid #4ac26b}
.fail{background:#ffebe9;border:1px solid #ff8182}
.error{background:#fff8c5;border:1px solid #d4a72c}
.none{background:#f6f8fa;border:1px solid #d0d7de}
.chips{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}
.chip{border-radius:6px;padding:6px 10px;font-size:13px}
.chip b{font-size:14px}
.omitted{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:6px 14px;margin:10px 0;color:#57606a;font-size:13px}
.omitted ul{margin:4px 0;padding-left:18px}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}
th,td{border:1px solid #d8dee4;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.numw{text-align:right;font-variant-numeric:tabular-nums}
td.name{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:11.5px;word-break:break-all}
table.heat td.num{min-width:64px}
table.heat .lim{color:#57606a;font-size:10.5px;white-space:nowrap}
figcaption{margin:2px 0 0 30px}
td.failcell{outline:2px solid #cf222e;outline-offset:-2px;font-weight:700}
.note{color:#57606a;font-size:13px}
figure{margin:12px 0}
svg{max-width:100%;height:auto;display:block}
details{margin:6px 0}
details summary{cursor:pointer;color:#0969da}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;background:#f6f8fa;padding:1px 4px;border-radius:4px}
.nw{white-space:nowrap}
.bad{color:#cf222e;font-weight:600}
.good{color:#1a7f37;font-weight:600}
.scroll{overflow-x:auto;max-width:100%}
.wide{margin-left:calc(50% - 50vw + 20px);margin-right:calc(50% - 50vw + 20px);display:flex;justify-content:center}
.wide>.scroll{width:max-content;min-width:min(940px,calc(100vw - 56px));background:#fff}
table.gemm th{min-width:48px}
table.headline td:first-child{min-width:215px}
.legend span{display:inline-block;width:14px;height:12px;margin:0 4px -2px 10px;border:1px solid #ccc}
)css";

// "commit <code>abc</code> · NVIDIA H200 · run 2026-..." or, for inputs of several commits, each commit with what
// its files are and the time range of all of them. Hovering a commit shows its full hash and its files.
std::string provenance_line(const RunProvenance& p) {
  std::string out = describe_commits(p, [](const std::string& text, const InputCommit& c) {
    std::string files;
    for (const auto& f : c.files) files += (files.empty() ? "" : ", ") + f;
    return "<code title=\"" + h(c.commit + ": " + files) + "\">" + h(text) + "</code>";
  });
  std::string gpus;
  for (const auto& g : p.gpus) gpus += (gpus.empty() ? "" : " / ") + g;
  if (!gpus.empty()) out += (out.empty() ? "" : " · ") + std::string("<span class=\"nw\">") + h(gpus) + "</span>";
  const std::string when = describe_when(p);
  if (!when.empty()) out += (out.empty() ? "" : " · ") + std::string("<span class=\"nw\">") + h(when) + "</span>";
  return out;
}

std::string status_word(const std::string& s) {
  return s == "pass" ? "PASS" : s == "fail" ? "FAIL" : s == "error" ? "ERROR" : s;
}

std::string td_num(const std::string& s, const std::string& title = {}) {
  return "<td class=\"num\"" + (title.empty() ? std::string() : " title=\"" + h(title) + "\"") + ">" + h(s) + "</td>";
}

// Heat-map colour: green (far inside the threshold) -> yellow -> orange (at it); red past it; grey: no threshold.
std::string heat_color(const HeatCell& c) {
  if (!c.present) return "#ffffff";
  if (c.verdict == "fail" || c.severity > 1) return "#f8c0c0";
  if (c.severity < 0) return "#f3f4f6";
  struct Rgb {
    double r, g, b;
  };
  const Rgb a{0xd4, 0xef, 0xdb}, mid{0xff, 0xf1, 0xb8}, e{0xfb, 0xc8, 0x8f};
  const double t = std::clamp(c.severity, 0.0, 1.0);
  const Rgb& p = t < 0.5 ? a : mid;
  const Rgb& q = t < 0.5 ? mid : e;
  const double u = t < 0.5 ? t * 2 : (t - 0.5) * 2;
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", static_cast<int>(p.r + (q.r - p.r) * u),
                static_cast<int>(p.g + (q.g - p.g) * u), static_cast<int>(p.b + (q.b - p.b) * u));
  return buf;
}

std::string cell_value(double v) { return fmt_sig(v, v > 0.99 && v < 1 ? 6 : 4); }

// A heat-map table in a horizontally scrolling box (a window narrower than the table scrolls the table, not the
// page). The box starts as wide as the page column and grows, centred, up to the window's width minus 20 px on each
// side: the final-logits table (a dozen metric columns) is wider than the 940 px column and needs no scrolling in a
// window of 1280 px. `prefix`: a metric prefix every column shares ("logits."), left out of the headers (the caller says so).
// A column whose rows are judged by different thresholds says "threshold per row" in its header, and each of
// its cells shows its own threshold under the value.
std::string heat_table(const HeatTable& t, bool row_is_title, const std::string& prefix = {}) {
  std::string s = "<div class=\"wide\"><div class=\"scroll\"><table class=\"heat\"><tr><th>" +
                  std::string(row_is_title ? "comparison" : "layer") + "</th>";
  std::vector<bool> per_row;
  for (const auto& m : t.metrics) {
    const bool mixed = t.limit_per_row.count(m) > 0;
    per_row.push_back(mixed);
    const std::string shown = !prefix.empty() && m.rfind(prefix, 0) == 0 ? m.substr(prefix.size()) : m;
    auto it = t.threshold_text.find(m);
    const std::string th = mixed ? "threshold per row"
                           : it == t.threshold_text.end() || it->second.empty() ? "no threshold" : it->second;
    s += "<th title=\"" + h(m + ": " + (mixed ? "each row is judged by its comparison's own threshold, shown under the value"
                                            : "threshold " + th)) +
         "\">" + breakable(shown) + "<br/><span class=\"note\">" + h(th) + "</span></th>";
  }
  s += "</tr>";
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    s += "<tr><td>" + (row_is_title ? breakable(t.rows[r]) : h(t.rows[r])) + "</td>";
    for (std::size_t k = 0; k < t.cells[r].size(); ++k) {
      const HeatCell& c = t.cells[r][k];
      if (!c.present) {
        s += "<td class=\"num\">-</td>";
        continue;
      }
      const std::string limit = c.limit.empty() ? "no threshold" : c.limit;
      s += "<td class=\"num" + std::string(c.verdict == "fail" ? " failcell" : "") + "\" style=\"background:" +
           heat_color(c) + "\" title=\"" + h(c.verdict + ": " + c.tooltip + "; " + (c.limit.empty() ? "" : "threshold ") + limit) + "\">" +
           h(cell_value(c.value)) + (c.verdict == "near_tie" ? " *" : "") +
           (per_row[k] ? "<br/><span class=\"lim\">" + h(limit) + "</span>" : "") + "</td>";
    }
    s += "</tr>";
  }
  return s + "</table></div></div>";
}

std::string heat_legend() {
  return "<p class=\"note legend\">Cell colour: value against its threshold<span style=\"background:#d4efdb\"></span>"
         "well inside<span style=\"background:#fff1b8\"></span>half-way<span style=\"background:#fbc88f\"></span>at the "
         "threshold<span style=\"background:#f8c0c0\"></span>violated (outlined)<span style=\"background:#f3f4f6\"></span>"
         "no threshold (informational). Each cell is the worst value over the prompts, except for a metric judged once "
         "over all prompts pooled (mismatch_fraction), whose cell is that judged value; hover for where and the "
         "threshold. * marks a near-tie.</p>";
}

BarChart to_bar_chart(const ChartData& cd) {
  BarChart c;
  c.title = cd.title;
  c.value_label = cd.value_label;
  c.ref_lines = cd.ref_lines;
  c.per_group_scale = cd.per_group_scale;
  // Anchors (LibTorch, HF, the device copy) in greys so the project's own bars stand out.
  c.colors = {{"at::_scaled_mm fast", "#4d4d4d"}, {"at::_scaled_mm split", "#8c8c8c"},
              {"torch matmul (BF16)", "#b3b3b3"}, {"reference (LibTorch BF16)", "#4d4d4d"},
              {"HF transformers", "#a6a6a6"},     {"d2d_copy", "#a6a6a6"}};
  for (const auto& [g, items] : cd.groups) {
    BarGroup bg{g, {}};
    for (const auto* it : items) {
      std::string tip = it->stat->name + "\n";
      if (!it->stat->error.empty()) tip += "error: " + it->stat->error;
      else tip += it->text + "; time " + fmt_time_ns(it->stat->time_ns);
      if (it->frac) {  // appends (GCC 12 -O3 -Wrestrict false positive on a chain of string +)
        tip += '\n';
        tip += fmt_pct(*it->frac, 1);
        tip += " of the ";
        tip += it->frac_of;
      }
      bg.bars.push_back({it->series, it->value, it->text, tip});
    }
    c.groups.push_back(std::move(bg));
  }
  return c;
}

std::string bench_table(const BenchSection& sec) {
  std::string s = "<table><tr><th>benchmark</th><th>time</th><th>throughput</th><th>% of roofline</th>"
                  "<th>tokens/s</th><th>noise</th></tr>";
  for (const auto& it : sec.items) {
    const auto& st = *it.stat;
    auto tok = st.counters.find("tokens_per_second");
    s += "<tr><td class=\"name\">" + h(st.name) + "</td>";
    if (!st.error.empty()) {
      s += "<td colspan=\"5\" class=\"bad\">error: " + h(st.error) + "</td></tr>";
      continue;
    }
    s += td_num(fmt_time_ns(st.time_ns)) +
         td_num(it.unit.empty() || it.unit == "tokens/s" ? "-" : fmt_sig(it.value, 4) + " " + it.unit) +
         td_num(it.frac ? fmt_pct(*it.frac, 1) : "-", it.frac_of) +
         td_num(tok == st.counters.end() ? "-" : fmt_si(tok->second)) +
         td_num(st.noise ? fmt_pct(*st.noise, 1) : "-", st.noise_source) + "</tr>";
  }
  return s + "</table>";
}

void section_verdict(const Model& m, std::string& o) {
  o += "<section id=\"verdict\"><h2>Verdict</h2>";
  if (m.has_parity) {
    o += "<div class=\"banner " + m.parity_status + "\">Parity: " + status_word(m.parity_status) + "</div>";
    o += "<div class=\"chips\">";
    for (const auto& v : m.verdicts) {
      o += "<div class=\"chip " + v.status + "\"><b>" + h(v.precision) + "</b> " + status_word(v.status) + "<br/>" +
           std::to_string(v.comparisons) + " comparisons, " + std::to_string(v.failed) + " failed, " +
           std::to_string(v.errors) + " could not run; " + std::to_string(v.violations) + " violations, " +
           std::to_string(v.near_ties) + " near-ties</div>";
    }
    o += "</div>";
    for (const auto& v : m.verdicts)
      if (!v.first_failure.empty()) o += "<p><b>" + h(v.precision) + "</b> first violation: " + h(v.first_failure) + "</p>";
    for (const auto& e : m.parity_errors) o += "<p class=\"bad\">could not run: " + h(e) + "</p>";
    for (const auto& n : m.parity_notes) o += "<p>Verdicts: " + h(n) + "</p>";
  } else {
    o += "<div class=\"banner none\">Parity: not measured in these inputs</div>";
  }
  o += "<div class=\"chips\">";
  for (const auto* f : m.gpu_tests) {
    const int64_t other = static_cast<int64_t>(f->tests.size()) - f->passed() - f->failed();
    o += "<div class=\"chip " + std::string(f->failed() ? "fail" : "pass") + "\"><b>GPU tests</b> " +
         std::to_string(f->passed()) + " passed, " + std::to_string(f->failed()) + " failed" +
         (other ? ", " + std::to_string(other) + " other" : "") + "<br/>" + h(f->path.filename().string()) +
         (f->commit.empty() ? "" : ", commit " + h(f->commit)) + "</div>";
  }
  if (m.bench_files) {
    o += "<div class=\"chip " + std::string(m.bench_errors.empty() ? "pass" : "error") + "\"><b>Benchmarks</b> " +
         std::to_string(m.bench.stats().size()) + " in " + std::to_string(m.bench_files) + " files<br/>" +
         std::to_string(m.bench_errors.size()) + " reported errors</div>";
  }
  if (m.bench_changes) {
    const auto n = m.bench_changes->regressions();
    o += "<div class=\"chip " + std::string(n ? "fail" : "pass") + "\"><b>Against the baseline</b> " +
         std::to_string(n) + " regressions<br/>" + std::to_string(m.bench_changes->count(Change::kImprovement)) +
         " faster</div>";
  }
  o += "</div>";
  for (const auto& w : m.warnings) o += "<p class=\"bad\">" + h(w) + "</p>";
  if (!m.missing.empty()) {
    o += "<div class=\"omitted\">Not in this report (no data in the inputs; nothing is estimated):<ul>";
    for (const auto& s : m.missing) o += "<li>" + h(s) + "</li>";
    o += "</ul></div>";
  }
  o += "</section>";
}

// The end-to-end workloads the project is judged by, one row each, right after the verdict. Each cell's tooltip
// names the benchmark and the files it came from, so a reader can check any figure against its input.
void section_headline(const Model& m, std::string& o) {
  const Headline& H = m.headline;
  if (H.rows.empty()) return;
  o += "<section id=\"headline\"><h2>Headline</h2><p class=\"note\">The end-to-end workloads, impl FP8 (the delayed "
       "recipe) beside impl BF16, the LibTorch reference and the HF transformers anchor. The unit is under each "
       "workload; a cell is the benchmark's median (its <code>_median</code> aggregate when written), hover for the "
       "benchmark and its file. - : no input has that benchmark.</p>";
  o += "<div class=\"scroll\"><table class=\"headline\"><tr><th>workload</th><th>impl FP8 (delayed)</th><th>impl BF16</th>"
       "<th>LibTorch reference</th><th>HF transformers</th><th>impl FP8 / reference</th>"
       "<th>% of roofline (impl FP8)</th><th>target (met?)</th></tr>";
  auto cell = [&](const HeadlineRow& r, const HeadlineCell& c, const std::string& variant) {
    if (!c.present) return td_num("-");
    std::string tip = c.bench;
    if (!c.counter.empty()) tip += "\n" + c.counter;
    std::string files;
    for (const auto& f : c.files) files += (files.empty() ? "" : ", ") + f;
    tip += "\n" + files;
    if (!c.value) {
      tip += c.error.empty() ? "\nno " + r.unit + " figure" : "\nerror: " + c.error;
      return "<td class=\"num" + std::string(c.error.empty() ? "" : " bad") + "\" title=\"" + h(tip) + "\">" +
             h(headline_value(r, c)) + "</td>";
    }
    return "<td class=\"numw\" title=\"" + h(tip) + "\">" + h(headline_value(r, c)) +
           (variant.empty() ? "" : "<br/><span class=\"note\">" + h(variant) + "</span>") + "</td>";
  };
  for (const auto& r : H.rows) {
    o += "<tr><td>" + h(r.workload) + "<br/><span class=\"note\">" + h(r.unit) +
         (r.higher_is_better ? ", higher is better" : ", lower is better") + "</span></td>";
    o += cell(r, r.impl_fp8, r.fp8_recipe == "delayed" ? "" : r.fp8_recipe);
    o += cell(r, r.impl_bf16, "") + cell(r, r.reference, "") + cell(r, r.hf, "");
    o += td_num(r.vs_reference ? ratio_text(*r.vs_reference) : "-");
    o += td_num(r.roofline_frac ? fmt_frac(*r.roofline_frac) : "-", headline_roofline_note(r));
    if (!r.target) o += td_num("-");
    else
      o += "<td class=\"num " + std::string(r.target_met() ? "good" : r.target_reached ? "bad" : "") + "\" title=\"" +
           h("target of " + r.target_source) + "\">" + h(headline_target(r)) + "</td>";
    o += "</tr>";
  }
  o += "</table></div><div class=\"note\"><p>impl FP8 / reference: above 1, impl is faster (time rows divide the "
       "reference's time by impl's). Target: impl FP8 against the target, with the fraction of it reached. "
       "% of roofline: impl FP8's benchmark against the ceiling that binds it, the weight-bandwidth roofline for "
       "decode, the GEMM ceiling for prefill, training and the time to first token:</p><ul>";
  for (const auto& r : H.rows) {
    const std::string note = headline_roofline_note(r);
    o += "<li>" + h(r.workload) + ": " + h(note) + "</li>";
  }
  o += "</ul>";
  if (const auto multi = headline_multi_file_cells(H); !multi.empty()) {
    o += "<p>Cells that are the median over several files (repeated runs, or runs of different commits: the header "
         "lists them):</p><ul>";
    for (const auto& x : multi) o += "<li>" + h(x) + "</li>";
    o += "</ul>";
  }
  if (H.any_fallback_counter)
    o += "<p>* the benchmark reports no <code>decode_tokens_per_second</code>: the cell is its "
         "<code>tokens_per_second</code>, end to end with the prefill, which a decode-only figure would exceed.</p>";
  o += "</div>";
  bool any_target = false;
  for (const auto& r : H.rows) any_target |= r.target_reached.has_value();
  if (any_target) {
    o += "<h3>Largest gaps to targets</h3>";
    if (H.gaps.empty()) {
      o += "<p class=\"good\">Every target measured in these inputs is met.</p>";
    } else {
      o += "<ol>";
      for (std::size_t i : H.gaps) o += "<li>" + h(headline_gap(H.rows[i])) + "</li>";
      o += "</ol>";
    }
  }
  o += "</section>";
}

void section_loss(const Model& m, std::string& o) {
  const LossSection& L = m.loss;
  if (L.curves.empty()) return;
  std::string raw_diff_chart;
  o += "<section id=\"loss\"><h2>Loss curves</h2>";
  LineChart c;
  c.title = "Training loss";
  c.x_label = "step";
  c.y_label = "loss (cross-entropy, nats)";
  bool any_val = false;
  // The reference goes last, so it is drawn on top of curves that follow it closely.
  for (std::size_t i = 0; i < L.curves.size(); ++i) {
    const auto& cv = L.curves[i];
    if (!cv.is_reference) c.series.push_back({cv.label, cv.loss, palette(i), false, false});
    any_val |= !cv.val_loss.empty();
  }
  if (L.reference >= 0) c.series.push_back({L.curves[L.reference].label, L.curves[L.reference].loss, "#222222", false, false});
  for (std::size_t i = 0; i < L.curves.size(); ++i) {
    const auto& cv = L.curves[i];
    if (!cv.val_loss.empty())
      c.series.push_back({cv.label + " validation", cv.val_loss, cv.is_reference ? "#222222" : palette(i), true, true});
  }
  o += "<figure>" + render_line_chart(c) + "</figure>";
  if (any_val) o += "<p class=\"note\">Dashed lines with dots: validation loss.</p>";
  if (L.reference >= 0 && !L.diffs.empty()) {
    const std::string& ref = L.curves[L.reference].label;
    const bool smoothed = L.smooth_window > 1;
    const std::string window = std::to_string(L.smooth_window) + " steps";
    // The per-step differences carry the batch noise of both runs; their moving mean shows the drift under it.
    // Validation losses are measured on the same held-out batches by both runs: their differences need no smoothing.
    LineChart d;
    d.title = "Difference to the reference: loss - " + ref + " loss" + (smoothed ? ", moving mean over " + window : "");
    d.x_label = "step";
    d.y_label = "loss difference (nats)";
    d.y_reference = 0.0;
    LineChart raw = d;
    raw.title = "Difference to the reference, every step (no smoothing): loss - " + ref + " loss";
    raw.y_label = "loss difference (nats)";
    raw.series.clear();
    bool any_val = false;
    for (std::size_t i = 0, k = 0; i < L.curves.size(); ++i) {
      if (static_cast<int>(i) == L.reference) continue;
      const LossDiff& diff = L.diffs[k++];
      d.series.push_back({diff.label, smoothed ? diff.smoothed : diff.raw, palette(i), false, false});
      raw.series.push_back({diff.label, diff.raw, palette(i), false, false});
      any_val |= !diff.val.empty();
    }
    for (std::size_t i = 0, k = 0; i < L.curves.size(); ++i) {
      if (static_cast<int>(i) == L.reference) continue;
      const LossDiff& diff = L.diffs[k++];
      if (!diff.val.empty()) {
        Series v{diff.label + " validation", diff.val, palette(i), false, true};
        v.line = false;  // dots: a line through 20 noisy validation points would hide the smoothed curves
        d.series.push_back(std::move(v));
      }
    }
    o += "<figure id=\"loss-diff\">" + render_line_chart(d) + "<figcaption class=\"note\">";
    if (smoothed) {
      o += "Solid lines: the training-loss difference at each step averaged over the " + window + " centred on it "
           "(a moving mean over about 5% of the " + std::to_string(L.diff_steps) + " steps; the first and last " +
           std::to_string(L.smooth_window / 2) + " steps have no full window and are not drawn). The per-step "
           "differences also carry the batch-to-batch noise of both runs; they are charted unsmoothed below the table.";
    } else {
      o += "Solid lines: the training-loss difference at each step (too few steps to smooth).";
    }
    if (any_val) o += " Dots: the validation-loss difference at each validation step (not smoothed).";
    o += "</figcaption></figure>";
    if (smoothed) raw_diff_chart = "<details><summary>The per-step differences, unsmoothed</summary><figure id=\"loss-diff-raw\">" +
                                   render_line_chart(raw) + "</figure></details>";
  }
  o += "<table><tr><th>curve</th><th>steps</th><th>final loss (mean of last 10%)</th><th>vs reference</th>"
       "<th>final val loss</th><th>non-finite steps</th><th>tokens/s (median)</th><th>source</th></tr>";
  for (const auto& cv : L.curves) {
    const double ref = L.reference >= 0 ? L.curves[L.reference].final_loss : std::nan("");
    o += "<tr><td>" + h(cv.label) + "</td>" + td_num(std::to_string(cv.loss.size())) + td_num(fmt_sig(cv.final_loss, 5)) +
         td_num(cv.is_reference || !std::isfinite(ref) ? "-" : fmt_change(cv.final_loss / ref - 1)) +
         td_num(cv.final_val ? fmt_sig(*cv.final_val, 5) : "-") + td_num(std::to_string(cv.nonfinite)) +
         td_num(cv.tokens_per_s ? fmt_si(*cv.tokens_per_s) : "-") + "<td class=\"name\">" + h(cv.source) + "</td></tr>";
  }
  o += "</table>" + raw_diff_chart;
  bool any_tps = false;
  for (const auto& cv : L.curves) any_tps |= cv.tokens_per_s.has_value();
  if (any_tps) {
    BarChart b;
    b.title = "Training throughput (median tokens/s after the first 10% of steps)";
    b.value_label = "tokens/s (higher is better)";
    BarGroup g{"training", {}};
    for (std::size_t i = 0; i < L.curves.size(); ++i)  // the line chart's colours
      b.colors.push_back({L.curves[i].label, L.curves[i].is_reference ? "#222222" : palette(i)});
    for (const auto& cv : L.curves)
      if (cv.tokens_per_s) g.bars.push_back({cv.label, *cv.tokens_per_s, fmt_si(*cv.tokens_per_s) + " tok/s", ""});
    b.groups.push_back(g);
    o += "<figure>" + render_bar_chart(b) + "</figure>";
  }
  for (const auto* c : L.comparisons) {
    o += "<h3>" + h(c->title) + " <span class=\"" + (c->status == "pass" ? "good" : "bad") + "\">" +
         status_word(c->status) + "</span></h3><table><tr><th>metric</th><th>subject</th><th>value</th>"
         "<th>threshold</th><th>verdict</th><th>detail</th></tr>";
    for (const auto& k : c->checks) {
      auto th = c->thresholds.find(k.metric);
      o += "<tr><td>" + h(k.metric) + "</td><td>" + h(k.part) + "</td>" + td_num(fmt_sig(k.value, 4)) +
           td_num(th == c->thresholds.end() ? "-" : (th->second.bound == "min" ? ">= " : "<= ") + fmt_sig(th->second.value, 4)) +
           "<td class=\"" + (k.verdict == "fail" ? "bad" : "") + "\">" + h(k.verdict) + "</td><td>" + h(k.detail) +
           "</td></tr>";
    }
    o += "</table>";
    for (const auto& n : c->notes) o += "<p class=\"note\">" + h(n) + "</p>";
  }
  o += "</section>";
}

void section_parity(const Model& m, std::string& o) {
  if (m.heat.empty() && m.logits.rows.empty() && m.generation.empty()) return;
  o += "<section id=\"parity\"><h2>Logits parity</h2>";
  if (!m.logits.rows.empty() && !m.logits.metrics.empty()) {
    o += "<h3>" + h(m.logits.title) + "</h3><p class=\"note\">Columns: the <code>logits.*</code> metrics. Each row is "
         "one comparison, judged by the thresholds of its precision and model size";
    if (!m.logits.limit_per_row.empty())
      o += "; a column whose rows have different thresholds shows each row's under its value";
    o += ".</p>" + heat_table(m.logits, true, "logits.");
  }
  for (const auto& t : m.heat) {
    o += std::string("<details") + (t.status == "pass" ? "" : " open=\"open\"") + "><summary>Per layer: " + h(t.title) +
         " — " + status_word(t.status) + "</summary>" + heat_table(t, false) + "</details>";
  }
  if (!m.heat.empty() || !m.logits.rows.empty()) o += heat_legend();
  if (!m.generation.empty()) {
    o += "<h3 id=\"generation\">Generation agreement (greedy)</h3><table><tr><th>comparison</th><th>prompts</th>"
         "<th>identical</th><th>near-tie divergences</th><th>hard divergences</th><th>mean token agreement</th>"
         "<th>min</th><th>verdict</th></tr>";
    BarChart b;
    b.title = "Mean token agreement over prompts";
    b.value_label = "token agreement (common prefix / longer generation, %)";
    for (const auto& g : m.generation) {
      o += "<tr><td>" + h(g.title) + "</td>" + td_num(std::to_string(g.prompts)) + td_num(std::to_string(g.identical)) +
           td_num(std::to_string(g.near_ties)) + td_num(std::to_string(g.hard)) + td_num(fmt_pct(g.mean_agreement, 1)) +
           td_num(fmt_pct(g.min_agreement, 1)) + "<td class=\"" + (g.status == "pass" ? "good" : "bad") + "\">" +
           status_word(g.status) + "</td></tr>";
      b.groups.push_back({g.title, {{"mean", g.mean_agreement * 100, fmt_pct(g.mean_agreement, 1) + " (" +
                                                                          std::to_string(g.identical) + "/" +
                                                                          std::to_string(g.prompts) + " identical)", ""}}});
    }
    o += "</table><figure>" + render_bar_chart(b) + "</figure>";
    for (const auto& g : m.generation) {
      o += "<details><summary>Per prompt: " + h(g.title) + "</summary><table><tr><th>prompt</th><th>metric</th>"
           "<th>value</th><th>verdict</th><th>detail</th></tr>";
      for (const auto& k : g.comparison->checks) {
        o += "<tr><td>" + h(k.prompt_id.empty() ? std::to_string(k.prompt) : k.prompt_id) + "</td><td>" + h(k.metric) +
             "</td>" + td_num(fmt_sig(k.value, 4)) + "<td>" + h(k.verdict) + "</td><td>" + h(k.detail) + "</td></tr>";
      }
      o += "</table></details>";
    }
  }
  o += "</section>";
}

void section_bench(const Model& m, std::string& o) {
  for (const auto& sec : m.sections) {
    o += "<section id=\"" + sec.id + "\"><h2>" + h(sec.title) + "</h2>";
    if (!sec.blurb.empty()) o += "<p class=\"note\">" + h(sec.blurb) + "</p>";
    for (const auto& ch : sec.charts) o += "<figure id=\"" + ch.id + "\">" + render_bar_chart(to_bar_chart(ch)) + "</figure>";
    if (sec.id == "workloads" && !m.workloads.rows.empty()) {
      o += "<div class=\"scroll\"><table><tr><th>workload</th>";
      for (const auto& e : m.workloads.engines) o += "<th>" + h(e) + "</th>";
      o += "</tr>";
      for (const auto& r : m.workloads.rows) {
        o += "<tr><td>" + h(r.workload) + "</td>";
        for (const auto& e : m.workloads.engines) {
          auto it = r.cell.find(e);
          if (it == r.cell.end()) {
            o += td_num("-");
            continue;
          }
          const BenchItem& b = *it->second;
          if (!b.stat->error.empty()) {
            o += "<td class=\"num bad\">error</td>";
            continue;
          }
          std::string sub;
          if (b.frac) sub = fmt_frac(*b.frac) + " of the " + b.frac_of;
          if (b.speedup_vs_reference) sub += (sub.empty() ? "" : ", ") + fmt_sig(*b.speedup_vs_reference, 3) + "x ref";
          o += "<td class=\"numw\"><b>" + h(fmt_si(b.value)) + " tok/s</b>" +
               (sub.empty() ? "" : "<br/><span class=\"note\">" + h(sub) + "</span>") + "</td>";
        }
        o += "</tr>";
      }
      o += "</table></div>";
    }
    if (sec.id == "gemm" && !m.gemm.rows.empty()) {
      o += "<div class=\"scroll\"><table class=\"gemm\"><tr><th>shape (M x N x K)</th><th>unit</th>";
      for (const auto& v : m.gemm.variants) o += "<th>" + breakable(v) + "</th>";
      o += "<th>ours / <wbr/>_scaled_mm</th></tr>";
      for (const auto& r : m.gemm.rows) {
        o += "<tr><td>" + h(r.shape) + (r.annotation.empty() ? "" : "<br/><span class=\"note\">" + h(r.annotation) + "</span>") +
             "</td><td>" + h(r.unit) + "</td>";
        for (const auto& v : m.gemm.variants) {
          auto it = r.value.find(v);
          if (r.errors.count(v)) o += "<td class=\"num bad\">error</td>";
          else o += td_num(it == r.value.end() ? "-" : fmt_sig(it->second, 4, false));
        }
        o += td_num(r.ours_vs_anchor ? ratio_text(*r.ours_vs_anchor) : "-") + "</tr>";
      }
      o += "</table></div><p class=\"note\">ours / _scaled_mm: fp8_tensor_fast over at::_scaled_mm with fast "
           "accumulation on the same shape (the LibTorch anchor, cuBLASLt underneath).</p>";
    }
    o += "<details><summary>All " + std::to_string(sec.items.size()) + " benchmarks of this section</summary>" +
         bench_table(sec) + "</details></section>";
  }
}

void section_memory(const Model& m, std::string& o) {
  if (m.memory.empty()) return;
  o += "<section id=\"memory\"><h2>Memory</h2><table><tr><th>where</th><th>what</th><th>GiB</th><th>source</th></tr>";
  BarChart b;
  b.title = "Memory";
  b.value_label = "GiB (lower is better)";
  for (const auto& r : m.memory) {
    o += "<tr><td>" + h(r.where) + "</td><td>" + h(r.what) + "</td>" + td_num(fmt_sig(r.gib, 4)) +
         "<td class=\"name\">" + h(r.source) + "</td></tr>";
    auto g = std::find_if(b.groups.begin(), b.groups.end(), [&](const BarGroup& x) { return x.label == r.where; });
    if (g == b.groups.end()) {
      b.groups.push_back({r.where, {}});
      g = b.groups.end() - 1;
    }
    g->bars.push_back({r.what, r.gib, fmt_sig(r.gib, 3) + " GiB", ""});
  }
  o += "</table><figure>" + render_bar_chart(b) + "</figure></section>";
}

void section_tests(const Model& m, std::string& o) {
  if (m.gpu_tests.empty() && m.bench_errors.empty()) return;
  o += "<section id=\"tests\"><h2>GPU tests and benchmark errors</h2>";
  for (const auto* f : m.gpu_tests) {
    o += "<h3>" + h(f->path.string()) + "</h3><p>" + std::to_string(f->tests.size()) + " tests, " +
         std::to_string(f->passed()) + " passed, <span class=\"" + (f->failed() ? "bad" : "good") + "\">" +
         std::to_string(f->failed()) + " failed</span>" + (f->gpu.empty() ? "" : " on " + h(f->gpu)) +
         (f->commit.empty() ? "" : " at commit <code>" + h(f->commit) + "</code>") +
         (f->labels.empty() ? "" : ", labels " + h(f->labels)) + ".</p>";
    if (!f->excluded.empty()) o += "<p class=\"note\">Excluded from this run: " + h(f->excluded) + "</p>";
    if (f->failed()) {
      o += "<p>Failing:</p><ul>";
      for (const auto& t : f->tests)
        if (t.status == "fail") o += "<li><code>" + h(t.name) + "</code></li>";
      o += "</ul>";
    }
    o += "<details><summary>All tests</summary><table><tr><th>test</th><th>status</th><th>seconds</th></tr>";
    for (const auto& t : f->tests) {
      o += "<tr><td class=\"name\">" + h(t.name) + "</td><td class=\"" + (t.status == "fail" ? "bad" : "") + "\">" +
           h(t.status == "run" ? "passed" : t.status) + "</td>" + td_num(fmt_sig(t.time_s, 3)) + "</tr>";
    }
    o += "</table></details>";
  }
  if (!m.bench_errors.empty()) {
    o += "<h3>Benchmarks that reported an error</h3><table><tr><th>benchmark</th><th>error</th></tr>";
    for (const auto* s : m.bench_errors)
      o += "<tr><td class=\"name\">" + h(s->name) + "</td><td>" + h(s->error) + "</td></tr>";
    o += "</table>";
  }
  o += "</section>";
}

void section_baseline(const Model& m, std::string& o) {
  if (!m.has_baseline) return;
  const std::string line = provenance_line(m.baseline);
  o += "<section id=\"baseline\"><h2>Changes against the baseline</h2><p>Baseline: " +
       (line.empty() ? std::string("no commit recorded") : line) + ".</p>";
  if (!m.verdict_changes.empty()) {
    o += "<table><tr><th>recipe</th><th>baseline</th><th>now</th><th>violations then / now</th></tr>";
    for (const auto& [now, then] : m.verdict_changes) {
      o += "<tr><td>" + h(now.precision) + "</td><td>" + (then ? status_word(then->status) : "-") + "</td><td class=\"" +
           (now.status == "pass" ? "good" : "bad") + "\">" + status_word(now.status) + "</td>" +
           td_num((then ? std::to_string(then->violations) : "-") + " / " + std::to_string(now.violations)) + "</tr>";
    }
    o += "</table>";
  }
  if (!m.tests_newly_failing.empty() || !m.tests_fixed.empty()) {
    o += "<p>GPU tests newly failing: ";
    for (const auto& t : m.tests_newly_failing) o += "<code class=\"bad\">" + h(t) + "</code> ";
    if (m.tests_newly_failing.empty()) o += "none";
    o += "; fixed: ";
    for (const auto& t : m.tests_fixed) o += "<code>" + h(t) + "</code> ";
    if (m.tests_fixed.empty()) o += "none";
    o += ".</p>";
  }
  if (!m.loss_changes.empty()) {
    o += "<table><tr><th>curve</th><th>final loss, baseline</th><th>now</th><th>change</th></tr>";
    for (const auto& [label, v] : m.loss_changes)
      o += "<tr><td>" + h(label) + "</td>" + td_num(fmt_sig(v.first, 5)) + td_num(fmt_sig(v.second, 5)) +
           td_num(fmt_change(v.second / v.first - 1)) + "</tr>";
    o += "</table>";
  }
  if (!m.bench_changes) {
    o += "<p class=\"note\">No benchmark comparison: the baseline or the current inputs have no benchmark JSON.</p></section>";
    return;
  }
  const CompareResult& r = *m.bench_changes;
  o += "<p>" + std::to_string(r.rows.size()) + " benchmarks: <span class=\"" + (r.regressions() ? "bad" : "good") + "\">" +
       std::to_string(r.count(Change::kRegression)) + " regressions, " + std::to_string(r.count(Change::kNewError)) +
       " new errors</span>, " + std::to_string(r.count(Change::kImprovement)) + " faster, " +
       std::to_string(r.count(Change::kSame)) + " within the noise, " + std::to_string(r.count(Change::kAdded)) +
       " added, " + std::to_string(r.count(Change::kRemoved)) + " removed. A change is flagged beyond max(" +
       (r.options.threshold ? fmt_pct(*r.options.threshold, 1) : fmt_pct(r.options.floor_with_noise, 1)) + ", " +
       fmt_sig(r.options.noise_k, 2) + " x the measured noise of the ratio); " + fmt_pct(r.options.default_threshold, 1) +
       " where no noise was measured.</p>";
  // The largest time changes, flagged ones first.
  std::vector<const CompareRow*> rows;
  for (const auto& row : r.rows)
    if (row.change == Change::kSame || row.change == Change::kRegression || row.change == Change::kImprovement) rows.push_back(&row);
  std::stable_sort(rows.begin(), rows.end(), [](const CompareRow* a, const CompareRow* b) {
    if (a->flagged() != b->flagged()) return a->flagged();
    return std::fabs(a->time_ratio - 1) > std::fabs(b->time_ratio - 1);
  });
  if (rows.size() > 24) rows.resize(24);
  if (!rows.empty()) {
    BarChart b;
    b.title = "Largest time changes (new / old - 1; positive = slower)";
    b.value_label = "time change (%)";
    b.colors = {{"regression", "#d7191c"}, {"faster", "#1a9641"}, {"within noise", "#9e9e9e"}};
    for (const auto* row : rows) {
      const std::string kind = row->change == Change::kRegression ? "regression"
                               : row->change == Change::kImprovement ? "faster" : "within noise";
      b.groups.push_back({row->name, {{kind, (row->time_ratio - 1) * 100,
                                       fmt_change(row->time_ratio - 1) + " (threshold " + fmt_pct(row->threshold, 1) + ")",
                                       fmt_time_ns(row->old_ns) + " -> " + fmt_time_ns(row->new_ns)}}});
    }
    o += "<figure>" + render_bar_chart(b) + "</figure>";
  }
  o += "<details" + std::string(r.regressions() ? " open=\"open\"" : "") + "><summary>Every benchmark</summary><table>"
       "<tr><th>benchmark</th><th>old</th><th>new</th><th>new/old</th><th>throughput new/old</th><th>noise</th>"
       "<th>threshold</th><th>change</th></tr>";
  for (const auto& row : r.rows) {
    const bool ratio = row.change == Change::kSame || row.change == Change::kRegression || row.change == Change::kImprovement;
    o += "<tr><td class=\"name\">" + h(row.name) + "</td>" +
         td_num(row.change == Change::kAdded ? "-" : row.change == Change::kFixed || row.change == Change::kStillError
                                                         ? "error" : fmt_time_ns(row.old_ns)) +
         td_num(row.change == Change::kRemoved ? "-" : row.change == Change::kNewError || row.change == Change::kStillError
                                                           ? "error" : fmt_time_ns(row.new_ns)) +
         td_num(ratio ? fmt_sig(row.time_ratio, 4) : "-") +
         td_num(ratio && !row.counter.empty() ? fmt_sig(row.counter_ratio, 4) + " (" + row.counter + ")" : "-") +
         td_num(row.noise ? fmt_pct(*row.noise, 1) : "-", row.noise_source) + td_num(ratio ? fmt_pct(row.threshold, 1) : "-") +
         "<td class=\"" + (row.flagged() ? "bad" : "") + "\">" + h(to_string(row.change)) +
         (row.error.empty() ? "" : ": " + h(row.error)) + "</td></tr>";
  }
  o += "</table></details></section>";
}

void section_provenance(const Model& m, std::string& o) {
  o += "<section id=\"provenance\"><h2>Provenance</h2>";
  if (m.provenance.empty()) {
    o += "<p class=\"note\">The inputs carry no provenance.</p>";
  } else {
    o += "<table><tr><th>field</th><th>value</th><th>from</th></tr>";
    for (const auto& r : m.provenance) {
      for (std::size_t i = 0; i < r.values.size(); ++i) {
        const auto& [v, files] = r.values[i];
        const std::string decoded = pretty_value(r.key, v);
        const std::string from = describe_files(m, files);
        o += "<tr><td>" + (i == 0 ? h(r.key) : "") + "</td><td>" + h(decoded) +
             (decoded != v && r.key.find("ceiling") == std::string::npos && r.key.find("roofline") == std::string::npos
                  ? " <span class=\"note\">(" + h(v) + ")</span>" : "") + "</td><td class=\"note\">" + h(from) +
             "</td></tr>";
      }
    }
    o += "</table>";
  }
  o += "<p class=\"note\">Inputs: ";
  for (const auto& i : m.inputs) o += "<code>" + h(i) + "</code> ";
  o += "</p>";
  for (const auto& s : m.skipped) o += "<p class=\"note\">Skipped: " + h(s) + "</p>";
  o += "</section>";
}

}  // namespace

std::string render_html(const Model& m) {
  std::string o = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/><title>" +
                  h(m.title) + "</title><style>" + kCss + "</style></head><body><main>";
  o += "<header><h1>" + h(m.title) + "</h1><p class=\"meta\">";
  std::string meta = provenance_line(m.run);
  meta += (meta.empty() ? "" : " · ") + std::string("<span class=\"nw\">generated ") + h(m.generated_at) + "</span>";
  o += meta + "</p></header><nav class=\"toc\">";
  o += "<a href=\"#verdict\">Verdict</a>";
  if (!m.headline.rows.empty()) o += "<a href=\"#headline\">Headline</a>";
  if (!m.loss.curves.empty()) o += "<a href=\"#loss\">Loss curves</a>";
  if (!m.heat.empty() || !m.logits.rows.empty() || !m.generation.empty()) o += "<a href=\"#parity\">Logits parity</a>";
  for (const auto& s : m.sections) o += "<a href=\"#" + s.id + "\">" + h(s.title) + "</a>";
  if (!m.memory.empty()) o += "<a href=\"#memory\">Memory</a>";
  if (!m.gpu_tests.empty() || !m.bench_errors.empty()) o += "<a href=\"#tests\">GPU tests</a>";
  if (m.has_baseline) o += "<a href=\"#baseline\">Baseline</a>";
  o += "<a href=\"#provenance\">Provenance</a></nav>";
  section_verdict(m, o);
  section_headline(m, o);
  section_baseline(m, o);
  section_loss(m, o);
  section_parity(m, o);
  section_bench(m, o);
  section_memory(m, o);
  section_tests(m, o);
  section_provenance(m, o);
  o += "</main></body></html>\n";
  return o;
}

}  // namespace tg::reports::model
