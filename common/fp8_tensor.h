// The FP8 tensor bundle: FP8 data never travels without its scaling metadata.
//
// Scaling modes (Hopper recipes, see docs/design.md):
//   kPerTensor    : one FP32 scale for the whole tensor (DelayedScaling, Float8CurrentScaling).
//                   quantized = satfinite(x * scale); dequantized = q * scale_inv; amax = max |x|.
//   kBlock1x128   : one FP32 scale per 1x128 strip along the last dimension (activations, gradients).
//   kBlock128x128 : one FP32 scale per 128x128 tile (weights).
// Block scale tensors use the layout cuBLASLt's block-scaled GEMM reads; that layout is defined once,
// in kernels/quantize/block_layout.h, which also allocates these bundles.
//
// `columnwise_*` is the transposed copy ([cols, rows]) that TN-only Hopper FP8 GEMMs need for the
// dgrad/wgrad products. Inference weights carry only the row-wise copy.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/tensor.h"

namespace tg {

enum class ScalingMode : uint8_t { kPerTensor, kBlock1x128, kBlock128x128 };
std::string_view scaling_mode_name(ScalingMode m);

// Non-owning FP8 tensor. `data` is [rows, cols] (E4M3 or E5M2), row-major.
struct Fp8View {
  ScalingMode mode = ScalingMode::kPerTensor;
  TensorView data;                  // [rows, cols] FP8, may be empty when only the columnwise copy exists
  TensorView scale_inv;             // F32; [1] per tensor, block layout otherwise
  TensorView columnwise_data;       // [cols, rows] FP8 (transpose), optional
  TensorView columnwise_scale_inv;  // F32; scale_inv of columnwise_data
  TensorView scale;                 // per-tensor only: F32 [1], the scale the quantizer multiplies by
  TensorView amax;                  // per-tensor only: F32 [1], max |x| (max-reduced into), optional

  DType dtype() const { return !data.empty() ? data.dtype : columnwise_data.dtype; }
  int64_t rows() const { return !data.empty() ? data.shape[0] : columnwise_data.shape[1]; }
  int64_t cols() const { return !data.empty() ? data.shape[1] : columnwise_data.shape[0]; }
  bool has_rowwise() const { return !data.empty(); }
  bool has_columnwise() const { return !columnwise_data.empty(); }
  Device device() const { return !data.empty() ? data.device : columnwise_data.device; }
};

// Owning FP8 tensor: the buffers behind an Fp8View. Built by kernels/quantize (which knows the
// block-scale layouts) or by Fp8Tensor::per_tensor for the common per-tensor case.
class Fp8Tensor {
 public:
  Fp8Tensor() = default;
  // Per-tensor scaling: data [rows, cols] (if rowwise), its transpose (if columnwise), scale,
  // scale_inv and amax scalars. scale is initialised to 1, scale_inv to 1, amax to 0.
  static Fp8Tensor per_tensor(DType fp8, int64_t rows, int64_t cols, bool rowwise, bool columnwise,
                              Device device);
  // Generic constructor used by the block-scaling allocator.
  static Fp8Tensor with_layout(ScalingMode mode, DType fp8, int64_t rows, int64_t cols, bool rowwise,
                               bool columnwise, const Shape& scale_shape, const Shape& columnwise_scale_shape,
                               Device device);

  const Fp8View& view() const { return view_; }
  Fp8View& view() { return view_; }

 private:
  Tensor data_, scale_inv_, col_data_, col_scale_inv_, scale_, amax_;
  Fp8View view_;
};

}  // namespace tg
