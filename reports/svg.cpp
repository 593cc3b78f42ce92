#include "reports/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "reports/format.h"

namespace tg::reports {

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  std::string s = buf;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s == "-0" ? "0" : s;
}

std::string tooltip_el(std::string_view t) {
  return t.empty() ? std::string() : "<title>" + xml_escape(t) + "</title>";
}

constexpr const char* kFontFamily =
    "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', 'DejaVu Sans', Arial, sans-serif";
constexpr const char* kGrid = "#e6e6e6";
constexpr const char* kAxis = "#888";
constexpr const char* kMuted = "#555";

}  // namespace

// ---- SvgWriter -----------------------------------------------------------------------------------

SvgWriter::SvgWriter(double width, double height, std::string_view aria_label)
    : width_(width), height_(height), label_(aria_label) {}

void SvgWriter::rect(double x, double y, double w, double h, std::string_view fill, std::string_view tooltip,
                     std::string_view stroke) {
  body_ += "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(std::max(0.0, w)) + "\" height=\"" +
           num(std::max(0.0, h)) + "\" fill=\"" + xml_escape(fill) + "\"";
  if (!stroke.empty()) body_ += " stroke=\"" + xml_escape(stroke) + "\"";
  body_ += tooltip.empty() ? "/>" : ">" + tooltip_el(tooltip) + "</rect>";
}

void SvgWriter::line(double x1, double y1, double x2, double y2, std::string_view stroke, double width,
                     std::string_view dash) {
  body_ += "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" + num(y2) +
           "\" stroke=\"" + xml_escape(stroke) + "\" stroke-width=\"" + num(width) + "\"";
  if (!dash.empty()) body_ += " stroke-dasharray=\"" + xml_escape(dash) + "\"";
  body_ += "/>";
}

void SvgWriter::polyline(const std::vector<std::pair<double, double>>& pts, std::string_view stroke, double width,
                         std::string_view dash) {
  std::string p;
  for (const auto& [x, y] : pts) {  // appends (GCC 12 -O3 -Wrestrict false positive on a chain of string +)
    if (!p.empty()) p += ' ';
    p += num(x);
    p += ',';
    p += num(y);
  }
  body_ += "<polyline fill=\"none\" stroke=\"" + xml_escape(stroke) + "\" stroke-width=\"" + num(width) +
           "\" stroke-linejoin=\"round\" points=\"" + p + "\"";
  if (!dash.empty()) body_ += " stroke-dasharray=\"" + xml_escape(dash) + "\"";
  body_ += "/>";
}

void SvgWriter::circle(double cx, double cy, double r, std::string_view fill, std::string_view tooltip) {
  body_ += "<circle cx=\"" + num(cx) + "\" cy=\"" + num(cy) + "\" r=\"" + num(r) + "\" fill=\"" + xml_escape(fill) +
           "\"";
  body_ += tooltip.empty() ? "/>" : ">" + tooltip_el(tooltip) + "</circle>";
}

void SvgWriter::text(double x, double y, std::string_view s, const TextStyle& st, std::string_view tooltip) {
  body_ += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + num(st.size) + "\"";
  if (std::string_view(st.anchor) != "start") body_ += std::string(" text-anchor=\"") + st.anchor + "\"";
  if (st.bold) body_ += " font-weight=\"bold\"";
  body_ += std::string(" fill=\"") + st.fill + "\"";
  if (st.halo) body_ += " stroke=\"#ffffff\" stroke-width=\"3\" stroke-linejoin=\"round\" paint-order=\"stroke\"";
  if (st.rotate != 0) body_ += " transform=\"rotate(" + num(st.rotate) + " " + num(x) + " " + num(y) + ")\"";
  body_ += ">" + xml_escape(s) + tooltip_el(tooltip) + "</text>";
}

std::string SvgWriter::finish(double height) const {
  const std::string w = num(width_), h = num(height);
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + w + "\" height=\"" + h + "\" viewBox=\"0 0 " + w +
         " " + h + "\" role=\"img\" aria-label=\"" + xml_escape(label_) + "\" font-family=\"" + kFontFamily +
         "\"><title>" + xml_escape(label_) + "</title><rect x=\"0\" y=\"0\" width=\"" + w + "\" height=\"" + h +
         "\" fill=\"#ffffff\"/>" + body_ + "</svg>";
}

// ---- text, ticks, colours ------------------------------------------------------------------------

double text_width(std::string_view s, double size) {
  double em = 0;
  for (unsigned char c : s) {
    if ((c & 0xC0) == 0x80) continue;  // UTF-8 continuation byte: counted with its lead byte
    if (c >= 0x80) em += 0.7;
    else if (std::string_view(" .,:;|!'ilj()[]").find(static_cast<char>(c)) != std::string_view::npos) em += 0.34;
    else if (std::string_view("ft").find(static_cast<char>(c)) != std::string_view::npos) em += 0.42;
    else if (std::string_view("mwMW%@").find(static_cast<char>(c)) != std::string_view::npos) em += 0.95;
    else if (c >= 'A' && c <= 'Z') em += 0.72;
    else em += 0.63;  // digits and lower case: DejaVu Sans digits are 0.636 em
  }
  return em * size;
}

std::string fit_text(std::string_view s, double size, double max_px) {
  if (text_width(s, size) <= max_px) return std::string(s);
  std::string out(s);
  while (!out.empty() && text_width(out + "...", size) > max_px) {
    out.pop_back();
    while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
    if (!out.empty() && static_cast<unsigned char>(out.back()) >= 0xC0) out.pop_back();  // a dangling lead byte
  }
  return out + "...";
}

Ticks nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (lo > hi) std::swap(lo, hi);
  if (hi == lo) {
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  target = std::max(target, 2);
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double step = (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
  Ticks t;
  t.step = step;
  const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
  t.lo = first * step;
  t.hi = last * step;
  for (double i = first; i <= last + 0.5; i += 1) {
    double v = i * step;
    if (std::fabs(v) < step * 1e-9) v = 0;
    t.values.push_back(v);
  }
  return t;
}

std::string tick_label(double v, double step) {
  if (v == 0) return "0";
  if (step >= 1000) {
    const int sig = std::max(1, static_cast<int>(std::floor(std::log10(std::fabs(v))) -
                                                 std::floor(std::log10(step) + 1e-9)) + 1);
    return fmt_si(v, sig);
  }
  const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

const char* palette(std::size_t i) {
  static constexpr const char* kColors[] = {"#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#e15759",
                                            "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"};
  return kColors[i % 10];
}

// ---- line chart ----------------------------------------------------------------------------------

namespace {

struct Legend {
  struct Item {
    std::string name, color;
    bool dashed, marker;
    double x, y;
  };
  std::vector<Item> items;
  double height = 0;
};

// Places legend items in rows that wrap at `x1`.
Legend layout_legend(const std::vector<Series>& series, double x0, double x1, double y0) {
  Legend lg;
  double x = x0, y = y0;
  for (std::size_t i = 0; i < series.size(); ++i) {
    const auto& s = series[i];
    const double w = 30 + text_width(s.name, 12) + 22;
    if (x > x0 && x + w > x1) {
      x = x0;
      y += 20;
    }
    lg.items.push_back({s.name, s.color.empty() ? palette(i) : s.color, s.dashed && s.line, s.markers || !s.line, x, y});
    x += w;
  }
  lg.height = series.empty() ? 0 : y - y0 + 20;
  return lg;
}

// Keeps a long series drawable: at most a min and a max point per pixel column (spikes survive).
std::vector<std::pair<double, double>> decimate(const std::vector<std::pair<double, double>>& px, double columns) {
  if (px.size() <= static_cast<std::size_t>(4 * columns)) return px;
  std::vector<std::pair<double, double>> out;
  std::size_t i = 0;
  while (i < px.size()) {
    const double col = std::floor(px[i].first);
    std::size_t lo = i, hi = i, j = i;
    for (; j < px.size() && std::floor(px[j].first) == col; ++j) {
      if (px[j].second < px[lo].second) lo = j;
      if (px[j].second > px[hi].second) hi = j;
    }
    out.push_back(px[std::min(lo, hi)]);
    if (lo != hi) out.push_back(px[std::max(lo, hi)]);
    i = j;
  }
  return out;
}

}  // namespace

std::string render_line_chart(const LineChart& c) {
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const auto& s : c.series) {
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      xmin = std::min(xmin, x), xmax = std::max(xmax, x);
      ymin = std::min(ymin, y), ymax = std::max(ymax, y);
    }
  }
  const bool empty = !std::isfinite(xmin);
  if (empty) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (c.y_reference) ymin = std::min(ymin, *c.y_reference), ymax = std::max(ymax, *c.y_reference);

  const double top = 40, bottom_axis = 48;
  const double plot_h = std::max(120.0, c.height - top - bottom_axis);
  const Ticks yt = nice_ticks(ymin, ymax, std::max(3, static_cast<int>(plot_h / 55)));
  double ylabel_w = 0;
  for (double v : yt.values) ylabel_w = std::max(ylabel_w, text_width(tick_label(v, yt.step), 11));
  const double x0 = 30 + ylabel_w + 8, x1 = c.width - 24;
  const double y0 = top, y1 = top + plot_h;
  // Fewer x ticks until their labels fit side by side.
  Ticks xt;
  for (int target = std::max(2, static_cast<int>((x1 - x0) / 90)); target >= 2; --target) {
    xt = nice_ticks(xmin, xmax, target);
    double widest = 0;
    for (double v : xt.values) widest = std::max(widest, text_width(tick_label(v, xt.step), 11));
    if (widest + 12 < (x1 - x0) / std::max<std::size_t>(1, xt.values.size() - 1)) break;
  }
  auto px = [&](double x) { return x0 + (x - xt.lo) / (xt.hi - xt.lo) * (x1 - x0); };
  auto py = [&](double y) { return y1 - (y - yt.lo) / (yt.hi - yt.lo) * (y1 - y0); };

  const Legend legend = layout_legend(c.series, x0, x1, y1 + bottom_axis + 6);
  const double height = y1 + bottom_axis + legend.height + 8;
  SvgWriter svg(c.width, height, c.title);
  svg.text(x0, 24, c.title, {.size = 14, .bold = true});

  for (double v : yt.values) {
    svg.line(x0, py(v), x1, py(v), kGrid);
    svg.text(x0 - 6, py(v) + 4, tick_label(v, yt.step), {.size = 11, .anchor = "end", .fill = kMuted});
  }
  for (double v : xt.values) {
    svg.line(px(v), y0, px(v), y1, kGrid);
    svg.text(px(v), y1 + 16, tick_label(v, xt.step), {.size = 11, .anchor = "middle", .fill = kMuted});
  }
  svg.line(x0, y1, x1, y1, kAxis);
  svg.line(x0, y0, x0, y1, kAxis);
  svg.text((x0 + x1) / 2, y1 + 36, c.x_label, {.size = 12, .anchor = "middle"});
  svg.text(14, (y0 + y1) / 2, c.y_label, {.size = 12, .anchor = "middle", .rotate = -90});
  if (c.y_reference) svg.line(x0, py(*c.y_reference), x1, py(*c.y_reference), kMuted, 1, "4 3");
  if (empty) svg.text((x0 + x1) / 2, (y0 + y1) / 2, "no data", {.size = 13, .anchor = "middle", .fill = kMuted});

  for (std::size_t i = 0; i < c.series.size(); ++i) {
    const auto& s = c.series[i];
    const std::string color = s.color.empty() ? palette(i) : s.color;
    std::vector<std::pair<double, double>> seg;
    auto flush = [&] {
      const auto pts = decimate(seg, x1 - x0);
      if (pts.size() == 1 && s.line && !s.markers) svg.circle(pts[0].first, pts[0].second, 2.5, color);
      if (pts.size() > 1 && s.line) svg.polyline(pts, color, 1.8, s.dashed ? "6 4" : "");
      seg.clear();
    };
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) {
        flush();
        continue;
      }
      seg.emplace_back(px(x), py(y));
      if (s.markers || !s.line) svg.circle(px(x), py(y), 3, color, s.name + ": x " + fmt_sig(x, 6) + ", y " + fmt_sig(y, 5));
    }
    flush();
  }
  for (const auto& it : legend.items) {
    if (it.marker) svg.circle(it.x + 11, it.y - 4, 3.5, it.color);
    if (!it.marker || it.dashed) svg.line(it.x, it.y - 4, it.x + 22, it.y - 4, it.color, 2.5, it.dashed ? "6 4" : "");
    svg.text(it.x + 30, it.y, it.name, {.size = 12});
  }
  return svg.finish(height);
}

// ---- bar chart -----------------------------------------------------------------------------------

std::string render_bar_chart(const BarChart& c) {
  if (c.per_group_scale) {
    BarChart rel = c;
    rel.per_group_scale = false;
    rel.ref_lines.clear();
    for (auto& g : rel.groups) {
      double top = 0;
      for (const auto& b : g.bars) {
        if (std::isfinite(b.value)) top = std::max(top, std::abs(b.value));
      }
      for (auto& b : g.bars) {
        if (std::isfinite(b.value)) b.value = top > 0 ? 100.0 * b.value / top : 0.0;
      }
    }
    return render_bar_chart(rel);
  }
  std::map<std::string, std::string> color;
  for (const auto& [k, v] : c.colors) color[k] = v;
  std::size_t next = 0;
  double lo = 0, hi = 0, label_w = 0, text_w = 0;
  for (const auto& g : c.groups) {
    for (const auto& b : g.bars) {
      if (!color.count(b.series)) color[b.series] = palette(next++);
      if (std::isfinite(b.value)) lo = std::min(lo, b.value), hi = std::max(hi, b.value);
      label_w = std::max(label_w, text_width(b.series, 12));
      // Labels of bars without a value start at zero, inside the plot: they need no room on the right.
      if (std::isfinite(b.value)) text_w = std::max(text_w, text_width(b.text, 11.5));
    }
  }
  for (const auto& r : c.ref_lines) lo = std::min(lo, r.value), hi = std::max(hi, r.value);
  if (hi == lo) hi = lo + 1;

  const double label_col = std::min(label_w + 22, c.width * 0.42);
  const double x0 = label_col + 6;
  // A value label sits after its bar: keep room for the widest one past the longest bar.
  const double x1 = std::max(x0 + 160, c.width - std::min(text_w + 12, c.width * 0.3));
  Ticks xt;
  for (int target = std::max(2, static_cast<int>((x1 - x0) / 80)); target >= 2; --target) {
    xt = nice_ticks(lo, hi, target);
    double widest = 0;
    for (double v : xt.values) widest = std::max(widest, text_width(tick_label(v, xt.step), 11));
    if (widest + 14 < (x1 - x0) / std::max<std::size_t>(1, xt.values.size() - 1)) break;
  }
  auto px = [&](double v) { return x0 + (v - xt.lo) / (xt.hi - xt.lo) * (x1 - x0); };

  // Reference-line labels on rows above the plot; a label moves down a row when it would touch another.
  struct Placed {
    double l, r;
    int row;
  };
  std::vector<Placed> placed;
  for (const auto& rl : c.ref_lines) {
    const double w = text_width(rl.label, 11);
    const double l = std::clamp(px(rl.value) - w / 2, 4.0, c.width - 4 - w);
    int row = 0;
    for (bool clash = true; clash; ) {
      clash = false;
      for (const auto& p : placed) {
        if (p.row == row && l < p.r + 10 && l + w + 10 > p.l) clash = true;
      }
      if (clash) ++row;
    }
    placed.push_back({l, l + w, row});
  }
  int rows = 0;
  for (const auto& p : placed) rows = std::max(rows, p.row + 1);

  const double bar_h = 13, bar_step = 16, header_h = 19, group_gap = 9;
  double bars_h = 0;
  for (const auto& g : c.groups) bars_h += header_h + bar_step * static_cast<double>(g.bars.size()) + group_gap;
  const bool tall = bars_h > 520;  // also label the axis at the top of a tall chart
  const double ref_top = 32;
  const double y_axis_top = ref_top + rows * 15 + (rows ? 4 : 0);
  const double y0 = y_axis_top + (tall ? 18 : 4);
  const double y1 = y0 + bars_h;
  const double height = y1 + 50;

  SvgWriter svg(c.width, height, c.title);
  svg.text(8, 22, c.title, {.size = 14, .bold = true});
  for (double v : xt.values) {
    svg.line(px(v), y0, px(v), y1, v == 0 ? kAxis : kGrid);
    svg.text(px(v), y1 + 16, tick_label(v, xt.step), {.size = 11, .anchor = "middle", .fill = kMuted});
    if (tall) svg.text(px(v), y0 - 5, tick_label(v, xt.step), {.size = 11, .anchor = "middle", .fill = kMuted});
  }
  svg.line(x0, y1, x1, y1, kAxis);
  svg.text((x0 + x1) / 2, y1 + 36, c.value_label, {.size = 12, .anchor = "middle"});

  double y = y0;
  for (const auto& g : c.groups) {
    svg.text(8, y + 14, fit_text(g.label, 12.5, c.width - 16), {.size = 12.5, .bold = true, .halo = true}, g.label);
    y += header_h;
    for (const auto& b : g.bars) {
      const std::string tip = b.tooltip.empty() ? b.series + ": " + b.text : b.tooltip;
      svg.text(x0 - 6, y + bar_h - 2.5, fit_text(b.series, 12, label_col - 16), {.size = 12, .anchor = "end"}, tip);
      if (std::isfinite(b.value)) {
        const double a = px(std::min(0.0, b.value)), e = px(std::max(0.0, b.value));
        svg.rect(a, y, std::max(e - a, 1.0), bar_h, color[b.series], tip);
        // Negative bars grow leftwards; their label goes right of the zero line, where no bar is.
        const double tx = b.value >= 0 ? e + 4 : px(0) + 4;
        svg.text(tx, y + bar_h - 2.5, b.text, {.size = 11.5, .fill = "#333", .halo = true});
      } else {
        svg.text(px(0) + 4, y + bar_h - 2.5, b.text.empty() ? "no value" : b.text,
                 {.size = 11.5, .fill = "#c0392b", .halo = true}, tip);
      }
      y += bar_step;
    }
    y += group_gap;
  }
  for (std::size_t i = 0; i < c.ref_lines.size(); ++i) {
    const auto& rl = c.ref_lines[i];
    svg.line(px(rl.value), y_axis_top, px(rl.value), y1, rl.color, 1.5, "5 3");
    svg.text(placed[i].l, ref_top + 11 + placed[i].row * 15, rl.label, {.size = 11, .fill = rl.color.c_str(), .halo = true});
  }
  return svg.finish(height);
}

}  // namespace tg::reports
