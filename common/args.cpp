#include "common/args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace tg {

std::optional<int64_t> parse_int(std::string_view s) {
  if (s.empty() || s.size() > 24) return std::nullopt;
  std::string str(s);
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(str.c_str(), &end, 10);
  if (errno != 0 || end != str.c_str() + str.size()) return std::nullopt;
  return static_cast<int64_t>(v);
}

std::optional<double> parse_double(std::string_view s) {
  if (s.empty() || s.size() > 64) return std::nullopt;
  std::string str(s);
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(str.c_str(), &end);
  if (errno != 0 || end != str.c_str() + str.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

ArgParser::ArgParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

ArgParser& ArgParser::option(const std::string& name, const std::string& help, const std::string& default_value,
                             bool required) {
  TG_CHECK(!specs_.count(name), "ArgParser: option --", name, " declared twice");
  specs_[name] = Spec{help, default_value, false, required};
  order_.push_back(name);
  return *this;
}

ArgParser& ArgParser::flag(const std::string& name, const std::string& help) {
  TG_CHECK(!specs_.count(name), "ArgParser: flag --", name, " declared twice");
  specs_[name] = Spec{help, "", true, false};
  order_.push_back(name);
  return *this;
}

const ArgParser::Spec& ArgParser::spec(const std::string& name) const {
  auto it = specs_.find(name);
  TG_CHECK(it != specs_.end(), "ArgParser: --", name, " was never declared for '", command_, "'");
  return it->second;
}

void ArgParser::parse(std::span<const std::string> args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
      return;
    }
    if (a.size() < 3 || a.rfind("--", 0) != 0) {
      throw UsageError(detail::concat(command_, ": unexpected argument '", a, "' (options start with --)"));
    }
    std::string name = a.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    auto it = specs_.find(name);
    if (it == specs_.end()) {
      throw UsageError(detail::concat(command_, ": unknown option --", name, " (see ", command_, " --help)"));
    }
    if (values_.count(name)) throw UsageError(detail::concat(command_, ": --", name, " given twice"));
    if (it->second.is_flag) {
      if (inline_value) throw UsageError(detail::concat(command_, ": --", name, " takes no value"));
      values_[name] = std::string(1, '1');  // (not = "1": GCC 12 -Wrestrict false positive at -O3)
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= args.size()) throw UsageError(detail::concat(command_, ": --", name, " needs a value"));
      value = args[++i];
    }
    values_[name] = value;
  }
  for (const auto& name : order_) {
    if (specs_[name].required && !values_.count(name)) {
      throw UsageError(detail::concat(command_, ": missing required option --", name, " (", specs_[name].help, ")"));
    }
  }
}

bool ArgParser::given(const std::string& name) const {
  spec(name);
  return values_.count(name) > 0;
}

bool ArgParser::flag_set(const std::string& name) const {
  TG_CHECK(spec(name).is_flag, "ArgParser: --", name, " is an option, not a flag");
  return values_.count(name) > 0;
}

std::string ArgParser::get(const std::string& name) const {
  const Spec& s = spec(name);
  auto it = values_.find(name);
  return it != values_.end() ? it->second : s.default_value;
}

int64_t ArgParser::get_int(const std::string& name, int64_t min, int64_t max) const {
  const std::string v = get(name);
  const auto n = parse_int(v);
  if (!n) throw UsageError(detail::concat(command_, ": --", name, " expects an integer, got '", v, "'"));
  if (*n < min || *n > max) {
    throw UsageError(detail::concat(command_, ": --", name, " must be in [", min, ", ", max, "], got ", *n));
  }
  return *n;
}

double ArgParser::get_double(const std::string& name, double min, double max) const {
  const std::string v = get(name);
  const auto d = parse_double(v);
  if (!d) throw UsageError(detail::concat(command_, ": --", name, " expects a number, got '", v, "'"));
  if (*d < min || *d > max) {
    throw UsageError(detail::concat(command_, ": --", name, " must be in [", min, ", ", max, "], got ", *d));
  }
  return *d;
}

std::vector<int64_t> ArgParser::get_int_list(const std::string& name) const {
  const std::string v = get(name);
  std::vector<int64_t> out;
  if (v.empty()) return out;
  std::size_t start = 0;
  while (start <= v.size()) {
    const std::size_t comma = v.find(',', start);
    const std::string item = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const auto n = parse_int(item);
    if (!n) {
      throw UsageError(detail::concat(command_, ": --", name, " expects comma-separated integers, got '", item,
                                      "' in '", v, "'"));
    }
    out.push_back(*n);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string ArgParser::usage() const {
  std::ostringstream os;
  os << "usage: " << command_ << " [options]\n  " << summary_ << "\n\noptions:\n";
  for (const auto& name : order_) {
    const Spec& s = specs_.at(name);
    std::string left = "  --" + name + (s.is_flag ? "" : " VALUE");
    if (left.size() < 28) left.resize(28, ' ');
    os << left << " " << s.help;
    if (s.required) os << " (required)";
    else if (!s.is_flag && !s.default_value.empty()) os << " [default: " << s.default_value << "]";
    os << "\n";
  }
  os << "  --help                       this text\n";
  return os.str();
}

}  // namespace tg
