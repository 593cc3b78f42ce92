#include "common/cuda_check.h"

#include "common/env.h"

namespace tg::detail {

void check_launch(const char* name, const char* file, int line) {
  static const bool sync = env_switch("TEGEMMA_SYNC_LAUNCHES", false);
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && sync) err = cudaDeviceSynchronize();
  if (err != cudaSuccess) {
    throw_error(file, line, concat("CUDA error in kernel launch '", name, "': ", cudaGetErrorString(err)));
  }
}

}  // namespace tg::detail
