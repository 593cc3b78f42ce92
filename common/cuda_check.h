// CUDA runtime status checks (only in CUDA builds). Library-specific checks for cuBLASLt and cuDNN
// (TG_CHECK_CUBLAS, TG_CHECK_CUDNN) live in kernels/cuda/lib_check.h and build on the same
// TG_CHECK_STATUS macro from common/check.h.
#pragma once

#if !TEGEMMA_HAVE_CUDA
#error "common/cuda_check.h is for CUDA builds only"
#endif

#include <cuda_runtime.h>

#include "common/check.h"
#include "common/tensor.h"

#define TG_CHECK_CUDA(expr) TG_CHECK_STATUS("CUDA", expr, cudaSuccess, cudaGetErrorString)

// After every kernel launch: checks the launch error, and with TEGEMMA_SYNC_LAUNCHES=1 in the
// environment also synchronises so that an asynchronous fault is reported at the launch that caused it.
#define TG_CHECK_LAUNCH(name) ::tg::detail::check_launch(name, __FILE__, __LINE__)

namespace tg {

inline cudaStream_t cuda_stream(Stream s) { return static_cast<cudaStream_t>(s.handle); }

namespace detail {
void check_launch(const char* name, const char* file, int line);
}  // namespace detail

}  // namespace tg
