// CPU twin of the scaled embedding (kernels/embedding): the BF16-rounded sqrt(D) scale (55.5 for D = 3072),
// the product's single rounding, backward accumulation order into an FP32 buffer, bad ids -> tg::Error.
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <string>
#include <vector>

#include "common/numeric.h"
#include "kernels/elementwise/ieee_math.h"
#include "kernels/embedding/embedding.h"
#include "kernels/tests/elementwise_test_util.h"

namespace tg {
namespace {

using testing::values;

Tensor ids_of(const std::vector<int64_t>& v, DType dtype = DType::I32) {
  Tensor t = Tensor::empty(dtype, {static_cast<int64_t>(v.size())});
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::I32)
      t.ptr<int32_t>()[i] = static_cast<int32_t>(v[i]);
    else
      t.ptr<int64_t>()[i] = v[i];
  }
  return t;
}

TEST(EmbeddingCpu, ScaleIsSqrtDRoundedToTheActivationDtype) {
  // ../shared/docs/gemma.md section 2.1, table of rounded scales.
  EXPECT_EQ(kernels::embedding_scale(3072, DType::BF16), 55.5f);  // not 55.4256
  EXPECT_EQ(kernels::embedding_scale(2048, DType::BF16), 45.25f);
  EXPECT_EQ(kernels::embedding_scale(640, DType::BF16), 25.25f);
  EXPECT_EQ(kernels::embedding_scale(1152, DType::BF16), 34.0f);
  EXPECT_EQ(kernels::embedding_scale(2304, DType::BF16), 48.0f);
  EXPECT_EQ(kernels::embedding_scale(2560, DType::BF16), 50.5f);
  EXPECT_EQ(kernels::embedding_scale(3584, DType::BF16), 59.75f);
  EXPECT_EQ(kernels::embedding_scale(3840, DType::BF16), 62.0f);
  EXPECT_EQ(kernels::embedding_scale(4608, DType::BF16), 68.0f);
  EXPECT_EQ(kernels::embedding_scale(5376, DType::BF16), 73.5f);
  EXPECT_EQ(kernels::embedding_scale(3072, DType::F16), 55.4375f);
  EXPECT_FLOAT_EQ(kernels::embedding_scale(3072, DType::F32), 55.425625f);
}

TEST(EmbeddingCpu, ForwardHandChecked) {
  // Row 1 = [1, -2.5]; scale 55.5: 55.5 is exact, -138.75 rounds to BF16 -139 (8 significant bits).
  Tensor table = Tensor::empty(DType::BF16, {3, 2});
  const float rows[6] = {0.5f, 0.25f, 1.0f, -2.5f, 3.0f, 0.0f};
  for (int i = 0; i < 6; ++i) table.ptr<uint16_t>()[i] = float_to_bf16_bits(rows[i]);
  Tensor out = Tensor::empty(DType::BF16, {3, 2});
  kernels::embedding_forward(ids_of({1, 1, 0}), table, 55.5f, out);
  EXPECT_EQ(values(out), (std::vector<double>{55.5, -139.0, 55.5, -139.0, 27.75, 13.875}));
}

TEST(EmbeddingCpu, ForwardMatchesTheSingleRoundingRule) {
  Tensor table = testing::random_host(DType::BF16, {50, 37}, 1);
  Tensor ids = testing::random_ids(DType::I64, 20, 0, 49, 2);
  const float s = kernels::embedding_scale(3072, DType::BF16);
  for (DType od : {DType::BF16, DType::F32}) {
    Tensor out = Tensor::empty(od, {20, 37});
    kernels::embedding_forward(ids, table, s, out);
    const std::vector<double> e = values(table), got = values(out);
    for (int64_t t = 0; t < 20; ++t) {
      for (int64_t j = 0; j < 37; ++j) {
        const float prod = static_cast<float>(e[ids.ptr<int64_t>()[t] * 37 + j]) * s;  // exact for BF16 rows
        ASSERT_EQ(got[t * 37 + j], round_to(od, prod)) << t << "," << j;
      }
    }
  }
}

TEST(EmbeddingCpu, BackwardAccumulatesInTokenOrderIntoTheBuffer) {
  const int64_t v = 7, d = 5, t_count = 30;
  Tensor ids = testing::random_ids(DType::I32, t_count, 0, 3, 3);  // many repeats; rows 4..6 unused
  Tensor dout = testing::random_host(DType::BF16, {t_count, d}, 4);
  Tensor dtable = testing::random_host(DType::F32, {v, d}, 5);  // e.g. the lm_head's contribution already in
  Tensor before = Tensor::copy_of(dtable, Device::CPU);
  kernels::embedding_backward(ids, dout, 55.5f, dtable);
  const std::vector<double> g = values(dout), b = values(before), got = values(dtable);
  for (int64_t r = 0; r < v; ++r) {
    for (int64_t j = 0; j < d; ++j) {
      float acc = static_cast<float>(b[r * d + j]);
      double exact = b[r * d + j];
      for (int64_t t = 0; t < t_count; ++t) {
        if (ids.ptr<int32_t>()[t] != r) continue;
        acc = kernels::ieee::fadd(acc, kernels::ieee::fmul(static_cast<float>(g[t * d + j]), 55.5f));  // no FMA
        exact += g[t * d + j] * 55.5;
      }
      ASSERT_EQ(got[r * d + j], acc) << r << "," << j;  // the contract's order, bit for bit
      ASSERT_NEAR(got[r * d + j], exact, 1e-5 * (1 + std::fabs(exact)));
    }
  }
}

TEST(EmbeddingCpu, OutOfRangeIdsThrowBeforeWriting) {
  Tensor table = testing::random_host(DType::BF16, {10, 4}, 6);
  Tensor out = Tensor::zeros(DType::BF16, {4, 4});
  Tensor status = Tensor::empty(DType::I32, {2});
  try {
    kernels::embedding_forward(ids_of({1, 10, 3, -1}), table, 1.0f, out, status);
    FAIL() << "expected tg::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("token 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("id 10"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[0, 10)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("2 token(s)"), std::string::npos) << msg;
  }
  EXPECT_EQ(status.ptr<int32_t>()[0], 2);
  EXPECT_EQ(status.ptr<int32_t>()[1], 1);
  for (double x : values(out)) EXPECT_EQ(x, 0.0);  // nothing written
  Tensor dtable = Tensor::zeros(DType::F32, {10, 4});
  EXPECT_THROW(kernels::embedding_backward(ids_of({0, -5}), out, 1.0f, dtable), Error);
  for (double x : values(dtable)) EXPECT_EQ(x, 0.0);
  // A clean call resets the status.
  kernels::embedding_forward(ids_of({0, 9, 1, 2}), table, 1.0f, out, status);
  EXPECT_EQ(status.ptr<int32_t>()[0], 0);
  EXPECT_EQ(status.ptr<int32_t>()[1], INT_MAX);
  EXPECT_NO_THROW(kernels::embedding_check_status(status, ids_of({0, 9, 1, 2}), 10));
}

TEST(EmbeddingCpu, RejectsBadArguments) {
  Tensor table = Tensor::zeros(DType::BF16, {10, 4});
  Tensor out = Tensor::empty(DType::BF16, {2, 4});
  EXPECT_NO_THROW(kernels::embedding_forward(ids_of({0, 1}), table, 2.0f, out));
  EXPECT_THROW(kernels::embedding_forward(ids_of({0, 1, 2}), table, 2.0f, out), Error);
  EXPECT_THROW(kernels::embedding_forward(Tensor::zeros(DType::F32, {2}), table, 2.0f, out), Error);
  EXPECT_THROW(kernels::embedding_forward(ids_of({0, 1}), table, 2.0f, Tensor::empty(DType::BF16, {2, 5})), Error);
  EXPECT_THROW(kernels::embedding_forward(ids_of({0, 1}), table, NAN, out), Error);
  EXPECT_THROW(kernels::embedding_backward(ids_of({0, 1}), out, 2.0f, Tensor::zeros(DType::BF16, {10, 4})), Error);
  EXPECT_THROW(kernels::embedding_scale(0, DType::BF16), Error);
}

}  // namespace
}  // namespace tg
