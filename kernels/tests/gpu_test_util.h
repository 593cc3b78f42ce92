// Helpers for the gpu-labelled tests: skip cleanly without a device, and random test data.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/numeric.h"
#include "common/tensor.h"

#define TG_REQUIRE_CUDA()                                                        \
  do {                                                                           \
    if (!::tg::cuda_available()) GTEST_SKIP() << "no CUDA device (gpu test)";    \
  } while (0)

namespace tg::testing {

// Normal(0, stddev) floats rounded to `dtype`, stored in `dtype` on the host.
inline Tensor random_host(DType dtype, Shape shape, uint32_t seed, float stddev = 1.0f) {
  Tensor t = Tensor::empty(dtype, shape, Device::CPU);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  const int64_t n = shape.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = dist(rng);
    switch (dtype) {
      case DType::F32: t.ptr<float>()[i] = v; break;
      case DType::BF16: t.ptr<uint16_t>()[i] = float_to_bf16_bits(v); break;
      case DType::F16: t.ptr<uint16_t>()[i] = float_to_f16_bits(v); break;
      case DType::E4M3: case DType::E5M2: t.ptr<uint8_t>()[i] = static_cast<uint8_t>(encode(dtype, v)); break;
      default: ADD_FAILURE() << "random_host: unsupported dtype " << dtype;
    }
  }
  return t;
}

// Same dtype, shape and bytes, host or device tensors (compared on the host): "bit for bit" in the GPU tests.
inline bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor ha = a.to(Device::CPU), hb = b.to(Device::CPU);
  return std::memcmp(ha.data(), hb.data(), ha.nbytes()) == 0;
}

}  // namespace tg::testing
