// DotProductAttention (TE's module, Gemma flavour) on the fused QKV projection's output:
//   split-half RoPE on q and k at each token's own position (kernels/rope, in place), then causal attention
//   per sequence of the packed varlen batch (kernels/attention: cu_seqlens, no compute on padding, GQA /
//   MQA / MHA with query head h reading kv head h / (H / Hkv), any head_dim incl. 256, scale Dh^-0.5).
//   On CUDA the backend is cuDNN's fused SDPA by default (or our flash kernel); on the CPU the twin.
//
// qkv [rows, (H + 2 Hkv) Dh] = [q | k | v] columns per token; q, k and v are strided views into it, so no
// copy separates them. RoPE rotates q and k in place: the saved qkv then holds exactly the post-RoPE q, k
// and v that the attention backward reads (and that a KV cache stores: keys are cached after RoPE).
#pragma once

#include <cstdint>

#include "common/gemma_config.h"
#include "common/tensor.h"
#include "impl/buffers.h"
#include "impl/modules/common.h"
#include "kernels/attention/attention.h"

namespace tg::impl {

class DotProductAttention {
 public:
  DotProductAttention() = default;
  // inv_freq: F32 [Dh / 2]; rope_table: null, or its cos/sin table (kernels::rope_cos_sin_table, built from the same
  // inv_freq) that the RoPE kernels read instead of evaluating sincos (the same bits; the model's CUDA path).
  DotProductAttention(const GemmaConfig& cfg, kernels::AttentionBackend backend, const Tensor* inv_freq,
                      const Tensor* rope_table = nullptr);

  struct Activations {
    TensorView lse;  // F32 [T, H] (training only: the backward recomputes P from it)
  };
  Activations allocate(Buffers& b, int64_t tokens, bool training) const;

  // RoPE on qkv's q and k (first T rows), attention into out [rows, H Dh] BF16; out's padding rows
  // [T, rows) are zeroed (they feed the o-projection's GEMM).
  void forward(const TensorView& qkv, const BatchView& batch, const Activations& a, const TensorView& out,
               Stream stream) const;

  // Backward (training). qkv: the forward's post-RoPE qkv; out: its output [rows, H Dh]; dout: out's gradient
  // [rows, H Dh] (BF16). Writes dqkv [rows, (H + 2 Hkv) Dh] BF16: attention_bwd's dq, dk, dv (the g query heads
  // of a kv head summed into it) as strided views, then RoPE's backward on dq and dk in place: the gradient of
  // the QKV projection's output. Padding rows [T, rows) are zeroed (they feed the qkv GEMMs' backward).
  void backward(const TensorView& qkv, const TensorView& out, const TensorView& dout, const BatchView& batch,
                const Activations& a, const TensorView& dqkv, Stream stream) const;
  // Bitwise-reproducible attention backward (cuDNN's deterministic algorithm; training with --deterministic).
  void set_deterministic(bool on) { deterministic_ = on; }

  // The q, k, v views of the first `tokens` rows of a fused QKV tensor: [T, H, Dh], [T, Hkv, Dh], [T, Hkv, Dh].
  TensorView q_view(const TensorView& qkv, int64_t tokens) const;
  TensorView k_view(const TensorView& qkv, int64_t tokens) const;
  TensorView v_view(const TensorView& qkv, int64_t tokens) const;

 private:
  TensorView head_view(const TensorView& qkv, int64_t tokens, int64_t col_begin, int64_t heads) const;
  TensorView rope_table() const { return rope_table_ != nullptr ? rope_table_->view() : TensorView{}; }

  int64_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0;
  kernels::AttentionBackend backend_ = kernels::AttentionBackend::kCudnn;
  const Tensor* inv_freq_ = nullptr;  // F32 [Dh / 2]
  const Tensor* rope_table_ = nullptr;  // F32 [P, 2, Dh / 2] or null
  bool deterministic_ = false;
};

}  // namespace tg::impl
