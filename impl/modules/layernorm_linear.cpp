#include "impl/modules/layernorm_linear.h"

#include "common/nvtx.h"

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

}  // namespace tg::impl
