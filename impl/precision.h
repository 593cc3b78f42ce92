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
  void update_forward(Stream stream = {});  // training: one fused launch after a forward

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

 private:
  GemmInput bind(const GemmInput& in, const GemmSite& site) const;  // the site's delayed-scaling slots
  void finish_cast(const GemmInput& in, Stream stream) const;       // amax known -> scale -> cast

  Recipe recipe_;
  Device device_ = Device::CPU;
  std::unique_ptr<DelayedScalingState> delayed_;
  ScalingPhase phase_ = ScalingPhase::kInference;
  bool calibrated_ = false;
  bool finalized_ = false;
};

}  // namespace tg::impl
