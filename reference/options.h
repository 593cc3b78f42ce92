// Plain option structs of the LibTorch reference (tg::ref), shared by the torch-facing API (model.h,
// generate.h, trainer.h) and the torch-free facade (engine.h). No LibTorch types here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace tg::ref {

// How attention is computed. Explicit is HF's "eager" path line by line (the oracle): scores
// materialised in the activation dtype, softmax in FP32, additive finite mask. Sdpa calls
// at::scaled_dot_product_attention with the same mask and scale (LibTorch >= 2.1 only; faster on CUDA;
// tested equal to Explicit within a stated tolerance).
enum class AttentionImpl { Explicit, Sdpa };

// Random initialisation. HF's _init_weights: every Linear/Embedding ~ N(0, initializer_range = 0.02),
// the padding_idx row of the embedding zeroed, RMSNorm weights zero (the norm computes x * (1 + w)).
// Tests set norm_std > 0 so that a missing "1 +" cannot hide behind w = 0.
struct RandomInit {
  double std = 0.02;         // Linear and embedding weights
  double norm_std = 0.0;     // RMSNorm weights (HF: 0)
  bool zero_pad_row = true;  // embedding row pad_token_id := 0 (nn.Embedding(padding_idx))
  // Draw on the target device (CUDA) instead of the CPU: seconds instead of minutes for gemma-7b, for
  // benchmarks. The values then depend on the device and the LibTorch version (not only on the seed), and the
  // device's default generator is reseeded with the seed.
  bool on_device = false;
};

// HF generate() semantics (transformers 5.17 generation/utils.py). Defaults are HF's defaults, except that
// max_new_tokens is always used (HF's max_length = prompt length + max_new_tokens).
enum class EarlyStopping { False, True, Never };  // HF early_stopping = False | True | "never"

struct GenerationConfig {
  int64_t max_new_tokens = 20;
  int64_t min_new_tokens = 0;   // eos logits forced to -inf until this many tokens are new
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 50;           // HF default 50 (applies only when sampling; 0 disables)
  double top_p = 1.0;
  double repetition_penalty = 1.0;
  int64_t num_beams = 1;
  double length_penalty = 1.0;
  EarlyStopping early_stopping = EarlyStopping::False;
  int64_t num_return_sequences = 1;  // beam search only: best n of num_beams
  // Stop tokens; empty = the model config's eos_token_ids.
  std::vector<int64_t> eos_token_ids;
  // No stop tokens at all: every row runs to max_new_tokens (HF: eos_token_id=None). For benchmarks.
  bool ignore_eos = false;
  // Padding id used for left padding and for finished rows; -1 = the model config's pad_token_id.
  int64_t pad_token_id = -1;
  // Sampling seed: the draws are torch.multinomial on a CPU generator seeded like torch.manual_seed(seed),
  // so a seed gives the same tokens on every device (the probabilities are copied to the host each step).
  uint64_t seed = 0;
  // Optional per-row new-token limits (greedy/sampling only; each <= max_new_tokens); a row that
  // reaches its limit is finished like a row that produced EOS. Not an HF feature.
  std::vector<int64_t> max_new_tokens_per_row;
};

// Mixed-precision training (trainer.h): compute in `compute_dtype` (BF16 copies of the FP32 master
// weights, BF16 activations), FP32 master weights, FP32 gradient accumulation and FP32 AdamW state.
// Schedule = HF get_cosine_schedule_with_warmup (linear warmup from 0, cosine to min_lr_ratio * lr).
// AdamW = torch.optim.AdamW (decoupled weight decay, bias correction); clipping = clip_grad_norm_.
struct TrainConfig {
  double lr = 3e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1000;
  double min_lr_ratio = 0.0;  // 0 = HF get_cosine_schedule_with_warmup
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // applied to every weight except RMSNorm weights (as HF Trainer)
  double max_grad_norm = 1.0; // <= 0 disables clipping (the norm is still computed and reported)
  int64_t grad_accum_steps = 1;
  DType compute_dtype = DType::BF16;  // BF16 (reference precision) or F32 (debug)
  AttentionImpl attention = AttentionImpl::Explicit;
  // at::_fused_adamw_ (what HF's baseline uses) where it exists: CUDA with LibTorch >= 2.0. Elsewhere, or
  // when false, the explicit per-tensor loop of torch.optim.AdamW(foreach=False), line by line.
  bool fused_adamw = true;
};

}  // namespace tg::ref
