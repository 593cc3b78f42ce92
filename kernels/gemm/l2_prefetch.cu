// l2_prefetch on the GPU: see l2_prefetch.h for the contract.
#include <algorithm>
#include <cstdint>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/gemm/l2_prefetch.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr uint32_t kChunkBytes = 32 * 1024;  // bytes per bulk prefetch request

struct PrefetchArgs {
  const char* ptr[kL2PrefetchMaxTensors];
  int64_t bytes[kL2PrefetchMaxTensors];  // multiples of 16
  int n;
};

// Thread i requests chunks i, i + kThreads, ... of each range in turn (all requests issued before any wait; the
// hardware fetches in the background). Then the PDL wait, so that this kernel completes only after its predecessor.
__global__ void __launch_bounds__(kThreads) l2_prefetch_kernel(const PrefetchArgs a) {
  dev::pdl_launch_dependents();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
  for (int r = 0; r < a.n; ++r) {
    const int64_t chunks = (a.bytes[r] + kChunkBytes - 1) / kChunkBytes;
    for (int64_t c = threadIdx.x; c < chunks; c += kThreads) {
      const int64_t off = c * kChunkBytes;
      const auto size = static_cast<uint32_t>(min(static_cast<int64_t>(kChunkBytes), a.bytes[r] - off));
      asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(a.ptr[r] + off), "r"(size),
                   "l"(policy)
                   : "memory");
    }
  }
#endif
  dev::pdl_wait();
}

}  // namespace

void l2_prefetch(const std::vector<TensorView>& tensors, int64_t max_bytes, Stream stream) {
  TG_NVTX_FN();
  const Device dev = detail::check_l2_prefetch(tensors, max_bytes);
  if (tensors.empty() || max_bytes == 0) return;
  TG_CHECK(dev == Device::CUDA, "cuda::l2_prefetch: the tensors are on ", dev, ", expected cuda");
  PrefetchArgs a{};
  int64_t left = max_bytes;
  for (const TensorView& t : tensors) {
    if (left < 16) break;
    const int64_t b = std::min<int64_t>(left, static_cast<int64_t>(t.nbytes())) / 16 * 16;
    if (b == 0) continue;
    a.ptr[a.n] = static_cast<const char*>(t.data);
    a.bytes[a.n] = b;
    ++a.n;
    left -= b;
  }
  if (a.n == 0) return;
  launch(l2_prefetch_kernel, 1, kThreads, 0, cuda_stream(stream), a);
  TG_CHECK_LAUNCH("l2_prefetch_kernel");
}

}  // namespace tg::kernels::cuda
