#include "reports/format.h"

#include <cmath>
#include <cstdio>
#include <optional>
#include <string>

#include "common/args.h"

namespace tg::reports {

namespace {

std::optional<std::string> nonfinite(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return std::nullopt;
}

std::string printf_str(const char* fmt, double v, int prec) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, prec, v);
  return buf;
}

}  // namespace

std::string fmt_sig(double v, int sig, bool trim) {
  if (auto s = nonfinite(v)) return *s;
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a < 1e-3 || a >= 1e15) return printf_str("%.*g", v, sig);
  const int mag = static_cast<int>(std::floor(std::log10(a)));  // 1325 -> 3
  const int decimals = std::max(0, sig - 1 - mag);
  std::string s = printf_str("%.*f", v, decimals);
  // Rounding can add a digit (9.996 -> "10.00"); drop the extra decimal so the width stays `sig`.
  if (decimals > 0 && std::fabs(std::stod(s)) >= std::pow(10.0, mag + 1)) s = printf_str("%.*f", v, decimals - 1);
  // Trailing zeros say nothing here ("686" not "686.0", "0.99" not "0.9900").
  if (trim && s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  return s;
}

std::string fmt_si(double v, int sig) {
  if (auto s = nonfinite(v)) return *s;
  static constexpr const char* kSuffix[] = {"", "k", "M", "G", "T", "P"};
  double a = std::fabs(v);
  int i = 0;
  while (a >= 999.5 && i < 5) {
    a /= 1000;
    ++i;
  }
  return fmt_sig(v < 0 ? -a : a, sig) + kSuffix[i];
}

std::string fmt_pct(double frac, int decimals) {
  if (auto s = nonfinite(frac)) return *s;
  return printf_str("%.*f", frac * 100, decimals) + "%";
}

std::string fmt_frac(double frac) { return fmt_pct(frac, std::fabs(frac) < 0.1 ? 1 : 0); }

std::string fmt_change(double frac) {
  if (auto s = nonfinite(frac)) return *s;
  return printf_str("%+.*f", frac * 100, 1) + "%";
}

std::string fmt_time_ns(double ns) {
  if (auto s = nonfinite(ns)) return *s;
  const double a = std::fabs(ns);
  if (a < 1e3) return fmt_sig(ns, 4) + " ns";
  if (a < 1e6) return fmt_sig(ns / 1e3, 4) + " us";
  if (a < 1e9) return fmt_sig(ns / 1e6, 4) + " ms";
  return fmt_sig(ns / 1e9, 4) + " s";
}

std::string pretty_value(std::string_view key, std::string_view value) {
  if (key.ends_with("_flops") || key.ends_with("bytes_per_second")) {
    const auto d = parse_double(value);
    if (!d) return std::string(value);
    return key.ends_with("_flops") ? fmt_sig(*d / 1e12, 4) + " TFLOP/s" : fmt_sig(*d / 1e12, 4) + " TB/s";
  }
  const auto n = parse_int(value);
  if (!n || *n < 1000) return std::string(value);
  const int64_t v = *n;
  auto has = [&](std::string_view k) { return key.find(k) != std::string_view::npos; };
  if (has("cublas") || has("cudnn")) {  // major*10000 + minor*100 + patch
    return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
  }
  if (has("cuda")) return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);  // 13000 -> 13.0
  return std::string(value);
}

std::string xml_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string md_cell(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else if (c == '\n' || c == '\r') out += ' ';
    else out += c;
  }
  return out;
}

}  // namespace tg::reports
