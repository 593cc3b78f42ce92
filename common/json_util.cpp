#include "common/json_util.h"

#include <set>
#include <string>
#include <vector>

#include "common/check.h"

namespace tg {

using json = nlohmann::json;

// Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF). Returns the offset of the
// first bad byte, or npos.
std::size_t invalid_utf8_at(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (n - i < len) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

// A name or value quoted for an error message: control bytes and non-UTF-8 escaped, long text cut.
std::string json_quote(std::string_view s) {
  constexpr std::size_t kMax = 120;
  std::string out = "'";
  const bool utf8 = invalid_utf8_at(s) == std::string_view::npos;
  for (std::size_t i = 0; i < s.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F || (c >= 0x80 && !utf8)) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMax) out += "...";
  return out + "'";
}

// What a JSON value is, for "expected X, got Y" messages. Never dumps containers (they may be huge).
std::string json_describe(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return v.get<bool>() ? "true" : "false";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "the number " + v.dump();
    case json::value_t::string: return "the string " + json_quote(v.get_ref<const std::string&>());
    case json::value_t::array: return "an array of " + std::to_string(v.size());
    case json::value_t::object: return "an object";
    default: return v.type_name();
  }
}

// nlohmann keeps one of two equal keys silently; a callback sees every key as it is read, so
// duplicates are caught here. It also bounds the nesting depth (a valid header nests 3 deep) so a
// hostile header cannot build a deep DOM.
StrictJson parse_json_strict(std::string_view text, std::string_view source, std::string_view what, int max_depth) {
  // nlohmann treats a NUL byte as the end of input and ignores whatever follows it; JSON text never
  // holds a raw NUL, so refuse it rather than silently parse a prefix.
  if (const std::size_t nul = text.find('\0'); nul != std::string_view::npos) {
    TG_FAIL(source, ": invalid JSON in the ", what, ": NUL byte at offset ", nul);
  }
  StrictJson out;
  std::vector<std::set<std::string>> open;  // keys seen in each open object
  std::string current_top;
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth > max_depth) TG_FAIL(source, ": ", what, " nests deeper than ", max_depth, " levels");
        if (ev == json::parse_event_t::object_start) open.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open.empty()) open.pop_back();
        break;
      case json::parse_event_t::key: {
        const auto& k = parsed.get_ref<const std::string&>();
        if (!open.empty() && !open.back().insert(k).second) {
          if (depth == 1) TG_FAIL(source, ": duplicate key ", json_quote(k), " in the ", what);
          TG_FAIL(source, ": duplicate key ", json_quote(k), " inside ", json_quote(current_top), " in the ", what);
        }
        if (depth == 1) {
          current_top = k;
          out.top_keys.push_back(k);
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    out.root = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    TG_FAIL(source, ": invalid JSON in the ", what, ": ", json_quote(e.what()));
  }
  if (!out.root.is_object()) TG_FAIL(source, ": the ", what, " must be a JSON object, got ", json_describe(out.root));
  return out;
}

std::string json_nonfinite_to_null(std::string_view text) {
  static constexpr std::string_view kTokens[] = {"-Infinity", "Infinity", "-NaN", "NaN", "-nan", "nan", "-inf", "inf"};
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (std::size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) {
        out += text[i + 1];
        i += 2;
        continue;
      }
      if (c == '"') in_string = false;
      ++i;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      ++i;
      continue;
    }
    bool replaced = false;
    for (std::string_view t : kTokens) {
      if (text.substr(i).starts_with(t)) {
        out += "null";
        i += t.size();
        replaced = true;
        break;
      }
    }
    if (!replaced) {
      out += c;
      ++i;
    }
  }
  return out;
}

}  // namespace tg
