// LayerNormLinear (TE's module, Gemma flavour): out = RMSNorm(x; 1 + w) W^T (+ out), the norm fused with the
// FP8 cast of its output where the recipe allows (impl/precision.h), then ONE GEMM. Gemma uses it for the
// fused QKV projection (W = [q; k; v], impl/weights.h) and for the final norm + tied lm_head.
//
// Backward (training): from dy, the GEMM output's gradient,
//   d_ln = dy W                              dgrad (FP8: dy row-wise x W column-wise)
//   dW  += dy^T ln_out                       wgrad (FP8: dy column-wise x ln_out's column-wise copy, made by
//                                            the forward's cast)
//   dx   = RMSNorm'(d_ln; x, rstd) (+ dresidual),  dw_norm += sum_t dy_t * n_t
// It reads x (the caller keeps it: the residual stream), rstd and ln_out from the forward.
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

  // The norm alone (ln_out = RMSNorm(x) in the GEMM's input format): the chunked training lm_head runs its GEMMs
  // itself (impl/model.cpp).
  void norm_forward(const TensorView& x, const Activations& a, const Precision& p, Stream stream) const;

  struct Grads {
    TensorView norm;    // F32 [K] (accumulated into)
    TensorView weight;  // F32 [N, K] (accumulated into)
  };
  struct BackwardBuffers {
    TensorView d_ln;       // BF16 [rows, K]: the GEMM input's gradient
    TensorView dw;         // F32 [K]: this pass's norm-weight gradient (then added to Grads::norm)
    TensorView workspace;  // F32 [rmsnorm_backward_workspace_rows(rows), K]
  };
  BackwardBuffers allocate_backward(Buffers& b, int64_t rows) const;
  // dy: the output's gradient (hp written by the caller; the FP8 copies are made here). Writes dx BF16
  // [rows, K] (+ dresidual when given: the residual branch's gradient) and adds the weight gradients to g.
  void backward(const TensorView& x, const Activations& a, const GradInput& dy, const TensorView& dx,
                const TensorView& dresidual, const BackwardBuffers& bw, const Grads& g, const Precision& p,
                Stream stream) const;
  // The norm's part alone (the chunked lm_head computes d_ln itself): dx = RMSNorm'(d_ln) (+ dresidual),
  // g_norm += this pass's dw.
  void norm_backward(const TensorView& x, const Activations& a, const TensorView& d_ln, const TensorView& dx,
                     const TensorView& dresidual, const BackwardBuffers& bw, const TensorView& g_norm,
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
