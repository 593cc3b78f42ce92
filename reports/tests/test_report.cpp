// The report generator on fixture runs, checked structurally: the HTML is well-formed (and each SVG on its
// own), self-contained, has the expected sections, shows the fixture's numbers and the charts' axis labels;
// the Markdown has the expected table rows; sections without data are replaced by a note; --baseline flags
// the planted regression. And what issue 10's session-4 report got wrong: the header names every commit of the
// inputs and their time range; a heat-table header shows a threshold only when every row has it (else each cell
// shows its own); wide heat tables sit in scrolling boxes; the loss difference is a moving mean, window stated.
// The headline table: each cell from the right benchmark (the `_median` aggregate over `_mean`, model/ before
// e2e/ for the reference, delayed+fp8head before delayed), '-' where no input has it, time rows' ratio inverted,
// rows without data left out, the gaps to the targets least-reached first.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <cmath>
#include <functional>

#include "common/check.h"
#include "common/file_io.h"
#include "reports/report.h"
#include "reports/report_model.h"
#include "reports/tests/xml_check.h"

namespace tg::reports {
namespace {

namespace fs = std::filesystem;
using testing::svg_elements;
using testing::svg_texts;
using testing::xml_problem;

const fs::path kFixtures = fs::path(TEGEMMA_SOURCE_DIR) / "reports/tests/fixtures";

ReportOptions fixed_time() {
  ReportOptions o;
  o.generated_at = "2026-12-01T12:00:00Z";
  return o;
}

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// The text of every chart, joined: what a reader of the SVGs sees.
std::string chart_text(const std::string& html) {
  std::string all;
  for (const auto& svg : svg_elements(html))
    for (const auto& t : svg_texts(svg)) all += t.text + "\n";
  return all;
}

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// A copy of run_a in a fresh temporary directory, with its parity report and bench_gemm.json edited by `edit`.
// Removed by the destructor.
struct EditedRun {
  fs::path dir;
  EditedRun(const std::string& tag, const std::function<void(nlohmann::json& parity, nlohmann::json& gemm)>& edit) {
    dir = fs::temp_directory_path() / ("tegemma_report_" + tag + "_" + std::to_string(::getpid()));
    tg::remove_tree(dir);
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(kFixtures / "run_a")) fs::copy_file(e.path(), dir / e.path().filename());
    nlohmann::json parity = nlohmann::json::parse(read_file(dir / "parity.json"));
    nlohmann::json gemm = nlohmann::json::parse(read_file(dir / "bench_gemm.json"));
    edit(parity, gemm);
    write_file_atomic(dir / "parity.json", parity.dump());
    write_file_atomic(dir / "bench_gemm.json", gemm.dump());
  }
  ~EditedRun() { tg::remove_tree(dir); }
};

// The header text of the report (title, provenance line).
std::string header_of(const std::string& html) {
  const auto a = html.find("<header>"), b = html.find("</header>");
  return a == std::string::npos || b == std::string::npos ? "" : html.substr(a, b - a);
}

class FixtureReport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    current_ = new ResultSet(load_results({kFixtures / "run_a"}));
    baseline_ = new ResultSet(load_results({kFixtures / "run_b"}));
    plain_ = new RenderedReport(render_report(*current_, nullptr, fixed_time()));
    compared_ = new RenderedReport(render_report(*current_, baseline_, fixed_time()));
  }
  static void TearDownTestSuite() {
    delete current_;
    delete baseline_;
    delete plain_;
    delete compared_;
  }
  static ResultSet *current_, *baseline_;
  static RenderedReport *plain_, *compared_;
};
ResultSet* FixtureReport::current_ = nullptr;
ResultSet* FixtureReport::baseline_ = nullptr;
RenderedReport* FixtureReport::plain_ = nullptr;
RenderedReport* FixtureReport::compared_ = nullptr;

TEST_F(FixtureReport, HtmlIsWellFormedAndSelfContained) {
  for (const auto* r : {plain_, compared_}) {
    const std::string& html = r->html;
    ASSERT_TRUE(html.starts_with("<!DOCTYPE html>"));
    EXPECT_EQ(xml_problem(html), "");
    const auto svgs = svg_elements(html);
    EXPECT_GE(svgs.size(), 7u);
    for (const auto& svg : svgs) EXPECT_EQ(xml_problem(svg), "") << svg.substr(0, 200);
    EXPECT_FALSE(contains(html, "<script"));
    EXPECT_FALSE(contains(html, "<link"));
    EXPECT_FALSE(contains(html, "<img"));
    EXPECT_FALSE(contains(html, "@import"));
    // The only URL is the SVG namespace name, which nothing fetches.
    std::string rest = html;
    for (std::size_t p = rest.find("http://www.w3.org/2000/svg"); p != std::string::npos;
         p = rest.find("http://www.w3.org/2000/svg"))
      rest.erase(p, 26);
    EXPECT_FALSE(contains(rest, "http://"));
    EXPECT_FALSE(contains(rest, "https://"));
  }
}

TEST_F(FixtureReport, ExpectedSectionsArePresent) {
  const std::string& html = plain_->html;
  for (const char* id : {"verdict", "headline", "loss", "parity", "generation", "workloads", "gemm", "memory", "tests",
                         "provenance"})
    EXPECT_TRUE(contains(html, std::string("id=\"") + id + "\"")) << id;
  EXPECT_FALSE(contains(html, "id=\"baseline\""));
  EXPECT_TRUE(contains(compared_->html, "id=\"baseline\""));
}

TEST_F(FixtureReport, VerdictBannerPerRecipe) {
  const std::string& html = plain_->html;
  EXPECT_TRUE(contains(html, "<div class=\"banner fail\">Parity: FAIL</div>"));
  EXPECT_TRUE(contains(html, "<div class=\"chip pass\"><b>bf16</b> PASS"));
  EXPECT_TRUE(contains(html, "<div class=\"chip fail\"><b>delayed</b> FAIL"));
  // The first violation, with where and the threshold.
  EXPECT_TRUE(contains(html, "reference[bf16] vs impl[delayed]: forward: layer 1, prompt 1 (len08) tap.cosine 0.9712 "
                             "(threshold &gt;= 0.99)"));
  EXPECT_TRUE(contains(html, "<b>GPU tests</b> 2 passed, 1 failed"));
  EXPECT_TRUE(contains(html, "GemmGpu.Planted"));
}

TEST_F(FixtureReport, NumbersFromTheFixturesAppear) {
  const std::string& html = plain_->html;
  const std::string charts = chart_text(html);
  // GEMM: the FP8 per-tensor bar, its fraction of the measured FP8 ceiling, the anchor and the ceilings.
  EXPECT_TRUE(contains(charts, "1096 TF/s · 80%")) << charts;
  EXPECT_TRUE(contains(charts, "at::_scaled_mm fast"));
  EXPECT_TRUE(contains(charts, "BF16 ceiling 686 TF/s (measured in this run)"));
  EXPECT_TRUE(contains(charts, "FP8 ceiling 1369 TF/s (measured in this run)"));
  EXPECT_TRUE(contains(charts, "8192x2560x2048 (gemma-2b QKV)"));
  EXPECT_TRUE(contains(charts, "16x256000x3072 (gemma-7b lm_head, decode)"));
  EXPECT_TRUE(contains(charts, "HBM roofline 4.1 TB/s"));
  // Workloads: impl per recipe, the reference and the HF anchor, with speedups.
  EXPECT_TRUE(contains(charts, "78.9k tok/s · 35% GEMM · 1.92x ref"));
  EXPECT_TRUE(contains(charts, "reference (LibTorch BF16)"));
  EXPECT_TRUE(contains(charts, "HF transformers"));
  EXPECT_TRUE(contains(charts, "gemma-2b model 8x2048"));
  // End-to-end names of bench_reference / hf_anchors.py: the decode workload is bound by HBM, not the GEMMs.
  EXPECT_TRUE(contains(charts, "gemma-2b decode B1 P128+N256\n"));
  EXPECT_TRUE(contains(charts, "122 tok/s · 45% HBM")) << charts;
  EXPECT_TRUE(contains(html, "reference (LibTorch BF16) peak_allocated_gib"));
  // Per-layer heat map: the failing cell, outlined, and the threshold in the header.
  EXPECT_TRUE(contains(html, "failcell"));
  EXPECT_TRUE(contains(html, ">0.9712</td>"));
  EXPECT_TRUE(contains(html, "tap.cosine<br/><span class=\"note\">&gt;= 0.99</span>"));
  // Generation: one identical prompt of two, one near-tie.
  EXPECT_TRUE(contains(charts, "81.2% (1/2 identical)")) << charts;
  // Loss: curves and the difference to the reference; the NaN step is counted.
  EXPECT_TRUE(contains(charts, "Difference to the reference: loss - reference[bf16] loss"));
  EXPECT_TRUE(contains(html, "<td>impl[delayed]</td><td class=\"num\">60</td>"));
  // Memory from benchmark counters and training logs.
  EXPECT_TRUE(contains(html, "impl delayed weights_gib"));
  EXPECT_TRUE(contains(html, "peak_mem_gib"));
  // Errors and skipped files are shown, not hidden.
  EXPECT_TRUE(contains(html, "fixture: planted benchmark error"));
  EXPECT_TRUE(contains(html, "notes.json: not a benchmark, parity, GPU-test or CI-summary JSON"));
  // Provenance decoded.
  EXPECT_TRUE(contains(html, "13.1.0 <span class=\"note\">(130100)</span>"));
  EXPECT_TRUE(contains(html, "fixa00000001"));
}

TEST_F(FixtureReport, ChartsHaveAxisLabelsAndLegends) {
  const std::string charts = chart_text(plain_->html);
  for (const char* label : {"step", "loss (cross-entropy, nats)", "loss difference (nats)",
                            "TFLOP/s (higher is better); labels: TFLOP/s · % of the GEMM ceiling",
                            "TB/s (higher is better); labels: TB/s · % of the HBM roofline", "tokens/s (higher is better)",
                            "GiB (lower is better)", "reference[bf16]", "impl[bf16]", "impl[delayed]",
                            "impl[delayed] validation"}) {
    EXPECT_TRUE(contains(charts, std::string(label) + "\n")) << label;
  }
}

TEST_F(FixtureReport, MarkdownHasTheSummaryTables) {
  const std::string& md = plain_->markdown;
  EXPECT_TRUE(md.starts_with("## tegemma report\n"));
  EXPECT_TRUE(contains(md, "**Parity: FAIL** · bf16 PASS · delayed FAIL"));
  EXPECT_TRUE(contains(md, "| delayed | FAIL | 3 | 1 | 0 | 1 | 2 | reference[bf16] vs impl[delayed]: forward: layer 1"));
  EXPECT_TRUE(contains(md, "| bf16 | PASS | 1 | 0 | 0 | 0 | 0 | - |"));
  EXPECT_TRUE(contains(md, "| 8192x2560x2048 (gemma-2b QKV) | TFLOP/s | 660.9 | 1096 | 977.8 | 1033 | error | 1.06x |")) << md;
  EXPECT_TRUE(contains(md, "| gemma-2b model 8x2048 | 41k tok/s · 31% GEMM |"));
  EXPECT_TRUE(contains(md, "| impl[delayed] | 60 |"));
  EXPECT_TRUE(contains(md, "**GPU tests** (`gpu_tests.json`, commit fixa00000001): 2 passed, 1 failed of 3. Failing: `GemmGpu.Planted`"));
  EXPECT_TRUE(contains(md, "| reference[bf16] vs impl[delayed]: generation | 2 | 1 | 1 | 0 | 81.2% | PASS |"));
  EXPECT_TRUE(contains(md, "| cudnn | 9.19.0 |"));
  EXPECT_FALSE(contains(md, "Against the baseline"));
}

TEST_F(FixtureReport, BaselineFlagsThePlantedRegression) {
  EXPECT_EQ(compared_->regressions, 2);  // fp8_tensor_fast 20% slower; fp8_tensor_split now errors
  EXPECT_EQ(plain_->regressions, 0);
  const std::string& md = compared_->markdown;
  EXPECT_TRUE(contains(md, "### Against the baseline (commit `fixb00000002`)"));
  EXPECT_TRUE(contains(md, "| `gemm/fp8_tensor_fast/e4m3xe4m3->bf16/8192x2560x2048/manual_time` |")) << md;
  EXPECT_TRUE(contains(md, "| +20.0% | 5.0% | REGRESSION |"));
  EXPECT_TRUE(contains(md, "NEW ERROR: fixture: planted benchmark error"));
  EXPECT_TRUE(contains(md, "GPU tests newly failing: `GemmGpu.Planted`"));
  const std::string& html = compared_->html;
  EXPECT_TRUE(contains(chart_text(html), "+20.0% (threshold 5.0%)"));
  EXPECT_TRUE(contains(html, "<b>Against the baseline</b> 2 regressions"));
  // The reference loss curve is in both runs: its final loss is compared.
  EXPECT_TRUE(contains(html, "<th>final loss, baseline</th>"));
}

// Which thresholds judged the verdicts: the version of the run, and after `tegemma parity --rejudge` the version it
// was first judged with and how many verdicts the re-judge changed.
TEST_F(FixtureReport, VerdictsNameTheirThresholds) {
  EXPECT_TRUE(contains(plain_->html, "<p>Verdicts: parity.json: thresholds v1</p>"));
  EXPECT_TRUE(contains(plain_->markdown, "Verdicts: parity.json: thresholds v1"));
  nlohmann::json j = nlohmann::json::parse(read_file(kFixtures / "run_a" / "parity.json"));
  j["thresholds"]["thresholds_version"] = 4;
  j["run"]["rejudged"] = {{"from", {{"thresholds_version", 1}}}, {"changed_checks", 3}};
  const fs::path dir = fs::temp_directory_path() / ("tegemma_report_rejudged_" + std::to_string(::getpid()));
  tg::remove_tree(dir);
  fs::create_directories(dir);
  write_file_atomic(dir / "parity_rejudged.json", j.dump());
  const RenderedReport r = render_report(load_results({dir}), nullptr, fixed_time());
  const std::string note =
      "parity_rejudged.json: re-judged with thresholds v4 (the run was judged with v1; 3 check verdicts changed)";
  EXPECT_TRUE(contains(r.html, note)) << note;
  EXPECT_TRUE(contains(r.markdown, note)) << note;
  tg::remove_tree(dir);
}

TEST(Report, SectionsWithoutDataAreOmittedWithANote) {
  ResultSet rs = load_results({kFixtures / "run_a" / "bench_gemm.json"});
  const RenderedReport r = render_report(rs, nullptr, fixed_time());
  EXPECT_EQ(xml_problem(r.html), "");
  EXPECT_FALSE(contains(r.html, "id=\"loss\""));
  EXPECT_FALSE(contains(r.html, "id=\"parity\""));
  EXPECT_FALSE(contains(r.html, "id=\"workloads\""));
  EXPECT_TRUE(contains(r.html, "id=\"gemm\""));
  EXPECT_TRUE(contains(r.html, "<div class=\"banner none\">Parity: not measured in these inputs</div>"));
  for (const char* note : {"Loss curves: no training logs", "Per-layer logits parity: no forward comparison",
                           "Generation agreement: no generation comparison", "Throughput per workload: no end-to-end",
                           "GPU tests: no gpu_tests.json", "Memory: no memory figures"}) {
    EXPECT_TRUE(contains(r.html, note)) << note;
    EXPECT_TRUE(contains(r.markdown, note)) << note;
  }
  EXPECT_TRUE(contains(r.markdown, "**Parity:** not measured in these inputs."));
}

TEST(Report, NothingToReportIsAnError) {
  ResultSet empty;
  empty.skipped.push_back("x.json: not a result");
  try {
    render_report(empty, nullptr, fixed_time());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "no benchmark, parity, training-log or GPU-test files")) << e.what();
    EXPECT_TRUE(contains(e.what(), "x.json")) << e.what();
  }
}

TEST(Report, WritesBothFilesAtomically) {
  const fs::path dir = fs::temp_directory_path() / ("tegemma_report_write_" + std::to_string(::getpid()));
  tg::remove_tree(dir);
  RenderedReport r{"<!DOCTYPE html>\n<html/>", "## md\n", 0};
  write_report(r, dir / "sub" / "report.html", dir / "report.md");
  EXPECT_EQ(read_file(dir / "sub" / "report.html"), r.html);
  EXPECT_EQ(read_file(dir / "report.md"), r.markdown);
  // A path that cannot be written (its parent is a file) throws and leaves the earlier file as it was.
  write_file_atomic(dir / "blocker", "x");
  r.html = "changed";
  EXPECT_THROW(write_report(r, dir / "sub" / "report.html", dir / "blocker" / "report.md"), std::exception);
  EXPECT_EQ(read_file(dir / "report.md"), "## md\n");
  tg::remove_tree(dir);
}

// ---- the header line names every commit of the inputs (issue 10: the session-4 report paired one commit with
// another input's time) -------------------------------------------------------------------------------------

TEST_F(FixtureReport, OneCommitIsNamedWithTheTimeRangeOfItsFiles) {
  // run_a: every file at fixa00000001; benchmarks at 10:00, the parity run at 09:00.
  const std::string head = header_of(plain_->html);
  EXPECT_TRUE(contains(head, "commit <code title=\"fixa00000001: bench_e2e.json, bench_gemm.json, bench_model.json, "
                             "parity.json, gpu_tests.json\">fixa00000001</code>"))
      << head;
  EXPECT_TRUE(contains(head, "runs 2026-12-01 09:00–10:00 UTC")) << head;
  EXPECT_FALSE(contains(head, "inputs from"));
  EXPECT_TRUE(contains(plain_->markdown, "commit `fixa00000001` · NVIDIA H200 · runs 2026-12-01 09:00–10:00 UTC · "
                                         "generated 2026-12-01T12:00:00Z\n"))
      << plain_->markdown.substr(0, 300);
}

TEST(ReportProvenance, TitleListsEachInputCommit) {
  // bench_gemm.json measured at another commit, the parity report at a third (built from a modified checkout),
  // the evening before: the header must list all three and the whole time range, not one commit and one time.
  EditedRun run("commits", [](nlohmann::json& parity, nlohmann::json& gemm) {
    gemm["context"]["tegemma_commit"] = "75e96646184e";
    gemm["context"]["tegemma_when"] = "2026-12-01T11:08:00Z";
    parity["provenance"]["commit"] = "c0fd76780f23-dirty";
    parity["provenance"]["when"] = "2026-11-30T23:10:00Z";
  });
  const RenderedReport r = render_report(load_results({run.dir}), nullptr, fixed_time());
  EXPECT_EQ(testing::xml_problem(r.html), "");
  const std::string head = header_of(r.html);
  // Most files first (fixa00000001: two benchmark files and the GPU tests), then in the order read; what each
  // commit's files are; seven hex digits, a "-dirty" suffix kept; the full hash and the files on hover.
  EXPECT_TRUE(contains(head, "inputs from 3 commits: <code title=\"fixa00000001: bench_e2e.json, bench_model.json, "
                             "gpu_tests.json\">fixa00000001</code> (benchmarks, GPU tests), "
                             "<code title=\"75e96646184e: bench_gemm.json\">75e9664</code> (benchmarks), "
                             "<code title=\"c0fd76780f23-dirty: parity.json\">c0fd767-dirty</code> (parity, loss curves)"))
      << head;
  EXPECT_TRUE(contains(head, "runs 2026-11-30 23:10 – 2026-12-01 11:08 UTC")) << head;
  EXPECT_FALSE(contains(head, "commit <code"));
  EXPECT_TRUE(contains(r.markdown, "inputs from 3 commits: `fixa00000001` (benchmarks, GPU tests), `75e9664` "
                                   "(benchmarks), `c0fd767-dirty` (parity, loss curves) · NVIDIA H200 · runs "
                                   "2026-11-30 23:10 – 2026-12-01 11:08 UTC · generated"))
      << r.markdown.substr(0, 400);

  // The same inputs as a baseline: its line lists them too.
  const ResultSet cur = load_results({kFixtures / "run_b"});
  const ResultSet base = load_results({run.dir});
  const RenderedReport c = render_report(cur, &base, fixed_time());
  EXPECT_TRUE(contains(c.html, "<p>Baseline: inputs from 3 commits: <code title=\"fixa00000001: "));
  EXPECT_TRUE(contains(c.markdown, "### Against the baseline\n\nBaseline: inputs from 3 commits: `fixa00000001` "
                                   "(benchmarks, GPU tests), `75e9664` (benchmarks), `c0fd767-dirty` (parity, loss curves)"))
      << c.markdown;
}

// ---- heat tables: one threshold per column only when every row has it ----------------------------------------

TEST_F(FixtureReport, UniformColumnShowsItsThresholdInTheHeader) {
  // Both forward comparisons of run_a have logits.kl_max <= 0.01: the header says so, the cells do not repeat it.
  const std::string& html = plain_->html;
  EXPECT_TRUE(contains(html, "kl_<wbr/>max<br/><span class=\"note\">&lt;= 0.01</span></th>")) << html;
  EXPECT_FALSE(contains(html, "threshold per row"));
  EXPECT_FALSE(contains(html, "<span class=\"lim\">"));
  EXPECT_TRUE(contains(plain_->markdown, "| logits.kl_max (<= 0.01) |"));
}

TEST(ReportHeat, ColumnWithDifferentThresholdsShowsEachRowsOwn) {
  // The delayed comparison judged by a looser kl_max limit (as FP8 rows are beside bf16 ones): the column header
  // must not show either limit as the column's, and each row's cell carries its own.
  EditedRun run("limits", [](nlohmann::json& parity, nlohmann::json&) {
    auto& c = parity["comparisons"][1];
    ASSERT_EQ(c["title"], "reference[bf16] vs impl[delayed]: forward");
    c["thresholds"]["logits.kl_max"]["value"] = 0.125;
  });
  const RenderedReport r = render_report(load_results({run.dir}), nullptr, fixed_time());
  const std::string& html = r.html;
  EXPECT_EQ(testing::xml_problem(html), "");
  EXPECT_TRUE(contains(html, "kl_<wbr/>max<br/><span class=\"note\">threshold per row</span></th>")) << html;
  EXPECT_FALSE(contains(html, "<span class=\"note\">&lt;= 0.125</span></th>"));
  EXPECT_FALSE(contains(html, "kl_<wbr/>max<br/><span class=\"note\">&lt;= 0.01</span></th>"));
  EXPECT_EQ(count(html, "<span class=\"lim\">&lt;= 0.01</span>"), 1u);   // the bf16 row
  EXPECT_EQ(count(html, "<span class=\"lim\">&lt;= 0.125</span>"), 1u);  // the delayed row
  EXPECT_TRUE(contains(html, "; threshold &lt;= 0.125\">"));               // and in its tooltip
  // top5_overlap has one limit for both rows: still in its header.
  EXPECT_TRUE(contains(html, "top5_<wbr/>overlap<br/><span class=\"note\">&gt;= 0.8</span></th>"));
  EXPECT_TRUE(contains(r.markdown, "| logits.kl_max (threshold per row) |")) << r.markdown;
  EXPECT_TRUE(contains(r.markdown, " (<= 0.125) |"));
  EXPECT_TRUE(contains(r.markdown, " (<= 0.01) |"));
  EXPECT_FALSE(contains(r.markdown, "logits.kl_max (<= 0.01)"));
}

TEST(ReportHeat, PooledMetricShowsItsJudgedValue) {
  // mismatch_fraction is judged once over all prompts pooled; each prompt's own value is an unjudged info check.
  // The cell is the judged value (coloured against the threshold); the worst prompt is in the tooltip only.
  EditedRun run("pooled", [](nlohmann::json& parity, nlohmann::json&) {
    auto& c = parity["comparisons"][1];
    c["thresholds"]["logits.mismatch_fraction"] = {{"metric", "logits.mismatch_fraction"}, {"precision", "fp8"},
                                                   {"size", "any"}, {"value", 0.01}, {"bound", "max"},
                                                   {"reason", "fixture"}, {"source", "fixture"}};
    c["checks"].push_back({{"subject", {{"prompt", 0}, {"prompt_id", "len01"}, {"part", "logits"}}},
                           {"metric", "logits.mismatch_fraction"}, {"value", 0.03}, {"verdict", "info"}});
    c["checks"].push_back({{"subject", {{"prompt", 1}, {"prompt_id", "len08"}, {"part", "logits"}}},
                           {"metric", "logits.mismatch_fraction"}, {"value", 0.002}, {"verdict", "info"}});
    c["checks"].push_back({{"subject", {{"part", "logits"}}}, {"metric", "logits.mismatch_fraction"},
                           {"value", 0.005}, {"verdict", "pass"}, {"detail", "pooled over 2 prompts"}});
  });
  const RenderedReport r = render_report(load_results({run.dir}), nullptr, fixed_time());
  EXPECT_EQ(testing::xml_problem(r.html), "");
  EXPECT_TRUE(contains(r.html, "title=\"pass: at logits: pooled over 2 prompts; judged pooled over the prompts; worst "
                               "single prompt (not judged) 0.03 at logits, prompt 0 (len01); threshold &lt;= 0.01\">"
                               "0.005</td>"))
      << r.html.substr(r.html.find("<table class=\"heat\">"), 6000);
  EXPECT_FALSE(contains(r.html, ">0.03</td>"));
}

TEST_F(FixtureReport, HeatTablesSitInScrollingBoxes) {
  // Wide tables (the final-logits one has a dozen metric columns) scroll inside their box instead of running off
  // the page; the box may grow past the 940 px column up to the window's width.
  for (const auto* r : {plain_, compared_}) {
    const std::size_t tables = count(r->html, "<table class=\"heat\">");
    EXPECT_GE(tables, 3u);  // final logits + a per-layer table for each of the two forward comparisons
    EXPECT_EQ(count(r->html, "<div class=\"wide\"><div class=\"scroll\"><table class=\"heat\">"), tables);
    EXPECT_TRUE(contains(r->html, ".scroll{overflow-x:auto"));
    EXPECT_TRUE(contains(r->html, ".wide{margin-left:calc(50% - 50vw + 20px)"));
  }
}

// ---- loss differences: a moving mean shows what the batch noise hides ------------------------------------------

TEST_F(FixtureReport, LossDifferenceIsSmoothedWithItsWindowStated) {
  const model::Model m = model::analyze(*current_, nullptr, fixed_time());
  const auto& L = m.loss;
  ASSERT_GE(L.reference, 0);
  EXPECT_EQ(L.diff_steps, 60);
  EXPECT_EQ(L.smooth_window, 3);  // 5% of 60 steps, odd
  ASSERT_EQ(L.diffs.size(), L.curves.size() - 1);
  for (const auto& d : L.diffs) {
    SCOPED_TRACE(d.label);
    ASSERT_EQ(d.smoothed.size(), d.raw.size() - 2);  // no point without a whole window
    for (std::size_t i = 0; i < d.smoothed.size(); ++i) {
      EXPECT_EQ(d.smoothed[i].first, d.raw[i + 1].first);
      double sum = 0;
      int n = 0;
      for (std::size_t j = i; j < i + 3; ++j)
        if (std::isfinite(d.raw[j].second)) sum += d.raw[j].second, ++n;
      // impl[delayed] has a NaN loss at step 33: the windows around it average the two finite values.
      EXPECT_TRUE(std::isfinite(d.smoothed[i].second)) << "step " << d.smoothed[i].first;
      EXPECT_NEAR(d.smoothed[i].second, sum / n, 1e-12);
    }
    EXPECT_EQ(d.val.size(), 3u);  // a validation record every 20 steps in both logs
  }
  const std::string charts = chart_text(plain_->html);
  EXPECT_TRUE(contains(charts, "Difference to the reference: loss - reference[bf16] loss, moving mean over 3 steps\n"))
      << charts;
  EXPECT_TRUE(contains(charts, "impl[delayed] validation\n"));
  EXPECT_TRUE(contains(plain_->html, "averaged over the 3 steps centred on it"));
  // The raw per-step differences stay available, unsmoothed, in their own chart.
  EXPECT_TRUE(contains(charts, "Difference to the reference, every step (no smoothing): loss - reference[bf16] loss\n"));
  EXPECT_TRUE(contains(plain_->html, "<figure id=\"loss-diff-raw\">"));
}

TEST(ReportLoss, MovingMeanRevealsADifferenceUnderTheBatchNoise) {
  // 2000 steps; the test curve sits 0.01 nats (0.33%) above the reference, under +-0.1 nats of alternating
  // batch noise. The raw differences span 0.2 nats; their moving mean over 101 steps (5%) is within 0.001 of 0.01
  // (one unpaired noise value of 0.1 in 101).
  const fs::path dir = fs::temp_directory_path() / ("tegemma_report_smooth_" + std::to_string(::getpid()));
  tg::remove_tree(dir);
  fs::create_directories(dir);
  std::string ref, test;
  for (int s = 0; s < 2000; ++s) {
    const double noise = s % 2 ? 0.1 : -0.1;
    ref += "{\"step\": " + std::to_string(s) + ", \"loss\": 3.0}\n";
    test += "{\"step\": " + std::to_string(s) + ", \"loss\": " + std::to_string(3.01 + noise) + "}\n";
  }
  write_file_atomic(dir / "train_reference_bf16.jsonl", ref);
  write_file_atomic(dir / "train_impl_delayed.jsonl", test);
  const ResultSet rs = load_results({dir});
  const model::Model m = model::analyze(rs, nullptr, fixed_time());
  ASSERT_EQ(m.loss.diffs.size(), 1u);
  EXPECT_EQ(m.loss.smooth_window, 101);
  const auto& d = m.loss.diffs.front();
  ASSERT_EQ(d.smoothed.size(), 2000u - 100u);
  EXPECT_EQ(d.smoothed.front().first, 50);
  EXPECT_EQ(d.smoothed.back().first, 1949);
  for (const auto& [step, v] : d.smoothed) EXPECT_NEAR(v, 0.01, 0.1 / 101 + 1e-9) << "step " << step;
  const RenderedReport r = render_report(rs, nullptr, fixed_time());
  EXPECT_TRUE(contains(chart_text(r.html), "moving mean over 101 steps\n"));
  EXPECT_TRUE(contains(r.html, "averaged over the 101 steps centred on it (a moving mean over about 5% of the 2000 "
                               "steps; the first and last 50 steps have no full window and are not drawn)"));
  tg::remove_tree(dir);
}


// ---- the headline table ----------------------------------------------------------------------------------------

// Google Benchmark JSON entries for hand-made headline inputs. Times in ms; counters as extra members.
nlohmann::json bench_iteration(const std::string& name, double ms, const nlohmann::json& counters = nlohmann::json::object()) {
  nlohmann::json e = {{"name", name}, {"run_name", name}, {"run_type", "iteration"}, {"repetitions", 1},
                      {"repetition_index", 0}, {"iterations", 1}, {"real_time", ms}, {"cpu_time", ms},
                      {"time_unit", "ms"}};
  e.update(counters);
  return e;
}

nlohmann::json bench_aggregate(const std::string& name, const std::string& aggregate, double ms,
                               const nlohmann::json& counters = nlohmann::json::object()) {
  nlohmann::json e = bench_iteration(name, ms, counters);
  e["name"] = name + "_" + aggregate;
  e["run_type"] = "aggregate";
  e["aggregate_name"] = aggregate;
  return e;
}

nlohmann::json bench_json(const nlohmann::json& benchmarks) {
  return {{"context", {{"tegemma_commit", "fixc00000003"}, {"fp8_gemm_ceiling_flops", "1360000000000000"},
                       {"bf16_gemm_ceiling_flops", "711000000000000"},
                       {"hbm_roofline_bytes_per_second", "4100000000000"}}},
          {"benchmarks", benchmarks}};
}

// A directory of benchmark files written from JSON, removed by the destructor.
struct BenchDir {
  fs::path dir;
  BenchDir(const std::string& tag, const std::map<std::string, nlohmann::json>& files) {
    dir = fs::temp_directory_path() / ("tegemma_report_" + tag + "_" + std::to_string(::getpid()));
    tg::remove_tree(dir);
    fs::create_directories(dir);
    for (const auto& [name, j] : files) write_file_atomic(dir / name, j.dump(1));
  }
  ~BenchDir() { tg::remove_tree(dir); }
};

// What bench_model, bench_reference and bench_generate would write, with decoys beside each headline benchmark:
// another shape, the _mean aggregate, bench_reference's prefill beside bench_model's, plain delayed beside
// delayed+fp8head, the FP8 KV cache variant of the TE tutorial. No hf_anchors.json.
std::map<std::string, nlohmann::json> headline_inputs() {
  const std::string delayed = "model/gemma-2b/impl_delayed/8x2048/min_time:0.500/manual_time";
  const std::string ref = "model/gemma-2b/reference/8x2048/min_time:0.500/manual_time";
  const std::string decode2b = "/gemma-2b/B1/P128+N256/iterations:3/manual_time";
  const std::string decode7b = "/gemma-7b/B1/P128+N256/iterations:2/manual_time";
  const std::string te = "/gemma-7b/B64/P20+N492/iterations:1/manual_time";
  using J = nlohmann::json;
  return {
      {"bench_model.json",
       bench_json(J::array({
           // Three repetitions and their aggregates: the median (210k) is the figure, not the mean (236.7k).
           bench_iteration(delayed, 80, {{"tokens_per_second", 200000.0}, {"gemm_roofline_frac", 0.60}}),
           bench_iteration(delayed, 78, {{"tokens_per_second", 210000.0}, {"gemm_roofline_frac", 0.62}}),
           bench_iteration(delayed, 55, {{"tokens_per_second", 300000.0}, {"gemm_roofline_frac", 0.80}}),
           bench_aggregate(delayed, "mean", 71, {{"tokens_per_second", 236666.7}, {"gemm_roofline_frac", 0.673}}),
           bench_aggregate(delayed, "median", 78, {{"tokens_per_second", 210000.0}, {"gemm_roofline_frac", 0.62}}),
           bench_aggregate(delayed, "stddev", 13, {{"tokens_per_second", 55000.0}}),
           bench_iteration("model/gemma-2b/impl_delayed/4x2048/min_time:0.500/manual_time", 10, {{"tokens_per_second", 999.0}}),
           bench_iteration("model/gemma-2b/impl_bf16/8x2048/min_time:0.500/manual_time", 117, {{"tokens_per_second", 140000.0}}),
           // Aggregates only (--benchmark_report_aggregates_only): the median again.
           bench_aggregate(ref, "mean", 137, {{"tokens_per_second", 120000.0}}),
           bench_aggregate(ref, "median", 164, {{"tokens_per_second", 100000.0}}),
           // gemma-7b at a shape that is not the headline's (4x2048): no row for it.
           bench_iteration("model/gemma-7b/impl_delayed/8x2048/min_time:0.500/manual_time", 300, {{"tokens_per_second", 55000.0}}),
       }))},
      {"bench_reference.json",
       bench_json(J::array({
           bench_iteration("e2e/prefill/reference/bf16/gemma-2b/B8xS2048/iterations:12/manual_time", 328,
                           {{"tokens_per_second", 50000.0}}),
           bench_iteration("e2e/decode/reference/bf16" + decode2b, 2133, {{"tokens_per_second", 120.0}}),
           bench_iteration("e2e/decode/reference/bf16" + te, 7500, {{"tokens_per_second", 4198.0}}),
       }))},
      {"bench_generate.json",
       bench_json(J::array({
           bench_iteration("e2e/decode/impl/delayed" + decode2b, 371,
                           {{"decode_tokens_per_second", 700.0}, {"tokens_per_second", 690.0}, {"hbm_roofline_frac", 0.3}}),
           bench_iteration("e2e/decode/impl/delayed+fp8head" + decode2b, 269,
                           {{"decode_tokens_per_second", 960.0}, {"tokens_per_second", 950.0}, {"hbm_roofline_frac", 0.45}}),
           bench_iteration("e2e/decode/impl/bf16" + decode2b, 500, {{"decode_tokens_per_second", 512.0}}),
           bench_iteration("e2e/decode/impl/delayed+fp8head" + decode7b, 640, {{"decode_tokens_per_second", 400.0}}),
           J{{"name", "e2e/decode/impl/bf16" + decode7b}, {"run_name", "e2e/decode/impl/bf16" + decode7b},
             {"run_type", "iteration"}, {"error_occurred", true}, {"error_message", "fixture: out of memory"}},
           bench_iteration("e2e/decode/impl/delayed" + te, 5000, {{"seconds", 5.0}}),
           bench_iteration("e2e/decode/impl/delayed+fp8kv" + te, 1000, {{"seconds", 1.0}}),
           bench_iteration("e2e/decode/impl/bf16" + te, 6000, {{"seconds", 6.0}}),
       }))},
  };
}

const model::HeadlineRow* headline_row(const model::Model& m, const std::string& workload) {
  for (const auto& r : m.headline.rows)
    if (r.workload == workload) return &r;
  return nullptr;
}

TEST(ReportHeadline, CellsAndRatioComeFromTheRightBenchmarks) {
  BenchDir run("headline", headline_inputs());
  const ResultSet rs = load_results({run.dir});
  const model::Model m = model::analyze(rs, nullptr, fixed_time());

  const auto* prefill = headline_row(m, "prefill gemma-2b 8x2048");
  ASSERT_NE(prefill, nullptr);
  EXPECT_EQ(prefill->unit, "tokens/s");
  ASSERT_TRUE(prefill->impl_fp8.value);
  EXPECT_DOUBLE_EQ(*prefill->impl_fp8.value, 210000.0);  // the _median aggregate, not the _mean or the 4x2048 decoy
  EXPECT_EQ(prefill->impl_fp8.bench, "model/gemma-2b/impl_delayed/8x2048/min_time:0.500/manual_time");
  EXPECT_EQ(prefill->impl_fp8.files, std::vector<std::string>{"bench_model.json"});
  EXPECT_DOUBLE_EQ(*prefill->impl_bf16.value, 140000.0);
  // bench_model's reference (aggregates only: the median) before bench_reference's e2e/prefill (50k).
  EXPECT_DOUBLE_EQ(*prefill->reference.value, 100000.0);
  EXPECT_EQ(prefill->reference.bench, "model/gemma-2b/reference/8x2048/min_time:0.500/manual_time");
  EXPECT_FALSE(prefill->hf.present);
  ASSERT_TRUE(prefill->vs_reference);
  EXPECT_DOUBLE_EQ(*prefill->vs_reference, 2.1);
  ASSERT_TRUE(prefill->roofline_frac);
  EXPECT_DOUBLE_EQ(*prefill->roofline_frac, 0.62);  // the median repetition's counter
  EXPECT_EQ(model::headline_roofline_note(*prefill), "gemm_roofline_frac: the FP8 GEMM ceiling (1360 TFLOP/s, documented)");
  EXPECT_FALSE(prefill->target);

  // Decode: delayed+fp8head before delayed; decode_tokens_per_second; the reference has only tokens_per_second.
  const auto* decode = headline_row(m, "decode batch 1 gemma-2b P128+N256");
  ASSERT_NE(decode, nullptr);
  EXPECT_EQ(decode->fp8_recipe, "delayed+fp8head");
  EXPECT_DOUBLE_EQ(*decode->impl_fp8.value, 960.0);
  EXPECT_EQ(decode->impl_fp8.counter, "decode_tokens_per_second");
  EXPECT_EQ(decode->reference.counter, "tokens_per_second");
  EXPECT_DOUBLE_EQ(*decode->vs_reference, 8.0);
  EXPECT_DOUBLE_EQ(*decode->roofline_frac, 0.45);
  EXPECT_EQ(decode->roofline_counter, "hbm_roofline_frac");
  EXPECT_DOUBLE_EQ(*decode->target_reached, 0.8);
  EXPECT_FALSE(decode->target_met());

  // An errored benchmark is shown as such, not as missing.
  const auto* decode7b = headline_row(m, "decode batch 1 gemma-7b P128+N256");
  ASSERT_NE(decode7b, nullptr);
  EXPECT_EQ(decode7b->impl_bf16.error, "fixture: out of memory");
  EXPECT_EQ(model::headline_value(*decode7b, decode7b->impl_bf16), "error");
  EXPECT_TRUE(decode7b->target_met());  // 400 >= 380

  const RenderedReport r = render_report(rs, nullptr, fixed_time());
  const std::string& md = r.markdown;
  EXPECT_TRUE(contains(md, "| prefill gemma-2b 8x2048 (tokens/s) | 210k | 140k | 100k | - | 2.10x | 62% | - |\n")) << md;
  EXPECT_TRUE(contains(md, "| decode batch 1 gemma-2b P128+N256 (decode tokens/s) | 960 (delayed+fp8head) | 512 | "
                           "120 * | - | 8.00x | 45% | 1200 tok/s: no (80%) |\n"))
      << md;
  EXPECT_TRUE(contains(md, "| decode batch 1 gemma-7b P128+N256 (decode tokens/s) | 400 (delayed+fp8head) | error | - | "
                           "- | - | - | 380 tok/s: yes (105%) |\n"))
      << md;
  EXPECT_TRUE(contains(md, "\\* no `decode_tokens_per_second` in the benchmark"));
  EXPECT_EQ(xml_problem(r.html), "");
  EXPECT_TRUE(contains(r.html, "<tr><td>prefill gemma-2b 8x2048<br/><span class=\"note\">tokens/s, higher is better"
                               "</span></td><td class=\"numw\" title=\"model/gemma-2b/impl_delayed/8x2048/min_time:0.500/"
                               "manual_time\ntokens_per_second\nbench_model.json\">210k</td>"))
      << r.html;
  EXPECT_TRUE(contains(r.html, "<li>prefill gemma-2b 8x2048: gemm_roofline_frac: the FP8 GEMM ceiling (1360 TFLOP/s, documented)</li>"));
}

TEST(ReportHeadline, MissingHfFileGivesADashAndHfAnchorsFillTheColumn) {
  auto files = headline_inputs();
  {
    BenchDir run("headline_nohf", files);
    const RenderedReport r = render_report(load_results({run.dir}), nullptr, fixed_time());
    // The HF column is the fifth: '-' in every row.
    EXPECT_TRUE(contains(r.markdown, "| 210k | 140k | 100k | - | 2.10x |"));
    EXPECT_TRUE(contains(r.markdown, "| 5 | 6 | 7.5 | - | 1.50x |"));
    EXPECT_TRUE(contains(r.html, ">7.5</td><td class=\"num\">-</td><td class=\"num\">1.50x</td>")) << r.html;
  }
  // hf_anchors.py's names: `hf` where the reference has `reference`.
  files["hf_anchors.json"] = bench_json(nlohmann::json::array({
      bench_iteration("e2e/prefill/hf/bf16/gemma-2b/B8xS2048/iterations:3/manual_time", 182, {{"tokens_per_second", 90000.0}}),
      bench_iteration("e2e/decode/hf/bf16/gemma-2b/B1/P128+N256/iterations:2/manual_time", 2560, {{"tokens_per_second", 100.0}}),
      bench_iteration("e2e/decode/hf/bf16/gemma-7b/B64/P20+N492/iterations:1/manual_time", 6930, {{"tokens_per_second", 4544.0}}),
  }));
  BenchDir run("headline_hf", files);
  const model::Model m = model::analyze(load_results({run.dir}), nullptr, fixed_time());
  const auto* prefill = headline_row(m, "prefill gemma-2b 8x2048");
  ASSERT_NE(prefill, nullptr);
  EXPECT_DOUBLE_EQ(*prefill->hf.value, 90000.0);
  EXPECT_EQ(prefill->hf.files, std::vector<std::string>{"hf_anchors.json"});
  EXPECT_DOUBLE_EQ(*headline_row(m, "decode batch 1 gemma-2b P128+N256")->hf.value, 100.0);
  EXPECT_DOUBLE_EQ(*headline_row(m, "TE tutorial gemma-7b B64 P20+N492")->hf.value, 6.93);  // real_time in seconds
  const std::string md = model::render_markdown(m);
  EXPECT_TRUE(contains(md, "| 210k | 140k | 100k | 90k | 2.10x |")) << md;
  EXPECT_TRUE(contains(md, "| 5 | 6 | 7.5 | 6.93 | 1.50x |")) << md;
}

TEST(ReportHeadline, TimeRowsAreLowerIsBetterWithTheRatioInverted) {
  BenchDir run("headline_time", headline_inputs());
  const model::Model m = model::analyze(load_results({run.dir}), nullptr, fixed_time());
  const auto* te = headline_row(m, "TE tutorial gemma-7b B64 P20+N492");
  ASSERT_NE(te, nullptr);
  EXPECT_FALSE(te->higher_is_better);
  EXPECT_EQ(te->unit, "s");
  // impl/delayed (5 s), not delayed+fp8kv (1 s); real_time in seconds.
  EXPECT_EQ(te->impl_fp8.bench, "e2e/decode/impl/delayed/gemma-7b/B64/P20+N492/iterations:1/manual_time");
  EXPECT_DOUBLE_EQ(*te->impl_fp8.value, 5.0);
  EXPECT_EQ(te->impl_fp8.counter, "real_time");
  EXPECT_DOUBLE_EQ(*te->reference.value, 7.5);
  // Reference time over impl time: > 1 means impl is faster, as in the tokens/s rows.
  EXPECT_DOUBLE_EQ(*te->vs_reference, 1.5);
  // <= 2.5 s reached to 2.5 / 5 = 50%.
  EXPECT_DOUBLE_EQ(*te->target_reached, 0.5);
  EXPECT_EQ(model::headline_target(*te), "<= 2.5 s: no (50%)");
  EXPECT_TRUE(contains(model::render_markdown(m),
                       "| TE tutorial gemma-7b B64 P20+N492 (s, lower is better) | 5 | 6 | 7.5 | - | 1.50x | - | "
                       "<= 2.5 s: no (50%) |\n"));
}

TEST(ReportHeadline, TutorialRowPrefersTheConfigurationBuiltForItsTarget) {
  // delayed+fp8kv+fp8head (the FP8 KV cache and lm_head: what the 2.5 s target is aimed with) before plain delayed;
  // delayed+fp8kv alone stays a decoy.
  auto inputs = headline_inputs();
  const std::string te = "/gemma-7b/B64/P20+N492/iterations:1/manual_time";
  inputs["bench_generate.json"]["benchmarks"].push_back(
      bench_iteration("e2e/decode/impl/delayed+fp8kv+fp8head" + te, 3000, {{"seconds", 3.0}}));
  BenchDir run("headline_tutorial", inputs);
  const model::Model m = model::analyze(load_results({run.dir}), nullptr, fixed_time());
  const auto* row = headline_row(m, "TE tutorial gemma-7b B64 P20+N492");
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->impl_fp8.bench, "e2e/decode/impl/delayed+fp8kv+fp8head" + te);
  EXPECT_DOUBLE_EQ(*row->impl_fp8.value, 3.0);
  EXPECT_DOUBLE_EQ(*row->vs_reference, 2.5);  // 7.5 s / 3 s
}

TEST(ReportHeadline, RowsWithoutDataAreOmitted) {
  BenchDir run("headline_rows", headline_inputs());
  const model::Model m = model::analyze(load_results({run.dir}), nullptr, fixed_time());
  std::vector<std::string> rows;
  for (const auto& r : m.headline.rows) rows.push_back(r.workload);
  // No gemma-7b 4x2048 prefill (only 8x2048), no train step, no time to first token in these inputs.
  EXPECT_EQ(rows, (std::vector<std::string>{"prefill gemma-2b 8x2048", "decode batch 1 gemma-2b P128+N256",
                                            "decode batch 1 gemma-7b P128+N256", "TE tutorial gemma-7b B64 P20+N492"}));
  const RenderedReport r = render_report(load_results({run.dir}), nullptr, fixed_time());
  EXPECT_FALSE(contains(r.markdown, "prefill gemma-7b"));
  EXPECT_FALSE(contains(r.html, "train step"));

  // Inputs with none of the headline workloads: no section, and the note says why.
  const RenderedReport g = render_report(load_results({kFixtures / "run_a" / "bench_gemm.json"}), nullptr, fixed_time());
  EXPECT_FALSE(contains(g.html, "id=\"headline\""));
  EXPECT_FALSE(contains(g.markdown, "### Headline"));
  EXPECT_TRUE(contains(g.html, "Headline: none of its end-to-end workloads"));
  EXPECT_TRUE(contains(g.markdown, "Headline: none of its end-to-end workloads"));
}

TEST(ReportHeadline, GapsToTargetsLeastReachedFirst) {
  BenchDir run("headline_gaps", headline_inputs());
  const model::Model m = model::analyze(load_results({run.dir}), nullptr, fixed_time());
  // Decode gemma-2b reaches 80% of 1200 tok/s, the TE tutorial 50% of <= 2.5 s; decode gemma-7b meets 380 tok/s.
  std::vector<std::string> gaps;
  for (std::size_t i : m.headline.gaps) gaps.push_back(m.headline.rows[i].workload);
  EXPECT_EQ(gaps, (std::vector<std::string>{"TE tutorial gemma-7b B64 P20+N492", "decode batch 1 gemma-2b P128+N256"}));
  const std::string md = model::render_markdown(m);
  EXPECT_TRUE(contains(md, "Largest gaps to targets:\n\n"
                           "1. TE tutorial gemma-7b B64 P20+N492: 5 s, 50% of the target <= 2.5 s (issue 7)\n"
                           "2. decode batch 1 gemma-2b P128+N256: 960 decode tokens/s, 80% of the target 1200 tok/s "
                           "(issue 7)\n"))
      << md;
  const std::string html = model::render_html(m);
  EXPECT_EQ(xml_problem(html), "");
  EXPECT_TRUE(contains(html, "<h3>Largest gaps to targets</h3><ol><li>TE tutorial gemma-7b B64 P20+N492: 5 s, 50% of "
                             "the target &lt;= 2.5 s (issue 7)</li><li>decode batch 1 gemma-2b P128+N256: 960 decode "
                             "tokens/s, 80% of the target 1200 tok/s (issue 7)</li></ol>"))
      << html;
  // The section sits right after the verdict, before the other sections.
  const auto verdict = html.find("<section id=\"verdict\">"), headline = html.find("<section id=\"headline\">");
  ASSERT_NE(headline, std::string::npos);
  EXPECT_LT(verdict, headline);
  EXPECT_EQ(html.find("<section", verdict + 1), headline);
}

TEST(ReportHeadline, CeilingIsNamedMeasuredOrDocumented) {
  // bench_train measures its FP8 ceiling first and divides by it: the caption says so. Its gemm_roofline_frac is
  // against the BF16 ceiling; fp8_ceiling_frac, the FP8 one, is the figure shown.
  nlohmann::json train = bench_json(nlohmann::json::array({
      bench_iteration("e2e/ceiling/impl/fp8/8192x8192x8192/iterations:50/manual_time", 0.73, {{"gemm_roofline_frac", 1.0}}),
      bench_iteration("e2e/train_step/impl/delayed/gemma-2b/B4xS2048/iterations:10/manual_time", 196,
                      {{"tokens_per_second", 41771.6}, {"gemm_roofline_frac", 0.862}, {"fp8_ceiling_frac", 0.428}}),
  }));
  train["context"]["fp8_gemm_ceiling_flops"] = "1510488141244995.5";
  BenchDir run("headline_ceiling", {{"bench_train.json", train}});
  const model::Model m = model::analyze(load_results({run.dir}), nullptr, fixed_time());
  ASSERT_EQ(m.headline.rows.size(), 1u);
  const auto& row = m.headline.rows.front();
  EXPECT_EQ(row.workload, "train step gemma-2b 4x2048");
  EXPECT_DOUBLE_EQ(*row.roofline_frac, 0.428);
  EXPECT_EQ(model::headline_roofline_note(row), "fp8_ceiling_frac: the FP8 GEMM ceiling (1510 TFLOP/s, measured in this run)");
  EXPECT_EQ(model::headline_value(row, row.reference), "-");
  EXPECT_TRUE(contains(model::render_markdown(m), "| train step gemma-2b 4x2048 (tokens/s) | 41.8k | - | - | - | - | 43% | - |\n"));
}

TEST_F(FixtureReport, HeadlineOfTheFixtureRun) {
  // run_a: bench_model's 8x2048 workload, its `hf` engine in the HF column; bench_e2e's decode without impl.
  const std::string& md = plain_->markdown;
  EXPECT_TRUE(contains(md, "| prefill gemma-2b 8x2048 (tokens/s) | 78.9k | 52.5k | 41k | 38.8k | 1.92x | 35% | - |\n")) << md;
  EXPECT_TRUE(contains(md, "| decode batch 1 gemma-2b P128+N256 (decode tokens/s) | - | - | 122 * | 98.5 * | - | - | "
                           "1200 tok/s: not measured |\n"))
      << md;
  EXPECT_FALSE(contains(md, "Largest gaps to targets"));  // the only target is not measured
  // The Markdown headline comes before the baseline comparison.
  const std::string& cmd = compared_->markdown;
  EXPECT_LT(cmd.find("### Headline"), cmd.find("### Against the baseline"));
}

}  // namespace
}  // namespace tg::reports
