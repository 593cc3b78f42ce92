// CPU twin of kernels/loss: FP64 softmax statistics, one rounding per output, the FP64 reduction ORDER.
#include <cmath>
#include <limits>
#include <vector>

#include "common/nvtx.h"
#include "kernels/elementwise/cpu_access.h"
#include "kernels/loss/loss.h"

namespace tg::kernels::cpu {

void cross_entropy(const TensorView& logits, const TensorView& targets, float scale, const TensorView& dlogits,
                   const TensorView& row_loss, const TensorView& loss) {
  TG_NVTX_FN();
  const auto d = loss_detail::check_args(logits, targets, scale, dlogits, row_loss, loss, Device::CPU,
                                         "cpu::cross_entropy");
  const int32_t* y = targets.ptr<const int32_t>();
  for (int64_t t = 0; t < d.rows; ++t) {
    TG_CHECK(y[t] == kIgnoreIndex || (y[t] >= 0 && y[t] < d.vocab), "cpu::cross_entropy: target of row ", t, " is ",
             y[t], ", expected -100 (ignored) or a token id in [0, ", d.vocab, ")");
  }
  float* rl = row_loss.ptr<float>();
  std::vector<double> x(static_cast<std::size_t>(d.vocab));
  for (int64_t t = 0; t < d.rows; ++t) {
    if (y[t] == kIgnoreIndex) {
      rl[t] = 0.0f;
      if (!dlogits.empty()) {
        for (int64_t j = 0; j < d.vocab; ++j) cpu_access::store(dlogits, t, j, 0.0f);
      }
      continue;
    }
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < d.vocab; ++j) {
      x[static_cast<std::size_t>(j)] = cpu_access::load(logits, t, j);  // read all before any write (in place)
      m = std::fmax(m, x[static_cast<std::size_t>(j)]);
    }
    double s = 0.0;
    for (int64_t j = 0; j < d.vocab; ++j) s += std::exp(x[static_cast<std::size_t>(j)] - m);
    const double log_s = std::log(s);  // lse = m + log_s, never formed: m may dwarf log_s
    rl[t] = static_cast<float>((m - x[static_cast<std::size_t>(y[t])]) + log_s);
    if (dlogits.empty()) continue;
    for (int64_t j = 0; j < d.vocab; ++j) {
      const double p = std::exp((x[static_cast<std::size_t>(j)] - m) - log_s);
      const double g = (p - (j == y[t] ? 1.0 : 0.0)) * static_cast<double>(scale);
      cpu_access::store(dlogits, t, j, static_cast<float>(g));
    }
  }
  if (loss.empty()) return;
  // The FP64 ORDER of loss.h.
  std::vector<double> lane(kLossReduceLanes, 0.0);
  for (int64_t t = 0; t < d.rows; ++t) lane[static_cast<std::size_t>(t % kLossReduceLanes)] += rl[t];
  for (int o = kLossReduceLanes / 2; o >= 1; o /= 2) {
    for (int i = 0; i < o; ++i) lane[static_cast<std::size_t>(i)] += lane[static_cast<std::size_t>(i + o)];
  }
  float* l = loss.ptr<float>();
  l[0] = static_cast<float>(static_cast<double>(l[0]) + static_cast<double>(scale) * lane[0]);
}

}  // namespace tg::kernels::cpu
