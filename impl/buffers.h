// Activation buffers of one forward (and, later, backward) pass: carved from one Arena, or only counted.
//
// Modules separate allocation from compute: `allocate(Buffers&, ...)` returns a struct of views and
// `forward(...)` runs on them. The model first runs every allocate() on a counting Buffers to learn the
// arena size for a batch shape (same order, same 256-byte alignment as Arena), allocates the Arena once,
// and from then on each forward re-carves the same arena: no device allocation per forward after warm-up,
// and every buffer backward needs is known up front (what CUDA-graph capture needs too).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/fp8_tensor.h"
#include "common/tensor.h"

namespace tg::impl {

class Buffers {
 public:
  Buffers() = default;  // counting only: views have null data
  explicit Buffers(Arena& arena) : arena_(&arena) {}

  TensorView alloc(DType dtype, Shape shape);
  // A per-tensor FP8 view [rows, cols]: row-wise data (+ the transposed copy if columnwise), its own
  // scale_inv (shared by both copies) and, if own_scale, its own scale and amax (current scaling; delayed
  // scaling attaches the state's). Every scalar is a separate 256-byte-aligned slot: cuBLASLt needs
  // 16-byte-aligned scale pointers (kernels/gemm/gemm.h).
  Fp8View alloc_fp8_per_tensor(DType fp8, int64_t rows, int64_t cols, bool columnwise, bool own_scale);
  // A block-scaled FP8 view (kernels/quantize/block_layout.h): data and scale_inv, + the column-wise pair.
  Fp8View alloc_fp8_block(ScalingMode mode, DType fp8, int64_t rows, int64_t cols, bool columnwise);

  bool counting() const { return arena_ == nullptr; }
  // Bytes the Arena needs for everything allocated so far (counting), or its current use.
  std::size_t bytes() const;

 private:
  Arena* arena_ = nullptr;
  std::size_t counted_ = 0;
};

// Waits until `stream`'s work is done (no-op in builds without CUDA).
void sync_stream(Stream stream);
// Stream-ordered zero fill / copy that never block the host, also on the default stream (common's zero_bytes
// and copy_bytes are synchronous there). Contiguous views; host views are done at once.
void zero_async(const TensorView& t, Stream stream);
void copy_async(const TensorView& dst, const TensorView& src, Stream stream);

}  // namespace tg::impl
