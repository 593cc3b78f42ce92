#include <gtest/gtest.h>

#include "common/check.h"
#include "impl/recipe.h"

namespace tg::impl {
namespace {

TEST(Recipe, DefaultsAreTransformerEngines) {
  const Recipe d = Recipe::parse("delayed");
  EXPECT_EQ(d.kind, RecipeKind::kDelayed);
  EXPECT_EQ(d.format, Fp8Format::kHybrid);
  EXPECT_EQ(d.margin, 0);
  EXPECT_EQ(d.amax_history_len, 1024);
  EXPECT_EQ(d.amax_algo, AmaxAlgo::kMax);
  EXPECT_FALSE(d.split_fprop);
  EXPECT_TRUE(d.split_dgrad && d.split_wgrad);
  EXPECT_EQ(d.bwd_dtype(), DType::E5M2);
  const Recipe c = Recipe::parse("current");
  EXPECT_FALSE(c.power_2_scale);
  EXPECT_EQ(c.amax_epsilon, 0.0f);
  const Recipe b = Recipe::parse("block");
  EXPECT_EQ(b.format, Fp8Format::kE4M3);
  EXPECT_TRUE(b.power_2_scale);
  EXPECT_TRUE(b.split_fprop && b.split_dgrad && b.split_wgrad);
  EXPECT_EQ(b.bwd_dtype(), DType::E4M3);
  EXPECT_FALSE(Recipe::parse("bf16").is_fp8());
}

TEST(Recipe, PrintParseRoundTrip) {
  for (const char* s : {"bf16", "delayed", "current", "block", "delayed:margin=2,len=31,algo=most_recent",
                        "current:eps=1e-12,pow2=1,fprop=split", "block:pow2=0,format=hybrid",
                        "delayed:format=e4m3,fprop=split,dgrad=fast,wgrad=fast"}) {
    const Recipe r = Recipe::parse(s);
    EXPECT_EQ(Recipe::parse(r.to_string()), r) << s << " -> " << r.to_string();
  }
  EXPECT_EQ(Recipe::parse("delayed").to_string(),
            "delayed:format=hybrid,margin=0,len=1024,algo=max,fprop=fast,dgrad=split,wgrad=split");
  EXPECT_EQ(Recipe::parse("block").to_string(), "block:format=e4m3,pow2=1");
}

TEST(Recipe, BadSpecsNameTheProblem) {
  auto expect_error = [](const char* spec, const char* fragment) {
    try {
      Recipe::parse(spec);
      FAIL() << spec << " should not parse";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error("fp8", "unknown kind 'fp8'");
  expect_error("delayed:len=0", "len=0 is invalid");
  expect_error("delayed:algo=mean", "algo=mean is invalid");
  expect_error("delayed:eps=1", "unknown key 'eps' for delayed");
  expect_error("block:fprop=fast", "unknown key 'fprop' for block");
  expect_error("current:format=e5m2", "pure e5m2 is not supported");
  expect_error("bf16:margin=1", "bf16 takes no parameters");
  expect_error("delayed:margin", "expected key=value");
}

}  // namespace
}  // namespace tg::impl
