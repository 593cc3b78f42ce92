// CPU twin of kernels/optim: the same chunk ORDER and the same IEEE operations as the CUDA kernels.
#include <cmath>
#include <vector>

#include "common/numeric.h"
#include "common/nvtx.h"
#include "kernels/optim/optim.h"
#include "kernels/optim/optim_table.h"

namespace tg::kernels::cpu {

void adamw_step(const AdamWTable& table, const AdamWHyper& hyper, const TensorView& state, const TensorView& status,
                const TensorView& workspace) {
  TG_NVTX_FN();
  optim_detail::check_step_args(table, hyper, state, status, workspace, Device::CPU, "cpu::adamw_step");
  const auto& params = table.params();
  double* partial = workspace.ptr<double>();

  // 1. Chunk partials (256-lane trees), then the 1024-lane tree over them.
  int64_t c = 0;
  for (const AdamWParam& p : params) {
    const float* g = p.grad.ptr<const float>();
    const int64_t n = p.param.numel();
    for (int64_t begin = 0; begin < n; begin += kAdamWChunk, ++c) {
      const int64_t end = std::min(n, begin + kAdamWChunk);
      double lane[kAdamWLanes] = {};
      for (int64_t j = begin; j < end; ++j) {
        const double x = g[j];
        lane[(j - begin) % kAdamWLanes] += x * x;
      }
      for (int o = kAdamWLanes / 2; o >= 1; o /= 2) {
        for (int l = 0; l < o; ++l) lane[l] += lane[l + o];
      }
      partial[c] = lane[0];
    }
  }
  std::vector<double> lane(kAdamWReduceLanes, 0.0);
  for (int64_t i = 0; i < table.num_chunks(); ++i) lane[static_cast<std::size_t>(i % kAdamWReduceLanes)] += partial[i];
  for (int o = kAdamWReduceLanes / 2; o >= 1; o /= 2) {
    for (int l = 0; l < o; ++l) lane[static_cast<std::size_t>(l)] += lane[static_cast<std::size_t>(l + o)];
  }
  const double sumsq = lane[0];

  // 2. Norm, clip coefficient, skip flag.
  const float norm = static_cast<float>(std::sqrt(sumsq));
  const bool finite = std::isfinite(sumsq);
  const float coef = optim_detail::clip_coef(hyper.max_grad_norm, norm);
  float* st = status.ptr<float>();
  st[0] = norm;
  st[1] = coef;
  st[2] = finite ? 0.0f : 1.0f;
  st[3] = static_cast<float>(sumsq);
  if (!finite) return;

  // 3. State, then every element.
  double* s = state.ptr<double>();
  s[0] += 1.0;
  s[1] *= hyper.beta1;
  s[2] *= hyper.beta2;
  const optim_detail::HostScalars h = optim_detail::host_scalars(hyper);
  const optim_detail::Scalars sc = optim_detail::make_scalars(h, coef, s[1], s[2]);
  for (const AdamWParam& p : params) {
    float* w = p.param.ptr<float>();
    const float* g = p.grad.ptr<const float>();
    float* m = p.exp_avg.ptr<float>();
    float* v = p.exp_avg_sq.ptr<float>();
    uint16_t* copy = p.copy.empty() ? nullptr : p.copy.ptr<uint16_t>();
    const int64_t n = p.param.numel();
    for (int64_t j = 0; j < n; ++j) {
      w[j] = optim_detail::update_element(h, sc, p.decay, w[j], g[j], m[j], v[j]);
      if (copy) copy[j] = float_to_bf16_bits(w[j]);
    }
  }
}

void accumulate(const TensorView& dst, const TensorView& src) {
  TG_NVTX_FN();
  optim_detail::check_accumulate_args(dst, src, Device::CPU, "cpu::accumulate");
  float* d = dst.ptr<float>();
  const int64_t n = dst.numel();
  if (src.dtype == DType::F32) {
    const float* s = src.ptr<const float>();
    for (int64_t i = 0; i < n; ++i) d[i] += s[i];
  } else {
    const uint16_t* s = src.ptr<const uint16_t>();
    for (int64_t i = 0; i < n; ++i) d[i] += bf16_bits_to_float(s[i]);
  }
}

}  // namespace tg::kernels::cpu
