// The LibTorch Gemma 1 reference (the oracle): weights, checkpoint I/O, forward with a KV cache and
// per-layer taps, and the causal-LM loss. Follows HF transformers 5.17 models/gemma/modeling_gemma.py op by op
// (same ops, same dtypes at every step), so that on the CPU it reproduces HF's FP32 logits to ~1e-6 and
// its BF16 logits up to GEMM accumulation-order noise. Torch-facing: for reference/ and parity/ only;
// everything else uses the torch-free facade in engine.h.
//
// Shape letters: B batch, T new tokens, S key/value slots (cache length + T), D hidden, H heads,
// Hkv kv heads, Dh head dim, F intermediate, V vocab, L layers.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>  // c10::NoGradGuard

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "common/dtype.h"
#include "common/gemma_config.h"
#include "reference/options.h"

namespace tg::ref {

// One decoder layer, HF names in comments. Linear weights are [out, in] and used as y = x W^T.
struct LayerWeights {
  at::Tensor input_layernorm;           // input_layernorm.weight           [D]
  at::Tensor q_proj;                    // self_attn.q_proj.weight          [H*Dh, D]
  at::Tensor k_proj;                    // self_attn.k_proj.weight          [Hkv*Dh, D]
  at::Tensor v_proj;                    // self_attn.v_proj.weight          [Hkv*Dh, D]
  at::Tensor o_proj;                    // self_attn.o_proj.weight          [D, H*Dh]
  at::Tensor post_attention_layernorm;  // post_attention_layernorm.weight  [D]
  at::Tensor gate_proj;                 // mlp.gate_proj.weight             [F, D]
  at::Tensor up_proj;                   // mlp.up_proj.weight               [F, D]
  at::Tensor down_proj;                 // mlp.down_proj.weight             [D, F]
};

struct GemmaWeights {
  at::Tensor embed_tokens;  // model.embed_tokens.weight [V, D]; also the tied lm_head
  std::vector<LayerWeights> layers;
  at::Tensor norm;          // model.norm.weight [D]

  // Every parameter under its HF name ("model.layers.3.mlp.up_proj.weight"), in a fixed order.
  // The pointers alias this object's members (valid while it lives and is not moved).
  std::vector<std::pair<std::string, at::Tensor*>> named();
  std::vector<std::pair<std::string, const at::Tensor*>> named() const;
  // A copy converted to dtype/device (contiguous, no autograd history).
  GemmaWeights to(at::ScalarType dtype, at::Device device) const;
  at::ScalarType dtype() const { return embed_tokens.scalar_type(); }
  at::Device device() const { return embed_tokens.device(); }
};

// The HF tensor names and shapes a checkpoint of this config must contain (lm_head excluded).
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(const GemmaConfig& cfg);

// Loads an HF checkpoint directory (config.json, model.safetensors or shards + index; BF16 or F32 files)
// converting every tensor to `dtype` (F32 -> BF16 rounds to nearest even, as torch's .to()). A missing or
// wrongly shaped tensor, an unexpected tensor, or an lm_head.weight that is not equal to embed_tokens
// throws tg::Error naming it.
GemmaWeights load_weights(const std::filesystem::path& dir, const GemmaConfig& cfg, at::ScalarType dtype,
                          at::Device device);
// Reads and validates dir/config.json.
GemmaConfig load_config(const std::filesystem::path& dir);

// Deterministic random weights: drawn in FP32 on the CPU from a generator seeded with `seed` (so the
// values do not depend on the device), then converted to dtype/device. init.on_device: drawn in FP32 on the
// (CUDA) device instead, from its reseeded default generator (fast; values specific to device and LibTorch).
GemmaWeights random_weights(const GemmaConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device,
                            const RandomInit& init = {});

// Writes an HF checkpoint directory (config.json + safetensors, sharded above max_shard_bytes) with
// tensors stored as `file_dtype` (BF16 or F32); no lm_head (tied).
void save_checkpoint(const std::filesystem::path& dir, const GemmaConfig& cfg, const GemmaWeights& w,
                     DType file_dtype, uint64_t max_shard_bytes = 5ull << 30);

at::ScalarType to_scalar_type(DType t);  // F32/BF16/F16 only
DType to_dtype(at::ScalarType t);

// True when this LibTorch has at::scaled_dot_product_attention (>= 2.1).
bool sdpa_available();

// A static KV cache: per layer K and V [B, Hkv, capacity, Dh] in the activation dtype. Slots are cache
// positions shared by all rows (HF cache_position): a forward over T tokens writes slots [length, length+T)
// and attends over slots [0, length+T). Keys are stored after RoPE, as HF does.
struct KVCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;

  static KVCache allocate(const GemmaConfig& cfg, int64_t batch, int64_t capacity, at::ScalarType dtype,
                          at::Device device);
  int64_t capacity() const { return k.empty() ? 0 : k[0].size(2); }
  int64_t batch() const { return k.empty() ? 0 : k[0].size(0); }
  // Row i of the new cache is row rows[i] of the old one (beam search reordering). rows: [B] int64.
  void reorder(const at::Tensor& rows);
};

// Activations recorded for the parity harness (all in the activation dtype, detached).
struct Taps {
  std::vector<at::Tensor> layer_inputs;   // [L] of [B, T, D]: the residual stream entering layer i
  std::vector<at::Tensor> layer_outputs;  // [L] of [B, T, D]: the residual stream leaving layer i
  at::Tensor final_hidden;                // [B, T, D] after the final norm
  at::Tensor logits;                      // [B, T', V] (T' = T or logits_to_keep)
};

// Inputs may live on the CPU or on the model's device; on CUDA, pass device tensors to keep the forward free
// of host synchronisation.
struct ForwardArgs {
  at::Tensor input_ids;       // [B, T] int64
  // [B, T] int64. Undefined: cache length + arange(T) for every row (HF's default when position_ids is None;
  // NOT what generate() uses for left-padded rows: pass cumsum(mask) - 1 there).
  at::Tensor position_ids;
  // [B, S] (S = cache length + T), nonzero = real token, 0 = padding. Undefined: no padding.
  at::Tensor attention_mask;
  KVCache* cache = nullptr;   // null: no cache (S = T)
  int64_t logits_to_keep = 0; // HF logits_to_keep: 0 = every position, k = the last k positions
  bool compute_logits = true; // false: stop after the final norm (returns final hidden states)
  Taps* taps = nullptr;
};

class GemmaModel {
 public:
  // FP32 weights on CUDA set LibTorch's FP32 matmul precision to IEEE FP32 for the whole process (no TF32).
  GemmaModel(GemmaConfig cfg, GemmaWeights weights, AttentionImpl attention = AttentionImpl::Explicit);

  // Logits [B, T', V] in the activation dtype (= the weights' dtype), as HF's lm_head returns them.
  at::Tensor forward(const ForwardArgs& args) const;

  const GemmaConfig& config() const { return cfg_; }
  const GemmaWeights& weights() const { return w_; }
  GemmaWeights& weights() { return w_; }
  at::ScalarType dtype() const { return w_.dtype(); }
  at::Device device() const { return w_.device(); }
  AttentionImpl attention() const { return attention_; }

 private:
  GemmaConfig cfg_;
  GemmaWeights w_;
  AttentionImpl attention_;
  at::Tensor inv_freq_;    // [Dh/2] fp32, on the weights' device
  at::Tensor normalizer_;  // 0-d sqrt(D) in the activation dtype, on the weights' device
};

// HF ForCausalLMLoss: logits upcast to FP32, labels shifted left by one (label t+1 is the target at t, the
// last position gets -100), cross entropy with ignore_index -100. num_items < 0: mean over non-ignored
// targets; otherwise sum / num_items (HF's num_items_in_batch, used for gradient accumulation).
// logits [B, T, V], labels [B, T] int64. Returns a 0-d FP32 tensor.
at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels, double num_items = -1.0);
// Number of targets causal_lm_loss counts: labels[:, 1:] != -100 (host int; labels must be on the CPU).
int64_t count_loss_targets(const at::Tensor& labels);

// ---- Building blocks (exposed for tests; each mirrors one HF function) ----------------------------------
// GemmaRMSNorm.forward: fp32 x * rsqrt(mean(x^2) + eps) * (1 + w), one cast back to x's dtype.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps);
// GemmaRotaryEmbedding.compute_default_rope_parameters: 1 / theta^(arange(0, Dh, 2) / Dh), fp32 [Dh/2].
at::Tensor rope_inv_freq(int64_t head_dim, double theta, at::Device device);
// GemmaRotaryEmbedding.forward: cos, sin [B, T, Dh] in `dtype` for position_ids [B, T].
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& position_ids,
                                               at::ScalarType dtype);
// apply_rotary_pos_emb for one tensor x [B, heads, T, Dh]: x * cos + rotate_half(x) * sin.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
// repeat_kv: [B, Hkv, S, Dh] -> [B, Hkv * n_rep, S, Dh]; query head h uses kv head h / n_rep.
at::Tensor repeat_kv(const at::Tensor& x, int64_t n_rep);
// masking_utils.eager_mask: additive [B, 1, T, S] mask in `dtype`, 0 where key slot j is visible to query
// i (j <= past + i and attention_mask[b, j] != 0), finfo(dtype).min elsewhere (finite, so rows with no
// visible key give a uniform softmax instead of NaN).
at::Tensor additive_causal_mask(int64_t batch, int64_t q_len, int64_t past, const at::Tensor& attention_mask,
                                at::ScalarType dtype, at::Device device);
// HF generate()'s position ids for a 2-D mask: cumsum(mask) - 1, padding slots set to 0 (5.17).
at::Tensor positions_from_mask(const at::Tensor& attention_mask);

}  // namespace tg::ref
