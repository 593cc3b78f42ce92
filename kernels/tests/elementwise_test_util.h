// Helpers for the element-wise kernel tests (norm, activation, rope, embedding): bitwise comparison with
// a readable first mismatch, host FP64 views of BF16/F32 tensors, per-tensor FP8 bundles on either device.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "common/fp8_tensor.h"
#include "common/numeric.h"
#include "common/tensor.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg::testing {

// Host copy of any tensor view (contiguous result; strided sources are gathered row by row).
inline Tensor host_copy(const TensorView& v) {
  if (v.is_contiguous()) return Tensor::copy_of(v, Device::CPU);
  // 2-D view with a row stride: copy the whole [rows, stride] span, then gather.
  EXPECT_EQ(v.ndim(), 2);
  const int64_t rows = v.shape[0], cols = v.shape[1], ld = v.strides[0];
  const size_t es = dtype_size(v.dtype);
  const int64_t span = rows == 0 ? 0 : (rows - 1) * ld + cols;
  Tensor flat = Tensor::copy_of(TensorView(v.data, v.dtype, Shape{span}, v.device), Device::CPU);
  Tensor out = Tensor::empty(v.dtype, Shape{rows, cols});
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out.ptr<char>() + r * cols * es, flat.ptr<char>() + r * ld * es, cols * es);
  }
  return out;
}

// Values of a BF16/F16/F32 host tensor as doubles (row-major, contiguous).
inline std::vector<double> values(const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case DType::F32:
        v[i] = t.ptr<float>()[i];
        break;
      case DType::BF16:
      case DType::F16:
        v[i] = decode(t.dtype(), t.ptr<uint16_t>()[i]);
        break;
      case DType::E4M3:
      case DType::E5M2:
        v[i] = decode(t.dtype(), t.ptr<uint8_t>()[i]);
        break;
      default:
        ADD_FAILURE() << "values: unsupported dtype " << t.dtype();
    }
  }
  return v;
}
inline std::vector<double> values(const TensorView& v) { return values(host_copy(v)); }

// Bit-for-bit equality of two views (any devices, same dtype and shape); reports the mismatch count and
// the first mismatching element with both values.
inline ::testing::AssertionResult bits_equal(const TensorView& got_v, const TensorView& want_v) {
  if (got_v.empty() || want_v.empty()) {
    if (got_v.empty() && want_v.empty()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "one side is empty: " << got_v.describe() << " vs " << want_v.describe();
  }
  if (got_v.dtype != want_v.dtype || !(got_v.shape == want_v.shape)) {
    return ::testing::AssertionFailure() << "dtype/shape differ: " << got_v.describe() << " vs " << want_v.describe();
  }
  const Tensor got = host_copy(got_v), want = host_copy(want_v);
  const size_t es = dtype_size(got.dtype());
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < got.numel(); ++i) {
    if (std::memcmp(got.ptr<char>() + i * es, want.ptr<char>() + i * es, es) != 0) {
      if (bad++ == 0) first = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  const std::vector<double> g = values(got), w = values(want);
  std::ostringstream os;
  os << bad << " of " << got.numel() << " elements differ; first at flat index " << first;
  if (got.shape().ndim() == 2) os << " (row " << first / got.shape()[1] << ", col " << first % got.shape()[1] << ")";
  os << ": got " << g[first] << ", want " << w[first];
  return ::testing::AssertionFailure() << os.str();
}

// A device copy of a host tensor placed in a [rows, ld] buffer (row stride ld >= cols), returned as the
// strided [rows, cols] view plus its owner.
struct Strided {
  Tensor owner;
  TensorView view;
};
inline Strided strided_copy(const Tensor& host, int64_t ld, Device device) {
  const int64_t rows = host.shape()[0], cols = host.shape()[1];
  const size_t es = dtype_size(host.dtype());
  Tensor buf = Tensor::zeros(host.dtype(), Shape{rows, ld});
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(buf.ptr<char>() + r * ld * es, host.ptr<char>() + r * cols * es, cols * es);
  Strided s{buf.to(device), {}};
  s.view = s.owner.view().slice_cols(0, cols);
  return s;
}

// An F32 [1] tensor holding v on `device`.
inline Tensor scalar_f32(float v, Device device) {
  Tensor t = Tensor::empty(DType::F32, Shape{1});
  t.ptr<float>()[0] = v;
  return t.to(device);
}

// Per-tensor FP8 output bundle with a given scale and starting amax.
inline Fp8Tensor fp8_output(DType fp8, int64_t rows, int64_t cols, bool rowwise, bool columnwise, float scale,
                            float amax0, Device device) {
  Fp8Tensor t = Fp8Tensor::per_tensor(fp8, rows, cols, rowwise, columnwise, device);
  copy_bytes(t.view().scale, scalar_f32(scale, Device::CPU));
  copy_bytes(t.view().amax, scalar_f32(amax0, Device::CPU));
  return t;
}

inline float read_scalar(const TensorView& v) { return static_cast<float>(values(v)[0]); }

// How many codes of an E4M3 tensor (host or device) are nonzero and how many saturated (|code| = 0x7E, 448): a test
// of a quantizing kernel asserts its inputs exercise both.
struct E4m3Codes {
  int64_t nonzero = 0, saturated = 0;
};
inline E4m3Codes count_e4m3_codes(const TensorView& v) {
  const Tensor h = host_copy(v);
  E4m3Codes n;
  for (int64_t i = 0; i < h.numel(); ++i) {
    const uint8_t m = h.ptr<uint8_t>()[i] & 0x7F;
    n.nonzero += m != 0;
    n.saturated += m == 0x7E;
  }
  return n;
}

// Uniform random ints in [lo, hi] as an I32 or I64 host tensor.
inline Tensor random_ids(DType dtype, int64_t n, int64_t lo, int64_t hi, uint32_t seed) {
  Tensor t = Tensor::empty(dtype, Shape{n});
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> dist(lo, hi);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = dist(rng);
    if (dtype == DType::I32)
      t.ptr<int32_t>()[i] = static_cast<int32_t>(v);
    else
      t.ptr<int64_t>()[i] = v;
  }
  return t;
}

}  // namespace tg::testing
