// CPU twin of kernels/quantize: simple loops over elements and blocks, rounding with common/numeric.h and the
// scale rules of kernels/recipe/scale_math.h. This is the golden the CUDA kernels are compared with bit for bit.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/numeric.h"
#include "common/nvtx.h"
#include "kernels/quantize/block_layout.h"
#include "kernels/quantize/quantize.h"
#include "kernels/recipe/scale_math.h"

namespace tg::kernels::cpu {

namespace {

constexpr uint32_t kCanonicalNan = 0x7FFFFFFFu;

float load(const TensorView& t, int64_t i) {
  switch (t.dtype) {
    case DType::F32:
      return t.ptr<const float>()[i];
    case DType::BF16:
      return bf16_bits_to_float(t.ptr<const uint16_t>()[i]);
    case DType::F16:
      return f16_bits_to_float(t.ptr<const uint16_t>()[i]);
    default:
      return decode(t.dtype, t.ptr<const uint8_t>()[i]);  // FP8
  }
}

void store(const TensorView& t, int64_t i, float v) {
  switch (t.dtype) {
    case DType::F32:
      t.ptr<float>()[i] = v;
      break;
    case DType::BF16:
      t.ptr<uint16_t>()[i] = float_to_bf16_bits(v);
      break;
    case DType::F16:
      t.ptr<uint16_t>()[i] = float_to_f16_bits(v);
      break;
    default:
      t.ptr<uint8_t>()[i] = static_cast<uint8_t>(encode(t.dtype, v));
  }
}

// NaN-propagating running max of |v| (the contract's amax): NaN sticks as the canonical NaN.
struct AmaxAcc {
  float m = 0.0f;
  bool nan = false;
  void add(float v) {
    const float a = std::fabs(v);
    if (std::isnan(a))
      nan = true;
    else if (a > m)
      m = a;
  }
  float value() const { return nan ? std::bit_cast<float>(kCanonicalNan) : m; }
};

// q = satfinite_rne(fl32(v * s)). A lone product cannot be contracted into an FMA.
uint8_t quantize_value(DType fp8, float v, float s) {
  const float p = v * s;
  return static_cast<uint8_t>(encode(fp8, p));
}

void quantize_per_tensor(const TensorView& x, const Fp8View& out) {
  const int64_t rows = x.shape[0], cols = x.shape[1];
  const DType fp8 = out.dtype();
  const float scale = out.scale.ptr<const float>()[0];
  AmaxAcc acc;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = load(x, r * cols + c);
      acc.add(v);
      const uint8_t q = quantize_value(fp8, v, scale);
      if (out.has_rowwise()) out.data.ptr<uint8_t>()[r * cols + c] = q;
      if (out.has_columnwise()) out.columnwise_data.ptr<uint8_t>()[c * rows + r] = q;
    }
  }
  const float scale_inv = scale_reciprocal(scale);
  if (out.has_rowwise()) out.scale_inv.ptr<float>()[0] = scale_inv;
  if (out.has_columnwise()) out.columnwise_scale_inv.ptr<float>()[0] = scale_inv;
  if (!out.amax.empty()) {
    // The device's atomicMax on the int bits of non-negative floats; the canonical NaN is the largest.
    int32_t* a = out.amax.ptr<int32_t>();
    const int32_t v = std::bit_cast<int32_t>(acc.value());
    if (v > *a) *a = v;
  }
}

// Quantizes the block [r0, r1) x [c0, c1) of x with one scale; writes the scale_inv at the block's slot of the
// row-wise and/or column-wise scale tensor and the quantized values into the requested copies.
void quantize_one_block(const TensorView& x, const Fp8View& out, const ScaleRule& rule, int64_t r0, int64_t r1,
                        int64_t c0, int64_t c1, bool to_rowwise, bool to_columnwise) {
  const int64_t rows = x.shape[0], cols = x.shape[1];
  AmaxAcc acc;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = c0; c < c1; ++c) acc.add(load(x, r * cols + c));
  }
  const float s = scale_from_amax(acc.value(), rule);
  const float s_inv = scale_reciprocal(s);
  const DType fp8 = out.dtype();
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = c0; c < c1; ++c) {
      const uint8_t q = quantize_value(fp8, load(x, r * cols + c), s);
      if (to_rowwise) out.data.ptr<uint8_t>()[r * cols + c] = q;
      if (to_columnwise) out.columnwise_data.ptr<uint8_t>()[c * rows + r] = q;
    }
  }
  if (to_rowwise) out.scale_inv.ptr<float>()[block_scale_index(out.mode, rows, cols, false, r0, c0)] = s_inv;
  if (to_columnwise) {
    out.columnwise_scale_inv.ptr<float>()[block_scale_index(out.mode, rows, cols, true, r0, c0)] = s_inv;
  }
}

void quantize_block(const TensorView& x, const Fp8View& out, const BlockQuantOptions& opts) {
  const int64_t rows = x.shape[0], cols = x.shape[1];
  const ScaleRule rule{static_cast<float>(dtype_max(out.dtype())), opts.amax_epsilon, opts.power_2_scale,
                       detail::input_dtype_max(x.dtype)};
  constexpr int64_t B = kBlockLen;
  if (out.mode == ScalingMode::kBlock128x128) {
    for (int64_t r0 = 0; r0 < rows; r0 += B) {
      for (int64_t c0 = 0; c0 < cols; c0 += B) {
        quantize_one_block(x, out, rule, r0, std::min(r0 + B, rows), c0, std::min(c0 + B, cols), out.has_rowwise(),
                           out.has_columnwise());
      }
    }
    return;
  }
  // kBlock1x128: the row-wise copy in 1x128 strips of x, the column-wise copy in 128x1 blocks of x (1x128 strips
  // of x^T), each quantized from x.
  if (out.has_rowwise()) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c0 = 0; c0 < cols; c0 += B) {
        quantize_one_block(x, out, rule, r, r + 1, c0, std::min(c0 + B, cols), true, false);
      }
    }
  }
  if (out.has_columnwise()) {
    for (int64_t c = 0; c < cols; ++c) {
      for (int64_t r0 = 0; r0 < rows; r0 += B) {
        quantize_one_block(x, out, rule, r0, std::min(r0 + B, rows), c, c + 1, false, true);
      }
    }
  }
}

}  // namespace

void quantize(const TensorView& x, const Fp8View& out, const BlockQuantOptions& block) {
  TG_NVTX_FN();
  detail::check_quantize_args(x, out, Device::CPU, "quantize");
  if (out.mode == ScalingMode::kPerTensor)
    quantize_per_tensor(x, out);
  else
    quantize_block(x, out, block);
}

void compute_amax(const TensorView& x, const TensorView& amax) {
  TG_NVTX_FN();
  detail::check_amax_args(x, amax, Device::CPU, "compute_amax");
  AmaxAcc acc;
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) acc.add(load(x, i));
  amax.ptr<float>()[0] = acc.value();
}

void dequantize(const Fp8View& in, bool columnwise, const TensorView& y) {
  TG_NVTX_FN();
  detail::check_dequantize_args(in, columnwise, y, Device::CPU, "dequantize");
  const TensorView& q = columnwise ? in.columnwise_data : in.data;
  const float* s = (columnwise ? in.columnwise_scale_inv : in.scale_inv).ptr<const float>();
  const int64_t m = q.shape[0], k = q.shape[1];
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      const float scale_inv = in.mode == ScalingMode::kPerTensor ? s[0] : s[block_scale_offset(in.mode, m, k, i, j)];
      store(y, i * k + j, load(q, i * k + j) * scale_inv);
    }
  }
}

}  // namespace tg::kernels::cpu
