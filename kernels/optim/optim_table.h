// The device-side AdamW table (internal to kernels/optim): POD entries and chunks in one buffer, and the
// per-element update and scalar rules shared bit for bit by the CPU twin and the CUDA kernels.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/elementwise/ieee_math.h"
#include "kernels/float_bits.h"
#include "kernels/optim/optim.h"

namespace tg::kernels::optim_detail {

struct Entry {
  float* p;
  float* g;
  float* m;
  float* v;
  uint16_t* copy;  // BF16 bits, or null
  int64_t n;
  int32_t decay;
  int32_t pad;
};

struct Chunk {
  int64_t entry;
  int64_t begin;
};

// The step's scalars. The ones that depend only on host values are rounded on the host (HostScalars:
// computed once per step, passed by value; no FMA contraction can reach them); the bias corrections depend
// on the device state and are computed on the device with single FP64 operations (a subtraction, a
// division, a square root: nothing nvcc could contract), identically in the twin.
struct HostScalars {
  double lr;
  double beta1, beta2;
  float decay_factor;  // fl32(1 - lr * wd)
  float one_minus_b1, b2, one_minus_b2, eps;
  double max_grad_norm;
};

struct Scalars {
  float coef;           // clip coefficient
  float bc2_sqrt;       // fl32(sqrt(1 - beta2^step))
  float neg_step_size;  // -fl32(lr / (1 - beta1^step))
};

// From the UPDATED state (step already counted).
TG_IEEE_FN Scalars make_scalars(const HostScalars& h, float coef, double beta1_pow, double beta2_pow) {
  Scalars s;
  s.coef = coef;
#if defined(__CUDA_ARCH__)
  s.bc2_sqrt = static_cast<float>(__dsqrt_rn(__dsub_rn(1.0, beta2_pow)));
  s.neg_step_size = -static_cast<float>(__ddiv_rn(h.lr, __dsub_rn(1.0, beta1_pow)));
#else
  s.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - beta2_pow));
  s.neg_step_size = -static_cast<float>(h.lr / (1.0 - beta1_pow));
#endif
  return s;
}

// One element of the update (optim.h, step 3). Returns the new p; m and v updated in place.
TG_IEEE_FN float update_element(const HostScalars& h, const Scalars& s, bool decay, float p, float g_raw, float& m,
                                float& v) {
  using namespace ieee;
  const float g = fmul(g_raw, s.coef);
  if (decay) p = fmul(p, h.decay_factor);
  m = fadd(m, fmul(h.one_minus_b1, fsub(g, m)));
  v = fadd(fmul(v, h.b2), fmul(fmul(g, g), h.one_minus_b2));
  const float d = fadd(fdiv(fsqrt(v), s.bc2_sqrt), h.eps);
  return fadd(p, fmul(s.neg_step_size, fdiv(m, d)));
}

// clip coefficient from the FP32 norm (optim.h, step 2).
TG_IEEE_FN float clip_coef(double max_grad_norm, float norm) {
  if (!(max_grad_norm > 0.0)) return 1.0f;
#if defined(__CUDA_ARCH__)
  const float c = static_cast<float>(__ddiv_rn(max_grad_norm, __dadd_rn(static_cast<double>(norm), 1e-6)));
#else
  const float c = static_cast<float>(max_grad_norm / (static_cast<double>(norm) + 1e-6));
#endif
  return c < 1.0f ? c : 1.0f;
}

}  // namespace tg::kernels::optim_detail

namespace tg::kernels::optim_detail {
HostScalars host_scalars(const AdamWHyper& h);
}  // namespace tg::kernels::optim_detail
