#include "kernels/rope/rope.h"

#include <cmath>

#include "kernels/elementwise/ieee_math.h"

namespace tg::kernels {

std::vector<float> rope_inv_freq(int64_t head_dim, float theta, float scaling) {
  TG_CHECK(head_dim >= 2 && head_dim % 2 == 0, "rope_inv_freq: head_dim must be even and >= 2, got ", head_dim);
  TG_CHECK(std::isfinite(theta) && theta > 0.0f, "rope_inv_freq: theta must be finite and > 0, got ", theta);
  TG_CHECK(std::isfinite(scaling) && scaling > 0.0f, "rope_inv_freq: scaling must be finite and > 0, got ", scaling);
  std::vector<float> f(static_cast<size_t>(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const float e = ieee::fdiv(static_cast<float>(2 * i), static_cast<float>(head_dim));
    const auto p = static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(e)));
    f[i] = ieee::fdiv(ieee::fdiv(1.0f, p), scaling);
  }
  return f;
}

Tensor rope_inv_freq_table(int64_t head_dim, float theta, float scaling, Device device) {
  std::vector<float> f = rope_inv_freq(head_dim, theta, scaling);
  Tensor t = Tensor::empty(DType::F32, Shape{head_dim / 2}, device);
  copy_bytes(t.view(), TensorView(f.data(), DType::F32, Shape{head_dim / 2}, Device::CPU));
  return t;
}

namespace rope_detail {

namespace {
void check_heads(const TensorView& x, Device device, const char* what, const char* name) {
  TG_CHECK(x.ndim() == 3, what, ": ", name, " must be a 3-D [T, heads, Dh] view, got ", x.describe());
  TG_CHECK(x.dtype == DType::BF16 || x.dtype == DType::F32, what, ": ", name, " must be BF16 or F32, got ", x.dtype);
  TG_CHECK(x.strides[2] == 1, what, ": ", name, " must have a unit innermost stride, got strides ", x.strides);
  TG_CHECK(x.strides[0] >= 0 && x.strides[1] >= 0, what, ": ", name, " has negative strides ", x.strides);
  check_device(x, device, what);
}
}  // namespace

Dims check_args(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                Device device, const char* what) {
  TG_CHECK(!q.empty() || !k.empty(), what, ": q and k are both empty");
  if (!q.empty()) check_heads(q, device, what, "q");
  if (!k.empty()) check_heads(k, device, what, "k");
  const TensorView& ref = q.empty() ? k : q;
  const int64_t t = ref.shape[0], dh = ref.shape[2];
  if (!q.empty() && !k.empty()) {
    TG_CHECK(k.shape[0] == t && k.shape[2] == dh && k.dtype == q.dtype, what, ": k ", k.describe(),
             " does not match q ", q.describe(), " (same T, Dh and dtype expected)");
  }
  TG_CHECK(dh >= 2 && dh % 2 == 0 && dh <= 1024, what, ": head_dim must be even and in [2, 1024], got ", dh);
  TG_CHECK(!positions.empty() && (positions.dtype == DType::I32 || positions.dtype == DType::I64), what,
           ": positions must be I32 or I64, got ", positions.describe());
  check_shape(positions, Shape{t}, what);
  check_contiguous(positions, what);
  check_device(positions, device, what);
  TG_CHECK(!inv_freq.empty() && inv_freq.dtype == DType::F32, what, ": inv_freq must be F32 [Dh/2], got ",
           inv_freq.describe());
  check_shape(inv_freq, Shape{dh / 2}, what);
  check_contiguous(inv_freq, what);
  check_device(inv_freq, device, what);
  return {t, dh};
}

}  // namespace rope_detail

void rope_forward(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                  Stream stream) {
  const Device d = q.empty() ? k.device : q.device;
  if (d == Device::CPU) return cpu::rope_forward(q, k, positions, inv_freq);
#if TEGEMMA_HAVE_CUDA
  cuda::rope_forward(q, k, positions, inv_freq, stream);
#else
  TG_FAIL("rope_forward: CUDA tensors in a build without CUDA");
#endif
}

void rope_backward(const TensorView& dq, const TensorView& dk, const TensorView& positions, const TensorView& inv_freq,
                   Stream stream) {
  const Device d = dq.empty() ? dk.device : dq.device;
  if (d == Device::CPU) return cpu::rope_backward(dq, dk, positions, inv_freq);
#if TEGEMMA_HAVE_CUDA
  cuda::rope_backward(dq, dk, positions, inv_freq, stream);
#else
  TG_FAIL("rope_backward: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
