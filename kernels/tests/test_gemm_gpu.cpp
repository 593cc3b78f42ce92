// cuBLASLt GEMMs (kernels/gemm) against FP64 GEMMs of the exactly dequantized inputs: the CPU twin (whose F32
// output is the FP64 product to 6e-8) on small shapes, a sampled FP64 reference on the Gemma shapes. Also: the
// heuristic cache, deterministic mode (bitwise repeatable, no split-K reduction), CUDA-graph capture, and errors.
//
// ---- Error budgets (data, with their reasons) -------------------------------------------------------------------
// Outputs are built to have RMS ~ 1 (operand scales ~ K^-1/4) and every element-wise check is done in units of
// the reference's RMS, so TE's absolute tolerance means the same thing for every shape.
//   element-wise: TE's FP8 tolerance rtol 0.125, atol 0.0675 (tests/pytorch/test_numerics.py, FP8 GEMM vs an FP64
//     matmul of the dequantized inputs); for an E5M2 out TE's E5M2 tolerance rtol 0.25, atol 0.125 (one E5M2
//     rounding alone is up to 12.5% relative). BF16 GEMMs: TE's BF16 rtol 1.6e-2 with atol 1e-4 (FP32 accumulation
//     leaves ~eps32 * sqrt(K) ~ 1e-5 RMS absolute error; TE's 1e-5 is for unit-free small tensors).
//   norm-wise ||got - ref|| / ||ref||  = rounding(out) + accumulation:
//     rounding(out): the unit roundoff of the output format (BF16 2^-9, E4M3 2^-4, E5M2 2^-3, F32 2^-24): one
//       round-to-nearest never errs by more, so the norm of those errors cannot either.
//     accumulation, split (FP8): cuBLASLt promotes the tensor-core partial sums to FP32 every few MMAs; inside
//       one, Hopper keeps ~14 bits (DeepSeek-V3 report, section 3.3.2), ~4 x 2^-14 = 2.4e-4 relative per
//       128-deep stretch, not growing with K. Budget 1e-3 (about 4x).
//     accumulation, fast (FP8, CUBLASLT_MATMUL_DESC_FAST_ACCUM): no promotion, one ~14-bit truncation per 32-deep
//       MMA, biased, so it grows ~linearly with K: K/32 x 2^-14 (3.9e-3 at K = 2048, 4.7e-2 at K = 24576;
//       DeepSeek-V3 measured ~2% max error at K = 4096). Element-wise TE tolerance is asserted for fast
//       accumulation up to K = 8192 and only reported beyond (at K = 16384 / 24576 a 4-sigma element of a ~3%
//       norm-wise error exceeds 0.0675 RMS; measuring it is part of this test's output).
//     accumulation, BF16 GEMM: full FP32 accumulation, 1e-4.
// Every comparison prints its measured errors ("[ gemm err ]" lines, also RecordProperty in the XML), so the
// budgets can be tightened from data.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "common/cuda_check.h"
#include "kernels/gemm/gemm.h"
#include "kernels/tuning_scope.h"
#include "kernels/quantize/block_layout.h"
#include "kernels/tests/gemm_test_util.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg::kernels {
namespace {

using testing::Budget;
using testing::compare;
using testing::element;
using testing::expect_within;
using testing::Fp8Operand;
using testing::make_fp8_operand;
using testing::pick_samples;
using testing::random_matrix;
using testing::reference_f64;
using testing::Samples;
using testing::scalar_f32;

// A device output with every byte 0xFF (NaN in BF16, F32, E4M3 and E5M2) before the GEMM writes it: an element the
// GEMM leaves unwritten reads back as NaN and fails the comparison, and compute-sanitizer's initcheck sees the buffer
// initialised. (initcheck does not record cuBLASLt's Hopper output stores, TMA, as writes: copying an output the GEMM
// wrote into a fresh allocation reported one "uninitialised" error per 32-byte sector,
// reports/runs/2026-11-30-h200-s6-84141aa/README.md.)
Tensor poisoned_output(DType dtype, Shape shape) {
  Tensor t = Tensor::empty(dtype, std::move(shape), Device::CUDA);
  TG_CHECK_CUDA(cudaMemset(t.data(), 0xFF, t.nbytes()));
  return t;
}

struct Shape3 {
  int64_t m, n, k;
};
void PrintTo(const Shape3& s, std::ostream* os) { *os << "[M, N, K] = [" << s.m << ", " << s.n << ", " << s.k << "]"; }
std::string str(const Shape3& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k);
}
std::string shape_name(const ::testing::TestParamInfo<Shape3>& info) { return str(info.param); }

double rounding(DType out) {
  switch (out) {
    case DType::BF16: return 0x1p-9;
    case DType::E4M3: return 0x1p-4;
    case DType::E5M2: return 0x1p-3;
    default: return 0x1p-24;
  }
}
double fp8_accumulation(bool fast, int64_t k) {
  return fast ? std::max(1e-3, static_cast<double>(k) / 32.0 * 0x1p-14) : 1e-3;
}
Budget fp8_budget(DType out, bool fast, int64_t k) {
  Budget b;
  if (out == DType::E5M2) {
    b.rtol = 0.25;
    b.atol = 0.125;
  }
  b.norm_rel = rounding(out) + fp8_accumulation(fast, k);
  b.elementwise = !(fast && k > 8192);
  return b;
}
Budget bf16_budget(DType out) {
  Budget b;
  b.rtol = 1.6e-2;
  b.atol = 1e-4;
  b.norm_rel = rounding(out) + 1e-4;
  return b;
}

// The output of a GPU GEMM copied to the host; FP8 outputs are read back in the units of v (divided by out_scale).
struct HostOut {
  Tensor t;
  double inv_scale = 1.0;
  double operator()(int64_t i, int64_t j) const { return element(t, i, j) * inv_scale; }
};
HostOut fetch(const Tensor& out_d, double out_scale = 1.0) { return {out_d.to(Device::CPU), 1.0 / out_scale}; }

// FP64 reference at the samples: the CPU twin (F32 out) for small products, else a sampled FP64 GEMM.
std::vector<double> reference(const Fp8Operand& a, const Fp8Operand& b, const Samples& s, double alpha) {
  std::vector<double> ref;
  if (a.rows * b.rows * a.cols <= (int64_t{1} << 24)) {
    Tensor out = Tensor::empty(DType::F32, {a.rows, b.rows});
    cpu::gemm_fp8(a.view(Device::CPU), b.view(Device::CPU), out, {.alpha = static_cast<float>(alpha)});
    for (int64_t i : s.rows)
      for (int64_t j : s.cols) ref.push_back(element(out, i, j));
    return ref;
  }
  ref = reference_f64(s, a.cols, [&](int64_t i, int64_t x) { return a.deq(i, x); },
                      [&](int64_t j, int64_t x) { return b.deq(j, x); });
  for (double& r : ref) r *= alpha;
  return ref;
}

std::string fp8_name(const Fp8Operand& a, const Fp8Operand& b, DType out, bool fast, const Shape3& s) {
  std::string r = std::string(dtype_name(a.dtype)) + "(" + std::string(scaling_mode_name(a.mode)) + ") x " +
                  std::string(dtype_name(b.dtype)) + "(" + std::string(scaling_mode_name(b.mode)) + ") -> " +
                  std::string(dtype_name(out)) + (fast ? " fast " : " split ") + str(s);
  return r;
}

// One FP8 GEMM on the GPU, checked against FP64; returns nothing, asserts the budget.
void check_fp8(const Fp8Operand& a, const Fp8Operand& b, DType out_t, bool fast, const Shape3& s, bool with_amax,
               float alpha = 1.0f) {
  const bool fp8_out = is_fp8(out_t);
  const float out_scale = 32.0f;
  Tensor out = poisoned_output(out_t, {s.m, s.n});
  Tensor amax = scalar_f32(-1.0f, Device::CUDA), oscale = scalar_f32(out_scale, Device::CUDA);
  const GemmOptions opt{.alpha = alpha, .split_accumulate = !fast};
  gemm_fp8(a.view(Device::CUDA), b.view(Device::CUDA), out, opt, {}, with_amax ? amax.view() : TensorView{},
           fp8_out ? oscale.view() : TensorView{});
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  const HostOut got = fetch(out, fp8_out ? out_scale : 1.0);
  const Samples smp = pick_samples(s.m, s.n, s.k);
  const std::vector<double> ref = reference(a, b, smp, alpha);
  const Budget budget = fp8_budget(out_t, fast, s.k);
  const std::string what = fp8_name(a, b, out_t, fast, s);
  expect_within(compare(smp, ref, got, budget), budget, what);
  if (with_amax) {
    // cuBLASLt's amax is of the FP32 result before out_scale and rounding; the samples must cover the whole
    // output for this comparison (the callers pass small shapes).
    ASSERT_EQ(static_cast<int64_t>(smp.rows.size() * smp.cols.size()), s.m * s.n) << what;
    double want = 0.0;
    for (double r : ref) want = std::max(want, std::fabs(r));
    const double amax_gpu = amax.to(Device::CPU).ptr<float>()[0];
    EXPECT_LE(std::fabs(amax_gpu - want), fp8_accumulation(fast, s.k) * want)
        << what << ": out_amax " << amax_gpu << ", FP64 max |out| " << want;
  }
}

// ---- BF16 ------------------------------------------------------------------------------------------------------
class GemmGpuBf16 : public ::testing::TestWithParam<Shape3> {};

TEST_P(GemmGpuBf16, MatchesFp64) {
  TG_REQUIRE_CUDA();
  const Shape3 s = GetParam();
  const float sd = static_cast<float>(std::pow(static_cast<double>(s.k), -0.25));
  const Tensor a = random_matrix(DType::BF16, s.m, s.k, 11 + s.m, sd), b = random_matrix(DType::BF16, s.n, s.k, 12 + s.n, sd);
  const Tensor a_d = a.to(Device::CUDA), b_d = b.to(Device::CUDA);
  const Samples smp = pick_samples(s.m, s.n, s.k);
  const std::vector<double> prod = reference_f64(smp, s.k, [&](int64_t i, int64_t x) { return element(a, i, x); },
                                                 [&](int64_t j, int64_t x) { return element(b, j, x); });
  for (DType out_t : {DType::BF16, DType::F32}) {
    for (const bool accumulate : {false, true}) {
      // accumulate: out = 0.5 * A B^T + out_old (the wgrad form), out_old random.
      const GemmOptions opt = accumulate ? GemmOptions{.alpha = 0.5f, .beta = 1.0f} : GemmOptions{};
      const Tensor old = random_matrix(out_t, s.m, s.n, 13);
      Tensor out = old.to(Device::CUDA);
      gemm(a_d, b_d, out, opt);
      TG_CHECK_CUDA(cudaDeviceSynchronize());
      std::vector<double> ref = prod, magnitude(prod.size());
      for (std::size_t r = 0; r < smp.rows.size(); ++r)
        for (std::size_t c = 0; c < smp.cols.size(); ++c) {
          double& v = ref[r * smp.cols.size() + c];
          const double term_c = opt.beta * element(old, smp.rows[r], smp.cols[c]);
          magnitude[r * smp.cols.size() + c] = std::fabs(opt.alpha * v) + std::fabs(term_c);
          v = opt.alpha * v + term_c;
        }
      const Budget budget = bf16_budget(out_t);
      expect_within(compare(smp, ref, fetch(out), budget, &magnitude), budget,
                    std::string("bf16 x bf16 -> ") + std::string(dtype_name(out_t)) + (accumulate ? " +=" : "") +
                        " " + str(s));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmGpuBf16,
                         ::testing::Values(Shape3{1, 1, 1}, Shape3{37, 53, 71}, Shape3{128, 96, 80},
                                           Shape3{3, 4096, 16},
                                           Shape3{8192, 2560, 2048},    // Gemma-2B QKV, T = 8192
                                           Shape3{8192, 2048, 16384},   // Gemma-2B fc2
                                           Shape3{1, 49152, 3072}),     // Gemma-7B fc1, decode
                         shape_name);

// ---- FP8 per-tensor: every dtype pairing, output dtype and accumulation mode on small odd-but-legal shapes -------
struct Fp8Case {
  DType a, b, out;
};
const std::vector<Fp8Case>& all_fp8_cases() {
  static const std::vector<Fp8Case> cases = {
      {DType::E4M3, DType::E4M3, DType::BF16}, {DType::E4M3, DType::E4M3, DType::F32},
      {DType::E4M3, DType::E4M3, DType::E4M3}, {DType::E5M2, DType::E4M3, DType::BF16},
      {DType::E5M2, DType::E4M3, DType::F32},  {DType::E5M2, DType::E4M3, DType::E4M3},
      {DType::E5M2, DType::E4M3, DType::E5M2}, {DType::E4M3, DType::E5M2, DType::BF16},
      {DType::E4M3, DType::E5M2, DType::E5M2}};
  return cases;
}

class GemmGpuFp8PerTensor : public ::testing::TestWithParam<Shape3> {};

TEST_P(GemmGpuFp8PerTensor, EveryVariantMatchesTheTwin) {
  TG_REQUIRE_CUDA();
  const Shape3 s = GetParam();
  const double sd = std::pow(static_cast<double>(s.k), -0.25);
  uint64_t seed = 1000 + s.m;
  for (const Fp8Case& c : all_fp8_cases()) {
    if (is_fp8(c.out) && s.n % 16 != 0) continue;
    const Fp8Operand a = make_fp8_operand(c.a, ScalingMode::kPerTensor, s.m, s.k, ++seed, sd, true);
    const Fp8Operand b = make_fp8_operand(c.b, ScalingMode::kPerTensor, s.n, s.k, ++seed, sd, true);
    for (const bool fast : {false, true}) check_fp8(a, b, c.out, fast, s, /*with_amax=*/is_fp8(c.out), 1.25f);
  }
}

INSTANTIATE_TEST_SUITE_P(OddShapes, GemmGpuFp8PerTensor,
                         ::testing::Values(Shape3{1, 16, 16}, Shape3{17, 48, 64}, Shape3{33, 160, 2048},
                                           Shape3{250, 96, 512}, Shape3{7, 32, 4096}),
                         shape_name);

TEST(GemmGpu, Fp8PerTensorAccumulatesIntoOut) {
  TG_REQUIRE_CUDA();
  const Shape3 s{40, 64, 256};  // wgrad form: out = A B^T + out_old
  const double sd = std::pow(static_cast<double>(s.k), -0.25);
  const Fp8Operand a = make_fp8_operand(DType::E5M2, ScalingMode::kPerTensor, s.m, s.k, 71, sd, true);
  const Fp8Operand b = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, s.n, s.k, 72, sd, true);
  for (DType out_t : {DType::F32, DType::BF16}) {
    const Tensor old = random_matrix(out_t, s.m, s.n, 73);
    Tensor out = old.to(Device::CUDA);
    gemm_fp8(a.view(Device::CUDA), b.view(Device::CUDA), out, {.beta = 1.0f});
    TG_CHECK_CUDA(cudaDeviceSynchronize());
    const Samples smp = pick_samples(s.m, s.n, s.k);
    std::vector<double> ref = reference(a, b, smp, 1.0);
    for (std::size_t r = 0; r < smp.rows.size(); ++r)
      for (std::size_t c = 0; c < smp.cols.size(); ++c) ref[r * smp.cols.size() + c] += element(old, smp.rows[r], smp.cols[c]);
    const Budget budget = fp8_budget(out_t, false, s.k);
    expect_within(compare(smp, ref, fetch(out), budget), budget, "e5m2 x e4m3 += " + std::string(dtype_name(out_t)));
  }
}

// ---- FP8 per-tensor on the Gemma shapes (sampled FP64 reference) --------------------------------------------------
class GemmGpuFp8Gemma : public ::testing::TestWithParam<Shape3> {};

TEST_P(GemmGpuFp8Gemma, MatchesFp64) {
  TG_REQUIRE_CUDA();
  const Shape3 s = GetParam();
  const double sd = std::pow(static_cast<double>(s.k), -0.25);
  // fprop (E4M3 x E4M3, fast and split) and dgrad/wgrad (E5M2 gradient x E4M3, split), BF16 out.
  const Fp8Operand x = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, s.m, s.k, 21, sd, true);
  const Fp8Operand w = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, s.n, s.k, 22, sd, true);
  check_fp8(x, w, DType::BF16, /*fast=*/true, s, false);
  check_fp8(x, w, DType::BF16, /*fast=*/false, s, false);
  const Fp8Operand dy = make_fp8_operand(DType::E5M2, ScalingMode::kPerTensor, s.m, s.k, 23, sd, true);
  check_fp8(dy, w, DType::BF16, /*fast=*/false, s, false);
  check_fp8(dy, w, DType::F32, /*fast=*/false, s, false);
}

INSTANTIATE_TEST_SUITE_P(Gemma, GemmGpuFp8Gemma,
                         ::testing::Values(Shape3{8192, 2560, 2048},    // 2B QKV fprop
                                           Shape3{8192, 2048, 16384},   // 2B fc2 fprop
                                           Shape3{2560, 2048, 8192},    // 2B QKV wgrad: dW[N, K], K = T
                                           Shape3{8192, 3072, 24576},   // 7B fc2 fprop
                                           Shape3{1, 49152, 3072},      // 7B fc1 decode
                                           Shape3{16, 256000, 3072}),   // 7B lm_head decode
                         shape_name);

// ---- FP8 block-scaled ------------------------------------------------------------------------------------------
struct BlockCase {
  ScalingMode a, b;
};

class GemmGpuFp8Block : public ::testing::TestWithParam<Shape3> {};

TEST_P(GemmGpuFp8Block, MatchesFp64) {
  TG_REQUIRE_CUDA();
  const Shape3 s = GetParam();
  const double sd = std::pow(static_cast<double>(s.k), -0.25);
  uint64_t seed = 3000 + s.m;
  for (const BlockCase bc : {BlockCase{ScalingMode::kBlock1x128, ScalingMode::kBlock128x128},   // fprop / dgrad
                             BlockCase{ScalingMode::kBlock1x128, ScalingMode::kBlock1x128},     // wgrad
                             BlockCase{ScalingMode::kBlock128x128, ScalingMode::kBlock1x128}}) {
    // Power-of-two scales for A (TE's default), arbitrary FP32 scales for B; NaN in the scale padding.
    const Fp8Operand a = make_fp8_operand(DType::E4M3, bc.a, s.m, s.k, ++seed, sd, true, true);
    const Fp8Operand b = make_fp8_operand(DType::E4M3, bc.b, s.n, s.k, ++seed, sd, true, false);
    for (DType out_t : {DType::BF16, DType::F32}) check_fp8(a, b, out_t, false, s, false);
  }
  // E5M2 gradients (HYBRID with block scaling) x E4M3 weights.
  const Fp8Operand dy = make_fp8_operand(DType::E5M2, ScalingMode::kBlock1x128, s.m, s.k, ++seed, sd, true);
  const Fp8Operand w = make_fp8_operand(DType::E4M3, ScalingMode::kBlock128x128, s.n, s.k, ++seed, sd, true, false);
  check_fp8(dy, w, DType::BF16, false, s, false);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmGpuFp8Block,
                         ::testing::Values(Shape3{8, 8, 128}, Shape3{40, 136, 384}, Shape3{256, 264, 1024},
                                           Shape3{16, 49152, 3072},     // 7B fc1 decode, M = 16
                                           Shape3{8192, 2560, 2048},    // 2B QKV fprop
                                           Shape3{2560, 2048, 8192}),   // 2B QKV wgrad
                         shape_name);

// ---- Heuristic cache, deterministic mode, CUDA graphs -----------------------------------------------------------
using CandidateScope = cuda::tuning::Scoped<cuda::tuning::set_gemm_candidate, 0>;
using AutotuneScope = cuda::tuning::Scoped<cuda::tuning::set_gemm_autotune, true>;

TEST(GemmGpu, SecondCallHitsTheHeuristicCache) {
  TG_REQUIRE_CUDA();
  const Tensor a = random_matrix(DType::BF16, 24, 112, 1).to(Device::CUDA);
  const Tensor b = random_matrix(DType::BF16, 40, 112, 2).to(Device::CUDA);
  Tensor out = Tensor::empty(DType::BF16, {24, 40}, Device::CUDA);
  const cuda::GemmCacheStats s0 = cuda::gemm_cache_stats();
  gemm(a, b, out);
  EXPECT_FALSE(cuda::gemm_last_algo().cache_hit);
  const cuda::GemmCacheStats s1 = cuda::gemm_cache_stats();
  EXPECT_EQ(s1.misses, s0.misses + 1);
  gemm(a, b, out);
  EXPECT_TRUE(cuda::gemm_last_algo().cache_hit);
  const cuda::GemmCacheStats s2 = cuda::gemm_cache_stats();
  EXPECT_EQ(s2.hits, s1.hits + 1);
  EXPECT_EQ(s2.misses, s1.misses);
  // A different option is a different key.
  gemm(a, b, out, {.alpha = 2.0f, .deterministic = true});
  EXPECT_FALSE(cuda::gemm_last_algo().cache_hit);
  TG_CHECK_CUDA(cudaDeviceSynchronize());
}

// The candidate knob (cuda::tuning::set_gemm_candidate): another heuristic candidate is another cache key and computes
// the same product. FP8 per-tensor, F32 out, K = 8192: algorithms differ only in the FP32 summation order (tiles,
// split-K), so each candidate's result stays within 1e-4 of the largest |out| of the first's (FP32's 2^-24 times the
// ~sqrt(K) = 90 growth of a reordered sum of 8192 terms is ~5e-6; 20x margin), and the default's bits come back
// after the scope. A candidate cuBLASLt does not offer is a clear error naming the count.
TEST(GemmGpu, OtherHeuristicCandidatesComputeTheSameProduct) {
  TG_REQUIRE_CUDA();
  const Shape3 s{64, 512, 8192};
  const Fp8Operand x = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, s.m, s.k, 51, 0.06, true);
  const Fp8Operand w = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, s.n, s.k, 52, 0.06, true);
  Tensor out = poisoned_output(DType::F32, {s.m, s.n});
  auto run = [&] {
    gemm_fp8(x.view(Device::CUDA), w.view(Device::CUDA), out, {.split_accumulate = true});
    TG_CHECK_CUDA(cudaDeviceSynchronize());
    return out.to(Device::CPU);
  };
  const Tensor want = run();
  float scale = 0.0f;
  for (int64_t i = 0; i < want.numel(); ++i) scale = std::max(scale, std::fabs(want.ptr<float>()[i]));
  ASSERT_GT(scale, 0.0f);
  int offered = 1;
  for (int c = 1; c <= 7; ++c) {
    const CandidateScope candidate(c);
    try {
      const Tensor got = run();
      EXPECT_FALSE(cuda::gemm_last_algo().cache_hit) << "candidate " << c << " reused the default's cache entry";
      float worst = 0.0f;
      for (int64_t i = 0; i < got.numel(); ++i) {
        worst = std::max(worst, std::fabs(got.ptr<float>()[i] - want.ptr<float>()[i]));
      }
      EXPECT_LE(worst, 1e-4f * scale) << "candidate " << c;
      offered = c + 1;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("candidate(s)"), std::string::npos) << e.what();
      break;
    }
  }
  std::printf("[ gemm algo ] %d heuristic candidate(s) offered for FP8 %lldx%lldx%lld\n", offered,
              static_cast<long long>(s.m), static_cast<long long>(s.n), static_cast<long long>(s.k));
  const Tensor again = run();
  EXPECT_EQ(std::memcmp(again.data(), want.data(), want.nbytes()), 0) << "the default's algorithm did not come back";
}

// The measured choice (cuda::tuning::set_gemm_autotune, on by default): the trial runs of the candidates leave no
// trace. An accumulating GEMM (beta = 1 into a residual) and an FP8-out GEMM with out_amax, each tuned on a cache
// miss, must equal bit for bit the same GEMM with the chosen candidate forced (set_gemm_candidate, never tuned) on
// fresh copies: trials that accumulated into the output, or left their amax, would differ. Deterministic mode and
// GEMMs of more than kGemmTuneMaxRows rows are never tuned (the first candidate). 64 x 512 x 8192: the shape on
// which cuBLASLt offers several candidates above.
TEST(GemmGpu, AutotuneTrialsLeaveTheResultOfTheChosenAlgorithm) {
  TG_REQUIRE_CUDA();
  const AutotuneScope on(true);
  const Shape3 s{64, 512, 8192};
  const Fp8Operand x = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, s.m, s.k, 61, 0.06, true);
  const Fp8Operand w = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, s.n, s.k, 62, 0.06, true);
  const Tensor residual = random_matrix(DType::BF16, s.m, s.n, 63, 1.0f);
  const auto accumulate = [&](bool first_call) {
    Tensor out = residual.to(Device::CUDA);
    gemm_fp8(x.view(Device::CUDA), w.view(Device::CUDA), out, {.beta = 1.0f});
    const cuda::GemmAlgoInfo info = cuda::gemm_last_algo();
    if (first_call) {
      EXPECT_FALSE(info.cache_hit) << "an earlier test ran this key: nothing was tuned";
    }
    TG_CHECK_CUDA(cudaDeviceSynchronize());
    return std::pair{out.to(Device::CPU), info};
  };
  const auto fp8_out = [&] {
    Tensor out = poisoned_output(DType::E4M3, {s.m, s.n});
    Tensor amax = scalar_f32(-1.0f, Device::CUDA), scale = scalar_f32(16.0f, Device::CUDA);
    gemm_fp8(x.view(Device::CUDA), w.view(Device::CUDA), out, {}, {}, amax, scale);
    TG_CHECK_CUDA(cudaDeviceSynchronize());
    return std::pair{out.to(Device::CPU), amax.to(Device::CPU)};
  };
  const auto [tuned, info] = accumulate(true);
  const auto [tuned_fp8, tuned_amax] = fp8_out();
  const cuda::GemmAlgoInfo info_fp8 = cuda::gemm_last_algo();
  std::printf("[ gemm algo ] autotune at FP8 %lldx%lldx%lld: accumulate candidate %d (tuned %d, split %d), "
              "FP8 out candidate %d (tuned %d, split %d)\n", static_cast<long long>(s.m), static_cast<long long>(s.n),
              static_cast<long long>(s.k), info.candidate, info.tuned, info.split_k, info_fp8.candidate,
              info_fp8.tuned, info_fp8.split_k);
  ASSERT_GE(info.candidate, 0);
  ASSERT_LT(info.candidate, cuda::tuning::kGemmTuneCandidates);
  {
    const CandidateScope forced(info.candidate);
    EXPECT_TRUE(testing::same_bits(accumulate(false).first, tuned)) << "beta = 1: the trials left a trace";
  }
  {
    const CandidateScope forced(info_fp8.candidate);
    const auto [want, want_amax] = fp8_out();
    EXPECT_TRUE(testing::same_bits(want, tuned_fp8)) << "FP8 out differs from its chosen algorithm's";
    EXPECT_EQ(want_amax.ptr<float>()[0], tuned_amax.ptr<float>()[0]) << "out_amax differs";
  }
  Tensor f32_out = poisoned_output(DType::F32, {s.m, s.n});
  gemm_fp8(x.view(Device::CUDA), w.view(Device::CUDA), f32_out, {.deterministic = true});
  EXPECT_FALSE(cuda::gemm_last_algo().tuned) << "deterministic mode must keep the heuristic's first";
  EXPECT_EQ(cuda::gemm_last_algo().candidate, 0);
  // Past kGemmTuneMaxRows rows (prefill, training): the first.
  const int64_t tall = cuda::tuning::kGemmTuneMaxRows + 8;
  const Fp8Operand xt = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, tall, s.k, 64, 0.06, true);
  Tensor tall_out = poisoned_output(DType::BF16, {tall, s.n});
  gemm_fp8(xt.view(Device::CUDA), w.view(Device::CUDA), tall_out);
  EXPECT_FALSE(cuda::gemm_last_algo().tuned) << tall << " rows must keep the heuristic's first";
  EXPECT_EQ(cuda::gemm_last_algo().candidate, 0);
  TG_CHECK_CUDA(cudaDeviceSynchronize());
}

TEST(GemmGpu, DeterministicModeIsBitwiseRepeatable) {
  TG_REQUIRE_CUDA();
  // Small M, N and a long K: the shape where cuBLASLt likes split-K.
  const Shape3 s{64, 64, 65536};
  const Tensor a = random_matrix(DType::BF16, s.m, s.k, 31, 0.1f).to(Device::CUDA);
  const Tensor b = random_matrix(DType::BF16, s.n, s.k, 32, 0.1f).to(Device::CUDA);
  const Fp8Operand x = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, s.m, s.k, 33, 0.06, true);
  const Fp8Operand w = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, s.n, s.k, 34, 0.06, true);
  Tensor o1 = poisoned_output(DType::F32, {s.m, s.n}), o2 = poisoned_output(DType::F32, {s.m, s.n});
  auto expect_same = [&](const char* what) {
    TG_CHECK_CUDA(cudaDeviceSynchronize());
    const Tensor h1 = o1.to(Device::CPU), h2 = o2.to(Device::CPU);
    EXPECT_EQ(std::memcmp(h1.data(), h2.data(), h1.nbytes()), 0) << what << ": two deterministic runs differ";
  };
  auto expect_fp32_reduction = [&](const char* what) {
    const cuda::GemmAlgoInfo info = cuda::gemm_last_algo();
    std::printf("[ gemm algo ] %s: algo %d tile %d stages %d split_k %d reduction %d workspace %zu\n", what,
                info.algo_id, info.tile_id, info.stages_id, info.split_k, info.reduction_scheme, info.workspace_bytes);
    // Allowed: no split-K, or split-K reduced in a separate FP32 step (CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE = 2);
    // never the schemes that accumulate partials in the output type (INPLACE = 1, OUTPUT_TYPE = 4).
    constexpr int kComputeTypeReduction = 2;
    EXPECT_TRUE(info.split_k <= 1 || info.reduction_scheme == kComputeTypeReduction)
        << what << ": deterministic mode picked split-K " << info.split_k << " with reduction scheme "
        << info.reduction_scheme;
  };
  for (const bool global : {false, true}) {
    set_gemm_deterministic(global);
    const GemmOptions det{.deterministic = !global};
    gemm(a, b, o1, det);
    expect_fp32_reduction(global ? "bf16, global deterministic" : "bf16, deterministic option");
    gemm(a, b, o2, det);
    expect_same("bf16");
    for (const bool fast : {false, true}) {
      GemmOptions o = det;
      o.split_accumulate = !fast;
      gemm_fp8(x.view(Device::CUDA), w.view(Device::CUDA), o1, o);
      expect_fp32_reduction(fast ? "fp8 fast" : "fp8 split");
      gemm_fp8(x.view(Device::CUDA), w.view(Device::CUDA), o2, o);
      expect_same(fast ? "fp8 fast" : "fp8 split");
    }
  }
  set_gemm_deterministic(false);
  // For information: what the unrestricted heuristic picks for this shape.
  gemm(a, b, o1);
  const cuda::GemmAlgoInfo free_choice = cuda::gemm_last_algo();
  std::printf("[ gemm algo ] bf16 unrestricted: split_k %d reduction %d\n", free_choice.split_k,
              free_choice.reduction_scheme);
  TG_CHECK_CUDA(cudaDeviceSynchronize());
}

TEST(GemmGpu, CapturedInACudaGraphWithoutAllocation) {
  TG_REQUIRE_CUDA();
  cudaStream_t raw = nullptr;
  TG_CHECK_CUDA(cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking));
  const Stream stream{raw};
  const Shape3 s{256, 512, 1024};
  const Fp8Operand x = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, s.m, s.k, 41, 0.2, true);
  const Fp8Operand w = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, s.n, s.k, 42, 0.2, true);
  const Tensor a = random_matrix(DType::BF16, s.m, s.k, 43, 0.2f).to(Device::CUDA);
  const Tensor b = random_matrix(DType::BF16, s.n, s.k, 44, 0.2f).to(Device::CUDA);
  Tensor y8 = poisoned_output(DType::BF16, {s.m, s.n}), y16 = poisoned_output(DType::F32, {s.m, s.n});
  auto body = [&] {
    gemm_fp8(x.view(Device::CUDA), w.view(Device::CUDA), y8, {.split_accumulate = false}, stream);
    gemm(a, b, y16, {}, stream);
  };
  body();  // warm-up: creates this stream's workspace and fills the heuristic cache
  TG_CHECK_CUDA(cudaStreamSynchronize(raw));
  const Tensor eager8 = y8.to(Device::CPU), eager16 = y16.to(Device::CPU);
  TG_CHECK_CUDA(cudaMemsetAsync(y8.data(), 0, y8.nbytes(), raw));
  TG_CHECK_CUDA(cudaMemsetAsync(y16.data(), 0, y16.nbytes(), raw));
  const cuda::GemmCacheStats before = cuda::gemm_cache_stats();
  {
    // Global capture mode: any cudaMalloc inside the GEMM calls would fail the capture.
    const testing::CapturedGraph graph(raw, cudaStreamCaptureModeGlobal, body);
    graph.launch(raw);
    TG_CHECK_CUDA(cudaStreamSynchronize(raw));
    const cuda::GemmCacheStats after = cuda::gemm_cache_stats();
    EXPECT_EQ(after.misses, before.misses) << "the captured calls went back to the heuristic";
    const Tensor g8 = y8.to(Device::CPU), g16 = y16.to(Device::CPU);
    EXPECT_EQ(std::memcmp(g8.data(), eager8.data(), g8.nbytes()), 0) << "graph replay differs from eager (FP8)";
    EXPECT_EQ(std::memcmp(g16.data(), eager16.data(), g16.nbytes()), 0) << "graph replay differs from eager (BF16)";
  }  // the graph is destroyed before the stream, as before
  TG_CHECK_CUDA(cudaStreamDestroy(raw));
}

TEST(GemmGpu, MixedDevicesAreRejected) {
  TG_REQUIRE_CUDA();
  const Fp8Operand x = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, 16, 32, 51, 1.0, true);
  const Fp8Operand w = make_fp8_operand(DType::E4M3, ScalingMode::kPerTensor, 16, 32, 52, 1.0, true);
  Tensor out_h = Tensor::empty(DType::BF16, {16, 16});
  TG_EXPECT_THROW_MSG(gemm_fp8(x.view(Device::CUDA), w.view(Device::CUDA), out_h), "one device");
  Fp8View host_scale = w.view(Device::CUDA);
  host_scale.scale_inv = w.scale_h;
  Tensor out_d = Tensor::empty(DType::BF16, {16, 16}, Device::CUDA);
  TG_EXPECT_THROW_MSG(gemm_fp8(x.view(Device::CUDA), host_scale, out_d), "B scale_inv is on CPU");
}

}  // namespace
}  // namespace tg::kernels
