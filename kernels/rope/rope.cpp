#include "kernels/rope/rope.h"

#include <algorithm>
#include <cmath>

#include "kernels/elementwise/ieee_math.h"
#if TEGEMMA_HAVE_CUDA
#include "common/cuda_check.h"
#endif

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

Tensor rope_cos_sin_table(const TensorView& inv_freq, int64_t max_positions, Device device, Stream stream) {
  constexpr const char* what = "rope_cos_sin_table";
  TG_CHECK(max_positions >= 1, what, ": max_positions must be >= 1, got ", max_positions);
  TG_CHECK(!inv_freq.empty() && inv_freq.ndim() == 1 && inv_freq.dtype == DType::F32, what,
           ": inv_freq must be F32 [Dh/2], got ", inv_freq.describe());
  const int64_t half = inv_freq.shape[0];
  Tensor table = Tensor::empty(DType::F32, Shape{max_positions, 2, half}, device);
  if (device == Device::CPU) {
    const Tensor host = inv_freq.device == Device::CPU ? Tensor() : Tensor::copy_of(inv_freq, Device::CPU);
    cpu::rope_cos_sin_table(host.data() != nullptr ? host.view() : inv_freq, table.view());
    return table;
  }
#if TEGEMMA_HAVE_CUDA
  const Tensor dev = inv_freq.device == device ? Tensor() : Tensor::copy_of(inv_freq, device);
  cuda::rope_cos_sin_table(dev.data() != nullptr ? dev.view() : inv_freq, table.view(), stream);
  // Synchronous: built once, then read by kernels on any stream.
  TG_CHECK_CUDA(cudaStreamSynchronize(cuda_stream(stream)));
#else
  (void)stream;
  TG_FAIL(what, ": CUDA tensors in a build without CUDA");
#endif
  return table;
}

int64_t rope_table_positions(int64_t max_position_embeddings, int64_t head_dim) {
  TG_CHECK(head_dim >= 2 && head_dim % 2 == 0, "rope_table_positions: head_dim must be even and >= 2, got ", head_dim);
  constexpr int64_t kMaxBytes = int64_t{32} << 20;
  const int64_t cap = std::max<int64_t>(1, kMaxBytes / (head_dim * static_cast<int64_t>(sizeof(float))));
  return std::clamp<int64_t>(max_position_embeddings, 1, cap);
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

int64_t check_table(const TensorView& table, int64_t head_dim, Device device, const char* what) {
  if (table.empty()) return 0;
  TG_CHECK(table.dtype == DType::F32 && table.ndim() == 3 && table.shape[0] >= 1 && table.shape[1] == 2 &&
               table.shape[2] == head_dim / 2,
           what, ": table must be the F32 [positions, 2, Dh/2 = ", head_dim / 2,
           "] cos/sin table of this head_dim (rope_cos_sin_table), got ", table.describe());
  TG_CHECK(table.is_contiguous(), what, ": table must be contiguous, got strides ", table.strides);
  TG_CHECK(table.device == device, what, ": table must be on ", device, " (with q and k), got one on ", table.device);
  return table.shape[0];
}

void check_table_build(const TensorView& inv_freq, const TensorView& table, Device device, const char* what) {
  TG_CHECK(!inv_freq.empty() && inv_freq.ndim() == 1 && inv_freq.dtype == DType::F32, what,
           ": inv_freq must be F32 [Dh/2], got ", inv_freq.describe());
  check_contiguous(inv_freq, what);
  TG_CHECK(inv_freq.device == device, what, ": inv_freq must be on ", device, ", got one on ", inv_freq.device);
  check_table(table, 2 * inv_freq.shape[0], device, what);
  TG_CHECK(!table.empty(), what, ": table must have at least one position, got ", table.describe());
}

}  // namespace rope_detail

void rope_forward(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                  Stream stream, const TensorView& table) {
  const Device d = q.empty() ? k.device : q.device;
  if (d == Device::CPU) return cpu::rope_forward(q, k, positions, inv_freq, table);
#if TEGEMMA_HAVE_CUDA
  cuda::rope_forward(q, k, positions, inv_freq, stream, table);
#else
  TG_FAIL("rope_forward: CUDA tensors in a build without CUDA");
#endif
}

void rope_backward(const TensorView& dq, const TensorView& dk, const TensorView& positions, const TensorView& inv_freq,
                   Stream stream, const TensorView& table) {
  const Device d = dq.empty() ? dk.device : dq.device;
  if (d == Device::CPU) return cpu::rope_backward(dq, dk, positions, inv_freq, table);
#if TEGEMMA_HAVE_CUDA
  cuda::rope_backward(dq, dk, positions, inv_freq, stream, table);
#else
  TG_FAIL("rope_backward: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
