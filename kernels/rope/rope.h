// Split-half ("NeoX") rotary position embedding, in place on q [T, H, Dh] and k [T, Hkv, Dh]
// (../shared/docs/gemma.md section 2.5; HF's apply_rotary_pos_emb), forward and backward.
//
// Frequencies (rope_inv_freq, computed on the host, once per model): for i = 0 .. Dh/2 - 1
//   e_i = float(2i) / float(Dh)                       FP32 division (HF: arange(0, Dh, 2) as int64 -> float / Dh)
//   inv_freq_i = 1 / theta^e_i                        the power correctly rounded to FP32 (FP64 pow, then one
//                                                     rounding; torch's CPU pow is within 1 ulp of it), then
//                                                     an FP32 division; then / scaling (linear scaling, Gemma 3
//                                                     global layers; 1 = none)
// Angles and rotation, per token t with position p_t (I32/I64 on the device: left-padded batches, packed
// varlen batches and decode offsets are all just position arrays), with A = q's dtype:
//   phi  = float(p_t) * inv_freq_i                    one FP32 multiply (HF: inv_freq @ position_ids in FP32,
//                                                     a K = 1 matmul)
//   c, s = round_A(cos phi), round_A(sin phi)         cos/sin of the FP32 angle (ieee::sincos_angle: FP64
//                                                     evaluation, one rounding to FP32 - correctly rounded for
//                                                     |phi| < 2^20), then cast to A as HF does (cos/sin are
//                                                     .to(x.dtype) before the rotation)
//   x'_i       = round_A(round_A(x_i c) - round_A(x_(i+Dh/2) s))    HF: q*cos + rotate_half(q)*sin, each
//   x'_(i+Dh/2)= round_A(round_A(x_(i+Dh/2) c) + round_A(x_i s))    product and the sum rounded to A
// Pairs are (i, i + Dh/2), NOT (2i, 2i+1).
// Backward (autograd through the same BF16 graph): the transposed rotation, i.e. the forward with s -> -s:
//   dx_i = round_A(round_A(d_i c) + round_A(d_(i+Dh/2) s)), dx_(i+Dh/2) = round_A(round_A(d_(i+Dh/2) c) - round_A(d_i
//   s)).
//
// Shapes: q [T, H, Dh] and k [T, Hkv, Dh] 3-D views with unit innermost stride (any token and head
// strides: views into the fused QKV output [T, (H + 2 Hkv) Dh]); either may be empty; same T, Dh and
// dtype (BF16 or F32). Dh even, <= 1024. positions [T] I32 or I64, inv_freq F32 [Dh/2], both contiguous
// on q's device. The CUDA kernel vectorises 8 pairs at a time when Dh/2 and the strides are multiples of 8
// (element access otherwise: same results).
//
// Precomputed cos/sin (rope_cos_sin_table, built once per model): F32 [P, 2, Dh/2], row p = cos(phi_(p,i)) for
// i < Dh/2, then sin(phi_(p,i)), the FP32 values of ieee::sincos_angle(fmul(float(p), inv_freq_i)) -- the very
// function the kernels evaluate, so a kernel that reads the table (then rounds to A as above) writes the same bits
// as one that computes. Why: the FP64 sincos is most of rope_kernel's time and the decode step's kv_cache_write_rope
// recomputes the same values in every (sequence, head) block; a table row is 1 KiB for Dh = 256, read with 16-byte
// loads. `table` is optional everywhere (empty: compute); a token whose position is outside [0, P) is computed,
// never read out of bounds. A table is checked in the launcher: F32, [P >= 1, 2, Dh/2] of the call's Dh,
// contiguous, on q's device. The CPU twin takes the same table (and the same fallback), so the contract is one.
#pragma once

#include <vector>

#include "common/tensor.h"

namespace tg::kernels {

// The frequency table above (host values). theta > 0, scaling > 0, head_dim even and >= 2.
std::vector<float> rope_inv_freq(int64_t head_dim, float theta, float scaling = 1.0f);
// The same as an F32 [head_dim / 2] tensor on `device` (synchronous copy).
Tensor rope_inv_freq_table(int64_t head_dim, float theta, float scaling, Device device);

// The cos/sin table above for positions [0, max_positions) (>= 1) from inv_freq F32 [Dh/2] (any device: copied to
// `device` first when elsewhere), built on `device` (CUDA: one small kernel) and synchronous, like
// rope_inv_freq_table. Bytes: max_positions * Dh * 4 (8 MiB for Gemma's 8192 positions at Dh = 256).
Tensor rope_cos_sin_table(const TensorView& inv_freq, int64_t max_positions, Device device, Stream stream = {});

// The table length a model builds: max_position_embeddings, capped at 32 MiB of table (32768 positions at
// Dh = 256) so that a long-context config does not allocate gigabytes; later positions are computed (same bits).
int64_t rope_table_positions(int64_t max_position_embeddings, int64_t head_dim);

void rope_forward(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                  Stream stream = {}, const TensorView& table = {});
void rope_backward(const TensorView& dq, const TensorView& dk, const TensorView& positions, const TensorView& inv_freq,
                   Stream stream = {}, const TensorView& table = {});

namespace cpu {
void rope_forward(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                  const TensorView& table = {});
void rope_backward(const TensorView& dq, const TensorView& dk, const TensorView& positions, const TensorView& inv_freq,
                   const TensorView& table = {});
// Fills table F32 [P, 2, Dh/2] (contiguous, host) from inv_freq F32 [Dh/2] (host).
void rope_cos_sin_table(const TensorView& inv_freq, const TensorView& table);
}  // namespace cpu
namespace cuda {
void rope_forward(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                  Stream stream, const TensorView& table = {});
void rope_backward(const TensorView& dq, const TensorView& dk, const TensorView& positions, const TensorView& inv_freq,
                   Stream stream, const TensorView& table = {});
// The device builder (asynchronous on `stream`); both on the device.
void rope_cos_sin_table(const TensorView& inv_freq, const TensorView& table, Stream stream);

}  // namespace cuda

namespace rope_detail {
// Checks q/k/positions/inv_freq; returns {T, Dh}.
struct Dims {
  int64_t tokens, head_dim;
};
Dims check_args(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                Device device, const char* what);
// Checks an optional cos/sin table for head_dim (empty: none, returns 0); returns its number of positions P.
int64_t check_table(const TensorView& table, int64_t head_dim, Device device, const char* what);
// The builder's arguments: inv_freq F32 [Dh/2] contiguous, table F32 [P >= 1, 2, Dh/2] contiguous, both on device.
void check_table_build(const TensorView& inv_freq, const TensorView& table, Device device, const char* what);
}  // namespace rope_detail

}  // namespace tg::kernels
