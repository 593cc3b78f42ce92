// gemv dispatcher and the argument checks shared by the CPU twin and the CUDA kernel.
#include "kernels/gemm/gemv.h"

#include <cstdint>

#include "common/nvtx.h"
#include "kernels/elementwise/fp8_out.h"
#include "kernels/kv_cache/kv_cache.h"

namespace tg::kernels {

namespace {

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

void check_matrix(const TensorView& t, const char* name) {
  TG_CHECK(!t.empty(), "gemv: ", name, " is empty (null data)");
  TG_CHECK(t.ndim() == 2, "gemv: ", name, " must be 2-D, got ", t.describe());
  TG_CHECK(t.strides[1] == 1, "gemv: ", name, " must have unit inner stride (row-major), got strides ", t.strides,
           " for ", t.describe());
  TG_CHECK(t.strides[0] >= t.shape[1] && t.strides[0] >= 1, "gemv: ", name, " row stride ", t.strides[0],
           " is shorter than its rows (", t.shape[1], ") in ", t.describe());
}

void check_operand(const GemvOperand& o, const char* name) {
  check_matrix(o.data, name);
  const DType dt = o.data.dtype;
  TG_CHECK(dt == DType::BF16 || dt == DType::E4M3, "gemv: ", name, " must be BF16 or F8_E4M3, got ", dt);
  if (dt == DType::BF16) {
    TG_CHECK(o.scale_inv.empty(), "gemv: ", name, " is BF16 and takes no scale_inv, got ", o.scale_inv.describe());
    return;
  }
  TG_CHECK(!o.scale_inv.empty(), "gemv: ", name, " is F8_E4M3 and needs its per-tensor scale_inv (F32 [1])");
  TG_CHECK(o.scale_inv.dtype == DType::F32 && o.scale_inv.numel() == 1, "gemv: ", name,
           " scale_inv must be F32 with one element (per-tensor scaling; block-scaled weights go to gemm_fp8), got ",
           o.scale_inv.describe());
  TG_CHECK(o.scale_inv.device == o.data.device, "gemv: ", name, " scale_inv is on ", o.scale_inv.device,
           ", its data on ", o.data.device);
}

}  // namespace

GemvOperand GemvOperand::fp8(const Fp8View& v) {
  TG_CHECK(v.mode == ScalingMode::kPerTensor, "gemv: FP8 operands must be per-tensor scaled, got ",
           scaling_mode_name(v.mode), " (block-scaled weights go to gemm_fp8)");
  TG_CHECK(v.has_rowwise(), "gemv: the FP8 operand has no row-wise data");
  return GemvOperand{v.data, v.scale_inv};
}

namespace detail {

void check_gemv_operand(const GemvOperand& o, const char* name) { check_operand(o, name); }

GemvDims check_gemv(const GemvOperand& x, const GemvOperand& w, const TensorView& out, const TensorView& residual) {
  check_operand(x, "x");
  check_operand(w, "W");
  check_matrix(out, "out");
  const Device dev = out.device;
  TG_CHECK(x.data.device == dev && w.data.device == dev, "gemv: x, W and out must be on one device, got x on ",
           x.data.device, ", W on ", w.data.device, ", out on ", dev);
  TG_CHECK(!(x.data.dtype == DType::E4M3 && w.data.dtype == DType::BF16), "gemv: an F8_E4M3 x needs F8_E4M3 ",
           "weights (the FP8 GEMM's operand pair); BF16 weights take a BF16 x");
  GemvDims d;
  d.m = x.data.shape[0];
  d.k = x.data.shape[1];
  d.n = w.data.shape[0];
  TG_CHECK(w.data.shape[1] == d.k, "gemv: x is [M, K] = ", x.data.shape, " and W must be [N, K] with the same K, got W ",
           w.data.shape, " (out = x W^T)");
  TG_CHECK(out.shape[0] == d.m && out.shape[1] == d.n, "gemv: out must be [M, N] = [", d.m, ", ", d.n, "], got ",
           out.shape);
  TG_CHECK(d.m >= 1 && d.n >= 1 && d.k >= 1, "gemv: empty product [M, N, K] = [", d.m, ", ", d.n, ", ", d.k, "]");
  TG_CHECK(d.m <= kGemvMaxRows, "gemv: M = ", d.m, " rows, at most ", kGemvMaxRows,
           " are supported (decode batches; larger M goes to gemm / gemm_fp8)");
  TG_CHECK(out.dtype == DType::BF16 || out.dtype == DType::F32, "gemv: out must be BF16 or F32, got ", out.dtype);

  // 16-byte vectors of W (8 BF16 or 16 E4M3 elements) and the matching x elements.
  const int64_t wbytes = static_cast<int64_t>(dtype_size(w.data.dtype));
  const int64_t xbytes = static_cast<int64_t>(dtype_size(x.data.dtype));
  const int64_t vec = 16 / wbytes;
  TG_CHECK(d.k % vec == 0, "gemv: K = ", d.k, " must be a multiple of ", vec, " for ", w.data.dtype,
           " weights (read in 16-byte vectors of ", vec, " elements that never straddle a row); use gemm / gemm_fp8");
  TG_CHECK(x.data.strides[0] * xbytes % 16 == 0, "gemv: x's row stride ", x.data.strides[0], " x ", xbytes,
           " bytes must be a multiple of 16 bytes");
  TG_CHECK(w.data.strides[0] * wbytes % 16 == 0, "gemv: W's row stride ", w.data.strides[0], " x ", wbytes,
           " bytes must be a multiple of 16 bytes");
  TG_CHECK(aligned16(x.data.data), "gemv: x's data pointer ", x.data.data, " must be 16-byte aligned");
  TG_CHECK(aligned16(w.data.data), "gemv: W's data pointer ", w.data.data, " must be 16-byte aligned");
  TG_CHECK(out.data != x.data.data && out.data != w.data.data, "gemv: out must not alias x or W");
  d.ldx = x.data.strides[0];
  d.ldw = w.data.strides[0];
  d.ldo = out.strides[0];
  if (!residual.empty()) {
    check_matrix(residual, "residual");
    TG_CHECK(residual.device == dev, "gemv: residual is on ", residual.device, ", out on ", dev);
    TG_CHECK(residual.dtype == out.dtype, "gemv: residual must have out's dtype ", out.dtype, ", got ",
             residual.dtype);
    TG_CHECK(residual.shape[0] == d.m && residual.shape[1] == d.n, "gemv: residual must be [M, N] = [", d.m, ", ",
             d.n, "], got ", residual.shape);
    TG_CHECK(residual.data != out.data || residual.strides[0] == out.strides[0],
             "gemv: residual aliases out with another row stride (", residual.strides[0], " vs ", out.strides[0], ")");
    d.ldr = residual.strides[0];
  }
  return d;
}

namespace {
// The epilogue ops' GEMV part: x [1, K] and W [n, K], both per-tensor E4M3, under gemv's rules. Those ops write no
// BF16 [1, n] row; `like` lends its device and address to the stand-in output the rules check.
GemvDims check_one_row_e4m3(const char* what, const GemvOperand& x, const GemvOperand& w, int64_t n,
                            const TensorView& like) {
  TG_CHECK(x.data.dtype == DType::E4M3 && w.data.dtype == DType::E4M3, what, ": x and W must be F8_E4M3 ",
           "(per-tensor), got ", x.data.dtype, " and ", w.data.dtype);
  TG_CHECK(x.data.ndim() == 2 && x.data.shape[0] == 1, what, ": one row of x [1, K], got ", x.data.describe());
  TensorView out = like;
  out.dtype = DType::BF16;
  out.shape = {1, n};
  out.strides = {n, 1};
  return check_gemv(x, w, out, TensorView{});
}
}  // namespace

GemvDims check_gemv_geglu(const GemvOperand& x, const GemvOperand& w, const Fp8View& act) {
  TG_CHECK(act.mode == ScalingMode::kPerTensor && act.has_rowwise() && !act.has_columnwise(),
           "gemv_geglu: act must be a per-tensor FP8 tensor with its row-wise copy only (mode ",
           scaling_mode_name(act.mode), ", row-wise ", act.has_rowwise(), ", column-wise ", act.has_columnwise(), ")");
  TG_CHECK(act.data.dtype == DType::E4M3, "gemv_geglu: act must be F8_E4M3, got ", act.data.dtype);
  TG_CHECK(w.data.ndim() == 2 && w.data.shape[0] % 2 == 0, "gemv_geglu: W must be fc1 = [gate; up] with an even ",
           "number of rows [2F, K], got ", w.data.describe());
  const int64_t f = w.data.shape[0] / 2;
  TG_CHECK(act.data.ndim() == 2 && act.data.shape[0] == 1 && act.data.shape[1] == f && act.data.strides[1] == 1,
           "gemv_geglu: act must be [1, F = ", f, "] with unit inner stride, got ", act.data.describe());
  const GemvDims d = check_one_row_e4m3("gemv_geglu", x, w, 2 * f, act.data);
  check_fp8_output(act, 1, f, act.data.device, "gemv_geglu(act)");
  return d;
}

GemvQkvRopeDims check_gemv_qkv_rope(const GemvOperand& x, const GemvOperand& w, const TensorView& slots,
                                    const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                                    const TensorView& q_out, const TensorView& table) {
  TG_CHECK(q_out.ndim() == 3 && q_out.shape[0] == 1, "gemv_qkv_rope: q_out must be [1, H, Dh], got ",
           q_out.describe());
  TG_CHECK(!cache.k.empty() && cache.k.ndim() == 4, "gemv_qkv_rope: the cache's k must be [B, max_seq, Hkv, Dh], got ",
           cache.k.describe());
  const int64_t h = q_out.shape[1], hkv = cache.k.shape[2], dh = cache.k.shape[3];
  const int64_t n = (h + 2 * hkv) * dh;
  TG_CHECK(w.data.ndim() == 2 && w.data.shape[0] == n, "gemv_qkv_rope: W must be the fused QKV weight [(H + 2 Hkv) Dh = ",
           n, ", K], got ", w.data.describe());
  // kv_cache_write_rope's rules, on stand-in views of the qkv row this op never writes (shapes, strides, dtype and
  // device as the decoder's column slices of the GEMV output would have; q_out's address stands in for the data).
  const Device dev = q_out.device;
  auto part = [&](int64_t heads) {
    TensorView v = q_out;
    v.dtype = DType::BF16;
    v.shape = {1, heads, dh};
    v.strides = {n, dh, 1};
    return v;
  };
  int64_t table_positions = 0;
  const kv_cache_detail::WriteDims wd =
      kv_cache_detail::check_write_rope(part(hkv), part(hkv), slots, positions, inv_freq, cache, part(h), q_out,
                                        dev, "gemv_qkv_rope", table, &table_positions);
  TG_CHECK(wd.T == 1, "gemv_qkv_rope: one token, got ", wd.T);
  GemvQkvRopeDims d;
  d.gemv = check_one_row_e4m3("gemv_qkv_rope", x, w, n, q_out);
  d.heads = h;
  d.kv_heads = hkv;
  d.head_dim = dh;
  d.cache_b = wd.B;
  d.max_seq = wd.max_seq;
  d.table_positions = table_positions;
  d.fp8 = wd.fp8;
  d.per_head_scale = wd.per_head_scale;
  return d;
}

GemvOperand check_gemv_norm(const GemvNorm& norm, const char* op) {
  const Fp8View& x = norm.x;
  TG_CHECK(x.mode == ScalingMode::kPerTensor && x.has_rowwise() && !x.has_columnwise() &&
               x.data.dtype == DType::E4M3,
           op, ": the norm's x must be a per-tensor F8_E4M3 tensor with its row-wise copy only (mode ",
           scaling_mode_name(x.mode), ", ", x.data.dtype, ", column-wise ", x.has_columnwise(), ")");
  TG_CHECK(x.data.ndim() == 2 && x.data.shape[0] == 1, op, ": the norm's x must be [1, K], got ", x.data.describe());
  const int64_t k = x.data.shape[1];
  const Device dev = x.data.device;
  check_fp8_output(x, 1, k, dev, op);
  TG_CHECK(!x.scale_inv.empty(), op, ": the norm's x needs its scale_inv (written with 1 / scale)");
  TG_CHECK(k % 16 == 0 && k <= kGemvNormMaxK, op, ": the norm's K must be a multiple of 16 and at most ",
           kGemvNormMaxK, ", got ", k);
  const TensorView& h = norm.h;
  TG_CHECK(!h.empty() && h.dtype == DType::BF16 && h.ndim() == 2 && h.shape[0] == 1 && h.shape[1] == k &&
               h.strides[1] == 1 && norm.h.device == dev && aligned16(h.data),
           op, ": the norm's h must be BF16 [1, K = ", k, "], unit stride, 16-byte aligned, on ", dev, ", got ",
           h.describe());
  const TensorView& nw = norm.weight;
  TG_CHECK(!nw.empty() && nw.dtype == DType::BF16 && nw.numel() == k && nw.is_contiguous() && nw.device == dev &&
               aligned16(nw.data),
           op, ": the norm's weight must be contiguous BF16 [K = ", k, "], 16-byte aligned, on ", dev, ", got ",
           nw.describe());
  TG_CHECK(norm.eps > 0.0f, op, ": the norm's eps must be > 0, got ", norm.eps);
  const TensorView& r = norm.rstd;
  TG_CHECK(!r.empty() && r.dtype == DType::F32 && r.numel() == 1 && r.device == dev, op,
           ": the norm's rstd must be F32 [1] on ", dev, ", got ", r.describe());
  return GemvOperand::fp8(x);
}

}  // namespace detail


void gemv_geglu(const GemvOperand& x, const GemvOperand& w, const Fp8View& act, Stream stream) {
  if (act.device() == Device::CPU) return cpu::gemv_geglu(x, w, act);
#if TEGEMMA_HAVE_CUDA
  cuda::gemv_geglu(x, w, act, stream);
#else
  (void)stream;
  TG_FAIL("gemv_geglu: CUDA tensors in a build without CUDA");
#endif
}

void gemv_qkv_rope(const GemvOperand& x, const GemvOperand& w, const TensorView& slots, const TensorView& positions,
                   const TensorView& inv_freq, const KvCache& cache, const TensorView& q_out, const TensorView& table,
                   Stream stream) {
  if (q_out.device == Device::CPU) return cpu::gemv_qkv_rope(x, w, slots, positions, inv_freq, cache, q_out, table);
#if TEGEMMA_HAVE_CUDA
  cuda::gemv_qkv_rope(x, w, slots, positions, inv_freq, cache, q_out, table, stream);
#else
  (void)stream;
  TG_FAIL("gemv_qkv_rope: CUDA tensors in a build without CUDA");
#endif
}

void gemv_norm_qkv_rope(const GemvNorm& norm, const GemvOperand& w, const TensorView& slots,
                        const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                        const TensorView& q_out, const TensorView& table, Stream stream) {
  if (q_out.device == Device::CPU) {
    Tensor scratch;
    return cpu::gemv_qkv_rope(cpu::gemv_norm(norm, scratch), w, slots, positions, inv_freq, cache, q_out, table);
  }
#if TEGEMMA_HAVE_CUDA
  cuda::gemv_norm_qkv_rope(norm, w, slots, positions, inv_freq, cache, q_out, table, stream);
#else
  (void)stream;
  TG_FAIL("gemv_qkv_rope: CUDA tensors in a build without CUDA");
#endif
}

bool gemv_norm_qkv_rope_one_wave(int64_t n, Device device) {
  if (device == Device::CPU) return true;
#if TEGEMMA_HAVE_CUDA
  return cuda::gemv_norm_qkv_rope_one_wave(n);
#else
  (void)n;
  TG_FAIL("gemv_norm_qkv_rope_one_wave: CUDA in a build without CUDA");
#endif
}

void gemv(const GemvOperand& x, const GemvOperand& w, const TensorView& out, const GemvOptions& opt,
          const TensorView& residual, Stream stream) {
  if (out.device == Device::CPU) return cpu::gemv(x, w, out, opt, residual);
#if TEGEMMA_HAVE_CUDA
  cuda::gemv(x, w, out, opt, residual, stream);
#else
  (void)stream;
  TG_FAIL("gemv: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
