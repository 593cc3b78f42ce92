// GemmaForCausalLM: the TE-style Gemma 1 of impl/ (gemma.md section 2), on the CPU (CPU twins: emulated FP8,
// tiny models, CI) or CUDA (the product), in BF16 or under an FP8 recipe chosen at run time.
//
//   h      = embed[ids] * round_bf16(sqrt(D))                   kernels/embedding (one gather)
//   h      = TransformerLayer_i(h)      i = 0 .. L-1            impl/modules/transformer_layer.h
//   logits = LayerNormLinear(h; final_norm, embed)              the tied lm_head (BF16 by default, FP8 opt.)
//            over every row, or only each sequence's last row (gathered first: generation's case)
//
// Inputs are packed varlen batches (impl/batch.h). Activations live in one Arena sized for the batch shape
// (tokens, sequences, logits mode, training, scaling phase) on first use and re-carved on every forward: no
// device allocation per forward after warm-up; a larger batch grows the arena once. Logits are BF16 on the
// device (as HF's lm_head computes them) and F32 in ForwardOutput.
//
// Block scaling pads the token rows to a multiple of 128 (zero rows no attention reads); per-tensor FP8 and
// BF16 run on exactly T rows.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

#include "common/gemma_config.h"
#include "common/tensor.h"
#include "impl/batch.h"
#include "impl/fault_injection.h"
#include "impl/grads.h"
#include "impl/precision.h"
#include "impl/recipe.h"
#include "impl/weights.h"
#include "kernels/attention/attention.h"

namespace tg::impl {

struct ModelOptions {
  Recipe recipe;  // bf16 or an FP8 recipe
  Device device = Device::CPU;
  WeightStorage storage = WeightStorage::kMaster;  // kFp8Only: inference without BF16 weight copies
  bool fp8_lm_head = false;                        // the tied lm_head GEMM in FP8 too (an FP8 copy of embed)
  kernels::AttentionBackend attention = kernels::AttentionBackend::kCudnn;  // CUDA only
  Stream stream;                                                            // every launch of the model goes here
  // Training: bitwise-reproducible attention backward (cuDNN's deterministic algorithm). The GEMMs' switch is
  // process-wide (kernels::set_gemm_deterministic); the trainer sets both.
  bool deterministic = false;
  // Training / loss: rows of the lm_head per chunk (its [rows, V] logits buffer, the cross-entropy and the two
  // backward GEMMs run chunk by chunk); 0 picks about 1 GiB of BF16 logits (gemma: 2048 rows of 256k). Each
  // chunk re-reads and re-writes the F32 embedding gradient in its wgrad GEMM (2 GB for gemma-2b): fewer,
  // larger chunks trade logits memory for that traffic.
  int64_t loss_chunk_rows = 0;
  FaultInjection fault;  // TEST-ONLY planted bug for the parity harness (impl/fault_injection.h); inert by default
};

enum class LogitsMode : uint8_t {
  kAll,              // every token: [T, V]
  kLastPerSequence,  // the last token of each sequence: [B, V] (HF logits_to_keep=1 per sequence)
  kNone,             // stop after the layers (calibration without an FP8 lm_head, timing the body)
};

struct ForwardOptions {
  LogitsMode logits = LogitsMode::kLastPerSequence;
  bool taps = false;      // ForwardOutput::taps / final_hidden (host copies; for the parity harness)
  bool training = false;  // keep per-layer activations and column-wise FP8 copies for the backward pass
};

struct ForwardOutput {
  Tensor logits;             // host F32 [T or B, V] (empty for kNone)
  std::vector<Tensor> taps;  // host F32 [T, D] per layer: the residual stream leaving layer i
  Tensor final_hidden;       // host F32 [T or B, D]: the final norm's output (BF16 lm_head only)
};

class GemmaForCausalLM {
 public:
  // Weights must have been built for opts (device, recipe, storage, fp8_lm_head): load()/random() do that.
  GemmaForCausalLM(ModelWeights weights, const ModelOptions& opts);
  static GemmaForCausalLM load(const std::filesystem::path& dir, const ModelOptions& opts);
  static GemmaForCausalLM random(const GemmaConfig& cfg, uint64_t seed, const ModelOptions& opts,
                                 const RandomInit& init = {});
  GemmaForCausalLM(GemmaForCausalLM&&) noexcept;
  GemmaForCausalLM& operator=(GemmaForCausalLM&&) noexcept;
  ~GemmaForCausalLM();

  const GemmaConfig& config() const;
  const ModelOptions& options() const;
  const ModelWeights& weights() const;
  ModelWeights& weights();  // training: change the masters, then requantize_weights()
  Precision& precision();
  const Precision& precision() const;
  // The RoPE inputs of every layer (a test fault's layer excepted): inv_freq F32 [Dh / 2] and, on CUDA, its cos/sin
  // table (kernels::rope_cos_sin_table; empty on the CPU). The decoder shares them.
  const Tensor& rope_inv_freq() const;
  const Tensor& rope_table() const;

  // The forward pass on the device. Returns the device logits BF16 [T or B, V] (an empty view for kNone),
  // valid until the next forward. `on_layer(i, h)` (optional) sees each layer's output h [rows, D] on the
  // device, in order (taps). Asynchronous on the model's stream.
  TensorView forward(const Batch& batch, const ForwardOptions& opts,
                     const std::function<void(int64_t, const TensorView&)>& on_layer = {});
  // forward() plus host copies (synchronises).
  ForwardOutput run(const Batch& batch, const ForwardOptions& opts);

  // Sizes the arena now for batches up to these shapes (otherwise the first larger forward does).
  void reserve(int64_t max_tokens, int64_t max_sequences, const ForwardOptions& opts);
  std::size_t arena_bytes() const;

  // Delayed scaling calibration (no-ops for other recipes): begin, forward calibration batches, finish.
  void begin_calibration();
  void finish_calibration();
  // begin + one forward per batch + finish.
  void calibrate(const std::vector<Batch>& batches);

  // ---- Training (impl/trainer.h drives these; impl/README.md "Training") ----
  // One micro-batch: the forward with every activation backward needs, the cross-entropy of the lm_head's
  // logits against `targets` (I32 [T] host: the next token of each position, -100 = ignored) chunk by chunk
  // (kernels/loss: no [T, V] FP32 copy; the logits buffer is chunk x V BF16 and is overwritten by its
  // gradient), and the backward into `grads` (ADDED to: gradient accumulation). loss_sum (F32 [1] on the
  // model's device) += scale * the sum of the token losses; scale = 1 / the number of non-ignored targets of
  // the whole optimizer step. Asynchronous on the model's stream. Needs master storage, a BF16 lm_head,
  // precision().set_training(true) for delayed scaling, and column-wise FP8 weight copies
  // (quantize_weights(..., columnwise = true)) under an FP8 recipe.
  void forward_backward(const Batch& batch, const std::vector<int32_t>& targets, float scale, const ModelGrads& grads,
                        const TensorView& loss_sum);
  // The same loss without the backward (validation): no activations kept, and under delayed scaling the
  // frozen scales of the inference phase (no amax recorded).
  void loss(const Batch& batch, const std::vector<int32_t>& targets, float scale, const TensorView& loss_sum);
  // Rows per lm_head chunk for a batch of `tokens` (ModelOptions::loss_chunk_rows resolved).
  int64_t loss_chunk_rows(int64_t tokens) const;

  // After changing the BF16 masters: new FP8 copies.
  void requantize_weights();
  // An HF checkpoint directory (needs master storage).
  void save(const std::filesystem::path& dir, DType file_dtype = DType::BF16) const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Throws tg::Error naming the dimension if `cfg` cannot run under `recipe` (FP8 GEMM shape rules:
// kernels/gemm/gemm.h; block scaling: every K a multiple of 128).
void check_model_shapes(const GemmaConfig& cfg, const Recipe& recipe, bool fp8_lm_head);

}  // namespace tg::impl
