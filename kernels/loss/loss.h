// Cross-entropy of the language-model head fused with its gradient: one kernel reads each row of logits and
// writes the row's loss and (optionally) the row's gradient, with no FP32 copy of the logits. It is HF's
// ForCausalLMLoss on targets that are already shifted (target t is the token after position t), with
// ignore_index -100 and the mean taken as sum / N (N = the caller's count of non-ignored targets, HF's
// num_items_in_batch, so that gradient accumulation over micro-batches equals one big batch).
//
// Per row t of logits X [T, V] with target y_t (I32 [T]):
//   y_t == -100 (ignored):  row_loss[t] = 0,  dlogits[t, :] = 0
//   otherwise (0 <= y_t < V):
//     m     = max_j X[t, j]
//     log_s = log(sum_j exp(X[t, j] - m))            (numerically stable: every exponent <= 0)
//     row_loss[t]   = (m - X[t, y_t]) + log_s        (F32; lse = m + log_s is never formed, m may dwarf log_s)
//     dlogits[t, j] = round_D((exp((X[t, j] - m) - log_s) - [j == y_t]) * scale)      D = dlogits' dtype
//   loss[0] = fl32(double(loss[0]) + double(scale) * R),  R = sum_t row_loss[t] in the FP64 ORDER below
// This is autograd's gradient of HF's BF16 path: logits.float() -> cross_entropy(sum) / N, whose backward
// returns (softmax - onehot) * (1 / N) in FP32 and rounds it to the logits' dtype once.
//
// ORDER of R (identical in the CPU twin and the CUDA kernel, so the reduction itself is deterministic):
//   1024 lanes; lane i sums row_loss[i], row_loss[i + 1024], ... in increasing t, in FP64 from 0.0; then for
//   o = 512, 256, ..., 1 every lane i < o takes lane_i + lane_(i + o); R = lane 0.
//
// Precision: the CPU twin (the golden) evaluates the sum of exponentials, log_s and every exp in FP64 and
// rounds at the end (row_loss to F32, dlogits through F32 to D, as the GEMM twins do). The CUDA kernel works in FP32 (expf / logf, within 2 ulp;
// per-thread partial sums merged as an online softmax), so GPU results are compared with a tolerance
// (kernels/tests/test_train_kernels_gpu.cpp), not bit for bit.
//
// Memory: dlogits may be the logits view itself (in place: each element is read before it is overwritten,
// so the lm_head needs one [T, V] buffer in total) or empty (evaluation: loss only). Callers bound the
// buffer further by calling this per chunk of rows (impl/model.cpp does: the lm_head GEMM, this op and the
// two backward GEMMs per chunk).
//
// Shapes: logits [T, V] BF16 or F32, unit column stride, any row stride >= V; targets I32 [T] contiguous;
// dlogits [T, V] BF16 or F32 (unit column stride) or empty; row_loss F32 [T] contiguous (always written: it
// is also the reduction's input); loss F32 [1] or empty; all on one device. scale finite. T >= 1, V >= 1.
// Targets outside [0, V) other than -100: the CPU twin throws naming the row; the CUDA kernel never reads
// out of bounds and treats such a row as ignored (targets come from the host, where callers validate them
// before the upload: impl/model.cpp does).
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace tg::kernels {

inline constexpr int32_t kIgnoreIndex = -100;
inline constexpr int kLossReduceLanes = 1024;  // lanes of the FP64 ORDER above

void cross_entropy(const TensorView& logits, const TensorView& targets, float scale, const TensorView& dlogits,
                   const TensorView& row_loss, const TensorView& loss, Stream stream = {});

namespace cpu {
void cross_entropy(const TensorView& logits, const TensorView& targets, float scale, const TensorView& dlogits,
                   const TensorView& row_loss, const TensorView& loss);
}  // namespace cpu
namespace cuda {
void cross_entropy(const TensorView& logits, const TensorView& targets, float scale, const TensorView& dlogits,
                   const TensorView& row_loss, const TensorView& loss, Stream stream);
}  // namespace cuda

namespace loss_detail {
// Checks every argument for `device`; returns {T, V}.
struct Dims {
  int64_t rows, vocab;
};
Dims check_args(const TensorView& logits, const TensorView& targets, float scale, const TensorView& dlogits,
                const TensorView& row_loss, const TensorView& loss, Device device, const char* what);
}  // namespace loss_detail

}  // namespace tg::kernels
