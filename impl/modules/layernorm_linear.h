// LayerNormLinear (TE's module, Gemma flavour): out = RMSNorm(x; 1 + w) W^T (+ out), the norm fused with the
// FP8 cast of its output where the recipe allows (impl/precision.h), then ONE GEMM. Gemma uses it for the
// fused QKV projection (W = [q; k; v], impl/weights.h) and for the final norm + tied lm_head.
//
// Backward will need: x (the caller keeps it: the residual stream), rstd, and the GEMM input's column-wise
// FP8 copy (allocated when training) for wgrad; the weight's column-wise copy for dgrad.
#pragma once

#include <cstdint>

#include "common/tensor.h"
#include "impl/buffers.h"
#include "impl/precision.h"
#include "impl/weights.h"

namespace tg::impl {

class LayerNormLinear {
 public:
  LayerNormLinear() = default;
  LayerNormLinear(const Tensor* norm_weight, const LinearWeight* weight, GemmSite site, float eps);

  struct Activations {
    TensorView rstd;   // F32 [rows]
    GemmInput ln_out;  // RMSNorm(x) [rows, K], in the GEMM's input format
  };
  Activations allocate(Buffers& b, int64_t rows, const Precision& p, bool training) const;

  // out [rows, N] = RMSNorm(x) W^T + beta * out. x BF16 [rows, K].
  void forward(const TensorView& x, const Activations& a, const TensorView& out, float beta, const Precision& p,
               Stream stream) const;

  const GemmSite& site() const { return site_; }
  const LinearWeight& weight() const { return *weight_; }

 private:
  const Tensor* norm_weight_ = nullptr;   // BF16 [K]
  const LinearWeight* weight_ = nullptr;  // [N, K]
  GemmSite site_;
  float eps_ = 1e-6f;
};

}  // namespace tg::impl
