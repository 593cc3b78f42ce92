// tegemma bench compare OLD.json NEW.json [--threshold PCT] [--noise FILE...] [--json FILE]: per-benchmark time
// and throughput ratios of two Google Benchmark JSON files, regressions flagged beyond the measured noise
// (reports/bench_compare.h states the rule). Exit code 1 when a regression is flagged, 0 otherwise, 2 on bad input.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/args.h"
#include "common/check.h"
#include "common/file_io.h"
#include "reports/bench_compare.h"
#include "reports/inputs.h"

namespace tg::cli {

namespace {

reports::BenchFile read_bench(const std::filesystem::path& path) {
  const auto j = reports::parse_json_text(read_file(path), path);
  TG_CHECK(reports::detect_kind(j) == reports::FileKind::kBench, path.string(),
           ": not a Google Benchmark JSON file (expected an object with \"context\" and \"benchmarks\")");
  return reports::parse_bench(j, path);
}

int run_compare(Args args) {
  ArgParser p("tegemma bench compare", "OLD.json NEW.json: per-benchmark ratios, regressions beyond the noise");
  p.option("threshold", "the smallest time change flagged, in percent (default: 2 where noise was measured, else "
                        "5; never below 3x the measured noise of the ratio)")
      .option("noise", "FILE... repeated runs of the same suite: their spread per benchmark is noise too "
                       "(every argument up to the next option, or comma-separated)")
      .option("json", "also write the comparison as JSON to this file");
  std::vector<std::string> options, positional, noise_files;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--noise") {
      while (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) noise_files.push_back(args[++i]);
      if (noise_files.empty()) throw UsageError("tegemma bench compare: --noise needs at least one FILE");
      continue;
    }
    if (a.rfind("--noise=", 0) == 0) {
      std::string list = a.substr(8);
      for (std::size_t s = 0, e; s <= list.size(); s = e + 1) {
        e = list.find(',', s);
        if (e == std::string::npos) e = list.size();
        if (e > s) noise_files.push_back(list.substr(s, e - s));
      }
      continue;
    }
    if (a.rfind("--", 0) != 0 && a != "-h") {
      positional.push_back(a);
      continue;
    }
    options.push_back(a);
    if ((a == "--threshold" || a == "--json") && i + 1 < args.size()) options.push_back(args[++i]);
  }
  p.parse(options);
  if (p.help_requested()) {
    std::printf("usage: tegemma bench compare OLD.json NEW.json [--threshold PCT] [--json FILE] [--noise FILE...]\n"
                "exit code: 1 when a regression is flagged, 0 otherwise, 2 on bad input\n%s",
                p.usage().c_str());
    return 0;
  }
  if (positional.size() != 2) {
    throw UsageError("tegemma bench compare: expected OLD.json NEW.json, got " + std::to_string(positional.size()) +
                     " file arguments");
  }
  reports::CompareOptions opts;
  if (p.given("threshold")) opts.threshold = p.get_double("threshold", 0, 1000) / 100;
  std::vector<reports::BenchFile> noise;
  for (const auto& f : noise_files) noise.push_back(read_bench(f));
  opts.run_noise = reports::noise_from_runs(noise);
  const reports::BenchSet old_set({read_bench(positional[0])}), new_set({read_bench(positional[1])});
  reports::CompareResult r = reports::compare_bench(old_set, new_set, opts);
  r.old_source = positional[0];
  r.new_source = positional[1];
  std::printf("old: %s\nnew: %s\n\n%s", positional[0].c_str(), positional[1].c_str(), r.table().c_str());
  if (p.given("json")) {
    write_file_atomic(p.get("json"), r.to_json().dump(2) + "\n");
    std::printf("json: %s\n", p.get("json").c_str());
  }
  return r.exit_code();
}

}  // namespace

int cmd_bench(Args args) {
  const char* usage =
      "usage: tegemma bench compare OLD.json NEW.json [--threshold PCT] [--json FILE] [--noise FILE...]\n"
      "  compare   per-benchmark time and throughput ratios; exit code 1 when a regression beyond the noise is "
      "flagged\n";
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::printf("%s", usage);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "compare") return run_compare(args.subspan(1));
  throw UsageError("bench: unknown step '" + args[0] + "' (compare)");
}

}  // namespace tg::cli
