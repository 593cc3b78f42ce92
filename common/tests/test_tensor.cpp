#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "common/fp8_tensor.h"
#include "common/tensor.h"

namespace tg {
namespace {

TEST(Shape, BasicsAndNegativeIndex) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.ndim(), 3);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s[-1], 4);
  EXPECT_EQ(s.str(), "[2, 3, 4]");
  EXPECT_EQ(Shape::contiguous_strides(s), (Shape{12, 4, 1}));
  EXPECT_THROW(s[3], Error);
  EXPECT_THROW((Shape{1, 2, 3, 4, 5, 6, 7}), Error);
  EXPECT_THROW((Shape{2, -1}), Error);
}

TEST(TensorView, SlicesAndReshape) {
  std::vector<float> data(12);
  std::iota(data.begin(), data.end(), 0.0f);
  TensorView v(data.data(), DType::F32, {3, 4});
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_EQ(v.nbytes(), 48u);
  auto rows = v.slice_rows(1, 3);
  EXPECT_EQ(rows.ptr<float>()[0], 4.0f);
  EXPECT_EQ(rows.shape, (Shape{2, 4}));
  auto cols = v.slice_cols(1, 3);
  EXPECT_FALSE(cols.is_contiguous());
  EXPECT_EQ(cols.ptr<float>()[0], 1.0f);
  EXPECT_THROW(cols.nbytes(), Error);
  EXPECT_EQ(v.reshape({2, 6}).shape, (Shape{2, 6}));
  EXPECT_THROW(v.reshape({5, 2}), Error);
  EXPECT_THROW(v.slice_rows(2, 4), Error);
}

TEST(TensorView, ChecksNameArgumentAndExpectation) {
  std::vector<uint16_t> data(8);
  TensorView v(data.data(), DType::BF16, {2, 4});
  try {
    check_shape(v, {4, 2}, "rmsnorm(x)");
    FAIL() << "expected a throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rmsnorm(x): expected shape [4, 2], got [2, 4]"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(check_dtype(v, DType::F32, "x"), Error);
  EXPECT_NO_THROW(check_dtype(v, DType::BF16, "x"));
}

TEST(Tensor, HostAllocationCopyAndZero) {
  Tensor t = Tensor::zeros(DType::F32, {4, 5});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(t.ptr<float>()[i], 0.0f);
  t.ptr<float>()[7] = 3.5f;
  Tensor c = t.to(Device::CPU);
  EXPECT_EQ(c.ptr<float>()[7], 3.5f);
  EXPECT_NE(c.data(), t.data());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  Tensor moved = std::move(t);
  EXPECT_EQ(moved.ptr<float>()[7], 3.5f);
}

TEST(Tensor, CudaWithoutDeviceFailsClearly) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  try {
    Tensor::empty(DType::F32, {4}, Device::CUDA);
    FAIL() << "expected a throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(msg.find("CUDA") != std::string::npos) << msg;
  }
}

TEST(Arena, BumpAllocationAlignmentAndOverflow) {
  Arena a(4096, Device::CPU);
  auto x = a.alloc(DType::F32, {10});
  auto y = a.alloc(DType::BF16, {3});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(y.data) - reinterpret_cast<uintptr_t>(x.data), 256u);
  const auto mark = a.mark();
  a.alloc(DType::U8, {1000});
  a.release(mark);
  EXPECT_EQ(a.used(), mark);
  EXPECT_GE(a.peak(), 1256u);
  try {
    a.alloc(DType::F32, {2000});
    FAIL() << "expected a throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of space"), std::string::npos) << e.what();
  }
}

TEST(Fp8Tensor, PerTensorBundleKeepsMetadataTogether) {
  Fp8Tensor t = Fp8Tensor::per_tensor(DType::E4M3, 4, 8, true, true, Device::CPU);
  const Fp8View& v = t.view();
  EXPECT_EQ(v.mode, ScalingMode::kPerTensor);
  EXPECT_EQ(v.data.shape, (Shape{4, 8}));
  EXPECT_EQ(v.columnwise_data.shape, (Shape{8, 4}));
  EXPECT_EQ(v.scale.ptr<float>()[0], 1.0f);
  EXPECT_EQ(v.scale_inv.ptr<float>()[0], 1.0f);
  EXPECT_EQ(v.amax.ptr<float>()[0], 0.0f);
  EXPECT_EQ(v.columnwise_scale_inv.data, v.scale_inv.data);  // one scale for both copies
  EXPECT_EQ(v.rows(), 4);
  EXPECT_EQ(v.cols(), 8);
  EXPECT_THROW(Fp8Tensor::per_tensor(DType::BF16, 4, 8, true, false, Device::CPU), Error);
  EXPECT_THROW(Fp8Tensor::per_tensor(DType::E4M3, 4, 8, false, false, Device::CPU), Error);
}

}  // namespace
}  // namespace tg
