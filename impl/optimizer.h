// The trainable state of a GemmaForCausalLM and its AdamW (torch.optim.AdamW semantics, HF Trainer's groups):
// FP32 master weights, FP32 gradients and AdamW's two FP32 moments, each ONE flat device buffer with views in
// the model's fused layout (impl/weights.h), so that one memset zeroes every gradient and the norm, the clip
// and the update run over a table built once (kernels/optim: one multi-tensor launch for the update).
//
//   zero_grads()       one memset of the flat gradient buffer (start of an optimizer step)
//   ... model.forward_backward(..., grads(), ...) per micro-batch (accumulates) ...
//   step(lr)           global norm (FP64, deterministic) -> clip coefficient -> if every gradient is finite:
//                      AdamW on the masters and moments, the model's BF16 weights rewritten in the same pass
//                      (the compute copies), then the FP8 weight copies re-quantized with the recipe's weight
//                      rule (impl/weights.h refresh_fp8_weights); if not finite: nothing changes (skipped).
//                      No host sync: the skip is decided on the device.
//   read_status()      the one sync per step: {grad_norm, clip_coef, skipped} for the log.
//
// Weight decay applies to every weight except the RMSNorm weights (the reference trainer's rule, HF Trainer's
// default grouping). The tied embedding is one parameter (its gradient holds both uses).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/tensor.h"
#include "impl/grads.h"
#include "impl/model.h"
#include "kernels/optim/optim.h"

namespace tg::impl {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;  // <= 0: no clipping (the norm is still computed and reported)
};

struct StepStatus {
  double grad_norm = 0.0;  // global L2 norm of the gradients before clipping (NaN/inf when skipped)
  double clip_coef = 1.0;
  bool skipped = false;  // a gradient was NaN or inf: weights, moments and the step counter unchanged
};

// One trainable tensor: its fused name ("layers.3.qkv"), its views, and how it maps to HF tensor names
// (row ranges of the fused tensor: q/k/v of qkv, gate/up of fc1).
struct Parameter {
  std::string name;
  TensorView master, grad, exp_avg, exp_avg_sq;  // F32, the fused shape
  TensorView compute;                            // the model's BF16 weight (refreshed by the update)
  bool decay = true;
  struct HfSlice {
    std::string name;  // "model.layers.3.self_attn.k_proj.weight"
    int64_t row_begin = 0, row_end = 0;
  };
  std::vector<HfSlice> hf;
};

class Optimizer {
 public:
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  // Masters, gradients and moments on the model's device; masters = the model's BF16 weights (exact). The model
  // must outlive the optimizer and keep its weight tensors (they are the BF16 copies the update writes).
  Optimizer(GemmaForCausalLM& model, const AdamWConfig& cfg);

  const ModelGrads& grads() const { return grads_; }
  const std::vector<Parameter>& parameters() const { return params_; }
  const AdamWConfig& config() const { return cfg_; }
  int64_t num_elements() const { return numel_; }

  void zero_grads();
  void step(double lr);
  // Waits for the model's stream and reads the last step's status.
  StepStatus read_status() const;

  // The last step's status F32 [4] on the device: {grad_norm, clip_coef, skipped (0/1), sum of squares}.
  const Tensor& status() const { return status_; }
  // AdamW's scalar state F64 [3] {step, beta1^step, beta2^step} (the step counts applied, not skipped, steps).
  const Tensor& adam_state() const { return state_; }
  // The flat buffers (checkpoints; tests).
  const Tensor& masters() const { return master_; }
  const Tensor& exp_avg() const { return exp_avg_; }
  const Tensor& exp_avg_sq() const { return exp_avg_sq_; }
  Tensor& masters() { return master_; }
  Tensor& exp_avg() { return exp_avg_; }
  Tensor& exp_avg_sq() { return exp_avg_sq_; }
  Tensor& adam_state() { return state_; }
  // After the masters were overwritten (resume): the model's BF16 and FP8 copies from them.
  void sync_model_weights();

 private:
  GemmaForCausalLM* model_;
  AdamWConfig cfg_;
  int64_t numel_ = 0;
  Tensor master_, grad_, exp_avg_, exp_avg_sq_;  // F32 [numel]
  Tensor state_, status_, workspace_;
  std::vector<Parameter> params_;
  ModelGrads grads_;
  kernels::AdamWTable table_;
};

}  // namespace tg::impl
