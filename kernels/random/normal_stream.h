// The counter-based standard normal stream behind random weights (impl::random_weights) and kernels::fill_normal:
// element 2j and 2j + 1 of stream `key` come from one splitmix64 hash of (key, j) by Box-Muller in double, so any
// element can be drawn alone, in any order, on the host or on the device. Host and device evaluate the same
// expression; they can differ only where the device's double log / sin / cos (1 ulp at most) round otherwise than
// the host's, and the later roundings to float and BF16 hide that for all but ~2^-45 of the elements
// (test_random_gpu compares 2^24 of them bit for bit).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define TG_RANDOM_FN __host__ __device__ __forceinline__
#else
#define TG_RANDOM_FN inline
#endif

namespace tg::kernels {

TG_RANDOM_FN uint64_t mix64(uint64_t z) {  // splitmix64's finalizer
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Elements 2j and 2j + 1 of the standard normal stream `key`.
TG_RANDOM_FN void normal_pair(uint64_t key, int64_t j, double& a, double& b) {
  const uint64_t r = mix64(key ^ mix64(static_cast<uint64_t>(j)));
  const double u1 = (static_cast<double>(r >> 40) + 1.0) * 0x1p-24;  // (0, 1]
  const double u2 = static_cast<double>(r & 0xFFFFFFu) * 0x1p-24;    // [0, 1)
  const double radius = sqrt(-2.0 * log(u1));
  const double angle = 6.283185307179586 * u2;
  a = radius * cos(angle);
  b = radius * sin(angle);
}

}  // namespace tg::kernels
