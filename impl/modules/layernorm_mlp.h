// LayerNormMLP (TE's module, Gemma flavour), with the residual add fused into the last GEMM:
//   m = RMSNorm(x; 1 + w)                         fused with the FP8 cast of m (recipe permitting)
//   f = m W1^T, W1 = [gate; up] [2F, D]           ONE GEMM for both halves
//   g = gelu_tanh(f[:, :F]) * f[:, F:]            fused with the FP8 cast of g (recipe permitting)
//   out += g W2^T                                 W2 [D, F]; beta = 1 accumulates into the residual stream
//
// Backward will need: x (the caller's residual), rstd, m's and g's column-wise FP8 copies (wgrad), and
// fc1_out (GeGLU's backward recomputes the GELU from it).
#pragma once

#include <cstdint>

#include "common/tensor.h"
#include "impl/buffers.h"
#include "impl/precision.h"
#include "impl/weights.h"

namespace tg::impl {

class LayerNormMLP {
 public:
  LayerNormMLP() = default;
  LayerNormMLP(const Tensor* norm_weight, const LinearWeight* fc1, const LinearWeight* fc2, GemmSite fc1_site,
               GemmSite fc2_site, float eps);

  struct Activations {
    TensorView rstd;     // F32 [rows]
    GemmInput ln_out;    // m [rows, D]
    TensorView fc1_out;  // f BF16 [rows, 2F]
    GemmInput act_out;   // g [rows, F]
  };
  Activations allocate(Buffers& b, int64_t rows, const Precision& p, bool training) const;

  // out [rows, D] += MLP(RMSNorm(x)). x BF16 [rows, D]; x may be out itself (it is read before out is written).
  void forward(const TensorView& x, const Activations& a, const TensorView& out, const Precision& p,
               Stream stream) const;

  const GemmSite& fc1_site() const { return fc1_site_; }
  const GemmSite& fc2_site() const { return fc2_site_; }

 private:
  const Tensor* norm_weight_ = nullptr;
  const LinearWeight* fc1_ = nullptr;
  const LinearWeight* fc2_ = nullptr;
  GemmSite fc1_site_, fc2_site_;
  float eps_ = 1e-6f;
};

}  // namespace tg::impl
