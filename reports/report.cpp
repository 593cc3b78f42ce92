#include "reports/report.h"

#include "common/check.h"
#include "common/file_io.h"
#include "reports/report_model.h"

namespace tg::reports {

RenderedReport render_report(const ResultSet& current, const ResultSet* baseline, const ReportOptions& opts) {
  TG_CHECK(!current.empty(), "report: no benchmark, parity, training-log or GPU-test files in the inputs",
           current.skipped.empty() ? std::string() : " (skipped: " + current.skipped.front() + ", ...)");
  const model::Model m = model::analyze(current, baseline, opts);
  RenderedReport r;
  r.html = model::render_html(m);
  r.markdown = model::render_markdown(m);
  r.regressions = m.bench_changes ? m.bench_changes->regressions() : 0;
  return r;
}

void write_report(const RenderedReport& r, const std::filesystem::path& html_path,
                  const std::filesystem::path& md_path) {
  for (const auto& p : {html_path, md_path})
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  write_file_atomic(html_path, r.html);
  write_file_atomic(md_path, r.markdown);
}

}  // namespace tg::reports
