// Helpers shared by the `tegemma` subcommands.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/tensor.h"

namespace tg::cli {

using Clock = std::chrono::steady_clock;
inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// "--tokens 2,651,9;2,5" -> {{2, 651, 9}, {2, 5}}: prompts separated by ';', ids by ','. Ids are checked against
// the vocabulary later, by the model. Empty ids or non-integers -> UsageError naming the character position.
std::vector<std::vector<int64_t>> parse_token_prompts(const std::string& text);

// "--device cpu|cuda" -> Device; anything else -> UsageError.
Device parse_device(const std::string& s);

}  // namespace tg::cli
