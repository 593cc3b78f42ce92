// CPU twin of kernels/gemm/gemv against hand-checked values and an independent FP64 loop (the twin accumulates in
// double in ascending k and rounds once, so its output must equal round(FP64 in the same order) bit for bit); its
// bitwise agreement with cpu::gemm / cpu::gemm_fp8 (what the decoder's CPU path relies on); the argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/numeric.h"
#include "kernels/gemm/gemm.h"
#include "kernels/gemm/gemv.h"
#include "kernels/kv_cache/kv_cache.h"
#include "kernels/launch/programmatic_launch.h"
#include "kernels/norm/norm.h"
#include "kernels/tests/gemm_test_util.h"

namespace tg::kernels {
namespace {

using testing::bits_at;
using testing::element;
using testing::expected_bits;
using testing::make_fp8_operand;
using testing::random_matrix;
using testing::scalar_f32;

Tensor bf16_matrix(const std::vector<float>& v, int64_t rows, int64_t cols) {
  Tensor t = Tensor::empty(DType::BF16, {rows, cols});
  for (int64_t i = 0; i < rows * cols; ++i) t.ptr<uint16_t>()[i] = float_to_bf16_bits(v[static_cast<std::size_t>(i)]);
  return t;
}

// ---- Hand-checked values ---------------------------------------------------------------------------------------

TEST(GemvCpu, Bf16HandChecked) {
  // x = [[1, 2, 3, 4, 5, 6, 7, 8], [1, 1, 1, 1, 1, 1, 1, 1]]
  // W = [[1, 0, 0, 0, 0, 0, 0, -1], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [2, 0, 2, 0, 2, 0, 2, 0]]
  // x W^T = [[1 - 8, 18, 2 (1 + 3 + 5 + 7) = 32], [0, 4, 8]] = [[-7, 18, 32], [0, 4, 8]]
  const Tensor x = bf16_matrix({1, 2, 3, 4, 5, 6, 7, 8, 1, 1, 1, 1, 1, 1, 1, 1}, 2, 8);
  const Tensor w = bf16_matrix({1, 0, 0, 0, 0, 0, 0, -1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 2, 0, 2, 0, 2, 0, 2, 0},
                               3, 8);
  Tensor out = Tensor::empty(DType::F32, {2, 3});
  gemv(GemvOperand::bf16(x.view()), GemvOperand::bf16(w.view()), out.view());
  const float want[] = {-7, 18, 32, 0, 4, 8};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out.ptr<float>()[i], want[i]) << i;

  // alpha = 0.5 and a residual that is out itself: out = 0.5 x W^T + out.
  gemv(GemvOperand::bf16(x.view()), GemvOperand::bf16(w.view()), out.view(), {.alpha = 0.5f}, out.view());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out.ptr<float>()[i], 1.5f * want[i]) << i;
}

TEST(GemvCpu, E4m3WeightsHandChecked) {
  // W codes 1, 2, -1.5, 0.5 (exact in E4M3) with scale_inv 0.25; x BF16 stays BF16 (x = 1.0078125 is NOT an E4M3
  // value: a GEMV that quantized x would give 1 instead).
  const float codes[] = {1, 2, -1.5, 0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  Tensor w = Tensor::empty(DType::E4M3, {1, 16});
  for (int i = 0; i < 16; ++i) w.ptr<uint8_t>()[i] = static_cast<uint8_t>(encode(DType::E4M3, codes[i]));
  const Tensor ws = scalar_f32(0.25f, Device::CPU);
  std::vector<float> xv(16, 0.0f);
  xv[0] = 1.0078125f;  // 1 + 2^-7: BF16-exact
  xv[1] = 2;
  xv[2] = 4;
  xv[3] = -8;
  const Tensor x = bf16_matrix(xv, 1, 16);
  Tensor out = Tensor::empty(DType::F32, {1, 1});
  gemv(GemvOperand::bf16(x.view()), GemvOperand{w.view(), ws.view()}, out.view());
  // 0.25 (1.0078125 + 4 - 6 - 4) = 0.25 * -4.9921875
  EXPECT_EQ(out.ptr<float>()[0], 0.25f * -4.9921875f);
}

TEST(GemvCpu, E4m3PairHandChecked) {
  // Both operands E4M3 (the FP8 GEMM's pair): (sum q_x q_w) * sx * sw. x codes [3, -2], W codes [[1, 1], [0.5, 4]].
  Tensor x = Tensor::zeros(DType::E4M3, {1, 16}), w = Tensor::zeros(DType::E4M3, {2, 16});
  x.ptr<uint8_t>()[0] = static_cast<uint8_t>(encode(DType::E4M3, 3.0f));
  x.ptr<uint8_t>()[1] = static_cast<uint8_t>(encode(DType::E4M3, -2.0f));
  const float wc[] = {1, 1, 0.5, 4};
  w.ptr<uint8_t>()[0] = static_cast<uint8_t>(encode(DType::E4M3, wc[0]));
  w.ptr<uint8_t>()[1] = static_cast<uint8_t>(encode(DType::E4M3, wc[1]));
  w.ptr<uint8_t>()[16] = static_cast<uint8_t>(encode(DType::E4M3, wc[2]));
  w.ptr<uint8_t>()[17] = static_cast<uint8_t>(encode(DType::E4M3, wc[3]));
  const Tensor sx = scalar_f32(0.5f, Device::CPU), sw = scalar_f32(0.125f, Device::CPU);
  Tensor out = Tensor::empty(DType::BF16, {1, 2});
  gemv(GemvOperand{x.view(), sx.view()}, GemvOperand{w.view(), sw.view()}, out.view());
  // (3 - 2) / 16 = 0.0625; (1.5 - 8) / 16 = -0.40625 (both BF16-exact)
  EXPECT_EQ(bf16_bits_to_float(out.ptr<uint16_t>()[0]), 0.0625f);
  EXPECT_EQ(bf16_bits_to_float(out.ptr<uint16_t>()[1]), -0.40625f);
}

// ---- Against an independent FP64 loop ----------------------------------------------------------------------------

struct Case {
  DType x, w, out;
  int64_t m, n, k;
  bool residual;
  float alpha;
};

std::string case_name(const Case& c) {
  return std::string(dtype_name(c.x)) + "x" + std::string(dtype_name(c.w)) + "->" + std::string(dtype_name(c.out)) +
         " " + std::to_string(c.m) + "x" + std::to_string(c.n) + "x" + std::to_string(c.k) +
         (c.residual ? " +residual" : "");
}

TEST(GemvCpu, MatchesFp64BitForBit) {
  const std::vector<Case> cases = {
      {DType::BF16, DType::BF16, DType::BF16, 1, 37, 8, false, 1.0f},
      {DType::BF16, DType::BF16, DType::F32, 3, 29, 296, true, 0.75f},
      {DType::BF16, DType::E4M3, DType::BF16, 1, 41, 592, true, 1.0f},
      {DType::BF16, DType::E4M3, DType::F32, 16, 7, 48, false, -2.0f},
      {DType::E4M3, DType::E4M3, DType::BF16, 5, 33, 2048, true, 1.0f},
      {DType::E4M3, DType::E4M3, DType::F32, 2, 3, 16, false, 1.0f},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(case_name(c));
    // Operands: BF16 ~ N(0, 1); E4M3 codes ~ N(0, 1) with a non-power-of-two scale_inv.
    Tensor xd = random_matrix(c.x, c.m, c.k, ++seed), wd = random_matrix(c.w, c.n, c.k, ++seed);
    const Tensor xs = scalar_f32(0.37f, Device::CPU), ws = scalar_f32(0.021f, Device::CPU);
    const GemvOperand x{xd.view(), c.x == DType::E4M3 ? xs.view() : TensorView{}};
    const GemvOperand w{wd.view(), c.w == DType::E4M3 ? ws.view() : TensorView{}};
    Tensor res = random_matrix(c.out, c.m, c.n, ++seed);
    Tensor out = Tensor::empty(c.out, {c.m, c.n});
    gemv(x, w, out.view(), {.alpha = c.alpha}, c.residual ? res.view() : TensorView{});
    const double sx = c.x == DType::E4M3 ? 0.37f : 1.0, sw = c.w == DType::E4M3 ? 0.021f : 1.0;
    int bad = 0;
    for (int64_t i = 0; i < c.m; ++i) {
      for (int64_t j = 0; j < c.n; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < c.k; ++k) acc += (element(xd.view(), i, k) * sx) * (element(wd.view(), j, k) * sw);
        double v = static_cast<double>(c.alpha) * acc;
        if (c.residual) v += element(res.view(), i, j);
        if (bits_at(out.view(), i, j) != expected_bits(c.out, v) && ++bad <= 5) {
          ADD_FAILURE() << "out[" << i << ", " << j << "] = " << element(out.view(), i, j) << ", FP64 " << v;
        }
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

// ---- The same bits as the GEMM twins (the decoder switches between them on the CPU backend) ----------------------

TEST(GemvCpu, EqualsTheGemmTwinsBitForBit) {
  const int64_t m = 3, n = 48, k = 256;  // N % 8: the FP8 GEMM's BF16 out rule
  // BF16: out = x W^T + out (beta = 1) against gemv with residual = out.
  {
    const Tensor x = random_matrix(DType::BF16, m, k, 11), w = random_matrix(DType::BF16, n, k, 12);
    Tensor a = random_matrix(DType::BF16, m, n, 13), b = random_matrix(DType::BF16, m, n, 13);
    gemm(x.view(), w.view(), a.view(), {.beta = 1.0f});
    gemv(GemvOperand::bf16(x.view()), GemvOperand::bf16(w.view()), b.view(), {}, b.view());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.view().nbytes()), 0) << "BF16";
  }
  // Per-tensor FP8 pair, BF16 out, overwrite.
  {
    const auto xo = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, m, k, 21, 0.3, false, false);
    const auto wo = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, n, k, 22, 0.02, false, false);
    Tensor a = Tensor::empty(DType::BF16, {m, n}), b = Tensor::empty(DType::BF16, {m, n});
    gemm_fp8(xo.view(Device::CPU), wo.view(Device::CPU), a.view());
    gemv(GemvOperand::fp8(xo.view(Device::CPU)), GemvOperand::fp8(wo.view(Device::CPU)), b.view());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.view().nbytes()), 0) << "FP8";
  }
}

// ---- gemv_geglu (fc1 + GeGLU -> E4M3) ------------------------------------------------------------------------------

// x = 16 codes of 1.0 (E4M3 0x38); W = [gate; up] with F = 2: gate0 = 0.5 (0x30), gate1 = 0.0625 (0x18), up0 = 0.125
// (0x20), up1 = 0.0625, all scales 1. fc1 = [8, 1 | 2, 1]. gelu_tanh(8) = 8 exactly (tanh saturates), V0 = 8 * 2 = 16
// -> E4M3 0x58; gelu_tanh(1) = 0.841192 -> BF16 0.83984375 (215 / 256), V1 = 0.83984375 -> E4M3 RNE 13 / 16 =
// 0.8125 = 0x35. amax = 16, scale_inv = 1 / scale = 1.
TEST(GemvCpu, GegluEpilogueHandChecked) {
  Tensor x = Tensor::empty(DType::E4M3, {1, 16}), w = Tensor::empty(DType::E4M3, {4, 16});
  std::memset(x.data(), 0x38, 16);
  const uint8_t rows[4] = {0x30, 0x18, 0x20, 0x18};
  for (int r = 0; r < 4; ++r) std::memset(static_cast<uint8_t*>(w.data()) + 16 * r, rows[r], 16);
  const Tensor one = scalar_f32(1.0f, Device::CPU);
  Fp8Tensor act = Fp8Tensor::per_tensor(DType::E4M3, 1, 2, true, false, Device::CPU);
  act.view().scale_inv.ptr<float>()[0] = 123.0f;  // overwritten with 1 / scale
  gemv_geglu({x.view(), one.view()}, {w.view(), one.view()}, act.view());
  const uint8_t* q = static_cast<const uint8_t*>(act.view().data.data);
  EXPECT_EQ(q[0], 0x58);
  EXPECT_EQ(q[1], 0x35);
  EXPECT_EQ(act.view().amax.ptr<float>()[0], 16.0f);
  EXPECT_EQ(act.view().scale_inv.ptr<float>()[0], 1.0f);
}

TEST(GemvCpu, GegluEpilogueBadInputIsAClearError) {
  const Tensor x8 = random_matrix(DType::E4M3, 1, 32, 1), w8 = random_matrix(DType::E4M3, 6, 32, 2);
  const Tensor xb = random_matrix(DType::BF16, 1, 32, 3), s = scalar_f32(1.0f, Device::CPU);
  const GemvOperand x{x8.view(), s.view()}, w{w8.view(), s.view()};
  Fp8Tensor act = Fp8Tensor::per_tensor(DType::E4M3, 1, 3, true, false, Device::CPU);
  EXPECT_NO_THROW(gemv_geglu(x, w, act.view()));
  TG_EXPECT_THROW_MSG(gemv_geglu(GemvOperand::bf16(xb.view()), w, act.view()), "x and W must be F8_E4M3");
  const Tensor w5 = random_matrix(DType::E4M3, 5, 32, 4);
  TG_EXPECT_THROW_MSG(gemv_geglu(x, {w5.view(), s.view()}, act.view()), "even number of rows");
  Fp8Tensor act4 = Fp8Tensor::per_tensor(DType::E4M3, 1, 4, true, false, Device::CPU);
  TG_EXPECT_THROW_MSG(gemv_geglu(x, w, act4.view()), "act must be [1, F = 3]");
  Fp8Tensor both = Fp8Tensor::per_tensor(DType::E4M3, 1, 3, true, true, Device::CPU);
  TG_EXPECT_THROW_MSG(gemv_geglu(x, w, both.view()), "row-wise copy only");
  Fp8Tensor e5 = Fp8Tensor::per_tensor(DType::E5M2, 1, 3, true, false, Device::CPU);
  TG_EXPECT_THROW_MSG(gemv_geglu(x, w, e5.view()), "act must be F8_E4M3");
  const Tensor x2 = random_matrix(DType::E4M3, 2, 32, 5);
  TG_EXPECT_THROW_MSG(gemv_geglu({x2.view(), s.view()}, w, act.view()), "one row of x");
}

// ---- gemv_qkv_rope (QKV + RoPE + KV-cache write) -------------------------------------------------------------------

// The CPU twin is the unfused pair by definition; here the pair's bytes once more through the public entry point
// (H 2, Hkv 1, Dh 16, K 32; E4M3 per-tensor cache), and the argument checks.
TEST(GemvCpu, QkvRopeTwinIsTheUnfusedPairAndChecksItsArguments) {
  const int64_t h = 2, hkv = 1, dh = 16, k = 32, n = (h + 2 * hkv) * dh, b = 2, max_seq = 8;
  const Tensor x8 = random_matrix(DType::E4M3, 1, k, 11), w8 = random_matrix(DType::E4M3, n, k, 12);
  const Tensor s = scalar_f32(0.05f, Device::CPU), kvs = scalar_f32(0.01f, Device::CPU);
  const GemvOperand x{x8.view(), s.view()}, w{w8.view(), s.view()};
  Tensor inv_freq = Tensor::empty(DType::F32, {dh / 2});
  for (int64_t i = 0; i < dh / 2; ++i) inv_freq.ptr<float>()[i] = std::pow(10000.0f, -2.0f * i / dh);
  int32_t slot_v = 1, pos_v = 5;
  const Tensor slots = Tensor::copy_of(TensorView(&slot_v, DType::I32, Shape{1}), Device::CPU);
  const Tensor positions = Tensor::copy_of(TensorView(&pos_v, DType::I32, Shape{1}), Device::CPU);
  Tensor kc[2], vc[2], q_out[2];
  for (int i = 0; i < 2; ++i) {
    kc[i] = Tensor::zeros(DType::E4M3, {b, max_seq, hkv, dh});
    vc[i] = Tensor::zeros(DType::E4M3, {b, max_seq, hkv, dh});
    q_out[i] = Tensor::zeros(DType::BF16, {1, h, dh});
  }
  auto cache = [&](int i) { return KvCache{kc[i].view(), vc[i].view(), kvs.view(), kvs.view()}; };
  Tensor qkv = Tensor::empty(DType::BF16, {1, n});
  cpu::gemv(x, w, qkv.view(), {}, {});
  auto heads = [&](int64_t first, int64_t count) {
    return TensorView(qkv.ptr<uint16_t>() + first * dh, DType::BF16, Shape{1, count, dh}, Shape{n, dh, 1},
                      Device::CPU);
  };
  cpu::kv_cache_write_rope(heads(h, hkv), heads(h + hkv, hkv), slots.view(), positions.view(), inv_freq.view(),
                           cache(0), heads(0, h), q_out[0].view());
  gemv_qkv_rope(x, w, slots.view(), positions.view(), inv_freq.view(), cache(1), q_out[1].view());
  for (const auto& [a, c] : {std::pair{&kc[0], &kc[1]}, std::pair{&vc[0], &vc[1]}, std::pair{&q_out[0], &q_out[1]}}) {
    EXPECT_EQ(std::memcmp(a->data(), c->data(), a->nbytes()), 0);
  }
  const uint8_t* row = static_cast<const uint8_t*>(kc[1].data()) + (1 * max_seq + 5) * hkv * dh;
  EXPECT_TRUE(std::any_of(row, row + dh, [](uint8_t v) { return v != 0; })) << "the cache row was not written";

  // Bad input: W's rows, q_out's rank, two rows of x, inv_freq's length, BF16 x.
  const Tensor w_bad = random_matrix(DType::E4M3, n - dh, k, 13);
  TG_EXPECT_THROW_MSG(gemv_qkv_rope(x, {w_bad.view(), s.view()}, slots.view(), positions.view(), inv_freq.view(),
                                    cache(1), q_out[1].view()),
                      "W must be the fused QKV weight");
  TG_EXPECT_THROW_MSG(gemv_qkv_rope(x, w, slots.view(), positions.view(), inv_freq.view(), cache(1),
                                    q_out[1].view().reshape({1, h * dh})),
                      "q_out must be [1, H, Dh]");
  const Tensor x2 = random_matrix(DType::E4M3, 2, k, 14);
  TG_EXPECT_THROW_MSG(gemv_qkv_rope({x2.view(), s.view()}, w, slots.view(), positions.view(), inv_freq.view(),
                                    cache(1), q_out[1].view()),
                      "one row of x");
  TG_EXPECT_THROW_MSG(gemv_qkv_rope(x, w, slots.view(), positions.view(), inv_freq.view().slice_rows(0, 4), cache(1),
                                    q_out[1].view()),
                      "inv_freq must be F32 [Dh / 2 = 8]");
  const Tensor xb = random_matrix(DType::BF16, 1, k, 15);
  TG_EXPECT_THROW_MSG(gemv_qkv_rope(GemvOperand::bf16(xb.view()), w, slots.view(), positions.view(), inv_freq.view(),
                                    cache(1), q_out[1].view()),
                      "x and W must be F8_E4M3");
}

// ---- The RMSNorm prologue (GemvNorm) -------------------------------------------------------------------------------

// The twin is rmsnorm_forward_fp8 then the kernel's twin: the same q_out, cache rows, rstd, scale_inv and amax through
// the public entry point (gemv_norm_qkv_rope: H 2, Hkv 1, Dh 16, K 32, E4M3 per-tensor cache; a norm x with its
// amax); x.data is not written; the argument checks.
TEST(GemvCpu, NormPrologueIsTheNormThenTheKernelAndChecksItsArguments) {
  const int64_t h = 2, hkv = 1, dh = 16, k = 32, n = (h + 2 * hkv) * dh, b = 2, max_seq = 8;
  const Tensor hs = random_matrix(DType::BF16, 1, k, 21), nw = random_matrix(DType::BF16, 1, k, 22);
  const Tensor w8 = random_matrix(DType::E4M3, n, k, 23), s = scalar_f32(0.05f, Device::CPU);
  const Tensor kvs = scalar_f32(0.01f, Device::CPU);
  const GemvOperand w{w8.view(), s.view()};
  const TensorView weight = nw.view().reshape({k});
  Tensor inv_freq = Tensor::empty(DType::F32, {dh / 2});
  for (int64_t i = 0; i < dh / 2; ++i) inv_freq.ptr<float>()[i] = std::pow(10000.0f, -2.0f * i / dh);
  int32_t slot_v = 1, pos_v = 5;
  const Tensor slots = Tensor::copy_of(TensorView(&slot_v, DType::I32, Shape{1}), Device::CPU);
  const Tensor positions = Tensor::copy_of(TensorView(&pos_v, DType::I32, Shape{1}), Device::CPU);
  Fp8Tensor x[2] = {Fp8Tensor::per_tensor(DType::E4M3, 1, k, true, false, Device::CPU),
                    Fp8Tensor::per_tensor(DType::E4M3, 1, k, true, false, Device::CPU)};
  Tensor rstd[2] = {Tensor::zeros(DType::F32, {1}), Tensor::zeros(DType::F32, {1})};
  Tensor kc[2], vc[2], q_out[2];
  for (int i = 0; i < 2; ++i) {
    x[i].view().scale.ptr<float>()[0] = 30.0f;
    x[i].view().amax.ptr<float>()[0] = 1e-3f;
    std::memset(x[i].view().data.data, 0x11, static_cast<std::size_t>(k));
    kc[i] = Tensor::zeros(DType::E4M3, {b, max_seq, hkv, dh});
    vc[i] = Tensor::zeros(DType::E4M3, {b, max_seq, hkv, dh});
    q_out[i] = Tensor::zeros(DType::BF16, {1, h, dh});
  }
  auto cache = [&](int i) { return KvCache{kc[i].view(), vc[i].view(), kvs.view(), kvs.view()}; };
  cpu::rmsnorm_forward_fp8(hs.view(), weight, 1e-6f, x[0].view(), rstd[0].view(), TensorView{});
  gemv_qkv_rope(GemvOperand::fp8(x[0].view()), w, slots.view(), positions.view(), inv_freq.view(), cache(0),
                q_out[0].view());
  auto run = [&](const GemvNorm& norm) {
    gemv_norm_qkv_rope(norm, w, slots.view(), positions.view(), inv_freq.view(), cache(1), q_out[1].view());
  };
  run(GemvNorm{hs.view(), weight, 1e-6f, rstd[1].view(), x[1].view()});
  auto same = [](const TensorView& a, const TensorView& c) { return std::memcmp(a.data, c.data, a.nbytes()) == 0; };
  EXPECT_TRUE(same(q_out[0].view(), q_out[1].view())) << "q_out";
  EXPECT_TRUE(same(kc[0].view(), kc[1].view())) << "k cache";
  EXPECT_TRUE(same(vc[0].view(), vc[1].view())) << "v cache";
  EXPECT_TRUE(same(rstd[0].view(), rstd[1].view())) << "rstd";
  EXPECT_TRUE(same(x[0].view().scale_inv, x[1].view().scale_inv)) << "x scale_inv";
  EXPECT_TRUE(same(x[0].view().amax, x[1].view().amax)) << "x amax";
  EXPECT_GT(x[1].view().amax.ptr<float>()[0], 1e-3f) << "the amax was not max-reduced";
  const uint8_t* row = static_cast<const uint8_t*>(kc[1].data()) + (1 * max_seq + 5) * hkv * dh;
  EXPECT_TRUE(std::any_of(row, row + dh, [](uint8_t v) { return v != 0; })) << "the cache row was not written";
  const uint8_t* xd = static_cast<const uint8_t*>(x[1].view().data.data);
  EXPECT_TRUE(std::all_of(xd, xd + k, [](uint8_t v) { return v == 0x11; })) << "x.data was written";

  // Bad input: eps, K not a multiple of 16, h's dtype and width, the weight's length, rstd, x's format.
  TG_EXPECT_THROW_MSG(run(GemvNorm{hs.view(), weight, 0.0f, rstd[1].view(), x[1].view()}), "eps must be > 0");
  const Tensor hf = random_matrix(DType::F32, 1, k, 24);
  TG_EXPECT_THROW_MSG(run(GemvNorm{hf.view(), weight, 1e-6f, rstd[1].view(), x[1].view()}),
                      "the norm's h must be BF16 [1, K = 32]");
  TG_EXPECT_THROW_MSG(run(GemvNorm{hs.view(), weight.slice_rows(0, 16), 1e-6f, rstd[1].view(), x[1].view()}),
                      "the norm's weight must be contiguous BF16 [K = 32]");
  TG_EXPECT_THROW_MSG(run(GemvNorm{hs.view(), weight, 1e-6f, TensorView{}, x[1].view()}),
                      "the norm's rstd must be F32 [1]");
  Fp8Tensor x24 = Fp8Tensor::per_tensor(DType::E4M3, 1, 24, true, false, Device::CPU);
  TG_EXPECT_THROW_MSG(
      run(GemvNorm{hs.view().slice_cols(0, 24), weight.slice_rows(0, 24), 1e-6f, rstd[1].view(), x24.view()}),
      "multiple of 16");
  Fp8Tensor both = Fp8Tensor::per_tensor(DType::E4M3, 1, k, true, true, Device::CPU);
  TG_EXPECT_THROW_MSG(run(GemvNorm{hs.view(), weight, 1e-6f, rstd[1].view(), both.view()}), "row-wise copy only");
}

// ---- Bad input -----------------------------------------------------------------------------------------------------

TEST(GemvCpu, BadInputIsAClearError) {
  const Tensor x = random_matrix(DType::BF16, 2, 32, 1), w = random_matrix(DType::BF16, 5, 32, 2);
  const Tensor w8 = random_matrix(DType::E4M3, 5, 32, 3), s = scalar_f32(1.0f, Device::CPU);
  Tensor out = Tensor::empty(DType::BF16, {2, 5});
  const GemvOperand bx = GemvOperand::bf16(x.view()), bw = GemvOperand::bf16(w.view());

  // K not a multiple of the vector width.
  const Tensor x12 = random_matrix(DType::BF16, 2, 12, 4), w12 = random_matrix(DType::BF16, 5, 12, 5);
  TG_EXPECT_THROW_MSG(gemv(GemvOperand::bf16(x12.view()), GemvOperand::bf16(w12.view()), out.view()),
                      "must be a multiple of 8");
  const Tensor x24 = random_matrix(DType::BF16, 2, 24, 4), w24 = random_matrix(DType::E4M3, 5, 24, 5);
  TG_EXPECT_THROW_MSG(gemv(GemvOperand::bf16(x24.view()), GemvOperand{w24.view(), s.view()}, out.view()),
                      "must be a multiple of 16");
  // Too many rows.
  const Tensor x17 = random_matrix(DType::BF16, 17, 32, 6);
  Tensor out17 = Tensor::empty(DType::BF16, {17, 5});
  TG_EXPECT_THROW_MSG(gemv(GemvOperand::bf16(x17.view()), bw, out17.view()), "at most 16");
  // Formats and scales.
  TG_EXPECT_THROW_MSG(gemv(GemvOperand{w8.view().slice_rows(0, 2), s.view()}, bw, out.view()),
                      "needs F8_E4M3 weights");
  TG_EXPECT_THROW_MSG(gemv(bx, GemvOperand{w8.view(), TensorView{}}, out.view()), "needs its per-tensor scale_inv");
  TG_EXPECT_THROW_MSG(gemv(bx, GemvOperand{w.view(), s.view()}, out.view()), "takes no scale_inv");
  const auto blk = make_fp8_operand(DType::E4M3, ScalingMode::kBlock128x128, 128, 128, 7, 0.02, false);
  TG_EXPECT_THROW_MSG(GemvOperand::fp8(blk.view(Device::CPU)), "per-tensor");
  // Shapes.
  Tensor out_bad = Tensor::empty(DType::BF16, {2, 4});
  TG_EXPECT_THROW_MSG(gemv(bx, bw, out_bad.view()), "out must be [M, N] = [2, 5]");
  const Tensor w_k = random_matrix(DType::BF16, 5, 40, 8);
  TG_EXPECT_THROW_MSG(gemv(bx, GemvOperand::bf16(w_k.view()), out.view()), "with the same K");
  Tensor res32 = Tensor::empty(DType::F32, {2, 5});
  TG_EXPECT_THROW_MSG(gemv(bx, bw, out.view(), {}, res32.view()), "residual must have out's dtype");
  // Alignment: a column slice starting one element in is not 16-byte aligned.
  const Tensor xw = random_matrix(DType::BF16, 2, 48, 9);
  const TensorView shifted(static_cast<uint16_t*>(const_cast<void*>(xw.data())) + 8, DType::BF16, Shape{2, 32},
                           Shape{48, 1}, Device::CPU);
  EXPECT_NO_THROW(gemv(GemvOperand::bf16(shifted), bw, out.view()));  // 8 elements = 16 bytes in: fine
  const TensorView odd(static_cast<uint16_t*>(const_cast<void*>(xw.data())) + 1, DType::BF16, Shape{2, 32},
                       Shape{48, 1}, Device::CPU);
  TG_EXPECT_THROW_MSG(gemv(GemvOperand::bf16(odd), bw, out.view()), "16-byte aligned");
  const TensorView stride(const_cast<void*>(xw.data()), DType::BF16, Shape{2, 32}, Shape{36, 1}, Device::CPU);
  TG_EXPECT_THROW_MSG(gemv(GemvOperand::bf16(stride), bw, out.view()), "row stride 36 x 2 bytes");
  // Aliasing.
  Tensor sq = random_matrix(DType::BF16, 2, 8, 10);
  const Tensor w8x8 = random_matrix(DType::BF16, 8, 8, 11);
  TG_EXPECT_THROW_MSG(gemv(GemvOperand::bf16(sq.view()), GemvOperand::bf16(w8x8.view()), sq.view()),
                      "must not alias");
}

// EarlyTriggerScope (kernels/launch/programmatic_launch.h, read by every CUDA-core GEMV launch): off by default, on
// inside a scope, nested scopes restore the outer value, and the flag is per thread (the decoder opens it around one
// GEMV launch; another thread's launches must not see it).
TEST(GemvCpu, EarlyTriggerScopeNestsAndIsPerThread) {
  EXPECT_FALSE(early_trigger_enabled());
  {
    const EarlyTriggerScope on(true);
    EXPECT_TRUE(early_trigger_enabled());
    bool other_thread = true;
    std::thread([&] { other_thread = early_trigger_enabled(); }).join();
    EXPECT_FALSE(other_thread) << "the scope leaked to another thread";
    {
      const EarlyTriggerScope off(false);
      EXPECT_FALSE(early_trigger_enabled());
    }
    EXPECT_TRUE(early_trigger_enabled()) << "the inner scope did not restore the outer value";
  }
  EXPECT_FALSE(early_trigger_enabled());
}

}  // namespace
}  // namespace tg::kernels
