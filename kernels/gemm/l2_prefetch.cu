// The L2 prefetch request kernel: see l2_prefetch.h for the contract and why it runs on a side stream.
#include <algorithm>
#include <cstdint>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/gemm/l2_prefetch.h"
#include "kernels/launch/device_info.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {

constexpr int kThreads = 64;
constexpr int64_t kChunkBytes = 4096;  // bytes per bulk prefetch request

struct PrefetchArgs {
  const char* ptr[kL2PrefetchMaxTensors];
  int64_t bytes[kL2PrefetchMaxTensors];   // multiples of 16
  int64_t chunks[kL2PrefetchMaxTensors];  // cumulative request counts: range r holds [chunks[r-1], chunks[r])
  int n;
};

// Thread i of the grid requests chunks i, i + stride, ... of the ranges laid end to end (no completion to wait for,
// nothing written). Ordinary launch, no programmatic-launch calls: nothing here depends on an earlier kernel.
__global__ void __launch_bounds__(kThreads) l2_prefetch_kernel(const PrefetchArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const int64_t total = a.chunks[a.n - 1];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int r = 0;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < total; c += stride) {
    while (c >= a.chunks[r]) ++r;  // ascending c: the range only moves forward
    const int64_t first = r == 0 ? 0 : a.chunks[r - 1];
    const int64_t off = (c - first) * kChunkBytes;
    const auto size = static_cast<uint32_t>(min(kChunkBytes, a.bytes[r] - off));
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a.ptr[r] + off), "r"(size) : "memory");
  }
#endif
}

}  // namespace

void l2_prefetch(const std::vector<TensorView>& tensors, int64_t max_bytes, Stream side) {
  TG_NVTX_FN();
  PrefetchArgs a{};
  int64_t left = max_bytes, chunks = 0;
  for (const TensorView& t : tensors) {
    if (left < 16) break;
    const int64_t b = std::min<int64_t>(left, static_cast<int64_t>(t.nbytes())) / 16 * 16;
    if (b == 0) continue;
    a.ptr[a.n] = static_cast<const char*>(t.data);
    a.bytes[a.n] = b;
    chunks += (b + kChunkBytes - 1) / kChunkBytes;
    a.chunks[a.n] = chunks;
    ++a.n;
    left -= b;
  }
  if (a.n == 0) return;
  const int64_t blocks = std::min<int64_t>((chunks + kThreads - 1) / kThreads, sm_count());
  const ProgrammaticLaunchScope ordinary(false);  // the side stream's kernel is never a programmatic dependent
  launch(l2_prefetch_kernel, static_cast<unsigned>(blocks), kThreads, 0, cuda_stream(side), a);
  TG_CHECK_LAUNCH("l2_prefetch_kernel");
}

}  // namespace tg::kernels::cuda
