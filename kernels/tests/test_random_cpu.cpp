// CPU twin of fill_normal (kernels/random/random.h): the stream's first values against an independent Python
// evaluation of the same formula, counter-based (a prefix does not depend on the length), the moments, +0 at std 0,
// argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/numeric.h"
#include "kernels/random/random.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg {
namespace {

using testing::expect_error;

std::vector<uint16_t> draw(int64_t n, uint64_t key, double std) {
  Tensor t = Tensor::empty(DType::BF16, {n});
  kernels::fill_normal(t, key, std);
  return std::vector<uint16_t>(t.ptr<uint16_t>(), t.ptr<uint16_t>() + n);
}

// The values below come from Python (math.log / sqrt / cos / sin in double, struct's float rounding, then BF16
// round-to-nearest-even), evaluating normal_stream.h's formula independently of this code. They pin the stream:
// the random-weight benchmarks of every session draw the same weights.
TEST(RandomCpu, FirstValuesMatchAnIndependentEvaluation) {
  EXPECT_EQ(draw(9, 7, 0.02),
            (std::vector<uint16_t>{0x3CE0, 0xB967, 0xBC86, 0xBC98, 0x3BC7, 0xBD2B, 0x3C10, 0xB909, 0x3CD1}));
  EXPECT_EQ(draw(5, 0xDEADBEEF, 1.0), (std::vector<uint16_t>{0x3FDD, 0x3EC3, 0xBFAD, 0x3F02, 0x3DE6}));
}

// Element i depends on (key, i) only: a longer fill (several threads' chunks) starts with the shorter one, an odd
// length ends with the pair's first element, and another key gives another stream.
TEST(RandomCpu, CounterBasedAndKeyed) {
  const std::vector<uint16_t> a = draw(101, 3, 0.5), b = draw(1 << 20, 3, 0.5), c = draw(1 << 20, 4, 0.5);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin()));
  int64_t same = 0;
  for (std::size_t i = 0; i < b.size(); ++i) same += b[i] == c[i];
  // Two independent N(0, 0.5) streams in BF16 agree on a value ~1% of the time (the densest codes near 0 are
  // ~0.2-0.4% each); 5% would mean the key is (partly) ignored.
  EXPECT_LT(same, static_cast<int64_t>(b.size() / 20));
}

// Mean and standard deviation of 2^22 draws: each within 6 standard errors (sigma / sqrt(n) for the mean,
// sigma / sqrt(2n) for the deviation) plus BF16's relative rounding (2^-9, unbiased on average).
TEST(RandomCpu, MomentsAreThoseOfTheRequestedNormal) {
  for (double sigma : {0.02, 1.0}) {
    const int64_t n = int64_t{1} << 22;
    const std::vector<uint16_t> v = draw(n, 11, sigma);
    double sum = 0, sq = 0;
    for (uint16_t b : v) {
      const double x = bf16_bits_to_float(b);
      sum += x;
      sq += x * x;
    }
    const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
    EXPECT_LT(std::fabs(mean), 6 * sigma / std::sqrt(static_cast<double>(n))) << "sigma " << sigma;
    EXPECT_LT(std::fabs(sd - sigma), 6 * sigma / std::sqrt(2.0 * n) + sigma * 0x1p-9) << "sigma " << sigma;
  }
}

TEST(RandomCpu, ZeroStdWritesPositiveZeros) {
  for (uint16_t b : draw(33, 5, 0.0)) EXPECT_EQ(b, 0u);
}

TEST(RandomCpu, RejectsBadArguments) {
  Tensor f32 = Tensor::empty(DType::F32, {4});
  expect_error([&] { kernels::fill_normal(f32, 1, 1.0); }, "must be BF16");
  Tensor bf = Tensor::empty(DType::BF16, {4});
  expect_error([&] { kernels::fill_normal(bf, 1, -1.0); }, "std must be finite and >= 0");
  expect_error([&] { kernels::fill_normal(bf, 1, NAN); }, "std must be finite and >= 0");
  Tensor m = Tensor::empty(DType::BF16, {4, 4});
  const TensorView strided(m.data(), DType::BF16, Shape{4, 2}, Shape{4, 1}, Device::CPU);
  expect_error([&] { kernels::fill_normal(strided, 1, 1.0); }, "contiguous");
}

}  // namespace
}  // namespace tg
