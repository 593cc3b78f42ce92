#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/convert/convert.h"
#include "kernels/cuda/device_utils.cuh"

namespace tg::kernels::cuda {

namespace {

// Grid-stride element-wise conversion; each thread handles 4 consecutive elements per step.
template <typename Src, typename Dst>
__global__ void convert_kernel(const Src* __restrict__ src, Dst* __restrict__ dst, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * 4;
  for (int64_t base = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4; base < n;
       base += stride) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (base + k < n) dst[base + k] = dev::from_float<Dst>(dev::to_float<Src>(src[base + k]));
    }
  }
}

}  // namespace

void convert(const TensorView& src, const TensorView& dst, Stream stream) {
  TG_NVTX_FN();
  check_device(src, Device::CUDA, "convert(src)");
  check_device(dst, Device::CUDA, "convert(dst)");
  check_contiguous(src, "convert(src)");
  check_contiguous(dst, "convert(dst)");
  check_shape(dst, src.shape, "convert(dst)");
  const int64_t n = src.numel();
  if (n == 0) return;
  constexpr int kThreads = 256;
  const int64_t want = (n + kThreads * 4 - 1) / (kThreads * 4);
  const int blocks = static_cast<int>(want < 65535 * 8 ? want : 65535 * 8);
  TG_DISPATCH_FLOAT(src.dtype, "convert(src)", [&] {
    using Src = scalar_t;
    TG_DISPATCH_FLOAT(dst.dtype, "convert(dst)", [&] {
      convert_kernel<Src, scalar_t><<<blocks, kThreads, 0, cuda_stream(stream)>>>(
          static_cast<const Src*>(src.data), static_cast<scalar_t*>(dst.data), n);
    });
  });
  TG_CHECK_LAUNCH("convert_kernel");
}

}  // namespace tg::kernels::cuda
