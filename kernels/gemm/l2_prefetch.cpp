// l2_prefetch dispatcher and argument checks (kernels/gemm/l2_prefetch.h). The CPU backend has nothing to do.
#include "kernels/gemm/l2_prefetch.h"

#include <cstdint>

#include "common/check.h"

namespace tg::kernels {

namespace detail {
Device check_l2_prefetch(const std::vector<TensorView>& tensors, int64_t max_bytes) {
  TG_CHECK(static_cast<int64_t>(tensors.size()) <= kL2PrefetchMaxTensors, "l2_prefetch: at most ",
           kL2PrefetchMaxTensors, " tensors per call, got ", tensors.size());
  TG_CHECK(max_bytes >= 0, "l2_prefetch: max_bytes must be >= 0, got ", max_bytes);
  if (tensors.empty()) return Device::CPU;
  const Device dev = tensors.front().device;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& t = tensors[i];
    TG_CHECK(!t.empty(), "l2_prefetch: tensor ", i, " is empty (null data)");
    TG_CHECK(t.is_contiguous(), "l2_prefetch: tensor ", i, " must be contiguous, got ", t.describe());
    TG_CHECK(t.device == dev, "l2_prefetch: tensor ", i, " is on ", t.device, ", tensor 0 on ", dev);
    TG_CHECK(dev == Device::CPU || reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0, "l2_prefetch: tensor ", i,
             "'s data pointer ", t.data, " must be 16-byte aligned");
  }
  return dev;
}
}  // namespace detail

void l2_prefetch(const std::vector<TensorView>& tensors, int64_t max_bytes, Stream stream) {
  const Device dev = detail::check_l2_prefetch(tensors, max_bytes);
  if (dev == Device::CPU || max_bytes == 0) return;  // a hint: the CPU twin does nothing
#if TEGEMMA_HAVE_CUDA
  cuda::l2_prefetch(tensors, max_bytes, stream);
#else
  (void)stream;
  TG_FAIL("l2_prefetch: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
