// CPU twin of gemv: exact dequantization, double accumulation in ascending k, one final rounding -- the same
// arithmetic as cpu::gemm / cpu::gemm_fp8 (gemm_cpu.cpp), so the decoder's GEMV path is bit-identical to its GEMM
// path on the CPU backend.
#include <cstring>
#include <vector>

#include "common/numeric.h"
#include "common/nvtx.h"
#include "kernels/activation/activation.h"
#include "kernels/gemm/gemv.h"
#include "kernels/kv_cache/kv_cache.h"
#include "kernels/norm/norm.h"

namespace tg::kernels::cpu {

namespace {

// Exact value of element (i, j) of a BF16 / F32 / E4M3 matrix.
double load(const TensorView& t, int64_t i, int64_t j) {
  const char* p = static_cast<const char*>(t.data) + (i * t.strides[0] + j) * static_cast<int64_t>(dtype_size(t.dtype));
  switch (dtype_size(t.dtype)) {
    case 4: { float f; std::memcpy(&f, p, 4); return f; }
    case 2: { uint16_t u; std::memcpy(&u, p, 2); return decode(t.dtype, u); }
    default: return decode(t.dtype, static_cast<uint8_t>(*p));
  }
}

void store(const TensorView& t, int64_t i, int64_t j, double v) {
  char* p = static_cast<char*>(t.data) + (i * t.strides[0] + j) * static_cast<int64_t>(dtype_size(t.dtype));
  const float f = static_cast<float>(v);
  if (t.dtype == DType::F32) {
    std::memcpy(p, &f, 4);
  } else {
    const uint16_t u = static_cast<uint16_t>(encode(t.dtype, f));
    std::memcpy(p, &u, 2);
  }
}

double scale_of(const GemvOperand& o) {
  if (o.scale_inv.empty()) return 1.0;
  float f;
  std::memcpy(&f, o.scale_inv.data, 4);
  return f;
}

// Row i of the operand as doubles (code * scale_inv, exact: at most 8 + 24 significant bits). Row by row, so a
// 256000 x 3072 lm_head never exists in double.
void dequantize_row(const GemvOperand& o, int64_t i, double s, std::vector<double>& row) {
  const int64_t cols = o.data.shape[1];
  row.resize(static_cast<std::size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) {
    double e = load(o.data, i, j);
    if (!o.scale_inv.empty()) e *= s;
    row[static_cast<std::size_t>(j)] = e;
  }
}

}  // namespace

void gemv(const GemvOperand& x, const GemvOperand& w, const TensorView& out, const GemvOptions& opt,
          const TensorView& residual) {
  TG_NVTX_FN();
  const detail::GemvDims d = detail::check_gemv(x, w, out, residual);
  check_device(out, Device::CPU, "cpu::gemv(out)");
  const double sx = scale_of(x), sw = scale_of(w);
  std::vector<std::vector<double>> xv(static_cast<std::size_t>(d.m));
  for (int64_t i = 0; i < d.m; ++i) dequantize_row(x, i, sx, xv[static_cast<std::size_t>(i)]);
  std::vector<double> wr;
  for (int64_t j = 0; j < d.n; ++j) {
    dequantize_row(w, j, sw, wr);
    for (int64_t i = 0; i < d.m; ++i) {
      const double* xr = xv[static_cast<std::size_t>(i)].data();
      double acc = 0.0;
      for (int64_t k = 0; k < d.k; ++k) acc += xr[k] * wr[static_cast<std::size_t>(k)];
      double v = static_cast<double>(opt.alpha) * acc;
      if (!residual.empty()) v += load(residual, i, j);  // read before the store: residual may be out
      store(out, i, j, v);
    }
  }
}

// The definition: the unfused CPU kernels in sequence (gemv's BF16 fc1, then the GeGLU -> FP8 twin).
void gemv_geglu(const GemvOperand& x, const GemvOperand& w, const Fp8View& act) {
  TG_NVTX_FN();
  const detail::GemvDims d = detail::check_gemv_geglu(x, w, act);
  check_device(act.data, Device::CPU, "cpu::gemv_geglu(act)");
  Tensor fc1 = Tensor::empty(DType::BF16, {1, d.n}, Device::CPU);
  kernels::cpu::gemv(x, w, fc1.view(), GemvOptions{}, TensorView{});
  kernels::cpu::geglu_forward_fp8(fc1.view(), act);
}

GemvOperand gemv_norm(const GemvNorm& norm, Tensor& scratch) {
  TG_NVTX_FN();
  detail::check_gemv_norm(norm, "cpu::gemv_norm");
  check_device(norm.x.data, Device::CPU, "cpu::gemv_norm(x)");
  Fp8View x = norm.x;  // the same scale, scale_inv and amax; the codes into the scratch (x.data is not written)
  scratch = Tensor::empty(DType::E4M3, x.data.shape, Device::CPU);
  x.data = scratch.view();
  kernels::cpu::rmsnorm_forward_fp8(norm.h, norm.weight, norm.eps, x, norm.rstd, TensorView{});
  return GemvOperand::fp8(x);
}

// The definition: the unfused CPU kernels in sequence (gemv's BF16 qkv row, then kv_cache_write_rope on its heads).
void gemv_qkv_rope(const GemvOperand& x, const GemvOperand& w, const TensorView& slots, const TensorView& positions,
                   const TensorView& inv_freq, const KvCache& cache, const TensorView& q_out, const TensorView& table) {
  TG_NVTX_FN();
  const detail::GemvQkvRopeDims d = detail::check_gemv_qkv_rope(x, w, slots, positions, inv_freq, cache, q_out, table);
  check_device(q_out, Device::CPU, "cpu::gemv_qkv_rope(q_out)");
  Tensor qkv = Tensor::empty(DType::BF16, {1, d.gemv.n}, Device::CPU);
  kernels::cpu::gemv(x, w, qkv.view(), GemvOptions{}, TensorView{});
  const int64_t dh = d.head_dim, n = d.gemv.n;
  auto heads = [&](int64_t first, int64_t count) {
    return TensorView(static_cast<uint16_t*>(qkv.data()) + first * dh, DType::BF16, Shape{1, count, dh},
                      Shape{n, dh, 1}, Device::CPU);
  };
  kernels::cpu::kv_cache_write_rope(heads(d.heads, d.kv_heads), heads(d.heads + d.kv_heads, d.kv_heads), slots,
                                    positions, inv_freq, cache, heads(0, d.heads), q_out, table);
}

}  // namespace tg::kernels::cpu
