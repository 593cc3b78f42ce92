// CPU twin of RoPE (kernels/rope): inv_freq as HF computes it, split-half pairs (and not interleaved),
// hand-checked rotation, HF's BF16 rounding points, views into a fused QKV buffer (GQA/MQA), backward =
// transpose (finite differences in FP64), I32/I64 positions, argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/numeric.h"
#include "kernels/elementwise/ieee_math.h"
#include "kernels/rope/rope.h"
#include "kernels/tests/elementwise_test_util.h"

namespace tg {
namespace {

using testing::values;

Tensor positions_of(const std::vector<int64_t>& p, DType dtype = DType::I32) {
  Tensor t = Tensor::empty(dtype, {static_cast<int64_t>(p.size())});
  for (size_t i = 0; i < p.size(); ++i) {
    if (dtype == DType::I32)
      t.ptr<int32_t>()[i] = static_cast<int32_t>(p[i]);
    else
      t.ptr<int64_t>()[i] = p[i];
  }
  return t;
}

Tensor inv_freq(int64_t dh, float theta = 10000.0f) {
  return kernels::rope_inv_freq_table(dh, theta, 1.0f, Device::CPU);
}

// FP64 split-half rotation of one head vector (pairs i, i + Dh/2) or the interleaved variant (2i, 2i+1).
std::vector<double> rotate_f64(const std::vector<double>& x, double pos, const std::vector<float>& freq,
                               bool interleaved) {
  const size_t half = x.size() / 2;
  std::vector<double> y(x.size());
  for (size_t i = 0; i < half; ++i) {
    const double phi = pos * freq[i], c = std::cos(phi), s = std::sin(phi);
    const size_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    y[a] = x[a] * c - x[b] * s;
    y[b] = x[b] * c + x[a] * s;
  }
  return y;
}

TEST(RopeCpu, InvFreqAsHf) {
  const std::vector<float> f = kernels::rope_inv_freq(256, 10000.0f);
  ASSERT_EQ(f.size(), 128u);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[64], 0.01f);  // exponent 128/256 = 0.5 exactly: 1 / 100
  for (size_t i = 0; i < f.size(); ++i) {
    const double e = static_cast<float>(2.0 * i) / 256.0f;  // the FP32 exponent
    const double want = 1.0 / std::pow(10000.0, e);
    EXPECT_NEAR(f[i], want, std::fabs(want) * 1.2e-7) << i;  // two FP32 roundings of an exact power
  }
  // Linear scaling (Gemma 3 global layers) divides every frequency.
  const std::vector<float> g = kernels::rope_inv_freq(256, 1e6f, 8.0f);
  EXPECT_EQ(g[0], 0.125f);
  EXPECT_THROW(kernels::rope_inv_freq(255, 10000.0f), Error);
  EXPECT_THROW(kernels::rope_inv_freq(256, 0.0f), Error);
}

TEST(RopeCpu, HandCheckedRotationF32) {
  // Dh = 4, theta = 10000: inv_freq = [1, 0.01]; position 2: phi = [2, 0.02]; pairs (0, 2) and (1, 3).
  Tensor q = Tensor::empty(DType::F32, {1, 1, 4});
  const float x[4] = {1, 2, 3, 4};
  std::copy(x, x + 4, q.ptr<float>());
  kernels::rope_forward(q, {}, positions_of({2}), inv_freq(4));
  const double c0 = std::cos(2.0), s0 = std::sin(2.0), c1 = std::cos(0.02), s1 = std::sin(0.02);
  const std::vector<double> got = values(q);
  EXPECT_NEAR(got[0], 1 * c0 - 3 * s0, 1e-6);
  EXPECT_NEAR(got[2], 3 * c0 + 1 * s0, 1e-6);
  EXPECT_NEAR(got[1], 2 * c1 - 4 * s1, 1e-6);
  EXPECT_NEAR(got[3], 4 * c1 + 2 * s1, 1e-6);
}

TEST(RopeCpu, SplitHalfNotInterleaved) {
  const int64_t dh = 16;
  Tensor q = testing::random_host(DType::F32, {1, 1, dh}, 1);
  const std::vector<double> x = values(q);
  const std::vector<float> freq = kernels::rope_inv_freq(dh, 10000.0f);
  kernels::rope_forward(q, {}, positions_of({5}), inv_freq(dh));
  const std::vector<double> got = values(q), split = rotate_f64(x, 5, freq, false),
                            inter = rotate_f64(x, 5, freq, true);
  double to_split = 0, to_inter = 0;
  for (int64_t i = 0; i < dh; ++i) {
    to_split = std::max(to_split, std::fabs(got[i] - split[i]));
    to_inter = std::max(to_inter, std::fabs(got[i] - inter[i]));
  }
  EXPECT_LT(to_split, 2e-6);
  EXPECT_GT(to_inter, 0.1);
}

TEST(RopeCpu, PositionZeroIsTheIdentity) {
  Tensor q = testing::random_host(DType::BF16, {3, 2, 8}, 2);
  Tensor before = Tensor::copy_of(q, Device::CPU);
  kernels::rope_forward(q, {}, positions_of({0, 0, 0}), inv_freq(8));
  EXPECT_TRUE(testing::bits_equal(q, before));
}

TEST(RopeCpu, Bf16RoundingPointsAreHfs) {
  // Each product and the sum rounded to BF16, with cos/sin of the FP32 angle rounded to BF16 first.
  const int64_t t_count = 4, heads = 3, dh = 32;
  Tensor q = testing::random_host(DType::BF16, {t_count, heads, dh}, 3, 2.0f);
  const std::vector<double> x = values(q);
  const std::vector<int64_t> pos = {0, 7, 1000, 8191};
  const std::vector<float> freq = kernels::rope_inv_freq(dh, 10000.0f);
  kernels::rope_forward(q, {}, positions_of(pos), inv_freq(dh));
  const std::vector<double> got = values(q);
  for (int64_t t = 0; t < t_count; ++t) {
    for (int64_t i = 0; i < dh / 2; ++i) {
      const float phi = static_cast<float>(pos[t]) * freq[i];
      const float c = round_bf16(static_cast<float>(std::cos(static_cast<double>(phi))));
      const float s = round_bf16(static_cast<float>(std::sin(static_cast<double>(phi))));
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t o = (t * heads + h) * dh + i;
        const auto x1 = static_cast<float>(x[o]), x2 = static_cast<float>(x[o + dh / 2]);
        ASSERT_EQ(got[o], round_bf16(round_bf16(x1 * c) - round_bf16(x2 * s))) << t << "," << h << "," << i;
        ASSERT_EQ(got[o + dh / 2], round_bf16(round_bf16(x2 * c) + round_bf16(x1 * s))) << t << "," << h << "," << i;
      }
    }
  }
}

TEST(RopeCpu, ViewsIntoFusedQkvLeaveVAlone) {
  // MQA like gemma-2b: H = 4, Hkv = 1, Dh = 8; QKV [T, (H + 2 Hkv) Dh].
  const int64_t t_count = 5, h = 4, hkv = 1, dh = 8, w = (h + 2 * hkv) * dh;
  Tensor qkv = testing::random_host(DType::BF16, {t_count, w}, 4);
  Tensor orig = Tensor::copy_of(qkv, Device::CPU);
  const TensorView q(qkv.data(), DType::BF16, Shape{t_count, h, dh}, Shape{w, dh, 1}, Device::CPU);
  const TensorView k(qkv.ptr<uint16_t>() + h * dh, DType::BF16, Shape{t_count, hkv, dh}, Shape{w, dh, 1}, Device::CPU);
  const Tensor pos = positions_of({3, 4, 5, 0, 1}, DType::I64);  // a packed batch: two sequences
  kernels::rope_forward(q, k, pos, inv_freq(dh));
  // The same rotation on separate contiguous q and k.
  Tensor qc = Tensor::empty(DType::BF16, {t_count, h, dh}), kc = Tensor::empty(DType::BF16, {t_count, hkv, dh});
  for (int64_t t = 0; t < t_count; ++t) {
    std::memcpy(qc.ptr<uint16_t>() + t * h * dh, orig.ptr<uint16_t>() + t * w, h * dh * 2);
    std::memcpy(kc.ptr<uint16_t>() + t * hkv * dh, orig.ptr<uint16_t>() + t * w + h * dh, hkv * dh * 2);
  }
  kernels::rope_forward(qc, kc, positions_of({3, 4, 5, 0, 1}), inv_freq(dh));
  for (int64_t t = 0; t < t_count; ++t) {
    EXPECT_EQ(std::memcmp(qkv.ptr<uint16_t>() + t * w, qc.ptr<uint16_t>() + t * h * dh, h * dh * 2), 0) << t;
    EXPECT_EQ(std::memcmp(qkv.ptr<uint16_t>() + t * w + h * dh, kc.ptr<uint16_t>() + t * hkv * dh, hkv * dh * 2), 0)
        << t;
    EXPECT_EQ(std::memcmp(qkv.ptr<uint16_t>() + t * w + (h + hkv) * dh, orig.ptr<uint16_t>() + t * w + (h + hkv) * dh,
                          hkv * dh * 2),
              0)
        << "v of token " << t << " was modified";
  }
}

TEST(RopeCpu, BackwardIsTheTransposeByFiniteDifferences) {
  // L = sum(G * rope(x)); rope is linear in x, so dL/dx = rope_backward(G). FP64 differences of the
  // FP64 rotation vs the F32 twin.
  const int64_t t_count = 3, heads = 2, dh = 12;
  const std::vector<int64_t> pos = {1, 17, -3};  // negative positions are valid (left padding)
  Tensor x = testing::random_host(DType::F32, {t_count, heads, dh}, 5);
  Tensor g = testing::random_host(DType::F32, {t_count, heads, dh}, 6);
  Tensor dx = Tensor::copy_of(g, Device::CPU);
  kernels::rope_backward(dx, {}, positions_of(pos), inv_freq(dh));
  const std::vector<float> freq = kernels::rope_inv_freq(dh, 10000.0f);
  std::vector<double> xv = values(x);
  const std::vector<double> gv = values(g), got = values(dx);
  auto loss = [&] {
    double l = 0;
    for (int64_t t = 0; t < t_count; ++t) {
      for (int64_t hh = 0; hh < heads; ++hh) {
        const int64_t o = (t * heads + hh) * dh;
        const std::vector<double> y = rotate_f64(std::vector<double>(xv.begin() + o, xv.begin() + o + dh),
                                                 static_cast<double>(pos[t]), freq, false);
        for (int64_t i = 0; i < dh; ++i) l += gv[o + i] * y[i];
      }
    }
    return l;
  };
  for (size_t i = 0; i < xv.size(); ++i) {
    const double x0 = xv[i], h = 1e-6;
    xv[i] = x0 + h;
    const double lp = loss();
    xv[i] = x0 - h;
    const double lm = loss();
    xv[i] = x0;
    ASSERT_NEAR(got[i], (lp - lm) / (2 * h), 2e-6) << i;
  }
  // And forward then backward is the identity up to FP32 rounding.
  Tensor y = Tensor::copy_of(x, Device::CPU);
  kernels::rope_forward(y, {}, positions_of(pos), inv_freq(dh));
  kernels::rope_backward(y, {}, positions_of(pos), inv_freq(dh));
  const std::vector<double> back = values(y);
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(back[i], xv[i], 2e-6) << i;
}

TEST(RopeCpu, I32AndI64PositionsAgree) {
  Tensor a = testing::random_host(DType::BF16, {4, 2, 16}, 7);
  Tensor b = Tensor::copy_of(a, Device::CPU);
  kernels::rope_forward(a, {}, positions_of({9, 100, 5000, 2}, DType::I32), inv_freq(16));
  kernels::rope_forward(b, {}, positions_of({9, 100, 5000, 2}, DType::I64), inv_freq(16));
  EXPECT_TRUE(testing::bits_equal(a, b));
}

TEST(RopeCpu, RejectsBadArguments) {
  Tensor q = Tensor::zeros(DType::BF16, {2, 2, 8});
  EXPECT_NO_THROW(kernels::rope_forward(q, {}, positions_of({0, 1}), inv_freq(8)));
  EXPECT_THROW(kernels::rope_forward(q, {}, positions_of({0, 1, 2}), inv_freq(8)), Error);
  EXPECT_THROW(kernels::rope_forward(q, {}, positions_of({0, 1}), inv_freq(16)), Error);
  EXPECT_THROW(kernels::rope_forward(Tensor::zeros(DType::BF16, {2, 2, 7}), {}, positions_of({0, 1}), inv_freq(8)),
               Error);
  EXPECT_THROW(kernels::rope_forward(q, Tensor::zeros(DType::F32, {2, 1, 8}), positions_of({0, 1}), inv_freq(8)),
               Error);
  EXPECT_THROW(kernels::rope_forward(q, {}, Tensor::zeros(DType::F32, {2}), inv_freq(8)), Error);
  EXPECT_THROW(kernels::rope_forward({}, {}, positions_of({0, 1}), inv_freq(8)), Error);
}

// ---- The precomputed cos/sin table (rope_cos_sin_table) -------------------------------------------------

// Whether f throws a tg::Error whose message contains `want`.
::testing::AssertionResult throws_with(const std::function<void()>& f, const std::string& want) {
  std::string msg = "no error";
  try {
    f();
  } catch (const Error& e) {
    msg = e.what();
  }
  if (msg.find(want) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "expected an error containing '" << want << "', got: " << msg;
}

// Every entry is the FP32 value the kernels compute: sincos_angle(fmul(float(p), inv_freq_i)), cos then sin per row.
TEST(RopeTableCpu, EntriesAreSincosAngleOfTheKernelsAngle) {
  for (const int64_t dh : {int64_t{256}, int64_t{18}, int64_t{2}}) {
    const Tensor f = inv_freq(dh);
    const int64_t half = dh / 2, positions = 8192;
    const Tensor table = kernels::rope_cos_sin_table(f, positions, Device::CPU);
    ASSERT_EQ(table.shape(), (Shape{positions, 2, half}));
    ASSERT_EQ(table.dtype(), DType::F32);
    int64_t mismatches = 0;
    for (int64_t p = 0; p < positions; ++p) {
      for (int64_t i = 0; i < half; ++i) {
        const kernels::ieee::SinCos sc =
            kernels::ieee::sincos_angle(kernels::ieee::fmul(static_cast<float>(p), f.ptr<float>()[i]));
        const float c = table.ptr<float>()[p * 2 * half + i], s = table.ptr<float>()[p * 2 * half + half + i];
        if (std::memcmp(&c, &sc.cos, 4) != 0 || std::memcmp(&s, &sc.sin, 4) != 0) ++mismatches;
      }
    }
    EXPECT_EQ(mismatches, 0) << "Dh = " << dh;
    // Row 0 is the identity rotation; spot values against FP64 (the angle is exact for p * 1.0f).
    EXPECT_EQ(table.ptr<float>()[0], 1.0f);
    EXPECT_EQ(table.ptr<float>()[half], 0.0f);
    EXPECT_NEAR(table.ptr<float>()[5 * 2 * half], std::cos(5.0), 1e-7);
    EXPECT_NEAR(table.ptr<float>()[5 * 2 * half + half], std::sin(5.0), 1e-7);
  }
}

// rope with the table == rope without it, bit for bit, forward and backward, BF16 and F32, with positions inside
// the table, past its end and negative (computed: the fallback), Gemma's head counts.
TEST(RopeTableCpu, TableEqualsComputedIncludingPositionsPastTheTable) {
  struct Case {
    int64_t h, hkv, dh;
  };
  for (const Case c : {Case{8, 1, 256}, Case{2, 2, 18}}) {
    const int64_t t = 40, w = (c.h + 2 * c.hkv) * c.dh;
    const Tensor f = inv_freq(c.dh);
    const Tensor table = kernels::rope_cos_sin_table(f, 1000, Device::CPU);  // positions >= 1000: computed
    for (const DType a : {DType::BF16, DType::F32}) {
      for (const bool bwd : {false, true}) {
        Tensor pos = testing::random_ids(DType::I64, t, -4, 8191, 11);
        pos.ptr<int64_t>()[0] = 999;
        pos.ptr<int64_t>()[1] = 1000;
        pos.ptr<int64_t>()[2] = 0;
        Tensor x1 = testing::random_host(a, {t, w}, 12, 2.0f), x2 = Tensor::copy_of(x1, Device::CPU);
        const auto q_of = [&](const Tensor& b) {
          return TensorView(b.data(), a, Shape{t, c.h, c.dh}, Shape{w, c.dh, 1}, Device::CPU);
        };
        const auto k_of = [&](const Tensor& b) {
          return TensorView(static_cast<char*>(b.data()) + c.h * c.dh * dtype_size(a), a, Shape{t, c.hkv, c.dh},
                            Shape{w, c.dh, 1}, Device::CPU);
        };
        if (bwd) {
          kernels::rope_backward(q_of(x1), k_of(x1), pos, f, {}, table);
          kernels::rope_backward(q_of(x2), k_of(x2), pos, f);
        } else {
          kernels::rope_forward(q_of(x1), k_of(x1), pos, f, {}, table);
          kernels::rope_forward(q_of(x2), k_of(x2), pos, f);
        }
        EXPECT_TRUE(testing::bits_equal(x1, x2)) << "Dh " << c.dh << " " << a << (bwd ? " backward" : " forward");
      }
    }
  }
}

// A table is really read where it covers the position (a doctored entry changes the result) and not past its end.
TEST(RopeTableCpu, TheTableIsReadOnlyInsideItsPositions) {
  const int64_t dh = 16;
  const Tensor f = inv_freq(dh);
  Tensor table = kernels::rope_cos_sin_table(f, 4, Device::CPU);
  for (int64_t i = 0; i < table.numel(); ++i) table.ptr<float>()[i] = 0.0f;  // rotates everything to 0
  Tensor x = testing::random_host(DType::F32, {2, 1, dh}, 3), y = Tensor::copy_of(x, Device::CPU);
  kernels::rope_forward(x, {}, positions_of({3, 4}), f, {}, table);  // token 0 from the table, token 1 computed
  kernels::rope_forward(y, {}, positions_of({3, 4}), f);
  for (int64_t i = 0; i < dh; ++i) EXPECT_EQ(x.ptr<float>()[i], 0.0f) << i;
  EXPECT_EQ(std::memcmp(x.ptr<float>() + dh, y.ptr<float>() + dh, dh * sizeof(float)), 0);
}

TEST(RopeTableCpu, RejectsBadTables) {
  Tensor q = Tensor::zeros(DType::BF16, {2, 2, 8});
  const Tensor pos = positions_of({0, 1});
  const Tensor good = kernels::rope_cos_sin_table(inv_freq(8), 16, Device::CPU);
  EXPECT_NO_THROW(kernels::rope_forward(q, {}, pos, inv_freq(8), {}, good));
  const Tensor other_dh = kernels::rope_cos_sin_table(inv_freq(16), 16, Device::CPU);
  const Tensor f8 = inv_freq(8);
  const auto forward = [&](const TensorView& table) { kernels::rope_forward(q, {}, pos, f8, {}, table); };
  EXPECT_TRUE(throws_with([&] { forward(other_dh); },
                          "rope_forward: table must be the F32 [positions, 2, Dh/2 = 4] cos/sin table"));
  EXPECT_TRUE(throws_with([&] { kernels::rope_backward(q, {}, pos, f8, {}, other_dh); },
                          "rope_backward: table must be"));
  const Tensor f64 = Tensor::zeros(DType::F64, {16, 2, 4});
  EXPECT_TRUE(throws_with([&] { forward(f64); }, "table must be the F32"));
  const TensorView flat(good.data(), DType::F32, Shape{16, 8}, Device::CPU);
  EXPECT_TRUE(throws_with([&] { forward(flat); }, "table must be the F32"));
  const TensorView strided(good.data(), DType::F32, Shape{8, 2, 4}, Shape{16, 4, 1}, Device::CPU);
  EXPECT_TRUE(throws_with([&] { forward(strided); }, "table must be contiguous"));
  const TensorView elsewhere(good.data(), DType::F32, good.shape(), Device::CUDA);  // never dereferenced
  EXPECT_TRUE(throws_with([&] { forward(elsewhere); }, "table must be on CPU"));
  EXPECT_TRUE(throws_with([&] { kernels::rope_cos_sin_table(f8, 0, Device::CPU); }, "max_positions must be >= 1"));
  EXPECT_TRUE(throws_with([] { kernels::rope_cos_sin_table(Tensor::zeros(DType::F64, {4}), 8, Device::CPU); },
                          "inv_freq must be F32"));
}

TEST(RopeTableCpu, TablePositionsCapTheBytes) {
  EXPECT_EQ(kernels::rope_table_positions(8192, 256), 8192);
  EXPECT_EQ(kernels::rope_table_positions(1 << 20, 256), 32768);  // 32 MiB at Dh = 256
  EXPECT_EQ(kernels::rope_table_positions(0, 256), 1);
  EXPECT_THROW(kernels::rope_table_positions(8192, 7), Error);
}

}  // namespace
}  // namespace tg
