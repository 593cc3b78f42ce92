// CUDA gemv against its CPU twin (kernels/gemm/gemv.h):
//   bound (gemv.h, "CUDA vs twin"): |gpu - cpu| <= (L + 9) 2^-24 (|alpha s| sum_k |x_k w_k| + |residual|) + one ulp of
//   out's format at max(|gpu|, |cpu|), L = ceil(K / (32 c)) c the longest per-lane FP32 sum (c = 8 BF16 / 16 E4M3
//   elements per 16-byte chunk). The FP32 part is the standard sequential-summation bound for the lane's L terms
//   plus the 5 butterfly levels and the 4 epilogue roundings (products are exact); the ulp is a rounding-boundary
//   flip of the final BF16/F32 rounding, which both sides perform from slightly different values.
//   Shapes: awkward (N odd, K tails that leave lanes idle, every row tile 1..16, both column widths), the Gemma
//   decode shapes (2b and 7b: QKV, O, fc1, fc2, lm_head) at M = 1 and a few at M = 4 / 16, in-place residual,
//   determinism (two runs, same bits), K not a multiple of the vector width (rejected).
// gemv_fused (the decode step's norm / cast -> GEMV -> GeGLU chains): bit for bit the unfused CUDA kernels run one
// after another (its contract, gemv.h), and within the gemv bound of the CPU twin's chain.
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
#include "kernels/tuning_scope.h"
#include "kernels/norm/norm.h"
#include "kernels/quantize/quantize.h"
#include "kernels/tests/gemm_test_util.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg::kernels {
namespace {

using testing::element;
using testing::random_matrix;
using testing::same_bits;
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

  // sum_k |x_k w_k| per (row, column), for the bound.
  const int64_t c_elems = wq ? 16 : 8;
  const int64_t lane_terms = (c.k / c_elems + 31) / 32 * c_elems;
  const double eps = std::ldexp(static_cast<double>(lane_terms + 9), -24);
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
  std::cout << "[gemv] " << case_name(c) << ": worst |gpu - cpu| / bound = " << worst << "\n";

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

TEST(GemvGpu, OddKIsRejected) {
  TG_REQUIRE_CUDA();
  Tensor x = Tensor::zeros(DType::BF16, {1, 3077}, Device::CUDA), w = Tensor::zeros(DType::BF16, {8, 3077}, Device::CUDA);
  Tensor out = Tensor::zeros(DType::BF16, {1, 8}, Device::CUDA);
  TG_EXPECT_THROW_MSG(gemv(GemvOperand::bf16(x.view()), GemvOperand::bf16(w.view()), out.view()),
                      "K = 3077 must be a multiple of 8");
}

// ---- gemv_fused -------------------------------------------------------------------------------------------------

struct FusedCase {
  GemvPrologue prologue;
  bool geglu, residual;
  int64_t m, n, k;
};

std::string fused_name(const FusedCase& c) {
  return std::string(c.prologue == GemvPrologue::kRmsNorm ? "norm" : "cast") + (c.geglu ? "+geglu" : "") +
         (c.residual ? "+residual" : "") + " " + std::to_string(c.m) + "x" + std::to_string(c.n) + "x" +
         std::to_string(c.k);
}

// An F32 [1] scalar's value on the host.
float host_scalar(const TensorView& t) { return Tensor::copy_of(t, Device::CPU).ptr<float>()[0]; }

// The chain on `device`: fused (one kernel) or the unfused kernels; returns out (BF16) or the act codes (E4M3).
Tensor run_chain(const FusedCase& c, const Tensor& x, const Tensor& nw, const Tensor& w, const Tensor& w_si,
                 const Tensor& res, float x_scale, float act_scale, bool fused, Device device) {
  const Tensor xg = x.to(device), nwg = nw.to(device), wg = w.to(device), wsi = w_si.to(device);
  const Tensor xs = scalar_f32(x_scale, device), as = scalar_f32(act_scale, device);
  const GemvOperand wo{wg.view(), wsi.view()};
  Tensor out = res.to(device);
  Fp8Tensor act = Fp8Tensor::per_tensor(DType::E4M3, c.m, c.n / 2, true, false, device);
  Fp8View av = act.view();
  av.scale = as.view();
  av.amax = TensorView{};
  const TensorView nw1 = nwg.view().reshape({c.k});
  if (fused) {
    GemvFusedArgs a;
    a.x = xg.view();
    a.prologue = c.prologue;
    a.norm_weight = c.prologue == GemvPrologue::kRmsNorm ? nw1 : TensorView{};
    a.eps = 1e-6f;
    a.x_scale = xs.view();
    a.w = wo;
    if (c.geglu) {
      a.act = av;
    } else {
      a.out = out.view();
      a.residual = c.residual ? out.view() : TensorView{};
    }
    gemv_fused(a);
  } else {
    Fp8Tensor xq = Fp8Tensor::per_tensor(DType::E4M3, c.m, c.k, true, false, device);
    Fp8View xv = xq.view();
    xv.scale = xs.view();
    xv.amax = TensorView{};
    if (c.prologue == GemvPrologue::kRmsNorm) {
      const Tensor rstd = Tensor::empty(DType::F32, {c.m}, device);
      rmsnorm_forward_fp8(xg.view(), nw1, 1e-6f, xv, rstd.view());
    } else {
      quantize(xg.view(), xv);
    }
    const GemvOperand xo{xv.data, xv.scale_inv};
    if (c.geglu) {
      const Tensor y = Tensor::empty(DType::BF16, {c.m, c.n}, device);
      gemv(xo, wo, y.view());
      geglu_forward_fp8(y.view(), av);
    } else {
      gemv(xo, wo, out.view(), {}, c.residual ? out.view() : TensorView{});
    }
  }
  if (device == Device::CUDA) TG_CHECK_CUDA(cudaDeviceSynchronize());
  if (c.geglu) {
    EXPECT_EQ(host_scalar(av.scale_inv), 1.0f / act_scale) << fused_name(c) << (fused ? " fused" : " unfused")
                                                            << ": act.scale_inv is 1 / scale";
    return Tensor::copy_of(av.data, Device::CPU);
  }
  return out.to(Device::CPU);
}

void check_fused(const FusedCase& c, uint64_t seed) {
  SCOPED_TRACE(fused_name(c));
  const Tensor x = random_matrix(DType::BF16, c.m, c.k, seed, 2.0f);
  const Tensor nw = random_matrix(DType::BF16, 1, c.k, seed + 1, 0.3f);
  const Tensor w = random_matrix(DType::E4M3, c.n, c.k, seed + 2);
  const Tensor w_si = scalar_f32(0.021f, Device::CPU);
  const Tensor res = random_matrix(DType::BF16, c.m, c.n, seed + 3);
  // x scales that put the codes across E4M3's range (the norm output is ~N(0, 1); the cast sees x ~ N(0, 2)).
  const float x_scale = c.prologue == GemvPrologue::kRmsNorm ? 37.0f : 21.0f, act_scale = 13.0f;
  const Tensor fused = run_chain(c, x, nw, w, w_si, res, x_scale, act_scale, true, Device::CUDA);
  const Tensor unfused = run_chain(c, x, nw, w, w_si, res, x_scale, act_scale, false, Device::CUDA);
  EXPECT_TRUE(same_bits(fused, unfused)) << "fused != the unfused CUDA kernels, bit for bit";
  const Tensor again = run_chain(c, x, nw, w, w_si, res, x_scale, act_scale, true, Device::CUDA);
  EXPECT_TRUE(same_bits(fused, again)) << "fused is not deterministic";
  // Against the CPU twin's chain: the only differences are the GEMV's FP32 vs double sums (gemv's bound, a few
  // 2^-24 relative) and what they flip at the final roundings: a BF16 ulp of out, or one E4M3 step of an act code
  // whose BF16 input sat at a rounding boundary. Bounds: out within 2 BF16 ulps (2^-7 relative) of the twin plus
  // 1e-3 absolute; act codes equal except at most 1% of them, each one E4M3 step away.
  const Tensor cpu = run_chain(c, x, nw, w, w_si, res, x_scale, act_scale, true, Device::CPU);
  const int64_t n = c.m * (c.geglu ? c.n / 2 : c.n);
  int64_t off = 0, far = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (c.geglu) {
      const int a = fused.ptr<uint8_t>()[i], b = cpu.ptr<uint8_t>()[i];
      if (a != b) ++off;
      // E4M3 codes of one sign are ordered: one step = code difference 1.
      if (a != b && ((a ^ b) & 0x80 || std::abs(a - b) > 1)) ++far;
    } else {
      const double g = decode(DType::BF16, fused.ptr<uint16_t>()[i]), e = decode(DType::BF16, cpu.ptr<uint16_t>()[i]);
      if (g != e) ++off;
      if (std::abs(g - e) > std::ldexp(std::abs(e), -6) + 1e-3) ++far;
    }
  }
  EXPECT_EQ(far, 0) << far << " of " << n << " outputs beyond the bound against the CPU twin";
  if (c.geglu) {
    EXPECT_LE(off, n / 100 + 1) << off << " of " << n << " act codes differ from the CPU twin";
  }
}

TEST(GemvFusedGpu, EqualsTheUnfusedKernelsBitForBit) {
  TG_REQUIRE_CUDA();
  const GemvPrologue kNorm = GemvPrologue::kRmsNorm, kCast = GemvPrologue::kCast;
  uint64_t seed = 700;
  for (int64_t m = 1; m <= kGemvFusedMaxRows; ++m) {
    // Awkward: K chunks that leave lanes idle, odd N, N past one column per warp.
    check_fused({kNorm, false, false, m, 37, 80}, seed++);
    check_fused({kCast, false, true, m, 45, 144}, seed++);
    check_fused({kNorm, true, false, m, 2 * 21, 208}, seed++);
    // gemma-2b decode: QKV (norm), O (cast + residual), fc1 (norm + GeGLU).
    check_fused({kNorm, false, false, m, 2560, 2048}, seed++);
    check_fused({kCast, false, true, m, 2048, 2048}, seed++);
    check_fused({kNorm, true, false, m, 32768, 2048}, seed++);
  }
  // gemma-7b at M = 1: QKV (wide N: two columns per warp), O, fc1.
  check_fused({kNorm, false, false, 1, 12288, 3072}, seed++);
  check_fused({kCast, false, true, 1, 3072, 4096}, seed++);
  check_fused({kNorm, true, false, 1, 49152, 3072}, seed++);
  // Every K split setting (kernels::cuda::tuning): the fused one-column kernels split as the unfused GEMV does,
  // the default rule included (K >= 24576 splits, with a tail at 24592).
  for (int v : kVariants) {
    SCOPED_TRACE(variant_name(v));
    const KSplitScope scope(v);
    for (int64_t m : {1, 3}) {
      check_fused({kNorm, false, false, m, 37, 80}, seed++);
      check_fused({kCast, false, true, m, 2048, 2048}, seed++);
      check_fused({kNorm, false, false, m, 2560, 2048}, seed++);
      check_fused({kCast, false, true, m, 131, 24576}, seed++);
      check_fused({kCast, false, false, m, 37, 24592}, seed++);
    }
  }
}

TEST(GemvFusedGpu, BadArgumentsAreRejected) {
  TG_REQUIRE_CUDA();
  const Tensor x = Tensor::zeros(DType::BF16, {5, 64}, Device::CUDA);  // M = 5 > kGemvFusedMaxRows
  const Tensor w = Tensor::zeros(DType::E4M3, {32, 64}, Device::CUDA);
  const Tensor s = scalar_f32(1.0f, Device::CUDA), out = Tensor::zeros(DType::BF16, {5, 32}, Device::CUDA);
  GemvFusedArgs a;
  a.x = x.view();
  a.x_scale = s.view();
  a.w = GemvOperand{w.view(), s.view()};
  a.out = out.view();
  EXPECT_THROW(gemv_fused(a), Error);
  a.x = x.view().slice_rows(0, 1);
  a.out = out.view().slice_rows(0, 1);
  a.prologue = GemvPrologue::kRmsNorm;  // without a norm weight
  EXPECT_THROW(gemv_fused(a), Error);
  a.prologue = GemvPrologue::kCast;
  gemv_fused(a);  // the valid call
  TG_CHECK_CUDA(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace tg::kernels
