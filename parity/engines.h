// The real engines behind the parity harness's interface (parity/engine.h):
//
//   ImplEngine       tg::impl::GemmaForCausalLM under any recipe (bf16, delayed, current, block), on the CPU
//                    backend (the kernels' CPU twins, FP8 emulated bit for bit) or CUDA; master or FP8-only
//                    weight storage; optionally the FP8 lm_head; optionally a test-only planted bug
//                    (impl/fault_injection.h).
//   ReferenceEngine  the LibTorch reference through its torch-free facade (reference/engine.h), BF16 (the
//                    reference precision) or FP32, CPU or CUDA. Only in builds with LibTorch
//                    (TEGEMMA_HAVE_TORCH).
//
// Both return host F32 copies: logits [S, V] per prompt (or [1, V]) and the residual stream leaving each
// layer [S, D].
//
// Greedy generation. The reference runs HF generate() semantics with its KV cache, one prompt at a time
// (no left padding, so its numbers match the unpadded forward the harness reads margins from). The impl
// has no KV-cached decoding yet (issue 7), so ImplEngine::generate_greedy recomputes: every step is one
// full forward of all unfinished sequences (prompt + tokens so far, packed in one batch) keeping only the
// last position's logits, then the argmax (ties to the lower id, as torch.argmax). That costs O(steps x
// length) forwards' worth of compute: fine for the short generations parity runs, not a decoder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/gemma_config.h"
#include "impl/fault_injection.h"
#include "impl/model.h"
#include "impl/weights.h"
#include "parity/engine.h"

namespace tg::parity {

struct ImplEngineOptions {
  std::string name = "impl";    // report label prefix: "<name>[<precision>]"
  std::string recipe = "bf16";  // impl::Recipe::parse syntax
  Device device = Device::CPU;
  impl::WeightStorage storage = impl::WeightStorage::kMaster;  // kFp8Only: FP8 recipes only
  bool fp8_lm_head = false;
  // Delayed scaling's calibration prompts (one batch, before any forward). Required for the delayed recipe,
  // ignored by the others.
  std::vector<TokenIds> calibration;
  impl::FaultInjection fault;  // test-only (impl/fault_injection.h); none by default
};

class ImplEngine : public Engine {
 public:
  // A copy of `master` (master-storage BF16 weights, e.g. impl::load_weights) built for the options: one
  // load serves every recipe and device. Throws tg::Error if the model cannot run the recipe (shapes).
  ImplEngine(const impl::ModelWeights& master, const ImplEngineOptions& opts);
  ~ImplEngine() override;

  std::string name() const override { return opts_.name; }
  std::string precision() const override;
  Provenance provenance() const override;
  ForwardResult forward(const std::vector<TokenIds>& prompts, const ForwardOptions& opts) override;
  std::vector<TokenIds> generate_greedy(const std::vector<TokenIds>& prompts, const GenerateOptions& opts) override;

  impl::GemmaForCausalLM& model() { return *model_; }

 private:
  ImplEngineOptions opts_;
  std::unique_ptr<impl::GemmaForCausalLM> model_;
};

struct ReferenceEngineOptions {
  std::string name = "reference";
  DType dtype = DType::BF16;  // BF16 or F32
  Device device = Device::CPU;
};

// True in builds with LibTorch (ReferenceEngine is usable).
bool reference_available();

class ReferenceEngine : public Engine {
 public:
  // An HF checkpoint directory. Throws tg::Error in builds without LibTorch.
  ReferenceEngine(const std::filesystem::path& checkpoint_dir, const ReferenceEngineOptions& opts);
  ~ReferenceEngine() override;

  // "<name>" (BF16) or "<name>-f32".
  std::string name() const override;
  // "bf16" for both dtypes: the recipe axis (impl::Recipe) has no f32; name() tells an F32 reference apart.
  std::string precision() const override { return "bf16"; }
  Provenance provenance() const override;
  ForwardResult forward(const std::vector<TokenIds>& prompts, const ForwardOptions& opts) override;
  std::vector<TokenIds> generate_greedy(const std::vector<TokenIds>& prompts, const GenerateOptions& opts) override;

  const GemmaConfig& config() const;

 private:
  struct Impl;
  ReferenceEngineOptions opts_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tg::parity
