// CUDA RoPE vs its CPU twin, bit for bit: forward and backward, BF16/F32, MHA/GQA/MQA views into a fused
// QKV buffer, head_dim 256 (vector path) and odd half sizes (element path), I32/I64 positions (packed,
// left-padded and decode-offset batches), the Gemma-7B training shape.
#include <gtest/gtest.h>

#include "kernels/rope/rope.h"
#include "kernels/tests/elementwise_test_util.h"

namespace tg {
namespace {

struct Case {
  int64_t t, h, hkv, dh;
};

void run_case(const Case c, DType a, DType pos_type, bool backward) {
  SCOPED_TRACE(::testing::Message() << "T=" << c.t << " H=" << c.h << " Hkv=" << c.hkv << " Dh=" << c.dh << " " << a
                                    << " pos " << pos_type << (backward ? " backward" : " forward"));
  const int64_t w = (c.h + 2 * c.hkv) * c.dh;
  Tensor qkv = testing::random_host(a, {c.t, w}, 1, 2.0f);
  Tensor pos = testing::random_ids(pos_type, c.t, -4, 8191, 2);  // includes left-padding positions (< 0)
  Tensor freq_c = kernels::rope_inv_freq_table(c.dh, 10000.0f, 1.0f, Device::CPU);
  Tensor freq_d = freq_c.to(Device::CUDA);
  Tensor qkv_d = qkv.to(Device::CUDA);
  auto views = [&](const Tensor& buf) {
    const size_t es = dtype_size(a);
    const TensorView q(buf.data(), a, Shape{c.t, c.h, c.dh}, Shape{w, c.dh, 1}, buf.device());
    const TensorView k(static_cast<char*>(buf.data()) + c.h * c.dh * es, a, Shape{c.t, c.hkv, c.dh}, Shape{w, c.dh, 1},
                       buf.device());
    return std::pair{q, k};
  };
  auto [qc, kc] = views(qkv);
  auto [qd, kd] = views(qkv_d);
  Tensor pos_d = pos.to(Device::CUDA);
  if (backward) {
    kernels::rope_backward(qc, kc, pos, freq_c);
    kernels::rope_backward(qd, kd, pos_d, freq_d);
  } else {
    kernels::rope_forward(qc, kc, pos, freq_c);
    kernels::rope_forward(qd, kd, pos_d, freq_d);
  }
  ASSERT_TRUE(testing::bits_equal(qkv_d, qkv));  // q, k rotated identically; v untouched on both
}

TEST(RopeGpu, BitExactAgainstCpuTwin) {
  TG_REQUIRE_CUDA();
  const Case cases[] = {{1, 8, 1, 256}, {7, 16, 16, 256}, {33, 8, 2, 256}, {5, 3, 1, 12},
                        {9, 2, 2, 18},  {4, 4, 4, 64},    {1, 1, 1, 2},    {300, 8, 1, 256}};
  for (const Case c : cases) {
    for (DType a : {DType::BF16, DType::F32}) {
      for (DType p : {DType::I32, DType::I64}) {
        for (const bool bwd : {false, true}) run_case(c, a, p, bwd);
      }
    }
  }
}

TEST(RopeGpu, QOnlyAndKOnly) {
  TG_REQUIRE_CUDA();
  const int64_t t_count = 6, h = 4, dh = 256;
  Tensor q = testing::random_host(DType::BF16, {t_count, h, dh}, 3);
  Tensor pos = testing::random_ids(DType::I64, t_count, 0, 100, 4);
  Tensor freq = kernels::rope_inv_freq_table(dh, 10000.0f, 1.0f, Device::CPU);
  Tensor qd = q.to(Device::CUDA);
  kernels::rope_forward(q, {}, pos, freq);
  kernels::rope_forward(qd, {}, pos.to(Device::CUDA), freq.to(Device::CUDA));
  EXPECT_TRUE(testing::bits_equal(qd, q));
  Tensor k = testing::random_host(DType::BF16, {t_count, 1, dh}, 5);
  Tensor kd = k.to(Device::CUDA);
  kernels::rope_forward({}, k, pos, freq);
  kernels::rope_forward({}, kd, pos.to(Device::CUDA), freq.to(Device::CUDA));
  EXPECT_TRUE(testing::bits_equal(kd, k));
}

TEST(RopeGpu, Gemma7bTrainingShape) {
  TG_REQUIRE_CUDA();
  // T = 8192 (4 x 2048, positions 0..2047 per sequence), H = Hkv = 16, Dh = 256.
  const Case c{8192, 16, 16, 256};
  const int64_t w = (c.h + 2 * c.hkv) * c.dh;
  Tensor qkv = testing::random_host(DType::BF16, {c.t, w}, 6);
  Tensor pos = Tensor::empty(DType::I64, {c.t});
  for (int64_t t = 0; t < c.t; ++t) pos.ptr<int64_t>()[t] = t % 2048;
  Tensor freq = kernels::rope_inv_freq_table(c.dh, 10000.0f, 1.0f, Device::CPU);
  Tensor qkv_d = qkv.to(Device::CUDA);
  const TensorView q(qkv.data(), DType::BF16, Shape{c.t, c.h, c.dh}, Shape{w, c.dh, 1}, Device::CPU);
  const TensorView k(qkv.ptr<uint16_t>() + c.h * c.dh, DType::BF16, Shape{c.t, c.hkv, c.dh}, Shape{w, c.dh, 1},
                     Device::CPU);
  const TensorView qd(qkv_d.data(), DType::BF16, Shape{c.t, c.h, c.dh}, Shape{w, c.dh, 1}, Device::CUDA);
  const TensorView kd(qkv_d.ptr<uint16_t>() + c.h * c.dh, DType::BF16, Shape{c.t, c.hkv, c.dh}, Shape{w, c.dh, 1},
                      Device::CUDA);
  kernels::rope_forward(q, k, pos, freq);
  kernels::rope_forward(qd, kd, pos.to(Device::CUDA), freq.to(Device::CUDA));
  EXPECT_TRUE(testing::bits_equal(qkv_d, qkv));
}

}  // namespace
}  // namespace tg
