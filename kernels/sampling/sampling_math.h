// Scalar pieces of token sampling that compute the SAME BITS on the host (the CPU twin) and on the device:
// the counter-based RNG, the order-preserving keys, and the fixed-point weights. Internal to kernels/sampling
// (the contract is in sampling.h).
//
//   philox4x32_10   Random123's Philox4x32-10 (Salmon et al., SC'11): a bijection of a 128-bit counter under a
//                   64-bit key, 10 rounds; only 32-bit integer multiplies, so host and device agree trivially.
//                   A draw is keyed by the seed and counted by (sequence, step): no state, any order, replayable.
//   order_key       float -> uint32 whose unsigned order is the float order (-0 counted as +0).
//   argmax_key      (score, index) -> uint64 whose maximum is the greedy argmax (ties: the lowest index).
//   exp_nonpos      e^x for x <= 0 from single IEEE float operations (ieee_math.h): Cody-Waite reduction by
//                   ln 2, a degree-7 Taylor polynomial (|r| <= 0.347: truncation < 6e-9 relative), an exact
//                   power-of-two scale; results below 2^-126 (x < -87) flush to 0. Within 2 ulp of e^x where e^x is
//                   normal.
//   weight_of       the sampling weight of a token: floor(e^(s - max) * 2^40) as an integer. Sums of weights
//                   are exact and independent of the summation order (V <= 2^23 tokens: < 2^63), which is what
//                   makes the GPU's parallel top-p and draw pick exactly the CPU twin's token. Tokens whose
//                   probability relative to the best token is below 2^-40 (~1e-12) get weight 0 and are never
//                   drawn (HF would draw them with that probability).
#pragma once

#include <cstdint>

#include "kernels/elementwise/ieee_math.h"
#include "kernels/float_bits.h"

namespace tg::kernels::sampling {

struct Philox4 {
  uint32_t x[4];
};

TG_IEEE_FN uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

TG_IEEE_FN Philox4 philox4x32_10(Philox4 ctr, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kM0, ctr.x[0], &hi0);
    const uint32_t lo1 = mulhilo32(kM1, ctr.x[2], &hi1);
    ctr = Philox4{{hi1 ^ ctr.x[1] ^ key0, lo1, hi0 ^ ctr.x[3] ^ key1, lo0}};
    key0 += kW0;
    key1 += kW1;
  }
  return ctr;
}

// The 64 random bits of draw (sequence, step) under `seed`: counter (step, sequence, 0, 0), key = the seed.
TG_IEEE_FN uint64_t random_bits(uint64_t seed, uint32_t sequence, uint32_t step) {
  const Philox4 r =
      philox4x32_10(Philox4{{step, sequence, 0u, 0u}}, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return (static_cast<uint64_t>(r.x[0]) << 32) | r.x[1];
}

// floor(a * b / 2^64): where a uniform 64-bit draw lands in [0, b).
TG_IEEE_FN uint64_t mulhi64(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

TG_IEEE_FN uint32_t order_key(float x) {
  const uint32_t u = float_bits(ieee::fadd(x, 0.0f));  // -0 + 0 = +0 (round to nearest)
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
TG_IEEE_FN float key_value(uint32_t key) { return bits_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key); }

TG_IEEE_FN float exp_nonpos(float x) {
  if (!(x > -87.0f)) return 0.0f;                           // also -inf and NaN
  const float k = ieee::frint(ieee::fmul(x, 1.44269502f));  // round(x / ln 2)
  if (k < -126.0f) return 0.0f;
  float r = ieee::ffma(k, -0.693359375f, x);  // ln 2 = 0.693359375 - 2.12194440e-4 (Cody-Waite; first part exact)
  r = ieee::ffma(k, 2.12194440e-4f, r);
  float p = 1.98412698e-4f;  // 1/5040
  p = ieee::ffma(p, r, 1.38888889e-3f);
  p = ieee::ffma(p, r, 8.33333377e-3f);
  p = ieee::ffma(p, r, 4.16666679e-2f);
  p = ieee::ffma(p, r, 1.66666672e-1f);
  p = ieee::ffma(p, r, 0.5f);
  p = ieee::ffma(p, r, 1.0f);
  p = ieee::ffma(p, r, 1.0f);
  const int ki = static_cast<int>(k);
  return ieee::fmul(p, bits_float(static_cast<uint32_t>(ki + 127) << 23));
}

inline constexpr int kWeightBits = 40;

// s: the token's warped score, m: the row's largest warped score (s <= m), both finite or s = -inf.
TG_IEEE_FN uint64_t weight_of(float s, float m) {
  const float e = exp_nonpos(ieee::fsub(s, m));
  const float scaled = ieee::fmul(e, 1099511627776.0f);  // 2^40: exact
#if defined(__CUDA_ARCH__)
  return __float2ull_rz(scaled);
#else
  return static_cast<uint64_t>(scaled);
#endif
}

// Top-p's cut: floor(double(cut) * double(total)), where cut = float(1 - p) in [0, 1] and total < 2^63.
TG_IEEE_FN uint64_t top_p_target(float cut, uint64_t total) {
#if defined(__CUDA_ARCH__)
  return __double2ull_rz(__dmul_rn(static_cast<double>(cut), __ull2double_rn(total)));
#else
  return static_cast<uint64_t>(static_cast<double>(cut) * static_cast<double>(total));
#endif
}

// The 64-bit top-p sort key: the score's order key, then the index (HF's stable ascending sort).
TG_IEEE_FN uint64_t composite_key(float s, uint32_t index) {
  return (static_cast<uint64_t>(order_key(s)) << 32) | index;
}

// The greedy argmax as one 64-bit maximum (the CPU twin's greedy; the CUDA kernel's comparisons order the same way):
// the larger score wins, ties go to the smaller index (the key holds ~index), -0 counts as +0 (order_key) and NaN
// never wins (key 0, the empty value, as the kernel's comparisons skip NaN). Every non-NaN score's key is > 0
// (order_key(-inf) = 0x007FFFFF). So max over any partition of the row's keys is the key of the row's argmax, and
// argmax_key_index(0) (an empty or all-NaN row) is 0, the kernel's fallback.
TG_IEEE_FN uint64_t argmax_key(float s, uint32_t index) {
  if ((float_bits(s) & 0x7FFFFFFFu) > 0x7F800000u) return 0;  // NaN
  return (static_cast<uint64_t>(order_key(s)) << 32) | static_cast<uint32_t>(~index);
}
TG_IEEE_FN int32_t argmax_key_index(uint64_t key) {
  return key == 0 ? 0 : static_cast<int32_t>(~static_cast<uint32_t>(key));
}

}  // namespace tg::kernels::sampling
