// Mixed-precision training of the reference model: FP32 master weights and AdamW state, BF16 (or FP32)
// compute copies, FP32 gradient accumulation over micro-batches, global-norm clipping, warmup + cosine LR.
// The step issues no host synchronisation (loss and grad norm stay device tensors until read), so it can be
// timed on CUDA. Deterministic: the same seed, data and device give the same losses. Torch-facing.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "reference/model.h"
#include "reference/options.h"

namespace tg::ref {

// One micro-batch of token ids [b, T] int64 and labels [b, T] (usually = input_ids; -100 is ignored; the
// model shifts them, as HF does). Keep them on the CPU: the target count is taken on the host, and the
// copy to the device is asynchronous (pinned memory).
struct MicroBatch {
  at::Tensor input_ids;
  at::Tensor labels;
};

struct StepStats {
  at::Tensor loss;       // 0-d FP32 on the device: sum of token losses / targets, over all micro-batches
  at::Tensor grad_norm;  // 0-d FP32 on the device: global L2 norm of the FP32 gradient before clipping
  double lr = 0.0;       // learning rate used by this step
  int64_t step = 0;      // index of this step (0-based)
};

// HF get_cosine_schedule_with_warmup (num_cycles 0.5) with an optional floor (HF's
// get_cosine_with_min_lr_schedule_with_warmup when min_lr_ratio > 0): the multiplier of lr at `step`.
double lr_multiplier(const TrainConfig& tc, int64_t step);

class Trainer {
 public:
  // `init` may be of any dtype/device; it is copied to FP32 master weights on `device`.
  Trainer(GemmaConfig cfg, const GemmaWeights& init, TrainConfig tc, at::Device device);

  // One optimizer step over exactly tc.grad_accum_steps micro-batches.
  StepStats step(const std::vector<MicroBatch>& micro_batches);

  // Loss of the current weights on one batch (no gradient), computed like the training loss.
  at::Tensor eval_loss(const MicroBatch& batch);

  double lr_at(int64_t step) const { return tc_.lr * lr_multiplier(tc_, step); }
  int64_t steps_done() const { return step_; }
  const GemmaWeights& master() const { return master_; }
  const GemmaConfig& config() const { return cfg_; }
  const TrainConfig& train_config() const { return tc_; }
  // A copy of the model the next step runs (compute dtype), for evaluation/generation.
  GemmaModel compute_model() const;
  bool uses_fused_adamw() const { return fused_; }

 private:
  void refresh_compute_weights();
  void adamw_explicit(const std::vector<at::Tensor>& grads, double lr);
  void adamw_fused(const std::vector<at::Tensor>& grads, double lr);

  GemmaConfig cfg_;
  TrainConfig tc_;
  at::Device device_;
  GemmaWeights master_;                // FP32
  // The model the steps run, built once (no per-step allocation or host->device copy): its weights are
  // leaf tensors that require grad; BF16 copies of the master refreshed in place before every step, or, for
  // FP32 compute, aliases of the master tensors.
  std::unique_ptr<GemmaModel> model_;
  std::vector<at::Tensor> exp_avg_;    // FP32, one per parameter in GemmaWeights::named() order
  std::vector<at::Tensor> exp_avg_sq_;
  std::vector<at::Tensor> state_step_; // fused path: per-parameter FP32 step counters (device)
  std::vector<bool> decay_;            // weight decay applies (not an RMSNorm weight)
  int64_t step_ = 0;
  bool fused_ = false;
};

// Deterministic batches from a token stream: the stream is cut into consecutive non-overlapping sequences of
// seq_len tokens; epoch e visits them in a permutation drawn from (seed, e) by a Fisher-Yates shuffle driven
// by splitmix64 (platform independent, unlike std::shuffle). Batch i takes the next batch_size sequences of
// that endless order. labels = input_ids.
class TokenBatcher {
 public:
  TokenBatcher(std::vector<int32_t> tokens, int64_t seq_len, int64_t batch_size, uint64_t seed);
  int64_t num_sequences() const { return n_seq_; }
  MicroBatch batch(int64_t index) const;
  // Sequence order of one epoch (exposed for tests).
  std::vector<int64_t> epoch_order(int64_t epoch) const;

 private:
  std::vector<int32_t> tokens_;
  int64_t seq_len_, batch_size_, n_seq_;
  uint64_t seed_;
};

}  // namespace tg::ref
