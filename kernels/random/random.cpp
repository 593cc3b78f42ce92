#include "kernels/random/random.h"

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

}  // namespace tg::kernels
