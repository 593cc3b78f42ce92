// The optimizer's kernels: AdamW over all parameters at once (multi-tensor), with the global gradient norm,
// clipping by it and a device-side skip of non-finite steps; and the FP32 gradient accumulation helper.
// Nothing here synchronises with the host: the step is decided on the device, the trainer reads one small
// status buffer per step for its log.
//
// ---- adamw_step -------------------------------------------------------------------------------------------
// Parameters i = 0 .. N-1, each contiguous F32 [n_i] on one device: param p (the FP32 master), grad g, exp_avg m,
// exp_avg_sq v, an optional BF16 copy c (the model's compute weights, refreshed in the same pass) and a decay
// flag (weight decay applies; the trainer clears it for the norm weights, as HF's Trainer does).
//   1. sumsq = sum of g^2 over every element of every grad, in FP64, in the ORDER below (deterministic).
//   2. norm  = fl32(sqrt(sumsq));  finite = sumsq is finite (any NaN or inf in any gradient makes it not)
//      coef  = max_grad_norm > 0 ? min(fl32(max_grad_norm / (double(norm) + 1e-6)), 1) : 1
//              (torch.nn.utils.clip_grad_norm_: always applied, a no-op when the norm is small)
//      status F32 [4] = {norm, coef, skipped = finite ? 0 : 1, sumsq as F32}
//   3. finite only (otherwise NOTHING changes: p, m, v, c, state):
//      state F64 [3] = {step, beta1^step, beta2^step}: step += 1, the powers multiplied by beta1 / beta2 (FP64)
//      per element, each step one IEEE FP32 operation rounded to nearest, in this order (torch.optim.AdamW's
//      single-tensor path, line by line):
//        g  = g * coef
//        p  = p * fl32(1 - lr * wd)                  if decay (wd = weight_decay)
//        m  = m + fl32(1 - beta1) * (g - m)          torch lerp_ (weight < 0.5 form)
//        v  = v * fl32(beta2) + (g * g) * fl32(1 - beta2)      torch mul_ then addcmul_
//        d  = sqrt(v) / fl32(sqrt(1 - beta2^step)) + fl32(eps)
//        p  = p + (-fl32(lr / (1 - beta1^step))) * (m / d)     torch addcdiv_
//        c  = round_bf16(p)
//      (the bias-correction scalars are computed in FP64 from the state, then rounded once to F32; lr, betas,
//      eps, wd are FP64 host values: lr comes from the schedule each step, no device round trip.)
//   The grads are read, not changed (the clipped g stays in a register).
// ORDER of sumsq: every parameter is cut into chunks of kAdamWChunk elements (the last one shorter), chunks
// numbered c = 0, 1, ... over the parameters in table order, offsets increasing. Chunk partial P_c: 256 lanes,
// lane l sums g[j]^2 (each square exact in FP64) for j = l, l + 256, ... of the chunk in increasing j from 0.0,
// then for o = 128, 64, ..., 1 lane l < o takes lane_l + lane_(l + o); P_c = lane 0. Then 1024 lanes over
// the chunks: lane i sums P_i, P_(i + 1024), ... in increasing c, then the tree o = 512, ..., 1; sumsq = lane 0.
// The CPU twin follows the same order and the same IEEE operations: CPU and CUDA results are bit-identical.
//
// ---- accumulate -------------------------------------------------------------------------------------------
// dst[i] = fl32(dst[i] + src[i]): dst F32 [n], src F32 or BF16 [n], contiguous, one device. (Gradient
// accumulation where a kernel overwrites its output, e.g. RMSNorm's dw.)
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"

namespace tg::kernels {

inline constexpr int64_t kAdamWChunk = 65536;  // elements per chunk (one thread block)
inline constexpr int kAdamWLanes = 256;        // lanes of a chunk partial
inline constexpr int kAdamWReduceLanes = 1024; // lanes over the chunk partials

struct AdamWParam {
  TensorView param, grad, exp_avg, exp_avg_sq;  // F32 [n], contiguous
  TensorView copy;                              // optional BF16 [n]: round_bf16(param) after the update
  bool decay = true;
};

struct AdamWHyper {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;  // <= 0: no clipping (the norm is still computed)
};

// The parameters' table on their device (pointers, sizes, flags and the chunk list): built once, reused every
// step, so a step uploads nothing. The views must stay valid while the table is used.
class AdamWTable {
 public:
  AdamWTable() = default;
  explicit AdamWTable(std::vector<AdamWParam> params);  // checks every view; one upload
  const std::vector<AdamWParam>& params() const { return params_; }
  int64_t num_chunks() const { return chunks_; }
  Device device() const { return device_; }
  const Tensor& device_table() const { return table_; }  // U8: entries then chunks (optim_table.h)

 private:
  std::vector<AdamWParam> params_;
  int64_t chunks_ = 0;
  Device device_ = Device::CPU;
  Tensor table_;
};

// F64 [3] {0, 1, 1}: a fresh AdamW state on `device`.
Tensor adamw_initial_state(Device device);
// Workspace F64 [table.num_chunks()] for the chunk partials.
Tensor adamw_workspace(const AdamWTable& table);

// One AdamW step (see above). state F64 [3] (in/out), status F32 [4] (out), workspace F64 [num_chunks].
void adamw_step(const AdamWTable& table, const AdamWHyper& hyper, const TensorView& state, const TensorView& status,
                const TensorView& workspace, Stream stream = {});
void accumulate(const TensorView& dst, const TensorView& src, Stream stream = {});

namespace cpu {
void adamw_step(const AdamWTable& table, const AdamWHyper& hyper, const TensorView& state, const TensorView& status,
                const TensorView& workspace);
void accumulate(const TensorView& dst, const TensorView& src);
}  // namespace cpu
namespace cuda {
void adamw_step(const AdamWTable& table, const AdamWHyper& hyper, const TensorView& state, const TensorView& status,
                const TensorView& workspace, Stream stream);
void accumulate(const TensorView& dst, const TensorView& src, Stream stream);
}  // namespace cuda

namespace optim_detail {
void check_step_args(const AdamWTable& table, const AdamWHyper& hyper, const TensorView& state,
                     const TensorView& status, const TensorView& workspace, Device device, const char* what);
void check_accumulate_args(const TensorView& dst, const TensorView& src, Device device, const char* what);
}  // namespace optim_detail

}  // namespace tg::kernels
