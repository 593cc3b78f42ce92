// gemm dispatcher and the argument checks shared by the CPU twin and the cuBLASLt wrapper.
#include "kernels/gemm/gemm.h"

#include <atomic>
#include <cstdint>

#include "kernels/quantize/block_layout.h"

namespace tg::kernels {

namespace {

std::atomic<bool> g_deterministic{false};

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// A row-major 2-D matrix with unit inner stride and a row stride that covers the row.
void check_matrix(const TensorView& t, const char* op, const char* name) {
  TG_CHECK(!t.empty(), op, ": ", name, " is empty (null data)");
  TG_CHECK(t.ndim() == 2, op, ": ", name, " must be 2-D, got ", t.describe());
  TG_CHECK(t.strides[1] == 1, op, ": ", name, " must have unit inner stride (row-major), got strides ", t.strides,
           " for ", t.describe());
  TG_CHECK(t.strides[0] >= t.shape[1] && t.strides[0] >= 1, op, ": ", name, " row stride ", t.strides[0],
           " is shorter than its rows (", t.shape[1], ") in ", t.describe());
}

void check_scalar_f32(const TensorView& t, Device device, const char* op, const char* name) {
  TG_CHECK(!t.empty(), op, ": ", name, " is missing (expected an F32 [1] tensor)");
  TG_CHECK(t.dtype == DType::F32 && t.numel() == 1, op, ": ", name, " must be F32 with one element, got ",
           t.describe());
  TG_CHECK(t.device == device, op, ": ", name, " is on ", t.device, ", the operands on ", device);
  TG_CHECK(aligned16(t.data), op, ": ", name, " pointer ", t.data,
           " is not 16-byte aligned; cuBLASLt rejects FP8 scale pointers that share an allocation at a 4-byte "
           "offset (docs/gpu-machine.md): give each scale its own allocation or a 16-byte slot");
}

// A block-scaled operand's scale_inv: the layout of kernels/quantize/block_layout.h for the stored [m, k].
void check_block_operand_scales(const Fp8View& t, Device device, const char* name) {
  Fp8View rowwise_only = t;  // as_columnwise() views carry no column-wise copy; plain views may
  rowwise_only.columnwise_data = {};
  rowwise_only.columnwise_scale_inv = {};
  check_block_scales(rowwise_only, name);
  TG_CHECK(t.scale_inv.device == device, name, ": scale_inv is on ", t.scale_inv.device, ", the operands on ",
           device);
  TG_CHECK(aligned16(t.scale_inv.data), name, ": scale_inv pointer must be 16-byte aligned");
}

// Shape/stride agreement of a * b^T -> out (a stored [K, M] if trans_a, b stored [K, N] if trans_b).
detail::GemmDims check_dims(const TensorView& a, const TensorView& b, const TensorView& out, const char* op,
                            bool trans_a = false, bool trans_b = false) {
  check_matrix(a, op, "A");
  check_matrix(b, op, "B");
  check_matrix(out, op, "out");
  TG_CHECK(a.device == b.device && a.device == out.device, op, ": A, B and out must be on one device, got A on ",
           a.device, ", B on ", b.device, ", out on ", out.device);
  detail::GemmDims d;
  d.m = a.shape[trans_a ? 1 : 0];
  d.k = a.shape[trans_a ? 0 : 1];
  d.n = b.shape[trans_b ? 1 : 0];
  TG_CHECK(b.shape[trans_b ? 0 : 1] == d.k, op, ": A is ", trans_a ? "[K, M] (transpose_a)" : "[M, K]", " = ",
           a.shape, " and B must be ", trans_b ? "[K, N] (transpose_b)" : "[N, K]", " with the same K, got B ",
           b.shape, " (out = A * B^T)");
  TG_CHECK(out.shape[0] == d.m && out.shape[1] == d.n, op, ": out must be [M, N] = [", d.m, ", ", d.n, "], got ",
           out.shape);
  TG_CHECK(d.m >= 1 && d.n >= 1 && d.k >= 1, op, ": empty product [M, N, K] = [", d.m, ", ", d.n, ", ", d.k,
           "]; every dimension must be >= 1");
  d.lda = a.strides[0];
  d.ldb = b.strides[0];
  d.ldd = out.strides[0];
  return d;
}

}  // namespace

void set_gemm_deterministic(bool on) { g_deterministic.store(on); }
bool gemm_deterministic() { return g_deterministic.load(); }

Fp8View as_columnwise(const Fp8View& t) {
  TG_CHECK(t.has_columnwise(), "as_columnwise: the FP8 tensor has no column-wise (transposed) copy "
                               "(missing column-wise usage); quantize it with columnwise = true");
  Fp8View v;
  v.mode = t.mode;
  v.data = t.columnwise_data;
  v.scale_inv = t.columnwise_scale_inv;
  return v;
}

namespace detail {

GemmDims check_gemm(const TensorView& a, const TensorView& b, const TensorView& out, const GemmOptions& opt) {
  const GemmDims d = check_dims(a, b, out, "gemm", opt.transpose_a, opt.transpose_b);
  check_dtype(a, DType::BF16, "gemm(A)");
  check_dtype(b, DType::BF16, "gemm(B)");
  TG_CHECK(out.dtype == DType::BF16 || out.dtype == DType::F32, "gemm: out must be BF16 or F32, got ", out.dtype);
  return d;
}

GemmDims check_gemm_fp8(const Fp8View& a, const Fp8View& b, const TensorView& out, const GemmOptions& opt,
                        const TensorView& out_amax, const TensorView& out_scale) {
  const char* op = "gemm_fp8";
  TG_CHECK(!opt.transpose_a && !opt.transpose_b, op, ": FP8 GEMMs are TN only (Hopper); transpose_a / transpose_b ",
           "are for BF16 gemm: pass as_columnwise(...) copies instead");
  TG_CHECK(a.has_rowwise(), op, ": A has no row-wise data; pass as_columnwise(A) to use its transposed copy");
  TG_CHECK(b.has_rowwise(), op, ": B has no row-wise data; pass as_columnwise(B) to use its transposed copy");
  const GemmDims d = check_dims(a.data, b.data, out, op);
  const DType ta = a.data.dtype, tb = b.data.dtype;
  TG_CHECK(is_fp8(ta), op, ": A must be F8_E4M3 or F8_E5M2, got ", ta);
  TG_CHECK(is_fp8(tb), op, ": B must be F8_E4M3 or F8_E5M2, got ", tb);
  TG_CHECK(!(ta == DType::E5M2 && tb == DType::E5M2), op,
           ": E5M2 x E5M2 is not supported (cuBLASLt FP8 GEMMs need at least one E4M3 operand)");
  TG_CHECK(out.dtype == DType::BF16 || out.dtype == DType::F32 || is_fp8(out.dtype), op,
           ": out must be BF16, F32, F8_E4M3 or F8_E5M2, got ", out.dtype);
  TG_CHECK(!(out.dtype == DType::E5M2 && ta == DType::E4M3 && tb == DType::E4M3), op,
           ": an F8_E5M2 out needs an E5M2 operand (cuBLASLt: E4M3 x E4M3 -> BF16, F32 or E4M3)");

  // cuBLASLt FP8: 16-byte aligned pointers and leading dimensions.
  TG_CHECK(d.k % 16 == 0, op, ": K = ", d.k, " must be a multiple of 16 for FP8 GEMMs (cuBLASLt needs 16-byte "
           "aligned leading dimensions); pad K to a multiple of 16");
  TG_CHECK(d.lda % 16 == 0, op, ": A's row stride ", d.lda, " must be a multiple of 16 (FP8 leading dimension)");
  TG_CHECK(d.ldb % 16 == 0, op, ": B's row stride ", d.ldb, " must be a multiple of 16 (FP8 leading dimension)");
  const int64_t out_row_bytes = d.ldd * static_cast<int64_t>(dtype_size(out.dtype));
  TG_CHECK(out_row_bytes % 16 == 0, op, ": out's row stride ", d.ldd, " x ", dtype_size(out.dtype),
           " bytes must be a multiple of 16 bytes for FP8 GEMMs (N % ", 16 / dtype_size(out.dtype),
           " == 0 for ", out.dtype, " out)");
  TG_CHECK(aligned16(a.data.data), op, ": A's data pointer must be 16-byte aligned");
  TG_CHECK(aligned16(b.data.data), op, ": B's data pointer must be 16-byte aligned");
  TG_CHECK(aligned16(out.data), op, ": out's data pointer must be 16-byte aligned");

  const Device dev = out.device;
  const bool block_a = a.mode != ScalingMode::kPerTensor, block_b = b.mode != ScalingMode::kPerTensor;
  TG_CHECK(block_a == block_b, op, ": A is ", scaling_mode_name(a.mode), " and B is ", scaling_mode_name(b.mode),
           "; per-tensor and block scaling cannot be mixed in one GEMM");
  if (!block_a) {
    check_scalar_f32(a.scale_inv, dev, op, "A scale_inv");
    check_scalar_f32(b.scale_inv, dev, op, "B scale_inv");
  } else {
    TG_CHECK(!(a.mode == ScalingMode::kBlock128x128 && b.mode == ScalingMode::kBlock128x128), op,
             ": both operands are 128x128 block-scaled; at most one may be (use 1x128 for activations and "
             "gradients)");
    TG_CHECK(opt.split_accumulate, op,
             ": block-scaled FP8 GEMMs need split accumulation (cuBLASLt has no fast-accumulation block kernel)");
    TG_CHECK(out.dtype == DType::BF16 || out.dtype == DType::F32, op,
             ": block-scaled FP8 GEMMs write BF16 or F32, got ", out.dtype);
    TG_CHECK(d.m % 8 == 0, op, ": block-scaled FP8 GEMMs need M % 8 == 0, got M = ", d.m);
    TG_CHECK(d.n % 8 == 0, op, ": block-scaled FP8 GEMMs need N % 8 == 0, got N = ", d.n);
    TG_CHECK(d.k % kBlockLen == 0, op, ": block-scaled FP8 GEMMs need K % ", kBlockLen,
             " == 0 (every 1x128 / 128x128 block full; kernels/quantize/block_layout.h), got K = ", d.k);
    check_contiguous(a.data, "gemm_fp8(A, block-scaled)");
    check_contiguous(b.data, "gemm_fp8(B, block-scaled)");
    check_block_operand_scales(a, dev, "gemm_fp8(A)");
    check_block_operand_scales(b, dev, "gemm_fp8(B)");
  }

  if (is_fp8(out.dtype)) {
    check_scalar_f32(out_scale, dev, op, "out_scale (the FP8 output's quantization scale)");
    if (!out_amax.empty()) check_scalar_f32(out_amax, dev, op, "out_amax");
    TG_CHECK(opt.beta == 0.0f, op, ": an FP8 out cannot be accumulated into (beta must be 0, got ", opt.beta, ")");
  } else {
    TG_CHECK(out_scale.empty(), op, ": out_scale is only for an FP8 out (out is ", out.dtype, ")");
    TG_CHECK(out_amax.empty(), op, ": out_amax is only computed for an FP8 out (cuBLASLt does not compute the "
             "amax of a ", out.dtype, " out)");
  }
  return d;
}

}  // namespace detail

void gemm(const TensorView& a, const TensorView& b, const TensorView& out, const GemmOptions& opt, Stream stream) {
  if (out.device == Device::CPU) return cpu::gemm(a, b, out, opt);
#if TEGEMMA_HAVE_CUDA
  cuda::gemm(a, b, out, opt, stream);
#else
  TG_FAIL("gemm: CUDA tensors in a build without CUDA");
#endif
}

void gemm_fp8(const Fp8View& a, const Fp8View& b, const TensorView& out, const GemmOptions& opt, Stream stream,
              const TensorView& out_amax, const TensorView& out_scale) {
  if (out.device == Device::CPU) return cpu::gemm_fp8(a, b, out, opt, out_amax, out_scale);
#if TEGEMMA_HAVE_CUDA
  cuda::gemm_fp8(a, b, out, opt, stream, out_amax, out_scale);
#else
  TG_FAIL("gemm_fp8: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
