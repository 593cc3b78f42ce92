#include "common/cuda_check.h"

#include <cstdlib>
#include <string>

namespace tg::detail {

void check_launch(const char* name, const char* file, int line) {
  static const bool sync = [] {
    const char* v = std::getenv("TEGEMMA_SYNC_LAUNCHES");
    return v && std::string(v) == "1";
  }();
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && sync) err = cudaDeviceSynchronize();
  if (err != cudaSuccess) {
    throw_error(file, line, concat("CUDA error in kernel launch '", name, "': ", cudaGetErrorString(err)));
  }
}

}  // namespace tg::detail
