// CPU twins of kernels/attention: explicit attention with simple loops, FP32 arithmetic at the rounding
// points documented in attention.h. These are the golden the CUDA kernels are tested against.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "common/numeric.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/attention_args.h"
#include "kernels/quantize/quantize.h"

namespace tg::kernels::cpu {

namespace {

using attn::Dims;
using attn::Strides;

float load(const TensorView& t, int64_t i) {
  return t.dtype == DType::F32 ? t.ptr<const float>()[i] : bf16_bits_to_float(t.ptr<const uint16_t>()[i]);
}
void store(const TensorView& t, int64_t i, float x) {
  if (t.dtype == DType::F32) {
    t.ptr<float>()[i] = x;
  } else {
    t.ptr<uint16_t>()[i] = float_to_bf16_bits(x);
  }
}

// Start token of every sequence (packed: cu_seqlens; dense: b * S) and its length, validated.
struct Seqs {
  std::vector<int64_t> start, len;
};
Seqs read_seqs(const Dims& d, const TensorView& cu_seqlens, const char* what) {
  Seqs s;
  s.start.resize(d.B);
  s.len.resize(d.B);
  if (!d.packed) {
    for (int64_t b = 0; b < d.B; ++b) {
      s.start[b] = b * d.S;
      s.len[b] = d.S;
    }
    return s;
  }
  const int32_t* cu = cu_seqlens.ptr<const int32_t>();
  TG_CHECK(cu[0] == 0, what, ": cu_seqlens[0] must be 0, got ", cu[0]);
  TG_CHECK(cu[d.B] == d.T, what, ": cu_seqlens[B] must equal the token count T = ", d.T, ", got ", cu[d.B]);
  for (int64_t b = 0; b < d.B; ++b) {
    const int64_t len = static_cast<int64_t>(cu[b + 1]) - cu[b];
    TG_CHECK(len >= 0, what, ": cu_seqlens must be non-decreasing, got cu_seqlens[", b, "] = ", cu[b], " > cu_seqlens[",
             b + 1, "] = ", cu[b + 1]);
    TG_CHECK(len <= d.S, what, ": sequence ", b, " has length ", len, " > max_seqlen ", d.S);
    s.start[b] = cu[b];
    s.len[b] = len;
  }
  return s;
}

// Index of element (sequence b, position i, head h, dim 0) of an operand.
int64_t row_index(const Strides& st, const Seqs& seqs, const Dims& d, int64_t b, int64_t i, int64_t h) {
  const int64_t tok = d.packed ? seqs.start[b] + i : i;
  return (d.packed ? 0 : b * st.batch) + tok * st.token + h * st.head;
}
int64_t lse_index(const Seqs& seqs, const Dims& d, int64_t b, int64_t i, int64_t h) {
  return d.packed ? (seqs.start[b] + i) * d.H + h : (b * d.H + h) * d.S + i;
}

// One sequence's rows of one head of an operand, converted exactly to FP32: [len, Dh].
std::vector<float> gather(const TensorView& t, const Seqs& seqs, const Dims& d, int64_t b, int64_t h) {
  const Strides st = attn::strides_of(t, d.packed);
  const int64_t len = seqs.len[b];
  std::vector<float> rows(static_cast<size_t>(len * d.Dh));
  for (int64_t i = 0; i < len; ++i) {
    const int64_t base = row_index(st, seqs, d, b, i, h);
    for (int64_t c = 0; c < d.Dh; ++c) rows[i * d.Dh + c] = load(t, base + c);
  }
  return rows;
}

// Scores of query row q_i against keys 0..n-1 (FP32 dot in index order, then * scale).
void scores(const float* qi, const std::vector<float>& k, int64_t n, int64_t dh, float scale, std::vector<float>& s) {
  for (int64_t j = 0; j < n; ++j) {
    float acc = 0.0f;
    for (int64_t c = 0; c < dh; ++c) acc += qi[c] * k[j * dh + c];
    s[j] = acc * scale;
  }
}

}  // namespace

void attention_fwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& cu_seqlens,
                   int64_t max_seqlen, const AttentionOptions& opt, const TensorView& out, const TensorView& lse) {
  constexpr const char* what = "attention_fwd(cpu)";
  const Dims d = attn::check_fwd(q, k, v, cu_seqlens, max_seqlen, out, lse, Device::CPU, attn::Io::kBf16OrF32, what);
  const float scale = attention_scale(opt, d.Dh);
  const Seqs seqs = read_seqs(d, cu_seqlens, what);
  const Strides so = attn::strides_of(out, d.packed);
  std::vector<float> s(static_cast<size_t>(d.S)), acc(static_cast<size_t>(d.Dh));
  for (int64_t b = 0; b < d.B; ++b) {
    const int64_t len = seqs.len[b];
    for (int64_t hk = 0; hk < d.Hkv; ++hk) {
      const std::vector<float> kr = gather(k, seqs, d, b, hk), vr = gather(v, seqs, d, b, hk);
      for (int64_t h = hk * d.group(); h < (hk + 1) * d.group(); ++h) {
        const std::vector<float> qr = gather(q, seqs, d, b, h);
        for (int64_t i = 0; i < len; ++i) {
          const int64_t n = opt.causal ? i + 1 : len;  // keys 0..n-1 are visible
          scores(&qr[i * d.Dh], kr, n, d.Dh, scale, s);
          float m = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < n; ++j) m = std::max(m, s[j]);
          float l = 0.0f;
          std::fill(acc.begin(), acc.end(), 0.0f);
          for (int64_t j = 0; j < n; ++j) {
            const float p = std::exp(s[j] - m);
            l += p;
            for (int64_t c = 0; c < d.Dh; ++c) acc[c] += p * vr[j * d.Dh + c];
          }
          const int64_t o = row_index(so, seqs, d, b, i, h);
          for (int64_t c = 0; c < d.Dh; ++c) store(out, o + c, acc[c] / l);
          if (!lse.empty()) lse.ptr<float>()[lse_index(seqs, d, b, i, h)] = m + std::log(l);
        }
      }
    }
  }
}

void attention_bwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   const TensorView& lse, const TensorView& dout, const TensorView& cu_seqlens, int64_t max_seqlen,
                   const AttentionOptions& opt, const TensorView& dq, const TensorView& dk, const TensorView& dv) {
  constexpr const char* what = "attention_bwd(cpu)";
  const Dims d = attn::check_bwd(q, k, v, out, lse, dout, cu_seqlens, max_seqlen, dq, dk, dv, Device::CPU,
                                 attn::Io::kBf16OrF32, what);
  const float scale = attention_scale(opt, d.Dh);
  const Seqs seqs = read_seqs(d, cu_seqlens, what);
  const Strides sdq = attn::strides_of(dq, d.packed), sdk = attn::strides_of(dk, d.packed),
                sdv = attn::strides_of(dv, d.packed);
  const float* lse_p = lse.ptr<const float>();
  std::vector<float> s(static_cast<size_t>(d.S)), ds(static_cast<size_t>(d.S));
  for (int64_t b = 0; b < d.B; ++b) {
    const int64_t len = seqs.len[b];
    for (int64_t hk = 0; hk < d.Hkv; ++hk) {
      const std::vector<float> kr = gather(k, seqs, d, b, hk), vr = gather(v, seqs, d, b, hk);
      std::vector<float> dk_acc(kr.size(), 0.0f), dv_acc(vr.size(), 0.0f);
      for (int64_t h = hk * d.group(); h < (hk + 1) * d.group(); ++h) {
        const std::vector<float> qr = gather(q, seqs, d, b, h), orow = gather(out, seqs, d, b, h),
                                 dor = gather(dout, seqs, d, b, h);
        for (int64_t i = 0; i < len; ++i) {
          const int64_t n = opt.causal ? i + 1 : len;
          const float* qi = &qr[i * d.Dh];
          const float* doi = &dor[i * d.Dh];
          float D = 0.0f;  // sum_d dout_id * out_id
          for (int64_t c = 0; c < d.Dh; ++c) D += doi[c] * orow[i * d.Dh + c];
          scores(qi, kr, n, d.Dh, scale, s);
          const float li = lse_p[lse_index(seqs, d, b, i, h)];
          for (int64_t j = 0; j < n; ++j) {
            const float p = std::exp(s[j] - li);
            float dp = 0.0f;
            for (int64_t c = 0; c < d.Dh; ++c) dp += doi[c] * vr[j * d.Dh + c];
            ds[j] = p * (dp - D);
            for (int64_t c = 0; c < d.Dh; ++c) {
              dv_acc[j * d.Dh + c] += p * doi[c];
              dk_acc[j * d.Dh + c] += scale * ds[j] * qi[c];
            }
          }
          const int64_t o = row_index(sdq, seqs, d, b, i, h);
          for (int64_t c = 0; c < d.Dh; ++c) {
            float acc = 0.0f;
            for (int64_t j = 0; j < n; ++j) acc += ds[j] * kr[j * d.Dh + c];
            store(dq, o + c, scale * acc);
          }
        }
      }
      for (int64_t j = 0; j < len; ++j) {
        const int64_t ok = row_index(sdk, seqs, d, b, j, hk), ov = row_index(sdv, seqs, d, b, j, hk);
        for (int64_t c = 0; c < d.Dh; ++c) {
          store(dk, ok + c, dk_acc[j * d.Dh + c]);
          store(dv, ov + c, dv_acc[j * d.Dh + c]);
        }
      }
    }
  }
}

namespace {
float cache_scale(const TensorView& scale, int64_t hk) {
  const float* p = scale.ptr<const float>();
  return scale.size(0) == 1 ? p[0] : p[hk];
}
float cache_load(const TensorView& t, int64_t i, float scale) {
  if (t.dtype == DType::E4M3) return decode(DType::E4M3, t.ptr<const uint8_t>()[i]) * scale;
  return bf16_bits_to_float(t.ptr<const uint16_t>()[i]);
}
}  // namespace

void kv_cache_append(const TensorView& k_new, const TensorView& v_new, const TensorView& positions,
                     const KvCache& cache) {
  const attn::DecodeDims d = attn::check_append(k_new, v_new, positions, cache, Device::CPU, "kv_cache_append(cpu)");
  const int32_t* pos = positions.ptr<const int32_t>();
  const int64_t row = d.Hkv * d.Dh;
  for (int64_t b = 0; b < d.B; ++b) {
    if (pos[b] < 0 || pos[b] >= d.max_seq) continue;  // finished sequence / out of range: not written
    const int64_t dst = (b * d.max_seq + pos[b]) * row;
    for (const auto& [src, dstt, sc] :
         {std::tuple{&k_new, &cache.k, &cache.k_scale}, std::tuple{&v_new, &cache.v, &cache.v_scale}}) {
      const uint16_t* in = src->ptr<const uint16_t>() + b * row;
      if (!d.fp8) {
        std::memcpy(dstt->ptr<uint16_t>() + dst, in, static_cast<size_t>(row) * sizeof(uint16_t));
        continue;
      }
      uint8_t* o = dstt->ptr<uint8_t>() + dst;
      for (int64_t hk = 0; hk < d.Hkv; ++hk) {
        const float s = cache_scale(*sc, hk);
        for (int64_t c = 0; c < d.Dh; ++c) {
          const int64_t i = hk * d.Dh + c;
          o[i] = static_cast<uint8_t>(encode(DType::E4M3, bf16_bits_to_float(in[i]) / s));
        }
      }
    }
  }
}

void decode_attention(const TensorView& q, const KvCache& cache, const TensorView& seqlens, const DecodeOptions& opt,
                      const TensorView& out) {
  constexpr const char* what = "decode_attention(cpu)";
  const attn::DecodeDims d = attn::check_decode(q, cache, seqlens, out, opt.fp8_out, Device::CPU, what);
  const float scale = attn::resolve_scale(opt.scale, d.Dh, what);
  // Without a BF16 out (fp8_out only) the BF16 values go to a local buffer first.
  std::vector<uint16_t> local;
  TensorView bf16 = out;
  if (out.empty()) {
    local.resize(static_cast<size_t>(d.B * d.H * d.Dh));
    bf16 = TensorView(local.data(), DType::BF16, Shape{d.B, d.H, d.Dh}, Device::CPU);
  }
  const int32_t* lens = seqlens.ptr<const int32_t>();
  const int64_t g = d.H / d.Hkv;
  std::vector<float> s(static_cast<size_t>(d.max_seq)), acc(static_cast<size_t>(d.Dh));
  for (int64_t b = 0; b < d.B; ++b) {
    const int64_t len = lens[b];
    TG_CHECK(len >= 0 && len <= d.max_seq, what, ": seqlens[", b, "] = ", len, " is outside [0, max_seq = ", d.max_seq,
             "]");
    for (int64_t h = 0; h < d.H; ++h) {
      const int64_t hk = h / g;
      const float ks = d.fp8 ? cache_scale(cache.k_scale, hk) : 1.0f;
      const float vs = d.fp8 ? cache_scale(cache.v_scale, hk) : 1.0f;
      const uint16_t* qh = q.ptr<const uint16_t>() + (b * d.H + h) * d.Dh;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < len; ++j) {
        const int64_t base = ((b * d.max_seq + j) * d.Hkv + hk) * d.Dh;
        float dot = 0.0f;
        for (int64_t c = 0; c < d.Dh; ++c) dot += bf16_bits_to_float(qh[c]) * cache_load(cache.k, base + c, ks);
        s[j] = dot * scale;
        m = std::max(m, s[j]);
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      float l = 0.0f;
      for (int64_t j = 0; j < len; ++j) {
        const int64_t base = ((b * d.max_seq + j) * d.Hkv + hk) * d.Dh;
        const float p = std::exp(s[j] - m);
        l += p;
        for (int64_t c = 0; c < d.Dh; ++c) acc[c] += p * cache_load(cache.v, base + c, vs);
      }
      uint16_t* oh = bf16.ptr<uint16_t>() + (b * d.H + h) * d.Dh;
      for (int64_t c = 0; c < d.Dh; ++c) oh[c] = float_to_bf16_bits(len == 0 ? 0.0f : acc[c] / l);
    }
  }
  if (!opt.fp8_out.data.empty()) {  // the FP8 copy: the quantize twin on the BF16 output, [B, H * Dh]
    Fp8View f = opt.fp8_out;
    f.data = f.data.reshape({d.B, d.H * d.Dh});
    cpu::quantize(bf16.reshape({d.B, d.H * d.Dh}), f);
  }
}

}  // namespace tg::kernels::cpu
