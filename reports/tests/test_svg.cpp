// The SVG writer and charts: well-formed markup, escaping, axis ticks and labels, legends, and labels that
// neither overlap nor leave the canvas (checked with the same width estimate the layout uses).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "reports/format.h"
#include "reports/svg.h"
#include "reports/tests/xml_check.h"

namespace tg::reports {
namespace {

using testing::svg_texts;
using testing::SvgText;
using testing::xml_problem;

double width_of(const SvgText& t) { return text_width(t.text, t.size); }

// Pairs of horizontal labels whose estimated boxes intersect.
std::vector<std::string> overlaps(const std::vector<SvgText>& texts) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    for (std::size_t j = i + 1; j < texts.size(); ++j) {
      const auto &a = texts[i], &b = texts[j];
      if (a.rotate || b.rotate || a.text.empty() || b.text.empty()) continue;
      const double al = a.left(width_of(a)), bl = b.left(width_of(b));
      const bool x = al < bl + width_of(b) && bl < al + width_of(a);
      const bool y = std::fabs(a.y - b.y) < std::min(a.size, b.size) * 0.9;
      if (x && y) out.push_back("'" + a.text + "' and '" + b.text + "'");
    }
  }
  return out;
}

TEST(Format, NumbersReadTheSameEverywhere) {
  EXPECT_EQ(fmt_sig(1325.4), "1325");
  EXPECT_EQ(fmt_sig(0.0123456), "0.0123");
  EXPECT_EQ(fmt_sig(9.996), "10");
  EXPECT_EQ(fmt_sig(686.0, 4), "686");
  EXPECT_EQ(fmt_sig(0.99, 4), "0.99");
  EXPECT_EQ(fmt_sig(std::nan("")), "nan");
  EXPECT_EQ(fmt_si(59692598.6), "59.7M");
  EXPECT_EQ(fmt_si(1330), "1.33k");
  EXPECT_EQ(fmt_si(815), "815");
  EXPECT_EQ(fmt_pct(0.9017), "90%");
  EXPECT_EQ(fmt_change(0.2), "+20.0%");
  EXPECT_EQ(fmt_change(-0.031), "-3.1%");
  EXPECT_EQ(fmt_time_ns(829562.1), "829.6 us");
  EXPECT_EQ(fmt_time_ns(1627640), "1.628 ms");
  EXPECT_EQ(pretty_value("cuda_driver", "13000"), "13.0");
  EXPECT_EQ(pretty_value("cublaslt", "130100"), "13.1.0");
  EXPECT_EQ(pretty_value("cudnn", "91900"), "9.19.0");
  EXPECT_EQ(pretty_value("gpu", "NVIDIA H200"), "NVIDIA H200");
  EXPECT_EQ(pretty_value("bf16_gemm_ceiling_flops", "685637645750646.500000"), "685.6 TFLOP/s");
  EXPECT_EQ(pretty_value("hbm_roofline_bytes_per_second", "4100000000000.000000"), "4.1 TB/s");
  EXPECT_EQ(fmt_sig(3.004, 3, false), "3.00");
  EXPECT_EQ(fmt_frac(0.9017), "90%");
  EXPECT_EQ(fmt_frac(0.0135), "1.4%");
  EXPECT_EQ(xml_escape("a<b & \"c\">'"), "a&lt;b &amp; &quot;c&quot;&gt;&#39;");
  EXPECT_EQ(md_cell("a|b\nc"), "a\\|b c");
}

TEST(Ticks, StepsOfOneTwoFiveCoverTheRange) {
  const Ticks t = nice_ticks(0, 1369, 6);
  EXPECT_EQ(t.step, 200);
  EXPECT_EQ(t.lo, 0);
  EXPECT_EQ(t.hi, 1400);
  EXPECT_EQ(t.values.size(), 8u);
  const Ticks n = nice_ticks(-0.031, 0.2, 5);
  EXPECT_DOUBLE_EQ(n.step, 0.05);
  EXPECT_LE(n.lo, -0.031);
  EXPECT_GE(n.hi, 0.2);
  EXPECT_EQ(std::count(n.values.begin(), n.values.end(), 0.0), 1);  // zero is exactly a tick
  const Ticks flat = nice_ticks(2.5, 2.5, 5);                         // a constant series still gets an axis
  EXPECT_LT(flat.lo, 2.5);
  EXPECT_GT(flat.hi, 2.5);
  EXPECT_EQ(tick_label(20000, 5000), "20k");
  EXPECT_EQ(tick_label(0.25, 0.05), "0.25");
  EXPECT_EQ(tick_label(1400, 200), "1400");
  EXPECT_EQ(tick_label(600, 200), "600");
}

TEST(TextWidth, GrowsWithTheTextAndFitsItShortens) {
  EXPECT_GT(text_width("fp8_tensor_split", 12), text_width("bf16", 12));
  EXPECT_GT(text_width("WWW", 12), text_width("iii", 12));
  const std::string cut = fit_text("a very long benchmark label that does not fit", 12, 100);
  EXPECT_LE(text_width(cut, 12), 100);
  EXPECT_TRUE(cut.ends_with("..."));
  EXPECT_EQ(fit_text("short", 12, 100), "short");
}

TEST(LineChart, IsWellFormedWithAxesLegendAndBrokenLines) {
  LineChart c;
  c.title = "Training loss <test> & more";
  c.x_label = "step";
  c.y_label = "loss (cross-entropy, nats)";
  Series a{"reference[bf16]", {{0, 8.0}, {1, 7.0}, {2, std::nan("")}, {3, 6.0}, {4, 5.5}}, "", false, false};
  Series b{"impl[delayed]", {{0, 8.1}, {1, 7.1}, {2, 6.6}, {3, 6.1}, {4, 5.6}}, "", false, false};
  Series v{"impl[delayed] validation", {{4, 5.7}}, "", true, true};
  c.series = {a, b, v};
  const std::string svg = render_line_chart(c);
  EXPECT_EQ(xml_problem(svg), "") << svg;
  EXPECT_NE(svg.find("Training loss &lt;test&gt; &amp; more"), std::string::npos);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '\n'), 0);
  const auto texts = svg_texts(svg);
  auto has = [&](const std::string& s) {
    return std::any_of(texts.begin(), texts.end(), [&](const SvgText& t) { return t.text == s; });
  };
  EXPECT_TRUE(has("step"));
  EXPECT_TRUE(has("loss (cross-entropy, nats)"));
  EXPECT_TRUE(has("reference[bf16]"));
  EXPECT_TRUE(has("impl[delayed]"));
  EXPECT_TRUE(has("8.5") || has("8")) << "a y tick at the top of the range";
  // The NaN at step 2 splits the reference into two polylines; the other series is one line.
  std::size_t polylines = 0;
  for (std::size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1)) ++polylines;
  EXPECT_EQ(polylines, 3u);
  EXPECT_NE(svg.find("<circle"), std::string::npos) << "validation markers";
  EXPECT_TRUE(overlaps(texts).empty()) << overlaps(texts).front();
}

TEST(LineChart, EmptyChartSaysSo) {
  LineChart c;
  c.title = "nothing";
  const std::string svg = render_line_chart(c);
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_NE(svg.find("no data"), std::string::npos);
}

TEST(LineChart, LongSeriesAreDecimatedButKeepSpikes) {
  LineChart c;
  c.title = "long";
  Series s{"x", {}, "", false, false};
  for (int i = 0; i < 100000; ++i) s.points.emplace_back(i, i == 51234 ? 100.0 : 1.0);
  c.series = {s};
  const std::string svg = render_line_chart(c);
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_LT(svg.size(), 80000u);
  // The spike reaches the top of the plot: some point sits at the y of the top tick (the frame's top, y=40).
  EXPECT_NE(svg.find(",40 "), std::string::npos);
}

BarChart gemm_like() {
  BarChart c;
  c.title = "GEMMs: TFLOP/s by shape";
  c.value_label = "TFLOP/s (higher is better)";
  for (const char* shape : {"8192x2560x2048 (gemma-2b QKV)", "8192x49152x3072 (gemma-7b fc1 (gate+up))"}) {
    BarGroup g{shape, {}};
    const std::pair<const char*, double> bars[] = {{"bf16", 660.9}, {"fp8_tensor_fast", 1095.6},
                                                   {"fp8_tensor_split", 1034.6}, {"fp8_block", 977.8},
                                                   {"at::_scaled_mm fast", 1033.1}};
    for (const auto& [name, v] : bars) g.bars.push_back({name, v, fmt_sig(v, 4) + " TF/s · 80%", ""});
    c.groups.push_back(g);
  }
  c.ref_lines = {{686, "BF16 ceiling 686 TF/s (measured in this run)", "#2c7bb6"},
                 {1369, "FP8 ceiling 1369 TF/s (measured in this run)", "#d7191c"},
                 {1360, "FP8 1360 (documented)", "#999"}};
  return c;
}

TEST(BarChart, IsWellFormedWithLabelsValuesAndCeilings) {
  const std::string svg = render_bar_chart(gemm_like());
  EXPECT_EQ(xml_problem(svg), "") << svg;
  const auto texts = svg_texts(svg);
  auto has = [&](const std::string& s) {
    return std::any_of(texts.begin(), texts.end(), [&](const SvgText& t) { return t.text == s; });
  };
  EXPECT_TRUE(has("TFLOP/s (higher is better)"));
  EXPECT_TRUE(has("1096 TF/s · 80%"));
  EXPECT_TRUE(has("at::_scaled_mm fast"));
  EXPECT_TRUE(has("BF16 ceiling 686 TF/s (measured in this run)"));
  EXPECT_TRUE(has("8192x2560x2048 (gemma-2b QKV)"));
  EXPECT_EQ(std::count_if(texts.begin(), texts.end(), [](const SvgText& t) { return t.text == "fp8_block"; }), 2);
  // Three ceiling labels close together on the axis: stacked, not overlapping; nothing leaves the canvas.
  EXPECT_TRUE(overlaps(texts).empty()) << overlaps(texts).front();
  for (const auto& t : texts) {
    EXPECT_GE(t.left(width_of(t)), 0) << t.text;
    EXPECT_LE(t.left(width_of(t)) + width_of(t), 880.5) << t.text;
  }
}

TEST(BarChart, NegativeValuesAndErrorsDrawSensibly) {
  BarChart c;
  c.title = "changes";
  c.value_label = "time change (%)";
  c.groups = {{"a", {{"regression", 20, "+20.0%", ""}}},
              {"b", {{"faster", -3.1, "-3.1%", ""}}},
              {"c", {{"x", std::nan(""), "error", "the benchmark failed"}}}};
  const std::string svg = render_bar_chart(c);
  EXPECT_EQ(xml_problem(svg), "");
  const auto texts = svg_texts(svg);
  EXPECT_TRUE(overlaps(texts).empty()) << overlaps(texts).front();
  EXPECT_NE(svg.find(">error<"), std::string::npos);
  EXPECT_NE(svg.find(">-3.1%<"), std::string::npos);
}

// Widths of the <rect> bars drawn with `fill`, in document order.
std::vector<double> bar_widths(const std::string& svg, const std::string& fill) {
  std::vector<double> out;
  for (std::size_t at = svg.find("<rect"); at != std::string::npos; at = svg.find("<rect", at + 1)) {
    const std::size_t end = svg.find('>', at);
    const std::string tag = svg.substr(at, end - at);
    if (tag.find("fill=\"" + fill + "\"") == std::string::npos) continue;
    const std::size_t w = tag.find("width=\"");
    if (w != std::string::npos) out.push_back(std::stod(tag.substr(w + 7)));
  }
  return out;
}

TEST(BarChart, PerGroupScaleGivesEachGroupsBestTheSameLength) {
  BarChart c;
  c.title = "tokens/s";
  c.value_label = "% of the fastest in each workload";
  c.colors = {{"impl", "#123456"}};
  c.groups = {{"decode", {{"impl", 400, "400 tok/s", ""}, {"ref", 100, "100 tok/s", ""}}},
              {"prefill", {{"impl", 200000, "200k tok/s", ""}, {"ref", 150000, "150k tok/s", ""}}}};
  c.per_group_scale = true;
  const std::string svg = render_bar_chart(c);
  EXPECT_EQ(xml_problem(svg), "");
  const std::vector<double> w = bar_widths(svg, "#123456");
  ASSERT_EQ(w.size(), 2u) << svg;
  EXPECT_NEAR(w[0], w[1], 0.5);  // 400 and 200k are each their group's best
  EXPECT_GT(w[0], 100);
  EXPECT_NE(svg.find(">400 tok/s<"), std::string::npos);  // labels keep the absolute figures
  EXPECT_NE(svg.find(">200k tok/s<"), std::string::npos);
}

}  // namespace
}  // namespace tg::reports
