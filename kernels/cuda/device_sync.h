// Helpers of the release functions of the kernels' process-lifetime library state (kernels/library_state.h):
// make a device current for a while, and wait for all work on a set of devices before anything is freed.
#pragma once

#include <cuda_runtime.h>

#include <set>

#include "common/cuda_check.h"

namespace tg::kernels::cuda::state_release {

// Makes `device` current for the object's lifetime and makes the previously current device current again
// afterwards. Errors are ignored (release paths: the synchronisation before them reports a broken device).
class CurrentDevice {
 public:
  explicit CurrentDevice(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) (void)cudaSetDevice(device);
  }
  ~CurrentDevice() {
    int now = -1;
    if (previous_ >= 0 && (cudaGetDevice(&now) != cudaSuccess || now != previous_)) (void)cudaSetDevice(previous_);
  }
  CurrentDevice(const CurrentDevice&) = delete;
  CurrentDevice& operator=(const CurrentDevice&) = delete;

 private:
  int previous_ = -1;
};

// cudaDeviceSynchronize on each of `devices` (each made current in turn), so that no work still in flight uses
// what the caller frees next. Throws tg::Error (TG_CHECK_CUDA) at the first device that reports an error.
inline void synchronize_devices(const std::set<int>& devices) {
  for (const int device : devices) {
    const CurrentDevice current(device);
    TG_CHECK_CUDA(cudaDeviceSynchronize());
  }
}

}  // namespace tg::kernels::cuda::state_release
