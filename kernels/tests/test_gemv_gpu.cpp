// CUDA gemv against its CPU twin (kernels/gemm/gemv.h):
//   bound (gemv.h, "CUDA vs twin"): |gpu - cpu| <= (L + 9) 2^-24 (|alpha s| sum_k |x_k w_k| + |residual|) + one ulp of
//   out's format at max(|gpu|, |cpu|), L = ceil(K / (32 c)) c the longest per-lane FP32 sum (c = 8 BF16 / 16 E4M3
//   elements per 16-byte chunk). The FP32 part is the standard sequential-summation bound for the lane's L terms
//   plus the 5 butterfly levels and the 4 epilogue roundings (products are exact); the ulp is a rounding-boundary
//   flip of the final BF16/F32 rounding, which both sides perform from slightly different values.
//   Shapes: awkward (N odd, K tails that leave lanes idle, every row tile 1..16, both column widths), the Gemma
//   decode shapes (2b and 7b: QKV, O, fc1, fc2, lm_head) at M = 1 and a few at M = 4 / 16, in-place residual,
//   determinism (two runs, same bits), K not a multiple of the vector width (rejected).
//   E4M3 x E4M3 takes the tensor-core path where gemv's rule says so (M >= 2), with its own bound,
//   (ceil(K / 16) + 17) 2^-23 instead of (L + 9) 2^-24; the tests below also force each path (set_gemv_mma).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "common/cuda_check.h"
#include "common/numeric.h"
#include "kernels/activation/activation.h"
#include "kernels/gemm/gemv.h"
#include "kernels/kv_cache/kv_cache.h"
#include "kernels/launch/programmatic_launch.h"
#include "kernels/norm/norm.h"
#include "kernels/rope/rope.h"
#include "kernels/tuning_scope.h"
#include "kernels/tests/gemm_test_util.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg::kernels {
namespace {

using testing::element;
using testing::random_matrix;
using testing::scalar_f32;

struct Case {
  DType x, w, out;
  int64_t m, n, k;
  bool residual = false;
  float alpha = 1.0f;
};

std::string case_name(const Case& c) {
  return std::string(dtype_name(c.x)) + "x" + std::string(dtype_name(c.w)) + "->" + std::string(dtype_name(c.out)) +
         " " + std::to_string(c.m) + "x" + std::to_string(c.n) + "x" + std::to_string(c.k) +
         (c.residual ? " +residual" : "");
}

// One ulp of `dt` at magnitude |v| (normal range; the smallest normal's ulp below it).
double ulp(DType dt, double v) {
  const int mant = dt == DType::F32 ? 23 : 7;
  const int min_exp = -126;
  const int e = v == 0.0 ? min_exp : std::max(min_exp, std::ilogb(v));
  return std::ldexp(1.0, e - mant);
}

// Runs one case on both backends and checks the bound. Scales: x ~ N(0, 1) (E4M3 x: codes ~ N(0, 1) times 0.37),
// W ~ N(0, 1) BF16 or E4M3 codes times 0.021 (a non-power-of-two per-tensor scale).
void check_case(const Case& c, uint64_t seed) {
  SCOPED_TRACE(case_name(c));
  const Tensor xd = random_matrix(c.x, c.m, c.k, seed), wd = random_matrix(c.w, c.n, c.k, seed + 1);
  const Tensor res = random_matrix(c.out, c.m, c.n, seed + 2);
  const float sxv = 0.37f, swv = 0.021f;
  const Tensor sx = scalar_f32(sxv, Device::CPU), sw = scalar_f32(swv, Device::CPU);
  const bool xq = c.x == DType::E4M3, wq = c.w == DType::E4M3;

  // CPU twin (the golden).
  Tensor want = Tensor::copy_of(res.view(), Device::CPU);
  const GemvOperand xh{xd.view(), xq ? sx.view() : TensorView{}}, wh{wd.view(), wq ? sw.view() : TensorView{}};
  cpu::gemv(xh, wh, want.view(), {.alpha = c.alpha}, c.residual ? want.view() : TensorView{});

  // CUDA, residual in place as the decoder uses it.
  const Tensor xg = xd.to(Device::CUDA), wg = wd.to(Device::CUDA);
  const Tensor sxg = sx.to(Device::CUDA), swg = sw.to(Device::CUDA);
  Tensor got_d = res.to(Device::CUDA);
  const GemvOperand xo{xg.view(), xq ? sxg.view() : TensorView{}}, wo{wg.view(), wq ? swg.view() : TensorView{}};
  gemv(xo, wo, got_d.view(), {.alpha = c.alpha}, c.residual ? got_d.view() : TensorView{});
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  const Tensor got = got_d.to(Device::CPU);

  // sum_k |x_k w_k| per (row, column), for the bound: the CUDA-core kernel's (L + 9) 2^-24, or the tensor-core
  // path's (ceil(K / 16) + 17) 2^-23 (gemv.h, "CUDA vs twin").
  const int64_t c_elems = wq ? 16 : 8;
  const int64_t lane_terms = (c.k / c_elems + 31) / 32 * c_elems;
  const bool mma = cuda::gemv_takes_mma(c.x, c.w, c.m);
  const double eps = mma ? std::ldexp(static_cast<double>((c.k + 15) / 16 + 17), -23)
                         : std::ldexp(static_cast<double>(lane_terms + 9), -24);
  const double s = std::fabs(static_cast<double>(c.alpha)) * (xq ? sxv : 1.0) * (wq ? swv : 1.0);
  std::vector<double> xa(static_cast<std::size_t>(c.m * c.k));
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t k = 0; k < c.k; ++k) xa[static_cast<std::size_t>(i * c.k + k)] = std::fabs(element(xd.view(), i, k));
  }
  int bad = 0;
  double worst = 0;
  std::vector<double> wa(static_cast<std::size_t>(c.k));
  for (int64_t j = 0; j < c.n; ++j) {
    for (int64_t k = 0; k < c.k; ++k) wa[static_cast<std::size_t>(k)] = std::fabs(element(wd.view(), j, k));
    for (int64_t i = 0; i < c.m; ++i) {
      double mag = 0;
      for (int64_t k = 0; k < c.k; ++k) mag += xa[static_cast<std::size_t>(i * c.k + k)] * wa[static_cast<std::size_t>(k)];
      const double r = c.residual ? std::fabs(element(res.view(), i, j)) : 0.0;
      const double g = element(got.view(), i, j), w = element(want.view(), i, j);
      const double bound = eps * (s * mag + r) + ulp(c.out, std::max(std::fabs(g), std::fabs(w)));
      const double err = std::fabs(g - w);
      worst = std::max(worst, err / bound);
      if (!(err <= bound) && ++bad <= 5) {
        ADD_FAILURE() << "out[" << i << ", " << j << "]: CUDA " << g << ", CPU twin " << w << ", bound " << bound;
      }
    }
  }
  EXPECT_EQ(bad, 0);
  std::cout << "[gemv] " << case_name(c) << (mma ? " (mma)" : "") << ": worst |gpu - cpu| / bound = " << worst << "\n";

  // Deterministic: a second run gives the same bits.
  Tensor again_d = res.to(Device::CUDA);
  gemv(xo, wo, again_d.view(), {.alpha = c.alpha}, c.residual ? again_d.view() : TensorView{});
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  const Tensor again = again_d.to(Device::CPU);
  EXPECT_EQ(std::memcmp(again.data(), got.data(), got.view().nbytes()), 0) << "two runs differ";
}

TEST(GemvGpu, AwkwardShapesEveryRowTile) {
  TG_REQUIRE_CUDA();
  uint64_t seed = 100;
  // N = 8451 > 132 * 64 selects the 2- / 4-column warps (with a partial last group); smaller N the 1-column warps.
  for (int64_t m : {1, 2, 3, 4, 5, 8, 9, 16}) {
    check_case({DType::BF16, DType::BF16, DType::BF16, m, 37, 296, true, 1.0f}, seed += 3);
    check_case({DType::BF16, DType::E4M3, DType::F32, m, 8451, 592, false, 0.5f}, seed += 3);
    check_case({DType::E4M3, DType::E4M3, DType::BF16, m, 8453, 16, true, 1.0f}, seed += 3);
  }
  // K tails: chunks not a multiple of 32 x the unroll (lanes past the end), K shorter than one warp's sweep.
  for (int64_t k : {8, 24, 264, 4104}) check_case({DType::BF16, DType::BF16, DType::F32, 2, 129, k}, seed += 3);
  for (int64_t k : {16, 48, 528, 8208}) check_case({DType::BF16, DType::E4M3, DType::BF16, 1, 131, k, true}, seed += 3);
}

TEST(GemvGpu, GemmaDecodeShapes) {
  TG_REQUIRE_CUDA();
  struct S {
    int64_t n, k;
  };
  // 2b: QKV 2560, O 2048, fc1 32768 (x K 2048), fc2 2048 x 16384; 7b: QKV 12288, O 3072 x 4096, fc1 49152, fc2
  // 3072 x 24576; lm_head 256000 x 2048 / 3072.
  const std::vector<S> fp8 = {{2560, 2048}, {2048, 2048}, {32768, 2048}, {2048, 16384},
                              {12288, 3072}, {3072, 4096}, {49152, 3072}, {3072, 24576}};
  uint64_t seed = 500;
  for (const S& s : fp8) check_case({DType::BF16, DType::E4M3, DType::BF16, 1, s.n, s.k, true}, seed += 3);
  for (const S& s : fp8) check_case({DType::E4M3, DType::E4M3, DType::BF16, 1, s.n, s.k, true}, seed += 3);
  check_case({DType::BF16, DType::BF16, DType::BF16, 1, 256000, 2048}, seed += 3);
  check_case({DType::BF16, DType::BF16, DType::BF16, 1, 256000, 3072}, seed += 3);
  check_case({DType::BF16, DType::E4M3, DType::BF16, 1, 256000, 3072}, seed += 3);
  // Batched decode rows.
  check_case({DType::E4M3, DType::E4M3, DType::BF16, 4, 49152, 3072, false}, seed += 3);
  check_case({DType::E4M3, DType::E4M3, DType::BF16, 16, 3072, 24576, true}, seed += 3);
  check_case({DType::BF16, DType::BF16, DType::BF16, 4, 3072, 4096, true}, seed += 3);
}

// The GEMV's K split (kernels::cuda::tuning::set_gemv_k_split) for a scope, then back to the default rule.
using KSplitScope = cuda::tuning::Scoped<cuda::tuning::set_gemv_k_split, 0>;
// Which kernel takes E4M3 x E4M3 (kernels::cuda::tuning::set_gemv_mma) for a scope, then back to the rule.
using MmaScope = cuda::tuning::Scoped<cuda::tuning::set_gemv_mma, cuda::tuning::GemvMma::kRule>;
// RoPE pairs per warp of the QKV + RoPE kernel (kernels::cuda::tuning::set_gemv_qkv_pairs) for a scope, then the rule.
using QkvPairsScope = cuda::tuning::Scoped<cuda::tuning::set_gemv_qkv_pairs, 0>;
// The settings the loops below run: 0 the default rule (2 warps per column when K >= 24576, else 1), 1 never split,
// 2 and 4 forced.
const int kVariants[] = {0, 1, 2, 4};
std::string variant_name(int v) { return v == 0 ? "K split default" : "K split " + std::to_string(v); }

// The one-column shapes under every K split setting: the same bound against the twin (a slice's lane sums fewer
// terms; the kSplit - 1 additions of the slices' sums stay inside the bound's margin of 9 roundings),
// deterministic; slices that end inside a 32-chunk stripe, empty slices (K shorter than one stripe per warp), and
// K >= 24576 with a tail (the default rule splits it).
TEST(GemvGpu, KSplitOneColumnShapes) {
  TG_REQUIRE_CUDA();
  const MmaScope cuda_cores(cuda::tuning::GemvMma::kNever);  // the split is the CUDA-core loop's
  uint64_t seed = 900;
  for (int v : kVariants) {
    SCOPED_TRACE(variant_name(v));
    const KSplitScope scope(v);
    for (int64_t m : {1, 2, 3, 4, 16}) {
      check_case({DType::BF16, DType::BF16, DType::BF16, m, 37, 296, true, 1.0f}, seed += 3);
      check_case({DType::E4M3, DType::E4M3, DType::BF16, m, 131, 16, true, 1.0f}, seed += 3);
    }
    for (int64_t k : {16, 48, 528, 8208, 24592}) {
      check_case({DType::BF16, DType::E4M3, DType::BF16, 1, 131, k, true}, seed += 3);
    }
    for (int64_t m : {1, 3}) check_case({DType::BF16, DType::BF16, DType::F32, m, 37, 24584, true}, seed += 3);
    // gemma-2b QKV / O / fc2 and gemma-7b O / fc2 at M = 1 (E4M3 x as the decoder runs them), one at M = 4.
    for (const auto& [n, k] : std::vector<std::pair<int64_t, int64_t>>{
             {2560, 2048}, {2048, 2048}, {2048, 16384}, {3072, 4096}, {3072, 24576}}) {
      check_case({DType::E4M3, DType::E4M3, DType::BF16, 1, n, k, true}, seed += 3);
    }
    check_case({DType::E4M3, DType::E4M3, DType::BF16, 4, 3072, 24576, true}, seed += 3);
  }
}

// The tensor-core path (cuda::tuning::set_gemv_mma) on every E4M3 x E4M3 shape of the tests above: every row tile
// M = 1 .. 16 (rows g + 8 of the MMA's A from M = 9), N not a multiple of the warp's 8 columns, K tails inside a
// 64-element round and short of one, every K split the launcher picks (1 .. 8: wide N takes 1, the narrow Gemma
// shapes 8), in-place residual, F32 out; the tensor-core bound against the twin and two runs bitwise equal.
TEST(GemvGpu, MmaPathE4m3) {
  TG_REQUIRE_CUDA();
  const MmaScope scope(cuda::tuning::GemvMma::kAlways);
  uint64_t seed = 1300;
  for (int64_t m : {1, 2, 3, 4, 5, 8, 9, 12, 16}) {
    check_case({DType::E4M3, DType::E4M3, DType::BF16, m, 8453, 16, true, 1.0f}, seed += 3);
    check_case({DType::E4M3, DType::E4M3, DType::F32, m, 131, 1040, false, 0.5f}, seed += 3);
  }
  for (int64_t k : {16, 48, 64, 80, 528, 4112, 8208, 24592}) {
    check_case({DType::E4M3, DType::E4M3, DType::BF16, 1, 37, k, true}, seed += 3);
  }
  for (const auto& [n, k] : std::vector<std::pair<int64_t, int64_t>>{{2560, 2048},
                                                                     {2048, 2048},
                                                                     {32768, 2048},
                                                                     {2048, 16384},
                                                                     {12288, 3072},
                                                                     {3072, 4096},
                                                                     {49152, 3072},
                                                                     {3072, 24576},
                                                                     {256000, 2048}}) {
    check_case({DType::E4M3, DType::E4M3, DType::BF16, 1, n, k, true}, seed += 3);
  }
  check_case({DType::E4M3, DType::E4M3, DType::BF16, 4, 49152, 3072, false}, seed += 3);
  check_case({DType::E4M3, DType::E4M3, DType::BF16, 16, 3072, 24576, true}, seed += 3);
}

// The CUDA-core loop on the E4M3 x E4M3 shapes the rule sends to the tensor cores (every M >= 2 row tile), and
// a few M = 1 Gemma shapes: it stays correct for TEGEMMA_GEMV_MMA=never.
TEST(GemvGpu, CudaCoreLoopE4m3) {
  TG_REQUIRE_CUDA();
  const MmaScope scope(cuda::tuning::GemvMma::kNever);
  uint64_t seed = 1700;
  for (int64_t m : {2, 3, 4, 5, 8, 9, 16}) check_case({DType::E4M3, DType::E4M3, DType::BF16, m, 8453, 16, true}, seed += 3);
  for (const auto& [n, k] : std::vector<std::pair<int64_t, int64_t>>{{2560, 2048}, {2048, 16384}, {12288, 3072}}) {
    check_case({DType::E4M3, DType::E4M3, DType::BF16, 1, n, k, true}, seed += 3);
  }
  check_case({DType::E4M3, DType::E4M3, DType::BF16, 4, 49152, 3072, false}, seed += 3);
}

// The rule (gemv.h): the tensor cores for M >= 2, E4M3 x E4M3 only.
TEST(GemvGpu, MmaRuleSelectsTheShapes) {
  const MmaScope scope(cuda::tuning::GemvMma::kRule);
  EXPECT_FALSE(cuda::gemv_takes_mma(DType::E4M3, DType::E4M3, 1));
  EXPECT_TRUE(cuda::gemv_takes_mma(DType::E4M3, DType::E4M3, 2));
  EXPECT_TRUE(cuda::gemv_takes_mma(DType::E4M3, DType::E4M3, 16));
  EXPECT_FALSE(cuda::gemv_takes_mma(DType::BF16, DType::E4M3, 4));
  EXPECT_FALSE(cuda::gemv_takes_mma(DType::BF16, DType::BF16, 16));
  const MmaScope never(cuda::tuning::GemvMma::kNever);
  EXPECT_FALSE(cuda::gemv_takes_mma(DType::E4M3, DType::E4M3, 16));
  const MmaScope always(cuda::tuning::GemvMma::kAlways);
  EXPECT_TRUE(cuda::gemv_takes_mma(DType::E4M3, DType::E4M3, 1));
}

// The bytes of two views (either device) are equal.
bool same_bytes(const TensorView& a, const TensorView& b) {
  const Tensor ha = Tensor::copy_of(a, Device::CPU), hb = Tensor::copy_of(b, Device::CPU);
  return ha.nbytes() == hb.nbytes() && std::memcmp(ha.data(), hb.data(), ha.nbytes()) == 0;
}

// gemv_geglu == gemv (BF16 fc1) then geglu_forward_fp8, bit for bit on the GPU: the E4M3 codes, scale_inv and the
// amax (both max-reduced into the same non-zero starting value); the gemma-2b / 7b fc1 shapes, F smaller than one
// block's 4 warps and not a multiple of it (the idle warps of the last block join its amax barrier), a scale that
// saturates codes (20000: |V| > 0.0224 saturates; 2000 saturated none at 8453x528 on the H200, |V| < ~0.2 there)
// and one that does not; then the same with the CPU twins.
TEST(GemvGpu, GegluEpilogueEqualsTheUnfusedKernelsBitForBit) {
  TG_REQUIRE_CUDA();
  const MmaScope cuda_cores(cuda::tuning::GemvMma::kNever);  // gemv at M = 1 takes the loop either way
  auto set = [](const TensorView& t, float v) {
    if (t.device == Device::CPU) {
      t.ptr<float>()[0] = v;
    } else {
      TG_CHECK_CUDA(cudaMemcpy(t.data, &v, sizeof v, cudaMemcpyHostToDevice));
    }
  };
  uint64_t seed = 3100;
  for (const auto& [f, k] : std::vector<std::pair<int64_t, int64_t>>{
           {16384, 2048}, {24576, 3072}, {8453, 528}, {37, 48}, {5, 16}, {3, 2064}}) {
    for (Device dev : {Device::CUDA, Device::CPU}) {
      for (float scale : {0.75f, 20000.0f}) {
        SCOPED_TRACE(std::to_string(f) + "x" + std::to_string(k) + (dev == Device::CUDA ? " cuda" : " cpu") +
                     " scale " + std::to_string(scale));
        const Tensor x = random_matrix(DType::E4M3, 1, k, seed += 3).to(dev);
        const Tensor w = random_matrix(DType::E4M3, 2 * f, k, seed + 1).to(dev);
        const Tensor sx = scalar_f32(0.37f, dev), sw = scalar_f32(0.021f, dev);
        const GemvOperand xo{x.view(), sx.view()}, wo{w.view(), sw.view()};
        Fp8Tensor want = Fp8Tensor::per_tensor(DType::E4M3, 1, f, true, false, dev);
        Fp8Tensor got = Fp8Tensor::per_tensor(DType::E4M3, 1, f, true, false, dev);
        Fp8Tensor chained = Fp8Tensor::per_tensor(DType::E4M3, 1, f, true, false, dev);
        for (Fp8Tensor* t : {&want, &got, &chained}) {
          set(t->view().scale, scale);
          set(t->view().amax, 1e-3f);
          set(t->view().scale_inv, 123.0f);
        }
        Tensor fc1 = Tensor::empty(DType::BF16, {1, 2 * f}, dev);
        gemv(xo, wo, fc1.view());
        geglu_forward_fp8(fc1.view(), want.view());
        gemv_geglu(xo, wo, got.view());
        {  // inside a programmatic launch chain (CPU: the same twin)
          const ProgrammaticLaunchScope pdl(true);
          gemv_geglu(xo, wo, chained.view());
        }
        if (dev == Device::CUDA) TG_CHECK_CUDA(cudaDeviceSynchronize());
        for (auto member : {&Fp8View::data, &Fp8View::scale_inv, &Fp8View::amax}) {
          const char* what = member == &Fp8View::data ? "codes" : member == &Fp8View::amax ? "amax" : "scale_inv";
          EXPECT_TRUE(same_bytes(got.view().*member, want.view().*member)) << what << " differ";
          EXPECT_TRUE(same_bytes(chained.view().*member, want.view().*member)) << what << " differ (PDL chain)";
        }
        if (scale == 20000.0f) {  // the saturating scale must saturate something, or the case tests nothing extra
          const Tensor q = Tensor::copy_of(got.view().data, Device::CPU);
          const uint8_t* c = static_cast<const uint8_t*>(q.data());
          EXPECT_TRUE(f < 64 || std::any_of(c, c + f, [](uint8_t b) { return (b & 0x7F) == 0x7E; }))
              << "no code saturated at scale 20000";
        }
      }
    }
  }
}

// EarlyTriggerScope only moves when a GEMV's dependents launch. (a) gemv_triggers_late, which the launcher reads,
// reports the scope. (b) The decode step's O -> RMSNorm -> fc1 edge in a programmatic launch chain on its own
// stream, eager and as a replayed CUDA graph: the residual GEMV (early trigger, in place on h), the one-block
// RMSNorm -> E4M3 reading h, and a GEMV reading the norm's E4M3 row give the bits of the plain stream-ordered chain
// in every round (h grows over 10 rounds: a norm or GEMV reading before its wait would see the previous round's
// values). Shapes: gemma-2b O (2048 x 2048) and gemma-7b fc2 (3072 x 24576, the K split), M = 1 E4M3.
TEST(GemvGpu, EarlyTriggerFeedsAOneBlockSuccessor) {
  TG_REQUIRE_CUDA();
  const bool late_by_default = cuda::gemv_triggers_late(1024);  // TEGEMMA_GEMV_LATE_TRIGGER_BLOCKS may turn it off
  {
    const EarlyTriggerScope early(true);
    EXPECT_FALSE(cuda::gemv_triggers_late(1024)) << "the GEMV launcher ignores EarlyTriggerScope";
  }
  EXPECT_EQ(cuda::gemv_triggers_late(1024), late_by_default);

  cudaStream_t raw = nullptr;
  TG_CHECK_CUDA(cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking));
  const Stream stream{raw};
  uint64_t seed = 5200;
  for (const auto& [n, k] : std::vector<std::pair<int64_t, int64_t>>{{2048, 2048}, {3072, 24576}}) {
    SCOPED_TRACE(std::to_string(n) + "x" + std::to_string(k));
    constexpr int64_t kN2 = 256;  // the GEMV after the norm
    const Tensor x = random_matrix(DType::E4M3, 1, k, seed += 5).to(Device::CUDA);
    const Tensor w = random_matrix(DType::E4M3, n, k, seed + 1).to(Device::CUDA);
    const Tensor w2 = random_matrix(DType::E4M3, kN2, n, seed + 2).to(Device::CUDA);
    const Tensor h0 = random_matrix(DType::BF16, 1, n, seed + 3).to(Device::CUDA);
    Tensor nw = random_matrix(DType::BF16, 1, n, seed + 4).to(Device::CUDA);
    nw.reshape_({n});
    const Tensor sx = scalar_f32(0.37f, Device::CUDA), sw = scalar_f32(0.021f, Device::CUDA);
    const GemvOperand xo{x.view(), sx.view()}, wo{w.view(), sw.view()}, w2o{w2.view(), sw.view()};
    struct Chain {
      Tensor h, rstd, out;
      Fp8Tensor y;
    };
    auto make_chain = [&] {
      Chain c{Tensor::copy_of(h0.view(), Device::CUDA), Tensor::empty(DType::F32, {1}, Device::CUDA),
              Tensor::empty(DType::BF16, {1, kN2}, Device::CUDA),
              Fp8Tensor::per_tensor(DType::E4M3, 1, n, true, false, Device::CUDA)};
      const float scale = 24.0f, amax = 0.0f;
      TG_CHECK_CUDA(cudaMemcpy(c.y.view().scale.data, &scale, sizeof scale, cudaMemcpyHostToDevice));
      TG_CHECK_CUDA(cudaMemcpy(c.y.view().amax.data, &amax, sizeof amax, cudaMemcpyHostToDevice));
      return c;
    };
    auto run = [&](bool chained, Chain& c) {
      const ProgrammaticLaunchScope pdl(chained);
      {
        const EarlyTriggerScope early(chained);
        gemv(xo, wo, c.h.view(), {}, c.h.view(), stream);
      }
      rmsnorm_forward_fp8(c.h.view(), nw.view(), 1e-6f, c.y.view(), c.rstd.view(), {}, stream);
      gemv(GemvOperand::fp8(c.y.view()), w2o, c.out.view(), {}, {}, stream);
    };
    Chain want = make_chain(), eager = make_chain(), graphed = make_chain();
    const testing::CapturedGraph graph(raw, cudaStreamCaptureModeGlobal, [&] { run(true, graphed); });
    for (int round = 0; round < 10; ++round) {
      run(false, want);
      run(true, eager);
      graph.launch(raw);
    }
    TG_CHECK_CUDA(cudaStreamSynchronize(raw));
    for (const auto& [got, what] : std::vector<std::pair<const Chain*, const char*>>{{&eager, "eager"},
                                                                                     {&graphed, "graph"}}) {
      EXPECT_TRUE(same_bytes(got->h.view(), want.h.view())) << what << ": h differs";
      EXPECT_TRUE(same_bytes(got->rstd.view(), want.rstd.view())) << what << ": rstd differs";
      EXPECT_TRUE(same_bytes(got->y.view().data, want.y.view().data)) << what << ": the norm's E4M3 row differs";
      EXPECT_TRUE(same_bytes(got->y.view().amax, want.y.view().amax)) << what << ": the norm's amax differs";
      EXPECT_TRUE(same_bytes(got->out.view(), want.out.view())) << what << ": the GEMV after the norm differs";
    }
  }
  TG_CHECK_CUDA(cudaStreamDestroy(raw));
}

// gemv_qkv_rope == gemv (BF16 qkv) then kv_cache_write_rope, bit for bit: q_out, every byte of the K / V caches
// (prefilled with a pattern: the rows not written must stay), for the gemma-2b (MQA) and gemma-7b (MHA) geometries
// and small awkward ones (Dh 16 / 24, more kv heads than q heads), BF16 / E4M3 per-tensor / E4M3 per-head caches,
// without and with the cos/sin table (a position inside it and one past it, the computed fallback), and a finished
// sequence (slot -1: the cache untouched, q still rotated); with one and two RoPE pairs per warp (an odd pair count,
// Dh 10: a warp's two pairs in two heads, the last warp's second pair past the end).
TEST(GemvGpu, QkvRopeEpilogueEqualsTheUnfusedKernelsBitForBit) {
  TG_REQUIRE_CUDA();
  const MmaScope cuda_cores(cuda::tuning::GemvMma::kNever);
  struct Geo {
    int64_t h, hkv, dh, k;
  };
  auto i32 = [](int32_t v) { return Tensor::copy_of(TensorView(&v, DType::I32, Shape{1}, Device::CPU), Device::CUDA); };
  uint64_t seed = 4100;
  for (const Geo g :
       {Geo{8, 1, 256, 2048}, Geo{16, 16, 256, 3072}, Geo{3, 1, 16, 48}, Geo{2, 3, 24, 528}, Geo{1, 1, 10, 48}}) {
    const int64_t n = (g.h + 2 * g.hkv) * g.dh, b = 2, max_seq = 4100;
    const Tensor x = random_matrix(DType::E4M3, 1, g.k, seed += 3).to(Device::CUDA);
    const Tensor w = random_matrix(DType::E4M3, n, g.k, seed + 1).to(Device::CUDA);
    const Tensor sx = scalar_f32(0.37f, Device::CUDA), sw = scalar_f32(0.021f, Device::CUDA);
    const GemvOperand xo{x.view(), sx.view()}, wo{w.view(), sw.view()};
    const Tensor inv_freq = rope_inv_freq_table(g.dh, 10000.0f, 1.0f, Device::CUDA);
    const Tensor table = rope_cos_sin_table(inv_freq, 4096, Device::CUDA);
    for (int mode = 0; mode < 3; ++mode) {  // BF16, E4M3 per tensor, E4M3 per head
      const DType dt = mode == 0 ? DType::BF16 : DType::E4M3;
      const int64_t ns = mode == 2 ? g.hkv : 1;
      Tensor ks_h = Tensor::empty(DType::F32, {ns}), vs_h = Tensor::empty(DType::F32, {ns});
      for (int64_t i = 0; i < ns; ++i) {
        ks_h.ptr<float>()[i] = 0.004f * static_cast<float>(i + 1);
        vs_h.ptr<float>()[i] = 0.007f / static_cast<float>(i + 1);
      }
      const Tensor ks = ks_h.to(Device::CUDA), vs = vs_h.to(Device::CUDA);
      for (const bool with_table : {false, true}) {
        for (const auto& [slot, pos] : std::vector<std::pair<int32_t, int32_t>>{{1, 37}, {0, 4097}, {-1, 5}}) {
          SCOPED_TRACE("H " + std::to_string(g.h) + " Hkv " + std::to_string(g.hkv) + " Dh " + std::to_string(g.dh) +
                       " mode " + std::to_string(mode) + (with_table ? " table" : "") + " slot " +
                       std::to_string(slot) + " pos " + std::to_string(pos));
          const Tensor slots = i32(slot), positions = i32(pos);
          Tensor kc[3], vc[3], q_out[3];  // unfused, fused, fused in a PDL chain
          for (int i = 0; i < 3; ++i) {
            kc[i] = Tensor::empty(dt, {b, max_seq, g.hkv, g.dh}, Device::CUDA);
            vc[i] = Tensor::empty(dt, {b, max_seq, g.hkv, g.dh}, Device::CUDA);
            q_out[i] = Tensor::empty(DType::BF16, {1, g.h, g.dh}, Device::CUDA);
            for (Tensor* t : {&kc[i], &vc[i], &q_out[i]}) TG_CHECK_CUDA(cudaMemset(t->data(), 0x5a, t->nbytes()));
          }
          auto cache = [&](int i) {
            return KvCache{kc[i].view(), vc[i].view(), dt == DType::E4M3 ? ks.view() : TensorView{},
                           dt == DType::E4M3 ? vs.view() : TensorView{}};
          };
          const TensorView tab = with_table ? table.view() : TensorView{};
          // Unfused: the BF16 qkv row, then the cache write of its heads.
          Tensor qkv = Tensor::empty(DType::BF16, {1, n}, Device::CUDA);
          gemv(xo, wo, qkv.view());
          auto heads = [&](int64_t first, int64_t count) {
            return TensorView(qkv.ptr<uint16_t>() + first * g.dh, DType::BF16, Shape{1, count, g.dh},
                              Shape{n, g.dh, 1}, Device::CUDA);
          };
          kv_cache_write_rope(heads(g.h, g.hkv), heads(g.h + g.hkv, g.hkv), slots.view(), positions.view(),
                              inv_freq.view(), cache(0), heads(0, g.h), q_out[0].view(), {}, tab);
          for (const int pairs : {1, 2}) {
            const QkvPairsScope pairs_scope(pairs);
            for (int i : {1, 2}) {  // the fused outputs start from the pattern again
              for (Tensor* t : {&kc[i], &vc[i], &q_out[i]}) TG_CHECK_CUDA(cudaMemset(t->data(), 0x5a, t->nbytes()));
            }
            gemv_qkv_rope(xo, wo, slots.view(), positions.view(), inv_freq.view(), cache(1), q_out[1].view(), tab);
            {
              const ProgrammaticLaunchScope pdl(true);
              gemv_qkv_rope(xo, wo, slots.view(), positions.view(), inv_freq.view(), cache(2), q_out[2].view(), tab);
            }
            TG_CHECK_CUDA(cudaDeviceSynchronize());
            for (int i : {1, 2}) {
              SCOPED_TRACE(std::string(i == 1 ? "fused" : "fused, PDL chain") + ", pairs per warp " +
                           std::to_string(pairs));
              EXPECT_TRUE(same_bytes(q_out[i].view(), q_out[0].view())) << "q_out";
              EXPECT_TRUE(same_bytes(kc[i].view(), kc[0].view())) << "k cache";
              EXPECT_TRUE(same_bytes(vc[i].view(), vc[0].view())) << "v cache";
            }
          }
        }
      }
    }
  }
}

// The decoder's one-wave rule (gemv_norm_qkv_rope_one_wave): a grid of one block is one wave, a million blocks are
// not (no GPU holds 10^6 / SM-count blocks of 128 threads per multiprocessor), and the CPU twin has no waves; a bad N
// is an error. (Where the H200's line falls, 2b's 320 blocks in and 7b's 1536 out, is session 19's measurement.)
TEST(GemvGpu, NormQkvOneWaveRule) {
  EXPECT_TRUE(gemv_norm_qkv_rope_one_wave(2560, Device::CPU));
  EXPECT_TRUE(gemv_norm_qkv_rope_one_wave(int64_t{1} << 30, Device::CPU));
  TG_REQUIRE_CUDA();
  EXPECT_TRUE(gemv_norm_qkv_rope_one_wave(2, Device::CUDA));
  EXPECT_FALSE(gemv_norm_qkv_rope_one_wave(int64_t{8} << 20, Device::CUDA));
  EXPECT_THROW(gemv_norm_qkv_rope_one_wave(3, Device::CUDA), Error);
}

// The RMSNorm prologue (GemvNorm) == rmsnorm_forward_fp8 then the kernel on its x, bit for bit on the GPU and on the
// CPU: gemv_qkv_rope's q_out and cache rows, and the norm's rstd, x scale_inv and x amax (max-reduced into the same
// non-zero start); the gemma-2b / 7b geometries (K 2048 / 3072), K smaller than one block's 128 threads x 8 elements
// and K not a multiple of it (K 48 / 528: idle threads, a partial chunk round), a scale that saturates codes (300)
// and one that does not (4); on the GPU again in a programmatic launch chain (the W loads issued right after the
// wait, ahead of the prologue). The 2b QKV grid (320 blocks) is one resident wave on the H200, the 7b QKV (1536)
// several, and the 64-head geometry (6144 blocks) several on any GPU: there every block computes the prologue.
TEST(GemvGpu, NormPrologueEqualsTheNormKernelThenTheKernelBitForBit) {
  TG_REQUIRE_CUDA();
  const MmaScope cuda_cores(cuda::tuning::GemvMma::kNever);
  auto set = [](const TensorView& t, float v) {
    if (t.device == Device::CPU) {
      t.ptr<float>()[0] = v;
    } else {
      TG_CHECK_CUDA(cudaMemcpy(t.data, &v, sizeof v, cudaMemcpyHostToDevice));
    }
  };
  struct Norm {  // the norm's output x and rstd, scale and amax start set
    Fp8Tensor x;
    Tensor rstd;
  };
  auto make_norm = [&](int64_t k, float scale, Device dev) {
    Norm n{Fp8Tensor::per_tensor(DType::E4M3, 1, k, true, false, dev), Tensor::zeros(DType::F32, {1}, dev)};
    set(n.x.view().scale, scale);
    set(n.x.view().amax, 1e-3f);
    set(n.x.view().scale_inv, 123.0f);
    return n;
  };
  auto same_norm = [](const Norm& got, const Norm& want) {
    EXPECT_TRUE(same_bytes(got.rstd.view(), want.rstd.view())) << "rstd";
    EXPECT_TRUE(same_bytes(got.x.view().scale_inv, want.x.view().scale_inv)) << "x scale_inv";
    EXPECT_TRUE(same_bytes(got.x.view().amax, want.x.view().amax)) << "x amax";
  };
  uint64_t seed = 5100;
  const float eps = 1e-6f;
  // gemv_qkv_rope: the 2b and 7b geometries, a small one and one of many waves, BF16 cache.
  struct Geo {
    int64_t h, hkv, dh, k;
  };
  auto i32 = [](int32_t v, Device dev) {
    return Tensor::copy_of(TensorView(&v, DType::I32, Shape{1}, Device::CPU), dev);
  };
  for (const Geo g : {Geo{8, 1, 256, 2048}, Geo{16, 16, 256, 3072}, Geo{3, 1, 16, 48}, Geo{64, 64, 256, 528}}) {
    const int64_t n = (g.h + 2 * g.hkv) * g.dh, b = 2, max_seq = 64;
    if (g.h == 64) {
      EXPECT_FALSE(gemv_norm_qkv_rope_one_wave(n, Device::CUDA)) << "meant to be several waves";
    }
    for (const auto& [dev, scale] : {std::pair{Device::CUDA, 4.0f}, std::pair{Device::CUDA, 300.0f},
                                     std::pair{Device::CPU, 4.0f}, std::pair{Device::CPU, 300.0f}}) {
      SCOPED_TRACE("qkv H " + std::to_string(g.h) + " Hkv " + std::to_string(g.hkv) + " K " + std::to_string(g.k) +
                   (dev == Device::CUDA ? " cuda" : " cpu") + " scale " + std::to_string(scale));
      const Tensor h = random_matrix(DType::BF16, 1, g.k, seed += 3).to(dev);
      const Tensor nw = random_matrix(DType::BF16, 1, g.k, seed += 3).to(dev);
      const TensorView weight = nw.view().reshape({g.k});
      const Tensor w8 = random_matrix(DType::E4M3, n, g.k, seed += 3).to(dev);
      const Tensor sw = scalar_f32(0.021f, dev);
      const GemvOperand wo{w8.view(), sw.view()};
      const Tensor inv_freq = rope_inv_freq_table(g.dh, 10000.0f, 1.0f, dev);
      const Tensor slots = i32(1, dev), positions = i32(37, dev);
      Tensor kc[3], vc[3], q_out[3];  // reference, fused, fused in a PDL chain
      for (int i = 0; i < 3; ++i) {
        kc[i] = Tensor::zeros(DType::BF16, {b, max_seq, g.hkv, g.dh}, dev);
        vc[i] = Tensor::zeros(DType::BF16, {b, max_seq, g.hkv, g.dh}, dev);
        q_out[i] = Tensor::zeros(DType::BF16, {1, g.h, g.dh}, dev);
      }
      auto cache = [&](int i) { return KvCache{kc[i].view(), vc[i].view(), TensorView{}, TensorView{}}; };
      Norm nref = make_norm(g.k, scale, dev);
      rmsnorm_forward_fp8(h.view(), weight, eps, nref.x.view(), nref.rstd.view());
      gemv_qkv_rope(GemvOperand::fp8(nref.x.view()), wo, slots.view(), positions.view(), inv_freq.view(), cache(0),
                    q_out[0].view());
      // CUDA: the default, the PDL chain with one RoPE pair per warp, the PDL chain with two.
      for (int i = 1; i < (dev == Device::CUDA ? 4 : 2); ++i) {
        SCOPED_TRACE(i == 1 ? "default" : i == 2 ? "PDL chain, one pair per warp" : "PDL chain, two pairs per warp");
        Norm nf = make_norm(g.k, scale, dev);
        if (i == 3) {  // again from zeroed outputs
          for (Tensor* t : {&kc[2], &vc[2], &q_out[2]}) TG_CHECK_CUDA(cudaMemset(t->data(), 0, t->nbytes()));
        }
        const int slot = i == 3 ? 2 : i;
        {
          const QkvPairsScope pairs_scope(i == 1 ? 0 : i - 1);
          const ProgrammaticLaunchScope pdl(i >= 2);
          gemv_norm_qkv_rope(GemvNorm{h.view(), weight, eps, nf.rstd.view(), nf.x.view()}, wo, slots.view(),
                             positions.view(), inv_freq.view(), cache(slot), q_out[slot].view());
        }
        if (dev == Device::CUDA) TG_CHECK_CUDA(cudaDeviceSynchronize());
        EXPECT_TRUE(same_bytes(q_out[slot].view(), q_out[0].view())) << "q_out";
        EXPECT_TRUE(same_bytes(kc[slot].view(), kc[0].view())) << "k cache";
        EXPECT_TRUE(same_bytes(vc[slot].view(), vc[0].view())) << "v cache";
        same_norm(nf, nref);
      }
    }
  }
}

TEST(GemvGpu, OddKIsRejected) {
  TG_REQUIRE_CUDA();
  Tensor x = Tensor::zeros(DType::BF16, {1, 3077}, Device::CUDA), w = Tensor::zeros(DType::BF16, {8, 3077}, Device::CUDA);
  Tensor out = Tensor::zeros(DType::BF16, {1, 8}, Device::CUDA);
  TG_EXPECT_THROW_MSG(gemv(GemvOperand::bf16(x.view()), GemvOperand::bf16(w.view()), out.view()),
                      "K = 3077 must be a multiple of 8");
}

}  // namespace
}  // namespace tg::kernels
