#include "impl/modules/layernorm_linear.h"

#include "common/nvtx.h"
#include "kernels/norm/norm.h"
#include "kernels/optim/optim.h"

namespace tg::impl {

LayerNormLinear::LayerNormLinear(const Tensor* norm_weight, const LinearWeight* weight, GemmSite site, float eps)
    : norm_weight_(norm_weight), weight_(weight), site_(std::move(site)), eps_(eps) {}

LayerNormLinear::Activations LayerNormLinear::allocate(Buffers& b, int64_t rows, const Precision& p,
                                                       bool training) const {
  Activations a;
  a.rstd = b.alloc(DType::F32, {rows});
  a.ln_out = p.alloc_input(b, site_, rows, weight_->in_features, /*producer_fused=*/true, training);
  return a;
}

void LayerNormLinear::forward(const TensorView& x, const Activations& a, const TensorView& out, float beta,
                              const Precision& p, Stream stream) const {
  TG_NVTX_RANGE(site_.name.c_str());
  p.rmsnorm(x, norm_weight_->view(), eps_, a.rstd, a.ln_out, site_, stream);
  p.linear(a.ln_out, *weight_, out, beta, stream);
}

void LayerNormLinear::norm_forward(const TensorView& x, const Activations& a, const Precision& p, Stream stream) const {
  p.rmsnorm(x, norm_weight_->view(), eps_, a.rstd, a.ln_out, site_, stream);
}

LayerNormLinear::BackwardBuffers LayerNormLinear::allocate_backward(Buffers& b, int64_t rows) const {
  const int64_t k = weight_->in_features;
  BackwardBuffers bw;
  bw.d_ln = b.alloc(DType::BF16, {rows, k});
  bw.dw = b.alloc(DType::F32, {k});
  bw.workspace = b.alloc(DType::F32, {kernels::rmsnorm_backward_workspace_rows(rows), k});
  return bw;
}

void LayerNormLinear::backward(const TensorView& x, const Activations& a, const GradInput& dy, const TensorView& dx,
                               const TensorView& dresidual, const BackwardBuffers& bw, const Grads& g,
                               const Precision& p, Stream stream) const {
  TG_NVTX_RANGE((site_.name + ".backward").c_str());
  p.quantize_grad(dy, site_, stream);
  p.dgrad(dy, *weight_, bw.d_ln, stream);
  p.wgrad(dy, a.ln_out, g.weight, stream);
  norm_backward(x, a, bw.d_ln, dx, dresidual, bw, g.norm, stream);
}

void LayerNormLinear::norm_backward(const TensorView& x, const Activations& a, const TensorView& d_ln,
                                    const TensorView& dx, const TensorView& dresidual, const BackwardBuffers& bw,
                                    const TensorView& g_norm, Stream stream) const {
  kernels::rmsnorm_backward(d_ln, x, norm_weight_->view(), a.rstd, dx, bw.dw, bw.workspace, dresidual, stream);
  kernels::accumulate(g_norm, bw.dw, stream);
}

}  // namespace tg::impl
