#include "kernels/random/random.h"

#include <cmath>

namespace tg::kernels {

void fill_normal(const TensorView& out, uint64_t key, double std, Stream stream) {
  if (out.device == Device::CPU) return cpu::fill_normal(out, key, std);
#if TEGEMMA_HAVE_CUDA
  cuda::fill_normal(out, key, std, stream);
#else
  (void)stream;
  TG_FAIL("fill_normal: CUDA tensors in a build without CUDA");
#endif
}

namespace detail {
void check_fill_normal(const TensorView& out, double std, Device device, const char* what) {
  TG_CHECK(out.dtype == DType::BF16, what, ": out must be BF16, got ", out.dtype);
  TG_CHECK(std::isfinite(std) && std >= 0, what, ": std must be finite and >= 0, got ", std);
  check_device(out, device, what);
  check_contiguous(out, what);
}
}  // namespace detail

}  // namespace tg::kernels
