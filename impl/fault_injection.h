// TEST-ONLY fault injection: known bugs planted into one layer of the model, so that the parity harness
// (`tegemma parity`, issue 8) can prove it catches them. Compiled in, inert unless set: the default
// FaultInjection is kNone, nothing in the product sets it, and the only place that reads the environment
// variable TEGEMMA_INJECT_FAULT is the parity CLI (cli/cmd_parity.cpp), through from_env().
//
//   spec                       the planted bug, in layer N (default 0)
//   rmsnorm_w[:layer=N]        both RMSNorms of the layer scale by w instead of 1 + w: the norm weights are
//                              replaced by round_bf16(w - 1), so the kernel's (1 + w') computes w (up to that
//                              rounding)
//   rope_swap[:layer=N]        rotate_half with its halves swapped, cat(x2, -x1) instead of cat(-x2, x1): the
//                              rotation by -angle, planted as a negated frequency table for the layer's RoPE
//                              (cos is even and sin odd: the swapped rotation). Position 0 is unaffected
//   fp8_scale_x2[:layer=N]     the layer's fc2 (MLP down projection) FP8 weight scale_inv doubled, so the FP8
//                              GEMM's output is 2x; re-applied after every (re)quantization. FP8 recipes only
//                              (inert under bf16: no scale exists)
//
// Every perturbation happens around the kernels (weights and tables the model hands them), not inside them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/tensor.h"
#include "impl/weights.h"

namespace tg::impl {

struct FaultInjection {
  enum class Kind : uint8_t { kNone, kRmsNormWeight, kRopeSwap, kFp8ScaleX2 };
  Kind kind = Kind::kNone;
  int64_t layer = 0;

  bool active() const { return kind != Kind::kNone; }
  bool hits(Kind k, int64_t l) const { return kind == k && layer == l; }
  // "none", "rmsnorm_w:layer=1", ...: what parse() reads.
  std::string to_string() const;
  // The spec above; throws tg::Error naming the bad part and the accepted forms.
  static FaultInjection parse(std::string_view spec);
  // TEGEMMA_INJECT_FAULT (unset or empty: none). Called by the parity CLI only.
  static FaultInjection from_env();

  static constexpr const char* kEnvVar = "TEGEMMA_INJECT_FAULT";
};

// Called by GemmaForCausalLM (no-ops unless the fault is of that kind; they synchronise `stream`, the model's).
// After the weights are built (once): rmsnorm_w; also throws for any active fault whose layer does not exist.
void inject_weight_fault(const FaultInjection& f, ModelWeights& w, Stream stream);
// After every (re)quantization of the FP8 weight copies: fp8_scale_x2.
void inject_scale_fault(const FaultInjection& f, ModelWeights& w, Stream stream);
// rope_swap: the layer's frequency table (the negated `inv_freq`, same device).
Tensor faulty_rope_table(const TensorView& inv_freq);

}  // namespace tg::impl
