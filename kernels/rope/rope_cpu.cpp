// CPU twin of the split-half RoPE: simple loops with the rounding points of rope.h (the golden).
#include <cstdint>

#include "common/nvtx.h"
#include "kernels/elementwise/cpu_access.h"
#include "kernels/elementwise/ieee_math.h"
#include "kernels/rope/rope.h"

namespace tg::kernels::cpu {

namespace {

int64_t position_at(const TensorView& positions, int64_t t) {
  return positions.dtype == DType::I32 ? positions.ptr<int32_t>()[t] : positions.ptr<int64_t>()[t];
}

// sign = +1: forward rotation; -1: the transpose (backward). table: rope_cos_sin_table's [P, 2, Dh/2] or empty;
// read for positions in [0, P), computed otherwise (the CUDA kernels' rule; the same values either way).
void rotate(const TensorView& x, const TensorView& positions, const TensorView& inv_freq, const TensorView& table,
            float sign) {
  if (x.empty()) return;
  using ieee::fadd;
  using ieee::fmul;
  using ieee::fsub;
  const DType a = x.dtype;
  const int64_t t_count = x.shape[0], heads = x.shape[1], half = x.shape[2] / 2;
  for (int64_t t = 0; t < t_count; ++t) {
    const int64_t pos = position_at(positions, t);
    const auto p = static_cast<float>(pos);
    const bool in_table = !table.empty() && pos >= 0 && pos < table.shape[0];
    const float* row = in_table ? table.ptr<float>() + pos * 2 * half : nullptr;
    for (int64_t i = 0; i < half; ++i) {
      const ieee::SinCos sc =
          row != nullptr ? ieee::SinCos{row[half + i], row[i]} : ieee::sincos_angle(fmul(p, inv_freq.ptr<float>()[i]));
      const float c = round_to(a, sc.cos), s = round_to(a, sign * sc.sin);
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t o1 = t * x.strides[0] + h * x.strides[1] + i, o2 = o1 + half;
        const float x1 = cpu_access::load_at(x, o1), x2 = cpu_access::load_at(x, o2);
        cpu_access::store_at(x, o1, fsub(round_to(a, fmul(x1, c)), round_to(a, fmul(x2, s))));
        cpu_access::store_at(x, o2, fadd(round_to(a, fmul(x2, c)), round_to(a, fmul(x1, s))));
      }
    }
  }
}

}  // namespace

void rope_forward(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                  const TensorView& table) {
  TG_NVTX_FN();
  const auto dims = rope_detail::check_args(q, k, positions, inv_freq, Device::CPU, "rope_forward");
  rope_detail::check_table(table, dims.head_dim, Device::CPU, "rope_forward");
  rotate(q, positions, inv_freq, table, 1.0f);
  rotate(k, positions, inv_freq, table, 1.0f);
}

void rope_backward(const TensorView& dq, const TensorView& dk, const TensorView& positions,
                   const TensorView& inv_freq, const TensorView& table) {
  TG_NVTX_FN();
  const auto dims = rope_detail::check_args(dq, dk, positions, inv_freq, Device::CPU, "rope_backward");
  rope_detail::check_table(table, dims.head_dim, Device::CPU, "rope_backward");
  rotate(dq, positions, inv_freq, table, -1.0f);
  rotate(dk, positions, inv_freq, table, -1.0f);
}

void rope_cos_sin_table(const TensorView& inv_freq, const TensorView& table) {
  TG_NVTX_FN();
  rope_detail::check_table_build(inv_freq, table, Device::CPU, "rope_cos_sin_table");
  const int64_t positions = table.shape[0], half = table.shape[2];
  float* out = table.ptr<float>();
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      // The expression the kernels evaluate (rope_dev::cos_sin): the table holds their exact FP32 values.
      const ieee::SinCos sc = ieee::sincos_angle(ieee::fmul(static_cast<float>(p), inv_freq.ptr<float>()[i]));
      out[p * 2 * half + i] = sc.cos;
      out[p * 2 * half + half + i] = sc.sin;
    }
  }
}

}  // namespace tg::kernels::cpu
