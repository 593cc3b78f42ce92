// Argument checking and shape bookkeeping shared by the CPU twin and the CUDA launchers of
// kernels/attention (internal header; the contracts are in attention.h).
#pragma once

#include <cstdint>

#include "common/tensor.h"
#include "kernels/attention/attention.h"

namespace tg::kernels::attn {

// Element strides of one [.., tokens, heads, Dh] operand. Element (sequence b, position i, head h, d) is at
//   dense : b * batch + i * token + h * head + d
//   packed: (cu_seqlens[b] + i) * token + h * head + d          (batch unused)
struct Strides {
  int64_t batch = 0;
  int64_t token = 0;
  int64_t head = 0;
};

struct Dims {
  bool packed = false;
  int64_t B = 0;  // sequences
  int64_t S = 0;  // dense: the sequence length; packed: max_seqlen (an upper bound)
  int64_t T = 0;  // packed: total tokens; dense: B * S
  int64_t H = 0;
  int64_t Hkv = 0;
  int64_t Dh = 0;
  int64_t group() const { return H / Hkv; }
};

Strides strides_of(const TensorView& t, bool packed);

// `scale` if non-zero, else head_dim^-0.5; throws for a negative or non-finite scale.
float resolve_scale(float scale, int64_t head_dim, const char* what);

// Which dtypes a caller accepts for q / k / v / out / dout / dq / dk / dv: the CPU twin also takes F32.
enum class Io : uint8_t { kBf16, kBf16OrF32 };

// Validates the forward operands (lse may be empty) and returns the problem dims. `device` is where every
// tensor must live; `what` names the caller in messages.
Dims check_fwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& cu_seqlens,
               int64_t max_seqlen, const TensorView& out, const TensorView& lse, Device device, Io io,
               const char* what);
// Validates the backward operands (lse required).
Dims check_bwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
               const TensorView& lse, const TensorView& dout, const TensorView& cu_seqlens, int64_t max_seqlen,
               const TensorView& dq, const TensorView& dk, const TensorView& dv, Device device, Io io,
               const char* what);

// Decode / KV-cache bookkeeping.
struct DecodeDims {
  int64_t B = 0, H = 0, Hkv = 0, Dh = 0, max_seq = 0;
  bool fp8 = false;
  bool per_head_scale = false;
};
DecodeDims check_cache(const KvCache& cache, Device device, const char* what);
// out may be empty when fp8_out (DecodeOptions::fp8_out) has data; at least one of them must be given.
DecodeDims check_decode(const TensorView& q, const KvCache& cache, const TensorView& seqlens, const TensorView& out,
                        const Fp8View& fp8_out, Device device, const char* what);
DecodeDims check_append(const TensorView& k_new, const TensorView& v_new, const TensorView& positions,
                        const KvCache& cache, Device device, const char* what);

}  // namespace tg::kernels::attn
