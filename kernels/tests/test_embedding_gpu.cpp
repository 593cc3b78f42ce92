// CUDA scaled embedding vs its CPU twin, bit for bit: the forward is a gather with one rounding; the
// backward's per-row summation order is the contract's token order, so the FP32 accumulation buffer must
// match exactly - with many repeated ids, hot ids, D not a multiple of 8 and D > 4096 (several column
// windows). Bad ids: recorded in the status, no out-of-bounds access, tg::Error from the launcher.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <string>

#include "kernels/embedding/embedding.h"
#include "kernels/tests/elementwise_test_util.h"

namespace tg {
namespace {

struct Case {
  int64_t t, v, d;
  int64_t id_hi;  // ids drawn from [0, id_hi]: small -> many repeats
};

TEST(EmbeddingGpu, ForwardAndBackwardBitExact) {
  TG_REQUIRE_CUDA();
  // The forward runs one warp per token, 8 per block, loading windows of 8 (BF16) / 4 (F32) chunks of 8
  // per lane: T not a multiple of 8, D = 5000 (several windows), D = 3077 (element path, partial last
  // chunk), and T = 8193 x D = 3072 (the Gemma-7B row over more blocks than are resident at once).
  const Case cases[] = {{1, 100, 2048, 99},    {7, 50, 3072, 3},        {33, 20, 37, 19}, {600, 1000, 3072, 30},
                        {1025, 256, 128, 255}, {70, 10, 5000, 9},       {2, 5, 1, 4},     {2048, 32000, 2048, 31999},
                        {9, 40, 3077, 39},     {8193, 3000, 3072, 2999}};
  for (const Case c : cases) {
    for (DType e : {DType::BF16, DType::F32}) {
      for (DType id_type : {DType::I32, DType::I64}) {
        SCOPED_TRACE(::testing::Message() << "T=" << c.t << " V=" << c.v << " D=" << c.d << " ids<=" << c.id_hi << " "
                                          << e << " " << id_type);
        Tensor table = testing::random_host(e, {c.v, c.d}, 1);
        Tensor ids = testing::random_ids(id_type, c.t, 0, c.id_hi, 2);
        const float s = kernels::embedding_scale(c.d, DType::BF16);
        Tensor out_c = Tensor::empty(e, {c.t, c.d}), out_d = Tensor::empty(e, {c.t, c.d}, Device::CUDA);
        Tensor ids_d = ids.to(Device::CUDA);
        kernels::embedding_forward(ids, table, s, out_c);
        kernels::embedding_forward(ids_d, table.to(Device::CUDA), s, out_d);
        ASSERT_TRUE(testing::bits_equal(out_d, out_c));
        Tensor dout = testing::random_host(e, {c.t, c.d}, 3);
        Tensor acc_c = testing::random_host(DType::F32, {c.v, c.d}, 4);  // a non-zero buffer (lm_head's part)
        Tensor acc_d = acc_c.to(Device::CUDA);
        kernels::embedding_backward(ids, dout, s, acc_c);
        kernels::embedding_backward(ids_d, dout.to(Device::CUDA), s, acc_d);
        ASSERT_TRUE(testing::bits_equal(acc_d, acc_c));
      }
    }
  }
}

TEST(EmbeddingGpu, HotIdAtTrainingShape) {
  TG_REQUIRE_CUDA();
  // 8192 tokens, half of them one id (padding-like), the rest spread over a 32k vocabulary; D = 2048.
  const int64_t t_count = 8192, v = 32000, d = 2048;
  Tensor ids = testing::random_ids(DType::I32, t_count, 0, v - 1, 5);
  for (int64_t t = 0; t < t_count; t += 2) ids.ptr<int32_t>()[t] = 7;
  Tensor dout = testing::random_host(DType::BF16, {t_count, d}, 6);
  Tensor acc_c = Tensor::zeros(DType::F32, {v, d});
  Tensor acc_d = Tensor::zeros(DType::F32, {v, d}, Device::CUDA);
  kernels::embedding_backward(ids, dout, 45.25f, acc_c);
  kernels::embedding_backward(ids.to(Device::CUDA), dout.to(Device::CUDA), 45.25f, acc_d);
  EXPECT_TRUE(testing::bits_equal(acc_d, acc_c));
}

// The BF16 forward on vectorisable rows runs a persistent grid (at most ~3200 warps on an H200) whose
// warps load their ids 32 at a time: T = 200003 gives each warp more than 32 tokens (several id batches)
// and an uneven count; bad ids far into the sequence are reported once each and give zero rows.
TEST(EmbeddingGpu, ForwardPersistentWarpsManyTokens) {
  TG_REQUIRE_CUDA();
  const int64_t t_count = 200003, v = 5000, d = 64;
  Tensor table = testing::random_host(DType::BF16, {v, d}, 11);
  Tensor ids = testing::random_ids(DType::I32, t_count, 0, v - 1, 12);
  const float s = kernels::embedding_scale(d, DType::BF16);
  Tensor out_c = Tensor::empty(DType::BF16, {t_count, d});
  kernels::embedding_forward(ids, table, s, out_c);
  Tensor table_d = table.to(Device::CUDA), out_d = Tensor::empty(DType::BF16, {t_count, d}, Device::CUDA);
  kernels::embedding_forward(ids.to(Device::CUDA), table_d, s, out_d);
  ASSERT_TRUE(testing::bits_equal(out_d, out_c));

  Tensor bad = Tensor::copy_of(ids, Device::CPU);
  bad.ptr<int32_t>()[150001] = -1;
  bad.ptr<int32_t>()[199999] = static_cast<int32_t>(v);
  Tensor status = Tensor::empty(DType::I32, {2}, Device::CUDA);
  kernels::embedding_forward(bad.to(Device::CUDA), table_d, s, out_d, status);
  const Tensor st = status.to(Device::CPU);
  EXPECT_EQ(st.ptr<int32_t>()[0], 2);
  EXPECT_EQ(st.ptr<int32_t>()[1], 150001);
  const Tensor got = out_d.to(Device::CPU);
  const auto* g = static_cast<const uint16_t*>(got.data());
  const auto* want = static_cast<const uint16_t*>(out_c.data());
  int64_t mismatches = 0;
  for (int64_t t = 0; t < t_count; ++t) {
    const bool is_bad = t == 150001 || t == 199999;
    for (int64_t j = 0; j < d; ++j) mismatches += g[t * d + j] != (is_bad ? uint16_t{0} : want[t * d + j]);
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(EmbeddingGpu, BadIdsAreReportedNotRead) {
  TG_REQUIRE_CUDA();
  Tensor table = testing::random_host(DType::BF16, {10, 16}, 7).to(Device::CUDA);
  Tensor ids = Tensor::empty(DType::I64, {5});
  const int64_t raw[5] = {1, 2, int64_t{1} << 40, 3, -7};
  std::copy(raw, raw + 5, ids.ptr<int64_t>());
  Tensor ids_d = ids.to(Device::CUDA);
  Tensor out = Tensor::empty(DType::BF16, {5, 16}, Device::CUDA);
  // Launcher-owned status: synchronous tg::Error.
  try {
    kernels::embedding_forward(ids_d, table, 1.0f, out);
    FAIL() << "expected tg::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("2 token(s)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("token 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("id 1099511627776"), std::string::npos) << msg;
  }
  // Caller-owned status: no wait; the rows of bad tokens are zero, the others correct.
  Tensor status = Tensor::empty(DType::I32, {2}, Device::CUDA);
  kernels::embedding_forward(ids_d, table, 1.0f, out, status);
  const Tensor st = status.to(Device::CPU);
  EXPECT_EQ(st.ptr<int32_t>()[0], 2);
  EXPECT_EQ(st.ptr<int32_t>()[1], 2);
  const std::vector<double> o = testing::values(out.view());
  for (int64_t j = 0; j < 16; ++j) {
    EXPECT_EQ(o[2 * 16 + j], 0.0);
    EXPECT_EQ(o[4 * 16 + j], 0.0);
  }
  EXPECT_THROW(kernels::embedding_check_status(status, ids_d, 10), Error);
  // Backward skips them (and reports).
  Tensor acc = Tensor::zeros(DType::F32, {10, 16}, Device::CUDA);
  EXPECT_THROW(kernels::embedding_backward(ids_d, out, 1.0f, acc), Error);
  // A clean call resets the caller's status.
  Tensor good = ids.to(Device::CPU);
  good.ptr<int64_t>()[2] = 0;
  good.ptr<int64_t>()[4] = 9;
  kernels::embedding_forward(good.to(Device::CUDA), table, 1.0f, out, status);
  const Tensor st2 = status.to(Device::CPU);
  EXPECT_EQ(st2.ptr<int32_t>()[0], 0);
  EXPECT_EQ(st2.ptr<int32_t>()[1], INT_MAX);
}

}  // namespace
}  // namespace tg
