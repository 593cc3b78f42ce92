// Test helpers for kernels/gemm: random operands (BF16 and FP8, per-tensor and block-scaled) kept on the host
// and the device, an FP64 reference that dequantizes element by element on its own, and error statistics
// (element-wise TE-style tolerance and the norm-wise relative error).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numbers>
#include <sstream>
#include <string>
#include <vector>

#include "common/fp8_tensor.h"
#include "common/numeric.h"
#include "common/tensor.h"
#include "kernels/quantize/block_layout.h"

// EXPECT that `stmt` throws tg::Error whose message contains `substr`.
#define TG_EXPECT_THROW_MSG(stmt, substr)                                                          \
  do {                                                                                             \
    bool tg_thrown_ = false;                                                                       \
    try {                                                                                          \
      stmt;                                                                                        \
    } catch (const ::tg::Error& e) {                                                               \
      tg_thrown_ = true;                                                                           \
      EXPECT_NE(std::string(e.what()).find(substr), std::string::npos)                            \
          << "message of `" #stmt "` lacks \"" << (substr) << "\": " << e.what();                  \
    }                                                                                              \
    EXPECT_TRUE(tg_thrown_) << "`" #stmt "` did not throw tg::Error";                              \
  } while (0)

namespace tg::testing {

using kernels::block_ceil_div;
using kernels::block_scale_offset;
using kernels::block_scale_shape;
using kernels::kBlockLen;

// splitmix64: fast, seedable, good enough to fill hundreds of MB of test data.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }

 private:
  uint64_t s_;
};

// 65536 standard-normal samples (Box-Muller); elements are drawn from the table, which is fast and gives
// normal-looking data with plenty of distinct values.
inline const std::vector<float>& normal_table() {
  static const std::vector<float> t = [] {
    std::vector<float> v(65536);
    Rng rng(12345);
    for (std::size_t i = 0; i < v.size(); i += 2) {
      const double u1 = 1.0 - rng.uniform(), u2 = rng.uniform();
      const double r = std::sqrt(-2.0 * std::log(u1));
      v[i] = static_cast<float>(r * std::cos(2.0 * std::numbers::pi * u2));
      v[i + 1] = static_cast<float>(r * std::sin(2.0 * std::numbers::pi * u2));
    }
    return v;
  }();
  return t;
}

// Host matrix [rows, cols] of N(0, stddev^2) values rounded to `dtype` (BF16, F32 or FP8 codes).
inline Tensor random_matrix(DType dtype, int64_t rows, int64_t cols, uint64_t seed, float stddev = 1.0f) {
  Tensor t = Tensor::empty(dtype, {rows, cols});
  // Encode the table once (the Gemma shapes need up to ~10^9 elements), then draw codes from it.
  const std::vector<float>& table = normal_table();
  std::vector<uint32_t> codes(table.size());
  for (std::size_t i = 0; i < table.size(); ++i) {
    const float v = stddev * table[i];
    if (dtype == DType::F32) std::memcpy(&codes[i], &v, 4);
    else codes[i] = encode(dtype, v);
  }
  Rng rng(seed);
  const int64_t n = rows * cols;
  const std::size_t es = dtype_size(dtype);
  for (int64_t i = 0; i < n; i += 4) {
    const uint64_t r = rng.next();  // four 16-bit draws per call
    for (int64_t j = 0; j < 4 && i + j < n; ++j) {
      const uint32_t c = codes[(r >> (16 * j)) & 0xFFFF];
      switch (es) {
        case 4: t.ptr<uint32_t>()[i + j] = c; break;
        case 2: t.ptr<uint16_t>()[i + j] = static_cast<uint16_t>(c); break;
        default: t.ptr<uint8_t>()[i + j] = static_cast<uint8_t>(c);
      }
    }
  }
  return t;
}

// Exact value of element (i, j) of a host row-major matrix view (F32, F64, BF16, F16, FP8).
inline double element(const TensorView& t, int64_t i, int64_t j) {
  const char* p = static_cast<const char*>(t.data) + (i * t.strides[0] + j) * static_cast<int64_t>(dtype_size(t.dtype));
  switch (t.dtype) {
    case DType::F64: { double d; std::memcpy(&d, p, 8); return d; }
    case DType::F32: { float f; std::memcpy(&f, p, 4); return f; }
    case DType::BF16: case DType::F16: { uint16_t u; std::memcpy(&u, p, 2); return decode(t.dtype, u); }
    default: return decode(t.dtype, static_cast<uint8_t>(*p));
  }
}

// The stored bits of element (i, j) of a 2-D view (row stride in elements), widened to 32 bits.
inline uint32_t bits_at(const TensorView& t, int64_t i, int64_t j) {
  const char* p = static_cast<const char*>(t.data) + (i * t.strides[0] + j) * static_cast<int64_t>(dtype_size(t.dtype));
  uint32_t u = 0;
  std::memcpy(&u, p, dtype_size(t.dtype));
  return u;
}

// The bits a single rounding of the value v (double) through float to `out` produces: what the CPU twins store.
inline uint32_t expected_bits(DType out, double v) {
  const float f = static_cast<float>(v);
  if (out == DType::F32) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  }
  return encode(out, f);
}

inline Tensor scalar_f32(float v, Device device) {
  Tensor h = Tensor::empty(DType::F32, {1});
  h.ptr<float>()[0] = v;
  return device == Device::CPU ? std::move(h) : h.to(device);
}

// An FP8 GEMM operand stored row-major [rows, cols] (rows = M or N, cols = K), with its scale_inv, on the host
// and (optionally) on the device.
//   per-tensor: data ~ N(0, 1) codes, scale_inv = target_std * f, f in [0.75, 1.5) (not a power of two);
//   block:      data ~ N(0, 1) codes, each block's scale_inv = target_std * 2^e, e in {-1, 0, 1}, times a
//               random factor in [1, 1.25) unless pow2; the scale padding holds NaN (must never be read).
struct Fp8Operand {
  ScalingMode mode = ScalingMode::kPerTensor;
  DType dtype = DType::E4M3;
  int64_t rows = 0, cols = 0;
  Tensor data_h, scale_h;
  Tensor data_d, scale_d;

  double scale_at(int64_t i, int64_t k) const {
    const float* s = scale_h.ptr<const float>();
    return mode == ScalingMode::kPerTensor ? s[0] : s[block_scale_offset(mode, rows, cols, i, k)];
  }
  double deq(int64_t i, int64_t k) const { return element(data_h, i, k) * scale_at(i, k); }
  Fp8View view(Device device) const {
    Fp8View v;
    v.mode = mode;
    v.data = device == Device::CPU ? data_h.view() : data_d.view();
    v.scale_inv = device == Device::CPU ? scale_h.view() : scale_d.view();
    return v;
  }
};

inline Fp8Operand make_fp8_operand(DType dtype, ScalingMode mode, int64_t rows, int64_t cols, uint64_t seed,
                                   double target_std, bool on_device, bool pow2_scales = true) {
  Fp8Operand op;
  op.mode = mode;
  op.dtype = dtype;
  op.rows = rows;
  op.cols = cols;
  op.data_h = random_matrix(dtype, rows, cols, seed);
  Rng rng(seed ^ 0xABCDEF);
  if (mode == ScalingMode::kPerTensor) {
    op.scale_h = Tensor::empty(DType::F32, {1});
    op.scale_h.ptr<float>()[0] = static_cast<float>(target_std * (0.75 + 0.75 * rng.uniform()));
  } else {
    op.scale_h = Tensor::empty(DType::F32, block_scale_shape(mode, rows, cols, false));
    float* s = op.scale_h.ptr<float>();
    std::fill(s, s + op.scale_h.numel(), std::numeric_limits<float>::quiet_NaN());
    const int64_t bi = mode == ScalingMode::kBlock1x128 ? rows : block_ceil_div(rows, kBlockLen);
    for (int64_t i = 0; i < bi; ++i) {
      for (int64_t j = 0; j < block_ceil_div(cols, kBlockLen); ++j) {
        const double f = std::ldexp(1.0, static_cast<int>(rng.below(3)) - 1) * (pow2_scales ? 1.0 : 1.0 + 0.25 * rng.uniform());
        const int64_t r = mode == ScalingMode::kBlock1x128 ? i : i * kBlockLen;
        s[block_scale_offset(mode, rows, cols, r, j * kBlockLen)] = static_cast<float>(target_std * f);
      }
    }
  }
  if (on_device) {
    op.data_d = op.data_h.to(Device::CUDA);
    op.scale_d = op.scale_h.to(Device::CUDA);
  }
  return op;
}

// Rows/columns of out[M, N] checked against FP64: all of them for small products, an even spread (always
// including the first and last) when M * N * K exceeds `mac_budget`.
inline std::vector<int64_t> spread(int64_t n, int64_t want) {
  want = std::max<int64_t>(1, std::min(n, want));
  std::vector<int64_t> v;
  for (int64_t t = 0; t < want; ++t) v.push_back(want == 1 ? 0 : t * (n - 1) / (want - 1));
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}
struct Samples {
  std::vector<int64_t> rows, cols;
};
inline Samples pick_samples(int64_t m, int64_t n, int64_t k, int64_t mac_budget = int64_t{1} << 27) {
  Samples s;
  if (m * n * k <= mac_budget) {
    s.rows = spread(m, m);
    s.cols = spread(n, n);
    return s;
  }
  s.rows = spread(m, 48);
  const int64_t cols = std::max<int64_t>(64, mac_budget / (static_cast<int64_t>(s.rows.size()) * k));
  s.cols = spread(n, cols);
  return s;
}

// FP64 reference out[i, j] = sum_k A(i, k) * B(j, k) for the sampled (i, j), A and B given as functions
// returning exact dequantized elements. Result row-major [rows.size(), cols.size()].
template <typename FA, typename FB>
std::vector<double> reference_f64(const Samples& s, int64_t k, FA a, FB b) {
  std::vector<double> bt(s.cols.size() * static_cast<std::size_t>(k));
  for (std::size_t c = 0; c < s.cols.size(); ++c) {
    for (int64_t x = 0; x < k; ++x) bt[c * k + x] = b(s.cols[c], x);
  }
  std::vector<double> ar(static_cast<std::size_t>(k)), out(s.rows.size() * s.cols.size());
  for (std::size_t r = 0; r < s.rows.size(); ++r) {
    for (int64_t x = 0; x < k; ++x) ar[x] = a(s.rows[r], x);
    for (std::size_t c = 0; c < s.cols.size(); ++c) {
      double acc = 0.0;
      const double* br = bt.data() + c * k;
      for (int64_t x = 0; x < k; ++x) acc += ar[x] * br[x];
      out[r * s.cols.size() + c] = acc;
    }
  }
  return out;
}

// The tolerances of a comparison, as data with the reason next to them at the call site.
struct Budget {
  double rtol = 0.125;     // element-wise, TE's FP8 rtol
  double atol = 0.0675;    // element-wise, TE's FP8 atol, in units of the reference's RMS
  double norm_rel = 0.0;   // ||got - ref||_2 / ||ref||_2
  bool elementwise = true; // false: element-wise statistics are reported, not asserted
};

struct ErrorStats {
  int64_t count = 0, violations = 0;
  double norm_rel = 0.0, ref_rms = 0.0, max_abs_err = 0.0;  // max_abs_err in units of ref_rms
  std::string first_violation;
  std::string str() const {
    std::ostringstream os;
    os << count << " elements, norm-wise rel err " << norm_rel << ", max |err| " << max_abs_err
       << " x ref RMS (" << ref_rms << "), " << violations << " element-wise violations";
    if (!first_violation.empty()) os << "; first: " << first_violation;
    return os.str();
  }
};

// Compares got(i, j) against the FP64 reference at the samples. Element-wise: |got - ref| <= atol * RMS(ref)
// + rtol * |ref|, i.e. TE's tolerance applied to outputs measured in units of their RMS (so atol means the
// same thing whatever the data's scale).
// `magnitude` (optional, same size as ref): the scale the rtol term applies to instead of |ref|. For out = alpha*AB
// + beta*C the caller passes |alpha*AB| + |beta*C|: cuBLASLt's BF16 epilogue rounds alpha*AB to BF16 before adding
// C (measured on the H200, cuBLASLt 13.1: errors of about half a BF16 ulp of the terms, not of their sum), so where
// the terms cancel the error is relative to the terms.
template <typename FGot>
ErrorStats compare(const Samples& s, const std::vector<double>& ref, const FGot& got, const Budget& b,
                   const std::vector<double>* magnitude = nullptr) {
  ErrorStats st;
  double ss_ref = 0.0, ss_err = 0.0;
  for (double r : ref) ss_ref += r * r;
  st.count = static_cast<int64_t>(ref.size());
  st.ref_rms = std::sqrt(ss_ref / static_cast<double>(std::max<int64_t>(1, st.count)));
  const double unit = st.ref_rms > 0 ? st.ref_rms : 1.0;
  for (std::size_t r = 0; r < s.rows.size(); ++r) {
    for (std::size_t c = 0; c < s.cols.size(); ++c) {
      const double want = ref[r * s.cols.size() + c];
      const double g = got(s.rows[r], s.cols[c]);
      const double err = std::isfinite(g) ? std::fabs(g - want) : std::numeric_limits<double>::infinity();
      ss_err += err * err;
      st.max_abs_err = std::max(st.max_abs_err, err / unit);
      const double mag = magnitude ? (*magnitude)[r * s.cols.size() + c] : std::fabs(want);
      if (!(err <= b.atol * unit + b.rtol * mag)) {
        if (st.violations++ == 0) {
          std::ostringstream os;
          os << "out[" << s.rows[r] << ", " << s.cols[c] << "] = " << g << ", FP64 " << want;
          st.first_violation = os.str();
        }
      }
    }
  }
  st.norm_rel = ss_ref > 0 ? std::sqrt(ss_err / ss_ref) : std::sqrt(ss_err);
  return st;
}

inline void expect_within(const ErrorStats& st, const Budget& b, const std::string& what) {
  ::testing::Test::RecordProperty(what, st.str());
  std::printf("[ gemm err ] %s: %s\n", what.c_str(), st.str().c_str());
  if (b.elementwise) {
    EXPECT_EQ(st.violations, 0) << what << ": element-wise tolerance (rtol " << b.rtol << ", atol " << b.atol
                                << " x RMS) exceeded: " << st.str();
  }
  EXPECT_LE(st.norm_rel, b.norm_rel) << what << ": norm-wise relative error budget " << b.norm_rel
                                     << " exceeded: " << st.str();
}

}  // namespace tg::testing
