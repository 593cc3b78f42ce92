// CPU twins of kernels/kv_cache (the golden): plain loops.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/numeric.h"
#include "kernels/elementwise/ieee_math.h"
#include "kernels/kv_cache/kv_cache.h"
#include "kernels/rope/rope.h"

namespace tg::kernels::cpu {

namespace {
float scale_of(const TensorView& s, int64_t head) { return s.ptr<const float>()[s.shape[0] == 1 ? 0 : head]; }
}  // namespace

void kv_cache_write(const TensorView& k, const TensorView& v, const TensorView& slots, const TensorView& positions,
                    const KvCache& cache, const TensorView& q, const TensorView& q_out) {
  const auto d =
      kv_cache_detail::check_write(k, v, slots, positions, cache, q, q_out, Device::CPU, "kv_cache_write(cpu)");
  const int32_t* slot = slots.ptr<const int32_t>();
  const int32_t* pos = positions.ptr<const int32_t>();
  const int64_t row = d.Hkv * d.Dh;
  for (int64_t t = 0; t < d.T; ++t) {
    if (!q.empty()) {
      for (int64_t h = 0; h < d.H; ++h) {
        std::memcpy(q_out.ptr<uint16_t>() + (t * d.H + h) * d.Dh, q.ptr<const uint16_t>() + t * q.strides[0] + h * d.Dh,
                    static_cast<std::size_t>(d.Dh) * sizeof(uint16_t));
      }
    }
    if (slot[t] < 0 || slot[t] >= d.B || pos[t] < 0 || pos[t] >= d.max_seq) continue;
    const int64_t dst = (static_cast<int64_t>(slot[t]) * d.max_seq + pos[t]) * row;
    for (const auto& [src, out, sc] :
         {std::tuple{&k, &cache.k, &cache.k_scale}, std::tuple{&v, &cache.v, &cache.v_scale}}) {
      const uint16_t* in = src->ptr<const uint16_t>() + t * src->strides[0];
      if (!d.fp8) {
        std::memcpy(out->ptr<uint16_t>() + dst, in, static_cast<std::size_t>(row) * sizeof(uint16_t));
        continue;
      }
      uint8_t* o = out->ptr<uint8_t>() + dst;
      for (int64_t h = 0; h < d.Hkv; ++h) {
        const float s = scale_of(*sc, h);
        for (int64_t c = 0; c < d.Dh; ++c) {
          const int64_t i = h * d.Dh + c;
          o[i] = static_cast<uint8_t>(encode(DType::E4M3, ieee::fdiv(bf16_bits_to_float(in[i]), s)));
        }
      }
    }
  }
}

// rope_forward on copies of q and k, then kv_cache_write: the definition of the fused op.
void kv_cache_write_rope(const TensorView& k, const TensorView& v, const TensorView& slots,
                         const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                         const TensorView& q, const TensorView& q_out, const TensorView& table) {
  kv_cache_detail::check_write_rope(k, v, slots, positions, inv_freq, cache, q, q_out, Device::CPU,
                                    "kv_cache_write_rope(cpu)", table);
  // Contiguous copies of the [T, heads, Dh] row views (head stride Dh, any token stride; check_write's rule).
  const auto rows_copy = [](const TensorView& x) {
    Tensor c = Tensor::empty(x.dtype, x.shape, Device::CPU);
    const std::size_t row_bytes = static_cast<std::size_t>(x.shape[1] * x.shape[2]) * dtype_size(x.dtype);
    for (int64_t t = 0; t < x.shape[0]; ++t) {
      std::memcpy(static_cast<char*>(c.data()) + static_cast<std::size_t>(t) * row_bytes,
                  static_cast<const char*>(x.data) + t * x.strides[0] * static_cast<int64_t>(dtype_size(x.dtype)),
                  row_bytes);
    }
    return c;
  };
  Tensor k_rot = rows_copy(k);
  Tensor q_rot = q.empty() ? Tensor() : rows_copy(q);
  cpu::rope_forward(q.empty() ? TensorView{} : q_rot.view(), k_rot.view(), positions, inv_freq, table);
  cpu::kv_cache_write(k_rot.view(), v, slots, positions, cache, q.empty() ? TensorView{} : q_rot.view(), q_out);
}

void kv_cache_reorder(const KvCache& cache, const TensorView& src, int64_t length, const TensorView& scratch) {
  const auto d = kv_cache_detail::check_reorder(cache, src, length, scratch, Device::CPU, "kv_cache_reorder(cpu)");
  const int32_t* from = src.ptr<const int32_t>();
  for (int64_t b = 0; b < d.B; ++b) {
    TG_CHECK(from[b] >= 0 && from[b] < d.B, "kv_cache_reorder(cpu): src[", b, "] = ", from[b],
             " is outside [0, B = ", d.B, ")");
  }
  const std::size_t span = static_cast<std::size_t>(length * d.row_bytes);
  const std::size_t seq_bytes = static_cast<std::size_t>(d.max_seq * d.row_bytes);
  for (const TensorView* t : {&cache.k, &cache.v}) {
    char* base = static_cast<char*>(t->data);
    char* tmp = static_cast<char*>(scratch.data);
    for (int64_t b = 0; b < d.B; ++b) std::memcpy(tmp + b * span, base + from[b] * seq_bytes, span);
    for (int64_t b = 0; b < d.B; ++b) std::memcpy(base + b * seq_bytes, tmp + b * span, span);
  }
}

void kv_rows_amax(const TensorView& x, const TensorView& amax) {
  const int64_t slots = kv_cache_detail::check_amax(x, amax, Device::CPU, "kv_rows_amax(cpu)");
  const int64_t t_n = x.shape[0], heads = x.shape[1], dh = x.shape[2];
  uint32_t* out = reinterpret_cast<uint32_t*>(amax.data);  // non-negative floats order as their bits
  for (int64_t t = 0; t < t_n; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const uint16_t* row = x.ptr<const uint16_t>() + t * x.strides[0] + h * dh;
      uint32_t& slot = out[slots == 1 ? 0 : h];
      for (int64_t c = 0; c < dh; ++c) slot = std::max(slot, ieee::abs_bits(bf16_bits_to_float(row[c])));
    }
  }
}

}  // namespace tg::kernels::cpu
