// SidePrefetch (kernels/gemm/l2_prefetch.h): the side stream, its fork / join events and the argument checks. The
// request kernel is in l2_prefetch.cu; the CPU backend has nothing to do.
#include "kernels/gemm/l2_prefetch.h"

#include <cstdint>
#include <utility>

#include "common/check.h"
#include "common/nvtx.h"
#if TEGEMMA_HAVE_CUDA
#include "common/cuda_check.h"
#endif

namespace tg::kernels {

namespace detail {
Device check_l2_prefetch(const std::vector<TensorView>& tensors, int64_t max_bytes) {
  TG_CHECK(static_cast<int64_t>(tensors.size()) <= kL2PrefetchMaxTensors, "l2 prefetch: at most ",
           kL2PrefetchMaxTensors, " tensors per call, got ", tensors.size());
  TG_CHECK(max_bytes >= 0, "l2 prefetch: max_bytes must be >= 0, got ", max_bytes);
  if (tensors.empty()) return Device::CPU;
  const Device dev = tensors.front().device;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& t = tensors[i];
    TG_CHECK(!t.empty(), "l2 prefetch: tensor ", i, " is empty (null data)");
    TG_CHECK(t.is_contiguous(), "l2 prefetch: tensor ", i, " must be contiguous, got ", t.describe());
    TG_CHECK(t.device == dev, "l2 prefetch: tensor ", i, " is on ", t.device, ", tensor 0 on ", dev);
    TG_CHECK(dev == Device::CPU || reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0, "l2 prefetch: tensor ", i,
             "'s data pointer ", t.data, " must be 16-byte aligned");
  }
  return dev;
}
}  // namespace detail

SidePrefetch::SidePrefetch(SidePrefetch&& o) noexcept
    : side_(std::exchange(o.side_, nullptr)),
      fork_(std::exchange(o.fork_, nullptr)),
      done_(std::exchange(o.done_, nullptr)),
      pending_(std::exchange(o.pending_, false)) {}

SidePrefetch& SidePrefetch::operator=(SidePrefetch&& o) noexcept {
  std::swap(side_, o.side_);
  std::swap(fork_, o.fork_);
  std::swap(done_, o.done_);
  std::swap(pending_, o.pending_);
  return *this;
}

SidePrefetch::~SidePrefetch() {
#if TEGEMMA_HAVE_CUDA
  if (side_ != nullptr) {
    cudaStreamSynchronize(static_cast<cudaStream_t>(side_));
    cudaStreamDestroy(static_cast<cudaStream_t>(side_));
  }
  if (fork_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(fork_));
  if (done_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(done_));
#endif
}

void SidePrefetch::prepare() {
#if TEGEMMA_HAVE_CUDA
  if (side_ != nullptr) return;
  cudaStream_t s = nullptr;
  TG_CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  side_ = s;
  cudaEvent_t f = nullptr, d = nullptr;
  TG_CHECK_CUDA(cudaEventCreateWithFlags(&f, cudaEventDisableTiming));
  fork_ = f;
  TG_CHECK_CUDA(cudaEventCreateWithFlags(&d, cudaEventDisableTiming));
  done_ = d;
#endif
}

void SidePrefetch::issue(const std::vector<TensorView>& tensors, int64_t max_bytes, Stream stream) {
  TG_NVTX_RANGE("SidePrefetch::issue");
  const Device dev = detail::check_l2_prefetch(tensors, max_bytes);
  if (dev == Device::CPU || max_bytes == 0) return;  // a hint: the CPU backend has no cache to warm
#if TEGEMMA_HAVE_CUDA
  prepare();
  const auto side = static_cast<cudaStream_t>(side_);
  TG_CHECK_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(fork_), cuda_stream(stream)));
  TG_CHECK_CUDA(cudaStreamWaitEvent(side, static_cast<cudaEvent_t>(fork_), 0));
  cuda::l2_prefetch(tensors, max_bytes, Stream{side});
  TG_CHECK_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(done_), side));
  pending_ = true;
#else
  (void)stream;
  TG_FAIL("l2 prefetch: CUDA tensors in a build without CUDA");
#endif
}

void SidePrefetch::join(Stream stream) {
  if (!pending_) return;
#if TEGEMMA_HAVE_CUDA
  TG_CHECK_CUDA(cudaStreamWaitEvent(cuda_stream(stream), static_cast<cudaEvent_t>(done_), 0));
#else
  (void)stream;
#endif
  pending_ = false;
}

}  // namespace tg::kernels
