// kernels::cuda::launch: a kernel launch that uses programmatic dependent launch inside a ProgrammaticLaunchScope
// (kernels/launch/programmatic_launch.h: what it is and the rule that keeps it correct), and the device halves.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "common/cuda_check.h"
#include "kernels/launch/programmatic_launch.h"

namespace tg::kernels {

namespace dev {
// Waits until the kernel before this one in the stream has completed and its memory is visible (a no-op for a
// kernel launched without PDL). Call before touching anything an earlier kernel touches.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// Lets the next kernel of the stream (if launched with PDL) be scheduled now; it still waits in its pdl_wait.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
}  // namespace dev

namespace cuda {
// Throws the refused launch's error naming the kernel (cudaFuncGetName), its grid, block and dynamic shared memory,
// and clears the sticky-free launch error.
[[noreturn]] void launch_failed(cudaError_t err, const void* kernel, dim3 grid, dim3 block, std::size_t smem);

// kernel<<<grid, block, smem, stream>>>(args...), with the programmatic-stream-serialization attribute while a
// ProgrammaticLaunchScope is open on this thread. Errors are checked like TG_CHECK_LAUNCH.
template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
            Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = programmatic_launch_enabled() ? &attr : nullptr;
  cfg.numAttrs = programmatic_launch_enabled() ? 1 : 0;
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (err != cudaSuccess) [[unlikely]] {
    launch_failed(err, reinterpret_cast<const void*>(kernel), grid, block, smem);
  }
}
}  // namespace cuda

}  // namespace tg::kernels
