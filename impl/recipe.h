// Precision recipes: the run-time choice between BF16 and the three Hopper FP8 recipes of
// Transformer Engine, as a value type with a printable, parseable form used by the CLI, the JSON
// outputs and the reports. Semantics: docs/design.md "Recipes" and TE's recipe/__init__.py.
//
//   bf16                                    no FP8 anywhere
//   delayed[:format=hybrid|e4m3,margin=M,len=N,algo=max|most_recent,fprop=fast|split,dgrad=..,wgrad=..]
//   current[:format=hybrid|e4m3,eps=E,pow2=0|1,fprop=fast|split,dgrad=..,wgrad=..]
//   block[:format=e4m3|hybrid,pow2=0|1]     (split accumulation everywhere, enforced as in TE)
//
// Defaults are TE's: delayed HYBRID margin 0 len 1024 max; current HYBRID eps 0 pow2 off; block E4M3
// pow2 on; fast accumulation in fprop and split accumulation in dgrad/wgrad (block: split everywhere).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtype.h"

namespace tg::impl {

enum class RecipeKind : uint8_t { kBF16, kDelayed, kCurrent, kBlock };
enum class Fp8Format : uint8_t { kE4M3, kHybrid };  // pure E5M2 training is not supported (as in TE)
enum class AmaxAlgo : uint8_t { kMax, kMostRecent };

struct Recipe {
  RecipeKind kind = RecipeKind::kBF16;
  Fp8Format format = Fp8Format::kHybrid;
  // DelayedScaling
  int margin = 0;
  int amax_history_len = 1024;
  AmaxAlgo amax_algo = AmaxAlgo::kMax;
  // Float8CurrentScaling (amax_epsilon, power_2_scale) and Float8BlockScaling (power_2_scale)
  float amax_epsilon = 0.0f;
  bool power_2_scale = false;
  // GEMM accumulation: split (2x, more accurate) or fast FP8 accumulation per GEMM kind.
  bool split_fprop = false;
  bool split_dgrad = true;
  bool split_wgrad = true;

  static Recipe bf16() { return {}; }
  static Recipe delayed();
  static Recipe current();
  static Recipe block();

  bool is_fp8() const { return kind != RecipeKind::kBF16; }
  // E4M3 for forward tensors (activations, weights); E5M2 for gradients under HYBRID.
  DType fwd_dtype() const { return DType::E4M3; }
  DType bwd_dtype() const { return format == Fp8Format::kHybrid ? DType::E5M2 : DType::E4M3; }
  // "bf16", "delayed", "current", "block"
  std::string_view name() const;
  // Canonical full form: every field of the kind, in a fixed order; parse(to_string()) == *this.
  std::string to_string() const;
  // Parses the forms above; throws tg::Error naming the bad key or value and the accepted ones.
  static Recipe parse(std::string_view text);
  static std::vector<std::string> kind_names();  // {"bf16", "delayed", "current", "block"}

  bool operator==(const Recipe&) const = default;
};

}  // namespace tg::impl
