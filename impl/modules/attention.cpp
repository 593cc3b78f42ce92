#include "impl/modules/attention.h"

#include "common/check.h"
#include "common/nvtx.h"
#include "kernels/rope/rope.h"

namespace tg::impl {

DotProductAttention::DotProductAttention(const GemmaConfig& cfg, kernels::AttentionBackend backend,
                                         const Tensor* inv_freq, const Tensor* rope_table)
    : heads_(cfg.num_attention_heads),
      kv_heads_(cfg.num_key_value_heads),
      head_dim_(cfg.head_dim),
      backend_(backend),
      inv_freq_(inv_freq),
      rope_table_(rope_table) {}

DotProductAttention::Activations DotProductAttention::allocate(Buffers& b, int64_t tokens, bool training) const {
  Activations a;
  if (training) a.lse = b.alloc(DType::F32, {tokens, heads_});
  return a;
}

TensorView DotProductAttention::head_view(const TensorView& qkv, int64_t tokens, int64_t col_begin,
                                          int64_t heads) const {
  const int64_t width = (heads_ + 2 * kv_heads_) * head_dim_;
  TG_CHECK(qkv.ndim() == 2 && qkv.shape[1] == width && qkv.strides[1] == 1 && qkv.shape[0] >= tokens,
           "DotProductAttention: qkv must be [rows >= ", tokens, ", ", width, "] with unit column stride, got ",
           qkv.describe());
  const std::size_t offset = static_cast<std::size_t>(col_begin) * dtype_size(qkv.dtype);
  return TensorView(static_cast<char*>(qkv.data) + offset, qkv.dtype, Shape{tokens, heads, head_dim_},
                    Shape{qkv.strides[0], head_dim_, 1}, qkv.device);
}

TensorView DotProductAttention::q_view(const TensorView& qkv, int64_t tokens) const {
  return head_view(qkv, tokens, 0, heads_);
}
TensorView DotProductAttention::k_view(const TensorView& qkv, int64_t tokens) const {
  return head_view(qkv, tokens, heads_ * head_dim_, kv_heads_);
}
TensorView DotProductAttention::v_view(const TensorView& qkv, int64_t tokens) const {
  return head_view(qkv, tokens, (heads_ + kv_heads_) * head_dim_, kv_heads_);
}

void DotProductAttention::forward(const TensorView& qkv, const BatchView& batch, const Activations& a,
                                  const TensorView& out, Stream stream) const {
  TG_NVTX_FN();
  const int64_t t = batch.tokens;
  const TensorView q = q_view(qkv, t), k = k_view(qkv, t), v = v_view(qkv, t);
  kernels::rope_forward(q, k, batch.positions, inv_freq_->view(), stream, rope_table());

  TG_CHECK(out.ndim() == 2 && out.shape[0] == batch.rows && out.shape[1] == heads_ * head_dim_ && out.is_contiguous(),
           "DotProductAttention: out must be a contiguous [", batch.rows, ", ", heads_ * head_dim_, "], got ",
           out.describe());
  kernels::AttentionOptions opt;
  opt.causal = true;
  opt.backend = backend_;
  const TensorView o = out.slice_rows(0, t).reshape({t, heads_, head_dim_});
  kernels::attention_fwd(q, k, v, batch.cu_seqlens, batch.max_seqlen, opt, o, a.lse, stream);
  if (batch.rows > t) zero_async(out.slice_rows(t, batch.rows), stream);
}

void DotProductAttention::backward(const TensorView& qkv, const TensorView& out, const TensorView& dout,
                                   const BatchView& batch, const Activations& a, const TensorView& dqkv,
                                   Stream stream) const {
  TG_NVTX_FN();
  const int64_t t = batch.tokens, width = heads_ * head_dim_;
  TG_CHECK(!a.lse.empty(), "DotProductAttention::backward: no saved lse (run the forward with training = true)");
  for (const TensorView* v : {&out, &dout}) {
    TG_CHECK(v->ndim() == 2 && v->shape[0] == batch.rows && v->shape[1] == width && v->is_contiguous(),
             "DotProductAttention::backward: out and dout must be contiguous [", batch.rows, ", ", width, "], got ",
             v->describe());
  }
  kernels::AttentionOptions opt;
  opt.causal = true;
  opt.backend = backend_;
  opt.deterministic = deterministic_;
  const TensorView o = out.slice_rows(0, t).reshape({t, heads_, head_dim_});
  const TensorView d_o = dout.slice_rows(0, t).reshape({t, heads_, head_dim_});
  const TensorView dq = q_view(dqkv, t), dk = k_view(dqkv, t), dv = v_view(dqkv, t);
  kernels::attention_bwd(q_view(qkv, t), k_view(qkv, t), v_view(qkv, t), o, a.lse, d_o, batch.cu_seqlens,
                         batch.max_seqlen, opt, dq, dk, dv, stream);
  kernels::rope_backward(dq, dk, batch.positions, inv_freq_->view(), stream, rope_table());
  if (batch.rows > t) zero_async(dqkv.slice_rows(t, batch.rows), stream);
}

}  // namespace tg::impl
