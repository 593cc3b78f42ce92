// Gemma RMSNorm: forward (BF16/F32 or fused FP8 output, optional fused residual add) and backward.
//
// Forward, per token row t of x [T, D] (docs: ../shared/docs/gemma.md section 2.2):
//   h      = x[t]                                   or, with the fused residual add,
//   h      = round_A(residual[t] + x[t])            written back to residual[t] (HF's BF16 residual add)
//   ss     = sum_j h_j^2                            FP32, in the LANE ORDER below
//   rstd   = 1 / sqrt(ss * (1/D) + eps)             each step one RN float op: mean as sum * (1/D), as
//                                                   PyTorch's CUDA mean; 1/sqrt is two correctly rounded
//                                                   ops (torch.rsqrt on CUDA is rsqrtf, within 2 ulp)
//   y_j    = (h_j * rstd) * (1 + w_j)               FP32, two RN products (HF: x*rsqrt(..), then *(1+w)),
//                                                   then ONE rounding to the output dtype A (= x's dtype)
//   rstd[t] is stored (F32) for the backward.
// FP8 variant (per-tensor, kernels/elementwise/fp8_out.h): V = round_A(y) - the value the BF16 kernel
//   stores - then fp8(V * scale); amax over |V|. So fused == rmsnorm_forward + a separate cast, bit for bit.
//
// Backward (math: n = h*rstd, g = 1 + w, dn = dy*g):
//   c    = (sum_j dn_j * n_j) * (1/D)               FP32, the same LANE ORDER
//   dx_j = rstd * (dn_j - n_j * c)                  RN float ops in this order, rounded to dx's dtype;
//                                                   with dresidual: dx_j = round(round(dx_j) + dres_j)
//                                                   (autograd's BF16 sum of the two branches)
//   dw_j = sum_t dy_tj * n_tj                       FP32, deterministic, in this order:
//          group partial ws[g, j] = P0 + P1 for the 16 rows of group g, where P_s = 0 fma-accumulated over
//          the rows t = 16g + s, 16g + s + 2, ... (< 16g + 16, < T) in increasing t (two interleaved
//          chains: two warps per group on the GPU); then dw_j = sum over 32 slices s (in increasing s) of
//          (0 + ws[s, j] + ws[s + 32, j] + ... in increasing g). No float atomics.
// The autograd graph of HF's RMSNorm rounds differently inside (it differentiates through rsqrt and the
// mean); the formulas agree mathematically and to FP32 accuracy, not bit for bit.
//
// LANE ORDER (the fixed reduction order that makes the CUDA kernel bit-exact to the CPU twin): a row is
// cut into chunks of 8 elements (the last may be short); chunk c belongs to lane c mod 32; each lane
// accumulates acc = fma(a_j, b_j, acc) over its chunks in increasing c, elements in increasing j
// (starting from +0); then the 32 partials are combined by a butterfly: for o = 16, 8, 4, 2, 1 every
// lane l takes acc_l + acc_(l xor o); the result is lane 0's value. (The CUDA kernel is one warp per row.)
//
// Shapes and dtypes: x, residual, y, dy, dx, dresidual are [T, D] views with unit column stride and any
// row stride >= D (BF16 or F32, all the same dtype A); w [D] BF16 or F32 (FP32 master weights are fine);
// rstd F32 [T]; dw [D] F32 or BF16; workspace F32 [rmsnorm_backward_workspace_rows(T), D] (rows
// 0 .. ceil(T/16)-1 hold the group partials, the rest is scratch); eps > 0.
// The CUDA kernels vectorise when D and every row stride are multiples of 8 and the pointers are 16-byte
// aligned, and fall back to element access otherwise (same results). They stage g = 1 + w in shared
// memory (4 * D bytes per block); the transposed FP8 copy needs another 32 * D bytes (so D <= 6300 or
// so on the H200), the vectorised BF16 backward up to 32 * D (D <= 3072 takes that path). The vectorised
// BF16 forward also stages its rows (cp.async ring of 1-2 rows per warp, 16-64 * D bytes) when that fits,
// and falls back to direct loads (same results) when it does not. A D too large for the device is a
// tg::Error.
#pragma once

#include <cstdint>

#include "common/fp8_tensor.h"
#include "common/tensor.h"

namespace tg::kernels {

inline constexpr float kGemmaRmsNormEps = 1e-6f;

namespace norm_detail {
inline constexpr int kLanes = 32;         // lanes of the LANE ORDER
inline constexpr int kChunk = 8;          // elements per chunk of the LANE ORDER
inline constexpr int kBwdGroupRows = 16;  // rows per dw group partial (workspace row)
inline constexpr int kBwdChains = 2;      // interleaved accumulation chains per group
inline constexpr int kReduceSlices = 32;  // slices of the second dw pass
}  // namespace norm_detail

// dw groups for T tokens, and the rows of the backward workspace (F32 [rows, D]): one partial per group
// plus as many rows of scratch (the second chain of the large-D path; the register path leaves it alone).
constexpr int64_t rmsnorm_backward_groups(int64_t tokens) {
  return (tokens + norm_detail::kBwdGroupRows - 1) / norm_detail::kBwdGroupRows;
}
constexpr int64_t rmsnorm_backward_workspace_rows(int64_t tokens) { return 2 * rmsnorm_backward_groups(tokens); }

// y = RMSNorm(x) (or of residual + x, see above); optional amax F32 [1] max-reduced with max |y| (for
// current scaling: the separate amax pass can be skipped).
void rmsnorm_forward(const TensorView& x, const TensorView& w, float eps, const TensorView& y, const TensorView& rstd,
                     const TensorView& residual = {}, const TensorView& amax = {}, Stream stream = {});
// Fused RMSNorm -> per-tensor FP8 (row-wise and/or the transposed column-wise copy, scale_inv, amax).
void rmsnorm_forward_fp8(const TensorView& x, const TensorView& w, float eps, const Fp8View& out,
                         const TensorView& rstd, const TensorView& residual = {}, Stream stream = {});
// dx (and dw) from dy, the forward input h (x, or the updated residual when the add was fused), w, rstd.
void rmsnorm_backward(const TensorView& dy, const TensorView& x, const TensorView& w, const TensorView& rstd,
                      const TensorView& dx, const TensorView& dw, const TensorView& workspace,
                      const TensorView& dresidual = {}, Stream stream = {});

namespace cpu {
void rmsnorm_forward(const TensorView& x, const TensorView& w, float eps, const TensorView& y, const TensorView& rstd,
                     const TensorView& residual, const TensorView& amax);
void rmsnorm_forward_fp8(const TensorView& x, const TensorView& w, float eps, const Fp8View& out,
                         const TensorView& rstd, const TensorView& residual);
void rmsnorm_backward(const TensorView& dy, const TensorView& x, const TensorView& w, const TensorView& rstd,
                      const TensorView& dx, const TensorView& dw, const TensorView& workspace,
                      const TensorView& dresidual);
}  // namespace cpu
namespace cuda {
void rmsnorm_forward(const TensorView& x, const TensorView& w, float eps, const TensorView& y, const TensorView& rstd,
                     const TensorView& residual, const TensorView& amax, Stream stream);
void rmsnorm_forward_fp8(const TensorView& x, const TensorView& w, float eps, const Fp8View& out,
                         const TensorView& rstd, const TensorView& residual, Stream stream);
void rmsnorm_backward(const TensorView& dy, const TensorView& x, const TensorView& w, const TensorView& rstd,
                      const TensorView& dx, const TensorView& dw, const TensorView& workspace,
                      const TensorView& dresidual, Stream stream);

// Tuning knob for benchmarks and tests (not for model code): the schedule of the persistent cp.async forward on whole
// BF16 rows of 2048 or 3072 elements (the kFull kernel) without a residual or a transposed FP8 copy. The two
// schedules: "occupancy" (a 1-row ring per warp, 4 / 3 blocks per SM at D 2048 / 3072: 64 / 80 registers) and "ring"
// (a 2-row ring, 3 / 2 blocks per SM). 0: by width, the default (occupancy at D 2048, ring at D 3072: the faster one
// of each on the H200, norm.cu); 1: occupancy at both; 2: ring at both. Every setting gives the same bits; other
// shapes and variants ignore it. Process-wide.
namespace tuning {
void set_rmsnorm_schedule(int schedule);
int rmsnorm_schedule();
}  // namespace tuning
}  // namespace cuda

namespace norm_detail {
// Argument checks shared by the CPU twin and the CUDA launchers ("what" names the caller). Returns the
// activation dtype A.
DType check_forward_args(const TensorView& x, const TensorView& w, float eps, const TensorView& rstd,
                         const TensorView& residual, Device device, const char* what);
void check_backward_args(const TensorView& dy, const TensorView& x, const TensorView& w, const TensorView& rstd,
                         const TensorView& dx, const TensorView& dw, const TensorView& workspace,
                         const TensorView& dresidual, Device device, const char* what);
// A [T, D] activation view: 2-D, unit column stride, row stride >= D.
void check_rows(const TensorView& t, int64_t rows, int64_t cols, DType dtype, Device device, const char* what);
}  // namespace norm_detail

}  // namespace tg::kernels
