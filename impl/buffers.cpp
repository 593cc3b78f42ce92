#include "impl/buffers.h"

#include "common/check.h"
#include "kernels/quantize/block_layout.h"

#if TEGEMMA_HAVE_CUDA
#include "common/cuda_check.h"
#endif

namespace tg::impl {

TensorView Buffers::alloc(DType dtype, Shape shape) {
  if (arena_) return arena_->alloc(dtype, shape);
  // Mirror Arena::alloc_bytes: align the start, then bump.
  counted_ = (counted_ + Arena::kAlign - 1) / Arena::kAlign * Arena::kAlign;
  counted_ += static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
  return TensorView(nullptr, dtype, shape, Device::CPU);
}

std::size_t Buffers::bytes() const { return arena_ ? arena_->used() : counted_; }

Fp8View Buffers::alloc_fp8_per_tensor(DType fp8, int64_t rows, int64_t cols, bool columnwise, bool own_scale) {
  Fp8View v;
  v.mode = ScalingMode::kPerTensor;
  v.data = alloc(fp8, {rows, cols});
  v.scale_inv = alloc(DType::F32, {1});
  if (columnwise) {
    v.columnwise_data = alloc(fp8, {cols, rows});
    v.columnwise_scale_inv = v.scale_inv;
  }
  if (own_scale) {
    v.scale = alloc(DType::F32, {1});
    v.amax = alloc(DType::F32, {1});
  }
  return v;
}

Fp8View Buffers::alloc_fp8_block(ScalingMode mode, DType fp8, int64_t rows, int64_t cols, bool columnwise) {
  Fp8View v;
  v.mode = mode;
  v.data = alloc(fp8, {rows, cols});
  v.scale_inv = alloc(DType::F32, kernels::block_scale_shape(mode, rows, cols, false));
  if (columnwise) {
    v.columnwise_data = alloc(fp8, {cols, rows});
    v.columnwise_scale_inv = alloc(DType::F32, kernels::block_scale_shape(mode, rows, cols, true));
  }
  return v;
}

void zero_async(const TensorView& t, Stream stream) {
  check_contiguous(t, "zero_async");
  if (t.device == Device::CPU || t.nbytes() == 0) return zero_bytes(t, stream);
#if TEGEMMA_HAVE_CUDA
  TG_CHECK_CUDA(cudaMemsetAsync(t.data, 0, t.nbytes(), cuda_stream(stream)));
#endif
}

void copy_async(const TensorView& dst, const TensorView& src, Stream stream) {
  check_contiguous(dst, "copy_async(dst)");
  check_contiguous(src, "copy_async(src)");
  TG_CHECK(dst.nbytes() == src.nbytes(), "copy_async: ", dst.describe(), " and ", src.describe(), " differ in size");
  if ((dst.device == Device::CPU && src.device == Device::CPU) || dst.nbytes() == 0) return copy_bytes(dst, src);
#if TEGEMMA_HAVE_CUDA
  // From pageable host memory the call returns once the source has been staged, so it may be reused then.
  TG_CHECK_CUDA(cudaMemcpyAsync(dst.data, src.data, dst.nbytes(), cudaMemcpyDefault, cuda_stream(stream)));
#endif
}

void sync_stream(Stream stream) {
#if TEGEMMA_HAVE_CUDA
  if (cuda_available()) TG_CHECK_CUDA(cudaStreamSynchronize(cuda_stream(stream)));
#else
  (void)stream;
#endif
}

}  // namespace tg::impl
