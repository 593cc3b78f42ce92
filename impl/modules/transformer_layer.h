// TransformerLayer: one Gemma 1 decoder layer (gemma.md 2.3) from the fused modules.
//
//   qkv   = LayerNormLinear(h; input_norm, W_qkv)           one norm(+cast) kernel, one GEMM
//   a     = DotProductAttention(qkv)                        RoPE in place, varlen causal attention
//   h_mid = h + a W_o^T                                     the residual add fused into the GEMM (beta = 1)
//   h_out = h_mid + LayerNormMLP(h_mid; post_attention_norm, W_fc1, W_fc2)   (beta = 1 again)
//
// Residual rounding: HF rounds a W_o^T to BF16 and then the sum; the fused GEMM rounds acc + h once (more
// accurate, not bit-identical; the parity tolerances account for it).
//
// Inference updates h in place (h_mid = h_out = h). Training keeps each layer's input, h_mid and output as
// separate buffers (the norms' backward needs their inputs), at the cost of one copy before each
// accumulating GEMM.
//
// Backward (training), from dh_out:
//   dh_mid = LayerNormMLP'(dh_out) + dh_out                      (impl/modules/layernorm_mlp.h)
//   d_a    = dh_mid W_o,  dW_o += dh_mid^T a                     the o-projection's dgrad / wgrad
//   d_qkv  = RoPE'(attention'(d_a))                              (impl/modules/attention.h)
//   dh_in  = LayerNormLinear'(d_qkv) + dh_mid                    (impl/modules/layernorm_linear.h)
// Every backward buffer is shared by all layers (the backward runs one layer at a time).
#pragma once

#include <cstdint>

#include "common/gemma_config.h"
#include "common/tensor.h"
#include "impl/buffers.h"
#include "impl/grads.h"
#include "impl/modules/attention.h"
#include "impl/modules/common.h"
#include "impl/modules/layernorm_linear.h"
#include "impl/modules/layernorm_mlp.h"
#include "impl/precision.h"
#include "impl/weights.h"

namespace tg::impl {

class TransformerLayer {
 public:
  TransformerLayer() = default;
  // Registers the layer's four GEMMs ("layers.<index>.qkv", ".o", ".fc1", ".fc2") with `precision`.
  // rope_table: inv_freq's precomputed cos/sin (kernels::rope_cos_sin_table) or null; see DotProductAttention.
  TransformerLayer(const GemmaConfig& cfg, const LayerWeights& w, int64_t index, Precision& precision,
                   const Tensor* inv_freq, kernels::AttentionBackend backend, const Tensor* rope_table = nullptr);

  struct Activations {
    LayerNormLinear::Activations qkv;
    TensorView qkv_out;  // BF16 [rows, (H + 2 Hkv) Dh]: post-RoPE q, k and v
    DotProductAttention::Activations attn;
    GemmInput attn_out;  // [rows, H Dh]: attention output = the o-projection's input
    TensorView h_mid;    // training: BF16 [rows, D]; inference: empty (h in place)
    LayerNormMLP::Activations mlp;
    TensorView h_out;  // training: BF16 [rows, D]; inference: empty (h in place)
  };
  Activations allocate(Buffers& b, const BatchView& batch, const Precision& p, bool training) const;

  // h BF16 [rows, D]: the residual stream entering the layer. Returns the view holding the layer's output
  // (h itself in inference).
  TensorView forward(const TensorView& h, const BatchView& batch, const Activations& a, const Precision& p,
                     Stream stream) const;

  struct BackwardBuffers {
    LayerNormLinear::BackwardBuffers qkv;
    GradInput d_qkv;    // [rows, (H + 2 Hkv) Dh]: the QKV projection's output gradient
    TensorView d_attn;  // BF16 [rows, H Dh]: the attention output's gradient (o dgrad)
    GradInput dy_o;     // FP8 copies of dh_mid (hp bound at call time)
    TensorView dh_mid;  // BF16 [rows, D]
    LayerNormMLP::BackwardBuffers mlp;
  };
  BackwardBuffers allocate_backward(Buffers& b, const BatchView& batch, const Precision& p) const;
  // h: the layer's input in the forward; a: its training activations; dh_out BF16 [rows, D]: the gradient of
  // its output. Writes dh_in BF16 [rows, D] (must not alias dh_out) and adds the weight gradients to g.
  void backward(const TensorView& h, const BatchView& batch, const Activations& a, const TensorView& dh_out,
                const TensorView& dh_in, const BackwardBuffers& bw, const LayerGrads& g, const Precision& p,
                Stream stream) const;
  void set_deterministic(bool on) { attention_.set_deterministic(on); }

  int64_t index() const { return index_; }

 private:
  int64_t index_ = 0;
  LayerNormLinear qkv_;
  DotProductAttention attention_;
  const LinearWeight* o_ = nullptr;
  GemmSite o_site_;
  LayerNormMLP mlp_;
};

}  // namespace tg::impl
