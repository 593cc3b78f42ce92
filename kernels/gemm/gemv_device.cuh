// Device pieces of the GEMV kernels (gemv.cu): the launch parameters, the E4M3 / BF16 unpacking and the epilogue.
// Internal to kernels/gemm.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace tg::kernels::cuda {

constexpr int kLoadsPerLane = 8;  // 16-byte W loads in flight per lane per iteration (128 bytes)

struct GemvParams {
  const void* x;
  const void* w;
  const float* x_scale_inv;  // nullptr: BF16 x
  const float* w_scale_inv;  // nullptr: BF16 W
  void* out;
  const void* residual;      // nullptr: none (may equal out)
  int64_t ldx, ldw, ldo, ldr;  // elements
  int m, n, k;  // k: K (elements)
  int chunks;  // 16-byte W chunks per row: K / (16 / sizeof(W element))
  float alpha;
  bool out_f32;
  // Programmatic launch: trigger the dependents at the end of each block instead of after the wait (the default
  // since session 18, launch_gemv in gemv.cu): the next kernel's blocks are placed only once this grid's last
  // blocks retire, evenly on a nearly empty GPU.
  bool late_trigger;
  // The RMSNorm -> E4M3 prologue (GemvNorm in gemv.h; kernels with kNorm): x computed from h in each block.
  struct Norm {
    const void* h;     // BF16 [1, K]
    const void* w;     // BF16 [K]
    float eps, inv_d;  // inv_d = 1 / K (one RN division, as the norm kernels)
    float* rstd;
    const float* x_scale;
    float* x_scale_inv;
    uint32_t* x_amax;  // or null
  } norm;
  // The GeGLU epilogue (gemv_geglu): W = fc1 = [gate; up] with n = 2F rows; act [1, F] E4M3 = fp8(V * act_scale)
  // with V = geglu(BF16 gate, BF16 up) as geglu_forward_fp8 computes it; act_scale_inv (optional) written with
  // 1 / act_scale, act_amax (optional, F32 [1] as bits) max-reduced with |V|.
  uint8_t* act;
  const float* act_scale;
  float* act_scale_inv;
  uint32_t* act_amax;
  // The QKV RoPE + KV-cache epilogue (gemv_qkv_rope): W = [q heads; k heads; v heads] x Dh rows; kv_cache_write_rope's
  // destinations and RoPE inputs for the one token (slots[0], positions[0]).
  struct RopeKv {
    void* q_out;  // BF16 [heads * head_dim]
    void* k_cache;
    void* v_cache;  // [B, max_seq, kv_heads, head_dim] BF16 or E4M3
    const float* k_scale;
    const float* v_scale;  // E4M3: [1] or [kv_heads]
    const int32_t* slots;
    const int32_t* positions;
    const float* inv_freq;
    const float* cos_sin;  // rope_cos_sin_table or null
    int cos_sin_positions;
    int heads, kv_heads, head_dim, cache_b, max_seq;
    bool fp8, per_head_scale;
  } rope;
};

// Two BF16 in a 32-bit word -> floats (exact).
__device__ __forceinline__ float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// Two E4M3 codes in the low 16 bits of u -> floats (exact: E4M3 -> f16 is exact, cvt.rn.f16x2.e4m3x2).
__device__ __forceinline__ float2 e4m3x2(uint32_t u) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(u & 0xffffu), __NV_E4M3);
  return __half22float2(__half2(h));
}

// The 8 floats of a 16-byte vector's half `half` (0: bytes 0-7, 1: bytes 8-15) of E4M3, or of all 16 bytes of BF16.
template <bool kE4m3>
__device__ __forceinline__ void unpack8(const uint4& v, int half, float (&f)[8]) {
  if constexpr (kE4m3) {
    const uint32_t a = half == 0 ? v.x : v.z, b = half == 0 ? v.y : v.w;
    const float2 p0 = e4m3x2(a), p1 = e4m3x2(a >> 16), p2 = e4m3x2(b), p3 = e4m3x2(b >> 16);
    f[0] = p0.x; f[1] = p0.y; f[2] = p1.x; f[3] = p1.y;
    f[4] = p2.x; f[5] = p2.y; f[6] = p3.x; f[7] = p3.y;
  } else {
    f[0] = bf16_lo(v.x); f[1] = bf16_hi(v.x); f[2] = bf16_lo(v.y); f[3] = bf16_hi(v.y);
    f[4] = bf16_lo(v.z); f[5] = bf16_hi(v.z); f[6] = bf16_lo(v.w); f[7] = bf16_hi(v.w);
  }
}

// The epilogue's scale: (alpha * x_scale_inv) * w_scale_inv, in that order (FP32).
__device__ __forceinline__ float out_scale(const GemvParams& p) {
  float scale = p.alpha;
  if (p.x_scale_inv != nullptr) scale *= *p.x_scale_inv;
  if (p.w_scale_inv != nullptr) scale *= *p.w_scale_inv;
  return scale;
}
// out_scale with x's scale_inv given (the norm prologue computes it): the same order.
__device__ __forceinline__ float out_scale_x(const GemvParams& p, float x_scale_inv) {
  float scale = p.alpha;
  scale *= x_scale_inv;
  if (p.w_scale_inv != nullptr) scale *= *p.w_scale_inv;
  return scale;
}
// out[r, col] = acc * scale (+ residual[r, col], FP32), one rounding to out's dtype (RNE).
__device__ __forceinline__ void store_out(const GemvParams& p, int r, int64_t col, float acc, float scale) {
  float v = acc * scale;
  if (p.out_f32) {
    if (p.residual != nullptr) v += static_cast<const float*>(p.residual)[r * p.ldr + col];
    static_cast<float*>(p.out)[r * p.ldo + col] = v;
  } else {
    if (p.residual != nullptr) v += __bfloat162float(static_cast<const __nv_bfloat16*>(p.residual)[r * p.ldr + col]);
    static_cast<__nv_bfloat16*>(p.out)[r * p.ldo + col] = __float2bfloat16_rn(v);
  }
}

// The K split of gemv's one-column warps for a row of K elements (gemv.cu: the measured rule, or the tuning knob).
int gemv_k_split_rule(int64_t k);

}  // namespace tg::kernels::cuda
