#include "impl/precision.h"

#include "common/check.h"
#include "kernels/activation/activation.h"
#include "kernels/gemm/gemm.h"
#include "kernels/norm/norm.h"
#include "kernels/quantize/quantize.h"
#include "kernels/recipe/recipe.h"
#include "kernels/recipe/scale_math.h"

namespace tg::impl {

namespace {

// Delayed scaling's scale for a known amax: fp8_max * 2^-margin / amax (what the calibration and the weight
// quantizer use; kernels::delayed_scale applies the same rule to the history's amax).
kernels::ScaleRule delayed_rule(const Recipe& r) {
  kernels::ScaleRule rule;
  rule.fp8_max = kernels::delayed_scaled_max(fp8_max(r.fwd_dtype()), r.margin);
  return rule;
}

Fp8View without_amax(Fp8View v) {
  v.amax = TensorView{};
  return v;
}

}  // namespace

const char* scaling_phase_name(ScalingPhase p) {
  switch (p) {
    case ScalingPhase::kInference:
      return "inference";
    case ScalingPhase::kCalibrating:
      return "calibrating";
    case ScalingPhase::kTraining:
      return "training";
  }
  return "?";
}

Precision::Precision(const Recipe& recipe, Device device) : recipe_(recipe), device_(device) {
  if (recipe_.kind == RecipeKind::kDelayed) delayed_ = std::make_unique<DelayedScalingState>(recipe_, device_);
}

GemmSite Precision::add_gemm(const std::string& name, bool fp8) {
  TG_CHECK(!finalized_, "Precision::add_gemm('", name, "'): registration is closed (finalize() was called)");
  GemmSite s;
  s.name = name;
  s.fp8 = fp8 && recipe_.is_fp8();
  if (s.fp8 && delayed_) s.refs = delayed_->add_gemm(name);
  return s;
}

void Precision::finalize() {
  TG_CHECK(!finalized_, "Precision::finalize: called twice");
  if (delayed_) delayed_->allocate();
  finalized_ = true;
}

void Precision::begin_calibration(Stream stream) {
  if (!delayed_) return;
  TG_CHECK(phase_ == ScalingPhase::kInference, "begin_calibration: the model is ", scaling_phase_name(phase_),
           "; calibration starts from inference");
  delayed_->begin_calibration(stream);
  phase_ = ScalingPhase::kCalibrating;
}

void Precision::finish_calibration(Stream stream) {
  if (!delayed_) return;
  TG_CHECK(phase_ == ScalingPhase::kCalibrating, "finish_calibration: begin_calibration() was not called");
  delayed_->finish_calibration(stream);
  phase_ = ScalingPhase::kInference;
  calibrated_ = true;
}

void Precision::set_training(bool on) {
  TG_CHECK(phase_ != ScalingPhase::kCalibrating, "set_training: finish the calibration first");
  phase_ = on ? ScalingPhase::kTraining : ScalingPhase::kInference;
}

void Precision::update_forward(Stream stream) {
  if (delayed_ && phase_ == ScalingPhase::kTraining) delayed_->update_forward(stream);
}

void Precision::update_backward(Stream stream) {
  if (delayed_ && phase_ == ScalingPhase::kTraining) delayed_->update_backward(stream);
}

GemmInput Precision::alloc_input(Buffers& b, const GemmSite& site, int64_t rows, int64_t cols, bool producer_fused,
                                 bool columnwise) const {
  TG_CHECK(finalized_, "Precision::alloc_input: finalize() first");
  GemmInput in;
  const DType fp8 = recipe_.fwd_dtype();
  if (!site.fp8) {
    in.path = InputPath::kBf16;
    in.hp = b.alloc(DType::BF16, {rows, cols});
    return in;
  }
  switch (recipe_.kind) {
    case RecipeKind::kBF16:
      TG_FAIL("Precision: an FP8 site '", site.name, "' under the bf16 recipe");
    case RecipeKind::kDelayed:
      if (phase_ == ScalingPhase::kCalibrating) {
        in.path = InputPath::kCalibrate;
        in.hp = b.alloc(DType::BF16, {rows, cols});
        in.fp8 = b.alloc_fp8_per_tensor(fp8, rows, cols, columnwise, /*own_scale=*/true);
      } else {
        in.path = producer_fused ? InputPath::kDelayedFused : InputPath::kDelayedCast;
        if (!producer_fused) in.hp = b.alloc(DType::BF16, {rows, cols});
        in.fp8 = b.alloc_fp8_per_tensor(fp8, rows, cols, columnwise, /*own_scale=*/false);
      }
      return in;
    case RecipeKind::kCurrent:
      in.path = InputPath::kCurrent;
      in.hp = b.alloc(DType::BF16, {rows, cols});
      in.fp8 = b.alloc_fp8_per_tensor(fp8, rows, cols, columnwise, /*own_scale=*/true);
      return in;
    case RecipeKind::kBlock:
      in.path = InputPath::kBlock;
      in.hp = b.alloc(DType::BF16, {rows, cols});
      in.fp8 = b.alloc_fp8_block(ScalingMode::kBlock1x128, fp8, rows, cols, columnwise);
      return in;
  }
  TG_FAIL("unreachable");
}

GemmInput Precision::bind(const GemmInput& in, const GemmSite& site) const {
  GemmInput out = in;
  switch (in.path) {
    case InputPath::kDelayedFused:
    case InputPath::kDelayedCast:
      TG_CHECK(site.refs.input.valid(), "Precision: GEMM '", site.name, "' has no delayed-scaling rows");
      delayed_->attach(out.fp8, site.refs.input);
      if (phase_ != ScalingPhase::kTraining) out.fp8.amax = TensorView{};  // frozen scales: record nothing
      break;
    case InputPath::kCalibrate:
      TG_CHECK(site.refs.input.valid(), "Precision: GEMM '", site.name, "' has no delayed-scaling rows");
      TG_CHECK(phase_ == ScalingPhase::kCalibrating, "Precision: activations were allocated for calibration but ",
               "the model is ", scaling_phase_name(phase_), " (re-plan the forward)");
      out.state_amax = delayed_->amax(site.refs.input);
      break;
    default:
      break;
  }
  return out;
}

void Precision::finish_cast(const GemmInput& in, Stream stream) const {
  switch (in.path) {
    case InputPath::kCalibrate: {
      // This batch's own amax gives the just-in-time scale (so each calibration forward is exactly a current-
      // scaling forward, whatever the other batches were), and the cast max-reduces the same amax into the
      // site's slot, which thereby accumulates the max over all calibration batches.
      kernels::current_scaling_scale(in.fp8.amax, in.fp8.scale, TensorView{}, delayed_rule(recipe_), stream);
      Fp8View cast = in.fp8;
      cast.amax = in.state_amax;
      kernels::quantize(in.hp, cast, {}, stream);
      return;
    }
    case InputPath::kCurrent:
      CurrentScalingState(recipe_).compute_scale(in.fp8, ScalingDir::kForward, stream);
      kernels::quantize(in.hp, without_amax(in.fp8), {}, stream);
      return;
    case InputPath::kBlock:
      kernels::quantize(in.hp, in.fp8, kernels::BlockQuantOptions{recipe_.power_2_scale, 0.0f}, stream);
      return;
    case InputPath::kDelayedCast:
      kernels::quantize(in.hp, in.fp8, {}, stream);  // amax recorded into the slot when training
      return;
    case InputPath::kBf16:
    case InputPath::kDelayedFused:
      return;
  }
}

void Precision::rmsnorm(const TensorView& x, const TensorView& w, float eps, const TensorView& rstd,
                        const GemmInput& unbound, const GemmSite& site, Stream stream) const {
  const GemmInput out = bind(unbound, site);
  switch (out.path) {
    case InputPath::kBf16:
    case InputPath::kBlock:
      kernels::rmsnorm_forward(x, w, eps, out.hp, rstd, {}, {}, stream);
      break;
    case InputPath::kDelayedFused:
      kernels::rmsnorm_forward_fp8(x, w, eps, out.fp8, rstd, {}, stream);
      return;
    case InputPath::kDelayedCast:
      kernels::rmsnorm_forward(x, w, eps, out.hp, rstd, {}, {}, stream);
      break;
    case InputPath::kCalibrate:
    case InputPath::kCurrent:
      zero_async(out.fp8.amax, stream);
      kernels::rmsnorm_forward(x, w, eps, out.hp, rstd, {}, out.fp8.amax, stream);
      break;
  }
  finish_cast(out, stream);
}

void Precision::geglu(const TensorView& fc1, const GemmInput& unbound, const GemmSite& site, Stream stream) const {
  const GemmInput out = bind(unbound, site);
  switch (out.path) {
    case InputPath::kBf16:
    case InputPath::kBlock:
    case InputPath::kDelayedCast:
      kernels::geglu_forward(fc1, out.hp, {}, stream);
      break;
    case InputPath::kDelayedFused:
      kernels::geglu_forward_fp8(fc1, out.fp8, stream);
      return;
    case InputPath::kCalibrate:
    case InputPath::kCurrent:
      zero_async(out.fp8.amax, stream);
      kernels::geglu_forward(fc1, out.hp, out.fp8.amax, stream);
      break;
  }
  finish_cast(out, stream);
}

void Precision::quantize(const GemmInput& unbound, const GemmSite& site, Stream stream) const {
  const GemmInput in = bind(unbound, site);
  switch (in.path) {
    case InputPath::kBf16:
      return;
    case InputPath::kDelayedFused:
      TG_FAIL("Precision::quantize: the input was allocated for a fused producer");
    case InputPath::kCalibrate:
    case InputPath::kCurrent:
      kernels::compute_amax(in.hp, in.fp8.amax, stream);
      break;
    case InputPath::kBlock:
    case InputPath::kDelayedCast:
      break;
  }
  finish_cast(in, stream);
}

void Precision::linear(const GemmInput& x, const LinearWeight& w, const TensorView& out, float beta,
                       Stream stream) const {
  kernels::GemmOptions opt;
  opt.beta = beta;
  if (!x.is_fp8()) {
    TG_CHECK(w.has_master(), "Precision::linear: '", w.name, "' runs in BF16 but has no BF16 weight (FP8-only ",
             "storage)");
    kernels::gemm(x.hp, w.master_view, out, opt, stream);
    return;
  }
  TG_CHECK(w.has_fp8, "Precision::linear: '", w.name, "' runs in FP8 but the weight has no FP8 copy");
  opt.split_accumulate = recipe_.split_fprop || recipe_.kind == RecipeKind::kBlock;
  Fp8View a = x.fp8, b = w.fp8_view();
  a.columnwise_data = b.columnwise_data = TensorView{};  // the forward reads the row-wise copies
  a.columnwise_scale_inv = b.columnwise_scale_inv = TensorView{};
  kernels::gemm_fp8(a, b, out, opt, stream);
}

// ---- Backward ------------------------------------------------------------------------------------------------

GradInput Precision::alloc_grad(Buffers& b, const GemmSite& site, int64_t rows, int64_t cols, bool producer_fused,
                                bool own_hp) const {
  TG_CHECK(finalized_, "Precision::alloc_grad: finalize() first");
  GradInput g;
  if (!site.fp8) {
    g.path = GradPath::kBf16;
    if (own_hp) g.hp = b.alloc(DType::BF16, {rows, cols});
    return g;
  }
  const DType fp8 = recipe_.bwd_dtype();
  switch (recipe_.kind) {
    case RecipeKind::kBF16:
      TG_FAIL("Precision: an FP8 site '", site.name, "' under the bf16 recipe");
    case RecipeKind::kDelayed:
      g.path = producer_fused ? GradPath::kDelayedFused : GradPath::kFp8Cast;
      if (!producer_fused && own_hp) g.hp = b.alloc(DType::BF16, {rows, cols});
      g.fp8 = b.alloc_fp8_per_tensor(fp8, rows, cols, /*columnwise=*/true, /*own_scale=*/false);
      return g;
    case RecipeKind::kCurrent:
      g.path = GradPath::kFp8Cast;
      if (own_hp) g.hp = b.alloc(DType::BF16, {rows, cols});
      g.fp8 = b.alloc_fp8_per_tensor(fp8, rows, cols, /*columnwise=*/true, /*own_scale=*/true);
      return g;
    case RecipeKind::kBlock:
      g.path = GradPath::kFp8Cast;
      if (own_hp) g.hp = b.alloc(DType::BF16, {rows, cols});
      g.fp8 = b.alloc_fp8_block(ScalingMode::kBlock1x128, fp8, rows, cols, /*columnwise=*/true);
      return g;
  }
  TG_FAIL("unreachable");
}

GradInput Precision::bind_grad(const GradInput& g, const GemmSite& site) const {
  GradInput out = g;
  if (g.is_fp8() && recipe_.kind == RecipeKind::kDelayed) {
    TG_CHECK(site.refs.grad_output.valid(), "Precision: GEMM '", site.name, "' has no delayed-scaling rows");
    TG_CHECK(phase_ == ScalingPhase::kTraining, "Precision: a backward pass under delayed scaling needs the ",
             "training phase (set_training(true)), the model is ", scaling_phase_name(phase_));
    delayed_->attach(out.fp8, site.refs.grad_output);  // its scale; the cast max-reduces into its amax slot
  }
  return out;
}

void Precision::quantize_grad(const GradInput& unbound, const GemmSite& site, Stream stream) const {
  if (unbound.path != GradPath::kFp8Cast) return;
  const GradInput g = bind_grad(unbound, site);
  TG_CHECK(!g.hp.empty(), "Precision::quantize_grad: GEMM '", site.name, "': the gradient has no BF16 source ",
           "(bind it with GradInput::with_hp)");
  switch (recipe_.kind) {
    case RecipeKind::kDelayed:
      kernels::quantize(g.hp, g.fp8, {}, stream);  // the state's scale; amax recorded for update_backward()
      return;
    case RecipeKind::kCurrent:
      kernels::compute_amax(g.hp, g.fp8.amax, stream);
      CurrentScalingState(recipe_).compute_scale(g.fp8, ScalingDir::kBackward, stream);
      kernels::quantize(g.hp, without_amax(g.fp8), {}, stream);
      return;
    case RecipeKind::kBlock:
      kernels::quantize(g.hp, g.fp8, kernels::BlockQuantOptions{recipe_.power_2_scale, 0.0f}, stream);
      return;
    case RecipeKind::kBF16:
      break;
  }
  TG_FAIL("Precision::quantize_grad: GEMM '", site.name, "' has an FP8 gradient under the bf16 recipe");
}

void Precision::geglu_backward(const TensorView& dout, const TensorView& fc1, const GradInput& dfc1,
                               const GemmSite& site, Stream stream) const {
  if (dfc1.path == GradPath::kDelayedFused) {
    kernels::geglu_backward_fp8(dout, fc1, bind_grad(dfc1, site).fp8, stream);
    return;
  }
  kernels::geglu_backward(dout, fc1, dfc1.hp, stream);
  quantize_grad(dfc1, site, stream);
}

void Precision::dgrad(const GradInput& dy, const LinearWeight& w, const TensorView& dx, Stream stream) const {
  if (!dy.is_fp8()) {
    TG_CHECK(w.has_master(), "Precision::dgrad: '", w.name, "' has no BF16 weight");
    kernels::GemmOptions opt;
    opt.transpose_b = true;  // W [N, K] as stored: dx = dy W
    kernels::gemm(dy.hp, w.master_view, dx, opt, stream);
    return;
  }
  TG_CHECK(w.has_fp8 && w.fp8_view().has_columnwise(), "Precision::dgrad: '", w.name, "' has no column-wise FP8 ",
           "copy (the TN-only dgrad GEMM reads W^T): quantize the weights with columnwise = true for training");
  kernels::GemmOptions opt;
  opt.split_accumulate = recipe_.split_dgrad || recipe_.kind == RecipeKind::kBlock;
  Fp8View a = dy.fp8;
  a.columnwise_data = TensorView{};
  a.columnwise_scale_inv = TensorView{};
  kernels::gemm_fp8(a, kernels::as_columnwise(w.fp8_view()), dx, opt, stream);
}

void Precision::wgrad(const GradInput& dy, const GemmInput& x, const TensorView& dw, Stream stream) const {
  kernels::GemmOptions opt;
  opt.beta = 1.0f;  // accumulate: micro-batches, and the tied embedding's two contributions
  if (!dy.is_fp8()) {
    TG_CHECK(!x.hp.empty(), "Precision::wgrad: the GEMM input has no BF16 copy");
    opt.transpose_a = opt.transpose_b = true;  // dy [rows, N] and x [rows, K] as stored: dW = dy^T x
    kernels::gemm(dy.hp, x.hp, dw, opt, stream);
    return;
  }
  TG_CHECK(x.is_fp8() && x.fp8.has_columnwise(), "Precision::wgrad: the GEMM input has no column-wise FP8 copy ",
           "(allocate it with columnwise = true: ForwardOptions::training)");
  opt.split_accumulate = recipe_.split_wgrad || recipe_.kind == RecipeKind::kBlock;
  kernels::gemm_fp8(kernels::as_columnwise(dy.fp8), kernels::as_columnwise(x.fp8), dw, opt, stream);
}

}  // namespace tg::impl
