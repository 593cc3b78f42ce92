// Prompt sets: the fixed default set shipped in parity/prompts/default.json (compiled in) or a user file
// (--prompts FILE) of the same schema:
//   { "schema_version": 1, "name": "<set name>", "description": "...",
//     "prompts": [ { "id": "<unique>", "tokens": [<token id>, ...] },
//                  { "id": "<unique>", "text": "<text>", "add_bos": true } ] }
// A prompt has either "tokens" (used as is) or "text" (encoded when a tokenizer is present, skipped
// otherwise; add_bos defaults to true). Validation errors name the file and the prompt.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "parity/engine.h"

namespace tg::parity {

struct Prompt {
  std::string id;
  TokenIds tokens;   // empty for a text prompt that was not encoded
  std::string text;  // empty for a token prompt
  bool add_bos = true;
  bool is_text() const { return !text.empty(); }
};

struct PromptSet {
  static constexpr int kSchemaVersion = 1;

  std::string name;
  std::string source;  // file path or "builtin:parity/prompts/default.json"
  std::vector<Prompt> prompts;

  static PromptSet parse(std::string_view json_text, std::string_view source);
  static PromptSet load(const std::filesystem::path& path);
  static PromptSet builtin();  // parity/prompts/default.json

  // Text -> token ids (e.g. a tg::Tokenizer's encode with add_bos).
  using Encoder = std::function<TokenIds(std::string_view text, bool add_bos)>;
  // The prompts the harness runs: token prompts as they are; text prompts encoded with `encoder`, or left
  // out when it is empty. Throws if nothing is left.
  PromptSet runnable(const Encoder& encoder = {}) const;
  // Throws tg::Error naming the prompt unless every token id is in [0, vocab_size) and every prompt is
  // non-empty and at most max_length tokens long. Text prompts must have been encoded (runnable()).
  void validate_for(int64_t vocab_size, int64_t max_length) const;

  std::vector<TokenIds> token_ids() const;
  // {"name", "source", "count", "ids", "lengths"}: what a report records about the set it ran.
  nlohmann::json summary_json() const;
};

}  // namespace tg::parity
