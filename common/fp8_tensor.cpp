#include "common/fp8_tensor.h"

#include <vector>

namespace tg {

std::string_view scaling_mode_name(ScalingMode m) {
  switch (m) {
    case ScalingMode::kPerTensor: return "per_tensor";
    case ScalingMode::kBlock1x128: return "block_1x128";
    case ScalingMode::kBlock128x128: return "block_128x128";
  }
  return "?";
}

namespace {
Tensor f32_filled(const Shape& shape, float value, Device device) {
  std::vector<float> host(static_cast<std::size_t>(shape.numel()), value);
  Tensor t = Tensor::empty(DType::F32, shape, device);
  copy_bytes(t.view(), TensorView(host.data(), DType::F32, shape, Device::CPU));
  return t;
}
}  // namespace

Fp8Tensor Fp8Tensor::with_layout(ScalingMode mode, DType fp8, int64_t rows, int64_t cols, bool rowwise,
                                 bool columnwise, const Shape& scale_shape, const Shape& columnwise_scale_shape,
                                 Device device) {
  TG_CHECK(is_fp8(fp8), "Fp8Tensor: expected an FP8 dtype (F8_E4M3 or F8_E5M2), got ", fp8);
  TG_CHECK(rowwise || columnwise, "Fp8Tensor: at least one of rowwise/columnwise must be requested");
  TG_CHECK(rows >= 0 && cols >= 0, "Fp8Tensor: negative shape [", rows, ", ", cols, "]");
  Fp8Tensor t;
  t.view_.mode = mode;
  if (rowwise) {
    t.data_ = Tensor::empty(fp8, {rows, cols}, device);
    t.scale_inv_ = f32_filled(scale_shape, 1.0f, device);
    t.view_.data = t.data_.view();
    t.view_.scale_inv = t.scale_inv_.view();
  }
  if (columnwise) {
    t.col_data_ = Tensor::empty(fp8, {cols, rows}, device);
    t.col_scale_inv_ = f32_filled(columnwise_scale_shape, 1.0f, device);
    t.view_.columnwise_data = t.col_data_.view();
    t.view_.columnwise_scale_inv = t.col_scale_inv_.view();
  }
  return t;
}

Fp8Tensor Fp8Tensor::per_tensor(DType fp8, int64_t rows, int64_t cols, bool rowwise, bool columnwise,
                                Device device) {
  Fp8Tensor t = with_layout(ScalingMode::kPerTensor, fp8, rows, cols, rowwise, columnwise, Shape{1}, Shape{1},
                            device);
  // Per-tensor scaling shares one scale_inv between the row-wise and column-wise copies: both are
  // quantized with the same scale in the same pass.
  if (rowwise && columnwise) t.view_.columnwise_scale_inv = t.view_.scale_inv;
  t.scale_ = f32_filled(Shape{1}, 1.0f, device);
  t.amax_ = f32_filled(Shape{1}, 0.0f, device);
  t.view_.scale = t.scale_.view();
  t.view_.amax = t.amax_.view();
  return t;
}

}  // namespace tg
