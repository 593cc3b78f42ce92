#include "kernels/attention/attention_args.h"

#include <cmath>

namespace tg::kernels {

const char* attention_backend_name(AttentionBackend b) {
  switch (b) {
    case AttentionBackend::kCudnn:
      return "cudnn";
    case AttentionBackend::kFlash:
      return "flash";
  }
  return "?";
}

float attention_scale(const AttentionOptions& opt, int64_t head_dim) {
  return attn::resolve_scale(opt.scale, head_dim, "attention");
}

namespace attn {

namespace {

void check_io_dtype(const TensorView& t, Io io, const char* what, const char* name) {
  const bool ok = t.dtype == DType::BF16 || (io == Io::kBf16OrF32 && t.dtype == DType::F32);
  TG_CHECK(ok, what, ": ", name, " must be ", io == Io::kBf16 ? "BF16" : "BF16 or F32", ", got ", t.dtype);
}

// Rank, shape, device, dtype and stride rules of one [.., tokens, heads, Dh] operand.
void check_operand(const TensorView& t, const Shape& want, bool packed, Device device, Io io, const char* what,
                   const char* name) {
  TG_CHECK(!t.empty(), what, ": ", name, " is empty");
  TG_CHECK(t.shape == want, what, ": ", name, " must have shape ", want, ", got ", t.shape);
  check_device(t, device, what);
  check_io_dtype(t, io, what, name);
  const int r = t.ndim();
  const int64_t dh = t.shape[r - 1], heads = t.shape[r - 2];
  TG_CHECK(t.strides[r - 1] == 1, what, ": ", name, " must have a contiguous head dimension (stride 1), got strides ",
           t.strides);
  TG_CHECK(t.strides[r - 2] == dh, what, ": ", name, " must have head stride Dh = ", dh, ", got strides ", t.strides);
  TG_CHECK(t.strides[r - 3] >= heads * dh, what, ": ", name, " token stride must be >= heads * Dh = ", heads * dh,
           ", got strides ", t.strides);
  if (!packed) {
    TG_CHECK(t.strides[0] >= t.shape[1] * t.strides[1], what, ": ", name,
             " batch stride must be >= S * token stride, got strides ", t.strides);
  }
}

Dims parse_dims(const TensorView& q, const TensorView& k, const TensorView& cu_seqlens, int64_t max_seqlen,
                Device device, const char* what) {
  Dims d;
  TG_CHECK(q.ndim() == 3 || q.ndim() == 4, what, ": q must be [B, S, H, Dh] (dense) or [T, H, Dh] (packed), got shape ",
           q.shape);
  TG_CHECK(k.ndim() == q.ndim(), what, ": k must have the rank of q (", q.ndim(), "), got shape ", k.shape);
  d.packed = q.ndim() == 3;
  if (d.packed) {
    TG_CHECK(!cu_seqlens.empty(), what, ": packed [T, H, Dh] inputs need cu_seqlens I32 [B + 1]");
    check_device(cu_seqlens, device, what);
    check_dtype(cu_seqlens, DType::I32, what);
    check_contiguous(cu_seqlens, what);
    TG_CHECK(cu_seqlens.ndim() == 1 && cu_seqlens.size(0) >= 2, what,
             ": cu_seqlens must be I32 [B + 1] with B >= 1, got shape ", cu_seqlens.shape);
    d.B = cu_seqlens.size(0) - 1;
    d.T = q.size(0);
    d.H = q.size(1);
    d.Dh = q.size(2);
    d.Hkv = k.size(1);
    TG_CHECK(max_seqlen >= 1, what, ": packed inputs need max_seqlen >= 1 (an upper bound of every length), got ",
             max_seqlen);
    d.S = max_seqlen;
  } else {
    TG_CHECK(cu_seqlens.empty(), what, ": dense [B, S, H, Dh] inputs take no cu_seqlens (got ", cu_seqlens.shape,
             "); use packed [T, H, Dh] inputs for variable lengths");
    d.B = q.size(0);
    d.S = q.size(1);
    d.H = q.size(2);
    d.Dh = q.size(3);
    d.Hkv = k.size(2);
    d.T = d.B * d.S;
    TG_CHECK(max_seqlen == 0 || max_seqlen == d.S, what, ": dense inputs: max_seqlen must be 0 or S = ", d.S, ", got ",
             max_seqlen);
    TG_CHECK(d.B >= 1 && d.S >= 1, what, ": dense inputs need B >= 1 and S >= 1, got shape ", q.shape);
  }
  TG_CHECK(d.H >= 1 && d.Hkv >= 1 && d.H % d.Hkv == 0, what,
           ": query heads H must be a positive multiple of kv heads Hkv, got H = ", d.H, ", Hkv = ", d.Hkv);
  TG_CHECK(d.Dh >= 1, what, ": head dim must be positive, got ", d.Dh);
  return d;
}

Shape q_shape(const Dims& d) { return d.packed ? Shape{d.T, d.H, d.Dh} : Shape{d.B, d.S, d.H, d.Dh}; }
Shape kv_shape(const Dims& d) { return d.packed ? Shape{d.T, d.Hkv, d.Dh} : Shape{d.B, d.S, d.Hkv, d.Dh}; }
Shape lse_shape(const Dims& d) { return d.packed ? Shape{d.T, d.H} : Shape{d.B, d.H, d.S}; }

void check_lse(const TensorView& lse, const Dims& d, Device device, const char* what) {
  TG_CHECK(lse.shape == lse_shape(d), what, ": lse must be F32 ", lse_shape(d), d.packed ? " [T, H]" : " [B, H, S]",
           ", got shape ", lse.shape);
  check_device(lse, device, what);
  check_dtype(lse, DType::F32, what);
  check_contiguous(lse, what);
}

}  // namespace

float resolve_scale(float scale, int64_t head_dim, const char* what) {
  TG_CHECK(std::isfinite(scale) && scale >= 0.0f, what, ": scale must be finite and >= 0 (0 = Dh^-0.5), got ", scale);
  TG_CHECK(head_dim > 0, what, ": head_dim must be positive, got ", head_dim);
  return scale != 0.0f ? scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

Strides strides_of(const TensorView& t, bool packed) {
  Strides s;
  const int r = t.ndim();
  s.head = t.strides[r - 2];
  s.token = t.strides[r - 3];
  s.batch = packed ? 0 : t.strides[0];
  return s;
}

Dims check_fwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& cu_seqlens,
               int64_t max_seqlen, const TensorView& out, const TensorView& lse, Device device, Io io,
               const char* what) {
  const Dims d = parse_dims(q, k, cu_seqlens, max_seqlen, device, what);
  check_operand(q, q_shape(d), d.packed, device, io, what, "q");
  check_operand(k, kv_shape(d), d.packed, device, io, what, "k");
  check_operand(v, kv_shape(d), d.packed, device, io, what, "v");
  check_operand(out, q_shape(d), d.packed, device, io, what, "out");
  if (!lse.empty()) check_lse(lse, d, device, what);
  return d;
}

Dims check_bwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
               const TensorView& lse, const TensorView& dout, const TensorView& cu_seqlens, int64_t max_seqlen,
               const TensorView& dq, const TensorView& dk, const TensorView& dv, Device device, Io io,
               const char* what) {
  const Dims d = parse_dims(q, k, cu_seqlens, max_seqlen, device, what);
  check_operand(q, q_shape(d), d.packed, device, io, what, "q");
  check_operand(k, kv_shape(d), d.packed, device, io, what, "k");
  check_operand(v, kv_shape(d), d.packed, device, io, what, "v");
  check_operand(out, q_shape(d), d.packed, device, io, what, "out");
  check_operand(dout, q_shape(d), d.packed, device, io, what, "dout");
  check_operand(dq, q_shape(d), d.packed, device, io, what, "dq");
  check_operand(dk, kv_shape(d), d.packed, device, io, what, "dk");
  check_operand(dv, kv_shape(d), d.packed, device, io, what, "dv");
  TG_CHECK(!lse.empty(), what, ": the backward needs the forward's lse");
  check_lse(lse, d, device, what);
  return d;
}

DecodeDims check_cache(const KvCache& cache, Device device, const char* what) {
  DecodeDims d;
  TG_CHECK(!cache.k.empty() && !cache.v.empty(), what, ": the KV cache k and v must be set");
  TG_CHECK(cache.k.ndim() == 4, what, ": cache.k must be [B, max_seq, Hkv, Dh], got shape ", cache.k.shape);
  check_shape(cache.v, cache.k.shape, what);
  check_device(cache.k, device, what);
  check_device(cache.v, device, what);
  check_contiguous(cache.k, what);
  check_contiguous(cache.v, what);
  TG_CHECK(cache.k.dtype == DType::BF16 || cache.k.dtype == DType::E4M3, what,
           ": the KV cache must be BF16 or F8_E4M3, got ", cache.k.dtype);
  TG_CHECK(cache.v.dtype == cache.k.dtype, what, ": cache.v dtype ", cache.v.dtype, " differs from cache.k dtype ",
           cache.k.dtype);
  d.B = cache.k.size(0);
  d.max_seq = cache.k.size(1);
  d.Hkv = cache.k.size(2);
  d.Dh = cache.k.size(3);
  TG_CHECK(d.B >= 1 && d.max_seq >= 1 && d.Hkv >= 1 && d.Dh >= 1, what, ": empty KV cache shape ", cache.k.shape);
  d.fp8 = cache.k.dtype == DType::E4M3;
  if (d.fp8) {
    TG_CHECK(!cache.k_scale.empty() && !cache.v_scale.empty(), what,
             ": an E4M3 KV cache needs k_scale and v_scale (F32 [1] or [Hkv])");
    for (const TensorView* s : {&cache.k_scale, &cache.v_scale}) {
      check_device(*s, device, what);
      check_dtype(*s, DType::F32, what);
      check_contiguous(*s, what);
      TG_CHECK(s->ndim() == 1 && (s->size(0) == 1 || s->size(0) == d.Hkv), what,
               ": KV cache scales must be F32 [1] (per tensor) or [Hkv = ", d.Hkv, "] (per head), got shape ",
               s->shape);
    }
    TG_CHECK(cache.k_scale.size(0) == cache.v_scale.size(0), what,
             ": k_scale and v_scale must have the same granularity, got ", cache.k_scale.shape, " and ",
             cache.v_scale.shape);
    d.per_head_scale = cache.k_scale.size(0) == d.Hkv && d.Hkv > 1;
  } else {
    TG_CHECK(cache.k_scale.empty() && cache.v_scale.empty(), what,
             ": a BF16 KV cache takes no scales (they are for E4M3)");
  }
  return d;
}

DecodeDims check_decode(const TensorView& q, const KvCache& cache, const TensorView& seqlens, const TensorView& out,
                        const Fp8View& fp8_out, Device device, const char* what) {
  DecodeDims d = check_cache(cache, device, what);
  TG_CHECK(q.ndim() == 3, what, ": q must be [B, H, Dh], got shape ", q.shape);
  TG_CHECK(q.size(0) == d.B, what, ": q batch ", q.size(0), " differs from the cache batch ", d.B);
  TG_CHECK(q.size(2) == d.Dh, what, ": q head dim ", q.size(2), " differs from the cache head dim ", d.Dh);
  d.H = q.size(1);
  TG_CHECK(d.H >= 1 && d.H % d.Hkv == 0, what, ": query heads H must be a positive multiple of Hkv = ", d.Hkv, ", got ",
           d.H);
  check_device(q, device, what);
  check_dtype(q, DType::BF16, what);
  check_contiguous(q, what);
  const bool has_fp8 = !fp8_out.data.empty();
  TG_CHECK(!out.empty() || has_fp8, what, ": out is empty and fp8_out has no data: nothing to write");
  if (!out.empty()) {
    check_shape(out, q.shape, what);
    check_device(out, device, what);
    check_dtype(out, DType::BF16, what);
    check_contiguous(out, what);
  }
  if (has_fp8) {
    const TensorView& f = fp8_out.data;
    TG_CHECK(fp8_out.mode == ScalingMode::kPerTensor, what, ": fp8_out must be per-tensor (kPerTensor), got ",
             scaling_mode_name(fp8_out.mode));
    TG_CHECK(f.dtype == DType::E4M3, what, ": fp8_out.data must be F8_E4M3, got ", f.dtype);
    const Shape flat{d.B, d.H * d.Dh};
    TG_CHECK(f.shape == flat || f.shape == q.shape, what, ": fp8_out.data must be [B, H * Dh] = ", flat,
             " or [B, H, Dh] = ", q.shape, ", got ", f.shape);
    TG_CHECK(f.device == device, what, ": fp8_out.data lives on ", f.device, ", expected ", device);
    TG_CHECK(f.is_contiguous(), what, ": fp8_out.data must be contiguous, got strides ", f.strides);
    TG_CHECK(fp8_out.columnwise_data.empty(), what, ": fp8_out.columnwise_data is not supported (row-wise only)");
    const auto scalar = [&](const TensorView& t, const char* name, bool required) {
      if (t.empty()) {
        TG_CHECK(!required, what, ": ", name, " is required (F32 [1])");
        return;
      }
      const Shape one{1};
      TG_CHECK(t.dtype == DType::F32 && t.shape == one, what, ": ", name,
               " must be F32 [1], got ", t.dtype, " ", t.shape);
      TG_CHECK(t.device == device, what, ": ", name, " lives on ", t.device, ", expected ", device);
    };
    scalar(fp8_out.scale, "fp8_out.scale", true);
    scalar(fp8_out.scale_inv, "fp8_out.scale_inv", true);
    scalar(fp8_out.amax, "fp8_out.amax", false);
  }
  check_shape(seqlens, Shape{d.B}, what);
  check_device(seqlens, device, what);
  check_dtype(seqlens, DType::I32, what);
  check_contiguous(seqlens, what);
  return d;
}

DecodeDims check_append(const TensorView& k_new, const TensorView& v_new, const TensorView& positions,
                        const KvCache& cache, Device device, const char* what) {
  DecodeDims d = check_cache(cache, device, what);
  const Shape want{d.B, d.Hkv, d.Dh};
  for (const TensorView* t : {&k_new, &v_new}) {
    TG_CHECK(t->shape == want, what, ": new K / V rows must be [B, Hkv, Dh] = ", want, ", got ", t->shape);
    check_device(*t, device, what);
    check_dtype(*t, DType::BF16, what);
    check_contiguous(*t, what);
  }
  check_shape(positions, Shape{d.B}, what);
  check_device(positions, device, what);
  check_dtype(positions, DType::I32, what);
  check_contiguous(positions, what);
  return d;
}

}  // namespace attn
}  // namespace tg::kernels
