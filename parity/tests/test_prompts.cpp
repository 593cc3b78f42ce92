// Prompt sets: the shipped default set and validation of user files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>

#include "common/check.h"
#include "common/tests/test_error.h"
#include "common/file_io.h"
#include "common/gemma_config.h"
#include "parity/prompts.h"
#include "parity/thresholds.h"

namespace tg::parity {
namespace {

using ::testing::HasSubstr;

using tg::testing::error_of;

TEST(ParityPrompts, DefaultSetCoversLengthsOneToSixtyFour) {
  const PromptSet set = PromptSet::builtin();
  EXPECT_EQ(set.name, "default");
  EXPECT_EQ(read_file(std::filesystem::path(TEGEMMA_SOURCE_DIR) / "parity/prompts/default.json"),
            std::string(builtin_prompts_json()));
  const PromptSet run = set.runnable();  // no tokenizer: token prompts only
  std::set<std::size_t> lengths;
  for (const auto& p : run.prompts) lengths.insert(p.tokens.size());
  EXPECT_EQ(*lengths.begin(), 1u);
  EXPECT_EQ(*lengths.rbegin(), 64u);
  EXPECT_GE(lengths.size(), 12u);  // varied, not a handful
  // Every preset (tiny has the smallest vocabulary) can run the set.
  for (const auto& name : GemmaConfig::preset_names()) {
    const GemmaConfig cfg = GemmaConfig::preset(name);
    run.validate_for(cfg.vocab_size, cfg.max_position_embeddings);
  }
  const bool has_text = std::any_of(set.prompts.begin(), set.prompts.end(), [](const Prompt& p) { return p.is_text(); });
  EXPECT_TRUE(has_text);
  EXPECT_LT(run.prompts.size(), set.prompts.size());
}

TEST(ParityPrompts, TextPromptsNeedAnEncoder) {
  const PromptSet set = PromptSet::builtin();
  int calls = 0;
  const PromptSet run = set.runnable([&](std::string_view text, bool add_bos) {
    ++calls;
    TokenIds ids;
    if (add_bos) ids.push_back(2);
    ids.push_back(static_cast<int32_t>(text.size() % 500) + 3);
    return ids;
  });
  EXPECT_EQ(run.prompts.size(), set.prompts.size());
  EXPECT_EQ(calls, static_cast<int>(std::count_if(set.prompts.begin(), set.prompts.end(),
                                                  [](const Prompt& p) { return p.is_text(); })));
  EXPECT_EQ(run.token_ids().size(), run.prompts.size());
  EXPECT_THAT(error_of([&] { set.validate_for(512, 8192); }), HasSubstr("is a text prompt that was not encoded"));
  const PromptSet only_text = PromptSet::parse(
      R"({"schema_version": 1, "name": "t", "prompts": [{"id": "a", "text": "hi"}]})", "t.json");
  EXPECT_THAT(error_of([&] { only_text.runnable(); }), HasSubstr("no runnable prompts"));
  EXPECT_THAT(error_of([&] { only_text.runnable([](std::string_view, bool) { return TokenIds{}; }); }),
              HasSubstr("the tokenizer produced no tokens"));
}

TEST(ParityPrompts, ValidateForModel) {
  const PromptSet set = PromptSet::parse(
      R"({"schema_version": 1, "name": "u", "prompts": [{"id": "a", "tokens": [2, 600]}, {"id": "b", "tokens": [1, 2, 3]}]})",
      "u.json");
  EXPECT_THAT(error_of([&] { set.validate_for(512, 100); }),
              HasSubstr("u.json: prompt a: token 1 = 600 is outside the model's vocabulary [0, 512)"));
  EXPECT_THAT(error_of([&] { set.validate_for(1000, 2); }), HasSubstr("prompt b has 3 tokens, more than the 2 allowed"));
  set.validate_for(1000, 3);
  const nlohmann::json s = set.summary_json();
  EXPECT_EQ(s["count"], 2);
  EXPECT_EQ(s["lengths"], nlohmann::json::parse("[2, 3]"));
  EXPECT_EQ(s["source"], "u.json");
}

TEST(ParityPrompts, FileErrorsNameThePrompt) {
  auto err = [](const std::string& prompts, const std::string& top = "") {
    return error_of([&] {
      PromptSet::parse("{\"schema_version\": 1, \"name\": \"x\", " + top + "\"prompts\": " + prompts + "}", "p.json");
    });
  };
  EXPECT_THAT(err("[]"), HasSubstr("p.json: \"prompts\" is empty"));
  EXPECT_THAT(err("{}"), HasSubstr("\"prompts\" must be an array"));
  EXPECT_THAT(err("[{\"id\": \"a\", \"tokens\": [1]}]", "\"extra\": 1, "), HasSubstr("unknown top-level key \"extra\""));
  EXPECT_THAT(err("[{\"id\": \"a\", \"tokens\": [1]}, {\"id\": \"a\", \"tokens\": [2]}]"),
              HasSubstr("prompts[1]: duplicate id \"a\""));
  EXPECT_THAT(err("[{\"tokens\": [1]}]"), HasSubstr("prompts[0]: \"id\" must be a non-empty string"));
  EXPECT_THAT(err("[{\"id\": \"a\", \"tokens\": [1], \"text\": \"t\"}]"),
              HasSubstr("prompts[0] (a): give exactly one of \"tokens\" and \"text\""));
  EXPECT_THAT(err("[{\"id\": \"a\"}]"), HasSubstr("give exactly one of"));
  EXPECT_THAT(err("[{\"id\": \"a\", \"tokens\": []}]"), HasSubstr("\"tokens\" must be a non-empty array"));
  EXPECT_THAT(err("[{\"id\": \"a\", \"tokens\": [1, -4]}]"),
              HasSubstr("prompts[0] (a): tokens[1] must be an integer token id >= 0, got -4"));
  EXPECT_THAT(err("[{\"id\": \"a\", \"tokens\": [1.5]}]"), HasSubstr("tokens[0] must be an integer token id"));
  EXPECT_THAT(err("[{\"id\": \"a\", \"tokens\": [4294967296]}]"), HasSubstr("tokens[0] must be an integer token id"));
  EXPECT_THAT(err("[{\"id\": \"a\", \"tokens\": [1], \"add_bos\": true}]"), HasSubstr("applies to text prompts only"));
  EXPECT_THAT(err("[{\"id\": \"a\", \"text\": \"\"}]"), HasSubstr("\"text\" must be a non-empty string"));
  EXPECT_THAT(err("[{\"id\": \"a\", \"text\": \"t\", \"add_bos\": 1}]"), HasSubstr("\"add_bos\" must be true or false"));
  EXPECT_THAT(err("[{\"id\": \"a\", \"tokens\": [1], \"weight\": 2}]"), HasSubstr("unknown key \"weight\""));
  EXPECT_THAT(error_of([] { PromptSet::parse("{\"schema_version\": 2, \"name\": \"x\", \"prompts\": []}", "p.json"); }),
              HasSubstr("schema_version 2 is not supported"));
  EXPECT_THAT(error_of([] { PromptSet::parse("{\"schema_version\": 1, \"prompts\": []}", "p.json"); }),
              HasSubstr("\"name\" must be a non-empty string"));
  EXPECT_THAT(error_of([] { PromptSet::parse("nope", "p.json"); }), HasSubstr("p.json: not valid JSON"));
  EXPECT_THAT(error_of([] { PromptSet::load("/nonexistent/prompts.json"); }), HasSubstr("/nonexistent/prompts.json"));
}

}  // namespace
}  // namespace tg::parity
