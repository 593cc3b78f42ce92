// A small SVG writer and the two chart kinds the report draws with it: line charts (loss curves and their
// difference to the reference) and horizontal grouped bar charts (throughput, GEMM TFLOP/s, % of roofline).
// The output is plain SVG 1.1 markup meant to be inlined in HTML: no scripts, no external fonts or links.
// Hovering a point or bar shows its exact value through a <title> child (the browser's tooltip).
//
// Layout works from an estimate of text widths (text_width), so labels get the room they need: the left
// margin of a bar chart grows with its longest label, a legend wraps onto more rows, reference-line labels
// that would collide are stacked.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tg::reports {

struct TextStyle {
  double size = 12;
  const char* anchor = "start";  // start | middle | end
  bool bold = false;
  const char* fill = "#222";
  double rotate = 0;             // degrees, around the anchor point
  bool halo = false;             // a white outline under the glyphs: stays readable over grid and reference lines
};

// Builds one <svg> element. Coordinates are in pixels; numbers are written with at most 2 decimals.
class SvgWriter {
 public:
  SvgWriter(double width, double height, std::string_view aria_label);
  void rect(double x, double y, double w, double h, std::string_view fill, std::string_view tooltip = {},
            std::string_view stroke = {});
  void line(double x1, double y1, double x2, double y2, std::string_view stroke, double width = 1,
            std::string_view dash = {});
  // A polyline through `pts` (pixel coordinates).
  void polyline(const std::vector<std::pair<double, double>>& pts, std::string_view stroke, double width,
                std::string_view dash = {});
  void circle(double cx, double cy, double r, std::string_view fill, std::string_view tooltip = {});
  void text(double x, double y, std::string_view s, const TextStyle& style = {}, std::string_view tooltip = {});
  // The finished element, with the given final height (charts learn their height while drawing).
  std::string finish(double height) const;
  std::string finish() const { return finish(height_); }

 private:
  double width_, height_;
  std::string label_, body_;
};

// Estimated rendered width of `s` in pixels for a sans-serif font of `size` px (deliberately generous:
// DejaVu Sans, the widest common default, averages about 0.6 em per character).
double text_width(std::string_view s, double size);
// `s` shortened with an ellipsis to fit `max_px` at `size`.
std::string fit_text(std::string_view s, double size, double max_px);

// Axis ticks: a step of 1, 2 or 5 x 10^k giving about `target` intervals over [lo, hi], and the tick
// values from the first multiple of the step at or below lo to the first at or above hi.
struct Ticks {
  double lo = 0, hi = 1, step = 1;
  std::vector<double> values;
};
Ticks nice_ticks(double lo, double hi, int target = 6);
// A tick label with just enough decimals for `step`; large values get an SI suffix (20000 -> "20k").
std::string tick_label(double v, double step);

// The colour of series i in the report's palette (Tableau 10, colour-blind friendly order).
const char* palette(std::size_t i);

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y); a non-finite y breaks the line
  std::string color;                              // empty: palette by position
  bool dashed = false;
  bool markers = false;                           // draw a dot on every point (sparse series: validation)
  bool line = true;                               // false: the dots alone (with markers), no line through them
};

struct LineChart {
  std::string title;
  std::string x_label, y_label;  // axis titles, with units ("step", "loss (nats)")
  std::vector<Series> series;
  std::optional<double> y_reference;  // a horizontal rule, e.g. 0 on a difference plot
  double width = 880, height = 360;   // height of the plot frame; the legend adds to it
};
std::string render_line_chart(const LineChart& chart);

struct Bar {
  std::string series;   // colour key and the bar's own label
  double value = 0;     // in the chart's unit; a non-finite value draws no bar, only its label
  std::string text;     // value label drawn after the bar end ("1325 TF/s · 97%")
  std::string tooltip;  // hover text (exact figures, benchmark name)
};
struct BarGroup {
  std::string label;  // header line above the group's bars
  std::vector<Bar> bars;
};
struct RefLine {
  double value = 0;
  std::string label;  // drawn at the top of the plot, stacked when labels collide
  std::string color = "#c0392b";
};
struct BarChart {
  std::string title;
  std::string value_label;  // the value axis title, with its unit
  std::vector<BarGroup> groups;
  std::vector<RefLine> ref_lines;
  // Fixed colours by series name; series not listed take palette colours in order of first appearance.
  std::vector<std::pair<std::string, std::string>> colors;
  double width = 880;
  // Each group's bars as % of that group's largest value (groups of very different magnitudes, e.g. decode at
  // 400 tok/s beside prefill at 200k tok/s); the value labels keep the absolute figures. Reference lines dropped.
  bool per_group_scale = false;
};
std::string render_bar_chart(const BarChart& chart);

}  // namespace tg::reports
