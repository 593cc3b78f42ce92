// Reading result directories: kinds detected, values read as written, and bad inputs rejected with an error
// that names the file and the field.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "common/check.h"
#include "common/file_io.h"
#include "reports/inputs.h"

namespace tg::reports {
namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = fs::path(TEGEMMA_SOURCE_DIR) / "reports/tests/fixtures";

// A scratch directory per test, removed afterwards.
class Scratch {
 public:
  Scratch() {
    dir_ = fs::temp_directory_path() / ("tegemma_reports_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    tg::remove_tree(dir_);
    fs::create_directories(dir_);
  }
  ~Scratch() { tg::remove_tree(dir_); }
  fs::path write(const std::string& name, const std::string& text) const {
    write_file_atomic(dir_ / name, text);
    return dir_ / name;
  }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
};

// The error message of `f()`, or "" when it did not throw tg::Error.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Inputs, FixtureRunIsReadByKind) {
  const ResultSet rs = load_results({kFixtures / "run_a"});
  EXPECT_EQ(rs.bench.size(), 3u);
  EXPECT_EQ(rs.parity.size(), 1u);
  EXPECT_EQ(rs.train.size(), 3u);
  EXPECT_EQ(rs.gpu_tests.size(), 1u);
  ASSERT_EQ(rs.skipped.size(), 1u);
  EXPECT_NE(rs.skipped[0].find("notes.json"), std::string::npos);

  const BenchFile& gemm = rs.bench[1];  // sorted by path: bench_e2e, bench_gemm, bench_model
  EXPECT_EQ(gemm.path.filename(), "bench_gemm.json");
  EXPECT_EQ(gemm.context.at("tegemma_gpu"), "NVIDIA H200");
  EXPECT_EQ(gemm.context.at("num_cpus"), "16");           // numbers kept in their JSON form
  EXPECT_EQ(gemm.context.count("caches"), 0u);            // containers skipped
  const BenchEntry& e = gemm.entries[3];
  EXPECT_EQ(e.name, "gemm/fp8_tensor_fast/e4m3xe4m3->bf16/8192x2560x2048/manual_time");
  EXPECT_DOUBLE_EQ(e.counters.at("flops"), 1095.6e12);
  const double us = 2.0 * 8192 * 2560 * 2048 / 1095.6e12 * 1e6;
  EXPECT_NEAR(e.real_time_ns, us * 1e3, 1e-6 * us * 1e3);   // microseconds converted to ns
  EXPECT_EQ(e.counters.count("iterations"), 0u);          // bookkeeping fields are not counters
  EXPECT_EQ(gemm.entries.back().error, "fixture: planted benchmark error");

  const TrainLog* delayed = nullptr;
  for (const auto& t : rs.train)
    if (t.label == "impl[delayed]") delayed = &t;
  ASSERT_NE(delayed, nullptr);
  EXPECT_EQ(delayed->engine, "impl");
  EXPECT_EQ(delayed->recipe, "delayed");
  ASSERT_EQ(delayed->points.size(), 60u);                 // validation lines merged into their steps
  EXPECT_TRUE(delayed->points[33].loss && std::isnan(*delayed->points[33].loss));  // null -> NaN
  EXPECT_TRUE(delayed->points[19].val_loss.has_value());
  EXPECT_FALSE(delayed->points[18].val_loss.has_value());
  EXPECT_EQ(*delayed->points[1].tokens_per_s, 77010);
  EXPECT_EQ(delayed->points[0].memory_gib.at("peak_mem_gib"), 7.75);

  const ParityFile& p = rs.parity[0];
  EXPECT_EQ(p.status, "fail");
  ASSERT_EQ(p.comparisons.size(), 4u);
  EXPECT_EQ(p.comparisons[1].precision, "delayed");
  EXPECT_EQ(p.comparisons[1].thresholds.at("tap.cosine").bound, "min");
  EXPECT_TRUE(std::isnan(p.comparisons[3].series.at("loss.step_diff").back().second));  // "nan" decoded
  EXPECT_EQ(rs.gpu_tests[0].failed(), 1);
  EXPECT_EQ(rs.gpu_tests[0].passed(), 2);
}

TEST(Inputs, TrainLogLabelsComeFromTheStemOrTheRecords) {
  TrainLog log;
  label_from_stem("train_impl_delayed", log);
  EXPECT_EQ(log.label, "impl[delayed]");
  label_from_stem("loss-reference-bf16", log);
  EXPECT_EQ(log.label, "reference[bf16]");
  label_from_stem("my_run", log);
  EXPECT_EQ(log.label, "my_run");
  EXPECT_EQ(log.engine, "");
  const TrainLog l = parse_train_log("{\"step\": 0, \"loss\": 1.5, \"engine\": \"hf\", \"recipe\": \"bf16\"}\n", "x.jsonl");
  EXPECT_EQ(l.label, "hf[bf16]");
  const TrainLog named = parse_train_log("{\"step\": 0, \"loss\": \"inf\", \"label\": \"run 7\"}\n", "x.jsonl");
  EXPECT_EQ(named.label, "run 7");
  EXPECT_TRUE(std::isinf(*named.points[0].loss));
}

TEST(Inputs, TrainLogTakesTheTrainersTrainingAndValidationLinesOfOneStep) {
  // `tegemma train` writes a step's training record and, every K steps, its validation record as two lines.
  const TrainLog l = parse_train_log(
      "{\"engine\": \"impl\", \"recipe\": \"bf16\", \"step\": 99, \"loss\": 4.5, \"num_params\": 10, \"lr\": 0.001}\n"
      "{\"engine\": \"impl\", \"recipe\": \"bf16\", \"step\": 99, \"val_loss\": 4.75}\n",
      "train.jsonl");
  ASSERT_EQ(l.points.size(), 1u);
  EXPECT_EQ(*l.points[0].loss, 4.5);
  EXPECT_EQ(*l.points[0].val_loss, 4.75);
  EXPECT_EQ(l.label, "impl[bf16]");
  const std::string e = error_of([] {
    parse_train_log("{\"engine\": \"impl\", \"step\": 0, \"loss\": 1}\n{\"engine\": \"reference\", \"step\": 1, \"loss\": 1}\n",
                    "mixed.jsonl");
  });
  EXPECT_NE(e.find("mixed.jsonl:2: engine: \"reference\" differs from \"impl\""), std::string::npos) << e;
}

TEST(Inputs, MalformedJsonNamesTheFile) {
  Scratch s;
  const fs::path f = s.write("bench_broken.json", "{\"context\": {}, \"benchmarks\": [");
  const std::string e = error_of([&] { load_results({f}); });
  EXPECT_NE(e.find("bench_broken.json"), std::string::npos) << e;
  EXPECT_NE(e.find("malformed JSON"), std::string::npos) << e;
}

TEST(Inputs, UnknownParitySchemaVersionIsRejected) {
  Scratch s;
  const fs::path f = s.write("parity.json", R"({"schema": "tegemma.parity", "schema_version": 2, "status": "pass",
      "exit_code": 0, "provenance": {}, "comparisons": []})");
  const std::string e = error_of([&] { load_results({s.dir()}); });
  EXPECT_NE(e.find("parity.json: schema_version"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown parity schema_version 2"), std::string::npos) << e;
}

TEST(Inputs, MissingAndMistypedFieldsAreNamedWithTheirPath) {
  Scratch s;
  const fs::path missing = s.write("a.json", R"({"context": {}, "benchmarks": [{"name": "x", "time_unit": "us"}]})");
  std::string e = error_of([&] { load_results({missing}); });
  EXPECT_NE(e.find("a.json: benchmarks[0].real_time: missing"), std::string::npos) << e;

  const fs::path mistyped = s.write("b.json", R"({"context": {}, "benchmarks": [
      {"name": "x", "real_time": "fast", "time_unit": "us"}]})");
  e = error_of([&] { load_results({mistyped}); });
  EXPECT_NE(e.find("b.json: benchmarks[0].real_time: expected a number, got string"), std::string::npos) << e;

  const fs::path unit = s.write("c.json", R"({"context": {}, "benchmarks": [{"name": "x", "real_time": 1, "time_unit": "min"}]})");
  e = error_of([&] { load_results({unit}); });
  EXPECT_NE(e.find("benchmarks[0].time_unit: unknown time unit \"min\""), std::string::npos) << e;

  const fs::path no_ctx = s.write("d.json", R"({"benchmarks": []})");
  e = error_of([&] { load_results({no_ctx}); });
  EXPECT_NE(e.find("d.json: context: missing"), std::string::npos) << e;

  const fs::path gbv = s.write("e.json", R"({"context": {"json_schema_version": 7}, "benchmarks": []})");
  e = error_of([&] { load_results({gbv}); });
  EXPECT_NE(e.find("unknown Google Benchmark JSON schema version 7"), std::string::npos) << e;

  const fs::path check = s.write("f.json", R"({"schema": "tegemma.parity", "schema_version": 1, "status": "pass",
      "exit_code": 0, "provenance": {}, "comparisons": [{"kind": "forward", "reference": "r", "test": "t",
      "reference_recipe": "bf16", "test_recipe": "bf16", "precision": "bf16", "size_class": "tiny", "status": "pass",
      "checks": [{"subject": {}, "metric": "tap.cosine", "value": "high", "verdict": "pass"}]}]})");
  e = error_of([&] { load_results({check}); });
  EXPECT_NE(e.find("f.json: comparisons[0].checks[0].value: expected a number or"), std::string::npos) << e;

  const fs::path verdict = s.write("g.json", R"({"schema": "tegemma.parity", "schema_version": 1, "status": "pass",
      "exit_code": 0, "provenance": {}, "comparisons": [{"kind": "forward", "reference": "r", "test": "t",
      "reference_recipe": "bf16", "test_recipe": "bf16", "precision": "bf16", "size_class": "tiny", "status": "pass",
      "checks": [{"subject": {}, "metric": "tap.cosine", "value": 1, "verdict": "ok"}]}]})");
  e = error_of([&] { load_results({verdict}); });
  EXPECT_NE(e.find("comparisons[0].checks[0].verdict: expected pass, fail, near_tie or info"), std::string::npos) << e;

  const fs::path notes = s.write("i.json", R"({"schema": "tegemma.parity", "schema_version": 1, "status": "pass",
      "exit_code": 0, "provenance": {}, "comparisons": [{"kind": "forward", "reference": "r", "test": "t",
      "reference_recipe": "bf16", "test_recipe": "bf16", "precision": "bf16", "size_class": "tiny", "status": "pass",
      "checks": [], "notes": "not a list"}]})");
  e = error_of([&] { load_results({notes}); });
  EXPECT_NE(e.find("i.json: comparisons[0].notes: expected an array, got string"), std::string::npos) << e;

  const fs::path tests = s.write("h.json", R"({"tests": [{"name": "A.b"}]})");
  e = error_of([&] { load_results({tests}); });
  EXPECT_NE(e.find("h.json: tests[0].status: missing"), std::string::npos) << e;
}

TEST(Inputs, BadTrainingLogsNameTheLineAndTheField) {
  Scratch s;
  std::string e = error_of([&] { load_results({s.write("t1.jsonl", "{\"step\": 0, \"loss\": 2}\n{\"loss\": 1}\n")}); });
  EXPECT_NE(e.find("t1.jsonl:2: step: missing"), std::string::npos) << e;
  e = error_of([&] { load_results({s.write("t2.jsonl", "{\"step\": 0, \"loss\": 2}\n{\"step\": 0, \"loss\": 1}\n")}); });
  EXPECT_NE(e.find("t2.jsonl:2: loss: given twice for step 0"), std::string::npos) << e;
  e = error_of([&] { load_results({s.write("t3.jsonl", "{\"step\": 1.5, \"loss\": 2}\n")}); });
  EXPECT_NE(e.find("t3.jsonl:1: step: expected an integer"), std::string::npos) << e;
  e = error_of([&] { load_results({s.write("t4.jsonl", "{\"step\": 1, \"grad_norm\": 2}\n")}); });
  EXPECT_NE(e.find("t4.jsonl:1: needs \"loss\" or \"val_loss\""), std::string::npos) << e;
  e = error_of([&] { load_results({s.write("t5.jsonl", "{\"step\": 1, \"loss\": \"low\"}\n")}); });
  EXPECT_NE(e.find("t5.jsonl:1: loss: expected a number or"), std::string::npos) << e;
  e = error_of([&] { load_results({s.write("t6.jsonl", "{\"step\": 1, \"loss\": 2}\nnot json\n")}); });
  EXPECT_NE(e.find("t6.jsonl:2: malformed JSON"), std::string::npos) << e;
  e = error_of([&] { load_results({s.write("t7.jsonl", "\n\n")}); });
  EXPECT_NE(e.find("t7.jsonl: no training records"), std::string::npos) << e;
}

TEST(Inputs, MissingInputsAndOtherFilesAreErrors) {
  Scratch s;
  std::string e = error_of([&] { load_results({s.dir() / "nope"}); });
  EXPECT_NE(e.find("nope: no such file or directory"), std::string::npos) << e;
  e = error_of([&] { load_results({s.write("report.html", "<html/>")}); });
  EXPECT_NE(e.find("report.html: not a result file"), std::string::npos) << e;
  // Inside a directory, files that are not .json/.jsonl are not read at all.
  s.write("report.html", "<html/>");
  s.write("x.jsonl", "{\"step\": 0, \"loss\": 1}\n");
  EXPECT_EQ(load_results({s.dir()}).train.size(), 1u);
}

}  // namespace
}  // namespace tg::reports
