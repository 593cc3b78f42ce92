#include "kernels/convert/convert.h"

#include "common/nvtx.h"

namespace tg::kernels {

void convert(const TensorView& src, const TensorView& dst, Stream stream) {
  TG_CHECK(src.device == dst.device, "convert: src is on ", src.device, ", dst on ", dst.device);
  if (src.device == Device::CPU) return cpu::convert(src, dst);
#if TEGEMMA_HAVE_CUDA
  cuda::convert(src, dst, stream);
#else
  TG_FAIL("convert: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
