// The engine interface of the parity harness: anything that can run Gemma's forward pass and greedy
// generation on token-id prompts. The LibTorch reference (reference/engine.h) and the FP8 model (impl/)
// are plugged in through thin adapters; the tests use fakes (parity/tests/fake_engine.h). The harness
// compares any two engines: reference BF16 vs impl BF16, reference vs impl + recipe, impl BF16 vs
// impl + recipe (the last two tell quantization error from implementation error).
//
// Everything an engine returns is on the host in F32 (exact copies of its BF16/F32 activations).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/provenance.h"
#include "common/tensor.h"

namespace tg::parity {

using TokenIds = std::vector<int32_t>;

struct ForwardOptions {
  // Fill PromptForward::taps (the per-layer residual stream). Off for generation-only work.
  bool want_taps = true;
  // Logits of the last position only ([1, V]): used to read the reference's margin at a divergence.
  bool last_position_only = false;
};

// One prompt's forward pass (S = the prompt's length, L layers).
struct PromptForward {
  Tensor logits;             // F32 [S, V] (or [1, V] with last_position_only): final logits
  std::vector<Tensor> taps;  // L x F32 [S, D]: residual stream leaving layer i (empty without want_taps)
};

struct ForwardResult {
  std::vector<PromptForward> prompts;  // one per input prompt, in order
};

struct GenerateOptions {
  int max_new_tokens = 16;
  // Stop a sequence after it emits one of these (the EOS token is kept in the output). Empty: never.
  std::vector<int32_t> eos_token_ids;
};

class Engine {
 public:
  virtual ~Engine() = default;

  // A short label for reports: "reference", "impl", "fake-perturbed".
  virtual std::string name() const = 0;
  // The precision as a recipe string impl::Recipe::parse accepts: "bf16", "delayed:...", "current", "block".
  virtual std::string precision() const = 0;
  // Extra provenance the engine knows (e.g. the reference's "libtorch" version). Optional.
  virtual Provenance provenance() const { return {}; }

  // One forward pass per prompt (each unpadded; engines may batch internally). Throws tg::Error when the
  // engine cannot run (bad token id, out of memory): the harness records that as "could not run".
  virtual ForwardResult forward(const std::vector<TokenIds>& prompts, const ForwardOptions& opts) = 0;
  // Greedy decoding (argmax, no sampling): the new tokens of each prompt, EOS included when emitted.
  virtual std::vector<TokenIds> generate_greedy(const std::vector<TokenIds>& prompts,
                                                const GenerateOptions& opts) = 0;
};

}  // namespace tg::parity
