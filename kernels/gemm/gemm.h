// gemm: the project's matrix products, on cuBLASLt (CUDA) with simple-loop CPU twins.
//
// One layout for everything, the HF/PyTorch linear form  y = x * W^T:
//
//     out[M, N] = alpha * A[M, K] * B[N, K]^T + beta * out[M, N]
//
// All three tensors are row-major 2-D views with unit inner stride (a row stride >= the row length is
// allowed, e.g. a column slice of a fused QKV output). In cuBLASLt's column-major terms this is the "TN"
// product D[N, M] = B^T[N, K] * A[K, M] -- the only layout Hopper FP8 GEMMs support, so forward, dgrad
// and wgrad are all written in it by choosing which FP8 copy (row-wise or column-wise) is passed:
//
//     forward  y [T, N]  = x [T, K]  * W [N, K]^T         gemm_fp8(x, W, y)
//     dgrad    dx[T, K]  = dy[T, N]  * (W^T)[K, N]^T      gemm_fp8(dy, as_columnwise(W), dx)
//     wgrad    dW[N, K] += (dy^T)[N, T] * (x^T)[K, T]^T   gemm_fp8(as_columnwise(dy), as_columnwise(x), dW,
//                                                                  {.beta = 1})
//
// ---- gemm: BF16 x BF16 ----------------------------------------------------------------------------
// A, B BF16; out BF16 or F32. FP32 accumulation (CUBLAS_COMPUTE_32F), FP32 epilogue
// alpha * acc + beta * out, one rounding to out's dtype -- except that with a BF16 out and beta != 0 cuBLASLt may
// round alpha * acc to BF16 before it adds beta * out (H200, cuBLASLt 13.1: 3 BF16 ulps of the result off the
// single-rounding twin at [256, 2048, 512], where |acc| >> |result|; reduction scheme forced to FP32 or not), i.e.
// the result may carry one more rounding, of half a BF16 ulp of |alpha * acc| (the LibTorch reference's
// `h + x @ W.T` rounds there too).
// BF16 only: GemmOptions::transpose_a / transpose_b take an operand as stored TRANSPOSED (A given as
// [K, M], B as [K, N]; cuBLASLt's N / T layouts, no copy), which the BF16 backward needs:
//     dgrad    dx[T, K]  = dy[T, N] * W[N, K]          gemm(dy, W, dx, {.transpose_b = true})
//     wgrad    dW[N, K] += dy[T, N]^T * x[T, K]        gemm(dy, x, dW, {.beta = 1, .transpose_a = true,
//                                                                        .transpose_b = true})
//
// ---- gemm_fp8: FP8 x FP8 --------------------------------------------------------------------------
// A and B are Fp8Views (their row-wise `data` [rows, cols] and `scale_inv` are used; as_columnwise()
// selects the transposed copy). Dequantized operands are q * scale_inv; the result is
//     v = alpha * (A_deq * B_deq^T) + beta * out
// rounded to out's dtype; for an FP8 out, out = satfinite(v * out_scale) and out_amax = max |v| (before
// out_scale and before rounding, as TE's delayed-scaling amax history expects).
//
//   Per-tensor (both ScalingMode::kPerTensor): scale_inv F32 [1] each.
//     A/B dtypes: E4M3 x E4M3, E4M3 x E5M2, E5M2 x E4M3 (E5M2 x E5M2 is not a cuBLASLt FP8 GEMM).
//     out: BF16 or F32, or FP8 (E4M3; E5M2 only when an input is E5M2). An FP8 out needs out_scale
//     (F32 [1]) and takes an optional out_amax (F32 [1], overwritten); beta must be 0 for an FP8 out.
//     out_scale / out_amax are rejected for a BF16/F32 out: cuBLASLt does not compute amax there.
//     split_accumulate = false turns on CUBLASLT_MATMUL_DESC_FAST_ACCUM (TE's fprop default): the
//     tensor cores then accumulate without periodic promotion to FP32, faster and less accurate.
//   Block-scaled (ScalingMode::kBlock1x128 / kBlock128x128, Float8BlockScaling; cuBLASLt's
//     CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F / BLK128x128_32F): scale_inv in the layout of
//     kernels/quantize/block_layout.h. At most one operand may be 128x128 (TE's rule; the usual
//     pairs are 1x128 activations/gradients x 128x128 weights and 1x128 x 1x128 for wgrad). out BF16
//     or F32, no out_scale / out_amax, split accumulation only (cuBLASLt has no fast-accumulation
//     block-scaled kernel; PyTorch's _scaled_mm refuses it too). Extra shape rules: K % 128 == 0 (every
//     block full), M % 8 == 0 and N % 8 == 0 (TE's cuBLASLt rule; M = 1 decode is therefore per-tensor
//     only), contiguous operands.
//   Both operands must use the same family (per-tensor with per-tensor, block with block).
//
// Constraints enforced for every FP8 GEMM (cuBLASLt's FP8 requirements: 16-byte aligned pointers
// and leading dimensions; tg::Error naming the operand and the rule otherwise -- never a fallback):
//   K % 16 == 0 and the row strides of A and B multiples of 16 elements (bytes, for FP8);
//   out's row stride * sizeof(out dtype) a multiple of 16 bytes (N % 8 for BF16, % 4 for F32, % 16 for FP8);
//   data pointers 16-byte aligned;
//   every scale / amax pointer 16-byte aligned -- on the H200 (cuBLASLt 13.1) a B scale pointer 4 bytes
//   after the A scale pointer made cublasLtMatmul return NOT_SUPPORTED (docs/gpu-machine.md); give
//   each scale its own allocation (or a 16-byte slot).
// BF16 GEMMs take any shape (M, N, K >= 1).
//
// ---- CUDA side ------------------------------------------------------------------------------------
// One cublasLt handle per device, one 32 MiB workspace per (device, stream), created on the first
// call (or by cuda::gemm_warmup) and reused until cuda::release_gemm_state() (called by
// kernels::release_library_state()); heuristic results are cached per (device, shape, row
// strides, dtypes, scaling modes, options, pointer alignment). After the first call with a given key
// on a given stream the call path allocates nothing, so it can be captured in a CUDA graph (a captured
// GEMM keeps using the workspace of the stream it was captured on: do not replay the graph while eager
// GEMMs run on that stream). Every call opens an NVTX range and checks every cuBLASLt status
// (TG_CHECK_CUBLAS); a shape/type combination cuBLASLt has no algorithm for is a tg::Error naming it.
//
// Deterministic mode (GemmOptions::deterministic, or set_gemm_deterministic(true) for every call)
// restricts the heuristic to algorithms without split-K reduction (CUBLASLT_MATMUL_PREF_REDUCTION_
// SCHEME_MASK = CUBLASLT_REDUCTION_SCHEME_NONE); together with the cached algorithm this gives bitwise
// identical results for identical inputs on the same GPU and library, which resume-from-checkpoint needs.
//
// ---- CPU twins (the golden) -----------------------------------------------------------------------
// Same contract and checks. Inputs are converted exactly (BF16, FP8 codes, q * scale_inv) and the
// products are accumulated in DOUBLE; alpha/beta/out_scale are applied in double, and the only rounding
// is the final one to out's dtype (through float: double -> float -> BF16/FP8). So the twin is the exact
// GEMM up to the output rounding; a GPU result differs from it by FP32 accumulation order (split
// accumulation) or by the tensor cores' reduced-precision accumulation (fast accumulation).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/fp8_tensor.h"
#include "common/tensor.h"

namespace tg::kernels {

struct GemmOptions {
  float alpha = 1.0f;
  // 0: overwrite out. 1: accumulate into out (wgrad accumulation across micro-batches). Any value is
  // allowed for BF16/F32 outputs; an FP8 out needs 0.
  float beta = 0.0f;
  // FP8 only. false = CUBLASLT_MATMUL_DESC_FAST_ACCUM on (per-tensor FP8 only).
  bool split_accumulate = true;
  // Only reproducible algorithms (no split-K reduction); see above. The CPU twin is always deterministic.
  bool deterministic = false;
  // BF16 gemm only (FP8 GEMMs are TN only: pass as_columnwise copies instead): the operand is stored
  // transposed, A as [K, M] and/or B as [K, N] (see "gemm: BF16 x BF16").
  bool transpose_a = false;
  bool transpose_b = false;
};

// out[M, N] = alpha * a[M, K] * b[N, K]^T + beta * out. a, b BF16; out BF16 or F32. With transpose_a / _b,
// a is [K, M] / b is [K, N] as stored (out = a^T ... / ... b).
void gemm(const TensorView& a, const TensorView& b, const TensorView& out, const GemmOptions& opt = {},
          Stream stream = {});

// FP8 GEMM, per-tensor or block-scaled (see above). out_scale/out_amax: F32 [1], FP8 out only.
void gemm_fp8(const Fp8View& a, const Fp8View& b, const TensorView& out, const GemmOptions& opt = {},
              Stream stream = {}, const TensorView& out_amax = {}, const TensorView& out_scale = {});

// The column-wise (transposed) copy of `t` as a row-wise operand: data = t.columnwise_data [cols, rows],
// scale_inv = t.columnwise_scale_inv. Throws if `t` has no column-wise copy ("missing column-wise usage").
Fp8View as_columnwise(const Fp8View& t);

// Process-wide deterministic mode: when on, every GEMM behaves as if GemmOptions::deterministic were set.
void set_gemm_deterministic(bool on);
bool gemm_deterministic();

namespace cpu {
void gemm(const TensorView& a, const TensorView& b, const TensorView& out, const GemmOptions& opt);
void gemm_fp8(const Fp8View& a, const Fp8View& b, const TensorView& out, const GemmOptions& opt,
              const TensorView& out_amax = {}, const TensorView& out_scale = {});
}  // namespace cpu

namespace cuda {
void gemm(const TensorView& a, const TensorView& b, const TensorView& out, const GemmOptions& opt, Stream stream);
void gemm_fp8(const Fp8View& a, const Fp8View& b, const TensorView& out, const GemmOptions& opt, Stream stream,
              const TensorView& out_amax = {}, const TensorView& out_scale = {});

inline constexpr std::size_t kWorkspaceBytes = 32u << 20;

// Creates the current device's cublasLt handle and `stream`'s workspace now (they are otherwise made by
// the first GEMM on that stream). Call it before capturing GEMMs on a new stream into a CUDA graph.
void gemm_warmup(Stream stream = {});

// Frees the cuBLASLt state of every device: the heuristic cache, the workspaces (after cudaDeviceSynchronize on
// each device that has some) and the handles (cublasLtDestroy); the next GEMM creates them again. Part of
// tg::kernels::release_library_state() (kernels/library_state.h), whose rules apply: no GEMM in flight, no CUDA
// graph that captured a GEMM left to replay. Does nothing when nothing was created.
void release_gemm_state();

// Heuristic-cache counters since process start (all threads, all devices).
struct GemmCacheStats {
  int64_t hits = 0;
  int64_t misses = 0;
};
GemmCacheStats gemm_cache_stats();

// The algorithm the calling thread's last GEMM ran, as cuBLASLt describes it (tests and logs).
struct GemmAlgoInfo {
  int algo_id = -1;
  int tile_id = -1;
  int stages_id = -1;
  int split_k = -1;           // CUBLASLT_ALGO_CONFIG_SPLITK_NUM (1 = no split)
  int reduction_scheme = -1;  // cublasLtReductionScheme_t of the split (0 = NONE)
  std::size_t workspace_bytes = 0;
  int candidate = -1;         // its rank among cuBLASLt's heuristic results (0 = the first)
  bool tuned = false;         // chosen by timing the candidates (tuning::set_gemm_autotune)
  bool cache_hit = false;
};
GemmAlgoInfo gemm_last_algo();

namespace tuning {
// Measured choice of algorithm (on by default; TEGEMMA_GEMM_AUTOTUNE=0 or set_gemm_autotune(false): cuBLASLt's first
// heuristic result) for GEMMs of at most kGemmTuneMaxRows rows (M: decode and small batches, where the first result
// measured slower; prefill and training shapes keep the first, which measured at or above at::_scaled_mm there, and a
// prefill would otherwise pay a tuning for each new prompt length). On a heuristic-cache miss, the first
// kGemmTuneCandidates results are timed on the call's own operands (CUDA events on its stream: each candidate once to
// warm up, then two rounds of back-to-back runs, the faster round counts) and the fastest is cached, unless it is less
// than kGemmTuneMinGain faster than the first. The call's results are untouched: with beta = 0 the trial runs write the
// output the real call then overwrites, with beta != 0 they write a scratch copy (no tuning if it would exceed
// kGemmTuneScratchBytes); an out_amax goes to a scratch word. Not tuned (the first result, cached the same way):
// deterministic mode (the algorithm must not depend on timing noise, within a process or across processes), a stream
// under capture (no host synchronisation allowed), and a forced candidate (set_gemm_candidate). The cost, once per
// shape, is a host synchronisation and ~2 x 8 + 4 runs per candidate (8 shrinks so a round stays near 200 us: one run
// past that). Why: at decode's M <= 64 the heuristic's first is not always the fastest (session 20, H200, 64x3072x24576
// FP8: 26.6 us first vs 25.3 us the second candidate and 25.5 us at::_scaled_mm). Process-wide; part of the cache key.
inline constexpr int kGemmTuneCandidates = 4;
inline constexpr int64_t kGemmTuneMaxRows = 256;
inline constexpr double kGemmTuneMinGain = 0.02;
inline constexpr std::size_t kGemmTuneScratchBytes = std::size_t{64} << 20;
void set_gemm_autotune(bool on);
bool gemm_autotune();

// Measurement knob: which of cuBLASLt's heuristic candidates a GEMM takes (0, the default: the first, or the timed
// choice above; i: the (i+1)-th, a tg::Error when cuBLASLt offers fewer, never tuned). For sweeps such as
// bench_gemm's; starts from TEGEMMA_GEMM_CANDIDATE (0-7); process-wide; part of the heuristic cache key.
void set_gemm_candidate(int index);
int gemm_candidate();
}  // namespace tuning
}  // namespace cuda

namespace detail {
// The operand shapes every implementation validates identically (gemm.cpp). Throws tg::Error naming
// the operand and the violated rule.
struct GemmDims {
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldd = 0;  // row strides in elements
};
GemmDims check_gemm(const TensorView& a, const TensorView& b, const TensorView& out, const GemmOptions& opt);
GemmDims check_gemm_fp8(const Fp8View& a, const Fp8View& b, const TensorView& out, const GemmOptions& opt,
                        const TensorView& out_amax, const TensorView& out_scale);
}  // namespace detail

}  // namespace tg::kernels
