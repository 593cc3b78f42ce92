#include "impl/modules/transformer_layer.h"

#include <string>

#include "common/nvtx.h"

namespace tg::impl {

TransformerLayer::TransformerLayer(const GemmaConfig& cfg, const LayerWeights& w, int64_t index, Precision& precision,
                                   const Tensor* inv_freq, kernels::AttentionBackend backend,
                                   const Tensor* rope_table)
    : index_(index) {
  const std::string p = "layers." + std::to_string(index) + ".";
  const float eps = static_cast<float>(cfg.rms_norm_eps);
  qkv_ = LayerNormLinear(&w.input_norm, &w.qkv, precision.add_gemm(p + "qkv", true), eps);
  attention_ = DotProductAttention(cfg, backend, inv_freq, rope_table);
  o_ = &w.o;
  o_site_ = precision.add_gemm(p + "o", true);
  GemmSite fc1 = precision.add_gemm(p + "fc1", true);
  GemmSite fc2 = precision.add_gemm(p + "fc2", true);
  mlp_ = LayerNormMLP(&w.post_attention_norm, &w.fc1, &w.fc2, std::move(fc1), std::move(fc2), eps);
}

TransformerLayer::Activations TransformerLayer::allocate(Buffers& b, const BatchView& batch, const Precision& p,
                                                         bool training) const {
  const int64_t rows = batch.rows;
  Activations a;
  a.qkv = qkv_.allocate(b, rows, p, training);
  a.qkv_out = b.alloc(DType::BF16, {rows, qkv_.weight().out_features});
  a.attn = attention_.allocate(b, batch.tokens, training);
  // The attention writes BF16 (attn_out.hp); FP8 recipes then cast it (Precision::quantize).
  a.attn_out = p.alloc_input(b, o_site_, rows, o_->in_features, /*producer_fused=*/false, training);
  if (training) a.h_mid = b.alloc(DType::BF16, {rows, o_->out_features});
  a.mlp = mlp_.allocate(b, rows, p, training);
  if (training) a.h_out = b.alloc(DType::BF16, {rows, o_->out_features});
  return a;
}

TensorView TransformerLayer::forward(const TensorView& h, const BatchView& batch, const Activations& a,
                                     const Precision& p, Stream stream) const {
  const std::string name = "layer " + std::to_string(index_);
  TG_NVTX_RANGE(name.c_str());
  qkv_.forward(h, a.qkv, a.qkv_out, 0.0f, p, stream);
  attention_.forward(a.qkv_out, batch, a.attn, a.attn_out.hp, stream);
  p.quantize(a.attn_out, o_site_, stream);

  const TensorView h_mid = a.h_mid.empty() ? h : a.h_mid;
  if (h_mid.data != h.data) copy_async(h_mid, h, stream);
  p.linear(a.attn_out, *o_, h_mid, 1.0f, stream);

  const TensorView h_out = a.h_out.empty() ? h_mid : a.h_out;
  if (h_out.data != h_mid.data) copy_async(h_out, h_mid, stream);
  mlp_.forward(h_mid, a.mlp, h_out, p, stream);
  return h_out;
}

TransformerLayer::BackwardBuffers TransformerLayer::allocate_backward(Buffers& b, const BatchView& batch,
                                                                       const Precision& p) const {
  const int64_t rows = batch.rows, d = o_->out_features;
  BackwardBuffers bw;
  bw.qkv = qkv_.allocate_backward(b, rows);
  bw.d_qkv = p.alloc_grad(b, qkv_.site(), rows, qkv_.weight().out_features, /*producer_fused=*/false);
  bw.d_attn = b.alloc(DType::BF16, {rows, o_->in_features});
  bw.dy_o = p.alloc_grad(b, o_site_, rows, d, /*producer_fused=*/false, /*own_hp=*/false);
  bw.dh_mid = b.alloc(DType::BF16, {rows, d});
  bw.mlp = mlp_.allocate_backward(b, rows, p);
  return bw;
}

void TransformerLayer::backward(const TensorView& h, const BatchView& batch, const Activations& a,
                                const TensorView& dh_out, const TensorView& dh_in, const BackwardBuffers& bw,
                                const LayerGrads& g, const Precision& p, Stream stream) const {
  const std::string name = "layer " + std::to_string(index_) + " backward";
  TG_NVTX_RANGE(name.c_str());
  TG_CHECK(!a.h_mid.empty(), "TransformerLayer::backward: no training activations (forward with training = true)");
  TG_CHECK(dh_in.data != dh_out.data, "TransformerLayer::backward: dh_in must not alias dh_out");
  mlp_.backward(a.h_mid, a.mlp, dh_out, bw.dh_mid, bw.mlp, {g.post_attention_norm, g.fc1, g.fc2}, p, stream);

  const GradInput dy_o = bw.dy_o.with_hp(bw.dh_mid);
  p.quantize_grad(dy_o, o_site_, stream);
  p.dgrad(dy_o, *o_, bw.d_attn, stream);
  p.wgrad(dy_o, a.attn_out, g.o, stream);

  attention_.backward(a.qkv_out, a.attn_out.hp, bw.d_attn, batch, a.attn, bw.d_qkv.hp, stream);
  qkv_.backward(h, a.qkv, bw.d_qkv, dh_in, bw.dh_mid, bw.qkv, {g.input_norm, g.qkv}, p, stream);
}

}  // namespace tg::impl
