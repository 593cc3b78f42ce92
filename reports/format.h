// Number and text formatting shared by the report's HTML, Markdown and terminal output, so a figure reads
// the same everywhere ("1325 TF/s", "59.7M", "90%", "829.6 us").
#pragma once

#include <string>
#include <string_view>

namespace tg::reports {

// At most `sig` significant digits, trailing zeros dropped, never in exponent form for 1e-3 <= |v| < 1e15
// ("1325", "0.0123", "1.5", "686").
// Non-finite values print as "nan", "inf", "-inf".
std::string fmt_sig(double v, int sig = 3, bool trim = true);
// SI suffix for large magnitudes: 59692598 -> "59.7M", 1330 -> "1.33k", 815 -> "815".
std::string fmt_si(double v, int sig = 3);
// A fraction as a percentage: 0.9017 -> "90%" (decimals = 0), "90.2%" (decimals = 1).
std::string fmt_pct(double frac, int decimals = 0);
// A roofline fraction for a chart label: whole percent, one decimal below 10% ("90%", "2.3%").
std::string fmt_frac(double frac);
// A signed relative change: 0.2 -> "+20.0%", -0.031 -> "-3.1%".
std::string fmt_change(double frac);
// A duration in nanoseconds with a unit that keeps 3-4 digits: "829.6 us", "1.628 ms", "12.3 ns".
std::string fmt_time_ns(double ns);
// A provenance value made readable by its key: "13000" -> "13.0" (CUDA versions), "130100" -> "13.1.0"
// (cuBLASLt), "91900" -> "9.19.0" (cuDNN), "*_flops" -> "685.6 TFLOP/s", "*bytes_per_second" -> "4.1 TB/s";
// anything else is returned unchanged.
std::string pretty_value(std::string_view key, std::string_view value);

// Escapes & < > " ' for XML/HTML text and attribute values.
std::string xml_escape(std::string_view s);
// Escapes | and newlines for a Markdown table cell.
std::string md_cell(std::string_view s);

}  // namespace tg::reports
