// Gemma's scaled token embedding (../shared/docs/gemma.md section 2.1), forward and backward.
//
// Forward:  out[t, :] = round_O(E[ids[t], :] * scale)     one FP32 multiply, one rounding to out's dtype O.
//   Gemma: scale = embedding_scale(D, A) = sqrt(D) rounded to the activation dtype FIRST (BF16: 45.25 for
//   D = 2048, 55.5 for D = 3072), as HF's normalizer tensor; for a BF16 table the FP32 product is exact, so
//   this is HF's BF16 product bit for bit. The scale is never applied to the tied lm_head.
// Backward: dE[ids[t], :] += dout[t, :] * scale, in FP32 into a caller-owned F32 [V, D] accumulation buffer
//   (the tied lm_head's weight gradient goes into the same buffer, before or after). Deterministic and
//   sort-free: every row v receives its tokens' contributions in increasing token order,
//     dE[v, j] = (((dE[v, j] + dout[t1, j]*scale) + dout[t2, j]*scale) + ...)   t1 < t2 < ... (ids[t] == v),
//   each product and sum one RN float op - exactly the CPU twin's sequential loop. The CUDA kernel gives
//   each distinct id to the thread block of its FIRST occurrence, which finds the later occurrences by
//   scanning the id list in order (ballots + a block prefix): O(T^2 / 128) id comparisons, no atomics on
//   floats, no sort. Rows of E that no token uses are not touched.
//
// Out-of-range ids (id < 0 or id >= V): never read out of bounds. CPU: tg::Error naming the first bad
//   token and its id, before anything is written. CUDA: the kernels record them in a status buffer
//   (I32 [2] on the device: [0] = how many tokens had a bad id, [1] = the smallest such token index) and
//   write zeros for those rows (forward) / skip them (backward). With `status` empty the launcher uses its
//   own buffer, waits for the stream and throws like the CPU; with a caller buffer it does not wait:
//   call embedding_check_status(status, ids, V) later (it waits and throws). The launcher resets the
//   caller's status at the start of every call.
//
// Shapes: ids [T] I32/I64 contiguous; table [V, D] BF16/F32 (unit column stride, any row stride);
// out [T, D] BF16/F32; dout [T, D] BF16/F32; dtable F32 [V, D] (unit column stride, any row stride).
#pragma once

#include "common/tensor.h"

namespace tg::kernels {

// sqrt(hidden) rounded to `act` (F32: just the FP32 sqrt).
float embedding_scale(int64_t hidden, DType act);

void embedding_forward(const TensorView& ids, const TensorView& table, float scale, const TensorView& out,
                       const TensorView& status = {}, Stream stream = {});
void embedding_backward(const TensorView& ids, const TensorView& dout, float scale, const TensorView& dtable,
                        const TensorView& status = {}, Stream stream = {});
// Waits for `stream` and throws tg::Error if `status` records out-of-range ids (naming the first token,
// its id read back from `ids`, and the vocabulary size). Host status views are checked directly.
void embedding_check_status(const TensorView& status, const TensorView& ids, int64_t vocab, Stream stream = {});

namespace cpu {
void embedding_forward(const TensorView& ids, const TensorView& table, float scale, const TensorView& out,
                       const TensorView& status);
void embedding_backward(const TensorView& ids, const TensorView& dout, float scale, const TensorView& dtable,
                        const TensorView& status);
}  // namespace cpu
namespace cuda {
void embedding_forward(const TensorView& ids, const TensorView& table, float scale, const TensorView& out,
                       const TensorView& status, Stream stream);
void embedding_backward(const TensorView& ids, const TensorView& dout, float scale, const TensorView& dtable,
                        const TensorView& status, Stream stream);
}  // namespace cuda

namespace embedding_detail {
// Argument checks shared by the CPU twin and the CUDA launchers. `rows` is the table / dtable view.
void check_args(const TensorView& ids, const TensorView& rows, const TensorView& acts, float scale,
                const TensorView& status, Device device, bool backward, const char* what);
// The message for a bad id (shared so that CPU and CUDA errors read the same).
[[noreturn]] void fail_bad_id(int64_t count, int64_t token, int64_t id, int64_t vocab, const char* what);
}  // namespace embedding_detail

}  // namespace tg::kernels
