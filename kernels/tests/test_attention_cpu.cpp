// CPU twins of kernels/attention against an independent FP64 reference (attention_test_util.h), plus the
// structural properties the contracts promise: varlen packing == separate sequences, the GQA head mapping,
// causality, the BF16 rounding point, strided (fused-QKV) inputs, backward == finite differences of the
// FP64 forward, decode == the last row of the full-sequence forward, the FP8 KV cache, decode's FP8 output
// (== quantize of the BF16 output), and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "common/fp8_tensor.h"
#include "common/numeric.h"
#include "kernels/attention/attention.h"
#include "kernels/quantize/quantize.h"
#include "kernels/tests/attention_test_util.h"
#include "kernels/tests/elementwise_test_util.h"

namespace tg {
namespace {

using kernels::AttentionOptions;
using kernels::DecodeOptions;
using kernels::KvCache;
using testing::compare;
using testing::describe;
using testing::host_tensor;
using testing::random_values;
using testing::to_double;

struct Problem {
  std::vector<int32_t> lens;
  int64_t H, Hkv, Dh;
  int64_t T() const {
    int64_t t = 0;
    for (int32_t l : lens) t += l;
    return t;
  }
  int64_t max_len() const {
    int64_t m = 1;
    for (int32_t l : lens) m = std::max<int64_t>(m, l);
    return m;
  }
};

// Packed BF16 inputs of a problem (BF16-exact values), kept as doubles for the reference as well.
struct Inputs {
  std::vector<double> q, k, v;
  Tensor tq, tk, tv, cu;
};
Inputs make_inputs(const Problem& p, uint32_t seed, DType dtype = DType::BF16) {
  Inputs in;
  const int64_t T = p.T();
  in.q = random_values(T * p.H * p.Dh, seed);
  in.k = random_values(T * p.Hkv * p.Dh, seed + 1);
  in.v = random_values(T * p.Hkv * p.Dh, seed + 2);
  in.tq = host_tensor(dtype, {T, p.H, p.Dh}, in.q);
  in.tk = host_tensor(dtype, {T, p.Hkv, p.Dh}, in.k);
  in.tv = host_tensor(dtype, {T, p.Hkv, p.Dh}, in.v);
  in.cu = testing::cu_seqlens_of(p.lens);
  return in;
}

struct FwdOut {
  Tensor out, lse;
};
FwdOut run_fwd(const Problem& p, const Inputs& in, bool causal, DType out_dtype = DType::F32) {
  FwdOut r{Tensor::empty(out_dtype, {p.T(), p.H, p.Dh}), Tensor::empty(DType::F32, {p.T(), p.H})};
  AttentionOptions opt;
  opt.causal = causal;
  kernels::attention_fwd(in.tq, in.tk, in.tv, in.cu, p.max_len(), opt, r.out, r.lse);
  return r;
}

std::string name(const Problem& p, bool causal) {
  std::string lens;
  for (int32_t l : p.lens) lens += std::to_string(l) + ",";
  return "lens {" + lens + "} H " + std::to_string(p.H) + " Hkv " + std::to_string(p.Hkv) + " Dh " +
         std::to_string(p.Dh) + (causal ? " causal" : " non-causal");
}

// The twin's FP32 output vs the FP64 reference. Tolerance: FP32 accumulation of Dh-long dot products and
// len-long sums of values of size ~1 (inputs ~N(0,1)): relative error ~1e-6; 2e-5 absolute leaves margin.
TEST(AttentionCpu, ForwardMatchesFp64ReferenceOnOddShapes) {
  for (int64_t dh : {16, 256}) {
    for (int64_t hkv : {1, 2, 8}) {
      for (const std::vector<int32_t>& lens : {std::vector<int32_t>{1}, {7}, {33}, {7, 1, 33}}) {
        for (bool causal : {true, false}) {
          const Problem p{lens, 8, hkv, dh};
          const Inputs in = make_inputs(p, 11 + static_cast<uint32_t>(dh + hkv));
          const FwdOut got = run_fwd(p, in, causal);
          const auto ref = testing::reference_attention(in.q, in.k, in.v, p.lens, p.H, p.Hkv, p.Dh,
                                                        1.0 / std::sqrt(static_cast<double>(dh)), causal);
          const auto c_out = compare(to_double(got.out), ref.out, 2e-5, 2e-5);
          EXPECT_TRUE(c_out.ok()) << name(p, causal) << " out: " << describe(c_out);
          const auto c_lse = compare(to_double(got.lse), ref.lse, 2e-5, 2e-6);
          EXPECT_TRUE(c_lse.ok()) << name(p, causal) << " lse: " << describe(c_lse);
        }
      }
    }
  }
}

// The documented rounding point: the BF16 output is the RNE rounding of the FP32 result, nothing else.
TEST(AttentionCpu, Bf16OutputIsTheRoundedFp32Output) {
  const Problem p{{9, 4}, 8, 2, 16};
  const Inputs in = make_inputs(p, 5);
  const FwdOut f32 = run_fwd(p, in, true, DType::F32);
  const FwdOut bf16 = run_fwd(p, in, true, DType::BF16);
  for (int64_t i = 0; i < f32.out.numel(); ++i) {
    ASSERT_EQ(bf16.out.ptr<uint16_t>()[i], float_to_bf16_bits(f32.out.ptr<float>()[i])) << "element " << i;
  }
  EXPECT_EQ(std::memcmp(f32.lse.data(), bf16.lse.data(), f32.lse.nbytes()), 0);
}

// Packing sequences into one THD batch computes exactly what each sequence computes alone (dense layout),
// and nothing of one sequence leaks into another.
TEST(AttentionCpu, VarlenPackingEqualsSeparateSequences) {
  const Problem p{{7, 0, 33, 1}, 8, 2, 16};
  const Inputs in = make_inputs(p, 21);
  const FwdOut packed = run_fwd(p, in, true, DType::BF16);
  int64_t start = 0;
  const int64_t row_q = p.H * p.Dh, row_kv = p.Hkv * p.Dh;
  for (int32_t len : p.lens) {
    if (len == 0) continue;
    Tensor q = Tensor::empty(DType::BF16, {1, len, p.H, p.Dh});
    Tensor k = Tensor::empty(DType::BF16, {1, len, p.Hkv, p.Dh});
    Tensor v = Tensor::empty(DType::BF16, {1, len, p.Hkv, p.Dh});
    std::memcpy(q.data(), in.tq.ptr<uint16_t>() + start * row_q, q.nbytes());
    std::memcpy(k.data(), in.tk.ptr<uint16_t>() + start * row_kv, k.nbytes());
    std::memcpy(v.data(), in.tv.ptr<uint16_t>() + start * row_kv, v.nbytes());
    Tensor out = Tensor::empty(DType::BF16, {1, len, p.H, p.Dh});
    Tensor lse = Tensor::empty(DType::F32, {1, p.H, len});
    kernels::attention_fwd(q, k, v, TensorView{}, 0, AttentionOptions{}, out, lse);
    EXPECT_EQ(std::memcmp(out.data(), packed.out.ptr<uint16_t>() + start * row_q, out.nbytes()), 0)
        << "sequence at token " << start << " (length " << len << ")";
    for (int64_t h = 0; h < p.H; ++h) {
      for (int64_t i = 0; i < len; ++i) {
        ASSERT_EQ(lse.ptr<float>()[h * len + i], packed.lse.ptr<float>()[(start + i) * p.H + h])
            << "lse of token " << start + i << " head " << h;
      }
    }
    start += len;
  }
}

// Dense [B, S, H, Dh] and packed [T, H, Dh] with equal lengths are the same computation.
TEST(AttentionCpu, DenseEqualsPackedWithEqualLengths) {
  const Problem p{{5, 5, 5}, 4, 1, 16};
  const Inputs in = make_inputs(p, 31);
  const FwdOut packed = run_fwd(p, in, true, DType::BF16);
  Tensor out = Tensor::empty(DType::BF16, {3, 5, p.H, p.Dh});
  Tensor lse = Tensor::empty(DType::F32, {3, p.H, 5});
  kernels::attention_fwd(in.tq.view().reshape({3, 5, p.H, p.Dh}), in.tk.view().reshape({3, 5, p.Hkv, p.Dh}),
                         in.tv.view().reshape({3, 5, p.Hkv, p.Dh}), TensorView{}, 0, AttentionOptions{}, out, lse);
  EXPECT_EQ(std::memcmp(out.data(), packed.out.data(), out.nbytes()), 0);
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t i = 0; i < 5; ++i)
        ASSERT_EQ(lse.ptr<float>()[(b * p.H + h) * 5 + i], packed.lse.ptr<float>()[(b * 5 + i) * p.H + h]);
}

// GQA: query head h must read kv head h / g (HF repeat_kv), not h % Hkv. With K = 0 every query attends
// uniformly, so out[h] is the mean of the V rows of ITS kv head; kv head j holds the constant j + 1.
// H = 8, Hkv = 2 (g = 4): heads 0..3 -> 1.0, heads 4..7 -> 2.0 (h % Hkv would give 1,2,1,2,...).
TEST(AttentionCpu, GqaMapsQueryHeadToKvHeadHOverG) {
  const Problem p{{3, 6}, 8, 2, 16};
  Inputs in = make_inputs(p, 41);
  std::fill(in.k.begin(), in.k.end(), 0.0);
  for (int64_t t = 0; t < p.T(); ++t)
    for (int64_t hk = 0; hk < p.Hkv; ++hk)
      for (int64_t c = 0; c < p.Dh; ++c) in.v[(t * p.Hkv + hk) * p.Dh + c] = static_cast<double>(hk + 1);
  in.tk = host_tensor(DType::BF16, {p.T(), p.Hkv, p.Dh}, in.k);
  in.tv = host_tensor(DType::BF16, {p.T(), p.Hkv, p.Dh}, in.v);
  for (bool causal : {true, false}) {
    const FwdOut got = run_fwd(p, in, causal);
    for (int64_t t = 0; t < p.T(); ++t)
      for (int64_t h = 0; h < p.H; ++h)
        for (int64_t c = 0; c < p.Dh; ++c)
          ASSERT_EQ(got.out.ptr<float>()[(t * p.H + h) * p.Dh + c], static_cast<float>(h / 4 + 1))
              << "token " << t << " head " << h;
  }
}

// Causal: row i never depends on keys / values after i; the last row sees everything, so it equals the
// non-causal last row bit for bit.
TEST(AttentionCpu, CausalRowsIgnoreTheFuture) {
  const Problem p{{17}, 4, 2, 16};
  const Inputs in = make_inputs(p, 51);
  const FwdOut base = run_fwd(p, in, true);
  Inputs changed;
  changed.q = in.q;
  changed.k = in.k;
  changed.v = in.v;
  changed.tq = Tensor::copy_of(in.tq, Device::CPU);
  changed.cu = Tensor::copy_of(in.cu, Device::CPU);
  const int64_t cut = 9;  // perturb keys / values of positions > cut
  for (int64_t t = cut + 1; t < p.T(); ++t)
    for (int64_t i = 0; i < p.Hkv * p.Dh; ++i) {
      changed.k[t * p.Hkv * p.Dh + i] += 1.0;
      changed.v[t * p.Hkv * p.Dh + i] -= 2.0;
    }
  changed.tk = host_tensor(DType::BF16, {p.T(), p.Hkv, p.Dh}, changed.k);
  changed.tv = host_tensor(DType::BF16, {p.T(), p.Hkv, p.Dh}, changed.v);
  const FwdOut other = run_fwd(p, changed, true);
  const int64_t row = p.H * p.Dh;
  EXPECT_EQ(std::memcmp(base.out.data(), other.out.data(), (cut + 1) * row * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(base.out.ptr<float>() + (cut + 1) * row, other.out.ptr<float>() + (cut + 1) * row,
                        row * sizeof(float)),
            0);
  const FwdOut full = run_fwd(p, in, false);
  EXPECT_EQ(std::memcmp(base.out.ptr<float>() + (p.T() - 1) * row, full.out.ptr<float>() + (p.T() - 1) * row,
                        row * sizeof(float)),
            0);
  EXPECT_NE(std::memcmp(base.out.data(), full.out.data(), row * sizeof(float)), 0);
}

// q, k, v as column slices of one fused QKV projection [T, (H + 2 Hkv) Dh] (token stride > heads * Dh).
TEST(AttentionCpu, StridedFusedQkvViewsMatchContiguousInputs) {
  const Problem p{{6, 11}, 4, 2, 16};
  const Inputs in = make_inputs(p, 61);
  const int64_t T = p.T(), wq = p.H * p.Dh, wkv = p.Hkv * p.Dh, w = wq + 2 * wkv;
  Tensor qkv = Tensor::empty(DType::BF16, {T, w});
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(qkv.ptr<uint16_t>() + t * w, in.tq.ptr<uint16_t>() + t * wq, wq * 2);
    std::memcpy(qkv.ptr<uint16_t>() + t * w + wq, in.tk.ptr<uint16_t>() + t * wkv, wkv * 2);
    std::memcpy(qkv.ptr<uint16_t>() + t * w + wq + wkv, in.tv.ptr<uint16_t>() + t * wkv, wkv * 2);
  }
  auto view = [&](int64_t col, int64_t heads) {
    return TensorView(qkv.ptr<uint16_t>() + col, DType::BF16, Shape{T, heads, p.Dh}, Shape{w, p.Dh, 1}, Device::CPU);
  };
  const FwdOut want = run_fwd(p, in, true);
  FwdOut got{Tensor::empty(DType::F32, {T, p.H, p.Dh}), Tensor::empty(DType::F32, {T, p.H})};
  kernels::attention_fwd(view(0, p.H), view(wq, p.Hkv), view(wq + wkv, p.Hkv), in.cu, p.max_len(), AttentionOptions{},
                         got.out, got.lse);
  EXPECT_EQ(std::memcmp(got.out.data(), want.out.data(), want.out.nbytes()), 0);
  EXPECT_EQ(std::memcmp(got.lse.data(), want.lse.data(), want.lse.nbytes()), 0);
}

// Backward vs central finite differences of the FP64 reference forward, loss = sum(dout * out).
// The twin runs on F32 inputs (exactly the doubles the reference sees) with F32 gradients; its FP32
// accumulation gives relative errors ~1e-6, the O(h^2) difference error is ~1e-9: atol 2e-4 relative to the
// largest gradient entry, rtol 1e-3.
void check_backward_against_finite_differences(const Problem& p, bool causal, int64_t max_checks, uint32_t seed) {
  const Inputs in = make_inputs(p, seed, DType::F32);
  const int64_t T = p.T();
  const std::vector<double> w = random_values(T * p.H * p.Dh, seed + 7);
  const Tensor dout = host_tensor(DType::F32, {T, p.H, p.Dh}, w);
  const double scale = 1.0 / std::sqrt(static_cast<double>(p.Dh));
  const FwdOut fwd = run_fwd(p, in, causal);
  Tensor dq = Tensor::empty(DType::F32, {T, p.H, p.Dh});
  Tensor dk = Tensor::empty(DType::F32, {T, p.Hkv, p.Dh});
  Tensor dv = Tensor::empty(DType::F32, {T, p.Hkv, p.Dh});
  AttentionOptions opt;
  opt.causal = causal;
  kernels::attention_bwd(in.tq, in.tk, in.tv, fwd.out, fwd.lse, dout, in.cu, p.max_len(), opt, dq, dk, dv);

  auto loss = [&](const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v) {
    const auto r = testing::reference_attention(q, k, v, p.lens, p.H, p.Hkv, p.Dh, scale, causal);
    double l = 0.0;
    for (size_t i = 0; i < w.size(); ++i) l += w[i] * r.out[i];
    return l;
  };
  const double h = 1e-4;
  std::vector<double> q = in.q, k = in.k, v = in.v;
  for (auto [which, grad, label] : {std::tuple{&q, &dq, "dq"}, std::tuple{&k, &dk, "dk"}, std::tuple{&v, &dv, "dv"}}) {
    const int64_t n = static_cast<int64_t>(which->size());
    const int64_t step = std::max<int64_t>(1, n / max_checks);
    std::vector<double> fd, an;
    for (int64_t i = 0; i < n; i += step) {
      const double x = (*which)[i];
      (*which)[i] = x + h;
      const double lp = loss(q, k, v);
      (*which)[i] = x - h;
      const double lm = loss(q, k, v);
      (*which)[i] = x;
      fd.push_back((lp - lm) / (2 * h));
      an.push_back(grad->ptr<float>()[i]);
    }
    double gmax = 0.0;
    for (double g : fd) gmax = std::max(gmax, std::fabs(g));
    const auto c = compare(an, fd, 2e-4 * std::max(gmax, 1e-3), 1e-3);
    EXPECT_TRUE(c.ok()) << name(p, causal) << " " << label << ": " << describe(c);
    EXPECT_GT(gmax, 1e-3) << label << " is suspiciously zero";
  }
}

TEST(AttentionCpu, BackwardMatchesFiniteDifferencesMqaGqaMha) {
  for (int64_t hkv : {1, 2, 4}) {
    for (bool causal : {true, false}) {
      check_backward_against_finite_differences(Problem{{3, 1, 5}, 4, hkv, 16}, causal, 4096, 71);
    }
  }
}

TEST(AttentionCpu, BackwardMatchesFiniteDifferencesHeadDim256) {
  check_backward_against_finite_differences(Problem{{4, 2}, 8, 2, 256}, true, 96, 81);
}

// The twin's backward at the rounding points: BF16 gradients are the rounded FP32 gradients.
TEST(AttentionCpu, BackwardBf16GradientsAreRoundedFp32Gradients) {
  const Problem p{{5, 8}, 4, 2, 16};
  const Inputs in = make_inputs(p, 91);
  const FwdOut fwd = run_fwd(p, in, true, DType::BF16);
  const Tensor dout = host_tensor(DType::BF16, {p.T(), p.H, p.Dh}, random_values(p.T() * p.H * p.Dh, 92));
  Tensor g32[3] = {Tensor::empty(DType::F32, {p.T(), p.H, p.Dh}), Tensor::empty(DType::F32, {p.T(), p.Hkv, p.Dh}),
                   Tensor::empty(DType::F32, {p.T(), p.Hkv, p.Dh})};
  Tensor g16[3] = {Tensor::empty(DType::BF16, {p.T(), p.H, p.Dh}), Tensor::empty(DType::BF16, {p.T(), p.Hkv, p.Dh}),
                   Tensor::empty(DType::BF16, {p.T(), p.Hkv, p.Dh})};
  kernels::attention_bwd(in.tq, in.tk, in.tv, fwd.out, fwd.lse, dout, in.cu, p.max_len(), AttentionOptions{}, g32[0],
                         g32[1], g32[2]);
  kernels::attention_bwd(in.tq, in.tk, in.tv, fwd.out, fwd.lse, dout, in.cu, p.max_len(), AttentionOptions{}, g16[0],
                         g16[1], g16[2]);
  for (int t = 0; t < 3; ++t)
    for (int64_t i = 0; i < g32[t].numel(); ++i)
      ASSERT_EQ(g16[t].ptr<uint16_t>()[i], float_to_bf16_bits(g32[t].ptr<float>()[i])) << "grad " << t << " at " << i;
}

// ---- Decode ------------------------------------------------------------------------------------------------

struct Cache {
  Tensor k, v, k_scale, v_scale;
  KvCache view() const { return KvCache{k, v, k_scale, v_scale}; }
};
Cache make_cache(int64_t B, int64_t max_seq, int64_t Hkv, int64_t Dh, DType dtype, int64_t n_scales = 0) {
  Cache c{Tensor::zeros(dtype, {B, max_seq, Hkv, Dh}), Tensor::zeros(dtype, {B, max_seq, Hkv, Dh}), {}, {}};
  if (dtype == DType::E4M3) {
    c.k_scale = Tensor::empty(DType::F32, {n_scales});
    c.v_scale = Tensor::empty(DType::F32, {n_scales});
    for (int64_t i = 0; i < n_scales; ++i) {
      c.k_scale.ptr<float>()[i] = 0.02f * static_cast<float>(i + 1);
      c.v_scale.ptr<float>()[i] = 0.015f * static_cast<float>(i + 2);
    }
  }
  return c;
}

Tensor i32_tensor(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty(DType::I32, {static_cast<int64_t>(v.size())});
  std::memcpy(t.data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

// Fills a cache by appending random rows one position at a time (sequence b gets lens[b] rows).
void fill_cache(const Cache& cache, const std::vector<int32_t>& lens, uint32_t seed) {
  const int64_t B = cache.k.shape()[0], Hkv = cache.k.shape()[2], Dh = cache.k.shape()[3];
  int32_t longest = 0;
  for (int32_t l : lens) longest = std::max(longest, l);
  for (int32_t pos = 0; pos < longest; ++pos) {
    std::vector<int32_t> positions(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) positions[b] = pos < lens[b] ? pos : -1;  // finished: -1, not written
    const Tensor kn = host_tensor(DType::BF16, {B, Hkv, Dh}, random_values(B * Hkv * Dh, seed + 2 * pos));
    const Tensor vn = host_tensor(DType::BF16, {B, Hkv, Dh}, random_values(B * Hkv * Dh, seed + 2 * pos + 1));
    kernels::kv_cache_append(kn, vn, i32_tensor(positions), cache.view());
  }
}
// The values a cache holds, dequantised, as doubles [B, max_seq, Hkv, Dh].
std::vector<double> dequantised(const Tensor& t, const Tensor& scale) {
  const int64_t Hkv = t.shape()[2], Dh = t.shape()[3];
  std::vector<double> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (t.dtype() == DType::BF16) {
      out[i] = bf16_bits_to_float(t.ptr<uint16_t>()[i]);
    } else {
      const int64_t hk = (i / Dh) % Hkv;
      const float s = scale.numel() == 1 ? scale.ptr<float>()[0] : scale.ptr<float>()[hk];
      out[i] = static_cast<double>(decode(DType::E4M3, t.ptr<uint8_t>()[i])) * s;
    }
  }
  return out;
}

// Decode of every sequence vs the FP64 reference over the cache contents (BF16 output: tolerance one BF16
// rounding, 2^-8 relative, plus the FP32 accumulation error).
void check_decode(DType cache_dtype, int64_t n_scales, int64_t H, int64_t Hkv, int64_t Dh) {
  const std::vector<int32_t> lens = {1, 13, 0, 40};
  const int64_t B = 4, max_seq = 41;
  const Cache cache = make_cache(B, max_seq, Hkv, Dh, cache_dtype, n_scales);
  fill_cache(cache, lens, 101);
  const std::vector<double> kd = dequantised(cache.k, cache.k_scale), vd = dequantised(cache.v, cache.v_scale);
  const std::vector<double> qv = random_values(B * H * Dh, 202);
  const Tensor q = host_tensor(DType::BF16, {B, H, Dh}, qv);
  Tensor out = Tensor::empty(DType::BF16, {B, H, Dh});
  kernels::decode_attention(q, cache.view(), i32_tensor(lens), DecodeOptions{}, out);
  for (int64_t b = 0; b < B; ++b) {
    const int32_t len = lens[b];
    std::vector<double> qb(qv.begin() + b * H * Dh, qv.begin() + (b + 1) * H * Dh);
    std::vector<double> got(static_cast<size_t>(H * Dh));
    for (int64_t i = 0; i < H * Dh; ++i) got[i] = bf16_bits_to_float(out.ptr<uint16_t>()[b * H * Dh + i]);
    if (len == 0) {
      for (double g : got) ASSERT_EQ(g, 0.0) << "an empty sequence must give zeros";
      continue;
    }
    // The query as a 1-token sequence attending (non-causally) over len cached rows: pad q to len rows.
    std::vector<double> kb(kd.begin() + b * max_seq * Hkv * Dh, kd.begin() + (b * max_seq + len) * Hkv * Dh);
    std::vector<double> vb(vd.begin() + b * max_seq * Hkv * Dh, vd.begin() + (b * max_seq + len) * Hkv * Dh);
    std::vector<double> qpad(static_cast<size_t>(len * H * Dh), 0.0);
    std::copy(qb.begin(), qb.end(), qpad.begin() + (len - 1) * H * Dh);
    const auto ref = testing::reference_attention(qpad, kb, vb, {len}, H, Hkv, Dh,
                                                  1.0 / std::sqrt(static_cast<double>(Dh)), /*causal=*/true);
    const std::vector<double> want(ref.out.begin() + (len - 1) * H * Dh, ref.out.end());
    const auto c = compare(got, want, 1e-5, 1.0 / 256);
    EXPECT_TRUE(c.ok()) << "cache " << cache_dtype << " scales " << n_scales << " H " << H << " Hkv " << Hkv << " Dh "
                        << Dh << " sequence " << b << ": " << describe(c);
  }
}

TEST(AttentionCpu, DecodeMatchesFp64ReferenceBf16Cache) {
  for (int64_t dh : {16, 256}) {
    check_decode(DType::BF16, 0, 8, 1, dh);
    check_decode(DType::BF16, 0, 8, 2, dh);
    check_decode(DType::BF16, 0, 4, 4, dh);
  }
}

TEST(AttentionCpu, DecodeMatchesFp64ReferenceFp8Cache) {
  check_decode(DType::E4M3, 1, 8, 2, 16);  // per-tensor scale
  check_decode(DType::E4M3, 2, 8, 2, 16);  // per-head scales
  check_decode(DType::E4M3, 2, 8, 2, 256);
}

// KV-cached decode == the last row of the full-sequence (prefill) forward, bit for bit on the CPU: the two
// twins perform the same FP32 operations in the same order.
TEST(AttentionCpu, DecodeEqualsLastRowOfFullSequenceForward) {
  for (int64_t hkv : {1, 2}) {
    const int64_t L = 23, H = 8, Dh = 16;
    const Problem p{{static_cast<int32_t>(L)}, H, hkv, Dh};
    const Inputs in = make_inputs(p, 111);
    const FwdOut full = run_fwd(p, in, true, DType::BF16);
    const Cache cache = make_cache(1, L + 5, hkv, Dh, DType::BF16);
    for (int64_t t = 0; t < L; ++t) {  // append token by token, as generation does
      Tensor kn = Tensor::empty(DType::BF16, {1, hkv, Dh}), vn = Tensor::empty(DType::BF16, {1, hkv, Dh});
      std::memcpy(kn.data(), in.tk.ptr<uint16_t>() + t * hkv * Dh, kn.nbytes());
      std::memcpy(vn.data(), in.tv.ptr<uint16_t>() + t * hkv * Dh, vn.nbytes());
      kernels::kv_cache_append(kn, vn, i32_tensor({static_cast<int32_t>(t)}), cache.view());
    }
    Tensor q = Tensor::empty(DType::BF16, {1, H, Dh});
    std::memcpy(q.data(), in.tq.ptr<uint16_t>() + (L - 1) * H * Dh, q.nbytes());
    Tensor out = Tensor::empty(DType::BF16, {1, H, Dh});
    kernels::decode_attention(q, cache.view(), i32_tensor({static_cast<int32_t>(L)}), DecodeOptions{}, out);
    EXPECT_EQ(std::memcmp(out.data(), full.out.ptr<uint16_t>() + (L - 1) * H * Dh, out.nbytes()), 0) << "Hkv " << hkv;
  }
}

TEST(AttentionCpu, AppendWritesRowsAtPositionsAndSkipsNegative) {
  const int64_t B = 3, max_seq = 6, Hkv = 2, Dh = 16;
  for (DType dtype : {DType::BF16, DType::E4M3}) {
    const Cache cache = make_cache(B, max_seq, Hkv, Dh, dtype, 2);
    const std::vector<double> kv = random_values(B * Hkv * Dh, 5), vv = random_values(B * Hkv * Dh, 6);
    const Tensor kn = host_tensor(DType::BF16, {B, Hkv, Dh}, kv), vn = host_tensor(DType::BF16, {B, Hkv, Dh}, vv);
    kernels::kv_cache_append(kn, vn, i32_tensor({4, -1, 0}), cache.view());
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t pos = 0; pos < max_seq; ++pos) {
        const bool written = (b == 0 && pos == 4) || (b == 2 && pos == 0);
        for (int64_t i = 0; i < Hkv * Dh; ++i) {
          const int64_t at = (b * max_seq + pos) * Hkv * Dh + i;
          for (auto [t, src, sc] :
               {std::tuple{&cache.k, &kv, &cache.k_scale}, std::tuple{&cache.v, &vv, &cache.v_scale}}) {
            uint32_t want = 0;
            if (written) {
              const float x = static_cast<float>((*src)[b * Hkv * Dh + i]);
              want = dtype == DType::BF16 ? float_to_bf16_bits(x) : encode(DType::E4M3, x / sc->ptr<float>()[i / Dh]);
            }
            const uint32_t got = dtype == DType::BF16 ? t->ptr<uint16_t>()[at] : t->ptr<uint8_t>()[at];
            ASSERT_EQ(got, want) << dtype << " b " << b << " pos " << pos << " i " << i;
          }
        }
      }
    }
  }
}

// ---- decode's optional FP8 output (DecodeOptions::fp8_out) --------------------------------------------------

// fp8_out == kernels::quantize(BF16 decode output) bit for bit: codes, scale_inv and amax (max-reduced into an old
// value below and above the output's max), with a scale that keeps most codes finite and one that saturates many;
// out empty (FP8 only) or given (then out is the plain call's output too), data [B, H * Dh] or [B, H, Dh].
TEST(AttentionCpu, DecodeFp8OutEqualsQuantizeOfOutput) {
  const std::vector<int32_t> lens = {1, 13, 0, 40};
  const int64_t B = 4, H = 8, Dh = 16, max_seq = 41;
  // testing::fp8_output's per-tensor E4M3 [B, H * Dh] bundle, data zeroed and scale_inv -1 (the call must write it).
  const auto fp8_out = [&](float scale, float old_amax) {
    Fp8Tensor f = testing::fp8_output(DType::E4M3, B, H * Dh, true, false, scale, old_amax, Device::CPU);
    zero_bytes(f.view().data);
    copy_bytes(f.view().scale_inv, testing::scalar_f32(-1.0f, Device::CPU));
    return f;
  };
  for (auto [dtype, n_scales] : {std::tuple{DType::BF16, int64_t{0}}, std::tuple{DType::E4M3, int64_t{2}}}) {
    const Cache cache = make_cache(B, max_seq, 2, Dh, dtype, n_scales);
    fill_cache(cache, lens, 303);
    const Tensor q = host_tensor(DType::BF16, {B, H, Dh}, random_values(B * H * Dh, 404));
    Tensor plain = Tensor::empty(DType::BF16, {B, H, Dh});
    kernels::decode_attention(q, cache.view(), i32_tensor(lens), DecodeOptions{}, plain);
    float out_max = 0.0f;
    for (int64_t i = 0; i < plain.numel(); ++i) {
      out_max = std::max(out_max, std::fabs(bf16_bits_to_float(plain.ptr<uint16_t>()[i])));
    }
    ASSERT_GT(out_max, 0.0f);
    for (float scale : {37.5f, 1000.0f}) {
      for (float old_amax : {0.5f * out_max, 4.0f * out_max}) {
        const std::string what = std::string(dtype_name(dtype)) + " scale " + std::to_string(scale) + " old amax " +
                                 std::to_string(old_amax);
        const Fp8Tensor want = fp8_out(scale, old_amax);
        kernels::quantize(plain.view().reshape({B, H * Dh}), want.view());
        const testing::E4m3Codes codes = testing::count_e4m3_codes(want.view().data);
        ASSERT_GT(codes.nonzero, 0) << what;
        if (scale == 1000.0f) {
          ASSERT_GT(codes.saturated, 0) << what << ": the saturating scale saturates nothing";
        }
        EXPECT_EQ(testing::read_scalar(want.view().amax), std::max(old_amax, out_max)) << what;
        for (bool with_out : {false, true}) {
          const Fp8Tensor got = fp8_out(scale, old_amax);
          DecodeOptions opt;
          opt.fp8_out = got.view();
          if (with_out) opt.fp8_out.data = opt.fp8_out.data.reshape({B, H, Dh});  // the [B, H, Dh] form
          Tensor out = Tensor::zeros(DType::BF16, {B, H, Dh});
          kernels::decode_attention(q, cache.view(), i32_tensor(lens), opt, with_out ? out.view() : TensorView{});
          EXPECT_TRUE(testing::bits_equal(got.view().data, want.view().data)) << what;
          EXPECT_TRUE(testing::bits_equal(got.view().scale_inv, want.view().scale_inv)) << what;
          EXPECT_TRUE(testing::bits_equal(got.view().amax, want.view().amax)) << what;
          if (with_out) {
            EXPECT_EQ(std::memcmp(out.data(), plain.data(), plain.nbytes()), 0) << what;
          }
        }
      }
    }
  }
}

// The message of the tg::Error `f` throws ("" when it does not throw).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(AttentionCpu, DecodeFp8OutRejectsBadArguments) {
  const int64_t B = 2, H = 4, Dh = 16;
  const Cache cache = make_cache(B, 8, 2, Dh, DType::BF16);
  fill_cache(cache, {3, 5}, 9);
  const Tensor q = host_tensor(DType::BF16, {B, H, Dh}, random_values(B * H * Dh, 10));
  const Tensor lens = i32_tensor({3, 5});
  const auto run = [&](const Fp8View& f, const TensorView& out) {
    return error_of([&] {
      DecodeOptions opt;
      opt.fp8_out = f;
      kernels::decode_attention(q, cache.view(), lens, opt, out);
    });
  };
  const Fp8Tensor ok = testing::fp8_output(DType::E4M3, B, H * Dh, true, false, 2.0f, 0.0f, Device::CPU);
  EXPECT_EQ(run(ok.view(), TensorView{}), "");  // the valid call, so that each rejection below is the one change
  Fp8View no_amax = ok.view();
  no_amax.amax = TensorView{};
  EXPECT_EQ(run(no_amax, TensorView{}), "");  // amax is optional, as quantize's

  const auto expect_names = [](const std::string& msg, const char* name) {
    EXPECT_NE(msg.find(name), std::string::npos) << "expected a message naming " << name << ", got '" << msg << "'";
  };
  Fp8View e5 = ok.view();
  const Tensor e5_data = Tensor::zeros(DType::E5M2, {B, H * Dh});
  e5.data = e5_data;
  expect_names(run(e5, TensorView{}), "fp8_out.data");
  Fp8View wide = ok.view();
  const Tensor wide_data = Tensor::zeros(DType::E4M3, {B, H * Dh + 1});
  wide.data = wide_data;
  expect_names(run(wide, TensorView{}), "fp8_out.data");
  Fp8View rows = ok.view();
  const Tensor rows_data = Tensor::zeros(DType::E4M3, {B + 1, H * Dh});
  rows.data = rows_data;
  expect_names(run(rows, TensorView{}), "fp8_out.data");
  Fp8View no_scale = ok.view();
  no_scale.scale = TensorView{};
  expect_names(run(no_scale, TensorView{}), "fp8_out.scale");
  Fp8View bad_scale_inv = ok.view();
  const Tensor two = Tensor::zeros(DType::F32, {2});
  bad_scale_inv.scale_inv = two;
  expect_names(run(bad_scale_inv, TensorView{}), "fp8_out.scale_inv");
  Fp8View bad_amax = ok.view();
  const Tensor amax16 = Tensor::zeros(DType::BF16, {1});
  bad_amax.amax = amax16;
  expect_names(run(bad_amax, TensorView{}), "fp8_out.amax");
  Fp8View block = ok.view();
  block.mode = ScalingMode::kBlock1x128;
  expect_names(run(block, TensorView{}), "fp8_out");
  expect_names(run(Fp8View{}, TensorView{}), "nothing to write");
  // A wrong BF16 out beside a valid fp8_out is still rejected.
  EXPECT_NE(run(ok.view(), Tensor::zeros(DType::BF16, {B, H, Dh + 1}).view()), "");
}

// ---- Bad input ---------------------------------------------------------------------------------------------

TEST(AttentionCpu, RejectsBadArguments) {
  const Problem p{{4, 3}, 4, 2, 16};
  const Inputs in = make_inputs(p, 7);
  Tensor out = Tensor::empty(DType::BF16, {7, 4, 16}), lse = Tensor::empty(DType::F32, {7, 4});
  const AttentionOptions opt;
  auto fwd = [&](const TensorView& q, const TensorView& k, const TensorView& cu, int64_t max_len, const TensorView& o,
                 const TensorView& l) { kernels::attention_fwd(q, k, in.tv, cu, max_len, opt, o, l); };
  EXPECT_NO_THROW(fwd(in.tq, in.tk, in.cu, 4, out, lse));
  EXPECT_THROW(fwd(in.tq, in.tk, in.cu, 3, out, lse), Error);                           // a length > max_seqlen
  EXPECT_THROW(fwd(in.tq, in.tk, TensorView{}, 4, out, lse), Error);                    // packed without cu_seqlens
  EXPECT_THROW(fwd(in.tq, in.tk, testing::cu_seqlens_of({4, 4}), 4, out, lse), Error);  // cu[B] != T
  Tensor bad_cu = testing::cu_seqlens_of({4, 3});
  bad_cu.ptr<int32_t>()[1] = 8;
  EXPECT_THROW(fwd(in.tq, in.tk, bad_cu, 8, out, lse), Error);  // decreasing
  Tensor k3 = Tensor::empty(DType::BF16, {7, 3, 16});
  EXPECT_THROW(kernels::attention_fwd(in.tq, k3, k3, in.cu, 4, opt, out, lse), Error);                  // H % Hkv != 0
  EXPECT_THROW(fwd(in.tq, in.tk, in.cu, 4, out, Tensor::empty(DType::F32, {4, 7}).view()), Error);      // lse shape
  EXPECT_THROW(fwd(in.tq, in.tk, in.cu, 4, Tensor::empty(DType::F16, {7, 4, 16}).view(), lse), Error);  // dtype
  const TensorView strided_heads(in.tq.data(), DType::BF16, Shape{7, 2, 16}, Shape{64, 32, 1}, Device::CPU);
  EXPECT_THROW(kernels::attention_fwd(strided_heads, in.tk, in.tv, in.cu, 4, opt,
                                      Tensor::empty(DType::BF16, {7, 2, 16}).view(), TensorView{}),
               Error);  // head stride != Dh
  AttentionOptions neg;
  neg.scale = -1.0f;
  EXPECT_THROW(kernels::attention_fwd(in.tq, in.tk, in.tv, in.cu, 4, neg, out, lse), Error);

  const Cache cache = make_cache(2, 8, 2, 16, DType::BF16);
  Tensor q = Tensor::empty(DType::BF16, {2, 4, 16}), o = Tensor::empty(DType::BF16, {2, 4, 16});
  EXPECT_THROW(kernels::decode_attention(q, cache.view(), i32_tensor({1, 9}), DecodeOptions{}, o), Error);  // > max
  EXPECT_THROW(kernels::decode_attention(Tensor::empty(DType::BF16, {2, 3, 16}), cache.view(), i32_tensor({1, 1}),
                                         DecodeOptions{}, Tensor::empty(DType::BF16, {2, 3, 16})),
               Error);  // H % Hkv
  const Cache fp8 = make_cache(2, 8, 2, 16, DType::E4M3, 2);
  KvCache no_scale = fp8.view();
  no_scale.k_scale = TensorView{};
  EXPECT_THROW(kernels::decode_attention(q, no_scale, i32_tensor({1, 1}), DecodeOptions{}, o), Error);
  EXPECT_THROW(kernels::kv_cache_append(Tensor::empty(DType::BF16, {2, 2, 8}), Tensor::empty(DType::BF16, {2, 2, 8}),
                                        i32_tensor({0, 0}), cache.view()),
               Error);  // Dh mismatch
}

}  // namespace
}  // namespace tg
