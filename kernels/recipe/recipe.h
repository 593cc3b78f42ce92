// Recipe kernels: amax -> scale on the device, with no host sync. The quantize kernels only read
// `scale`, max-reduce into `amax` and write their tensor's `scale_inv`; everything that turns amaxes
// into the next scales lives here. The scalar rules are in kernels/recipe/scale_math.h.
//
// ---- Delayed scaling: the multi-tensor state layout ------------------------------------------------
// The delayed-scaling state of N tensors with amax history length L is four device buffers:
//
//   amax_history  F32 [N, L]  row n is tensor n's window. Element [n, 0] is the STAGING SLOT: the
//                             quantizers max-reduce (atomic max of non-negative floats) the tensor's
//                             amax of the current step into it. [n, 1..L-1] are past steps, oldest
//                             first; after an update the newest amax sits at [n, L-1].
//   scale         F32 [N]     the scale the quantizers multiply by (initially 1)
//   scale_inv     F32 [N]     1 / scale, rewritten by every update (initially 1)
//   fp8_max       F32 [N]     448 for E4M3 tensors, 57344 for E5M2 tensors (HYBRID backward)
//
// The amax view a quantizer gets for tensor n is F32[1] at amax_history.data + n * L. Rows are
// tensor-major (TE's buffers are [L, N], tensor-minor) so that one thread block reads one contiguous
// window, and a row range [a, b) of all four buffers is again a valid state (forward tensors and
// backward tensors are two row ranges of one allocation, updated separately).
//
// delayed_scaling_update is ONE launch for all N tensors (one thread block per tensor), TE's
// fused_amax_and_scale_update_after_reduction without the distributed amax reduction buffer:
//   a0 = amax_history[n, 0]
//   if a0 == 0 (the tensor did not run this step): no roll, scale kept (PR #825); scale_inv rewritten.
//   else:
//     amax = max over the whole window [n, 0..L-1]   (algo max; NaN entries are skipped, as CUDA fmaxf
//            does in TE's kernel, inf entries are not)
//          | a0                                       (algo most_recent)
//     scale = delayed_scale(amax, scale, fp8_max * 2^-margin)  (0/inf/NaN amax -> keep; overflow -> FLT_MAX)
//     roll: new[i] = old[i+1] for i < L-1, new[L-1] = old[0], then new[0] = 0.
//   scale_inv = 1 / scale (RN).
//
// ---- Current scaling --------------------------------------------------------------------------------
// current_scaling_scale turns N amaxes (N >= 1; one launch) into N scales with scale_from_amax (epsilon
// floor, 0/inf/NaN -> 1, RN division, overflow -> rule.value_for_inf, optional power of two) and
// optionally the N scale_invs. With rule.value_for_inf = the input dtype's max this is also the
// block-scaling rule, for amaxes that were reduced separately.
//
// All tensors are contiguous F32 on the device of the dispatcher's call; CPU twins have the same
// contract and are the golden (bit-exact: the CUDA versions use the same scale_math.h functions).
#pragma once

#include <cstdint>

#include "common/tensor.h"
#include "kernels/recipe/scale_math.h"

namespace tg::kernels {

enum class AmaxHistoryAlgo : uint8_t { kMax, kMostRecent };

constexpr int kMaxAmaxMargin = 64;              // as impl::Recipe::parse accepts
constexpr int64_t kMaxAmaxHistoryLen = 65536;

// Updates every tensor's amax history, scale and scale_inv in place (layout above).
//   amax_history F32 [N, L] (in/out), scale F32 [N] (in/out), scale_inv F32 [N] (out),
//   fp8_max F32 [N] (in); margin in [0, 64]; L in [1, 65536]; N >= 0 (N == 0 does nothing).
void delayed_scaling_update(const TensorView& amax_history, const TensorView& scale, const TensorView& scale_inv,
                            const TensorView& fp8_max, AmaxHistoryAlgo algo, int margin, Stream stream = {});

// scale[n] = scale_from_amax(amax[n], rule); scale_inv[n] = 1 / scale[n] if scale_inv is not empty.
//   amax F32 [N] (in), scale F32 [N] (out), scale_inv F32 [N] (out, optional: an empty view skips it).
void current_scaling_scale(const TensorView& amax, const TensorView& scale, const TensorView& scale_inv,
                           const ScaleRule& rule, Stream stream = {});

namespace cpu {
void delayed_scaling_update(const TensorView& amax_history, const TensorView& scale, const TensorView& scale_inv,
                            const TensorView& fp8_max, AmaxHistoryAlgo algo, int margin);
void current_scaling_scale(const TensorView& amax, const TensorView& scale, const TensorView& scale_inv,
                           const ScaleRule& rule);
}  // namespace cpu
namespace cuda {
void delayed_scaling_update(const TensorView& amax_history, const TensorView& scale, const TensorView& scale_inv,
                            const TensorView& fp8_max, AmaxHistoryAlgo algo, int margin, Stream stream);
void current_scaling_scale(const TensorView& amax, const TensorView& scale, const TensorView& scale_inv,
                           const ScaleRule& rule, Stream stream);
}  // namespace cuda

namespace detail {
// The argument checks shared by the CPU twin and the CUDA launcher ("what" names the caller).
void check_delayed_args(const TensorView& amax_history, const TensorView& scale, const TensorView& scale_inv,
                        const TensorView& fp8_max, int margin, Device device, const char* what);
void check_current_args(const TensorView& amax, const TensorView& scale, const TensorView& scale_inv,
                        const ScaleRule& rule, Device device, const char* what);
}  // namespace detail

}  // namespace tg::kernels
