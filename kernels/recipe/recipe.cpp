#include "kernels/recipe/recipe.h"

#include <cmath>

namespace tg::kernels {

namespace detail {

namespace {
void check_f32_vector(const TensorView& t, int64_t n, Device device, const char* what) {
  check_device(t, device, what);
  check_dtype(t, DType::F32, what);
  check_contiguous(t, what);
  check_shape(t, Shape{n}, what);
}
}  // namespace

void check_delayed_args(const TensorView& amax_history, const TensorView& scale, const TensorView& scale_inv,
                        const TensorView& fp8_max, int margin, Device device, const char* what) {
  TG_CHECK(amax_history.ndim() == 2, what, ": amax_history must be 2-D [tensors, history_len], got shape ",
           amax_history.shape);
  check_device(amax_history, device, what);
  check_dtype(amax_history, DType::F32, what);
  check_contiguous(amax_history, what);
  const int64_t n = amax_history.size(0), len = amax_history.size(1);
  TG_CHECK(len >= 1 && len <= kMaxAmaxHistoryLen, what, ": amax history length must be in [1, ",
           kMaxAmaxHistoryLen, "], got ", len);
  TG_CHECK(margin >= 0 && margin <= kMaxAmaxMargin, what, ": margin must be in [0, ", kMaxAmaxMargin, "], got ",
           margin);
  check_f32_vector(scale, n, device, what);
  check_f32_vector(scale_inv, n, device, what);
  check_f32_vector(fp8_max, n, device, what);
}

void check_current_args(const TensorView& amax, const TensorView& scale, const TensorView& scale_inv,
                        const ScaleRule& rule, Device device, const char* what) {
  TG_CHECK(amax.ndim() == 1, what, ": amax must be 1-D [tensors], got shape ", amax.shape);
  const int64_t n = amax.size(0);
  check_f32_vector(amax, n, device, what);
  check_f32_vector(scale, n, device, what);
  if (!scale_inv.empty()) check_f32_vector(scale_inv, n, device, what);
  TG_CHECK(std::isfinite(rule.fp8_max) && rule.fp8_max > 0.0f, what, ": fp8_max must be finite and > 0, got ",
           rule.fp8_max);
  TG_CHECK(std::isfinite(rule.amax_epsilon) && rule.amax_epsilon >= 0.0f, what,
           ": amax_epsilon must be finite and >= 0, got ", rule.amax_epsilon);
  TG_CHECK(std::isfinite(rule.value_for_inf) && rule.value_for_inf > 0.0f, what,
           ": value_for_inf must be finite and > 0, got ", rule.value_for_inf);
}

}  // namespace detail

void delayed_scaling_update(const TensorView& amax_history, const TensorView& scale, const TensorView& scale_inv,
                            const TensorView& fp8_max, AmaxHistoryAlgo algo, int margin, Stream stream) {
  if (amax_history.device == Device::CPU) return cpu::delayed_scaling_update(amax_history, scale, scale_inv, fp8_max, algo, margin);
#if TEGEMMA_HAVE_CUDA
  cuda::delayed_scaling_update(amax_history, scale, scale_inv, fp8_max, algo, margin, stream);
#else
  TG_FAIL("delayed_scaling_update: CUDA tensors in a build without CUDA");
#endif
}

void current_scaling_scale(const TensorView& amax, const TensorView& scale, const TensorView& scale_inv,
                           const ScaleRule& rule, Stream stream) {
  if (amax.device == Device::CPU) return cpu::current_scaling_scale(amax, scale, scale_inv, rule);
#if TEGEMMA_HAVE_CUDA
  cuda::current_scaling_scale(amax, scale, scale_inv, rule, stream);
#else
  TG_FAIL("current_scaling_scale: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
