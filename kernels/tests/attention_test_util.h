// Shared helpers of the attention tests: an FP64 reference attention written independently of the CPU twin
// (HF's repeat_kv + a materialised, masked score row + softmax in double), packing helpers and comparisons.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/numeric.h"
#include "common/tensor.h"

namespace tg::testing {

// Element i of a contiguous host tensor as double (BF16 / F32 / F64).
inline double host_value(const TensorView& t, int64_t i) {
  switch (t.dtype) {
    case DType::BF16:
      return bf16_bits_to_float(t.ptr<const uint16_t>()[i]);
    case DType::F32:
      return t.ptr<const float>()[i];
    case DType::F64:
      return t.ptr<const double>()[i];
    default:
      ADD_FAILURE() << "host_value: unsupported dtype " << t.dtype;
      return 0.0;
  }
}
inline std::vector<double> to_double(const TensorView& t) {
  std::vector<double> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = host_value(t, i);
  return out;
}

// A host tensor of `dtype` holding the given values (rounded RNE for BF16).
inline Tensor host_tensor(DType dtype, Shape shape, const std::vector<double>& values) {
  Tensor t = Tensor::empty(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dtype == DType::BF16)
      t.ptr<uint16_t>()[i] = float_to_bf16_bits(static_cast<float>(values[i]));
    else if (dtype == DType::F32)
      t.ptr<float>()[i] = static_cast<float>(values[i]);
    else
      ADD_FAILURE() << "host_tensor: unsupported dtype " << dtype;
  }
  return t;
}

inline Tensor cu_seqlens_of(const std::vector<int32_t>& lens) {
  Tensor cu = Tensor::empty(DType::I32, {static_cast<int64_t>(lens.size()) + 1});
  cu.ptr<int32_t>()[0] = 0;
  for (size_t b = 0; b < lens.size(); ++b) cu.ptr<int32_t>()[b + 1] = cu.ptr<int32_t>()[b] + lens[b];
  return cu;
}

struct RefAttention {
  std::vector<double> out;  // packed [T, H, Dh]
  std::vector<double> lse;  // packed [T, H]
};

// FP64 attention over packed [T, heads, Dh] operands (contiguous), sequences given by their lengths.
// GQA as HF's repeat_kv: kv heads are repeated g = H / Hkv times CONSECUTIVELY, so query head h reads
// repeated head h, which is kv head h / g.
inline RefAttention reference_attention(const std::vector<double>& q, const std::vector<double>& k,
                                        const std::vector<double>& v, const std::vector<int32_t>& lens, int64_t H,
                                        int64_t Hkv, int64_t Dh, double scale, bool causal) {
  int64_t T = 0;
  for (int32_t l : lens) T += l;
  const int64_t g = H / Hkv;
  // repeat_kv: [T, Hkv, Dh] -> [T, H, Dh]
  std::vector<double> kr(static_cast<size_t>(T * H * Dh)), vr(kr.size());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t hk = 0; hk < Hkv; ++hk) {
      for (int64_t r = 0; r < g; ++r) {
        for (int64_t c = 0; c < Dh; ++c) {
          kr[(t * H + hk * g + r) * Dh + c] = k[(t * Hkv + hk) * Dh + c];
          vr[(t * H + hk * g + r) * Dh + c] = v[(t * Hkv + hk) * Dh + c];
        }
      }
    }
  }
  RefAttention ref;
  ref.out.assign(static_cast<size_t>(T * H * Dh), 0.0);
  ref.lse.assign(static_cast<size_t>(T * H), 0.0);
  int64_t start = 0;
  for (int32_t len : lens) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < len; ++i) {
        std::vector<double> s(static_cast<size_t>(len));
        for (int64_t j = 0; j < len; ++j) {
          double dot = 0.0;
          for (int64_t c = 0; c < Dh; ++c)
            dot += q[((start + i) * H + h) * Dh + c] * kr[((start + j) * H + h) * Dh + c];
          s[j] = (causal && j > i) ? -std::numeric_limits<double>::infinity() : dot * scale;
        }
        const double m = *std::max_element(s.begin(), s.end());
        double l = 0.0;
        for (double& x : s) {
          x = std::exp(x - m);
          l += x;
        }
        for (int64_t c = 0; c < Dh; ++c) {
          double o = 0.0;
          for (int64_t j = 0; j < len; ++j) o += s[j] / l * vr[((start + j) * H + h) * Dh + c];
          ref.out[((start + i) * H + h) * Dh + c] = o;
        }
        ref.lse[(start + i) * H + h] = m + std::log(l);
      }
    }
    start += len;
  }
  return ref;
}

// Worst violation of |got - want| <= atol + rtol |want|, with the index of the worst element.
struct Closeness {
  double worst_excess = -1.0;  // max over elements of |got - want| - (atol + rtol |want|); <= 0 is a pass
  double max_abs = 0.0;
  int64_t worst_index = -1;
  double got = 0.0, want = 0.0;
  bool ok() const { return worst_excess <= 0.0; }
};
inline Closeness compare(const std::vector<double>& got, const std::vector<double>& want, double atol, double rtol) {
  Closeness c;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]);
    const double excess = std::isnan(got[i]) ? 1e30 : err - (atol + rtol * std::fabs(want[i]));
    c.max_abs = std::max(c.max_abs, err);
    if (excess > c.worst_excess) {
      c.worst_excess = excess;
      c.worst_index = static_cast<int64_t>(i);
      c.got = got[i];
      c.want = want[i];
    }
  }
  return c;
}
inline std::string describe(const Closeness& c) {
  return "max |err| " + std::to_string(c.max_abs) + ", worst at " + std::to_string(c.worst_index) + ": got " +
         std::to_string(c.got) + ", want " + std::to_string(c.want);
}

inline std::vector<double> random_values(int64_t n, uint32_t seed, double stddev = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = static_cast<double>(round_bf16(static_cast<float>(dist(rng))));  // BF16-exact values
  return v;
}

}  // namespace tg::testing
