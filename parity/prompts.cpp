#include "parity/prompts.h"

#include <limits>
#include <set>

#include "common/check.h"
#include "common/file_io.h"
#include "parity/thresholds.h"

namespace tg::parity {

PromptSet PromptSet::parse(std::string_view json_text, std::string_view source) {
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    TG_FAIL(source, ": not valid JSON (", e.what(), ")");
  }
  TG_CHECK(root.is_object(), source, ": expected a JSON object at the top, got ", root.type_name());
  for (const auto& [key, _] : root.items()) {
    TG_CHECK(key == "schema_version" || key == "name" || key == "description" || key == "prompts", source,
             ": unknown top-level key \"", key, "\" (expected schema_version, name, description, prompts)");
  }
  TG_CHECK(root.contains("schema_version") && root["schema_version"].is_number_integer(), source,
           ": \"schema_version\" must be an integer");
  const int64_t sv = root["schema_version"].get<int64_t>();
  TG_CHECK(sv == kSchemaVersion, source, ": schema_version ", sv, " is not supported (this build reads ",
           kSchemaVersion, ")");
  TG_CHECK(root.contains("name") && root["name"].is_string() && !root["name"].get<std::string>().empty(), source,
           ": \"name\" must be a non-empty string");
  if (root.contains("description"))
    TG_CHECK(root["description"].is_string(), source, ": \"description\" must be a string");
  TG_CHECK(root.contains("prompts") && root["prompts"].is_array(), source, ": \"prompts\" must be an array");
  TG_CHECK(!root["prompts"].empty(), source, ": \"prompts\" is empty");

  PromptSet set;
  set.name = root["name"].get<std::string>();
  set.source = std::string(source);
  std::set<std::string> ids;
  for (std::size_t i = 0; i < root["prompts"].size(); ++i) {
    const auto& j = root["prompts"][i];
    const std::string where = std::string(source) + ": prompts[" + std::to_string(i) + "]";
    TG_CHECK(j.is_object(), where, ": expected an object, got ", j.type_name());
    for (const auto& [key, _] : j.items()) {
      TG_CHECK(key == "id" || key == "tokens" || key == "text" || key == "add_bos", where, ": unknown key \"",
               key, "\" (expected id, tokens, text, add_bos)");
    }
    Prompt p;
    TG_CHECK(j.contains("id") && j["id"].is_string() && !j["id"].get<std::string>().empty(), where,
             ": \"id\" must be a non-empty string");
    p.id = j["id"].get<std::string>();
    TG_CHECK(ids.insert(p.id).second, where, ": duplicate id \"", p.id, "\"");
    TG_CHECK(j.contains("tokens") != j.contains("text"), where, " (", p.id,
             "): give exactly one of \"tokens\" and \"text\"");
    if (j.contains("tokens")) {
      const auto& t = j["tokens"];
      TG_CHECK(t.is_array() && !t.empty(), where, " (", p.id, "): \"tokens\" must be a non-empty array");
      for (std::size_t k = 0; k < t.size(); ++k) {
        TG_CHECK(t[k].is_number_integer() && t[k].get<int64_t>() >= 0 &&
                     t[k].get<int64_t>() <= std::numeric_limits<int32_t>::max(),
                 where, " (", p.id, "): tokens[", k, "] must be an integer token id >= 0, got ", t[k].dump());
        p.tokens.push_back(static_cast<int32_t>(t[k].get<int64_t>()));
      }
      TG_CHECK(!j.contains("add_bos"), where, " (", p.id, "): \"add_bos\" applies to text prompts only");
    } else {
      TG_CHECK(j["text"].is_string() && !j["text"].get<std::string>().empty(), where, " (", p.id,
               "): \"text\" must be a non-empty string");
      p.text = j["text"].get<std::string>();
      if (j.contains("add_bos")) {
        TG_CHECK(j["add_bos"].is_boolean(), where, " (", p.id, "): \"add_bos\" must be true or false");
        p.add_bos = j["add_bos"].get<bool>();
      }
    }
    set.prompts.push_back(std::move(p));
  }
  return set;
}

PromptSet PromptSet::load(const std::filesystem::path& path) { return parse(read_file(path), path.string()); }

PromptSet PromptSet::builtin() {
  return parse(builtin_prompts_json(), "builtin:parity/prompts/default.json");
}

PromptSet PromptSet::runnable(const Encoder& encoder) const {
  PromptSet out;
  out.name = name;
  out.source = source;
  for (const auto& p : prompts) {
    if (!p.is_text()) {
      out.prompts.push_back(p);
      continue;
    }
    if (!encoder) continue;
    Prompt q = p;
    q.tokens = encoder(p.text, p.add_bos);
    TG_CHECK(!q.tokens.empty(), source, ": prompt ", p.id, ": the tokenizer produced no tokens for \"", p.text,
             "\"");
    out.prompts.push_back(std::move(q));
  }
  TG_CHECK(!out.prompts.empty(), source, ": no runnable prompts (only text prompts, and no tokenizer)");
  return out;
}

void PromptSet::validate_for(int64_t vocab_size, int64_t max_length) const {
  for (const auto& p : prompts) {
    TG_CHECK(!p.tokens.empty(), source, ": prompt ", p.id,
             p.is_text() ? " is a text prompt that was not encoded" : " has no tokens");
    TG_CHECK(static_cast<int64_t>(p.tokens.size()) <= max_length, source, ": prompt ", p.id, " has ",
             p.tokens.size(), " tokens, more than the ", max_length, " allowed");
    for (std::size_t k = 0; k < p.tokens.size(); ++k) {
      TG_CHECK(p.tokens[k] >= 0 && p.tokens[k] < vocab_size, source, ": prompt ", p.id, ": token ", k, " = ",
               p.tokens[k], " is outside the model's vocabulary [0, ", vocab_size, ")");
    }
  }
}

std::vector<TokenIds> PromptSet::token_ids() const {
  std::vector<TokenIds> out;
  out.reserve(prompts.size());
  for (const auto& p : prompts) out.push_back(p.tokens);
  return out;
}

nlohmann::json PromptSet::summary_json() const {
  nlohmann::json ids = nlohmann::json::array(), lengths = nlohmann::json::array();
  for (const auto& p : prompts) {
    ids.push_back(p.id);
    lengths.push_back(p.tokens.size());
  }
  return {{"name", name}, {"source", source}, {"count", prompts.size()}, {"ids", ids}, {"lengths", lengths}};
}

}  // namespace tg::parity
