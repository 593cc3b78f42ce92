#include "kernels/embedding/embedding.h"

#include <climits>
#include <cmath>
#include <cstring>

#include "common/numeric.h"
#if TEGEMMA_HAVE_CUDA
#include "common/cuda_check.h"
#endif

namespace tg::kernels {

float embedding_scale(int64_t hidden, DType act) {
  TG_CHECK(hidden >= 1, "embedding_scale: hidden size must be >= 1, got ", hidden);
  TG_CHECK(act == DType::BF16 || act == DType::F16 || act == DType::F32,
           "embedding_scale: activation dtype must be BF16, F16 or F32, got ", act);
  // HF: a Python float sqrt (FP64) made a tensor of the activation dtype (via FP32).
  return round_to(act, static_cast<float>(std::sqrt(static_cast<double>(hidden))));
}

namespace embedding_detail {

void fail_bad_id(int64_t count, int64_t token, int64_t id, int64_t vocab, const char* what) {
  TG_FAIL(what, ": ", count, " token(s) have an id outside [0, ", vocab, "); the first is token ", token, " with id ",
          id);
}

void check_args(const TensorView& ids, const TensorView& rows, const TensorView& acts, float scale,
                const TensorView& status, Device device, bool backward, const char* what) {
  TG_CHECK(!ids.empty() && (ids.dtype == DType::I32 || ids.dtype == DType::I64) && ids.ndim() == 1, what,
           ": ids must be a 1-D I32 or I64 view, got ", ids.describe());
  check_contiguous(ids, what);
  check_device(ids, device, what);
  const int64_t t = ids.shape[0];
  const char* rows_name = backward ? "dtable" : "table";
  TG_CHECK(!rows.empty() && rows.ndim() == 2 && rows.strides[1] == 1 && rows.strides[0] >= rows.shape[1], what, ": ",
           rows_name, " must be a 2-D [V, D] view with unit column stride, got ", rows.describe(), " strides ",
           rows.strides);
  if (backward) {
    TG_CHECK(rows.dtype == DType::F32, what, ": dtable must be F32 (an FP32 accumulation buffer), got ", rows.dtype);
  } else {
    TG_CHECK(rows.dtype == DType::BF16 || rows.dtype == DType::F32, what, ": table must be BF16 or F32, got ",
             rows.dtype);
  }
  check_device(rows, device, what);
  const int64_t d = rows.shape[1];
  const char* acts_name = backward ? "dout" : "out";
  TG_CHECK(!acts.empty() && acts.ndim() == 2 && acts.strides[1] == 1 && acts.strides[0] >= d, what, ": ", acts_name,
           " must be a 2-D [T, D] view with unit column stride, got ", acts.describe());
  TG_CHECK(acts.shape[0] == t && acts.shape[1] == d, what, ": ", acts_name, " must be [", t, ", ", d, "], got ",
           acts.shape);
  TG_CHECK(acts.dtype == DType::BF16 || acts.dtype == DType::F32, what, ": ", acts_name, " must be BF16 or F32, got ",
           acts.dtype);
  check_device(acts, device, what);
  TG_CHECK(std::isfinite(scale), what, ": scale must be finite, got ", scale);
  TG_CHECK(t < INT_MAX, what, ": at most ", INT_MAX - 1, " tokens per call, got ", t);
  if (!status.empty()) {
    TG_CHECK(status.dtype == DType::I32 && status.numel() == 2 && status.is_contiguous(), what,
             ": status must be a contiguous I32 [2] view, got ", status.describe());
    check_device(status, device, what);
  }
}

}  // namespace embedding_detail

void embedding_forward(const TensorView& ids, const TensorView& table, float scale, const TensorView& out,
                       const TensorView& status, Stream stream) {
  if (ids.device == Device::CPU) return cpu::embedding_forward(ids, table, scale, out, status);
#if TEGEMMA_HAVE_CUDA
  cuda::embedding_forward(ids, table, scale, out, status, stream);
#else
  TG_FAIL("embedding_forward: CUDA tensors in a build without CUDA");
#endif
}

void embedding_backward(const TensorView& ids, const TensorView& dout, float scale, const TensorView& dtable,
                        const TensorView& status, Stream stream) {
  if (ids.device == Device::CPU) return cpu::embedding_backward(ids, dout, scale, dtable, status);
#if TEGEMMA_HAVE_CUDA
  cuda::embedding_backward(ids, dout, scale, dtable, status, stream);
#else
  TG_FAIL("embedding_backward: CUDA tensors in a build without CUDA");
#endif
}

void embedding_check_status(const TensorView& status, const TensorView& ids, int64_t vocab, Stream stream) {
  TG_CHECK(status.dtype == DType::I32 && status.numel() == 2 && status.is_contiguous(),
           "embedding_check_status: status must be a contiguous I32 [2] view, got ", status.describe());
  TG_CHECK(ids.dtype == DType::I32 || ids.dtype == DType::I64, "embedding_check_status: ids must be I32 or I64");
  int32_t host[2];
  TensorView host_view(host, DType::I32, Shape{2}, Device::CPU);
  if (status.device == Device::CPU) {
    std::memcpy(host, status.data, sizeof(host));
  } else {
#if TEGEMMA_HAVE_CUDA
    TG_CHECK_CUDA(cudaStreamSynchronize(cuda_stream(stream)));  // the kernels that wrote it may be on any stream
#endif
    copy_bytes(host_view, status);
  }
  if (host[0] == 0) return;
  const int64_t token = host[1];
  TG_CHECK(token >= 0 && token < ids.numel(), "embedding_check_status: corrupt status {", host[0], ", ", host[1], "}");
  const size_t es = dtype_size(ids.dtype);
  TensorView one(static_cast<char*>(ids.data) + token * es, ids.dtype, Shape{1}, ids.device);
  int64_t raw = 0;
  copy_bytes(TensorView(&raw, ids.dtype, Shape{1}, Device::CPU), one);
  const int64_t id = ids.dtype == DType::I32 ? static_cast<int64_t>(static_cast<int32_t>(raw)) : raw;
  embedding_detail::fail_bad_id(host[0], token, id, vocab, "embedding");
}

}  // namespace tg::kernels
