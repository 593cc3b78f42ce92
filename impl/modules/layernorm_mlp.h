// LayerNormMLP (TE's module, Gemma flavour), with the residual add fused into the last GEMM:
//   m = RMSNorm(x; 1 + w)                         fused with the FP8 cast of m (recipe permitting)
//   f = m W1^T, W1 = [gate; up] [2F, D]           ONE GEMM for both halves
//   g = gelu_tanh(f[:, :F]) * f[:, F:]            fused with the FP8 cast of g (recipe permitting)
//   out += g W2^T                                 W2 [D, F]; beta = 1 accumulates into the residual stream
//
// Backward (training), from dout (the gradient of out, which the residual add passes through unchanged):
//   d_g   = dout W2,           dW2 += dout^T g          (FP8: dout's E5M2 copies; g's column-wise copy)
//   d_f   = GeGLU'(d_g; f)                              (recomputes the GELU from fc1_out; delayed scaling
//                                                        fuses the FP8 cast+transpose of d_f)
//   d_m   = d_f W1,            dW1 += d_f^T m
//   dx    = RMSNorm'(d_m; x) + dout,  dw_norm += ...    (the residual branch joins in the norm kernel)
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

  struct Grads {
    TensorView norm;  // F32 [D]
    TensorView fc1;   // F32 [2F, D]
    TensorView fc2;   // F32 [D, F]
  };
  struct BackwardBuffers {
    GradInput dy_fc2;      // FP8 copies of dout (hp bound at call time)
    TensorView d_act;      // BF16 [rows, F]: d_g
    GradInput d_fc1;       // [rows, 2F]: d_f
    TensorView d_ln;       // BF16 [rows, D]: d_m
    TensorView dw;         // F32 [D]
    TensorView workspace;  // F32 norm backward workspace
  };
  BackwardBuffers allocate_backward(Buffers& b, int64_t rows, const Precision& p) const;
  // x: the forward's input; dout BF16 [rows, D]: out's gradient. Writes dx BF16 [rows, D] (must not alias
  // dout) = the gradient reaching x through both the MLP and the residual; adds the weight gradients to g.
  void backward(const TensorView& x, const Activations& a, const TensorView& dout, const TensorView& dx,
                const BackwardBuffers& bw, const Grads& g, const Precision& p, Stream stream) const;

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
