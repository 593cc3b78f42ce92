#include "impl/recipe.h"

#include <charconv>
#include <cmath>
#include <sstream>

#include "common/args.h"
#include "common/check.h"

namespace tg::impl {

Recipe Recipe::delayed() {
  Recipe r;
  r.kind = RecipeKind::kDelayed;
  return r;
}

Recipe Recipe::current() {
  Recipe r;
  r.kind = RecipeKind::kCurrent;
  return r;
}

Recipe Recipe::block() {
  Recipe r;
  r.kind = RecipeKind::kBlock;
  r.format = Fp8Format::kE4M3;
  r.power_2_scale = true;
  r.split_fprop = true;
  return r;
}

std::string_view Recipe::name() const {
  switch (kind) {
    case RecipeKind::kBF16: return "bf16";
    case RecipeKind::kDelayed: return "delayed";
    case RecipeKind::kCurrent: return "current";
    case RecipeKind::kBlock: return "block";
  }
  return "?";
}

std::vector<std::string> Recipe::kind_names() { return {"bf16", "delayed", "current", "block"}; }

namespace {
const char* acc(bool split) { return split ? "split" : "fast"; }
const char* fmt(Fp8Format f) { return f == Fp8Format::kHybrid ? "hybrid" : "e4m3"; }
// Shortest representation that parses back to the same float.
std::string shortest(float v) {
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
}
}  // namespace

std::string Recipe::to_string() const {
  std::ostringstream os;
  os << name();
  switch (kind) {
    case RecipeKind::kBF16: break;
    case RecipeKind::kDelayed:
      os << ":format=" << fmt(format) << ",margin=" << margin << ",len=" << amax_history_len
         << ",algo=" << (amax_algo == AmaxAlgo::kMax ? "max" : "most_recent") << ",fprop=" << acc(split_fprop)
         << ",dgrad=" << acc(split_dgrad) << ",wgrad=" << acc(split_wgrad);
      break;
    case RecipeKind::kCurrent:
      os << ":format=" << fmt(format) << ",eps=" << shortest(amax_epsilon) << ",pow2=" << (power_2_scale ? 1 : 0)
         << ",fprop=" << acc(split_fprop) << ",dgrad=" << acc(split_dgrad) << ",wgrad=" << acc(split_wgrad);
      break;
    case RecipeKind::kBlock:
      os << ":format=" << fmt(format) << ",pow2=" << (power_2_scale ? 1 : 0);
      break;
  }
  return os.str();
}

Recipe Recipe::parse(std::string_view text) {
  const std::string s(text);
  const auto colon = s.find(':');
  const std::string kind = s.substr(0, colon);
  Recipe r;
  if (kind == "bf16") r = bf16();
  else if (kind == "delayed") r = delayed();
  else if (kind == "current") r = current();
  else if (kind == "block") r = block();
  else TG_FAIL("recipe '", s, "': unknown kind '", kind, "' (expected bf16, delayed, current or block)");
  if (colon == std::string::npos) return r;
  TG_CHECK(r.kind != RecipeKind::kBF16, "recipe '", s, "': bf16 takes no parameters");

  const std::string params = s.substr(colon + 1);
  std::size_t pos = 0;
  while (pos <= params.size()) {
    const std::size_t comma = params.find(',', pos);
    const std::string kv = params.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const std::size_t eq = kv.find('=');
    TG_CHECK(eq != std::string::npos && eq > 0, "recipe '", s, "': expected key=value, got '", kv, "'");
    const std::string key = kv.substr(0, eq), val = kv.substr(eq + 1);
    auto bad = [&](const char* expected) {
      TG_FAIL("recipe '", s, "': ", key, "=", val, " is invalid (expected ", expected, ")");
    };
    auto as_bool = [&]() {
      if (val == "1" || val == "true") return true;
      if (val == "0" || val == "false") return false;
      bad("0 or 1");
      return false;
    };
    auto as_acc = [&]() {
      if (val == "split") return true;
      if (val == "fast") return false;
      bad("fast or split");
      return false;
    };
    const bool delayed_k = r.kind == RecipeKind::kDelayed, current_k = r.kind == RecipeKind::kCurrent;
    if (key == "format") {
      if (val == "hybrid") r.format = Fp8Format::kHybrid;
      else if (val == "e4m3") r.format = Fp8Format::kE4M3;
      else bad("hybrid or e4m3; pure e5m2 is not supported");
    } else if (key == "margin" && delayed_k) {
      const auto v = parse_int(val);
      if (!v || *v < 0 || *v > 64) bad("an integer in [0, 64]");
      r.margin = static_cast<int>(*v);
    } else if (key == "len" && delayed_k) {
      const auto v = parse_int(val);
      if (!v || *v < 1 || *v > 65536) bad("an integer in [1, 65536]");
      r.amax_history_len = static_cast<int>(*v);
    } else if (key == "algo" && delayed_k) {
      if (val == "max") r.amax_algo = AmaxAlgo::kMax;
      else if (val == "most_recent") r.amax_algo = AmaxAlgo::kMostRecent;
      else bad("max or most_recent");
    } else if (key == "eps" && current_k) {
      const auto v = parse_double(val);
      if (!v || *v < 0) bad("a non-negative number");
      r.amax_epsilon = static_cast<float>(*v);
    } else if (key == "pow2" && (current_k || r.kind == RecipeKind::kBlock)) {
      r.power_2_scale = as_bool();
    } else if ((key == "fprop" || key == "dgrad" || key == "wgrad") && (delayed_k || current_k)) {
      const bool split = as_acc();
      (key == "fprop" ? r.split_fprop : key == "dgrad" ? r.split_dgrad : r.split_wgrad) = split;
    } else {
      const char* keys = delayed_k   ? "format, margin, len, algo, fprop, dgrad, wgrad"
                         : current_k ? "format, eps, pow2, fprop, dgrad, wgrad"
                                     : "format, pow2";
      TG_FAIL("recipe '", s, "': unknown key '", key, "' for ", r.name(), " (accepted: ", keys, ")");
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return r;
}

}  // namespace tg::impl
