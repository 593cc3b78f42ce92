// The fuzz entry points, shared by the libFuzzer targets (fuzz_<name>.cpp, built with TEGEMMA_FUZZ=ON)
// and by fuzz_replay (always built; a ctest), so every committed corpus input and crasher is
// re-run as a regression test in every build.
//
// Contract: an entry returns normally for any input. A tg::Error (bad input, cleanly refused) is
// caught inside; anything else escaping, or a broken invariant (std::abort), is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace tg::fuzz {

// parse_safetensors on the raw bytes; on success checks the parser's promises (offsets in bounds,
// byte counts, exact tiling) and loads every tensor through a memory-mapped copy of the input.
void safetensors(std::span<const uint8_t> data);
// GemmaConfig::from_json_text + validate + num_params; a parsed config must survive to_json_text.
void config(std::span<const uint8_t> data);
// ArgParser over argv-like strings (the input split on NUL) with a fixed option set; reads values.
void args(std::span<const uint8_t> data);

struct Target {
  std::string_view name;  // corpus/<name>, crashers/<name>, fuzz_<name>
  void (*run)(std::span<const uint8_t>);
};
inline constexpr Target kTargets[] = {{"safetensors", safetensors}, {"config", config}, {"args", args}};

}  // namespace tg::fuzz
