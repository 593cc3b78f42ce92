// Bit casts between float and its IEEE-754 bits for code compiled for both host and device (the scale rules
// in kernels/recipe/scale_math.h and the bit-exact math in kernels/elementwise/ieee_math.h): std::bit_cast is
// not usable in device code, and the device intrinsics do not exist on the host.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TG_BITS_FN __host__ __device__ __forceinline__
#else
#define TG_BITS_FN inline
#endif

namespace tg::kernels {

TG_BITS_FN uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

TG_BITS_FN float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

}  // namespace tg::kernels
