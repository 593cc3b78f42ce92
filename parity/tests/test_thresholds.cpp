// Thresholds as data: the shipped file, lookup order, overrides, and validation errors that name the key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>

#include "common/check.h"
#include "common/tests/test_error.h"
#include "common/file_io.h"
#include "common/gemma_config.h"
#include "parity/thresholds.h"

namespace tg::parity {
namespace {

using ::testing::HasSubstr;

using tg::testing::error_of;

// A minimal valid file with one entry.
std::string file_with(const std::string& thresholds, const std::string& top = "") {
  return "{\"schema_version\": 1, \"thresholds_version\": 3, " + top + "\"thresholds\": {" + thresholds + "}}";
}
const char* kEntry = "\"tap.cosine\": {\"bf16\": {\"any\": {\"value\": 0.9, \"reason\": \"r\"}}}";

TEST(ParityThresholds, BuiltinParsesAndIsComplete) {
  const Thresholds t = Thresholds::builtin();  // check_complete() inside
  EXPECT_GE(t.thresholds_version(), 1);
  ASSERT_EQ(t.sources().size(), 1u);
  EXPECT_EQ(t.sources()[0].first, "builtin:parity/thresholds.json");
  // The compiled-in copy is the file in the tree.
  EXPECT_EQ(read_file(std::filesystem::path(TEGEMMA_SOURCE_DIR) / "parity/thresholds.json"),
            std::string(builtin_thresholds_json()));
}

TEST(ParityThresholds, BuiltinValuesAreTeTolerances) {
  // The values cited from Transformer Engine's tests (shared/docs/transformer-engine.md section 3): an edit
  // that changes them must change this test too, on purpose.
  const Thresholds t = Thresholds::builtin();
  EXPECT_EQ(t.get("tap.rtol", "bf16", "tiny").value, 1.6e-2);      // dtype_tols BF16
  EXPECT_EQ(t.get("logits.rtol", "delayed", "7b").value, 0.125);   // FP8 rtol
  EXPECT_EQ(t.get("tap.atol", "current", "small").value, 0.0675);  // FP8 atol
  EXPECT_EQ(t.get("tap.atol", "bf16", "2b").value, 0.12);          // test_kv_cache head_dim 256 BF16
  EXPECT_EQ(t.get("tap.atol", "bf16", "small").value, 0.1);        // GPT BF16 output atol
  EXPECT_EQ(t.get("tap.rmse_over_range", "block", "2b").value, 0.15);  // FP8 MHA rmse_tol
  EXPECT_EQ(t.get("loss.final_val_ratio", "delayed", "small").value, 1.02);  // FP8 loss within 2%
  EXPECT_EQ(t.get("loss.tail_mean_rel_diff", "block", "2b").value, 0.02);
  for (auto prec : kPrecisions) {
    EXPECT_EQ(t.get("tap.nonfinite", prec, "tiny").value, 0.0);
    EXPECT_EQ(t.get("logits.top1_hard_disagreements", prec, "7b").value, 0.0);
  }
}

TEST(ParityThresholds, EveryBuiltinReasonIsWritten) {
  const nlohmann::json j = nlohmann::json::parse(builtin_thresholds_json());
  int n = 0;
  for (const auto& [metric, by_prec] : j["thresholds"].items())
    for (const auto& [prec, by_size] : by_prec.items())
      for (const auto& [size, e] : by_size.items()) {
        EXPECT_GE(e["reason"].get<std::string>().size(), 30u) << metric << "." << prec << "." << size;
        ++n;
      }
  EXPECT_GT(n, 30);
}

TEST(ParityThresholds, LookupOrder) {
  const std::string text = file_with(
      "\"tap.cosine\": {"
      "  \"delayed\": {\"7b\": {\"value\": 0.1, \"reason\": \"P,Z\"}, \"any\": {\"value\": 0.2, \"reason\": \"P,any\"}},"
      "  \"fp8\": {\"7b\": {\"value\": 0.3, \"reason\": \"fp8,Z\"}, \"any\": {\"value\": 0.4, \"reason\": \"fp8,any\"}},"
      "  \"any\": {\"tiny\": {\"value\": 0.5, \"reason\": \"any,Z\"}, \"any\": {\"value\": 0.6, \"reason\": \"any,any\"}}}");
  const Thresholds t = Thresholds::parse(text, "t.json");
  EXPECT_EQ(t.get("tap.cosine", "delayed", "7b").reason, "P,Z");
  EXPECT_EQ(t.get("tap.cosine", "delayed", "tiny").reason, "P,any");  // precision before size groups
  EXPECT_EQ(t.get("tap.cosine", "current", "7b").reason, "fp8,Z");
  EXPECT_EQ(t.get("tap.cosine", "block", "2b").reason, "fp8,any");
  EXPECT_EQ(t.get("tap.cosine", "bf16", "tiny").reason, "any,Z");    // bf16 is not in the fp8 group
  EXPECT_EQ(t.get("tap.cosine", "bf16", "2b").reason, "any,any");
  const Threshold found = t.get("tap.cosine", "current", "7b");
  EXPECT_EQ(found.precision_key, "fp8");
  EXPECT_EQ(found.size_key, "7b");
  EXPECT_EQ(found.bound, Bound::kMin);
  EXPECT_EQ(found.source, "t.json");
  EXPECT_FALSE(t.find("tap.rtol", "bf16", "tiny").has_value());
  EXPECT_THAT(error_of([&] { t.get("tap.rtol", "bf16", "tiny"); }),
              HasSubstr("no threshold for tap.rtol at precision bf16, size tiny"));
}

TEST(ParityThresholds, OverrideReplacesOnlyItsEntries) {
  Thresholds t = Thresholds::builtin();
  const double before_fp8 = t.get("tap.cosine", "delayed", "small").value;
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "tegemma_parity_thresholds_test";
  std::filesystem::create_directories(dir);
  write_file_atomic(dir / "override.json", file_with(kEntry));
  const Thresholds r = Thresholds::resolve(dir / "override.json");
  EXPECT_EQ(r.get("tap.cosine", "bf16", "small").value, 0.9);
  EXPECT_EQ(r.get("tap.cosine", "bf16", "small").source, (dir / "override.json").string());
  EXPECT_EQ(r.get("tap.cosine", "delayed", "small").value, before_fp8);  // untouched
  ASSERT_EQ(r.sources().size(), 2u);
  EXPECT_EQ(r.sources()[1].second, 3);
  EXPECT_EQ(r.thresholds_version(), t.thresholds_version());
  r.check_complete();
  // No override: the builtin set.
  EXPECT_EQ(Thresholds::resolve({}).size(), t.size());
  EXPECT_THAT(error_of([&] { Thresholds::resolve(dir / "missing.json"); }), HasSubstr("missing.json"));
  tg::remove_tree(dir);
}

TEST(ParityThresholds, ToJsonRoundTrips) {
  const Thresholds t = Thresholds::builtin();
  const Thresholds back = Thresholds::parse(t.to_json().dump(), "again");
  for (const auto& spec : metric_specs())
    for (auto p : kPrecisions)
      for (auto z : kSizeClasses) {
        auto a = t.find(spec.key, p, z), b = back.find(spec.key, p, z);
        ASSERT_EQ(a.has_value(), b.has_value()) << spec.key;
        if (a) {
          EXPECT_EQ(a->value, b->value);
          EXPECT_EQ(a->reason, b->reason);
        }
      }
}

TEST(ParityThresholds, ErrorsNameTheKey) {
  auto err = [](const std::string& text) { return error_of([&] { Thresholds::parse(text, "my.json"); }); };
  EXPECT_THAT(err("{"), HasSubstr("my.json: not valid JSON"));
  EXPECT_THAT(err("[]"), HasSubstr("expected a JSON object at the top"));
  EXPECT_THAT(err(file_with(kEntry, "\"colour\": 1, ")), HasSubstr("unknown top-level key \"colour\""));
  EXPECT_THAT(err("{\"thresholds_version\": 1, \"thresholds\": {}}"), HasSubstr("missing \"schema_version\""));
  EXPECT_THAT(err("{\"schema_version\": 2, \"thresholds_version\": 1, \"thresholds\": {}}"),
              HasSubstr("schema_version 2 is not supported"));
  EXPECT_THAT(err("{\"schema_version\": \"1\", \"thresholds_version\": 1, \"thresholds\": {}}"),
              HasSubstr("schema_version: expected an integer"));
  EXPECT_THAT(err("{\"schema_version\": 1, \"thresholds\": {}}"), HasSubstr("missing \"thresholds_version\""));
  EXPECT_THAT(err("{\"schema_version\": 1, \"thresholds_version\": 0, \"thresholds\": {}}"),
              HasSubstr("thresholds_version: expected an integer >= 1"));
  EXPECT_THAT(err("{\"schema_version\": 1, \"thresholds_version\": 1}"), HasSubstr("missing \"thresholds\""));
  EXPECT_THAT(err(file_with("\"tap.cosin\": {}")), HasSubstr("unknown metric \"thresholds.tap.cosin\""));
  EXPECT_THAT(err(file_with("\"tap.cosine\": 1")), HasSubstr("thresholds.tap.cosine: expected an object keyed by precision"));
  EXPECT_THAT(err(file_with("\"tap.cosine\": {\"fp16\": {}}")),
              HasSubstr("unknown precision \"thresholds.tap.cosine.fp16\""));
  EXPECT_THAT(err(file_with("\"tap.cosine\": {\"bf16\": {\"13b\": {}}}")),
              HasSubstr("unknown size class \"thresholds.tap.cosine.bf16.13b\""));
  EXPECT_THAT(err(file_with("\"tap.cosine\": {\"bf16\": {\"any\": 0.9}}")),
              HasSubstr("thresholds.tap.cosine.bf16.any: expected {\"value\", \"reason\"}"));
  EXPECT_THAT(err(file_with("\"tap.cosine\": {\"bf16\": {\"any\": {\"value\": \"0.9\", \"reason\": \"r\"}}}")),
              HasSubstr("thresholds.tap.cosine.bf16.any.value: expected a number, got \"0.9\""));
  EXPECT_THAT(err(file_with("\"tap.cosine\": {\"bf16\": {\"any\": {\"value\": 0.9}}}")),
              HasSubstr("thresholds.tap.cosine.bf16.any: missing \"reason\""));
  EXPECT_THAT(err(file_with("\"tap.cosine\": {\"bf16\": {\"any\": {\"value\": 0.9, \"reason\": \" \"}}}")),
              HasSubstr("thresholds.tap.cosine.bf16.any.reason: must not be empty"));
  EXPECT_THAT(err(file_with("\"tap.cosine\": {\"bf16\": {\"any\": {\"value\": 0.9, \"reason\": 5}}}")),
              HasSubstr("thresholds.tap.cosine.bf16.any.reason: expected a string"));
  EXPECT_THAT(err(file_with("\"tap.cosine\": {\"bf16\": {\"any\": {\"value\": 1.5, \"reason\": \"r\"}}}")),
              HasSubstr("thresholds.tap.cosine.bf16.any.value: 1.5 is outside the allowed range [-1, 1]"));
  EXPECT_THAT(err(file_with("\"loss.spike_window\": {\"any\": {\"any\": {\"value\": 2.5, \"reason\": \"r\"}}}")),
              HasSubstr("thresholds.loss.spike_window.any.any.value: expected a whole number"));
  EXPECT_THAT(err(file_with("\"tap.cosine\": {\"bf16\": {\"any\": {\"value\": 0.9, \"reason\": \"r\", \"bound\": \"max\"}}}")),
              HasSubstr("tap.cosine is a \"min\" metric, the file says \"max\""));
  EXPECT_THAT(err(file_with("\"tap.cosine\": {\"bf16\": {\"any\": {\"value\": 0.9, \"reason\": \"r\", \"bound\": 1}}}")),
              HasSubstr("thresholds.tap.cosine.bf16.any.bound: expected a string"));
  EXPECT_THAT(err(file_with("\"tap.cosine\": {\"bf16\": {\"any\": {\"value\": 0.9, \"reason\": \"r\", \"why\": 1}}}")),
              HasSubstr("unknown key \"thresholds.tap.cosine.bf16.any.why\""));
}

TEST(ParityThresholds, IncompleteSetIsRejected) {
  const Thresholds t = Thresholds::parse(file_with(kEntry), "partial.json");
  EXPECT_THAT(error_of([&] { t.check_complete(); }), HasSubstr("partial.json: required metric tap.nonfinite"));
}

TEST(ParityThresholds, PassesRule) {
  Threshold mx{"m", "bf16", "any", 1.0, Bound::kMax, "r", "s"};
  Threshold mn{"m", "bf16", "any", 1.0, Bound::kMin, "r", "s"};
  Threshold pa{"m", "bf16", "any", 1.0, Bound::kParam, "r", "s"};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(mx.passes(1.0));
  EXPECT_FALSE(mx.passes(1.0000001));
  EXPECT_FALSE(mx.passes(nan));
  EXPECT_FALSE(mx.passes(std::numeric_limits<double>::infinity()));
  EXPECT_TRUE(mn.passes(1.0));
  EXPECT_FALSE(mn.passes(0.9999999));
  EXPECT_FALSE(mn.passes(nan));
  EXPECT_TRUE(pa.passes(nan));
}

TEST(ParityThresholds, SizeClassAndPrecision) {
  EXPECT_EQ(size_class_of(GemmaConfig::preset("tiny")), "tiny");
  EXPECT_EQ(size_class_of(GemmaConfig::preset("small")), "small");
  EXPECT_EQ(size_class_of(GemmaConfig::preset("gemma-2b")), "2b");
  EXPECT_EQ(size_class_of(GemmaConfig::preset("gemma-7b")), "7b");
  EXPECT_EQ(precision_of("bf16"), "bf16");
  EXPECT_EQ(precision_of("delayed:margin=1,len=16"), "delayed");
  EXPECT_EQ(precision_of("block"), "block");
  EXPECT_THROW(precision_of("fp4"), Error);
  EXPECT_EQ(comparison_precision("bf16", "current"), "current");
  EXPECT_EQ(comparison_precision("delayed", "bf16"), "delayed");
  EXPECT_EQ(comparison_precision("bf16", "bf16"), "bf16");
  EXPECT_EQ(comparison_precision("delayed", "block"), "block");
}

TEST(ParityThresholds, RegistryIsConsistent) {
  for (const auto& s : metric_specs()) {
    EXPECT_LE(s.lo, s.hi) << s.key;
    EXPECT_FALSE(s.description.empty()) << s.key;
    EXPECT_EQ(find_metric_spec(s.key), &s);
  }
  EXPECT_EQ(find_metric_spec("nope"), nullptr);
}

}  // namespace
}  // namespace tg::parity
