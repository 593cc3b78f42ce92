#include <algorithm>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/launch/device_info.h"
#include "kernels/random/normal_stream.h"
#include "kernels/random/random.h"

namespace tg::kernels::cuda {

namespace {

// One pair of elements per thread and step (grid-stride); double-precision Box-Muller as on the host.
__global__ void fill_normal_kernel(uint16_t* __restrict__ out, int64_t n, uint64_t key, double std) {
  const int64_t pairs = (n + 1) / 2;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < pairs; j += stride) {
    double a, b;
    normal_pair(key, j, a, b);
    out[2 * j] = __bfloat16_as_ushort(__float2bfloat16_rn(__double2float_rn(std * a)));
    if (2 * j + 1 < n) out[2 * j + 1] = __bfloat16_as_ushort(__float2bfloat16_rn(__double2float_rn(std * b)));
  }
}

}  // namespace

void fill_normal(const TensorView& out, uint64_t key, double std, Stream stream) {
  TG_NVTX_FN();
  detail::check_fill_normal(out, std, Device::CUDA, "cuda::fill_normal(out)");
  const int64_t n = out.numel();
  if (n == 0) return;
  if (std == 0.0) {  // exactly +0, as the twin
    TG_CHECK_CUDA(cudaMemsetAsync(out.data, 0, out.nbytes(), cuda_stream(stream)));
    return;
  }
  constexpr int kThreads = 256;
  const int64_t want = ((n + 1) / 2 + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(std::min<int64_t>(want, int64_t{64} * sm_count()));  // grid-stride beyond
  fill_normal_kernel<<<blocks, kThreads, 0, cuda_stream(stream)>>>(out.ptr<uint16_t>(), n, key, std);
  TG_CHECK_LAUNCH("fill_normal_kernel");
}

}  // namespace tg::kernels::cuda
