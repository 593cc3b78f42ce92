// NVTX ranges: every kernel launcher and model stage opens one so an Nsight timeline reads like the
// model. No-ops in builds without CUDA. NVTX3 is header-only (it ships in the CUDA include dir).
//
//   TG_NVTX_FN();                 // a range named after the enclosing function
//   TG_NVTX_RANGE("layer 3 mlp");  // a named range for the rest of the scope
//
// Also, in CUDA builds, nvtx::mark_initialized (NVTX Memory API for Compute Sanitizer), below.
#pragma once

#include <cstddef>

#if TEGEMMA_HAVE_CUDA
#include <nvtx3/nvToolsExt.h>
#endif

namespace tg {

class NvtxRange {
 public:
#if TEGEMMA_HAVE_CUDA
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
#else
  explicit NvtxRange(const char*) {}
#endif
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

#if TEGEMMA_HAVE_CUDA
struct Stream;  // common/tensor.h

namespace nvtx {
// Tells compute-sanitizer's initcheck that [ptr, ptr + bytes) is written by the work already enqueued on `stream`
// (nvtxMemCudaMarkInitialized, in the domain "tegemma"). It exists because initcheck does not record cuBLASLt's
// Hopper output stores (TMA) as writes, so each read of a GEMM output by one of our kernels was reported as a read
// of uninitialized memory (issue 11; docs/sanitizers.md): kernels/gemm marks every cuBLASLt output after the
// matmul. Without a tool attached NVTX's function slot is empty and the call returns at once (no allocation, no
// CUDA call); a zero size marks nothing.
void mark_initialized(const void* ptr, std::size_t bytes, Stream stream);
// The same for `rows` rows of `row_bytes` each, `pitch_bytes` apart (a strided 2-D view): only the rows' bytes, not
// the gaps between them (one range when the rows are contiguous, else batches of rows from a stack array).
void mark_initialized_rows(const void* ptr, std::size_t rows, std::size_t row_bytes, std::size_t pitch_bytes,
                           Stream stream);
}  // namespace nvtx
#endif

}  // namespace tg

#define TG_NVTX_CAT2_(a, b) a##b
#define TG_NVTX_CAT_(a, b) TG_NVTX_CAT2_(a, b)
#define TG_NVTX_RANGE(name) ::tg::NvtxRange TG_NVTX_CAT_(tg_nvtx_range_, __LINE__)(name)
#define TG_NVTX_FN() TG_NVTX_RANGE(__func__)
