// The model's run-time precision: the Recipe, its scaling state, and the per-recipe way each GEMM's input is
// produced, quantized and multiplied. Every "which recipe?" branch of the forward pass lives here
// (precision.cpp), so the modules read the same for BF16 and the three FP8 recipes.
//
// A GEMM of the model is a GemmSite ("layers.3.qkv"): FP8 or BF16 (the default lm_head is BF16 under every
// recipe) and, under delayed scaling, its registered rows in the DelayedScalingState (input, weight, output,
// grad_output, grad_input: TE's fp8_meta). Its A operand is a GemmInput, filled by a producer:
//
//   producer      bf16          delayed                       current                       block
//   RMSNorm       norm -> BF16  norm+cast (fused, one kernel) norm -> BF16 + amax (fused),  norm -> BF16,
//   GeGLU         geglu -> BF16 geglu+cast (fused)            scale, cast (2nd read)        1x128 block cast
//   BF16 tensor   -             cast with the state's scale   amax, scale, cast (2 reads)   1x128 block cast
//   (attention output, via quantize())
//
// Delayed scaling phases:
//   kInference   frozen scales; the casts record no amax (no atomics).
//   kCalibrating TE's calibration, but accumulating: each calibration forward is a current-scaling forward
//                (every FP8 input cast with a just-in-time scale from its own amax: an accurate FP8 forward
//                that also works with FP8-only weights, unlike TE's BF16 calibration pass), and each cast
//                max-reduces that amax into its site's slot, which so accumulates the max over all batches
//                (order-independent). finish_calibration() turns the slots into frozen scales (one launch):
//                calibrated on one batch, delayed scaling then reproduces current scaling on it bit for bit.
//   kTraining    the casts max-reduce the amax into the state's slots; update_forward() after each step.
// Weights are quantized by impl/weights.h (their scale comes from their own amax).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include "common/fp8_tensor.h"
#include "common/tensor.h"
#include "impl/buffers.h"
#include "impl/recipe.h"
#include "impl/scaling.h"
#include "impl/weights.h"

namespace tg::impl {

struct GemmSite {
  std::string name;      // "layers.3.qkv", "lm_head"
  bool fp8 = false;      // FP8 GEMM (false: BF16)
  GemmScalingRefs refs;  // delayed scaling rows (valid when the recipe is delayed and fp8)
};

// How a GemmInput is produced (chosen by Precision::alloc_input from the recipe and the phase).
enum class InputPath : uint8_t {
  kBf16,          // BF16 GEMM: hp only
  kDelayedFused,  // delayed: the producer casts with the state's scale (norm / GeGLU fused kernels); no hp
  kDelayedCast,   // delayed: hp, then one cast with the state's scale
  kCalibrate,     // delayed while calibrating: as kCurrent, and the cast max-reduces the amax into the slot
  kCurrent,       // current scaling: hp + amax, scale, cast
  kBlock,         // block scaling: hp, then the 1x128 block cast
};

// The A operand of a GEMM: an activation [rows, K] in BF16 and/or FP8.
// Its buffers do not depend on the site it serves (in inference all layers share one set): the producers
// bind the site's delayed-scaling scale and amax slot at call time.
struct GemmInput {
  InputPath path = InputPath::kBf16;
  TensorView hp;          // BF16 [rows, K] (empty for kDelayedFused)
  Fp8View fp8;            // FP8 copy (FP8 paths); column-wise copy too when allocated for training
  TensorView state_amax;  // kCalibrate: the site's amax slot (bound by the producer)
  bool is_fp8() const { return path != InputPath::kBf16; }
};

// The gradient operand dy [rows, N] of a GEMM's backward (dgrad: dx = dy W, wgrad: dW += dy^T x), by recipe:
//
//   path            produced by                                   FP8 copies (bwd dtype: E5M2 under HYBRID)
//   kBf16           the upstream op writes hp                      none (BF16 GEMMs)
//   kFp8Cast        hp, then quantize_grad():                      row-wise (dgrad) + column-wise (wgrad)
//                     delayed: one cast+transpose with the state's grad_output scale (amax recorded)
//                     current: amax, scale (bwd rule), cast+transpose
//                     block:   both 1x128 copies quantized from hp (TE: never transpose 1-D blocks)
//   kDelayedFused   geglu_backward writes the FP8 copies itself     (delayed scaling only; no hp)
// hp may be the caller's buffer (the residual-stream gradients dh: allocated with own_hp = false and bound
// with with_hp() at call time), so one set of backward buffers serves every layer.
enum class GradPath : uint8_t { kBf16, kFp8Cast, kDelayedFused };

struct GradInput {
  GradPath path = GradPath::kBf16;
  TensorView hp;  // BF16 [rows, N]
  Fp8View fp8;    // row-wise + column-wise copies (FP8 paths)
  bool is_fp8() const { return path != GradPath::kBf16; }
  GradInput with_hp(const TensorView& t) const {
    GradInput g = *this;
    g.hp = t;
    return g;
  }
};

enum class ScalingPhase : uint8_t { kInference, kCalibrating, kTraining };
const char* scaling_phase_name(ScalingPhase p);

class Precision {
 public:
  Precision() = default;
  Precision(const Recipe& recipe, Device device);

  // Registration (before finalize()): one call per GEMM of the model.
  GemmSite add_gemm(const std::string& name, bool fp8);
  void finalize();  // allocates the delayed-scaling state (one allocation for all registered tensors)

  const Recipe& recipe() const { return recipe_; }
  bool is_fp8() const { return recipe_.is_fp8(); }
  Device device() const { return device_; }
  // Token rows are padded to a multiple of this: 128 under block scaling (every 1x128 block of a GEMM
  // operand is full, kernels/quantize/block_layout.h), else 1.
  int64_t row_multiple() const { return recipe_.kind == RecipeKind::kBlock ? 128 : 1; }
  const DelayedScalingState* delayed() const { return delayed_.get(); }
  DelayedScalingState* delayed() { return delayed_.get(); }

  ScalingPhase phase() const { return phase_; }
  // Delayed scaling only (other recipes: no-ops). See the header comment.
  void begin_calibration(Stream stream = {});
  void finish_calibration(Stream stream = {});
  bool calibrated() const { return calibrated_; }
  void set_training(bool on);
  void update_forward(Stream stream = {});   // training: one fused launch after a forward
  void update_backward(Stream stream = {});  // training: one fused launch after a backward (grad_output rows)

  // A GEMM input [rows, cols] for GEMMs like `site` (its path follows the recipe, the phase and site.fp8).
  // producer_fused: the producer is RMSNorm or GeGLU (can fuse the cast); columnwise: also the transposed
  // FP8 copy (training: the wgrad operand).
  GemmInput alloc_input(Buffers& b, const GemmSite& site, int64_t rows, int64_t cols, bool producer_fused,
                        bool columnwise) const;
  // Producers, writing `out` for the GEMM `site`. x, fc1: BF16 [rows, *]; rstd F32 [rows] (saved for backward).
  void rmsnorm(const TensorView& x, const TensorView& w, float eps, const TensorView& rstd, const GemmInput& out,
               const GemmSite& site, Stream stream) const;
  void geglu(const TensorView& fc1, const GemmInput& out, const GemmSite& site, Stream stream) const;
  // After another op wrote in.hp: the FP8 copy (no-op for kBf16).
  void quantize(const GemmInput& in, const GemmSite& site, Stream stream) const;
  // out [rows, N] = x W^T + beta * out (BF16 out; beta 1 accumulates into the residual stream).
  void linear(const GemmInput& x, const LinearWeight& w, const TensorView& out, float beta, Stream stream) const;

  // ---- Backward (training; the weights need their column-wise FP8 copies: quantize_weights(columnwise)) ----
  // The gradient operand of GEMMs like `site` [rows, cols]. producer_fused: GeGLU's backward produces it
  // (delayed scaling fuses the cast); own_hp = false: hp is bound later with GradInput::with_hp.
  GradInput alloc_grad(Buffers& b, const GemmSite& site, int64_t rows, int64_t cols, bool producer_fused,
                       bool own_hp = true) const;
  // After the upstream op wrote dy.hp: the FP8 copies (no-op for kBf16 and kDelayedFused).
  void quantize_grad(const GradInput& dy, const GemmSite& site, Stream stream) const;
  // dfc1 [rows, 2F] = GeGLU backward of dout [rows, F] (BF16) at fc1 (the forward's input), in dfc1's format.
  void geglu_backward(const TensorView& dout, const TensorView& fc1, const GradInput& dfc1, const GemmSite& site,
                      Stream stream) const;
  // dgrad: dx [rows, K] = dy W (BF16, overwritten). FP8: dy row-wise x W column-wise, the recipe's dgrad
  // accumulation (split unless fast was asked; block: always split).
  void dgrad(const GradInput& dy, const LinearWeight& w, const TensorView& dx, Stream stream) const;
  // wgrad: dw [N, K] += dy^T x (F32 accumulation buffer). FP8: dy column-wise x x column-wise (the input's copy
  // made in the forward cast), the recipe's wgrad accumulation. The GEMM's K is the row count: per-tensor FP8
  // needs rows % 16 == 0 and block scaling rows % 128 == 0 (training_row_multiple() pads to it).
  void wgrad(const GradInput& dy, const GemmInput& x, const TensorView& dw, Stream stream) const;
  // Token rows of a training batch are padded to a multiple of this: row_multiple(), and 16 for per-tensor FP8
  // (the wgrad GEMMs reduce over the rows: cuBLASLt's FP8 K % 16 rule).
  int64_t training_row_multiple() const { return is_fp8() ? std::max<int64_t>(row_multiple(), 16) : 1; }

  // `in` bound to `site`'s delayed-scaling slots (its fp8.scale, and the amax slot while training), as the producers
  // see it: for a consumer that produces the input itself (the decoder's fused GEMV, kernels/gemm/gemv.h).
  GemmInput bound(const GemmInput& in, const GemmSite& site) const { return bind(in, site); }

 private:
  GemmInput bind(const GemmInput& in, const GemmSite& site) const;  // the site's delayed-scaling slots
  GradInput bind_grad(const GradInput& g, const GemmSite& site) const;
  void finish_cast(const GemmInput& in, Stream stream) const;       // amax known -> scale -> cast

  Recipe recipe_;
  Device device_ = Device::CPU;
  std::unique_ptr<DelayedScalingState> delayed_;
  ScalingPhase phase_ = ScalingPhase::kInference;
  bool calibrated_ = false;
  bool finalized_ = false;
};

}  // namespace tg::impl
