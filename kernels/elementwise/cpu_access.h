// Element access for the CPU twins of the element-wise kernels: BF16/F32 (and F16) views with strides,
// loads exact, stores rounded with common/numeric.h (the golden rounding).
#pragma once

#include <cstdint>
#include <cstring>

#include "common/numeric.h"
#include "common/tensor.h"

namespace tg::kernels::cpu_access {

inline float load_at(const TensorView& t, int64_t offset) {
  switch (t.dtype) {
    case DType::F32: {
      float f;
      std::memcpy(&f, t.ptr<char>() + 4 * offset, 4);
      return f;
    }
    case DType::BF16:
    case DType::F16: {
      uint16_t b;
      std::memcpy(&b, t.ptr<char>() + 2 * offset, 2);
      return decode(t.dtype, b);
    }
    default:
      TG_FAIL("cpu_access: unsupported dtype ", t.dtype);
  }
}
inline void store_at(const TensorView& t, int64_t offset, float v) {
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(t.ptr<char>() + 4 * offset, &v, 4);
      break;
    case DType::BF16:
    case DType::F16: {
      const auto b = static_cast<uint16_t>(encode(t.dtype, v));
      std::memcpy(t.ptr<char>() + 2 * offset, &b, 2);
      break;
    }
    default:
      TG_FAIL("cpu_access: unsupported dtype ", t.dtype);
  }
}
// 2-D element (r, c) of a strided view.
inline float load(const TensorView& t, int64_t r, int64_t c) { return load_at(t, r * t.strides[0] + c * t.strides[1]); }
inline void store(const TensorView& t, int64_t r, int64_t c, float v) {
  store_at(t, r * t.strides[0] + c * t.strides[1], v);
}
// 1-D element i of a contiguous view.
inline float load1(const TensorView& t, int64_t i) { return load_at(t, i); }
inline void store1(const TensorView& t, int64_t i, float v) { store_at(t, i, v); }

}  // namespace tg::kernels::cpu_access
