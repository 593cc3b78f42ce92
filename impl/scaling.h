// The FP8 scaling state a module (or a whole model) owns, built from a Recipe (impl/recipe.h). The
// quantize kernels read `scale` and max-reduce into `amax`; these objects turn amaxes into the next
// scales with the recipe kernels (kernels/recipe), on the device and with no host sync.
//
//   DelayedScalingState  TE's DelayedScaling: a registry of the module's forward tensors (per GEMM: input,
//                        weight, output; E4M3) and backward tensors (per GEMM: grad_output, grad_input;
//                        E5M2 under HYBRID), each with an amax history, a scale and a scale_inv. One fused
//                        kernel launch updates all forward (or all backward) tensors.
//   CurrentScalingState  Float8CurrentScaling: amax_epsilon and power_2_scale; amax -> scale per tensor.
//   BlockScalingState    Float8BlockScaling: power_2_scale and the block-scale rule for the quantizers.
//
// Typical delayed-scaling use (model code):
//   DelayedScalingState st(recipe, Device::CUDA);
//   GemmScalingRefs qkv = st.add_gemm("layer0.qkv");      // ... every GEMM of the model
//   st.allocate();                                          // once, before the first step
//   st.attach(x_fp8.view(), qkv.input);                     // the quantizer of x now uses qkv.input's scale/amax
//   ... forward (quantizers max into the amax slots) ...; st.update_forward(stream);
//   ... backward ...;                                        st.update_backward(stream);
//
// Calibration (DelayedScaling only): begin_calibration() clears the histories; while calibrating,
// update_forward()/update_backward() do nothing, so the amax slots ACCUMULATE the max over all calibration
// batches; finish_calibration() computes every scale once from that max (one launch). TE's calibrate()
// overwrites the slot with each batch's amax, so its scales come from the LAST batch only; we take the
// max on purpose (see docs/design.md "Recipes": deliberate differences from TE).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/fp8_tensor.h"
#include "common/tensor.h"
#include "impl/recipe.h"
#include "kernels/recipe/scale_math.h"

namespace tg::impl {

enum class ScalingDir : uint8_t { kForward, kBackward };
const char* scaling_dir_name(ScalingDir d);

// Largest finite value of an FP8 format: 448 (E4M3), 57344 (E5M2). Throws for other dtypes.
float fp8_max(DType fp8);

// One tensor registered with a DelayedScalingState.
struct ScalingRef {
  ScalingDir dir = ScalingDir::kForward;
  int index = -1;  // position among the tensors of its direction, in registration order
  bool valid() const { return index >= 0; }
};

// TE's per-GEMM tensor set (fp8_meta: 3 forward scales and 2 backward scales per GEMM).
struct GemmScalingRefs {
  ScalingRef input, weight, output;  // forward
  ScalingRef grad_output, grad_input;  // backward
};

// A tensor whose amax window holds inf or NaN: an overflow upstream (a diverging loss, a bad batch). The
// recipe never turns it into a scale: an inf amax keeps the previous scale for as long as it stays in the
// window; a NaN is skipped by algo=max (the scale comes from the window's finite amaxes) and keeps the
// previous scale under algo=most_recent (kernels/recipe/recipe.h). Reported so that the training loop can log
// it rather than train on with a frozen scale unnoticed.
struct NonFiniteAmax {
  std::string name;      // the registered name, e.g. "layer3.fc1.input"
  ScalingDir dir = ScalingDir::kForward;
  float value = 0.0f;    // the most recent non-finite amax in the window (inf or NaN)
  int64_t slot = 0;      // its index in the tensor's history: 0 = this step's staging slot (not applied
                         // yet), L-1 = the amax the last update applied, smaller = older
};

// One line for a log: "2 FP8 tensors with a non-finite amax (scale kept): a (inf, slot 0), b (nan, slot 3)".
std::string describe(const std::vector<NonFiniteAmax>& found);

// Device layout (see kernels/recipe/recipe.h): N = num_forward + num_backward rows, forward tensors first.
//   amax_history F32 [N, L], scale F32 [N], scale_inv F32 [N], fp8_max F32 [N].
class DelayedScalingState {
 public:
  DelayedScalingState() = default;
  // recipe.kind must be kDelayed. Nothing is allocated until allocate().
  DelayedScalingState(const Recipe& recipe, Device device);

  // Registration, before allocate(). Names are for messages and checkpoints ("layer3.fc1.input").
  ScalingRef add_forward(std::string name);
  ScalingRef add_backward(std::string name);
  GemmScalingRefs add_gemm(const std::string& gemm_name);  // "<gemm>.input", ".weight", ".output", ...
  // Allocates and initialises (synchronously: setup time): histories 0, scales 1, scale_invs 1, fp8_max
  // 448 forward and 448 or 57344 backward. Registration is closed afterwards.
  void allocate();
  bool allocated() const { return allocated_; }

  // One update of all forward (backward) tensors: one kernel launch on `stream`, no host sync.
  // No-ops while calibrating.
  void update_forward(Stream stream = {});
  void update_backward(Stream stream = {});

  // Every tensor whose amax window (staging slot included) holds inf or NaN, in row order. Copies the
  // histories to the host (a sync): call it when logging, e.g. after update_forward()/update_backward() or
  // before them to see this step's amaxes (with amax_history_len 1 only before: an update clears the slot).
  std::vector<NonFiniteAmax> nonfinite_amaxes(Stream stream = {}) const;

  void begin_calibration(Stream stream = {});
  void finish_calibration(Stream stream = {});
  bool calibrating() const { return calibrating_; }

  // Per-tensor views (after allocate()), all F32 on the state's device.
  TensorView scale(ScalingRef r) const;      // [1]
  TensorView amax(ScalingRef r) const;       // [1], the staging slot amax_history[row, 0]
  TensorView scale_inv(ScalingRef r) const;  // [1], 1 / scale as of the last update
  TensorView history(ScalingRef r) const;    // [L]
  // Points v.scale and v.amax at tensor r's (the quantizer then scales with it and records its amax).
  // v.scale_inv stays the tensor's own: the quantizer writes it when it casts, so an FP8 tensor kept for
  // the backward pass stays consistent after the state's scale moves on (as TE's Float8Tensor).
  void attach(Fp8View& v, ScalingRef r) const;

  DType dtype(ScalingRef r) const;  // E4M3 forward; backward E5M2 under HYBRID, E4M3 under E4M3
  const std::string& name(ScalingRef r) const;
  int64_t row(ScalingRef r) const;  // the row in the buffers below
  int num_forward() const { return static_cast<int>(forward_names_.size()); }
  int num_backward() const { return static_cast<int>(backward_names_.size()); }
  int64_t history_len() const { return recipe_.amax_history_len; }
  const Recipe& recipe() const { return recipe_; }
  Device device() const { return device_; }

  // The whole buffers, rows in order (forward tensors, then backward): checkpoints, tests, reports.
  const Tensor& amax_histories() const { return history_; }
  const Tensor& scales() const { return scale_; }
  const Tensor& scale_invs() const { return scale_inv_; }
  const Tensor& fp8_maxes() const { return fp8_max_; }

 private:
  void check_ref(ScalingRef r, const char* what) const;
  void update_rows(int64_t begin, int64_t end, Stream stream);

  Recipe recipe_;
  Device device_ = Device::CPU;
  std::vector<std::string> forward_names_, backward_names_;
  Tensor history_, scale_, scale_inv_, fp8_max_;
  bool allocated_ = false;
  bool calibrating_ = false;
};

class CurrentScalingState {
 public:
  CurrentScalingState() = default;
  explicit CurrentScalingState(const Recipe& recipe);  // recipe.kind must be kCurrent

  DType dtype(ScalingDir d) const { return d == ScalingDir::kForward ? recipe_.fwd_dtype() : recipe_.bwd_dtype(); }
  // {fp8_max of the direction's format, amax_epsilon, power_2_scale, FLT_MAX}
  kernels::ScaleRule rule(ScalingDir d) const;
  // v.amax -> v.scale (per-tensor view, after the amax pass and before the cast; TE's
  // compute_scale_from_amax). The quantizer writes scale_inv when it casts.
  void compute_scale(const Fp8View& v, ScalingDir d, Stream stream = {}) const;
  // N tensors of one direction at once: amax F32 [N] -> scale F32 [N] (and scale_inv F32 [N] if given).
  void compute_scales(const TensorView& amax, const TensorView& scale, const TensorView& scale_inv, ScalingDir d,
                      Stream stream = {}) const;
  float amax_epsilon() const { return recipe_.amax_epsilon; }
  bool power_2_scale() const { return recipe_.power_2_scale; }

 private:
  Recipe recipe_ = Recipe::current();
};

class BlockScalingState {
 public:
  static constexpr int kBlockLen = 128;  // 1x128 activations and gradients, 128x128 weights

  BlockScalingState() = default;
  explicit BlockScalingState(const Recipe& recipe);  // recipe.kind must be kBlock

  DType dtype(ScalingDir d) const { return d == ScalingDir::kForward ? recipe_.fwd_dtype() : recipe_.bwd_dtype(); }
  bool power_2_scale() const { return recipe_.power_2_scale; }
  // The per-block rule (kernels::block_scale_from_amax) for blocks of an `input` tensor (F32, BF16 or F16)
  // quantized to the direction's format: no epsilon, value_for_inf = input's largest finite value (TE).
  kernels::ScaleRule rule(ScalingDir d, DType input) const;

 private:
  Recipe recipe_ = Recipe::block();
};

}  // namespace tg::impl
