// Training the impl model: optimizer steps over micro-batches (gradient accumulation), the reference's
// learning-rate schedule, validation loss, and checkpoints with exact resume.
//
// One step (Trainer::step), all on the model's stream:
//   zero the gradients (one memset) and the loss scalar
//   per micro-batch: GemmaForCausalLM::forward_backward (loss += sum / N, gradients accumulate in FP32)
//                    N = the non-ignored targets of the whole step (HF's num_items_in_batch)
//   delayed scaling: update_forward() + update_backward() (one fused launch each: the step's amaxes -> scales)
//   Optimizer::step(lr): global norm, clip, AdamW or skip (NaN / inf gradient), BF16 + FP8 weight copies
//   ONE device -> host copy of {loss, grad_norm, clip_coef, skipped}: the step's only synchronisation.
// Schedule: HF get_cosine_schedule_with_warmup (linear warmup from 0, cosine to min_lr_ratio * lr), the same
// function as the reference trainer's (reference/trainer.cpp lr_multiplier).
//
// Checkpoint directory (save_checkpoint; written as <dir>.tmp-<pid>, every file flushed, then renamed into place
// and the parent directory flushed, so a crash -- SIGKILL or power loss -- leaves the previous checkpoint or the
// new one, never half of one; out/checkpoints/latest moves only after the rename; tested by
// cli/tests/train_kill_check.sh, which SIGKILLs a run inside a checkpoint write and resumes it):
//   config.json, model.safetensors   the FP32 master weights under their HF names (an HF checkpoint: loads
//                                    with load_weights / the reference / transformers)
//   optimizer.safetensors            exp_avg.<HF name>, exp_avg_sq.<HF name> (F32), adam_state (F64 [3])
//   scaling.safetensors              delayed scaling only: amax_history, scale, scale_inv (every registered
//                                    tensor, forward then backward rows; names in the metadata)
//   trainer_state.json               format/version, steps done, recipe, model config, train options, the
//                                    caller's metadata (data order, seed, ...) and a checksum (FNV-1a 64) of
//                                    every tensor of the three files, verified when loading.
// Everything else a step reads is a function of these (the BF16 weights are the masters rounded to nearest,
// the FP8 copies follow from them, the data order is a function of (seed, step)), so with deterministic
// kernels a resumed run repeats an uninterrupted one bit for bit (tested on the CPU).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/data.h"
#include "common/tensor.h"
#include "impl/batch.h"
#include "impl/model.h"
#include "impl/optimizer.h"

namespace tg::impl {

struct TrainOptions {
  double lr = 3e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1000;
  double min_lr_ratio = 0.0;
  AdamWConfig adamw;  // betas, eps, weight decay (not on norms), max_grad_norm
  int64_t grad_accum_steps = 1;
  // Bitwise-reproducible GEMM algorithms (process-wide, kernels::set_gemm_deterministic); the attention's
  // switch is ModelOptions::deterministic (the model's layers are built with it).
  bool deterministic = false;
  // TEST-ONLY: before the optimizer step of this 0-based step, one gradient element is set to NaN (the step must
  // be skipped and logged). -1: off. The CLI sets it from TEGEMMA_INJECT_NAN_GRAD_STEP (cli/cmd_train.cpp).
  int64_t inject_nan_grad_at_step = -1;
  // TEST-ONLY: save_checkpoint at this step count stops half way (model.safetensors and optimizer.safetensors
  // written into the temporary directory, trainer_state.json not) and waits forever, for a test to SIGKILL the
  // process there. -1: off. The CLI sets it from TEGEMMA_TEST_HANG_IN_CHECKPOINT (cli/tests/train_kill_check.sh).
  int64_t hang_in_checkpoint_at_step = -1;
};

// HF get_cosine_schedule_with_warmup (num_cycles 0.5), with an optional floor: lr at 0-based `step`.
double learning_rate(const TrainOptions& o, int64_t step);

// One micro-batch: a packed batch and one target per token (the next token, or -100).
struct TrainBatch {
  Batch batch;
  std::vector<int32_t> targets;
  int64_t num_targets() const;  // non-ignored
  // The windows of a TokenBatch (rows of S + 1 tokens): inputs tokens[:, :S], targets tokens[:, 1:].
  static TrainBatch from_windows(const TokenBatch& b);
};

struct StepResult {
  int64_t step = 0;  // 0-based index of this step
  double loss = 0.0;
  double grad_norm = 0.0;
  double clip_coef = 1.0;
  double lr = 0.0;
  bool skipped = false;
  int64_t tokens = 0;   // input tokens of the step (all micro-batches)
  int64_t targets = 0;  // non-ignored targets
};

class Trainer {
 public:
  // Takes the model (master storage, BF16 lm_head). Sets the training phase, makes the column-wise FP8 weight
  // copies (FP8 recipes), builds the optimizer (masters = the model's weights).
  Trainer(GemmaForCausalLM model, const TrainOptions& opts);
  Trainer(const Trainer&) = delete;  // the optimizer points at the model it holds
  Trainer& operator=(const Trainer&) = delete;

  // One optimizer step over exactly grad_accum_steps micro-batches (see the header comment).
  StepResult step(const std::vector<TrainBatch>& micro_batches);
  // Mean loss over the batches' non-ignored targets (no gradient; delayed scaling's frozen scales).
  double eval_loss(const std::vector<TrainBatch>& batches);

  int64_t steps_done() const { return steps_; }
  const TrainOptions& options() const { return opts_; }
  GemmaForCausalLM& model() { return model_; }
  const GemmaForCausalLM& model() const { return model_; }
  Optimizer& optimizer() { return *optimizer_; }
  const Optimizer& optimizer() const { return *optimizer_; }

  // A few FP8 scaling statistics for the log (host copies: call after step(), which already synchronised):
  // delayed: scale and window amax of a few registered tensors; current: the last batch's scale and amax of
  // a few casts; empty for bf16 and block scaling. {"layers.0.qkv.input.scale": 27.1, ...}
  nlohmann::json fp8_stats() const;

  // Checkpoints (see the header comment). `meta` is stored as trainer_state.json's "meta" (the caller's
  // data order and run description); load_checkpoint returns it. Loading checks the model config, the recipe
  // and every tensor's checksum, and restores the masters (then the BF16 / FP8 copies), the moments, AdamW's
  // state, the delayed-scaling state and the step count.
  void save_checkpoint(const std::filesystem::path& dir, const nlohmann::json& meta) const;
  nlohmann::json load_checkpoint(const std::filesystem::path& dir);

 private:
  GemmaForCausalLM model_;
  TrainOptions opts_;
  std::unique_ptr<Optimizer> optimizer_;
  Tensor log_;  // F32 [5] on the device: {loss, grad_norm, clip_coef, skipped, sumsq}
  int64_t steps_ = 0;
};

// The checkpoint directory written last by a run with output directory `out` (out/checkpoints/latest), or an
// empty path when there is none.
std::filesystem::path latest_checkpoint(const std::filesystem::path& out);
// out/checkpoints/step-<step, 8 digits>; save_checkpoint there and point out/checkpoints/latest at it. Then keeps
// the newest two step-* directories and removes temporary directories left by a killed save.
std::filesystem::path save_run_checkpoint(const Trainer& t, const std::filesystem::path& out, const nlohmann::json& meta);

}  // namespace tg::impl
