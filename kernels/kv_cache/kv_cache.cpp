#include "kernels/kv_cache/kv_cache.h"

#include "kernels/attention/attention_args.h"
#include "kernels/rope/rope.h"

namespace tg::kernels {

namespace kv_cache_detail {

namespace {
// [T, heads, Dh] BF16 with a unit innermost stride and head stride Dh.
void check_rows(const TensorView& t, int64_t tokens, int64_t heads, int64_t dh, Device device, const char* what,
                const char* name) {
  TG_CHECK(!t.empty() && t.ndim() == 3, what, ": ", name, " must be a 3-D [T, heads, Dh] view, got ", t.describe());
  TG_CHECK(t.shape[0] == tokens && (heads < 0 || t.shape[1] == heads) && t.shape[2] == dh, what, ": ", name,
           " must be [T = ", tokens, ", ", heads < 0 ? std::string("H") : std::to_string(heads), ", Dh = ", dh,
           "], got ", t.shape);
  TG_CHECK(t.dtype == DType::BF16, what, ": ", name, " must be BF16, got ", t.dtype);
  TG_CHECK(t.strides[2] == 1 && t.strides[1] == dh && t.strides[0] >= t.shape[1] * dh, what, ": ", name,
           " must have unit innermost stride, head stride Dh = ", dh, " and token stride >= heads * Dh, got strides ",
           t.strides);
  check_device(t, device, what);
}
void check_index(const TensorView& t, int64_t n, Device device, const char* what, const char* name) {
  TG_CHECK(!t.empty() && t.dtype == DType::I32 && t.shape == Shape{n}, what, ": ", name, " must be I32 [", n, "], got ",
           t.describe());
  check_contiguous(t, what);
  check_device(t, device, what);
}
}  // namespace

WriteDims check_write(const TensorView& k, const TensorView& v, const TensorView& slots, const TensorView& positions,
                      const KvCache& cache, const TensorView& q, const TensorView& q_out, Device device,
                      const char* what) {
  const attn::DecodeDims c = attn::check_cache(cache, device, what);
  WriteDims d;
  d.B = c.B;
  d.max_seq = c.max_seq;
  d.Hkv = c.Hkv;
  d.Dh = c.Dh;
  d.fp8 = c.fp8;
  d.per_head_scale = c.per_head_scale;
  TG_CHECK(!k.empty() && k.ndim() == 3, what, ": k must be a 3-D [T, Hkv, Dh] view, got ", k.describe());
  d.T = k.shape[0];
  TG_CHECK(d.T >= 1, what, ": expected at least one row, got k ", k.shape);
  check_rows(k, d.T, d.Hkv, d.Dh, device, what, "k");
  check_rows(v, d.T, d.Hkv, d.Dh, device, what, "v");
  check_index(slots, d.T, device, what, "slots");
  check_index(positions, d.T, device, what, "positions");
  TG_CHECK(q.empty() == q_out.empty(), what, ": give both q and q_out, or neither");
  if (!q.empty()) {
    check_rows(q, d.T, -1, d.Dh, device, what, "q");
    d.H = q.shape[1];
    TG_CHECK(d.H >= 1, what, ": q needs at least one head, got ", q.shape);
    check_shape(q_out, q.shape, what);
    check_dtype(q_out, DType::BF16, what);
    check_contiguous(q_out, what);
    check_device(q_out, device, what);
  }
  return d;
}

WriteDims check_write_rope(const TensorView& k, const TensorView& v, const TensorView& slots,
                           const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                           const TensorView& q, const TensorView& q_out, Device device, const char* what,
                           const TensorView& table, int64_t* table_positions) {
  const WriteDims d = check_write(k, v, slots, positions, cache, q, q_out, device, what);
  TG_CHECK(d.Dh % 2 == 0, what, ": RoPE needs an even head dim, got ", d.Dh);
  TG_CHECK(!inv_freq.empty() && inv_freq.dtype == DType::F32 && inv_freq.shape == Shape{d.Dh / 2}, what,
           ": inv_freq must be F32 [Dh / 2 = ", d.Dh / 2, "], got ", inv_freq.describe());
  check_contiguous(inv_freq, what);
  check_device(inv_freq, device, what);
  const int64_t p = rope_detail::check_table(table, d.Dh, device, what);
  if (table_positions != nullptr) *table_positions = p;
  return d;
}

ReorderDims check_reorder(const KvCache& cache, const TensorView& src, int64_t length, const TensorView& scratch,
                          Device device, const char* what) {
  const attn::DecodeDims c = attn::check_cache(cache, device, what);
  ReorderDims d;
  d.B = c.B;
  d.max_seq = c.max_seq;
  d.row_bytes = c.Hkv * c.Dh * static_cast<int64_t>(dtype_size(cache.k.dtype));
  check_index(src, d.B, device, what, "src");
  TG_CHECK(length >= 0 && length <= d.max_seq, what, ": length must be in [0, max_seq = ", d.max_seq, "], got ",
           length);
  const int64_t need = d.B * length * d.row_bytes;
  TG_CHECK(need == 0 || (!scratch.empty() && scratch.is_contiguous() && static_cast<int64_t>(scratch.nbytes()) >= need),
           what, ": scratch must be a contiguous buffer of at least ", need, " bytes, got ", scratch.describe());
  if (need > 0) check_device(scratch, device, what);
  return d;
}

int64_t check_amax(const TensorView& x, const TensorView& amax, Device device, const char* what) {
  TG_CHECK(!x.empty() && x.ndim() == 3, what, ": x must be a 3-D [T, Hkv, Dh] view, got ", x.describe());
  check_rows(x, x.shape[0], x.shape[1], x.shape[2], device, what, "x");
  TG_CHECK(!amax.empty() && amax.dtype == DType::F32 && amax.ndim() == 1 &&
               (amax.shape[0] == 1 || amax.shape[0] == x.shape[1]),
           what, ": amax must be F32 [1] or [Hkv = ", x.shape[1], "], got ", amax.describe());
  check_contiguous(amax, what);
  check_device(amax, device, what);
  return amax.shape[0];
}

}  // namespace kv_cache_detail

#if !TEGEMMA_HAVE_CUDA
namespace {
[[noreturn]] void no_cuda(const char* what) { TG_FAIL(what, ": CUDA tensors in a build without CUDA"); }
}  // namespace
#endif

void kv_cache_write(const TensorView& k, const TensorView& v, const TensorView& slots, const TensorView& positions,
                    const KvCache& cache, const TensorView& q, const TensorView& q_out, Stream stream) {
  if (k.device == Device::CPU) return cpu::kv_cache_write(k, v, slots, positions, cache, q, q_out);
#if TEGEMMA_HAVE_CUDA
  cuda::kv_cache_write(k, v, slots, positions, cache, q, q_out, stream);
#else
  (void)stream;
  no_cuda("kv_cache_write");
#endif
}

void kv_cache_write_rope(const TensorView& k, const TensorView& v, const TensorView& slots,
                         const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                         const TensorView& q, const TensorView& q_out, Stream stream, const TensorView& table) {
  if (k.device == Device::CPU) {
    return cpu::kv_cache_write_rope(k, v, slots, positions, inv_freq, cache, q, q_out, table);
  }
#if TEGEMMA_HAVE_CUDA
  cuda::kv_cache_write_rope(k, v, slots, positions, inv_freq, cache, q, q_out, stream, table);
#else
  (void)stream;
  no_cuda("kv_cache_write_rope");
#endif
}

void kv_cache_reorder(const KvCache& cache, const TensorView& src, int64_t length, const TensorView& scratch,
                      Stream stream) {
  if (cache.k.device == Device::CPU) return cpu::kv_cache_reorder(cache, src, length, scratch);
#if TEGEMMA_HAVE_CUDA
  cuda::kv_cache_reorder(cache, src, length, scratch, stream);
#else
  (void)stream;
  no_cuda("kv_cache_reorder");
#endif
}

void kv_rows_amax(const TensorView& x, const TensorView& amax, Stream stream) {
  if (x.device == Device::CPU) return cpu::kv_rows_amax(x, amax);
#if TEGEMMA_HAVE_CUDA
  cuda::kv_rows_amax(x, amax, stream);
#else
  (void)stream;
  no_cuda("kv_rows_amax");
#endif
}

}  // namespace tg::kernels
