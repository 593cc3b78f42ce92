// Helpers shared by the quantize tests (CPU and GPU).
#pragma once

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/fp8_tensor.h"
#include "common/numeric.h"
#include "common/tensor.h"
#include "kernels/quantize/block_layout.h"

namespace tg::testing {

// A host tensor of `dtype` holding `values` rounded to it (row-major).
inline Tensor host_tensor(DType dtype, Shape shape, const std::vector<float>& values) {
  EXPECT_EQ(static_cast<int64_t>(values.size()), shape.numel());
  Tensor t = Tensor::empty(dtype, shape);
  for (int64_t i = 0; i < shape.numel(); ++i) {
    const float v = values[static_cast<std::size_t>(i)];
    switch (dtype_size(dtype)) {
      case 4:
        t.ptr<float>()[i] = v;
        break;
      case 2:
        t.ptr<uint16_t>()[i] = static_cast<uint16_t>(encode(dtype, v));
        break;
      default:
        t.ptr<uint8_t>()[i] = static_cast<uint8_t>(encode(dtype, v));
    }
  }
  return t;
}

// Element i of a host tensor as float.
inline float host_at(const TensorView& t, int64_t i) {
  switch (dtype_size(t.dtype)) {
    case 4:
      return t.ptr<const float>()[i];
    case 2:
      return decode(t.dtype, t.ptr<const uint16_t>()[i]);
    default:
      return decode(t.dtype, t.ptr<const uint8_t>()[i]);
  }
}

inline uint8_t byte_at(const TensorView& t, int64_t i) { return t.ptr<const uint8_t>()[i]; }
inline uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

// Random values rounded to `dtype` whose magnitude varies by row and by column (factors 2^-8 .. 2^8), so that
// 1x128 strips, 128x1 strips and 128x128 tiles all get different amaxes and scales.
inline Tensor random_varied(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> expo(-8, 8);
  std::vector<float> row_f(static_cast<std::size_t>(rows)), col_f(static_cast<std::size_t>(cols));
  for (auto& f : row_f) f = std::ldexp(1.0f, expo(rng));
  for (auto& f : col_f) f = std::ldexp(1.0f, expo(rng) / 2);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      v[static_cast<std::size_t>(r * cols + c)] =
          normal(rng) * row_f[static_cast<std::size_t>(r)] * col_f[static_cast<std::size_t>(c)];
    }
  }
  return host_tensor(dtype, {rows, cols}, v);
}

// Fills every byte of a view with `b` (poison before a kernel writes it).
inline void poison(const TensorView& t, uint8_t b) {
  if (t.empty()) return;
  std::vector<uint8_t> host(t.nbytes(), b);
  copy_bytes(t, TensorView(host.data(), DType::U8, Shape{static_cast<int64_t>(host.size())}, Device::CPU));
}

// Allocates the FP8 output bundle of a mode (per tensor: scale/amax scalars; block: block_layout.h).
inline Fp8Tensor make_fp8(ScalingMode mode, DType fp8, int64_t rows, int64_t cols, bool rowwise, bool columnwise,
                          Device device) {
  return mode == ScalingMode::kPerTensor
             ? Fp8Tensor::per_tensor(fp8, rows, cols, rowwise, columnwise, device)
             : kernels::make_block_fp8_tensor(mode, fp8, rows, cols, rowwise, columnwise, device);
}

// Byte-exact comparison of two views of equal size; reports the first mismatches.
inline ::testing::AssertionResult same_bytes(const TensorView& got, const TensorView& want, const std::string& what) {
  if (got.empty() && want.empty()) return ::testing::AssertionSuccess();
  if (got.empty() != want.empty()) return ::testing::AssertionFailure() << what << ": one side is missing";
  Tensor g = Tensor::copy_of(got, Device::CPU), w = Tensor::copy_of(want, Device::CPU);
  if (g.nbytes() != w.nbytes()) {
    return ::testing::AssertionFailure() << what << ": sizes differ (" << g.nbytes() << " vs " << w.nbytes() << ")";
  }
  const std::size_t es = dtype_size(got.dtype);
  const std::size_t n = g.nbytes() / es;
  std::size_t bad = 0;
  std::string first;
  for (std::size_t i = 0; i < n; ++i) {
    if (std::memcmp(g.ptr<const char>() + i * es, w.ptr<const char>() + i * es, es) != 0) {
      if (bad < 5) {
        uint32_t gv = 0, wv = 0;
        std::memcpy(&gv, g.ptr<const char>() + i * es, es);
        std::memcpy(&wv, w.ptr<const char>() + i * es, es);
        std::ostringstream os;
        os << " [" << i << "] got 0x" << std::hex << gv << " want 0x" << wv << ";";
        first += os.str();
      }
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << n << " elements differ:" << first;
}

}  // namespace tg::testing
