// Block-scale tensor layouts of Float8BlockScaling (DeepSeek-V3 style, TE's NVTE_BLOCK_SCALING_1D / _2D),
// defined ONCE for the block quantizer, the dequantizer, their CPU twins and the block-scaled GEMM wrapper.
//
// ---- The cuBLASLt contract this layout follows --------------------------------------------------------------
// cuBLASLt >= 12.9 on Hopper (sm_90), CUBLASLT_MATMUL_DESC_{A,B}_SCALE_MODE set to
//   CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F    (kBlock1x128:   "a dedicated CUDA_R_32F scaling factor for each
//                                                128-element block in the innermost dimension")
//   CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F (kBlock128x128: "... for each 128x128-element block")
// and CUBLASLT_MATMUL_DESC_{A,B}_SCALE_POINTER pointing at the scale tensors below. The values stored are the
// DEQUANTIZATION factors scale_inv = 1 / scale (what TE passes as A/B scale pointers); the GEMM computes
// sum_k (q_a * sa) (q_b * sb). Block-scaled FP8 is TN only: every FP8 operand is stored row-major [m, k] with
// k (the reduction dimension) contiguous, i.e. cuBLASLt's column-major k x m matrix with ld = k, and the
// 128-blocks of VEC128 run along k.
//
// For an operand stored row-major [m, k] ("stored" = the copy as it lies in memory):
//   kBlock1x128   one scale per 1x128 strip: stored row i, columns [128 j, 128 j + 128).
//                 Scale tensor F32 [ceil(k / 128), ld], ld = round_up(m, 4), "outer-dim-major" (m contiguous):
//                   scale_inv[j * ld + i]
//   kBlock128x128 one scale per 128x128 tile: stored rows [128 i, ..), columns [128 j, ..).
//                 Scale tensor F32 [ceil(m / 128), ld], ld = round_up(ceil(k / 128), 4), row-major over tiles:
//                   scale_inv[i * ld + j]
// The padding to a multiple of 4 floats makes every scale row 16-byte aligned, as cuBLASLt needs ("16-byte aligned
// strides" in PyTorch's message). Padding entries are never read by the GEMM for in-range blocks; the quantizer
// never writes them (make_block_fp8_tensor initialises the whole scale tensor to 1.0).
//
// Row-wise and column-wise copies of a high-precision X [rows, cols] (both quantized from X; see quantize.h):
//   row-wise copy     stored X            -> operand [m = rows, k = cols]
//   column-wise copy  stored X^T [cols, rows] -> operand [m = cols, k = rows]
//     kBlock1x128: the strips of X^T are 128x1 blocks of X (128 consecutive rows of one column);
//     kBlock128x128: tile (j, i) of X^T is tile (i, j) of X, so the column-wise data is the transposed row-wise
//                    data and its scales are the transposed row-wise scales (same values).
//
// Sources (read, not copied):
//   - NVIDIA TransformerEngine: Float8BlockQuantizer.get_scale_shape (transformer_engine/pytorch/tensor/
//     float8_blockwise_tensor.py): 1D row-wise (ceil(K/128), round_up(M, 4)), column-wise (ceil(M/128),
//     round_up(K, 4)); 2D row-wise (ceil(M/128), round_up(ceil(K/128), 4)), column-wise (ceil(K/128),
//     round_up(ceil(M/128), 4)) for a tensor flattened to [M, K]; and the GEMM_READY scale strides of
//     transformer_engine/common/transpose/quantize_transpose_vector_blockwise.cu (scale_stride_x = round_up(M, 4),
//     scale_stride_y = 1) and quantize_transpose_square_blockwise.cu.
//   - PyTorch _scaled_mm (aten/src/ATen/native/cuda/ScaledBlas.cpp, which maps BlockWise1x128 / BlockWise128x128
//     to these two cuBLASLt modes in aten/src/ATen/cuda/CUDABlas.cpp): is_blockwise_1x128_scaling wants scale_a
//     (M, ceil(K/128)) with strides (1, M) ("outer-dim-major"); is_blockwise_128x128_scaling wants
//     (ceil(M/128), ceil(K/128)) with row stride round_up(ceil(K/128), 4) ("near-inner-dim-major (with 16-byte
//     aligned strides)"). The two agree with TE's padded layout whenever M % 4 == 0, which every GEMM operand
//     satisfies (TE's GEMM requires m % 8 == 0 for block-scaled operands).
//   - cublasLt.h (CUDA 13.0) for the enum semantics quoted above.
//
// ---- Shape requirements ----------------------------------------------------------------------------------------
// The quantizer accepts ANY [rows, cols] (partial edge blocks: the amax runs over the elements that exist, as
// TE's unaligned kernels do). A tensor that goes into the block-scaled GEMM must satisfy
// check_block_gemm_operand(): Float8BlockScaling's tensor rule (TE: last dim % 128 == 0 and the product of the
// other dims % 128 == 0), so every block is full, every FP8 leading dimension is a multiple of 16 and the scale
// padding is never needed (128 % 4 == 0). Gemma's training shapes (T = B*S, D, F multiples of 128) pass.
#pragma once

#include <cstdint>

#include "common/check.h"
#include "common/fp8_tensor.h"
#include "common/tensor.h"

#if defined(__CUDACC__)
#define TG_BLOCK_LAYOUT_FN __host__ __device__ __forceinline__
#else
#define TG_BLOCK_LAYOUT_FN inline
#endif

namespace tg::kernels {

inline constexpr int64_t kBlockLen = 128;       // Float8BlockQuantizer.block_len
inline constexpr int64_t kBlockScaleAlign = 4;  // scale rows padded to 4 floats = 16 bytes

TG_BLOCK_LAYOUT_FN int64_t block_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
TG_BLOCK_LAYOUT_FN int64_t block_round_up(int64_t a, int64_t b) { return block_ceil_div(a, b) * b; }

// ---- Layout of the scale tensor of one operand stored row-major [m, k] ----------------------------------------
// Leading dimension (the padded, contiguous dimension) of the scale tensor.
TG_BLOCK_LAYOUT_FN int64_t block_scale_ld(ScalingMode mode, int64_t m, int64_t k) {
  return mode == ScalingMode::kBlock1x128 ? block_round_up(m, kBlockScaleAlign)
                                          : block_round_up(block_ceil_div(k, kBlockLen), kBlockScaleAlign);
}
// Outer dimension of the scale tensor (its shape is [outer, ld]).
TG_BLOCK_LAYOUT_FN int64_t block_scale_outer(ScalingMode mode, int64_t m, int64_t k) {
  return mode == ScalingMode::kBlock1x128 ? block_ceil_div(k, kBlockLen) : block_ceil_div(m, kBlockLen);
}
// Offset of the scale of stored element (i, j), 0 <= i < m, 0 <= j < k.
TG_BLOCK_LAYOUT_FN int64_t block_scale_offset(ScalingMode mode, int64_t m, int64_t k, int64_t i, int64_t j) {
  const int64_t ld = block_scale_ld(mode, m, k);
  return mode == ScalingMode::kBlock1x128 ? (j / kBlockLen) * ld + i : (i / kBlockLen) * ld + j / kBlockLen;
}

// ---- The same in the coordinates of the high-precision tensor X [rows, cols] ------------------------------------
// The row-wise copy is the operand [rows, cols]; the column-wise copy is the operand [cols, rows].
TG_BLOCK_LAYOUT_FN int64_t block_operand_m(int64_t rows, int64_t cols, bool columnwise) {
  return columnwise ? cols : rows;
}
TG_BLOCK_LAYOUT_FN int64_t block_operand_k(int64_t rows, int64_t cols, bool columnwise) {
  return columnwise ? rows : cols;
}
// Offset, in the row-wise (columnwise = false) or column-wise scale tensor, of the scale of X's element (r, c).
TG_BLOCK_LAYOUT_FN int64_t block_scale_index(ScalingMode mode, int64_t rows, int64_t cols, bool columnwise, int64_t r,
                                             int64_t c) {
  return columnwise ? block_scale_offset(mode, cols, rows, c, r) : block_scale_offset(mode, rows, cols, r, c);
}

// Shape of the row-wise or column-wise scale tensor of X [rows, cols].
inline Shape block_scale_shape(ScalingMode mode, int64_t rows, int64_t cols, bool columnwise) {
  TG_CHECK(mode == ScalingMode::kBlock1x128 || mode == ScalingMode::kBlock128x128,
           "block_scale_shape: expected a block scaling mode, got ", scaling_mode_name(mode));
  const int64_t m = block_operand_m(rows, cols, columnwise), k = block_operand_k(rows, cols, columnwise);
  return Shape{block_scale_outer(mode, m, k), block_scale_ld(mode, m, k)};
}

// Allocates a block-scaled FP8 tensor for X [rows, cols]: data [rows, cols] (if rowwise), its transposed copy
// [cols, rows] (if columnwise), and their F32 scale_inv tensors in the layout above, initialised to 1.0.
inline Fp8Tensor make_block_fp8_tensor(ScalingMode mode, DType fp8, int64_t rows, int64_t cols, bool rowwise,
                                       bool columnwise, Device device) {
  TG_CHECK(mode == ScalingMode::kBlock1x128 || mode == ScalingMode::kBlock128x128,
           "make_block_fp8_tensor: expected kBlock1x128 or kBlock128x128, got ", scaling_mode_name(mode));
  return Fp8Tensor::with_layout(mode, fp8, rows, cols, rowwise, columnwise, block_scale_shape(mode, rows, cols, false),
                                block_scale_shape(mode, rows, cols, true), device);
}

// Throws unless the scale tensors of a block-scaled Fp8View have exactly this layout (F32, contiguous, shape).
inline void check_block_scales(const Fp8View& v, const char* what) {
  TG_CHECK(v.mode == ScalingMode::kBlock1x128 || v.mode == ScalingMode::kBlock128x128, what,
           ": expected a block scaling mode (kBlock1x128 or kBlock128x128), got ", scaling_mode_name(v.mode));
  const int64_t rows = v.rows(), cols = v.cols();
  if (v.has_rowwise()) {
    TG_CHECK(!v.scale_inv.empty(), what, ": row-wise data without scale_inv");
    check_dtype(v.scale_inv, DType::F32, what);
    check_contiguous(v.scale_inv, what);
    check_shape(v.scale_inv, block_scale_shape(v.mode, rows, cols, false), what);
  }
  if (v.has_columnwise()) {
    TG_CHECK(!v.columnwise_scale_inv.empty(), what, ": column-wise data without columnwise_scale_inv");
    check_dtype(v.columnwise_scale_inv, DType::F32, what);
    check_contiguous(v.columnwise_scale_inv, what);
    check_shape(v.columnwise_scale_inv, block_scale_shape(v.mode, rows, cols, true), what);
  }
}

// Float8BlockScaling's tensor rule for GEMM operands: X [rows, cols] with rows % 128 == 0 and cols % 128 == 0
// (TE: "last dim divisible by 128, product of the other dims divisible by 128"). Callers flatten to 2-D first.
inline void check_block_gemm_operand(int64_t rows, int64_t cols, const char* what) {
  TG_CHECK(cols % kBlockLen == 0, what, ": block-scaled FP8 needs the last dimension to be a multiple of ", kBlockLen,
           ", got [", rows, ", ", cols, "]");
  TG_CHECK(rows % kBlockLen == 0, what,
           ": block-scaled FP8 needs the product of the leading dimensions to be a multiple of ", kBlockLen, ", got [",
           rows, ", ", cols, "]");
}

}  // namespace tg::kernels
