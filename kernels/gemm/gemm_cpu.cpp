// CPU twins of the GEMMs: exact conversion of the inputs, double accumulation, one final rounding.
// (The FP8 dequantization is done here, element by element, rather than through kernels/quantize's
// dequantize: the GEMM only needs q * scale_inv in double, which is exact.)
#include <cmath>
#include <cstring>
#include <vector>

#include "common/numeric.h"
#include "common/nvtx.h"
#include "kernels/gemm/gemm.h"
#include "kernels/quantize/block_layout.h"

namespace tg::kernels::cpu {

namespace {

const char* elem_ptr(const TensorView& t, int64_t i, int64_t j) {
  return static_cast<const char*>(t.data) + (i * t.strides[0] + j) * static_cast<int64_t>(dtype_size(t.dtype));
}

// Exact value of element (i, j) of a BF16 / F32 / FP8 matrix.
double load(const TensorView& t, int64_t i, int64_t j) {
  const char* p = elem_ptr(t, i, j);
  switch (dtype_size(t.dtype)) {
    case 4: { float f; std::memcpy(&f, p, 4); return f; }
    case 2: { uint16_t u; std::memcpy(&u, p, 2); return decode(t.dtype, u); }
    default: return decode(t.dtype, static_cast<uint8_t>(*p));
  }
}

// Rounds v to out's dtype (through float, as the GPU's FP32 epilogue does) and stores it.
void store(const TensorView& t, int64_t i, int64_t j, double v) {
  char* p = const_cast<char*>(elem_ptr(t, i, j));
  const float f = static_cast<float>(v);
  switch (dtype_size(t.dtype)) {
    case 4: std::memcpy(p, &f, 4); break;
    case 2: { const uint16_t u = static_cast<uint16_t>(encode(t.dtype, f)); std::memcpy(p, &u, 2); break; }
    default: *p = static_cast<char>(encode(t.dtype, f));
  }
}

float load_scalar(const TensorView& t) {
  float f;
  std::memcpy(&f, t.data, 4);
  return f;
}

// The operand [rows, cols] as doubles, row-major and contiguous (exact: BF16 values, or FP8 codes times
// their F32 scale_inv -- at most 4 + 24 significant bits).
std::vector<double> dequantize(const TensorView& data, ScalingMode mode, const TensorView& scale_inv) {
  const int64_t rows = data.shape[0], cols = data.shape[1];
  std::vector<double> v(static_cast<std::size_t>(rows * cols));
  const float* s = scale_inv.empty() ? nullptr : scale_inv.ptr<const float>();
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      double x = load(data, i, j);
      if (s) {
        const int64_t at = mode == ScalingMode::kPerTensor ? 0 : block_scale_offset(mode, rows, cols, i, j);
        x *= static_cast<double>(s[at]);
      }
      v[static_cast<std::size_t>(i * cols + j)] = x;
    }
  }
  return v;
}

// The transpose of a row-major [rows, cols] double matrix.
std::vector<double> transposed(const std::vector<double>& v, int64_t rows, int64_t cols) {
  std::vector<double> t(v.size());
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) t[static_cast<std::size_t>(j * rows + i)] = v[static_cast<std::size_t>(i * cols + j)];
  }
  return t;
}

// out = alpha * A * B^T + beta * out over exact double operands; returns max |v| over the results v
// (before out_scale). out_scale != 1 multiplies v before the final rounding (FP8 outputs).
double gemm_f64(const std::vector<double>& a, const std::vector<double>& b, const detail::GemmDims& d,
                const TensorView& out, const GemmOptions& opt, double out_scale) {
  double amax = 0.0;
  for (int64_t i = 0; i < d.m; ++i) {
    const double* ar = a.data() + i * d.k;
    for (int64_t j = 0; j < d.n; ++j) {
      const double* br = b.data() + j * d.k;
      double acc = 0.0;
      for (int64_t k = 0; k < d.k; ++k) acc += ar[k] * br[k];
      double v = static_cast<double>(opt.alpha) * acc;
      if (opt.beta != 0.0f) v += static_cast<double>(opt.beta) * load(out, i, j);  // beta = 0: out is not read
      amax = std::fmax(amax, std::fabs(v));
      store(out, i, j, v * out_scale);
    }
  }
  return amax;
}

}  // namespace

void gemm(const TensorView& a, const TensorView& b, const TensorView& out, const GemmOptions& opt) {
  TG_NVTX_FN();
  const detail::GemmDims d = detail::check_gemm(a, b, out, opt);
  check_device(out, Device::CPU, "cpu::gemm(out)");
  std::vector<double> av = dequantize(a, ScalingMode::kPerTensor, {}), bv = dequantize(b, ScalingMode::kPerTensor, {});
  if (opt.transpose_a) av = transposed(av, d.k, d.m);  // stored [K, M] -> [M, K]
  if (opt.transpose_b) bv = transposed(bv, d.k, d.n);  // stored [K, N] -> [N, K]
  gemm_f64(av, bv, d, out, opt, 1.0);
}

void gemm_fp8(const Fp8View& a, const Fp8View& b, const TensorView& out, const GemmOptions& opt,
              const TensorView& out_amax, const TensorView& out_scale) {
  TG_NVTX_FN();
  const detail::GemmDims d = detail::check_gemm_fp8(a, b, out, opt, out_amax, out_scale);
  check_device(out, Device::CPU, "cpu::gemm_fp8(out)");
  // split_accumulate does not change the twin: it is the exact product either way.
  const double amax = gemm_f64(dequantize(a.data, a.mode, a.scale_inv), dequantize(b.data, b.mode, b.scale_inv), d,
                               out, opt, out_scale.empty() ? 1.0 : static_cast<double>(load_scalar(out_scale)));
  if (!out_amax.empty()) {
    const float f = static_cast<float>(amax);
    std::memcpy(out_amax.data, &f, 4);
  }
}

}  // namespace tg::kernels::cpu
