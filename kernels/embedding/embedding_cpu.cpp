// CPU twin of the scaled embedding: validate ids, then simple loops (embedding.h is the contract).
#include <algorithm>
#include <climits>

#include "common/nvtx.h"
#include "kernels/elementwise/cpu_access.h"
#include "kernels/elementwise/ieee_math.h"
#include "kernels/embedding/embedding.h"

namespace tg::kernels::cpu {

namespace {

int64_t id_at(const TensorView& ids, int64_t t) {
  return ids.dtype == DType::I32 ? ids.ptr<int32_t>()[t] : ids.ptr<int64_t>()[t];
}

// Every id in [0, vocab), or the status is written and tg::Error thrown before anything else happens.
void validate(const TensorView& ids, int64_t vocab, const TensorView& status, const char* what) {
  int64_t bad = 0, first = -1;
  for (int64_t t = 0; t < ids.numel(); ++t) {
    const int64_t id = id_at(ids, t);
    if (id < 0 || id >= vocab) {
      if (bad++ == 0) first = t;
    }
  }
  if (!status.empty()) {
    status.ptr<int32_t>()[0] = static_cast<int32_t>(std::min<int64_t>(bad, INT_MAX));
    status.ptr<int32_t>()[1] = bad > 0 ? static_cast<int32_t>(first) : INT_MAX;
  }
  if (bad > 0) embedding_detail::fail_bad_id(bad, first, id_at(ids, first), vocab, what);
}

}  // namespace

void embedding_forward(const TensorView& ids, const TensorView& table, float scale, const TensorView& out,
                       const TensorView& status) {
  TG_NVTX_FN();
  embedding_detail::check_args(ids, table, out, scale, status, Device::CPU, false, "embedding_forward");
  validate(ids, table.shape[0], status, "embedding_forward");
  const int64_t d = table.shape[1];
  for (int64_t t = 0; t < ids.numel(); ++t) {
    const int64_t v = id_at(ids, t);
    for (int64_t j = 0; j < d; ++j) cpu_access::store(out, t, j, ieee::fmul(cpu_access::load(table, v, j), scale));
  }
}

void embedding_backward(const TensorView& ids, const TensorView& dout, float scale, const TensorView& dtable,
                        const TensorView& status) {
  TG_NVTX_FN();
  embedding_detail::check_args(ids, dtable, dout, scale, status, Device::CPU, true, "embedding_backward");
  validate(ids, dtable.shape[0], status, "embedding_backward");
  const int64_t d = dtable.shape[1];
  for (int64_t t = 0; t < ids.numel(); ++t) {  // increasing token order: the contract's summation order
    float* row = dtable.ptr<float>() + id_at(ids, t) * dtable.strides[0];
    for (int64_t j = 0; j < d; ++j) row[j] = ieee::fadd(row[j], ieee::fmul(cpu_access::load(dout, t, j), scale));
  }
}

}  // namespace tg::kernels::cpu
