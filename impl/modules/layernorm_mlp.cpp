#include "impl/modules/layernorm_mlp.h"

#include "common/nvtx.h"
#include "kernels/norm/norm.h"
#include "kernels/optim/optim.h"

namespace tg::impl {

LayerNormMLP::LayerNormMLP(const Tensor* norm_weight, const LinearWeight* fc1, const LinearWeight* fc2,
                           GemmSite fc1_site, GemmSite fc2_site, float eps)
    : norm_weight_(norm_weight),
      fc1_(fc1),
      fc2_(fc2),
      fc1_site_(std::move(fc1_site)),
      fc2_site_(std::move(fc2_site)),
      eps_(eps) {}

LayerNormMLP::Activations LayerNormMLP::allocate(Buffers& b, int64_t rows, const Precision& p, bool training) const {
  Activations a;
  a.rstd = b.alloc(DType::F32, {rows});
  a.ln_out = p.alloc_input(b, fc1_site_, rows, fc1_->in_features, /*producer_fused=*/true, training);
  a.fc1_out = b.alloc(DType::BF16, {rows, fc1_->out_features});
  a.act_out = p.alloc_input(b, fc2_site_, rows, fc2_->in_features, /*producer_fused=*/true, training);
  return a;
}

void LayerNormMLP::forward(const TensorView& x, const Activations& a, const TensorView& out, const Precision& p,
                           Stream stream) const {
  TG_NVTX_RANGE(fc1_site_.name.c_str());
  p.rmsnorm(x, norm_weight_->view(), eps_, a.rstd, a.ln_out, fc1_site_, stream);
  p.linear(a.ln_out, *fc1_, a.fc1_out, 0.0f, stream);
  p.geglu(a.fc1_out, a.act_out, fc2_site_, stream);
  p.linear(a.act_out, *fc2_, out, 1.0f, stream);
}

LayerNormMLP::BackwardBuffers LayerNormMLP::allocate_backward(Buffers& b, int64_t rows, const Precision& p) const {
  const int64_t d = fc1_->in_features, f = fc2_->in_features;
  BackwardBuffers bw;
  bw.dy_fc2 = p.alloc_grad(b, fc2_site_, rows, d, /*producer_fused=*/false, /*own_hp=*/false);
  bw.d_act = b.alloc(DType::BF16, {rows, f});
  bw.d_fc1 = p.alloc_grad(b, fc1_site_, rows, 2 * f, /*producer_fused=*/true);
  bw.d_ln = b.alloc(DType::BF16, {rows, d});
  bw.dw = b.alloc(DType::F32, {d});
  bw.workspace = b.alloc(DType::F32, {kernels::rmsnorm_backward_workspace_rows(rows), d});
  return bw;
}

void LayerNormMLP::backward(const TensorView& x, const Activations& a, const TensorView& dout, const TensorView& dx,
                            const BackwardBuffers& bw, const Grads& g, const Precision& p, Stream stream) const {
  TG_NVTX_RANGE((fc1_site_.name + ".backward").c_str());
  const GradInput dy2 = bw.dy_fc2.with_hp(dout);
  p.quantize_grad(dy2, fc2_site_, stream);
  p.dgrad(dy2, *fc2_, bw.d_act, stream);
  p.wgrad(dy2, a.act_out, g.fc2, stream);
  p.geglu_backward(bw.d_act, a.fc1_out, bw.d_fc1, fc1_site_, stream);
  p.dgrad(bw.d_fc1, *fc1_, bw.d_ln, stream);
  p.wgrad(bw.d_fc1, a.ln_out, g.fc1, stream);
  kernels::rmsnorm_backward(bw.d_ln, x, norm_weight_->view(), a.rstd, dx, bw.dw, bw.workspace, dout, stream);
  kernels::accumulate(g.norm, bw.dw, stream);
}

}  // namespace tg::impl
