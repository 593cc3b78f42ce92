#include "kernels/elementwise/fp8_out.h"

#include <algorithm>
#include <cstring>

#include "common/numeric.h"
#include "kernels/elementwise/ieee_math.h"
#include "kernels/recipe/scale_math.h"

namespace tg::kernels::detail {

namespace {
void check_scalar_f32(const TensorView& t, Device device, const char* what, const char* member) {
  TG_CHECK(t.dtype == DType::F32 && t.numel() == 1 && t.is_contiguous(), what, ": ", member,
           " must be a contiguous F32 [1] view, got ", t.describe());
  TG_CHECK(t.device == device, what, ": ", member, " is on ", t.device, ", expected ", device);
}
}  // namespace

void check_fp8_output(const Fp8View& out, int64_t rows, int64_t cols, Device device, const char* what) {
  TG_CHECK(out.mode == ScalingMode::kPerTensor, what, ": the FP8 output must use per-tensor scaling, got ",
           scaling_mode_name(out.mode), " (block scaling is kernels/quantize's job)");
  TG_CHECK(out.has_rowwise() || out.has_columnwise(), what,
           ": the FP8 output has neither row-wise data nor a column-wise copy");
  if (out.has_rowwise()) {
    TG_CHECK(is_fp8(out.data.dtype), what, ": FP8 data must be F8_E4M3 or F8_E5M2, got ", out.data.dtype);
    check_device(out.data, device, what);
    check_contiguous(out.data, what);
    check_shape(out.data, Shape{rows, cols}, what);
  }
  if (out.has_columnwise()) {
    TG_CHECK(is_fp8(out.columnwise_data.dtype), what, ": FP8 columnwise_data must be F8_E4M3 or F8_E5M2, got ",
             out.columnwise_data.dtype);
    TG_CHECK(!out.has_rowwise() || out.columnwise_data.dtype == out.data.dtype, what, ": columnwise_data dtype ",
             out.columnwise_data.dtype, " differs from data dtype ", out.data.dtype);
    check_device(out.columnwise_data, device, what);
    check_contiguous(out.columnwise_data, what);
    check_shape(out.columnwise_data, Shape{cols, rows}, what);
  }
  TG_CHECK(!out.scale.empty(), what, ": the FP8 output needs its scale (F32 [1]): the kernel multiplies by it");
  check_scalar_f32(out.scale, device, what, "scale");
  if (!out.scale_inv.empty()) check_scalar_f32(out.scale_inv, device, what, "scale_inv");
  if (!out.columnwise_scale_inv.empty()) {
    check_scalar_f32(out.columnwise_scale_inv, device, what, "columnwise_scale_inv");
  }
  if (!out.amax.empty()) check_scalar_f32(out.amax, device, what, "amax");
}

Fp8OutputCpu::Fp8OutputCpu(const Fp8View& out) : out_(out), scale_(out.scale.ptr<float>()[0]) {
  rows_ = out.rows();
  cols_ = out.cols();
}

void Fp8OutputCpu::store(int64_t r, int64_t c, float v) {
  amax_bits_ = std::max(amax_bits_, ieee::abs_bits(v));
  const DType t = out_.dtype();
  const auto q = static_cast<uint8_t>(encode(t, ieee::fmul(v, scale_)));
  if (out_.has_rowwise()) out_.data.ptr<uint8_t>()[r * cols_ + c] = q;
  if (out_.has_columnwise()) out_.columnwise_data.ptr<uint8_t>()[c * rows_ + r] = q;
}

void Fp8OutputCpu::finish() {
  const float inv = scale_reciprocal(scale_);
  if (!out_.scale_inv.empty()) out_.scale_inv.ptr<float>()[0] = inv;
  if (!out_.columnwise_scale_inv.empty()) out_.columnwise_scale_inv.ptr<float>()[0] = inv;
  if (!out_.amax.empty()) amax_reduce_host(out_.amax, amax_bits_);
}

void amax_reduce_host(const TensorView& amax, uint32_t abs_bits) {
  uint32_t old;
  std::memcpy(&old, amax.data, 4);
  old = std::max(old, abs_bits);
  std::memcpy(amax.data, &old, 4);
}

}  // namespace tg::kernels::detail
