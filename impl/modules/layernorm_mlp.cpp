#include "impl/modules/layernorm_mlp.h"

#include "common/nvtx.h"

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

}  // namespace tg::impl
