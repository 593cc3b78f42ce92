#include <climits>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/recipe/recipe.h"

namespace tg::kernels::cuda {

namespace {

constexpr int kMaxThreads = 256;

// One thread block per tensor; block dims: a multiple of 32, at most 256 (fewer for short histories).
// Grid dims: N. Rolls tensor blockIdx.x's window in place in chunks of blockDim.x, as TE's kernel_bulk.
__global__ void __launch_bounds__(kMaxThreads)
    delayed_scaling_update_kernel(float* __restrict__ amax_history, float* __restrict__ scale,
                                  float* __restrict__ scale_inv, const float* __restrict__ fp8_max,
                                  int64_t len, AmaxHistoryAlgo algo, int margin) {
  const int64_t t = blockIdx.x;
  float* h = amax_history + t * len;  // [L] this tensor's window; h[0] is the staging slot
  const float newest = h[0];          // read by every thread before the first write below
  float amax = 0.0f;                  // a tensor that did not run keeps amax 0, hence its scale
  if (newest != 0.0f) {               // uniform across the block: the barriers below are safe
    for (int64_t off = 0; off < len; off += blockDim.x) {
      const int64_t i = off + threadIdx.x;
      float a = 0.0f;
      if (i < len) {
        a = i + 1 < len ? h[i + 1] : newest;
        amax = amax_max(amax, a);
      }
      __syncthreads();  // this chunk reads h[off+1 .. off+blockDim] before anyone writes h[off ..]
      if (i < len) h[i] = i > 0 ? a : 0.0f;
    }
    if (algo == AmaxHistoryAlgo::kMax) {
      // Per-thread maxima are never NaN (amax_max skips NaN and starts at 0), so fmaxf is exact here.
      __shared__ float warp_amax[kMaxThreads / 32];
      amax = dev::warp_max(amax);
      if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
      __syncthreads();
      if (threadIdx.x == 0) {
        for (unsigned w = 1; w < blockDim.x / 32; ++w) amax = amax_max(amax, warp_amax[w]);
      }
    } else {
      amax = newest;
    }
  }
  if (threadIdx.x == 0) {
    const float s = delayed_scale(amax, scale[t], delayed_scaled_max(fp8_max[t], margin));
    scale[t] = s;
    scale_inv[t] = scale_reciprocal(s);
  }
}

// One thread per tensor (grid-stride).
__global__ void current_scaling_scale_kernel(const float* __restrict__ amax, float* __restrict__ scale,
                                             float* __restrict__ scale_inv, int64_t n, ScaleRule rule) {
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float s = scale_from_amax(amax[t], rule);
    scale[t] = s;
    if (scale_inv != nullptr) scale_inv[t] = scale_reciprocal(s);
  }
}

}  // namespace

void delayed_scaling_update(const TensorView& amax_history, const TensorView& scale, const TensorView& scale_inv,
                            const TensorView& fp8_max, AmaxHistoryAlgo algo, int margin, Stream stream) {
  TG_NVTX_FN();
  detail::check_delayed_args(amax_history, scale, scale_inv, fp8_max, margin, Device::CUDA,
                             "delayed_scaling_update");
  const int64_t n = amax_history.size(0), len = amax_history.size(1);
  TG_CHECK(n <= INT_MAX, "delayed_scaling_update: at most ", INT_MAX, " tensors per launch, got ", n);
  if (n == 0) return;
  const int threads = static_cast<int>(len >= kMaxThreads ? kMaxThreads : (len + 31) / 32 * 32);
  delayed_scaling_update_kernel<<<static_cast<unsigned>(n), threads, 0, cuda_stream(stream)>>>(
      amax_history.ptr<float>(), scale.ptr<float>(), scale_inv.ptr<float>(), fp8_max.ptr<float>(), len, algo,
      margin);
  TG_CHECK_LAUNCH("delayed_scaling_update_kernel");
}

void current_scaling_scale(const TensorView& amax, const TensorView& scale, const TensorView& scale_inv,
                           const ScaleRule& rule, Stream stream) {
  TG_NVTX_FN();
  detail::check_current_args(amax, scale, scale_inv, rule, Device::CUDA, "current_scaling_scale");
  const int64_t n = amax.size(0);
  if (n == 0) return;
  constexpr int kThreads = 256;
  const int64_t want = (n + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(want < 65535 * 8 ? want : 65535 * 8);
  current_scaling_scale_kernel<<<blocks, kThreads, 0, cuda_stream(stream)>>>(
      amax.ptr<float>(), scale.ptr<float>(), scale_inv.empty() ? nullptr : scale_inv.ptr<float>(), n, rule);
  TG_CHECK_LAUNCH("current_scaling_scale_kernel");
}

}  // namespace tg::kernels::cuda
