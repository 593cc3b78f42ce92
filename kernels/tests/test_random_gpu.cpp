// CUDA fill_normal vs its CPU twin, bit for bit: 2^24 + 1 elements per case (an odd length: the last pair's second
// element is not written), two keys, the benchmarks' std (0.02) and 1, and std 0 (+0 everywhere). The device's
// double log / sin / cos may round otherwise than the host's (1 ulp); the roundings to float and BF16 hide that but
// for ~2^-45 of the elements, so over these 5 x 10^7 elements a difference would mean a broken kernel, not bad luck.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <utility>

#include "kernels/random/random.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg {
namespace {

TEST(RandomGpu, EqualsTheCpuTwinBitForBit) {
  TG_REQUIRE_CUDA();
  const int64_t n = (int64_t{1} << 24) + 1;
  for (const auto& [key, sigma] : {std::pair<uint64_t, double>{7, 0.02}, {0x7E6E33A0ull, 1.0}, {9, 0.0}}) {
    SCOPED_TRACE("key " + std::to_string(key) + " std " + std::to_string(sigma));
    Tensor want = Tensor::empty(DType::BF16, {n});
    kernels::fill_normal(want, key, sigma);
    Tensor poison = Tensor::empty(DType::BF16, {n + 1});
    std::memset(poison.data(), 0xAB, poison.nbytes());  // the element past the end must stay 0xABAB
    Tensor dev = poison.to(Device::CUDA);
    kernels::fill_normal(dev.view().slice_rows(0, n), key, sigma);
    const Tensor got = dev.to(Device::CPU);
    int64_t diff = 0;
    for (int64_t i = 0; i < n; ++i) diff += got.ptr<uint16_t>()[i] != want.ptr<uint16_t>()[i];
    EXPECT_EQ(diff, 0) << "elements differ";
    EXPECT_EQ(got.ptr<uint16_t>()[n], 0xABABu) << "wrote past the end";
  }
}

}  // namespace
}  // namespace tg
