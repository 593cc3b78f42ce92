#include "kernels/loss/loss.h"

#include <cmath>
#include <string>

#include "common/check.h"

namespace tg::kernels {

namespace loss_detail {

namespace {
void check_rows(const TensorView& t, int64_t rows, int64_t cols, Device device, const char* what, const char* name) {
  TG_CHECK(t.ndim() == 2, what, ": ", name, " must be 2-D [T, V], got ", t.describe());
  TG_CHECK(t.dtype == DType::BF16 || t.dtype == DType::F32, what, ": ", name, " must be BF16 or F32, got ", t.dtype);
  TG_CHECK(t.shape[0] == rows && t.shape[1] == cols, what, ": ", name, " must be [", rows, ", ", cols, "], got ",
           t.shape);
  TG_CHECK(t.strides[1] == 1 && t.strides[0] >= cols, what, ": ", name,
           " must have unit column stride and a row stride >= V, got strides ", t.strides);
  check_device(t, device, what);
}
}  // namespace

Dims check_args(const TensorView& logits, const TensorView& targets, float scale, const TensorView& dlogits,
                const TensorView& row_loss, const TensorView& loss, Device device, const char* what) {
  TG_CHECK(!logits.empty() && logits.ndim() == 2, what, ": logits must be a 2-D [T, V] view, got ",
           logits.describe());
  const Dims d{logits.shape[0], logits.shape[1]};
  TG_CHECK(d.rows >= 1 && d.vocab >= 1, what, ": logits must have T >= 1 rows and V >= 1 columns, got ",
           logits.shape);
  check_rows(logits, d.rows, d.vocab, device, what, "logits");
  if (!dlogits.empty()) check_rows(dlogits, d.rows, d.vocab, device, what, "dlogits");
  auto vector = [&](const TensorView& t, DType dtype, int64_t n, const char* name) {
    const std::string w = std::string(what) + "(" + name + ")";
    TG_CHECK(!t.empty(), w, ": missing (expected ", dtype, " [", n, "])");
    check_dtype(t, dtype, w.c_str());
    check_shape(t, Shape{n}, w.c_str());
    check_contiguous(t, w.c_str());
    check_device(t, device, w.c_str());
  };
  vector(targets, DType::I32, d.rows, "targets");
  vector(row_loss, DType::F32, d.rows, "row_loss");
  if (!loss.empty()) vector(loss, DType::F32, 1, "loss");
  TG_CHECK(std::isfinite(scale), what, ": scale must be finite, got ", scale);
  return d;
}

}  // namespace loss_detail

void cross_entropy(const TensorView& logits, const TensorView& targets, float scale, const TensorView& dlogits,
                   const TensorView& row_loss, const TensorView& loss, Stream stream) {
  if (logits.device == Device::CPU) return cpu::cross_entropy(logits, targets, scale, dlogits, row_loss, loss);
#if TEGEMMA_HAVE_CUDA
  cuda::cross_entropy(logits, targets, scale, dlogits, row_loss, loss, stream);
#else
  (void)stream;
  TG_FAIL("cross_entropy: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
