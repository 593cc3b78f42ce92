// tegemma report DIR... [--baseline DIR] --out-html FILE --out-md FILE: renders result directories (benchmark,
// parity, training-log and GPU-test JSON; see reports/README.md) into one self-contained HTML file and a Markdown
// summary, and prints their paths. With --baseline, benchmark changes are flagged against the noise and the exit
// code is 1 when there is a regression.
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/args.h"
#include "reports/report.h"

namespace tg::cli {

int cmd_report(Args args) {
  ArgParser p("tegemma report",
              "DIR... (result directories or files) -> one HTML report (inline SVG, no scripts) + a Markdown summary");
  p.option("out-html", "the HTML report to write", "", true)
      .option("out-md", "the Markdown summary to write", "", true)
      .option("baseline", "an earlier result directory: show deltas and flag regressions (exit code 1)")
      .option("threshold", "baseline mode: the smallest benchmark change flagged, in percent (default: 2 where "
                           "noise was measured, else 5; never below 3x the measured noise)")
      .option("title", "the report's title", "tegemma report");
  // Positional directories are everything that is neither an option nor an option's value.
  static const std::set<std::string> kValued = {"--out-html", "--out-md", "--baseline", "--threshold", "--title"};
  std::vector<std::string> options;
  std::vector<std::filesystem::path> dirs;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i].rfind("--", 0) != 0 && args[i] != "-h") {
      dirs.emplace_back(args[i]);
      continue;
    }
    options.push_back(args[i]);
    if (kValued.count(args[i]) && i + 1 < args.size()) options.push_back(args[++i]);
  }
  p.parse(options);
  if (p.help_requested()) {
    std::printf("usage: tegemma report DIR... --out-html FILE --out-md FILE [--baseline DIR] [--threshold PCT]\n%s",
                p.usage().c_str());
    return 0;
  }
  if (dirs.empty()) throw UsageError("tegemma report: give at least one result directory (DIR...)");

  reports::ReportOptions opts;
  opts.title = p.get("title");
  if (p.given("threshold")) opts.compare.threshold = p.get_double("threshold", 0, 1000) / 100;
  const reports::ResultSet current = reports::load_results(dirs);
  std::optional<reports::ResultSet> baseline;
  if (p.given("baseline")) baseline = reports::load_results({p.get("baseline")});
  const auto r = reports::render_report(current, baseline ? &*baseline : nullptr, opts);
  reports::write_report(r, p.get("out-html"), p.get("out-md"));
  std::printf("report: %s\nsummary: %s\n", p.get("out-html").c_str(), p.get("out-md").c_str());
  if (baseline) std::printf("regressions against the baseline: %lld\n", static_cast<long long>(r.regressions));
  return r.regressions > 0 ? 1 : 0;
}

}  // namespace tg::cli
