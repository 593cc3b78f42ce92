// The torch-free facade of the reference (tg::ref): what the CLI, parity and bench code call with plain
// std::vector / tg::Tensor inputs and outputs, without including LibTorch headers. Everything returned is
// on the host; logits and taps are F32 (exact copies of the BF16 or F32 activations).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/gemma_config.h"
#include "common/tensor.h"
#include "reference/options.h"

namespace tg::ref {

struct EngineOptions {
  DType dtype = DType::BF16;  // activation/weight dtype: BF16 (reference precision) or F32 (debug)
  Device device = Device::CPU;
  int device_index = 0;       // CUDA device ordinal
  AttentionImpl attention = AttentionImpl::Explicit;
};

struct ForwardRequest {
  // [B, T] token ids (I64 or I32, host). Rows of a batch have equal length; pad on the left and give a mask.
  TensorView input_ids;
  TensorView attention_mask;  // optional [B, T] (I64 or I32): 1 = token, 0 = padding
  // Optional [B, T] position ids (I64 or I32). Default: arange(T) if there is no mask, else cumsum(mask) - 1
  // with 0 at padding, as HF generate() computes them.
  TensorView position_ids;
  bool last_position_only = false;  // logits for the last position only (HF logits_to_keep=1)
  bool want_taps = false;           // fill ForwardResult::layer_inputs/layer_outputs/final_hidden
};

struct ForwardResult {
  Tensor logits;                      // F32 [B, T or 1, V]
  std::vector<Tensor> layer_inputs;   // F32 [B, T, D] per layer: residual stream entering layer i
  std::vector<Tensor> layer_outputs;  // F32 [B, T, D] per layer: residual stream leaving layer i
  Tensor final_hidden;                // F32 [B, T, D] after the final norm
};

struct GenerateResult {
  // Per returned sequence (B * n rows): the new tokens only (EOS kept, padding after it dropped).
  std::vector<std::vector<int64_t>> new_tokens;
  // HF's `sequences` rows: the left-padded prompt followed by the new tokens and fill values.
  std::vector<std::vector<int64_t>> sequences;
  int64_t prompt_length = 0;             // padded prompt length L
  std::vector<double> sequence_scores;   // beam search only
};

struct TrainStepResult {
  double loss = 0.0;
  double grad_norm = 0.0;
  double lr = 0.0;
  int64_t step = 0;
};

class Trainer;  // reference/trainer.h

class Engine {
 public:
  // An HF checkpoint directory (config.json + safetensors).
  static Engine load(const std::filesystem::path& checkpoint_dir, const EngineOptions& opts = {});
  // Deterministic random weights (see RandomInit; HF's init by default).
  static Engine random(const GemmaConfig& cfg, uint64_t seed, const EngineOptions& opts = {},
                       const RandomInit& init = {});

  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;
  ~Engine();

  const GemmaConfig& config() const;
  const EngineOptions& options() const;

  ForwardResult forward(const ForwardRequest& req) const;
  // Convenience: logits F32 [1, T, V] of one unpadded sequence.
  Tensor logits(const std::vector<int64_t>& ids) const;
  // HF causal-LM loss (mean over labels[:, 1:] != -100; labels default = input_ids) of one batch.
  double loss(const TensorView& input_ids, const TensorView& labels = {}) const;
  // Unpadded prompts; batched with left padding.
  GenerateResult generate(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& gen) const;
  // Writes an HF checkpoint directory with tensors stored as file_dtype (BF16 or F32).
  void save(const std::filesystem::path& dir, DType file_dtype) const;

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  friend class TrainSession;
};

// Training through the facade: FP32 master weights initialised from an Engine's weights, on the engine's
// device, with the engine's attention implementation (TrainConfig::attention is ignored here).
class TrainSession {
 public:
  TrainSession(const Engine& init, const TrainConfig& tc);
  TrainSession(TrainSession&&) noexcept;
  TrainSession& operator=(TrainSession&&) noexcept;
  ~TrainSession();

  // One optimizer step over tc.grad_accum_steps micro-batches of [b, T] ids (labels default = ids).
  // Reading the loss synchronises; use the torch-facing Trainer for sync-free timing.
  TrainStepResult step(const std::vector<TensorView>& input_ids, const std::vector<TensorView>& labels = {});
  double eval_loss(const TensorView& input_ids, const TensorView& labels = {}) const;
  // The current weights (compute dtype) as an inference engine.
  Engine snapshot() const;

 private:
  std::unique_ptr<Trainer> trainer_;
  EngineOptions opts_;
};

}  // namespace tg::ref
