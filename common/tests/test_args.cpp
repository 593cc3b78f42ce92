#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/args.h"

namespace tg {
namespace {

ArgParser make() {
  ArgParser p("tegemma test", "a test command");
  p.option("model", "model dir", "", true).option("steps", "steps", "10").option("tokens", "ids", "")
      .option("lr", "learning rate", "3e-4").flag("quiet", "no progress");
  return p;
}

void parse(ArgParser& p, std::vector<std::string> a) { p.parse(a); }

TEST(ArgParser, ParsesOptionsFlagsAndDefaults) {
  auto p = make();
  parse(p, {"--model", "/m", "--steps=20", "--quiet", "--tokens", "2,651,9"});
  EXPECT_EQ(p.get("model"), "/m");
  EXPECT_EQ(p.get_int("steps", 1), 20);
  EXPECT_TRUE(p.flag_set("quiet"));
  EXPECT_DOUBLE_EQ(p.get_double("lr"), 3e-4);
  EXPECT_EQ(p.get_int_list("tokens"), (std::vector<int64_t>{2, 651, 9}));
  EXPECT_FALSE(p.given("lr"));
}

TEST(ArgParser, RejectsBadInputWithClearMessages) {
  auto expect_usage = [](std::vector<std::string> a, const std::string& fragment) {
    auto p = make();
    try {
      p.parse(a);
      p.get_int("steps", 1, 1000);
      p.get_int_list("tokens");
      FAIL() << "expected UsageError containing '" << fragment << "'";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_usage({"--steps", "5"}, "missing required option --model");
  expect_usage({"--model", "m", "--bogus", "1"}, "unknown option --bogus");
  expect_usage({"--model", "m", "--steps"}, "--steps needs a value");
  expect_usage({"--model", "m", "--steps", "ten"}, "--steps expects an integer, got 'ten'");
  expect_usage({"--model", "m", "--steps", "0"}, "--steps must be in [1, 1000], got 0");
  expect_usage({"--model", "m", "--tokens", "1,,2"}, "expects comma-separated integers");
  expect_usage({"--model", "m", "--quiet=1"}, "--quiet takes no value");
  expect_usage({"--model", "m", "--model", "n"}, "--model given twice");
  expect_usage({"model"}, "unexpected argument 'model'");
}

TEST(ArgParser, HelpStopsParsing) {
  auto p = make();
  parse(p, {"--help"});
  EXPECT_TRUE(p.help_requested());
  EXPECT_NE(p.usage().find("--model VALUE"), std::string::npos);
}

TEST(ParseNumbers, Strict) {
  EXPECT_EQ(parse_int("42"), 42);
  EXPECT_FALSE(parse_int("42x"));
  EXPECT_FALSE(parse_int(""));
  EXPECT_FALSE(parse_int("99999999999999999999999"));
  EXPECT_FALSE(parse_double("nan"));
  EXPECT_FALSE(parse_double("1e999"));
  EXPECT_DOUBLE_EQ(*parse_double("-2.5e-3"), -2.5e-3);
}

}  // namespace
}  // namespace tg
