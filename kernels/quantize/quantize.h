// FP8 quantization: per-tensor cast (+ fused transpose, + amax), block quantization (Float8BlockScaling 1x128 /
// 128x128), standalone amax, dequantization. CPU twins (the golden, simple loops) and CUDA kernels share ONE
// contract, bit for bit. Semantics are TE's (docs/transformer-engine.md section 2); deliberate differences are
// marked "Differs from TE".
//
// Common rules
//   - x is a contiguous 2-D view [rows, cols] (callers flatten leading dims) of F32, BF16 or F16.
//   - Quantized value of x under scale s: q = satfinite_rne(fl32(x * s)), the product rounded to FP32 (RN), then
//     rounded to E4M3/E5M2 to nearest even, saturating to the finite max (+-inf -> +-max), NaN -> NaN (0x7F), as
//     common/numeric.h (cvt.rn.satfinite on the device).
//   - amax of a set of values = max |x|, NaN-propagating: any NaN gives the canonical NaN 0x7FFFFFFF; an inf gives
//     inf. Differs from TE, whose fmaxf-based reductions silently drop NaN: the recipe must see a NaN.
//   - scale_inv = 1 / scale, an IEEE round-to-nearest division (scale_math.h scale_reciprocal).
//   - The column-wise copy is the transpose [cols, rows] that TN-only Hopper FP8 GEMMs need for dgrad/wgrad.
//
// quantize, per-tensor (out.mode == kPerTensor; DelayedScaling and Float8CurrentScaling):
//   reads s = out.scale[0] (device scalar, F32[1]); writes out.data[r, c] = q(x[r, c]) if row-wise data is
//   present and out.columnwise_data[c, r] = q(x[r, c]) if column-wise data is present, both in ONE pass over x;
//   writes out.scale_inv[0] = 1 / s (and out.columnwise_scale_inv[0] when it is a different buffer); if out.amax
//   is present, max-reduces amax(x) into out.amax[0] (an integer atomic max on the float bits: the old value is
//   kept if larger, NaN wins). `block` options are ignored.
//
// quantize, block (out.mode == kBlock1x128 or kBlock128x128; Float8BlockScaling). Scale tensors in the layout of
//   kernels/quantize/block_layout.h (cuBLASLt VEC128_32F / BLK128x128_32F). Per block b of x:
//     s_b = scale_from_amax(amax_b, {fp8_max, block.amax_epsilon, block.power_2_scale, value_for_inf})
//   (scale_math.h: amax < eps -> eps; amax 0 / inf / NaN -> 1; fp8_max / amax rounded to nearest; overflow to inf
//   -> value_for_inf = the largest finite value of x's dtype, as TE's compute_scale_from_types; power of two: the
//   mantissa is cleared, rounding DOWN). Edge blocks cover only the elements that exist. Every element of a block
//   is quantized with s_b and the block's scale_inv = 1 / s_b is stored.
//     kBlock1x128   row-wise copy: 1x128 strips along each row of x. Column-wise copy: quantized from x
//                   independently (NOT the transposed row-wise data) in 1x128 strips along the rows of x^T, i.e.
//                   128x1 blocks of x, each with its own scale.
//     kBlock128x128 one scale per 128x128 tile; the column-wise copy is the transposed row-wise data and its
//                   scales are the transposed row-wise scales.
//   out.scale and out.amax are not used.
//
// compute_amax: amax[0] = amax(x). The op zeroes amax first (it overwrites, it does not accumulate).
//
// dequantize: y = round_to(out.dtype, fl32(decode(q) * scale_inv)) for the row-wise copy (columnwise = false,
//   y [rows, cols]) or the column-wise copy (columnwise = true, y [cols, rows], the copy as stored), any mode.
//   y is F32, BF16 or F16. For tests and the CPU emulation of FP8 GEMMs.
#pragma once

#include "common/fp8_tensor.h"
#include "common/tensor.h"

namespace tg::kernels {

// Options of block quantization; the defaults are Float8BlockScaling's (NVTE_FP8_BLOCK_SCALING_FP32_SCALES unset).
struct BlockQuantOptions {
  bool power_2_scale = true;  // round each block scale down to a power of two; false: plain FP32 scales
  float amax_epsilon = 0.0f;  // floor for each block amax
};

void quantize(const TensorView& x, const Fp8View& out, const BlockQuantOptions& block = {}, Stream stream = {});
void compute_amax(const TensorView& x, const TensorView& amax, Stream stream = {});
void dequantize(const Fp8View& in, bool columnwise, const TensorView& y, Stream stream = {});

namespace cpu {
void quantize(const TensorView& x, const Fp8View& out, const BlockQuantOptions& block = {});
void compute_amax(const TensorView& x, const TensorView& amax);
void dequantize(const Fp8View& in, bool columnwise, const TensorView& y);
}  // namespace cpu

namespace cuda {
void quantize(const TensorView& x, const Fp8View& out, const BlockQuantOptions& block, Stream stream);
void compute_amax(const TensorView& x, const TensorView& amax, Stream stream);
void dequantize(const Fp8View& in, bool columnwise, const TensorView& y, Stream stream);
// Tuning knob for benchmarks and tests (not for model code): the tile height of the fused cast+transpose kernel,
// 128 or 256 rows, or 0 = by size (the default): 128 below 2^26 elements, where the extra blocks fill the
// last wave (H200 at 8192x3072: 81.9% vs 79.7% of HBM for block 1x128), else 256 (8192x24576: 93.5% vs 92.5%).
// Results are identical; only speed differs.
namespace tuning {
void set_cast_transpose_tile_rows(int rows);
int cast_transpose_tile_rows();
// compute_amax's grid: 0 = the default, 2 blocks of 256 threads per SM compiled for 2 resident blocks (since session
// 21); 1 or 3 = the kernel compiled for 1 (80 registers, 3 resident per SM) capped at 1 / 3 blocks per SM (3: its
// whole wave, the default of sessions 9-20); 4 = compiled for 4 (64 registers). Same result (a max is
// order-independent); only speed differs.
void set_amax_blocks_per_sm(int blocks);
int amax_blocks_per_sm();
// compute_amax's end-of-block atomic: false (the default since session 21) issues it unconditionally; true reads the
// running amax first and skips the atomic when it would not raise it (one more L2 round trip on every block's path;
// docs/amax_analysis.md, E3). Same result; only speed differs.
void set_amax_filter(bool on);
bool amax_filter();
// compute_amax's zeroing of its output before the kernel: false (the default) a 4-byte cudaMemsetAsync; true the
// driver's cuStreamWriteValue32 (a stream memory operation, no memset launch; the memset where the driver lacks it).
// Same result; only speed differs: on the H200 (session 22, medians of 5 interleaved runs) the stream write was
// 0.9-1.8 us slower than the memset (8192x3072 17.40 vs 15.60 us), so the memset stays the default.
void set_amax_zero_memop(bool on);
bool amax_zero_memop();
}  // namespace tuning
}  // namespace cuda

// Argument checks shared by the CPU twin and the CUDA launchers (same contract, same messages).
namespace detail {
void check_quantize_args(const TensorView& x, const Fp8View& out, Device device, const char* who);
void check_amax_args(const TensorView& x, const TensorView& amax, Device device, const char* who);
void check_dequantize_args(const Fp8View& in, bool columnwise, const TensorView& y, Device device, const char* who);
// The largest finite value of x's dtype as float: block scaling's value_for_inf.
float input_dtype_max(DType t);
}  // namespace detail

}  // namespace tg::kernels
