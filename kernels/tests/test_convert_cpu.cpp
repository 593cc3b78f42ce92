// CPU twin of convert: element-wise agreement with common/numeric.h, argument checks.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <vector>

#include "common/numeric.h"
#include "kernels/convert/convert.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg {
namespace {

TEST(ConvertCpu, MatchesScalarRulesForEveryPair) {
  const DType types[] = {DType::F32, DType::BF16, DType::F16, DType::E4M3, DType::E5M2};
  for (DType src : types) {
    Tensor in = testing::random_host(src, {3, 37}, 7, 100.0f);  // wide range: saturation and subnormals
    for (DType dst : types) {
      Tensor out = Tensor::empty(dst, {3, 37});
      kernels::convert(in, out);
      for (int64_t i = 0; i < in.numel(); ++i) {
        const float x = src == DType::F32 ? in.ptr<float>()[i]
                        : dtype_size(src) == 2 ? decode(src, in.ptr<uint16_t>()[i])
                                                : decode(src, in.ptr<uint8_t>()[i]);
        const uint32_t want = encode(dst, x);
        const uint32_t got = dst == DType::F32 ? std::bit_cast<uint32_t>(out.ptr<float>()[i])
                             : dtype_size(dst) == 2 ? out.ptr<uint16_t>()[i]
                                                     : out.ptr<uint8_t>()[i];
        ASSERT_EQ(got, want) << dtype_name(src) << "->" << dtype_name(dst) << " at " << i << " x=" << x;
      }
    }
  }
}

TEST(ConvertCpu, RejectsMismatchedArguments) {
  Tensor a = Tensor::empty(DType::F32, {4, 4});
  Tensor b = Tensor::empty(DType::BF16, {4, 5});
  EXPECT_THROW(kernels::convert(a, b), Error);
  Tensor c = Tensor::empty(DType::I32, {4, 4});
  EXPECT_THROW(kernels::convert(a, c), Error);
  EXPECT_THROW(kernels::convert(a.view().slice_cols(0, 2), Tensor::empty(DType::F32, {4, 2}).view()), Error);
}

}  // namespace
}  // namespace tg
