// Strict JSON for the files we read (safetensors headers, config.json, index files): the shared parser
// and the helpers every "expected X, got Y" message uses.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace tg {

// Offset of the first byte that is not strict UTF-8 (no overlongs, surrogates or code points above
// U+10FFFF), or npos.
std::size_t invalid_utf8_at(std::string_view s);
// A name or value quoted for an error message: control bytes and non-UTF-8 escaped, long text cut.
std::string json_quote(std::string_view s);
// What a JSON value is ("the number 3", "an array of 2", ...); never dumps containers.
std::string json_describe(const nlohmann::json& v);

// Google Benchmark writes a non-finite double bare (`NaN`, `-nan`, `Infinity`, `-inf`: e.g. the cv of a counter
// whose repetitions are all 0), which is not JSON. Returns `text` with each such token outside strings replaced by
// `null`; everything else is unchanged.
std::string json_nonfinite_to_null(std::string_view text);

struct StrictJson {
  nlohmann::json root;
  std::vector<std::string> top_keys;  // keys of the root object, in file order
};
// Parses `text` strictly: no NUL byte (nlohmann would stop there and ignore the rest), no duplicate keys
// (nlohmann keeps one silently), nesting at most `max_depth`, and the root must be an object.
// Errors name `source` and `what` ("header", "config", ...).
StrictJson parse_json_strict(std::string_view text, std::string_view source, std::string_view what, int max_depth);

}  // namespace tg
