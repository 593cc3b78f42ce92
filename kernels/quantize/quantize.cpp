#include "kernels/quantize/quantize.h"

#include <string>

#include "common/check.h"
#include "kernels/quantize/block_layout.h"

namespace tg::kernels {

void quantize(const TensorView& x, const Fp8View& out, const BlockQuantOptions& block, Stream stream) {
  TG_CHECK(x.device == out.device(), "quantize: x is on ", x.device, ", the FP8 output on ", out.device());
  if (x.device == Device::CPU) return cpu::quantize(x, out, block);
#if TEGEMMA_HAVE_CUDA
  cuda::quantize(x, out, block, stream);
#else
  (void)stream;
  TG_FAIL("quantize: CUDA tensors in a build without CUDA");
#endif
}

void compute_amax(const TensorView& x, const TensorView& amax, Stream stream) {
  TG_CHECK(x.device == amax.device, "compute_amax: x is on ", x.device, ", amax on ", amax.device);
  if (x.device == Device::CPU) return cpu::compute_amax(x, amax);
#if TEGEMMA_HAVE_CUDA
  cuda::compute_amax(x, amax, stream);
#else
  (void)stream;
  TG_FAIL("compute_amax: CUDA tensors in a build without CUDA");
#endif
}

void dequantize(const Fp8View& in, bool columnwise, const TensorView& y, Stream stream) {
  TG_CHECK(in.device() == y.device, "dequantize: the FP8 input is on ", in.device(), ", y on ", y.device);
  if (y.device == Device::CPU) return cpu::dequantize(in, columnwise, y);
#if TEGEMMA_HAVE_CUDA
  cuda::dequantize(in, columnwise, y, stream);
#else
  (void)stream;
  TG_FAIL("dequantize: CUDA tensors in a build without CUDA");
#endif
}

namespace detail {

namespace {

std::string arg(const char* who, const char* name) { return std::string(who) + "(" + name + ")"; }

void check_input(const TensorView& x, Device device, const char* who) {
  const std::string w = arg(who, "x");
  TG_CHECK(!x.empty(), w, ": null tensor");
  check_device(x, device, w.c_str());
  TG_CHECK(x.ndim() == 2, w, ": expected a 2-D view [rows, cols] (flatten the leading dims), got shape ", x.shape);
  check_contiguous(x, w.c_str());
  TG_CHECK(x.dtype == DType::F32 || x.dtype == DType::BF16 || x.dtype == DType::F16, w,
           ": expected dtype F32, BF16 or F16, got ", x.dtype);
}

void check_f32_scalar(const TensorView& t, Device device, const std::string& w) {
  TG_CHECK(!t.empty(), w, ": missing (expected an F32[1] device scalar)");
  check_device(t, device, w.c_str());
  check_dtype(t, DType::F32, w.c_str());
  check_shape(t, Shape{1}, w.c_str());
}

void check_fp8_copy(const TensorView& t, const Shape& shape, Device device, const std::string& w) {
  check_device(t, device, w.c_str());
  TG_CHECK(is_fp8(t.dtype), w, ": expected dtype F8_E4M3 or F8_E5M2, got ", t.dtype);
  check_shape(t, shape, w.c_str());
  check_contiguous(t, w.c_str());
}

}  // namespace

void check_quantize_args(const TensorView& x, const Fp8View& out, Device device, const char* who) {
  check_input(x, device, who);
  const int64_t rows = x.shape[0], cols = x.shape[1];
  TG_CHECK(out.has_rowwise() || out.has_columnwise(), who,
           ": the FP8 output has neither row-wise nor column-wise data to write");
  if (out.has_rowwise()) check_fp8_copy(out.data, Shape{rows, cols}, device, arg(who, "out.data"));
  if (out.has_columnwise()) {
    check_fp8_copy(out.columnwise_data, Shape{cols, rows}, device, arg(who, "out.columnwise_data"));
    TG_CHECK(!out.has_rowwise() || out.columnwise_data.dtype == out.data.dtype, who, ": row-wise data is ",
             out.data.dtype, " but column-wise data is ", out.columnwise_data.dtype);
  }
  switch (out.mode) {
    case ScalingMode::kPerTensor:
      check_f32_scalar(out.scale, device, arg(who, "out.scale"));
      if (out.has_rowwise()) check_f32_scalar(out.scale_inv, device, arg(who, "out.scale_inv"));
      if (out.has_columnwise()) {
        check_f32_scalar(out.columnwise_scale_inv, device, arg(who, "out.columnwise_scale_inv"));
      }
      if (!out.amax.empty()) check_f32_scalar(out.amax, device, arg(who, "out.amax"));
      break;
    case ScalingMode::kBlock1x128:
    case ScalingMode::kBlock128x128: {
      check_block_scales(out, arg(who, "out").c_str());
      if (out.has_rowwise()) check_device(out.scale_inv, device, arg(who, "out.scale_inv").c_str());
      if (out.has_columnwise()) {
        check_device(out.columnwise_scale_inv, device, arg(who, "out.columnwise_scale_inv").c_str());
      }
      break;
    }
  }
}

void check_amax_args(const TensorView& x, const TensorView& amax, Device device, const char* who) {
  check_input(x, device, who);
  check_f32_scalar(amax, device, arg(who, "amax"));
}

void check_dequantize_args(const Fp8View& in, bool columnwise, const TensorView& y, Device device, const char* who) {
  const TensorView& q = columnwise ? in.columnwise_data : in.data;
  const TensorView& s = columnwise ? in.columnwise_scale_inv : in.scale_inv;
  TG_CHECK(!q.empty(), who, ": the FP8 input has no ", columnwise ? "column-wise" : "row-wise", " data");
  TG_CHECK(q.ndim() == 2, who, ": expected 2-D FP8 data, got shape ", q.shape);
  check_fp8_copy(q, q.shape, device, arg(who, columnwise ? "in.columnwise_data" : "in.data"));
  const std::string ws = arg(who, columnwise ? "in.columnwise_scale_inv" : "in.scale_inv");
  if (in.mode == ScalingMode::kPerTensor) {
    check_f32_scalar(s, device, ws);
  } else {
    TG_CHECK(!s.empty(), ws, ": missing");
    check_device(s, device, ws.c_str());
    check_dtype(s, DType::F32, ws.c_str());
    check_contiguous(s, ws.c_str());
    // q is [m, k] as stored: the row-wise copy of X [m, k], or the column-wise copy of X [k, m].
    const int64_t rows = columnwise ? q.shape[1] : q.shape[0], cols = columnwise ? q.shape[0] : q.shape[1];
    check_shape(s, block_scale_shape(in.mode, rows, cols, columnwise), ws.c_str());
  }
  const std::string wy = arg(who, "y");
  TG_CHECK(!y.empty(), wy, ": null tensor");
  check_device(y, device, wy.c_str());
  TG_CHECK(y.dtype == DType::F32 || y.dtype == DType::BF16 || y.dtype == DType::F16, wy,
           ": expected dtype F32, BF16 or F16, got ", y.dtype);
  check_shape(y, q.shape, wy.c_str());
  check_contiguous(y, wy.c_str());
}

float input_dtype_max(DType t) {
  TG_CHECK(t == DType::F32 || t == DType::BF16 || t == DType::F16, "input_dtype_max: expected F32, BF16 or F16, got ",
           t);
  return static_cast<float>(dtype_max(t));  // exact: each is a float value
}

}  // namespace detail

}  // namespace tg::kernels
