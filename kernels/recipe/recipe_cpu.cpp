// CPU twins of the recipe kernels: simple loops over the scale_math.h rules, the golden for the CUDA
// kernels (bit-exact).

#include "common/nvtx.h"
#include "kernels/recipe/recipe.h"

namespace tg::kernels::cpu {

void delayed_scaling_update(const TensorView& amax_history, const TensorView& scale, const TensorView& scale_inv,
                            const TensorView& fp8_max, AmaxHistoryAlgo algo, int margin) {
  TG_NVTX_FN();
  detail::check_delayed_args(amax_history, scale, scale_inv, fp8_max, margin, Device::CPU,
                             "delayed_scaling_update");
  const int64_t n = amax_history.size(0), len = amax_history.size(1);
  float* scales = scale.ptr<float>();
  for (int64_t t = 0; t < n; ++t) {
    float* h = amax_history.ptr<float>() + t * len;  // [L] this tensor's window; h[0] is the staging slot
    const float newest = h[0];
    float amax = 0.0f;  // a tensor that did not run keeps amax 0, hence its scale
    if (newest != 0.0f) {
      for (int64_t i = 0; i < len; ++i) amax = amax_max(amax, h[i]);
      if (algo == AmaxHistoryAlgo::kMostRecent) amax = newest;
      for (int64_t i = 0; i + 1 < len; ++i) h[i] = h[i + 1];
      h[len - 1] = newest;
      h[0] = 0.0f;  // for len == 1 the newest value is cleared too, as in TE
    }
    scales[t] = delayed_scale(amax, scales[t], delayed_scaled_max(fp8_max.ptr<float>()[t], margin));
    scale_inv.ptr<float>()[t] = scale_reciprocal(scales[t]);
  }
}

void current_scaling_scale(const TensorView& amax, const TensorView& scale, const TensorView& scale_inv,
                           const ScaleRule& rule) {
  TG_NVTX_FN();
  detail::check_current_args(amax, scale, scale_inv, rule, Device::CPU, "current_scaling_scale");
  const int64_t n = amax.size(0);
  for (int64_t t = 0; t < n; ++t) {
    const float s = scale_from_amax(amax.ptr<float>()[t], rule);
    scale.ptr<float>()[t] = s;
    if (!scale_inv.empty()) scale_inv.ptr<float>()[t] = scale_reciprocal(s);
  }
}

}  // namespace tg::kernels::cpu
