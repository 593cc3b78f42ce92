// CUDA training kernels against their CPU twins: kernels/loss (tolerance, stated below), kernels/optim (bit for
// bit: the contract), and kernels/gemm's BF16 transpose_a / transpose_b (FP32 accumulation bound). Every launch
// is on the legacy default stream, so the synchronous copies back to the host wait for it.
//
// Tolerances (data, with reasons):
//   cross_entropy row_loss: the twin is FP64 with one rounding; the kernel sums exponentials in FP32: each
//     thread ~ceil(V / 512) terms and (the 16-byte vector kernel for BF16 rows) up to one rescale of its running
//     sum per 8 terms, then 32 + 16 merges, each term / rescale / merge off by <= 2 ulp (expf) + 1 rounding,
//     so |d log_s| <= (V / 512 * 9 / 8 + 48) * 3 * 2^-24 (worst case, linear), plus 2 ulp of the final sum.
//   cross_entropy dlogits: p = expf((x - m) - log_s) inherits that log_s error as a relative error, plus
//     2^-23 * |x - m| from rounding the exponent's argument and 2 ulp of expf; then one rounding to the output
//     dtype, which the twin may round the other way: |gpu - cpu| <= ulp_out * |cpu| + (rel_p) * scale.
//   gemm transposes: both sides compute the same exact product; the GPU accumulates in FP32 (<= K * 2^-24 *
//     sum_k |a_ik b_jk|, worst case) and a BF16 out may round the other way (one BF16 ulp, 2^-8 |out|).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/numeric.h"
#include "kernels/gemm/gemm.h"
#include "kernels/loss/loss.h"
#include "kernels/optim/optim.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg::kernels {
namespace {

using testing::random_host;

float value(const Tensor& t, int64_t i) {
  return t.dtype() == DType::F32 ? t.ptr<float>()[i] : bf16_bits_to_float(t.ptr<uint16_t>()[i]);
}

// ---- cross_entropy ------------------------------------------------------------------------------------------
struct LossCase {
  int64_t rows, vocab;
  DType in, out;
  bool in_place;
};

class LossGpu : public ::testing::TestWithParam<LossCase> {};

TEST_P(LossGpu, MatchesTheTwin) {
  TG_REQUIRE_CUDA();
  const LossCase c = GetParam();
  const Tensor x = random_host(c.in, {c.rows, c.vocab}, static_cast<uint32_t>(c.rows + c.vocab), 3.0f);
  Tensor y = Tensor::empty(DType::I32, {c.rows});
  std::mt19937 rng(5);
  int64_t count = 0;
  for (int64_t t = 0; t < c.rows; ++t) {
    y.ptr<int32_t>()[t] = t % 4 == 3 ? kIgnoreIndex : static_cast<int32_t>(rng() % c.vocab);
    count += y.ptr<int32_t>()[t] != kIgnoreIndex;
  }
  const float scale = 1.0f / static_cast<float>(std::max<int64_t>(count, 1));
  const DType out_t = c.in_place ? c.in : c.out;
  Tensor d_cpu = Tensor::empty(out_t, {c.rows, c.vocab}), rl_cpu = Tensor::empty(DType::F32, {c.rows});
  Tensor loss_cpu = Tensor::zeros(DType::F32, {1});
  cross_entropy(x, y, scale, d_cpu, rl_cpu, loss_cpu);

  Tensor x_d = x.to(Device::CUDA), y_d = y.to(Device::CUDA), rl_d = Tensor::empty(DType::F32, {c.rows}, Device::CUDA);
  Tensor loss_d = Tensor::zeros(DType::F32, {1}, Device::CUDA);
  Tensor d_sep = Tensor::empty(out_t, {c.rows, c.vocab}, Device::CUDA);
  const TensorView d_view = c.in_place ? x_d.view() : d_sep.view();
  cross_entropy(x_d, y_d, scale, d_view, rl_d, loss_d);
  const Tensor d_gpu = Tensor::copy_of(d_view, Device::CPU), rl_gpu = rl_d.to(Device::CPU),
               loss_gpu = loss_d.to(Device::CPU);

  const double per_thread = std::ceil(c.vocab / 512.0) * 9.0 / 8.0 + 48;
  const double dlog_s = per_thread * 3 * 0x1p-24;
  double max_loss_err = 0;
  for (int64_t t = 0; t < c.rows; ++t) {
    const double want = rl_cpu.ptr<float>()[t], got = rl_gpu.ptr<float>()[t];
    const double bound = dlog_s + 4 * 0x1p-24 * (1 + std::fabs(want));
    max_loss_err = std::max(max_loss_err, std::fabs(got - want));
    ASSERT_LE(std::fabs(got - want), bound) << "row_loss[" << t << "] V " << c.vocab;
  }
  EXPECT_NEAR(loss_gpu.ptr<float>()[0], loss_cpu.ptr<float>()[0],
              (dlog_s + 4 * 0x1p-24 * (1 + loss_cpu.ptr<float>()[0])) + 1e-6 * loss_cpu.ptr<float>()[0]);
  const double ulp_out = out_t == DType::F32 ? 0x1p-23 : 0x1p-7;
  for (int64_t t = 0; t < c.rows; ++t) {
    for (int64_t j = 0; j < c.vocab; ++j) {
      const int64_t i = t * c.vocab + j;
      const double want = value(d_cpu, i), got = value(d_gpu, i);
      if (y.ptr<int32_t>()[t] == kIgnoreIndex) {
        ASSERT_EQ(got, 0.0) << "ignored row " << t;
        continue;
      }
      // |x - m| <= ~40 for N(0, 3) logits: 2^-23 * 40 = 5e-6 relative from the exponent's argument.
      const double rel_p = dlog_s + 40 * 0x1p-23 + 4 * 0x1p-24;
      ASSERT_LE(std::fabs(got - want), ulp_out * std::fabs(want) + rel_p * scale * 1.01)
          << "dlogits[" << t << ", " << j << "] V " << c.vocab << " " << out_t;
    }
  }
  RecordProperty("max_row_loss_err", std::to_string(max_loss_err));
}

INSTANTIATE_TEST_SUITE_P(Shapes, LossGpu,
                         ::testing::Values(LossCase{1, 1, DType::F32, DType::F32, false},
                                           LossCase{7, 13, DType::BF16, DType::F32, false},
                                           LossCase{33, 1031, DType::BF16, DType::BF16, false},
                                           LossCase{129, 8192, DType::BF16, DType::BF16, true},    // small preset
                                           LossCase{16, 256000, DType::BF16, DType::BF16, true},   // Gemma vocab
                                           LossCase{9, 5000, DType::F32, DType::BF16, false},
                                           // 16-byte vector kernel: F32 gradients, and a row shorter than the block
                                           LossCase{5, 4104, DType::BF16, DType::F32, false},
                                           LossCase{3, 40, DType::BF16, DType::BF16, true}));

// ---- adamw_step / accumulate: bit for bit ---------------------------------------------------------------------
struct Params {
  std::vector<Tensor> p, g, m, v, c;
  std::vector<bool> decay;
  AdamWTable table(Device device) {
    std::vector<AdamWParam> out;
    for (std::size_t i = 0; i < p.size(); ++i) {
      out.push_back({p[i].view(), g[i].view(), m[i].view(), v[i].view(), c[i].view(), decay[i]});
    }
    return AdamWTable(out);
  }
  Params to(Device d) const {
    Params o;
    for (std::size_t i = 0; i < p.size(); ++i) {
      o.p.push_back(p[i].to(d));
      o.g.push_back(g[i].to(d));
      o.m.push_back(m[i].to(d));
      o.v.push_back(v[i].to(d));
      o.c.push_back(c[i].to(d));
    }
    o.decay = decay;
    return o;
  }
};

Params make_params(const std::vector<int64_t>& sizes, uint32_t seed) {
  Params ps;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    ps.p.push_back(random_host(DType::F32, {sizes[i]}, seed + static_cast<uint32_t>(i), 0.05f));
    ps.g.push_back(random_host(DType::F32, {sizes[i]}, seed + 100 + static_cast<uint32_t>(i), 0.01f));
    ps.m.push_back(Tensor::zeros(DType::F32, {sizes[i]}));
    ps.v.push_back(Tensor::zeros(DType::F32, {sizes[i]}));
    ps.c.push_back(Tensor::zeros(DType::BF16, {sizes[i]}));
    ps.decay.push_back(i % 2 == 0);
  }
  return ps;
}

bool same_bytes(const Tensor& host, const Tensor& dev) {
  const Tensor h = dev.to(Device::CPU);
  return std::memcmp(host.data(), h.data(), host.nbytes()) == 0;
}

TEST(OptimGpu, AdamWIsBitwiseTheTwin) {
  TG_REQUIRE_CUDA();
  const std::vector<int64_t> sizes{1, 2048, kAdamWChunk * 3 + 77, 3 * 1024, 100003};
  Params cpu = make_params(sizes, 11);
  Params gpu = cpu.to(Device::CUDA);
  const AdamWTable tc = cpu.table(Device::CPU), tg = gpu.table(Device::CUDA);
  Tensor sc = adamw_initial_state(Device::CPU), sg = adamw_initial_state(Device::CUDA);
  Tensor stc = Tensor::zeros(DType::F32, {4}), stg = Tensor::zeros(DType::F32, {4}, Device::CUDA);
  Tensor wc = adamw_workspace(tc), wg = adamw_workspace(tg);
  for (const double max_norm : {1.0, 0.01, 0.0}) {
    for (int step = 0; step < 3; ++step) {
      const AdamWHyper h{.lr = 1e-3 * (step + 1), .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1,
                         .max_grad_norm = max_norm};
      adamw_step(tc, h, sc, stc, wc);
      adamw_step(tg, h, sg, stg, wg);
          ASSERT_TRUE(same_bytes(stc, stg)) << "status (norm, coef, skipped, sumsq), step " << step;
      ASSERT_TRUE(same_bytes(sc, sg)) << "state, step " << step;
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        ASSERT_TRUE(same_bytes(cpu.p[i], gpu.p[i])) << "param " << i << " step " << step << " max_norm " << max_norm;
        ASSERT_TRUE(same_bytes(cpu.m[i], gpu.m[i])) << "exp_avg " << i;
        ASSERT_TRUE(same_bytes(cpu.v[i], gpu.v[i])) << "exp_avg_sq " << i;
        ASSERT_TRUE(same_bytes(cpu.c[i], gpu.c[i])) << "bf16 copy " << i;
      }
    }
  }
}

TEST(OptimGpu, NonFiniteGradientSkipsOnTheDevice) {
  TG_REQUIRE_CUDA();
  Params cpu = make_params({4096, 70000}, 3);
  Params gpu = cpu.to(Device::CUDA);
  const AdamWTable tg = gpu.table(Device::CUDA);
  Tensor sg = adamw_initial_state(Device::CUDA), stg = Tensor::zeros(DType::F32, {4}, Device::CUDA);
  Tensor wg = adamw_workspace(tg);
  float nan = std::nanf("");
  copy_bytes(gpu.g[1].view().slice_rows(69999, 70000), TensorView(&nan, DType::F32, {1}));
  adamw_step(tg, AdamWHyper{.lr = 0.1}, sg, stg, wg);
  EXPECT_EQ(stg.to(Device::CPU).ptr<float>()[2], 1.0f);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_TRUE(same_bytes(cpu.p[i], gpu.p[i])) << "param " << i << " changed by a skipped step";
    EXPECT_TRUE(same_bytes(cpu.m[i], gpu.m[i]));
  }
  EXPECT_EQ(sg.to(Device::CPU).ptr<double>()[0], 0.0);
}

TEST(OptimGpu, AccumulateIsBitwiseTheTwin) {
  TG_REQUIRE_CUDA();
  for (DType src_t : {DType::F32, DType::BF16}) {
    Tensor dst = random_host(DType::F32, {100001}, 1), src = random_host(src_t, {100001}, 2);
    Tensor dst_d = dst.to(Device::CUDA), src_d = src.to(Device::CUDA);
    accumulate(dst, src);
    accumulate(dst_d, src_d);
      EXPECT_TRUE(same_bytes(dst, dst_d)) << src_t;
  }
}

// ---- gemm transposes ------------------------------------------------------------------------------------------
TEST(GemmTransposeGpu, MatchesTheTwin) {
  TG_REQUIRE_CUDA();
  struct Case {
    int64_t m, n, k;
  };
  // Odd shapes, and the backward's real ones: dgrad of gemma-2b's fc2 ([T, F] = [T, D] W), wgrad of its qkv.
  for (const Case c : {Case{3, 5, 7}, Case{37, 53, 71}, Case{256, 2048, 512}, Case{2560, 2048, 1024}}) {
    for (const bool ta : {false, true}) {
      for (const bool tb : {false, true}) {
        for (DType out_t : {DType::BF16, DType::F32}) {
          const float sd = static_cast<float>(std::pow(static_cast<double>(c.k), -0.25));
          const Tensor a = random_host(DType::BF16, ta ? Shape{c.k, c.m} : Shape{c.m, c.k}, 21, sd);
          const Tensor b = random_host(DType::BF16, tb ? Shape{c.k, c.n} : Shape{c.n, c.k}, 22, sd);
          const Tensor old = random_host(out_t, {c.m, c.n}, 23);
          const GemmOptions opt{.alpha = 1.0f, .beta = 1.0f, .transpose_a = ta, .transpose_b = tb};
          Tensor want = Tensor::copy_of(old, Device::CPU);
          gemm(a, b, want, opt);
          Tensor got_d = old.to(Device::CUDA);
          gemm(a.to(Device::CUDA), b.to(Device::CUDA), got_d, opt);
                  const Tensor got = got_d.to(Device::CPU);
          // Per element: sum_k |a_ik b_jk| from the operands (stored transposed or not).
          auto at = [&](const Tensor& t, bool trans, int64_t row, int64_t kk, int64_t cols) {
            return bf16_bits_to_float(t.ptr<uint16_t>()[trans ? kk * cols + row : row * c.k + kk]);
          };
          const int64_t stride_i = std::max<int64_t>(1, c.m / 16), stride_j = std::max<int64_t>(1, c.n / 16);
          for (int64_t i = 0; i < c.m; i += stride_i) {
            for (int64_t j = 0; j < c.n; j += stride_j) {
              double mag = std::fabs(value(old, i * c.n + j));
              for (int64_t kk = 0; kk < c.k; ++kk) mag += std::fabs(at(a, ta, i, kk, c.m) * at(b, tb, j, kk, c.n));
              const double w = value(want, i * c.n + j), g = value(got, i * c.n + j);
              // FP32 accumulation error (K terms, 2^-24 each, relative to sum |a b|), plus for a BF16 output one
              // BF16 ulp of w (two FP32 sums that differ in the last bits can round to neighbouring BF16 values)
              // and half a BF16 ulp of the product |w - old| (gemm.h: with beta != 0 cuBLASLt may round
              // alpha * acc to BF16 before adding beta * out).
              const auto ulp_of = [](double v) { return v == 0.0 ? 0.0 : std::ldexp(1.0, std::ilogb(v) - 7); };
              const double prod = std::fabs(w - value(old, i * c.n + j));
              const double bound =
                  c.k * 0x1p-24 * mag + (out_t == DType::BF16 ? ulp_of(w) + 0.5 * ulp_of(prod) : 0.0);
              ASSERT_LE(std::fabs(g - w), bound) << "out[" << i << ", " << j << "] [M, N, K] = [" << c.m << ", "
                                                 << c.n << ", " << c.k << "] ta " << ta << " tb " << tb << " "
                                                 << out_t;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace tg::kernels
