#include "impl/scaling.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <sstream>
#include <utility>

#include "common/nvtx.h"
#include "impl/buffers.h"
#include "kernels/recipe/recipe.h"

namespace tg::impl {

const char* scaling_dir_name(ScalingDir d) { return d == ScalingDir::kForward ? "forward" : "backward"; }

float fp8_max(DType fp8) {
  TG_CHECK(is_fp8(fp8), "fp8_max: expected F8_E4M3 or F8_E5M2, got ", fp8);
  return static_cast<float>(dtype_max(fp8));
}

namespace {
kernels::AmaxHistoryAlgo to_kernel_algo(AmaxAlgo a) {
  return a == AmaxAlgo::kMax ? kernels::AmaxHistoryAlgo::kMax : kernels::AmaxHistoryAlgo::kMostRecent;
}
}  // namespace

// ---- DelayedScalingState -------------------------------------------------------------------------------

DelayedScalingState::DelayedScalingState(const Recipe& recipe, Device device) : recipe_(recipe), device_(device) {
  TG_CHECK(recipe.kind == RecipeKind::kDelayed, "DelayedScalingState: expected a delayed recipe, got '",
           recipe.to_string(), "'");
  TG_CHECK(recipe.amax_history_len >= 1 && recipe.amax_history_len <= kernels::kMaxAmaxHistoryLen,
           "DelayedScalingState: amax_history_len must be in [1, ", kernels::kMaxAmaxHistoryLen, "], got ",
           recipe.amax_history_len);
  TG_CHECK(recipe.margin >= 0 && recipe.margin <= kernels::kMaxAmaxMargin, "DelayedScalingState: margin must be in [0, ",
           kernels::kMaxAmaxMargin, "], got ", recipe.margin);
}

ScalingRef DelayedScalingState::add_forward(std::string name) {
  TG_CHECK(!allocated_, "DelayedScalingState: cannot register forward tensor '", name, "' after allocate()");
  forward_names_.push_back(std::move(name));
  return {ScalingDir::kForward, num_forward() - 1};
}

ScalingRef DelayedScalingState::add_backward(std::string name) {
  TG_CHECK(!allocated_, "DelayedScalingState: cannot register backward tensor '", name, "' after allocate()");
  backward_names_.push_back(std::move(name));
  return {ScalingDir::kBackward, num_backward() - 1};
}

GemmScalingRefs DelayedScalingState::add_gemm(const std::string& gemm_name) {
  GemmScalingRefs g;
  g.input = add_forward(gemm_name + ".input");
  g.weight = add_forward(gemm_name + ".weight");
  g.output = add_forward(gemm_name + ".output");
  g.grad_output = add_backward(gemm_name + ".grad_output");
  g.grad_input = add_backward(gemm_name + ".grad_input");
  return g;
}

void DelayedScalingState::allocate() {
  TG_NVTX_FN();
  TG_CHECK(!allocated_, "DelayedScalingState: allocate() called twice");
  const int64_t n = num_forward() + num_backward(), len = history_len();
  // Built on the host, copied once: this is setup, not the training step.
  Tensor history = Tensor::zeros(DType::F32, {n, len});
  Tensor scale = Tensor::empty(DType::F32, {n}), scale_inv = Tensor::empty(DType::F32, {n});
  Tensor maxes = Tensor::empty(DType::F32, {n});
  std::fill_n(scale.ptr<float>(), n, 1.0f);
  std::fill_n(scale_inv.ptr<float>(), n, 1.0f);
  std::fill_n(maxes.ptr<float>(), num_forward(), fp8_max(recipe_.fwd_dtype()));
  std::fill_n(maxes.ptr<float>() + num_forward(), num_backward(), fp8_max(recipe_.bwd_dtype()));
  history_ = history.to(device_);
  scale_ = scale.to(device_);
  scale_inv_ = scale_inv.to(device_);
  fp8_max_ = maxes.to(device_);
  allocated_ = true;
}

void DelayedScalingState::update_rows(int64_t begin, int64_t end, Stream stream) {
  TG_CHECK(allocated_, "DelayedScalingState: update before allocate()");
  if (begin == end) return;
  kernels::delayed_scaling_update(history_.view().slice_rows(begin, end), scale_.view().slice_rows(begin, end),
                                  scale_inv_.view().slice_rows(begin, end), fp8_max_.view().slice_rows(begin, end),
                                  to_kernel_algo(recipe_.amax_algo), recipe_.margin, stream);
}

void DelayedScalingState::update_forward(Stream stream) {
  if (calibrating_) return;  // amaxes accumulate until finish_calibration()
  update_rows(0, num_forward(), stream);
}

void DelayedScalingState::update_backward(Stream stream) {
  if (calibrating_) return;
  update_rows(num_forward(), num_forward() + num_backward(), stream);
}

void DelayedScalingState::begin_calibration(Stream stream) {
  TG_CHECK(allocated_, "DelayedScalingState: begin_calibration() before allocate()");
  TG_CHECK(!calibrating_, "DelayedScalingState: begin_calibration() called twice");
  zero_bytes(history_.view(), stream);  // fresh windows: the scales come from the calibration data only
  calibrating_ = true;
}

void DelayedScalingState::finish_calibration(Stream stream) {
  TG_CHECK(calibrating_, "DelayedScalingState: finish_calibration() without begin_calibration()");
  calibrating_ = false;
  // Forward and backward rows in one launch; tensors that never ran keep their scales.
  update_rows(0, num_forward() + num_backward(), stream);
}

std::vector<NonFiniteAmax> DelayedScalingState::nonfinite_amaxes(Stream stream) const {
  TG_CHECK(allocated_, "DelayedScalingState::nonfinite_amaxes: not allocated yet (call allocate())");
  std::vector<NonFiniteAmax> found;
  if (history_.numel() == 0) return found;
  Tensor host;
  const float* h = history_.ptr<float>();
  if (device_ != Device::CPU) {
    sync_stream(stream);  // the last update was queued on `stream`
    host = Tensor::copy_of(history_.view(), Device::CPU);
    h = host.ptr<float>();
  }
  const int64_t len = history_len();
  for (int64_t row = 0; row < num_forward() + num_backward(); ++row) {
    const float* w = h + row * len;
    // Most recent first: the staging slot (this step), then the window from newest (L-1) to oldest (1).
    int64_t slot = -1;
    if (!std::isfinite(w[0])) {
      slot = 0;
    } else {
      for (int64_t i = len - 1; i >= 1; --i) {
        if (!std::isfinite(w[i])) {
          slot = i;
          break;
        }
      }
    }
    if (slot < 0) continue;
    const bool fwd = row < num_forward();
    found.push_back({fwd ? forward_names_[row] : backward_names_[row - num_forward()],
                     fwd ? ScalingDir::kForward : ScalingDir::kBackward, w[slot], slot});
  }
  return found;
}

std::string describe(const std::vector<NonFiniteAmax>& found) {
  std::ostringstream os;
  os << found.size() << " FP8 tensor" << (found.size() == 1 ? "" : "s")
     << " with a non-finite amax (scale kept)";
  for (std::size_t i = 0; i < found.size(); ++i) {
    os << (i == 0 ? ": " : ", ") << found[i].name << " (" << (std::isnan(found[i].value) ? "nan" : found[i].value < 0 ? "-inf" : "inf")
       << ", slot " << found[i].slot << ")";
  }
  return os.str();
}

void DelayedScalingState::check_ref(ScalingRef r, const char* what) const {
  const int count = r.dir == ScalingDir::kForward ? num_forward() : num_backward();
  TG_CHECK(r.index >= 0 && r.index < count, "DelayedScalingState::", what, ": no ", scaling_dir_name(r.dir),
           " tensor ", r.index, " (", count, " registered)");
}

int64_t DelayedScalingState::row(ScalingRef r) const {
  check_ref(r, "row");
  return r.dir == ScalingDir::kForward ? r.index : num_forward() + r.index;
}

const std::string& DelayedScalingState::name(ScalingRef r) const {
  check_ref(r, "name");
  return r.dir == ScalingDir::kForward ? forward_names_[r.index] : backward_names_[r.index];
}

DType DelayedScalingState::dtype(ScalingRef r) const {
  check_ref(r, "dtype");
  return r.dir == ScalingDir::kForward ? recipe_.fwd_dtype() : recipe_.bwd_dtype();
}

TensorView DelayedScalingState::scale(ScalingRef r) const {
  TG_CHECK(allocated_, "DelayedScalingState::scale: not allocated yet (call allocate())");
  return scale_.view().slice_rows(row(r), row(r) + 1);
}

TensorView DelayedScalingState::scale_inv(ScalingRef r) const {
  TG_CHECK(allocated_, "DelayedScalingState::scale_inv: not allocated yet (call allocate())");
  return scale_inv_.view().slice_rows(row(r), row(r) + 1);
}

TensorView DelayedScalingState::history(ScalingRef r) const {
  TG_CHECK(allocated_, "DelayedScalingState::history: not allocated yet (call allocate())");
  return history_.view().slice_rows(row(r), row(r) + 1).reshape({history_len()});
}

TensorView DelayedScalingState::amax(ScalingRef r) const { return history(r).slice_rows(0, 1); }

void DelayedScalingState::attach(Fp8View& v, ScalingRef r) const {
  TG_CHECK(v.mode == ScalingMode::kPerTensor, "DelayedScalingState::attach: tensor '", name(r),
           "' needs a per-tensor FP8 view, got ", scaling_mode_name(v.mode));
  TG_CHECK(v.dtype() == dtype(r), "DelayedScalingState::attach: tensor '", name(r), "' is ", dtype(r),
           ", the FP8 view is ", v.dtype());
  TG_CHECK(v.device() == device_, "DelayedScalingState::attach: tensor '", name(r), "' lives on ", device_,
           ", the FP8 view on ", v.device());
  v.scale = scale(r);
  v.amax = amax(r);
}

// ---- CurrentScalingState -------------------------------------------------------------------------------

CurrentScalingState::CurrentScalingState(const Recipe& recipe) : recipe_(recipe) {
  TG_CHECK(recipe.kind == RecipeKind::kCurrent, "CurrentScalingState: expected a current recipe, got '",
           recipe.to_string(), "'");
}

kernels::ScaleRule CurrentScalingState::rule(ScalingDir d) const {
  return {fp8_max(dtype(d)), recipe_.amax_epsilon, recipe_.power_2_scale, FLT_MAX};
}

void CurrentScalingState::compute_scale(const Fp8View& v, ScalingDir d, Stream stream) const {
  TG_CHECK(v.mode == ScalingMode::kPerTensor, "CurrentScalingState::compute_scale: needs a per-tensor FP8 view, got ",
           scaling_mode_name(v.mode));
  TG_CHECK(!v.amax.empty() && !v.scale.empty(),
           "CurrentScalingState::compute_scale: the FP8 view needs both an amax and a scale");
  kernels::current_scaling_scale(v.amax, v.scale, TensorView{}, rule(d), stream);
}

void CurrentScalingState::compute_scales(const TensorView& amax, const TensorView& scale, const TensorView& scale_inv,
                                         ScalingDir d, Stream stream) const {
  kernels::current_scaling_scale(amax, scale, scale_inv, rule(d), stream);
}

// ---- BlockScalingState ---------------------------------------------------------------------------------

BlockScalingState::BlockScalingState(const Recipe& recipe) : recipe_(recipe) {
  TG_CHECK(recipe.kind == RecipeKind::kBlock, "BlockScalingState: expected a block recipe, got '",
           recipe.to_string(), "'");
}

kernels::ScaleRule BlockScalingState::rule(ScalingDir d, DType input) const {
  TG_CHECK(input == DType::F32 || input == DType::BF16 || input == DType::F16,
           "BlockScalingState::rule: the high-precision input must be F32, BF16 or F16, got ", input);
  return {fp8_max(dtype(d)), 0.0f, recipe_.power_2_scale, static_cast<float>(dtype_max(input))};
}

}  // namespace tg::impl
