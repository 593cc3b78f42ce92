// A small, strict command-line parser for `tegemma <subcommand> [--name value | --switch]...`.
// Unknown flags, missing values, malformed numbers and missing required options throw UsageError
// naming the argument and what was expected; the CLI turns that into exit code 2 plus the usage text.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/check.h"

namespace tg {

class UsageError : public Error {
 public:
  using Error::Error;
};

class ArgParser {
 public:
  ArgParser(std::string command, std::string summary);
  // --name VALUE. An empty default with required=false means "optional, unset".
  ArgParser& option(const std::string& name, const std::string& help, const std::string& default_value = "",
                    bool required = false);
  // --name (a switch; true when present).
  ArgParser& flag(const std::string& name, const std::string& help);
  // Parses the arguments after the subcommand. `--help` sets help_requested() and stops.
  void parse(std::span<const std::string> args);

  bool help_requested() const { return help_; }
  bool given(const std::string& name) const;   // the user passed it
  bool flag_set(const std::string& name) const;
  std::string get(const std::string& name) const;  // value or default
  int64_t get_int(const std::string& name, int64_t min = INT64_MIN, int64_t max = INT64_MAX) const;
  double get_double(const std::string& name, double min = -1e308, double max = 1e308) const;
  std::vector<int64_t> get_int_list(const std::string& name) const;  // "1,2,3"
  std::string usage() const;

 private:
  struct Spec {
    std::string help, default_value;
    bool is_flag = false, required = false;
  };
  const Spec& spec(const std::string& name) const;
  std::string command_, summary_;
  std::vector<std::string> order_;
  std::map<std::string, Spec> specs_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

// Strict number parsing shared by the CLI and config readers: the whole string must be consumed.
std::optional<int64_t> parse_int(std::string_view s);
std::optional<double> parse_double(std::string_view s);

}  // namespace tg
