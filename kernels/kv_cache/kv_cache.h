// KV-cache maintenance for generation, around kernels/attention's decode_attention (which reads the cache
// [B, max_seq, Hkv, Dh], BF16 or E4M3 with a per-tensor / per-kv-head dequantisation scale: attention.h):
//
//   kv_cache_write   packed K / V rows -> cache rows. Row t of k / v [T, Hkv, Dh] goes to cache row
//                    (slots[t], positions[t]); a row with a slot outside [0, B) or a position outside
//                    [0, max_seq) is skipped (finished sequences pass -1). BF16: copied; E4M3: code =
//                    round_e4m3_satfinite(value / scale) with value and scale in FP32 (one RN division),
//                    kv_cache_append's rule, so the two write identical bytes. One call serves prefill (T
//                    prompt tokens of several sequences) and decode (T = B, slots = 0..B-1). Optionally also
//                    copies q [T, H, Dh] into a contiguous q_out (decode_attention's layout): the decode step
//                    splits its fused QKV projection output in this one kernel.
//                    k, v, q are views with a unit innermost stride and head stride Dh (any token stride),
//                    e.g. column slices of the fused QKV output [T, (H + 2 Hkv) Dh]; BF16.
//   kv_cache_write_rope  kv_cache_write of RoPE-rotated k and q: kernels/rope's forward at `positions` (inv_freq
//                    the rope_inv_freq table, F32 [Dh / 2]) applied to the values written, q and k themselves left
//                    as they are. The decode step's rope_forward + kv_cache_write in one kernel: the same bytes as
//                    rope_forward on q and k followed by kv_cache_write (which is exactly what the CPU twin does).
//                    Optional `table`: rope_cos_sin_table's precomputed cos/sin (kernels/rope/rope.h), read instead
//                    of evaluating the FP64 sincos in every (sequence, head) block, with rope_forward's rules (same
//                    bits; positions outside the table computed; checked: F32 [P, 2, Dh/2], contiguous, same device).
//   kv_cache_reorder cache[b, 0:length] = cache[src[b], 0:length] for every b (K and V) -- beam search's
//                    reorder by parent beam (and fanning a prompt's prefill out to its beams), through a caller
//                    scratch buffer of at least B * length * Hkv * Dh cache elements (U8 bytes, contiguous).
//   kv_rows_amax     amax[h] = max(amax[h], max |x[t, h, :]|) over all rows t (amax F32 [Hkv]), or over
//                    everything into amax F32 [1]: the FP8 cache's scale source (the caller zeroes amax; NaN
//                    propagates as kernels/quantize's amax).
// All tensors on one device; slots, positions, src I32 and contiguous. The CPU twins are the golden; the CUDA
// kernels produce identical bytes.
#pragma once

#include <cstdint>

#include "common/tensor.h"
#include "kernels/attention/attention.h"

namespace tg::kernels {

void kv_cache_write(const TensorView& k, const TensorView& v, const TensorView& slots, const TensorView& positions,
                    const KvCache& cache, const TensorView& q = {}, const TensorView& q_out = {}, Stream stream = {});
void kv_cache_write_rope(const TensorView& k, const TensorView& v, const TensorView& slots,
                         const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                         const TensorView& q = {}, const TensorView& q_out = {}, Stream stream = {},
                         const TensorView& table = {});
void kv_cache_reorder(const KvCache& cache, const TensorView& src, int64_t length, const TensorView& scratch,
                      Stream stream = {});
void kv_rows_amax(const TensorView& x, const TensorView& amax, Stream stream = {});

namespace cpu {
void kv_cache_write(const TensorView& k, const TensorView& v, const TensorView& slots, const TensorView& positions,
                    const KvCache& cache, const TensorView& q, const TensorView& q_out);
void kv_cache_write_rope(const TensorView& k, const TensorView& v, const TensorView& slots,
                         const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                         const TensorView& q, const TensorView& q_out, const TensorView& table = {});
void kv_cache_reorder(const KvCache& cache, const TensorView& src, int64_t length, const TensorView& scratch);
void kv_rows_amax(const TensorView& x, const TensorView& amax);
}  // namespace cpu

namespace cuda {
void kv_cache_write(const TensorView& k, const TensorView& v, const TensorView& slots, const TensorView& positions,
                    const KvCache& cache, const TensorView& q, const TensorView& q_out, Stream stream);
void kv_cache_write_rope(const TensorView& k, const TensorView& v, const TensorView& slots,
                         const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                         const TensorView& q, const TensorView& q_out, Stream stream, const TensorView& table = {});
void kv_cache_reorder(const KvCache& cache, const TensorView& src, int64_t length, const TensorView& scratch,
                      Stream stream);
void kv_rows_amax(const TensorView& x, const TensorView& amax, Stream stream);
}  // namespace cuda

namespace kv_cache_detail {
struct WriteDims {
  int64_t T = 0, B = 0, max_seq = 0, Hkv = 0, Dh = 0, H = 0;  // H = 0 without q
  bool fp8 = false, per_head_scale = false;
};
WriteDims check_write(const TensorView& k, const TensorView& v, const TensorView& slots, const TensorView& positions,
                      const KvCache& cache, const TensorView& q, const TensorView& q_out, Device device,
                      const char* what);
// check_write plus the RoPE inputs: inv_freq F32 [Dh / 2], contiguous, on `device`; Dh even; the optional cos/sin
// table (rope_detail::check_table). table_positions: the table's P (0 without one).
WriteDims check_write_rope(const TensorView& k, const TensorView& v, const TensorView& slots,
                           const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                           const TensorView& q, const TensorView& q_out, Device device, const char* what,
                           const TensorView& table = {}, int64_t* table_positions = nullptr);
struct ReorderDims {
  int64_t B = 0, max_seq = 0, row_bytes = 0;  // row_bytes: Hkv * Dh * element size
};
ReorderDims check_reorder(const KvCache& cache, const TensorView& src, int64_t length, const TensorView& scratch,
                          Device device, const char* what);
// Returns the number of amax slots (1 or Hkv).
int64_t check_amax(const TensorView& x, const TensorView& amax, Device device, const char* what);
}  // namespace kv_cache_detail

}  // namespace tg::kernels
