#include "kernels/activation/activation.h"

namespace tg::kernels {

namespace activation_detail {

void check_act(const TensorView& t, int64_t rows, int64_t cols, Device device, const char* what, const DType* dtype) {
  TG_CHECK(!t.empty(), what, ": missing tensor");
  TG_CHECK(t.ndim() == 2, what, ": expected a 2-D view, got ", t.describe());
  TG_CHECK(t.shape[0] == rows && t.shape[1] == cols, what, ": expected shape [", rows, ", ", cols, "], got ", t.shape);
  TG_CHECK(t.strides[1] == 1 && t.strides[0] >= cols, what,
           ": expected unit column stride and row stride >= columns, got strides ", t.strides);
  TG_CHECK(t.dtype == DType::BF16 || t.dtype == DType::F32, what, ": expected BF16 or F32, got ", t.dtype);
  if (dtype != nullptr) TG_CHECK(t.dtype == *dtype, what, ": expected dtype ", *dtype, ", got ", t.dtype);
  check_device(t, device, what);
}

int64_t check_fc1(const TensorView& fc1, Device device, const char* what) {
  TG_CHECK(!fc1.empty() && fc1.ndim() == 2, what, ": fc1 must be a 2-D [T, 2F] view, got ", fc1.describe());
  TG_CHECK(fc1.shape[1] % 2 == 0, what, ": fc1's width must be even ([gate | up]), got ", fc1.shape[1]);
  check_act(fc1, fc1.shape[0], fc1.shape[1], device, what);
  return fc1.shape[1] / 2;
}

void check_amax(const TensorView& amax, Device device, const char* what) {
  if (amax.empty()) return;
  TG_CHECK(amax.dtype == DType::F32 && amax.numel() == 1 && amax.is_contiguous(), what,
           ": amax must be a contiguous F32 [1] view, got ", amax.describe());
  check_device(amax, device, what);
}

}  // namespace activation_detail

void geglu_forward(const TensorView& fc1, const TensorView& out, const TensorView& amax, Stream stream) {
  if (fc1.device == Device::CPU) return cpu::geglu_forward(fc1, out, amax);
#if TEGEMMA_HAVE_CUDA
  cuda::geglu_forward(fc1, out, amax, stream);
#else
  TG_FAIL("geglu_forward: CUDA tensors in a build without CUDA");
#endif
}

void geglu_forward_fp8(const TensorView& fc1, const Fp8View& out, Stream stream) {
  if (fc1.device == Device::CPU) return cpu::geglu_forward_fp8(fc1, out);
#if TEGEMMA_HAVE_CUDA
  cuda::geglu_forward_fp8(fc1, out, stream);
#else
  TG_FAIL("geglu_forward_fp8: CUDA tensors in a build without CUDA");
#endif
}

void geglu_backward(const TensorView& dout, const TensorView& fc1, const TensorView& dfc1, Stream stream) {
  if (fc1.device == Device::CPU) return cpu::geglu_backward(dout, fc1, dfc1);
#if TEGEMMA_HAVE_CUDA
  cuda::geglu_backward(dout, fc1, dfc1, stream);
#else
  TG_FAIL("geglu_backward: CUDA tensors in a build without CUDA");
#endif
}

void geglu_backward_fp8(const TensorView& dout, const TensorView& fc1, const Fp8View& dfc1, Stream stream) {
  if (fc1.device == Device::CPU) return cpu::geglu_backward_fp8(dout, fc1, dfc1);
#if TEGEMMA_HAVE_CUDA
  cuda::geglu_backward_fp8(dout, fc1, dfc1, stream);
#else
  TG_FAIL("geglu_backward_fp8: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
