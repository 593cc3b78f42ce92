// The report generator on fixture runs, checked structurally: the HTML is well-formed (and each SVG on its
// own), self-contained, has the expected sections, shows the fixture's numbers and the charts' axis labels;
// the Markdown has the expected table rows; sections without data are replaced by a note; --baseline flags
// the planted regression.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/file_io.h"
#include "reports/report.h"
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
  for (const char* id : {"verdict", "loss", "parity", "generation", "workloads", "gemm", "memory", "tests", "provenance"})
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

}  // namespace
}  // namespace tg::reports
