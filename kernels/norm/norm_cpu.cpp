// CPU twin of the Gemma RMSNorm kernels: simple loops with the contract's rounding points and its
// LANE ORDER reduction (norm.h), so the CUDA kernels must match it bit for bit.
#include <algorithm>
#include <vector>

#include "common/nvtx.h"
#include "kernels/elementwise/cpu_access.h"
#include "kernels/elementwise/fp8_out.h"
#include "kernels/elementwise/ieee_math.h"
#include "kernels/norm/norm.h"

namespace tg::kernels::cpu {

namespace {

using namespace ieee;  // NOLINT: the scalar float ops read like the formulas in norm.h
using cpu_access::load;
using cpu_access::load1;
using cpu_access::store;

// sum_j a_j * b_j in the LANE ORDER of norm.h.
float lane_order_dot(const std::vector<float>& a, const std::vector<float>& b) {
  using norm_detail::kChunk;
  using norm_detail::kLanes;
  const auto d = static_cast<int64_t>(a.size());
  const int64_t chunks = (d + kChunk - 1) / kChunk;
  float acc[kLanes] = {};
  for (int lane = 0; lane < kLanes; ++lane) {
    for (int64_t c = lane; c < chunks; c += kLanes) {
      for (int64_t j = c * kChunk; j < std::min(d, (c + 1) * kChunk); ++j) acc[lane] = ffma(a[j], b[j], acc[lane]);
    }
  }
  for (int o = kLanes / 2; o > 0; o >>= 1) {
    float next[kLanes];
    for (int l = 0; l < kLanes; ++l) next[l] = fadd(acc[l], acc[l ^ o]);
    std::copy(next, next + kLanes, acc);
  }
  return acc[0];
}

// The shared forward: h (after the optional residual add, rounded to A), rstd, and y in FP32 before the
// final rounding; `emit(t, j, y_fp32)` stores it.
template <typename Emit>
void forward_rows(const TensorView& x, const TensorView& w, float eps, const TensorView& rstd,
                  const TensorView& residual, Emit&& emit) {
  const int64_t t_count = x.shape[0], d = x.shape[1];
  const float inv_d = fdiv(1.0f, static_cast<float>(d));
  std::vector<float> g(static_cast<size_t>(d)), h(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) g[j] = fadd(1.0f, load1(w, j));
  for (int64_t t = 0; t < t_count; ++t) {
    for (int64_t j = 0; j < d; ++j) {
      if (residual.empty()) {
        h[j] = load(x, t, j);
      } else {
        h[j] = round_to(x.dtype, fadd(load(residual, t, j), load(x, t, j)));
        store(residual, t, j, h[j]);
      }
    }
    const float ss = lane_order_dot(h, h);
    const float r = fdiv(1.0f, fsqrt(fadd(fmul(ss, inv_d), eps)));
    rstd.ptr<float>()[t] = r;
    for (int64_t j = 0; j < d; ++j) emit(t, j, fmul(fmul(h[j], r), g[j]));
  }
}

}  // namespace

void rmsnorm_forward(const TensorView& x, const TensorView& w, float eps, const TensorView& y, const TensorView& rstd,
                     const TensorView& residual, const TensorView& amax) {
  TG_NVTX_FN();
  const DType a = norm_detail::check_forward_args(x, w, eps, rstd, residual, Device::CPU, "rmsnorm_forward");
  norm_detail::check_rows(y, x.shape[0], x.shape[1], a, Device::CPU, "rmsnorm_forward(y)");
  if (!amax.empty()) {
    TG_CHECK(amax.dtype == DType::F32 && amax.numel() == 1 && amax.device == Device::CPU,
             "rmsnorm_forward: amax must be F32 [1] on the CPU, got ", amax.describe());
  }
  uint32_t amax_bits = 0;
  forward_rows(x, w, eps, rstd, residual, [&](int64_t t, int64_t j, float v) {
    v = round_to(a, v);
    amax_bits = std::max(amax_bits, abs_bits(v));
    store(y, t, j, v);
  });
  if (!amax.empty()) detail::amax_reduce_host(amax, amax_bits);
}

void rmsnorm_forward_fp8(const TensorView& x, const TensorView& w, float eps, const Fp8View& out,
                         const TensorView& rstd, const TensorView& residual) {
  TG_NVTX_FN();
  const DType a = norm_detail::check_forward_args(x, w, eps, rstd, residual, Device::CPU, "rmsnorm_forward_fp8");
  detail::check_fp8_output(out, x.shape[0], x.shape[1], Device::CPU, "rmsnorm_forward_fp8(out)");
  detail::Fp8OutputCpu q(out);
  forward_rows(x, w, eps, rstd, residual, [&](int64_t t, int64_t j, float v) { q.store(t, j, round_to(a, v)); });
  q.finish();
}

void rmsnorm_backward(const TensorView& dy, const TensorView& x, const TensorView& w, const TensorView& rstd,
                      const TensorView& dx, const TensorView& dw, const TensorView& workspace,
                      const TensorView& dresidual) {
  TG_NVTX_FN();
  norm_detail::check_backward_args(dy, x, w, rstd, dx, dw, workspace, dresidual, Device::CPU, "rmsnorm_backward");
  using norm_detail::kBwdGroupRows;
  using norm_detail::kReduceSlices;
  const DType a = x.dtype;
  const int64_t t_count = x.shape[0], d = x.shape[1];
  const int64_t groups = rmsnorm_backward_groups(t_count);
  const float inv_d = fdiv(1.0f, static_cast<float>(d));
  std::vector<float> g(static_cast<size_t>(d)), n(static_cast<size_t>(d)), dn(static_cast<size_t>(d)),
      dyv(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) g[j] = fadd(1.0f, load1(w, j));
  float* ws = workspace.ptr<float>();
  std::vector<float> chain[norm_detail::kBwdChains];
  for (auto& c : chain) c.resize(static_cast<size_t>(d));
  for (int64_t grp = 0; grp < groups; ++grp) {
    for (auto& c : chain) std::fill(c.begin(), c.end(), 0.0f);
    for (int64_t t = grp * kBwdGroupRows; t < std::min(t_count, (grp + 1) * kBwdGroupRows); ++t) {
      std::vector<float>& acc = chain[(t - grp * kBwdGroupRows) % norm_detail::kBwdChains];
      const float r = rstd.ptr<float>()[t];
      for (int64_t j = 0; j < d; ++j) {
        dyv[j] = load(dy, t, j);
        n[j] = fmul(load(x, t, j), r);
        dn[j] = fmul(dyv[j], g[j]);
      }
      const float c = fmul(lane_order_dot(dn, n), inv_d);
      for (int64_t j = 0; j < d; ++j) {
        float v = round_to(a, fmul(r, fsub(dn[j], fmul(n[j], c))));
        if (!dresidual.empty()) v = round_to(a, fadd(v, load(dresidual, t, j)));
        store(dx, t, j, v);
        acc[j] = ffma(dyv[j], n[j], acc[j]);
      }
    }
    static_assert(norm_detail::kBwdChains == 2);
    for (int64_t j = 0; j < d; ++j) ws[grp * d + j] = fadd(chain[0][j], chain[1][j]);
  }
  for (int64_t j = 0; j < d; ++j) {
    float total = 0.0f;
    for (int s = 0; s < kReduceSlices; ++s) {
      float part = 0.0f;
      for (int64_t grp = s; grp < groups; grp += kReduceSlices) part = fadd(part, ws[grp * d + j]);
      total = s == 0 ? part : fadd(total, part);
    }
    cpu_access::store1(dw, j, total);
  }
}

}  // namespace tg::kernels::cpu
