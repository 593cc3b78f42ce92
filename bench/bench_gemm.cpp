// GEMM throughput: our cuBLASLt wrappers (kernels/gemm) on the Gemma training and decode shapes, with LibTorch's
// at::matmul (BF16) and at::_scaled_mm (per-tensor FP8) in the same binary as side-by-side anchors.
//
// Benchmark names: gemm/<recipe>/<A>x<B>-><out>/<M>x<N>x<K>, out[M, N] = A[M, K] * B[N, K]^T, recipe one of
//   ceiling_bf16, ceiling_fp8      8192^3 through our wrapper; run first, they set the in-run GEMM ceilings
//                                  (set_measured_ceiling) that later benchmarks' gemm_roofline_frac refers to
//   bf16                           BF16 x BF16 -> BF16, FP32 accumulation
//   fp8_tensor_fast / _split       per-tensor E4M3 x E4M3 -> BF16, CUBLASLT_MATMUL_DESC_FAST_ACCUM on / off
//   fp8_tensor_fast_first / _split_first (M <= 64) the same with cuBLASLt's first heuristic result instead of the
//                                  timed choice among its first four (kernels::cuda::tuning::set_gemm_autotune)
//   fp8_block                      Float8BlockScaling: 1x128 activations x 128x128 weights -> BF16 (split)
//   torch_matmul                   at::matmul(A, B.t()), BF16
//   torch_scaled_mm_fast / _split  at::_scaled_mm(A, B.t(), scale_a, scale_b, out_dtype=BF16, use_fast_accum)
// Counters: flops (FLOP/s), gemm_roofline_frac (vs the BF16 or FP8 ceiling), bytes_per_second and
// hbm_roofline_frac (A + B + out bytes once: the decode shapes are memory-bound); ours also split_k,
// reduction_scheme and candidate (cuBLASLt's choice and its heuristic rank: gemm_last_algo).
// Targets (issue 3): fp8_tensor_* within 5% of torch_scaled_mm_* on every shape; fp8 >= 1.6x bf16 at 8192^3.
//
// The torch anchors exist when the binary links LibTorch (TEGEMMA_BENCH_TORCH) and LibTorch >= 2.5 has CUDA;
// _scaled_mm is not in the LibTorch 1.13 of the build machine, so there only torch_matmul is registered (and skips
// at run time without a CUDA LibTorch).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bench/common/bench_util.h"
#include "common/cuda_check.h"
#include "common/numeric.h"
#include "kernels/activation/activation.h"
#include "kernels/gemm/gemm.h"
#include "kernels/gemm/gemv.h"
#include "kernels/norm/norm.h"
#include "kernels/quantize/block_layout.h"
#include "kernels/tuning_scope.h"

#if TEGEMMA_BENCH_TORCH
#include <ATen/ATen.h>
#include <torch/version.h>
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
#define TG_BENCH_SCALED_MM 1
#else
#define TG_BENCH_SCALED_MM 0
#endif
#else
#define TG_BENCH_SCALED_MM 0
#endif

namespace tg::bench {
namespace {

struct GemmShape {
  int64_t m, n, k;
  std::string str() const { return std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k); }
  double flops() const { return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k); }
  bool decode() const { return m <= 64; }
};

// Gemma training: T = 8192 tokens (4 x 2048). Decode: M = batch in {1, 16, 64}.
std::vector<GemmShape> shapes() {
  std::vector<GemmShape> s = {
      {8192, 8192, 8192},
      {8192, 2560, 2048}, {8192, 2048, 2048}, {8192, 32768, 2048}, {8192, 2048, 16384},   // 2B qkv, o, fc1, fc2
      {8192, 12288, 3072}, {8192, 3072, 4096}, {8192, 49152, 3072}, {8192, 3072, 24576},  // 7B qkv, o, fc1, fc2
  };
  for (int64_t m : {1, 16, 64}) {
    s.push_back({m, 49152, 3072});   // 7B fc1
    s.push_back({m, 3072, 24576});   // 7B fc2
    s.push_back({m, 256000, 3072});  // lm_head
  }
  return s;
}

// ---- Device operands, made once per (dtype, shape) and kept for the whole run -----------------------------------
// Filled by bench_util's random_device (never zeros: they would flatter every number).
const TensorView& device_matrix(DType dtype, int64_t rows, int64_t cols, int salt) {
  static std::map<std::tuple<int, int64_t, int64_t, int>, Tensor> cache;
  const auto key = std::make_tuple(static_cast<int>(dtype), rows, cols, salt);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.view();
  Tensor t = random_device(dtype, {rows, cols}, static_cast<uint64_t>(salt));
  return cache.emplace(key, std::move(t)).first->second.view();
}

// An F32 tensor of `shape` filled with `value`, in its own allocation (cuBLASLt's scale-pointer pitfall).
const TensorView& device_f32(const Shape& shape, float value, int salt) {
  static std::map<std::tuple<std::string, int>, Tensor> cache;
  const auto key = std::make_tuple(shape.str(), salt);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.view();
  std::vector<float> host(static_cast<std::size_t>(shape.numel()), value);
  Tensor t = Tensor::copy_of(TensorView(host.data(), DType::F32, shape, Device::CPU), Device::CUDA);
  return cache.emplace(key, std::move(t)).first->second.view();
}

const TensorView& device_out(DType dtype, int64_t m, int64_t n) { return device_matrix(dtype, m, n, 99); }

Fp8View per_tensor_operand(int64_t rows, int64_t cols, int salt) {
  Fp8View v;
  v.mode = ScalingMode::kPerTensor;
  v.data = device_matrix(DType::E4M3, rows, cols, salt);
  v.scale_inv = device_f32(Shape{1}, 0.0625f, salt);
  return v;
}

Fp8View block_operand(ScalingMode mode, int64_t rows, int64_t cols, int salt) {
  Fp8View v;
  v.mode = mode;
  v.data = device_matrix(DType::E4M3, rows, cols, salt);
  v.scale_inv = device_f32(kernels::block_scale_shape(mode, rows, cols, false), 0.0625f, salt + 1000);
  return v;
}

double bytes_moved(const GemmShape& s, std::size_t a_bytes, std::size_t b_bytes, std::size_t out_bytes) {
  return static_cast<double>(s.m * s.k) * a_bytes + static_cast<double>(s.n * s.k) * b_bytes +
         static_cast<double>(s.m * s.n) * out_bytes;
}

// Runs `op` under the benchmark loop with CUDA-event timing; warm-up calls first (heuristic, workspace).
// A tg::Error (unsupported shape, ...) becomes the benchmark's error instead of aborting the run.
template <typename Op>
void time_gemm(benchmark::State& state, const GemmShape& s, double bytes, Ceiling ceiling, Op&& op) {
  try {
    for (int i = 0; i < 3; ++i) op();
    TG_CHECK_CUDA(cudaDeviceSynchronize());
    for (auto _ : state) {
      CudaEventTimer timer(state, nullptr, /*flush_l2=*/s.decode());
      op();
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  set_roofline(state, bytes, s.flops(), ceiling);
}

// The ceiling benchmarks also measure the ceiling for the rest of the run: mean of 20 timed calls.
template <typename Op>
void measure_ceiling(Ceiling c, const GemmShape& s, Op&& op) {
  cudaEvent_t start{}, stop{};
  TG_CHECK_CUDA(cudaEventCreate(&start));
  TG_CHECK_CUDA(cudaEventCreate(&stop));
  constexpr int kCalls = 20;
  TG_CHECK_CUDA(cudaEventRecord(start));
  for (int i = 0; i < kCalls; ++i) op();
  TG_CHECK_CUDA(cudaEventRecord(stop));
  TG_CHECK_CUDA(cudaEventSynchronize(stop));
  float ms = 0.0f;
  TG_CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
  TG_CHECK_CUDA(cudaEventDestroy(start));
  TG_CHECK_CUDA(cudaEventDestroy(stop));
  set_measured_ceiling(c, s.flops() * kCalls / (static_cast<double>(ms) * 1e-3));
}

// ---- Our wrappers ------------------------------------------------------------------------------------------------
auto bf16_op(const GemmShape& s) {
  const TensorView a = device_matrix(DType::BF16, s.m, s.k, 1), b = device_matrix(DType::BF16, s.n, s.k, 2);
  const TensorView out = device_out(DType::BF16, s.m, s.n);
  return [=] { kernels::gemm(a, b, out); };
}

auto fp8_tensor_op(const GemmShape& s, bool fast) {
  const Fp8View a = per_tensor_operand(s.m, s.k, 3), b = per_tensor_operand(s.n, s.k, 4);
  const TensorView out = device_out(DType::BF16, s.m, s.n);
  const kernels::GemmOptions opt{.split_accumulate = !fast};
  return [=] { kernels::gemm_fp8(a, b, out, opt); };
}

void bm_bf16(benchmark::State& state, GemmShape s) {
  time_gemm(state, s, bytes_moved(s, 2, 2, 2), Ceiling::kBf16Gemm, bf16_op(s));
}

using AutotuneScope = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_gemm_autotune, true>;

void bm_fp8_tensor(benchmark::State& state, GemmShape s, bool fast, bool autotune = true) {
  const AutotuneScope scope(autotune);
  time_gemm(state, s, bytes_moved(s, 1, 1, 2), Ceiling::kFp8Gemm, fp8_tensor_op(s, fast));
  if (state.error_occurred()) return;  // gemm_last_algo would describe the previous benchmark's GEMM
  const kernels::cuda::GemmAlgoInfo algo = kernels::cuda::gemm_last_algo();
  state.counters["split_k"] = algo.split_k;
  state.counters["reduction_scheme"] = algo.reduction_scheme;
  state.counters["candidate"] = algo.candidate;
}

void bm_fp8_block(benchmark::State& state, GemmShape s) {
  const Fp8View a = block_operand(ScalingMode::kBlock1x128, s.m, s.k, 5);
  const Fp8View b = block_operand(ScalingMode::kBlock128x128, s.n, s.k, 6);
  const TensorView out = device_out(DType::BF16, s.m, s.n);
  time_gemm(state, s, bytes_moved(s, 1, 1, 2), Ceiling::kFp8Gemm, [=] { kernels::gemm_fp8(a, b, out); });
}

void bm_ceiling_bf16(benchmark::State& state, GemmShape s) {
  auto op = bf16_op(s);
  time_gemm(state, s, bytes_moved(s, 2, 2, 2), Ceiling::kBf16Gemm, op);
  if (!state.error_occurred()) measure_ceiling(Ceiling::kBf16Gemm, s, op);
}

void bm_ceiling_fp8(benchmark::State& state, GemmShape s) {
  auto op = fp8_tensor_op(s, /*fast=*/true);
  time_gemm(state, s, bytes_moved(s, 1, 1, 2), Ceiling::kFp8Gemm, op);
  if (!state.error_occurred()) measure_ceiling(Ceiling::kFp8Gemm, s, op);
}

// ---- LibTorch anchors --------------------------------------------------------------------------------------------
#if TEGEMMA_BENCH_TORCH
at::Tensor as_torch(const TensorView& t, at::ScalarType type) {
  std::vector<int64_t> sizes(t.shape.begin(), t.shape.end());
  return at::from_blob(t.data, sizes, at::TensorOptions().dtype(type).device(at::kCUDA));
}

bool torch_has_cuda(benchmark::State& state) {
  if (at::hasCUDA()) return true;
  state.SkipWithError("this LibTorch has no CUDA");
  return false;
}

void bm_torch_matmul(benchmark::State& state, GemmShape s) {
  if (!torch_has_cuda(state)) return;
  const at::Tensor a = as_torch(device_matrix(DType::BF16, s.m, s.k, 1), at::kBFloat16);
  const at::Tensor b = as_torch(device_matrix(DType::BF16, s.n, s.k, 2), at::kBFloat16);
  time_gemm(state, s, bytes_moved(s, 2, 2, 2), Ceiling::kBf16Gemm, [&] { (void)at::matmul(a, b.t()); });
}

#if TG_BENCH_SCALED_MM
void bm_torch_scaled_mm(benchmark::State& state, GemmShape s, bool fast) {
  if (!torch_has_cuda(state)) return;
  const Fp8View av = per_tensor_operand(s.m, s.k, 3), bv = per_tensor_operand(s.n, s.k, 4);
  const at::Tensor a = as_torch(av.data, at::kFloat8_e4m3fn), b = as_torch(bv.data, at::kFloat8_e4m3fn);
  const at::Tensor sa = as_torch(av.scale_inv, at::kFloat), sb = as_torch(bv.scale_inv, at::kFloat);
  // mat2 must be column-major [K, N]: our row-major B [N, K] transposed is exactly that.
  time_gemm(state, s, bytes_moved(s, 1, 1, 2), Ceiling::kFp8Gemm, [&] {
    (void)at::_scaled_mm(a, b.t(), sa, sb, std::nullopt, std::nullopt, at::kBFloat16, fast);
  });
}
#endif
#endif

// ---- Registration (ceilings first: Google Benchmark runs in registration order) ---------------------------------
void add(const std::string& name, auto fn) {
  benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond);
}

const bool registered = [] {
  const GemmShape square{8192, 8192, 8192};
  add("gemm/ceiling_bf16/bf16xbf16->bf16/" + square.str(), [=](benchmark::State& st) { bm_ceiling_bf16(st, square); });
  add("gemm/ceiling_fp8/e4m3xe4m3->bf16/" + square.str(), [=](benchmark::State& st) { bm_ceiling_fp8(st, square); });
#if TEGEMMA_BENCH_TORCH
  add_context("torch_version", TORCH_VERSION);
#endif
  for (const GemmShape& s : shapes()) {
    const std::string shape = std::string("/").append(s.str());
    add("gemm/bf16/bf16xbf16->bf16" + shape, [=](benchmark::State& st) { bm_bf16(st, s); });
    add("gemm/fp8_tensor_fast/e4m3xe4m3->bf16" + shape, [=](benchmark::State& st) { bm_fp8_tensor(st, s, true); });
    add("gemm/fp8_tensor_split/e4m3xe4m3->bf16" + shape, [=](benchmark::State& st) { bm_fp8_tensor(st, s, false); });
    if (s.m <= 64) {
      add("gemm/fp8_tensor_fast_first/e4m3xe4m3->bf16" + shape,
          [=](benchmark::State& st) { bm_fp8_tensor(st, s, true, false); });
      add("gemm/fp8_tensor_split_first/e4m3xe4m3->bf16" + shape,
          [=](benchmark::State& st) { bm_fp8_tensor(st, s, false, false); });
    }
    // Block-scaled GEMMs need M % 8 == 0 (kernels/gemm/gemm.h): no M = 1 decode.
    if (s.m % 8 == 0) {
      add("gemm/fp8_block/e4m3xe4m3->bf16" + shape, [=](benchmark::State& st) { bm_fp8_block(st, s); });
    }
#if TEGEMMA_BENCH_TORCH
    add("gemm/torch_matmul/bf16xbf16->bf16" + shape, [=](benchmark::State& st) { bm_torch_matmul(st, s); });
#if TG_BENCH_SCALED_MM
    add("gemm/torch_scaled_mm_fast/e4m3xe4m3->bf16" + shape,
        [=](benchmark::State& st) { bm_torch_scaled_mm(st, s, true); });
    add("gemm/torch_scaled_mm_split/e4m3xe4m3->bf16" + shape,
        [=](benchmark::State& st) { bm_torch_scaled_mm(st, s, false); });
#endif
#endif
  }
  return true;
}();

// =================================================================================================================
// ---- Decode GEMV (kernels/gemm/gemv.h) beside cuBLASLt at decode M ------------------------------------------------
// =================================================================================================================
// Names: gemv/<impl>/<x>x<W>->bf16/<M>x<N>x<K>, impl one of
//   gemv              kernels::gemv: bf16xbf16 (BF16 lm_head / bf16 recipe), bf16xe4m3 (BF16 x, E4M3 weights
//                     dequantized on the fly), e4m3xe4m3 (the decoder's FP8 path: the GEMM's own E4M3 x)
//   gemv_ksplit1/2/4  kernels::gemv, e4m3xe4m3 at M = 1, 1 (never split) / 2 / 4 warps per column's K
//                     (kernels::cuda::tuning::set_gemv_k_split; the narrow shapes only); plain gemv takes the
//                     default rule (2 when K >= 24576, else 1)
//   gemv_mma / gemv_cudacore  kernels::gemv, e4m3xe4m3 forced onto the tensor cores (mma.sync m16n8k16 on the codes
//                     as F16 pairs) / the CUDA-core loop (kernels::cuda::tuning::set_gemv_mma); plain gemv takes the
//                     rule (tensor cores for M >= 2)
//   cublaslt_bf16     kernels::gemm, BF16
//   cublaslt_fp8_fast kernels::gemm_fp8 per-tensor, fast accumulation (TE's fprop default)
// on the Gemma decode shapes (2b and 7b QKV, O, fc1, fc2, lm_head) at M = 1, 4, 16 (gemv takes M <= 16) and
// cuBLASLt alone at M = 64. bytes = W + x + out once, so hbm_roofline_frac is the fraction of 4.1 TB/s; L2 is
// flushed (read, not written: no dirty lines) before every timed call (a decode step streams each weight from HBM
// once).
struct GemvShape {
  const char* what;
  int64_t n, k;
};
const std::vector<GemvShape>& gemv_shapes() {
  static const std::vector<GemvShape> s = {
      {"2b.qkv", 2560, 2048},  {"2b.o", 2048, 2048},   {"2b.fc1", 32768, 2048},  {"2b.fc2", 2048, 16384},
      {"2b.lm_head", 256000, 2048}, {"7b.qkv", 12288, 3072}, {"7b.o", 3072, 4096}, {"7b.fc1", 49152, 3072},
      {"7b.fc2", 3072, 24576}, {"7b.lm_head", 256000, 3072},
  };
  return s;
}

// k_split: kernels::cuda::tuning::set_gemv_k_split for this benchmark (0 = the default rule), restored afterwards.
using KSplitScope = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_gemv_k_split, 0>;
// mma: kernels::cuda::tuning::set_gemv_mma for this benchmark, the rule afterwards.
using GemvMma = kernels::cuda::tuning::GemvMma;
using MmaScope = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_gemv_mma, GemvMma::kRule>;

void bm_gemv(benchmark::State& state, GemmShape s, DType x_dtype, DType w_dtype, int k_split = 0,
             GemvMma mma = GemvMma::kRule) {
  const KSplitScope scope(k_split);
  const MmaScope mma_scope(mma);
  const bool xq = x_dtype == DType::E4M3, wq = w_dtype == DType::E4M3;
  kernels::GemvOperand x, w;
  if (xq) {
    x = kernels::GemvOperand::fp8(per_tensor_operand(s.m, s.k, 3));
  } else {
    x = kernels::GemvOperand::bf16(device_matrix(DType::BF16, s.m, s.k, 1));
  }
  if (wq) {
    w = kernels::GemvOperand::fp8(per_tensor_operand(s.n, s.k, 4));
  } else {
    w = kernels::GemvOperand::bf16(device_matrix(DType::BF16, s.n, s.k, 2));
  }
  const TensorView out = device_out(DType::BF16, s.m, s.n);
  time_gemm(state, s, bytes_moved(s, xq ? 1 : 2, wq ? 1 : 2, 2), wq ? Ceiling::kFp8Gemm : Ceiling::kBf16Gemm,
            [=] { kernels::gemv(x, w, out); });
}

// gemv_geglu/<variant>/e4m3xe4m3->e4m3/1x<2F>x<K>: the batch-1 fc1 + GeGLU -> E4M3. fused: kernels::gemv_geglu;
// unfused: gemv (BF16 fc1 [1, 2F]) then geglu_forward_fp8. Each variant's kernels back to back in one timed region
// (no PDL here: ci/decode_ab.sh measures them inside the decode step). bytes = W + x + act, the fused kernel's
// traffic (the unfused pair also writes and reads the BF16 fc1: 8F bytes more, < 0.1% of W). (The RMSNorm fused into
// it, kernels::gemv_norm_geglu, and its norm_fused / norm_then_fused variants were removed: slower in the step.)
enum class GegluVariant { kFused, kUnfused };
const char* geglu_variant_name(GegluVariant v) { return v == GegluVariant::kFused ? "fused" : "unfused"; }
void bm_gemv_geglu(benchmark::State& state, GemmShape s, GegluVariant variant) {
  const kernels::GemvOperand x = kernels::GemvOperand::fp8(per_tensor_operand(1, s.k, 3));
  const kernels::GemvOperand w = kernels::GemvOperand::fp8(per_tensor_operand(s.n, s.k, 4));
  Fp8View act;
  act.mode = ScalingMode::kPerTensor;
  act.data = device_matrix(DType::E4M3, 1, s.n / 2, 98);
  act.scale = device_f32(Shape{1}, 1.0f, 97);
  act.scale_inv = device_f32(Shape{1}, 1.0f, 96);
  act.amax = device_f32(Shape{1}, 0.0f, 95);
  const TensorView fc1 = device_out(DType::BF16, 1, s.n);
  const double bytes = static_cast<double>(s.n * s.k + s.k + s.n / 2);
  if (variant == GegluVariant::kFused) {
    return time_gemm(state, s, bytes, Ceiling::kFp8Gemm, [=] { kernels::gemv_geglu(x, w, act); });
  }
  time_gemm(state, s, bytes, Ceiling::kFp8Gemm, [=] {
    kernels::gemv(x, w, fc1);
    kernels::geglu_forward_fp8(fc1, act);
  });
}

const bool gemv_geglu_registered = [] {
  for (const GemvShape& g : gemv_shapes()) {
    if (std::string(g.what).find("fc1") == std::string::npos) continue;
    const GemmShape s{1, g.n, g.k};
    for (GegluVariant v : {GegluVariant::kFused, GegluVariant::kUnfused}) {
      add(std::string("gemv_geglu/") + geglu_variant_name(v) + "/e4m3xe4m3->e4m3/" + s.str(),
          [=](benchmark::State& st) { st.SetLabel(g.what); bm_gemv_geglu(st, s, v); });
    }
  }
  return true;
}();

const bool gemv_registered = [] {
  for (const GemvShape& g : gemv_shapes()) {
    for (int64_t m : {1, 4, 16, 64}) {
      const GemmShape s{m, g.n, g.k};
      const std::string shape = std::string("/").append(s.str());
      if (m <= kernels::kGemvMaxRows) {
        add("gemv/gemv/bf16xbf16->bf16" + shape,
            [=](benchmark::State& st) { st.SetLabel(g.what); bm_gemv(st, s, DType::BF16, DType::BF16); });
        add("gemv/gemv/bf16xe4m3->bf16" + shape,
            [=](benchmark::State& st) { st.SetLabel(g.what); bm_gemv(st, s, DType::BF16, DType::E4M3); });
        add("gemv/gemv/e4m3xe4m3->bf16" + shape,
            [=](benchmark::State& st) { st.SetLabel(g.what); bm_gemv(st, s, DType::E4M3, DType::E4M3); });
        for (const auto& [variant, mode] : {std::pair{"gemv_mma", GemvMma::kAlways}, std::pair{"gemv_cudacore", GemvMma::kNever}}) {
          add(std::string("gemv/") + variant + "/e4m3xe4m3->bf16" + shape, [=](benchmark::State& st) {
            st.SetLabel(g.what);
            bm_gemv(st, s, DType::E4M3, DType::E4M3, 0, mode);
          });
        }
        if (g.n < 132 * 64 && m == 1) {  // the one-column shapes: K over 1 / 2 / 4 warps (tuning knob)
          for (int split : {1, 2, 4}) {
            const std::string variant = "gemv_ksplit" + std::to_string(split);
            add("gemv/" + variant + "/e4m3xe4m3->bf16" + shape, [=](benchmark::State& st) {
              st.SetLabel(g.what);
              bm_gemv(st, s, DType::E4M3, DType::E4M3, split, GemvMma::kNever);
            });
          }
        }
      }
      add("gemv/cublaslt_bf16/bf16xbf16->bf16" + shape, [=](benchmark::State& st) { st.SetLabel(g.what); bm_bf16(st, s); });
      add("gemv/cublaslt_fp8_fast/e4m3xe4m3->bf16" + shape,
          [=](benchmark::State& st) { st.SetLabel(g.what); bm_fp8_tensor(st, s, true); });
    }
  }
  return true;
}();

}  // namespace
}  // namespace tg::bench

TG_BENCH_MAIN()
