// CPU twin of GeGLU: simple loops with the rounding points of activation.h (the golden).
#include <algorithm>

#include "common/nvtx.h"
#include "kernels/activation/activation.h"
#include "kernels/elementwise/cpu_access.h"
#include "kernels/elementwise/fp8_out.h"
#include "kernels/elementwise/ieee_math.h"

namespace tg::kernels::cpu {

namespace {

using cpu_access::load;
using cpu_access::store;

struct Grads {
  float d_gate, d_up;  // before the output rounding (d_gate's inputs already rounded as in activation.h)
};

// The forward value before the output rounding.
float geglu_value(DType a, float g, float u) { return ieee::fmul(round_to(a, ieee::gelu_tanh(g)), u); }

Grads geglu_grads(DType a, float dout, float g, float u) {
  const ieee::GeluValueGrad vg = ieee::gelu_tanh_value_grad(g);
  const float act = round_to(a, vg.value);
  const float da = round_to(a, ieee::fmul(dout, u));
  return {ieee::fmul(da, vg.grad), ieee::fmul(dout, act)};
}

}  // namespace

void geglu_forward(const TensorView& fc1, const TensorView& out, const TensorView& amax) {
  TG_NVTX_FN();
  const int64_t f = activation_detail::check_fc1(fc1, Device::CPU, "geglu_forward(fc1)");
  const int64_t t_count = fc1.shape[0];
  activation_detail::check_act(out, t_count, f, Device::CPU, "geglu_forward(out)");
  activation_detail::check_amax(amax, Device::CPU, "geglu_forward(amax)");
  uint32_t amax_bits = 0;
  for (int64_t t = 0; t < t_count; ++t) {
    for (int64_t j = 0; j < f; ++j) {
      const float v = round_to(out.dtype, geglu_value(fc1.dtype, load(fc1, t, j), load(fc1, t, f + j)));
      amax_bits = std::max(amax_bits, ieee::abs_bits(v));
      store(out, t, j, v);
    }
  }
  if (!amax.empty()) detail::amax_reduce_host(amax, amax_bits);
}

void geglu_forward_fp8(const TensorView& fc1, const Fp8View& out) {
  TG_NVTX_FN();
  const int64_t f = activation_detail::check_fc1(fc1, Device::CPU, "geglu_forward_fp8(fc1)");
  const int64_t t_count = fc1.shape[0];
  detail::check_fp8_output(out, t_count, f, Device::CPU, "geglu_forward_fp8(out)");
  detail::Fp8OutputCpu q(out);
  for (int64_t t = 0; t < t_count; ++t) {
    for (int64_t j = 0; j < f; ++j) {
      q.store(t, j, round_to(fc1.dtype, geglu_value(fc1.dtype, load(fc1, t, j), load(fc1, t, f + j))));
    }
  }
  q.finish();
}

void geglu_backward(const TensorView& dout, const TensorView& fc1, const TensorView& dfc1) {
  TG_NVTX_FN();
  const int64_t f = activation_detail::check_fc1(fc1, Device::CPU, "geglu_backward(fc1)");
  const int64_t t_count = fc1.shape[0];
  activation_detail::check_act(dout, t_count, f, Device::CPU, "geglu_backward(dout)", &fc1.dtype);
  activation_detail::check_act(dfc1, t_count, 2 * f, Device::CPU, "geglu_backward(dfc1)");
  for (int64_t t = 0; t < t_count; ++t) {
    for (int64_t j = 0; j < f; ++j) {
      const Grads g = geglu_grads(fc1.dtype, load(dout, t, j), load(fc1, t, j), load(fc1, t, f + j));
      store(dfc1, t, j, g.d_gate);
      store(dfc1, t, f + j, g.d_up);
    }
  }
}

void geglu_backward_fp8(const TensorView& dout, const TensorView& fc1, const Fp8View& dfc1) {
  TG_NVTX_FN();
  const int64_t f = activation_detail::check_fc1(fc1, Device::CPU, "geglu_backward_fp8(fc1)");
  const int64_t t_count = fc1.shape[0];
  activation_detail::check_act(dout, t_count, f, Device::CPU, "geglu_backward_fp8(dout)", &fc1.dtype);
  detail::check_fp8_output(dfc1, t_count, 2 * f, Device::CPU, "geglu_backward_fp8(dfc1)");
  detail::Fp8OutputCpu q(dfc1);
  const DType a = fc1.dtype;
  for (int64_t t = 0; t < t_count; ++t) {
    for (int64_t j = 0; j < f; ++j) {
      const Grads g = geglu_grads(a, load(dout, t, j), load(fc1, t, j), load(fc1, t, f + j));
      q.store(t, j, round_to(a, g.d_gate));
      q.store(t, f + j, round_to(a, g.d_up));
    }
  }
  q.finish();
}

}  // namespace tg::kernels::cpu
