#include <cstring>

#include "common/nvtx.h"
#include "common/numeric.h"
#include "kernels/convert/convert.h"

namespace tg::kernels::cpu {

namespace {
float load(const TensorView& t, int64_t i) {
  switch (dtype_size(t.dtype)) {
    case 4: { float f; std::memcpy(&f, t.ptr<char>() + 4 * i, 4); return f; }
    case 2: { uint16_t b; std::memcpy(&b, t.ptr<char>() + 2 * i, 2); return decode(t.dtype, b); }
    default: return decode(t.dtype, t.ptr<uint8_t>()[i]);
  }
}
void store(const TensorView& t, int64_t i, float v) {
  const uint32_t bits = encode(t.dtype, v);
  switch (dtype_size(t.dtype)) {
    case 4: std::memcpy(t.ptr<char>() + 4 * i, &bits, 4); break;
    case 2: { const uint16_t b = static_cast<uint16_t>(bits); std::memcpy(t.ptr<char>() + 2 * i, &b, 2); break; }
    default: t.ptr<uint8_t>()[i] = static_cast<uint8_t>(bits);
  }
}
void check_float(DType t, const char* what) {
  TG_CHECK(t == DType::F32 || t == DType::BF16 || t == DType::F16 || is_fp8(t), "convert: ", what, " dtype ", t,
           " unsupported (expected F32, BF16, F16, F8_E4M3 or F8_E5M2)");
}
}  // namespace

void convert(const TensorView& src, const TensorView& dst) {
  TG_NVTX_FN();
  check_device(src, Device::CPU, "convert(src)");
  check_device(dst, Device::CPU, "convert(dst)");
  check_contiguous(src, "convert(src)");
  check_contiguous(dst, "convert(dst)");
  check_shape(dst, src.shape, "convert(dst)");
  check_float(src.dtype, "src");
  check_float(dst.dtype, "dst");
  const int64_t n = src.numel();
  for (int64_t i = 0; i < n; ++i) store(dst, i, load(src, i));
}

}  // namespace tg::kernels::cpu
