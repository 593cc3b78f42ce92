// The report reads what the parity harness writes: a parity::Report built through parity's own API (judged
// against its built-in thresholds) goes through Report::to_json and back in through reports::parse_parity.
// If parity's writer changes a field the report relies on, this test fails here, not in a CI report.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "parity/report.h"
#include "parity/thresholds.h"
#include "reports/inputs.h"
#include "reports/report.h"
#include "reports/tests/xml_check.h"

namespace tg::reports {
namespace {

parity::Comparison comparison(const std::string& kind, const std::string& precision) {
  parity::Comparison c;
  c.kind = kind;
  c.reference = "reference[bf16]";
  c.test = "impl[" + precision + "]";
  c.reference_recipe = "bf16";
  c.test_recipe = precision;
  c.precision = precision;
  c.size_class = "tiny";
  return c;
}

TEST(ParitySchema, ReportReadsWhatParityWrites) {
  const parity::Thresholds th = parity::Thresholds::builtin();
  parity::Report r;
  r.provenance = {{"commit", "abc123"}, {"gpu", "NVIDIA H200"}};
  parity::Comparison fwd = comparison("forward", "delayed");
  fwd.judge(th, {0, "len01", 0, "layer.0"}, "tap.cosine", 0.9995);
  fwd.judge(th, {0, "len01", 1, "layer.1"}, "tap.cosine", 0.5, "at position 3, channel 17");
  fwd.judge(th, {0, "len01", -1, "logits"}, "logits.kl_max", 0.001);
  fwd.judge(th, {0, "len01", -1, "logits"}, "logits.top5_overlap", std::numeric_limits<double>::quiet_NaN());
  r.comparisons.push_back(fwd);
  parity::Comparison loss = comparison("loss_curve", "delayed");
  loss.series["loss.reference"] = {{0, 8.0}, {1, 7.5}};
  loss.series["loss.test"] = {{0, 8.1}, {1, std::numeric_limits<double>::infinity()}};
  loss.notes.push_back("a note");
  r.comparisons.push_back(loss);

  const ParityFile f = parse_parity(r.to_json(), "parity.json");
  EXPECT_EQ(f.status, "fail");
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_EQ(f.provenance.at("commit"), "abc123");
  ASSERT_EQ(f.comparisons.size(), 2u);
  const ParityComparison& c = f.comparisons[0];
  EXPECT_EQ(c.title, "reference[bf16] vs impl[delayed]: forward");
  EXPECT_EQ(c.status, "fail");
  ASSERT_EQ(c.checks.size(), 4u);
  EXPECT_EQ(c.checks[1].layer, 1);
  EXPECT_EQ(c.checks[1].verdict, "fail");
  EXPECT_EQ(c.checks[1].detail, "at position 3, channel 17");
  EXPECT_EQ(c.checks[2].part, "logits");
  EXPECT_TRUE(std::isnan(c.checks[3].value));
  EXPECT_EQ(c.thresholds.at("tap.cosine").bound, "min");
  EXPECT_GT(c.thresholds.at("tap.cosine").value, 0.9);
  EXPECT_TRUE(std::isinf(f.comparisons[1].series.at("loss.test")[1].second));
  EXPECT_EQ(f.comparisons[1].notes.at(0), "a note");

  // And the report renders it: verdict, heat map, loss curves from the series.
  ResultSet rs;
  rs.parity.push_back(f);
  ReportOptions o;
  o.generated_at = "now";
  const RenderedReport out = render_report(rs, nullptr, o);
  EXPECT_EQ(testing::xml_problem(out.html), "");
  EXPECT_NE(out.html.find("Parity: FAIL"), std::string::npos);
  EXPECT_NE(out.html.find("failcell"), std::string::npos);
  EXPECT_NE(out.html.find("id=\"loss\""), std::string::npos);
  EXPECT_NE(out.markdown.find("| delayed | FAIL |"), std::string::npos);
}

}  // namespace
}  // namespace tg::reports
