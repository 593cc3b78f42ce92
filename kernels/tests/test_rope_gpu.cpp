// CUDA RoPE vs its CPU twin, bit for bit: forward and backward, BF16/F32, MHA/GQA/MQA views into a fused
// QKV buffer, head_dim 256 (vector path) and odd half sizes (element path), I32/I64 positions (packed,
// left-padded and decode-offset batches), the Gemma-7B training shape. The precomputed cos/sin table
// (rope_cos_sin_table): the device builder == the CPU builder, and the kernels with the table == without it (and ==
// the CPU twin), including positions past a short table (the computed fallback) and bad tables.
#include <gtest/gtest.h>

#include <string>

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

// ---- The precomputed cos/sin table -------------------------------------------------------------------------

// The device-built table == the CPU-built one, bit for bit, for Gemma's inv_freq (Dh 256, theta 10000) at positions
// 0 .. 8191 (and an odd head size); also from a host inv_freq (copied to the device first).
TEST(RopeTableGpu, DeviceBuilderEqualsCpuBuilder) {
  TG_REQUIRE_CUDA();
  for (const int64_t dh : {int64_t{256}, int64_t{18}}) {
    const Tensor freq_c = kernels::rope_inv_freq_table(dh, 10000.0f, 1.0f, Device::CPU);
    const Tensor want = kernels::rope_cos_sin_table(freq_c, 8192, Device::CPU);
    const Tensor got = kernels::rope_cos_sin_table(freq_c.to(Device::CUDA), 8192, Device::CUDA);
    EXPECT_TRUE(testing::bits_equal(got, want)) << "Dh " << dh;
    const Tensor from_host = kernels::rope_cos_sin_table(freq_c, 8192, Device::CUDA);
    EXPECT_TRUE(testing::bits_equal(from_host, want)) << "Dh " << dh;
  }
}

// rope_forward / rope_backward with the table == without it == the CPU twin, bit for bit: Gemma-2B (8 q heads,
// 1 kv head) and Gemma-7B (16, 16) views into a fused QKV buffer, head_dim 256, BF16 and F32, I32 and I64 random
// positions in [-4, 8191], with the full 8192-position table and a 3000-position one (later positions and negative
// ones computed: the fallback path inside the same launch).
TEST(RopeTableGpu, TableEqualsComputedOnGemmaShapes) {
  TG_REQUIRE_CUDA();
  const int64_t dh = 256, t = 1000;
  const Tensor freq_c = kernels::rope_inv_freq_table(dh, 10000.0f, 1.0f, Device::CPU);
  const Tensor freq_d = freq_c.to(Device::CUDA);
  for (const int64_t positions : {int64_t{8192}, int64_t{3000}}) {
    const Tensor table_d = kernels::rope_cos_sin_table(freq_d, positions, Device::CUDA);
    const Tensor table_c = kernels::rope_cos_sin_table(freq_c, positions, Device::CPU);
    for (const Case c : {Case{t, 8, 1, dh}, Case{t, 16, 16, dh}}) {
      for (const DType a : {DType::BF16, DType::F32}) {
        for (const DType pt : {DType::I32, DType::I64}) {
          for (const bool bwd : {false, true}) {
            SCOPED_TRACE(::testing::Message() << "table " << positions << " H=" << c.h << " Hkv=" << c.hkv << " "
                                              << a << " pos " << pt << (bwd ? " backward" : " forward"));
            const int64_t w = (c.h + 2 * c.hkv) * c.dh;
            const Tensor qkv = testing::random_host(a, {c.t, w}, 21, 2.0f);
            const Tensor pos = testing::random_ids(pt, c.t, -4, 8191, 22);
            const Tensor pos_d = pos.to(Device::CUDA);
            Tensor with = qkv.to(Device::CUDA), without = qkv.to(Device::CUDA);
            Tensor cpu = Tensor::copy_of(qkv, Device::CPU);
            const auto q_of = [&](const Tensor& b) {
              return TensorView(b.data(), a, Shape{c.t, c.h, c.dh}, Shape{w, c.dh, 1}, b.device());
            };
            const auto k_of = [&](const Tensor& b) {
              return TensorView(static_cast<char*>(b.data()) + c.h * c.dh * dtype_size(a), a,
                                Shape{c.t, c.hkv, c.dh}, Shape{w, c.dh, 1}, b.device());
            };
            const auto apply = [&](const Tensor& b, const TensorView& pv, const TensorView& fv,
                                   const TensorView& tv) {
              if (bwd)
                kernels::rope_backward(q_of(b), k_of(b), pv, fv, {}, tv);
              else
                kernels::rope_forward(q_of(b), k_of(b), pv, fv, {}, tv);
            };
            apply(with, pos_d, freq_d, table_d);
            apply(without, pos_d, freq_d, {});
            apply(cpu, pos, freq_c, table_c);
            EXPECT_TRUE(testing::bits_equal(with, without));
            EXPECT_TRUE(testing::bits_equal(with, cpu));
          }
        }
      }
    }
  }
}

// q only and k only with a table (the first head batch is then k's), and a table view that is not 16-byte aligned
// (the element path): still the same bits.
TEST(RopeTableGpu, QOnlyKOnlyAndUnalignedTable) {
  TG_REQUIRE_CUDA();
  const int64_t t = 37, dh = 256;
  const Tensor freq = kernels::rope_inv_freq_table(dh, 10000.0f, 1.0f, Device::CUDA);
  const Tensor table = kernels::rope_cos_sin_table(freq, 8192, Device::CUDA);
  const Tensor pos = testing::random_ids(DType::I32, t, 0, 8191, 31).to(Device::CUDA);
  for (const int64_t heads : {int64_t{1}, int64_t{5}, int64_t{16}}) {
    const Tensor x = testing::random_host(DType::BF16, {t, heads, dh}, 32);
    Tensor a = x.to(Device::CUDA), b = x.to(Device::CUDA), c = x.to(Device::CUDA), d = x.to(Device::CUDA);
    kernels::rope_forward(a, {}, pos, freq, {}, table);
    kernels::rope_forward(b, {}, pos, freq);
    kernels::rope_forward({}, c, pos, freq, {}, table);
    EXPECT_TRUE(testing::bits_equal(a, b)) << heads;
    EXPECT_TRUE(testing::bits_equal(c, b)) << heads;
    // A table view 4 bytes past an aligned one ([P - 1, 2, Dh/2] is not a row-aligned view, so build a copy at an
    // odd offset): the launcher takes the element path.
    Tensor raw = Tensor::empty(DType::F32, {table.numel() + 1}, Device::CUDA);
    const TensorView shifted(raw.ptr<float>() + 1, DType::F32, table.shape(), Device::CUDA);
    copy_bytes(shifted, table);
    kernels::rope_forward(d, {}, pos, freq, {}, shifted);
    EXPECT_TRUE(testing::bits_equal(d, b)) << heads << " unaligned table";
  }
}

// A table of another head_dim, dtype or device is rejected in the launcher, naming the argument.
TEST(RopeTableGpu, RejectsBadTables) {
  TG_REQUIRE_CUDA();
  const int64_t dh = 256;
  const Tensor freq = kernels::rope_inv_freq_table(dh, 10000.0f, 1.0f, Device::CUDA);
  Tensor q = Tensor::zeros(DType::BF16, {4, 2, dh}, Device::CUDA);
  const Tensor pos = Tensor::zeros(DType::I32, {4}, Device::CUDA);
  const auto error_of = [&](const TensorView& table, bool bwd) {
    try {
      if (bwd)
        kernels::rope_backward(q, {}, pos, freq, {}, table);
      else
        kernels::rope_forward(q, {}, pos, freq, {}, table);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const Tensor small = kernels::rope_cos_sin_table(kernels::rope_inv_freq_table(128, 10000.0f, 1.0f, Device::CUDA),
                                                   64, Device::CUDA);
  EXPECT_NE(error_of(small, false).find("rope_forward: table must be the F32 [positions, 2, Dh/2 = 128]"),
            std::string::npos)
      << error_of(small, false);
  EXPECT_NE(error_of(small, true).find("rope_backward: table must be the F32"), std::string::npos);
  const Tensor bf16 = Tensor::zeros(DType::BF16, {64, 2, dh / 2}, Device::CUDA);
  EXPECT_NE(error_of(bf16, false).find("table must be the F32"), std::string::npos) << error_of(bf16, false);
  const Tensor host = kernels::rope_cos_sin_table(freq, 64, Device::CPU);
  EXPECT_NE(error_of(host, false).find("table must be on CUDA"), std::string::npos) << error_of(host, false);
  EXPECT_EQ(error_of(kernels::rope_cos_sin_table(freq, 64, Device::CUDA), false), "no error");
}

}  // namespace
}  // namespace tg
