#include "impl/modules/transformer_layer.h"

#include <string>

#include "common/nvtx.h"

namespace tg::impl {

TransformerLayer::TransformerLayer(const GemmaConfig& cfg, const LayerWeights& w, int64_t index, Precision& precision,
                                   const Tensor* inv_freq, kernels::AttentionBackend backend)
    : index_(index) {
  const std::string p = "layers." + std::to_string(index) + ".";
  const float eps = static_cast<float>(cfg.rms_norm_eps);
  qkv_ = LayerNormLinear(&w.input_norm, &w.qkv, precision.add_gemm(p + "qkv", true), eps);
  attention_ = DotProductAttention(cfg, backend, inv_freq);
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

}  // namespace tg::impl
