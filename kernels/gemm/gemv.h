// gemv: weight-streaming skinny GEMM for decode (M = 1 .. 16 token rows), in the GEMM's layout y = x * W^T:
//
//     out[M, N] = alpha * x[M, K] . W[N, K]^T  (+ residual[M, N])
//
// Why a kernel of our own: at M <= 16 a decode step's GEMMs are pure weight streaming (W is N*K bytes, x and out a
// few KB), but cuBLASLt runs them as tensor-core tiles padded to >= 16/64 rows and reached 58-73% of HBM on the
// Gemma-7b MLP shapes at M = 1 (docs/bench_log.md). This kernel reads every weight byte exactly once with 16-byte
// streaming loads and does the arithmetic on the CUDA cores.
//
// ---- Operands ----------------------------------------------------------------------------------------------------
//   x    BF16 [M, K], or E4M3 [M, K] with a per-tensor F32 [1] scale_inv (the FP8 GEMM's A operand, as the
//        delayed / current recipes' producers write it). 1 <= M <= kGemvMaxRows.
//   W    BF16 [N, K], or E4M3 [N, K] with a per-tensor F32 [1] scale_inv (an Fp8View's row-wise copy, kPerTensor).
//        Pairs: BF16 x with BF16 or E4M3 W; E4M3 x with E4M3 W. Block-scaled weights are not supported (use gemm_fp8).
//   out  BF16 or F32 [M, N] (any row stride >= N, unit inner stride).
//   residual  optional, out's dtype and shape; it may be `out` itself (the residual stream: h += x W^T). Any other
//        overlap of out with x, W or residual is not allowed.
// Vector rules (tg::Error naming the rule otherwise; kernels::gemm takes any shape): x and W row-major with unit
// inner stride, 16-byte aligned data pointers and row strides that are multiples of 16 bytes, and K a multiple of
// 16 / sizeof(W element) (8 for BF16 W, 16 for E4M3 W) -- W is read in 16-byte vectors that never straddle a row.
//
// ---- Numerics (the contract) -------------------------------------------------------------------------------------
// x stays in its own format: a BF16 x is NOT quantized to E4M3 for E4M3 weights; W's codes are dequantized on the
// fly. So with BF16 x and E4M3 W the result is sum_k x_k * (q_k * w_scale_inv) -- deliberately not the FP8 GEMM's
// sum_k E4M3(x_k * x_scale) * ..., which also rounds x. (The decoder passes the FP8 GEMM's own E4M3 x when the
// site is FP8, so its numbers stay the FP8 forward's; see impl/generate/decoder.h.)
//   CUDA: every product x_k * q_k is exact in FP32 (at most 8 x 8 significant bits); each lane accumulates its
//   K / 32 products in FP32 (fmaf, ascending k within its 16-byte chunks, chunks lane, lane + 32, ...), a fixed
//   xor-butterfly sums the 32 lanes, then v = acc * ((alpha * x_scale_inv) * w_scale_inv) (FP32), + residual
//   (FP32), one rounding to out's dtype (RNE). One-column shapes with K >= 24576 (the K split, CUDA design below)
//   sum two K slices so and add the two sums in slice order. No atomics, no split-K across blocks: bitwise
//   reproducible for a given shape on a given GPU.
//   CPU twin (cpu::gemv): every x_k and w_k dequantized exactly in double (code * scale_inv), products accumulated
//   in DOUBLE in ascending k, v = alpha * acc + residual in double, one rounding (double -> float -> out dtype).
//   That is exactly cpu::gemm / cpu::gemm_fp8's arithmetic (with beta = 1 when residual == out), so on the CPU
//   backend the decoder's GEMV path gives the GEMM path's bits.
//   CUDA vs twin: the only differences are FP32 roundings. A lane sums at most L = ceil(K / (32 c)) * c products
//   (c = 8 BF16 / 16 E4M3 elements per chunk), the butterfly adds 5 levels, the scale product, the multiply and the
//   residual add 4 more, so to first order |v_gpu - v| <= (L + 9) * 2^-24 * (|alpha * scales| * sum_k |x_k w_k| +
//   |residual|); out's rounding may then differ by one ulp at a rounding boundary. kernels/tests/test_gemv_gpu.cpp
//   checks exactly that bound.
//   The tensor-core path (tuning::set_gemv_mma, below; E4M3 x with E4M3 W): the products are exact as above, but
//   the tensor core adds them: each mma.sync.m16n8k16 step adds 16 products (k from 4 lanes) to the running FP32
//   sum in one fused operation whose rounding NVIDIA does not specify (aligned to the largest term, truncated).
//   The model: at most one FP32 ulp (2^-23, truncation) of the running magnitude per step, plus at most 8 slice
//   additions and the 9 roundings above: |v_gpu - v| <= (ceil(K / 16) + 17) 2^-23 (|alpha * scales| sum_k |x_k
//   w_k| + |residual|) + out's ulp. Measured (H200, session 14, F32 out, K = 1040): the worst error was <= 9e-5 of
//   a 17-times looser bound (one ulp per term of each step), i.e. <= 1.5e-3 of this one. Deterministic (fixed
//   order), but not the CUDA-core kernel's bits.
//
// ---- CUDA design -------------------------------------------------------------------------------------------------
// One warp owns kCols (1, 2 or 4) adjacent output columns n and streams their W rows [n, 0 .. K) in 16-byte chunks:
// lane l takes chunks l, l + 32, ... and keeps 8 chunk loads (128 bytes) in flight per iteration (ld.global.cs:
// the weights are read once). Narrow outputs (N < 132 * 64: the 2b / 7b QKV, O and fc2 GEMMs) use one-column
// warps. One column's K is split over 2 warps of a block (sums added in a fixed order through shared memory) when
// K >= 24576 (the 7b fc2), else one warp per column: H200 session 8 (commit 2f59713, M = 1 E4M3), split 2 vs 1:
// 7b fc2 1x3072x24576 26.2 vs 28.3 us, 2b fc2 1x2048x16384 16.1 vs 15.9, slower on QKV / O (2b 1x2560x2048 8.46 vs
// 7.83, 7b 1x3072x4096 10.9 vs 10.5); split 4 never beat 2 (7b fc2 26.9). cuda::tuning::set_gemv_k_split overrides
// it. A pipelined loop (next weights loaded before this step's arithmetic) was slower on every shape (7b fc2 30.2 vs
// 28.3 us) and removed. At M = 1 the x elements of each chunk are loaded next to its W chunk, before any use.
// H200 (bench_gemm, M = 1, E4M3 x E4M3, one kernel timed alone): 2b fc1 72% of HBM, fc2 53%, lm_head 98%; 7b fc1
// 84%, fc2 70%, lm_head 99%; the small QKV / O GEMMs are 6.5-10 us of launch and ramp for 4-25 MB. x is read through the read-only L1 path (every warp of an SM reads the same x, a
// few KB to 48 KB at M = 1) and reused across the warp's kCols columns; the accumulators are kRows x kCols floats
// in registers (kRows = M rounded up to 1, 2, 4, 8, 16). 128-thread blocks, one warp per column group, no shared
// memory and no block synchronisation; the grid has ceil(N / kCols) warps (>= 15 warps per SM on every Gemma
// shape). Launch: argument checks, NVTX range, the given stream, TG_CHECK_LAUNCH. Nothing is allocated: capturable.
// Measured slower and removed (session 23): at M = 1 each warp pulling what its epilogue reads after the loop (the
// scales, its residual elements, the GeGLU's act scale, the QKV position and slot) into L1 right after the PDL wait
// with prefetch.global.L1: decode B1 tok/s 2b 644 vs 1010, 7b 249.5 vs 355.0 without (the instruction itself is that
// costly on the H200); loading those values into registers there instead cost 3-14 registers (5 instead of 6 blocks
// per SM for the one-column kernel, spills when capped).
// An L2 bulk prefetch of the weight rows before the PDL wait (griddepcontrol.wait) was measured 8% slower on the
// decode step and removed. So was a streaming path (session 15, da2f94d): one block per SM streaming its W rows
// through a 40-192 KB shared-memory ring of bulk copies (cp.async.bulk, one producer warp, 16 consumer warps), the
// stream started before the PDL wait: slower alone (H200, M = 1 E4M3: 2b fc1 30.1 vs 20.5 us, lm_head 188 vs 117)
// and in the step (decode B1 gemma-2b 681.6 vs 947.8 tok/s, gemma-7b 259.1 vs 348.8). So was a greedy-argmax
// epilogue for the B1 lm_head (session 22: each warp keyed its stored logits, max-reduced into 32 slots by atomics,
// and the sampler skipped its pass over the row): the lm_head's warps stream only 4-6 KB each, so any epilogue work
// stretches them; the 2b lm_head took 127-130 us instead of 118 while the sampler saved 3.6 us (decode B1 2b 1002.9 /
// 1010.8 tok/s vs 1009.2 / 1013.6 without it; 7b 351.9 / 350.0 vs 353.4 / 348.0).
// The tensor-core path (E4M3 x E4M3, M >= 2 by default: tuning::GemvMma): 256-thread blocks, each warp owns 8 output
// columns (the MMA's N) and a K slice; lane (g, t) streams 16 bytes of W row g per 64-element round (8 rounds of
// loads in flight) and the same bytes of x rows g and g + 8; every 4 bytes feed one mma.sync.m16n8k16 on F16 pairs
// (x as A, W as B), so the cost per W byte no longer grows with M (H200, 2b fc1 at M = 16: 24.3 us against the
// loop's 128.8). K is split over 1-8 warps of a block for >= 16 warps per SM, the slices added in a fixed order.
#pragma once

#include <cstdint>

#include "common/fp8_tensor.h"
#include "common/tensor.h"
#include "kernels/attention/attention.h"

namespace tg::kernels {

inline constexpr int64_t kGemvMaxRows = 16;

// One GEMV operand: BF16 data (scale_inv empty) or per-tensor E4M3 data with its F32 [1] scale_inv.
struct GemvOperand {
  TensorView data;
  TensorView scale_inv;

  static GemvOperand bf16(const TensorView& t) { return GemvOperand{t, TensorView{}}; }
  // The row-wise copy of a per-tensor FP8 tensor (tg::Error for block scaling or a missing row-wise copy).
  static GemvOperand fp8(const Fp8View& v);
};

struct GemvOptions {
  float alpha = 1.0f;
};

// out [M, N] = alpha * x [M, K] . w [N, K]^T (+ residual). See the contract above.
void gemv(const GemvOperand& x, const GemvOperand& w, const TensorView& out, const GemvOptions& opt = {},
          const TensorView& residual = {}, Stream stream = {});

// The RMSNorm -> E4M3 prologue of the one-row QKV + RoPE kernel (gemv_norm_qkv_rope: the batch-1 step's input
// RMSNorm fused in, one kernel boundary less): x is not read but computed as
//     kernels::rmsnorm_forward_fp8(h, weight, eps, x, rstd)
// would write it (the same E4M3 codes; norm.h's arithmetic, kernels/norm/norm_device.cuh), and the kernel then runs
// on it as on a given x. x: a per-tensor E4M3 Fp8View [1, K], row-wise only: scale read, scale_inv written with
// 1 / scale, amax (optional) max-reduced with max |V|; x.data gives the shape and is NOT written (nothing reads it
// in the decode step). rstd F32 [1] written. h BF16 [1, K] and weight BF16 [K], unit stride, 16-byte aligned; K a
// multiple of 16 and at most kGemvNormMaxK. CUDA: every block computes the codes into shared memory (every warp the
// sum of squares in the LANE ORDER, each thread 8-element chunks) while its first W loads are in flight, block 0
// writes rstd, scale_inv and the amax (a grid of several waves pays the prologue in every block: correct, slower).
// CPU twin: cpu::rmsnorm_forward_fp8 into a scratch copy of x, then the kernel's twin. The decoder fuses its QKV norm
// when the grid is one wave (gemv_norm_qkv_rope_one_wave below; TEGEMMA_DECODE_NORM_QKV forces it on / off,
// impl/generate/decoder.cpp). Measured slower and removed (gemv_norm_qkv_rope_one_wave below): the same prologue
// in the fc1 + GeGLU kernel (gemv_norm_geglu) and a persistent instance past one wave (grid capped at one wave).
inline constexpr int64_t kGemvNormMaxK = 4096;
struct GemvNorm {
  TensorView h;       // BF16 [1, K]: the residual stream
  TensorView weight;  // BF16 [K]: y = (h * rstd) * (1 + weight)
  float eps = 0.0f;
  TensorView rstd;  // F32 [1], written
  Fp8View x;        // the norm's per-tensor E4M3 output (see above)
};

// gemv_geglu: a one-row fc1 GEMV with the GeGLU -> E4M3 epilogue (the batch-1 decode step's fc1 + geglu_forward_fp8
// in one kernel, one kernel boundary less per layer):
//     act = geglu_forward_fp8(gemv(x, w))   with gemv's BF16 output, bit for bit on each backend
// x E4M3 [1, K] and w = fc1 = [gate; up] E4M3 [2F, K], both per-tensor (GemvOperand::fp8), the gemv vector rules;
// act a per-tensor E4M3 Fp8View [1, F], row-wise only: data written, scale read, scale_inv (optional) written with
// 1 / scale, amax (optional) max-reduced with max |V| (kernels/elementwise/fp8_out.h's contract). No BF16 fc1 is
// written. CUDA: the CUDA-core loop's M = 1 arithmetic without a K split (what gemv runs at M = 1 for K < 24576 under
// the default rules; the bitwise equality is with that path) with warp w owning gate row w and up row F + w, then V = BF16(BF16(gelu_tanh(gate)) * up)
// in the warp (kernels/activation's arithmetic) and one amax atomic per block. CPU twin: cpu::gemv into a BF16
// [1, 2F] buffer, then cpu::geglu_forward_fp8.
void gemv_geglu(const GemvOperand& x, const GemvOperand& w, const Fp8View& act, Stream stream = {});

// gemv_qkv_rope: a one-row fused-QKV GEMV with the RoPE + KV-cache epilogue (the batch-1 decode step's QKV projection
// and kv_cache_write_rope in one kernel, one kernel boundary less per layer):
//     qkv = gemv(x, w) (BF16 [1, (H + 2 Hkv) Dh], not written);
//     kv_cache_write_rope(k, v, slots, positions, inv_freq, cache, q, q_out, stream, table)   on qkv's q / k / v heads
// bit for bit on each backend (kernels/kv_cache/kv_cache.h has that op's contract: q_out [1, H, Dh] BF16 gets the
// rotated q; the cache row (slots[0], positions[0]) the rotated k and v, skipped when either is out of range). x and
// w E4M3 per-tensor, w's rows the q heads, then the k heads, then the v heads (Dh rows each), the gemv vector rules.
// CUDA: the CUDA-core loop's M = 1 arithmetic without a K split (as gemv_geglu) with warp w owning RoPE pair w (elements j and j + Dh / 2 of one head),
// the rotation and the cache write in the warp. CPU twin: cpu::gemv into a BF16 buffer, then cpu::kv_cache_write_rope.
void gemv_qkv_rope(const GemvOperand& x, const GemvOperand& w, const TensorView& slots, const TensorView& positions,
                   const TensorView& inv_freq, const KvCache& cache, const TensorView& q_out,
                   const TensorView& table = {}, Stream stream = {});
// ... with x = the RMSNorm prologue's (GemvNorm above).
void gemv_norm_qkv_rope(const GemvNorm& norm, const GemvOperand& w, const TensorView& slots,
                        const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                        const TensorView& q_out, const TensorView& table = {}, Stream stream = {});

// Whether gemv_norm_qkv_rope over a w of N rows runs as one resident wave on the current GPU (every block resident at
// once): the decoder's rule for fusing the norm, whose prologue every block repeats and so pays once per wave.
// H200, session 19 (decode B1 tok/s, delayed + FP8 head, three runs each): gemma-2b (N 2560, 320 blocks, one wave)
// 1005.6 / 1004.9 / 1004.3 fused vs 975.3 / 974.9 / 976.4; gemma-7b (N 12288, 1536 blocks, several waves) 347.9 /
// 347.9 / 347.7 vs 355.2 / 355.1 / 355.1. The fc1 + GeGLU kernel's grid is several waves on both (fused 899.6 vs
// 975.3 and 331.6 vs 355.2). Session 20 (the default 1004.3 / 354.4): a persistent instance past one wave (grid capped
// at one resident wave, one prologue per resident block, several blocks of work each) lost on the 7b QKV (351.1),
// the fc1 norm with it lost again (982.1 / 347.4, twice); both removed. CPU: true (the twin has no waves).
bool gemv_norm_qkv_rope_one_wave(int64_t n, Device device);

namespace cpu {
void gemv(const GemvOperand& x, const GemvOperand& w, const TensorView& out, const GemvOptions& opt,
          const TensorView& residual = {});
void gemv_geglu(const GemvOperand& x, const GemvOperand& w, const Fp8View& act);
void gemv_qkv_rope(const GemvOperand& x, const GemvOperand& w, const TensorView& slots, const TensorView& positions,
                   const TensorView& inv_freq, const KvCache& cache, const TensorView& q_out, const TensorView& table);
// The GemvNorm prologue's twin: cpu::rmsnorm_forward_fp8 into a scratch copy of norm.x; returns that operand (its
// data is the scratch, kept alive by `scratch`).
GemvOperand gemv_norm(const GemvNorm& norm, Tensor& scratch);
}
namespace cuda {
void gemv(const GemvOperand& x, const GemvOperand& w, const TensorView& out, const GemvOptions& opt,
          const TensorView& residual, Stream stream);
void gemv_geglu(const GemvOperand& x, const GemvOperand& w, const Fp8View& act, Stream stream);
void gemv_qkv_rope(const GemvOperand& x, const GemvOperand& w, const TensorView& slots, const TensorView& positions,
                   const TensorView& inv_freq, const KvCache& cache, const TensorView& q_out, const TensorView& table,
                   Stream stream);
void gemv_norm_qkv_rope(const GemvNorm& norm, const GemvOperand& w, const TensorView& slots,
                        const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                        const TensorView& q_out, const TensorView& table, Stream stream);
bool gemv_norm_qkv_rope_one_wave(int64_t n);

// Measurement knob: the warps per column (K split) of the one-column shapes (N < 132 x 64: QKV, O, fc2), 1 (never
// split), 2 or 4, or 0 for the default rule (2 when K >= 24576, else 1; see the CUDA design above). Starts from
// TEGEMMA_GEMV_KSPLIT (the decode A/B runs); process-wide. A split changes the summation order (the slices' sums
// are added in slice order), so results differ from the unsplit kernel within the contract's bound.
namespace tuning {
void set_gemv_k_split(int split);
int gemv_k_split();
// RoPE pairs per warp of the QKV + RoPE kernel (gemv_qkv_rope, gemv_norm_qkv_rope): 1 or 2, or 0 for the rule (two
// when one pair per warp would take more than one resident wave: gemma-7b on the H200; gemv.cu has the numbers).
// The same bits either way (each column's sum is unchanged). Starts from TEGEMMA_GEMV_QKV_PAIRS; process-wide.
void set_gemv_qkv_pairs(int pairs);
int gemv_qkv_pairs();
// Which kernel takes E4M3 x with E4M3 W: the tensor-core path (mma.sync m16n8k16 on the codes as F16 pairs, 8
// output columns per warp, ~25 instructions per 512 W bytes against the CUDA-core loop's ~65-83) or the CUDA-core
// loop. kRule (default): the tensor cores for M >= 2, the loop at M = 1 (gemv.cu has the measurements);
// kAlways / kNever for the A/B runs and the tests. Starts from TEGEMMA_GEMV_MMA=rule|always|never; process-wide.
enum class GemvMma : int { kRule = 0, kAlways = 1, kNever = 2 };
void set_gemv_mma(GemvMma mode);
GemvMma gemv_mma();
}  // namespace tuning
// Whether gemv runs x [m, K] . W [N, K]^T of these dtypes on the tensor-core path under the current setting.
bool gemv_takes_mma(DType x, DType w, int64_t m);
// Whether a CUDA-core GEMV kernel (every entry point above) of `blocks` blocks launched now from this thread triggers
// its programmatic dependents at the end of each block (the default, TEGEMMA_GEMV_LATE_TRIGGER_BLOCKS) rather than
// right after its wait (inside a kernels::EarlyTriggerScope). The tensor-core path always triggers after its wait.
bool gemv_triggers_late(int64_t blocks);
}

namespace detail {
struct GemvDims {
  int64_t m = 0, n = 0, k = 0;
  int64_t ldx = 0, ldw = 0, ldo = 0, ldr = 0;  // row strides in elements (ldr = 0 without residual)
};
// The checks every implementation runs (gemv.cpp). Throws tg::Error naming the operand and the rule.
GemvDims check_gemv(const GemvOperand& x, const GemvOperand& w, const TensorView& out, const TensorView& residual);
// gemv_geglu's checks (gemv's rules for x and W, both E4M3, M = 1, an even N; act as the contract says); n = 2F.
GemvDims check_gemv_geglu(const GemvOperand& x, const GemvOperand& w, const Fp8View& act);
// gemv_qkv_rope's checks: gemv's rules for x [1, K] and w [(H + 2 Hkv) Dh, K] (both E4M3), kv_cache_write_rope's for
// the rest (H from q_out [1, H, Dh], Hkv and Dh from the cache). table_positions: the table's P (0 without one).
struct GemvQkvRopeDims {
  GemvDims gemv;
  int64_t heads = 0, kv_heads = 0, head_dim = 0, cache_b = 0, max_seq = 0, table_positions = 0;
  bool fp8 = false, per_head_scale = false;
};
GemvQkvRopeDims check_gemv_qkv_rope(const GemvOperand& x, const GemvOperand& w, const TensorView& slots,
                                    const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                                    const TensorView& q_out, const TensorView& table);
// GemvNorm's checks (the contract above) against K; returns the x operand it stands for (norm.x's row-wise copy).
GemvOperand check_gemv_norm(const GemvNorm& norm, const char* op);
// An operand's format: BF16 without a scale, or E4M3 with an F32 [1] scale_inv on the operand's device.
void check_gemv_operand(const GemvOperand& o, const char* name);
}  // namespace detail

}  // namespace tg::kernels
