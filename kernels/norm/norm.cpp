#include "kernels/norm/norm.h"

#include <cmath>

namespace tg::kernels {

namespace norm_detail {

void check_rows(const TensorView& t, int64_t rows, int64_t cols, DType dtype, Device device, const char* what) {
  TG_CHECK(!t.empty(), what, ": missing tensor");
  TG_CHECK(t.ndim() == 2, what, ": expected a 2-D [T, D] view, got ", t.describe());
  TG_CHECK(t.shape[0] == rows && t.shape[1] == cols, what, ": expected shape [", rows, ", ", cols, "], got ", t.shape);
  TG_CHECK(t.strides[1] == 1 && t.strides[0] >= cols, what,
           ": expected unit column stride and row stride >= D, got strides ", t.strides);
  TG_CHECK(t.dtype == dtype, what, ": expected dtype ", dtype, ", got ", t.dtype);
  check_device(t, device, what);
}

namespace {
void check_vector(const TensorView& t, int64_t n, Device device, const char* what, bool allow_bf16) {
  TG_CHECK(!t.empty(), what, ": missing tensor");
  TG_CHECK(t.dtype == DType::F32 || (allow_bf16 && t.dtype == DType::BF16), what, ": expected ",
           allow_bf16 ? "F32 or BF16" : "F32", ", got ", t.dtype);
  check_shape(t, Shape{n}, what);
  check_contiguous(t, what);
  check_device(t, device, what);
}
// x, the rows both directions normalise: a 2-D [T, D] BF16 / F32 view with D >= 1. Returns its dtype.
DType check_x(const TensorView& x, Device device, const char* what) {
  TG_CHECK(!x.empty() && x.ndim() == 2, what, ": x must be a 2-D [T, D] view, got ", x.describe());
  const DType a = x.dtype;
  TG_CHECK(a == DType::BF16 || a == DType::F32, what, ": x dtype must be BF16 or F32, got ", a);
  const int64_t t = x.shape[0], d = x.shape[1];
  TG_CHECK(d >= 1, what, ": the hidden size D must be >= 1, got ", d);
  check_rows(x, t, d, a, device, what);
  return a;
}
}  // namespace

DType check_forward_args(const TensorView& x, const TensorView& w, float eps, const TensorView& rstd,
                         const TensorView& residual, Device device, const char* what) {
  const DType a = check_x(x, device, what);
  const int64_t t = x.shape[0], d = x.shape[1];
  check_vector(w, d, device, what, true);
  check_vector(rstd, t, device, what, false);
  TG_CHECK(std::isfinite(eps) && eps > 0.0f, what, ": eps must be finite and > 0, got ", eps);
  if (!residual.empty()) check_rows(residual, t, d, a, device, what);
  return a;
}

void check_backward_args(const TensorView& dy, const TensorView& x, const TensorView& w, const TensorView& rstd,
                         const TensorView& dx, const TensorView& dw, const TensorView& workspace,
                         const TensorView& dresidual, Device device, const char* what) {
  const DType a = check_x(x, device, what);
  const int64_t t = x.shape[0], d = x.shape[1];
  check_rows(dy, t, d, a, device, what);
  check_rows(dx, t, d, a, device, what);
  if (!dresidual.empty()) check_rows(dresidual, t, d, a, device, what);
  check_vector(w, d, device, what, true);
  check_vector(rstd, t, device, what, false);
  check_vector(dw, d, device, what, true);
  TG_CHECK(!workspace.empty() && workspace.dtype == DType::F32, what, ": workspace must be F32, got ",
           workspace.describe());
  check_shape(workspace, Shape{rmsnorm_backward_workspace_rows(t), d}, what);
  check_contiguous(workspace, what);
  check_device(workspace, device, what);
}

}  // namespace norm_detail

void rmsnorm_forward(const TensorView& x, const TensorView& w, float eps, const TensorView& y, const TensorView& rstd,
                     const TensorView& residual, const TensorView& amax, Stream stream) {
  if (x.device == Device::CPU) return cpu::rmsnorm_forward(x, w, eps, y, rstd, residual, amax);
#if TEGEMMA_HAVE_CUDA
  cuda::rmsnorm_forward(x, w, eps, y, rstd, residual, amax, stream);
#else
  TG_FAIL("rmsnorm_forward: CUDA tensors in a build without CUDA");
#endif
}

void rmsnorm_forward_fp8(const TensorView& x, const TensorView& w, float eps, const Fp8View& out,
                         const TensorView& rstd, const TensorView& residual, Stream stream) {
  if (x.device == Device::CPU) return cpu::rmsnorm_forward_fp8(x, w, eps, out, rstd, residual);
#if TEGEMMA_HAVE_CUDA
  cuda::rmsnorm_forward_fp8(x, w, eps, out, rstd, residual, stream);
#else
  TG_FAIL("rmsnorm_forward_fp8: CUDA tensors in a build without CUDA");
#endif
}

void rmsnorm_backward(const TensorView& dy, const TensorView& x, const TensorView& w, const TensorView& rstd,
                      const TensorView& dx, const TensorView& dw, const TensorView& workspace,
                      const TensorView& dresidual, Stream stream) {
  if (x.device == Device::CPU) return cpu::rmsnorm_backward(dy, x, w, rstd, dx, dw, workspace, dresidual);
#if TEGEMMA_HAVE_CUDA
  cuda::rmsnorm_backward(dy, x, w, rstd, dx, dw, workspace, dresidual, stream);
#else
  TG_FAIL("rmsnorm_backward: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
