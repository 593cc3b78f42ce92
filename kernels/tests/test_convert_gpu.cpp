// CUDA conversions vs the CPU rules, bit for bit, over EVERY float32 bit pattern (2^32 values: every
// class - zeros, subnormals, normals, ties, the max, overflow, inf, NaN) into BF16, F16, E4M3 and
// E5M2, and over every BF16/F16/FP8 code back to float. This is the foundation's proof that the CPU
// twin's rounding is the GPU's rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "common/numeric.h"
#include "kernels/convert/convert.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg {
namespace {

unsigned threads() { return std::max(1u, std::thread::hardware_concurrency()); }

TEST(ConvertGpu, EveryFloat32ToLowPrecisionBitExact) {
  TG_REQUIRE_CUDA();
  constexpr uint64_t kChunk = 1ull << 27;  // 128M floats (512 MiB) per round trip
  Tensor src_h = Tensor::empty(DType::F32, {static_cast<int64_t>(kChunk)});
  Tensor src_d = Tensor::empty(DType::F32, {static_cast<int64_t>(kChunk)}, Device::CUDA);
  for (DType dst : {DType::BF16, DType::F16, DType::E4M3, DType::E5M2}) {
    Tensor out_d = Tensor::empty(dst, {static_cast<int64_t>(kChunk)}, Device::CUDA);
    Tensor out_h = Tensor::empty(dst, {static_cast<int64_t>(kChunk)});
    std::atomic<uint64_t> mismatches{0};
    std::atomic<uint32_t> first_bad{0};
    for (uint64_t base = 0; base < (1ull << 32); base += kChunk) {
      uint32_t* p = src_h.ptr<uint32_t>();
      for (uint64_t i = 0; i < kChunk; ++i) p[i] = static_cast<uint32_t>(base + i);
      copy_bytes(src_d, src_h);
      kernels::convert(src_d, out_d);
      copy_bytes(out_h, out_d);
      std::vector<std::thread> pool;
      const unsigned nt = threads();
      for (unsigned t = 0; t < nt; ++t) {
        pool.emplace_back([&, t] {
          const uint64_t lo = kChunk * t / nt, hi = kChunk * (t + 1) / nt;
          uint64_t bad = 0;
          for (uint64_t i = lo; i < hi; ++i) {
            const float x = std::bit_cast<float>(static_cast<uint32_t>(base + i));
            const uint32_t want = encode(dst, x);
            const uint32_t got = dtype_size(dst) == 2 ? out_h.ptr<uint16_t>()[i] : out_h.ptr<uint8_t>()[i];
            if (got != want && bad++ == 0) first_bad = static_cast<uint32_t>(base + i);
          }
          mismatches += bad;
        });
      }
      for (auto& th : pool) th.join();
    }
    EXPECT_EQ(mismatches.load(), 0u) << "F32->" << dtype_name(dst) << ": first mismatch at float bits 0x" << std::hex
                                     << first_bad.load();
  }
}

TEST(ConvertGpu, EveryLowPrecisionCodeToFloat32) {
  TG_REQUIRE_CUDA();
  for (DType src : {DType::BF16, DType::F16, DType::E4M3, DType::E5M2}) {
    const int64_t n = dtype_size(src) == 2 ? 65536 : 256;
    Tensor in_h = Tensor::empty(src, {n});
    for (int64_t i = 0; i < n; ++i) {
      if (n == 256) in_h.ptr<uint8_t>()[i] = static_cast<uint8_t>(i);
      else in_h.ptr<uint16_t>()[i] = static_cast<uint16_t>(i);
    }
    Tensor in_d = in_h.to(Device::CUDA);
    Tensor out_d = Tensor::empty(DType::F32, {n}, Device::CUDA);
    kernels::convert(in_d, out_d);
    Tensor out_h = out_d.to(Device::CPU);
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float want = decode(src, static_cast<uint32_t>(i));
      const float got = out_h.ptr<float>()[i];
      const bool ok = std::isnan(want) ? std::isnan(got)
                                       : std::bit_cast<uint32_t>(want) == std::bit_cast<uint32_t>(got);
      if (!ok && ++bad <= 5) ADD_FAILURE() << dtype_name(src) << " code " << i << " want " << want << " got " << got;
    }
    EXPECT_EQ(bad, 0) << dtype_name(src);
  }
}

TEST(ConvertGpu, Bf16ToFp8MatchesCpuTwin) {
  TG_REQUIRE_CUDA();
  // The path weights take at load time (BF16 checkpoint -> FP8 without scaling) on an odd shape.
  Tensor in = testing::random_host(DType::BF16, {129, 77}, 3, 30.0f);
  for (DType dst : {DType::E4M3, DType::E5M2, DType::F16, DType::F32}) {
    Tensor cpu_out = Tensor::empty(dst, {129, 77});
    kernels::convert(in, cpu_out);
    Tensor gpu_in = in.to(Device::CUDA);
    Tensor gpu_out = Tensor::empty(dst, {129, 77}, Device::CUDA);
    kernels::convert(gpu_in, gpu_out);
    Tensor back = gpu_out.to(Device::CPU);
    EXPECT_EQ(std::memcmp(back.data(), cpu_out.data(), cpu_out.nbytes()), 0) << dtype_name(dst);
  }
}

}  // namespace
}  // namespace tg
