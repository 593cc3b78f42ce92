// `tegemma report`: one self-contained HTML file (inline SVG charts, inline CSS, no scripts, nothing fetched)
// and a Markdown summary for a CI job summary or a PR comment, from result directories (reports/inputs.h).
//
// Sections, each omitted with a one-line note when the inputs have nothing for it: parity verdict per recipe,
// the headline table (the end-to-end workloads: impl FP8 and BF16, reference, HF, roofline, issue 7's targets),
// loss curves and their difference to the reference, per-layer logits parity (heat-map tables), generation
// agreement, end-to-end throughput per workload, GEMM TFLOP/s by shape with the at::_scaled_mm anchor and the
// measured ceilings, kernel throughput as a fraction of the roofline, memory, GPU tests, benchmark errors,
// provenance. With a baseline: per-benchmark changes with regressions flagged (reports/bench_compare.h), and
// parity, GPU-test and loss changes.
#pragma once

#include <filesystem>
#include <string>

#include "reports/bench_compare.h"
#include "reports/inputs.h"

namespace tg::reports {

struct ReportOptions {
  std::string title = "tegemma report";
  CompareOptions compare;    // how --baseline flags regressions
  std::string generated_at;  // shown in the header; empty = now (UTC)
};

struct RenderedReport {
  std::string html, markdown;
  int64_t regressions = 0;  // benchmark regressions against the baseline (0 without one)
};

RenderedReport render_report(const ResultSet& current, const ResultSet* baseline, const ReportOptions& opts);

// Writes both files atomically (each is complete or untouched), creating parent directories.
void write_report(const RenderedReport& r, const std::filesystem::path& html_path,
                  const std::filesystem::path& md_path);

}  // namespace tg::reports
