// kernels::cuda::launch: a kernel launch that uses programmatic dependent launch inside a ProgrammaticLaunchScope
// (kernels/launch/programmatic_launch.h: what it is and the rule that keeps it correct), and the device halves.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "common/cuda_check.h"
#include "kernels/launch/programmatic_launch.h"
#include "kernels/launch/step_timeline.h"

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
#if TEGEMMA_STEP_TIMELINE && defined(__CUDACC__)
// The step timeline (kernels/launch/step_timeline.h; profiling builds only): this translation unit's copy of the
// record buffer (null unless a StepTimeline is alive), and the record that block (0,0,0) thread 0 appends.
static __device__ unsigned long long* g_step_timeline = nullptr;
__device__ __forceinline__ unsigned long long globaltimer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ void step_timeline_record(unsigned long long entry_ns) {
  unsigned long long* buf = g_step_timeline;
  if (buf == nullptr || (blockIdx.x | blockIdx.y | blockIdx.z | threadIdx.x | threadIdx.y | threadIdx.z) != 0) return;
  const unsigned long long wait_ns = globaltimer_ns();
  const unsigned long long slot = atomicAdd(buf, 1ull);
  if (slot >= buf[1]) return;  // over capacity: counted, dropped
  unsigned long long* r = buf + 2 + 4 * slot;
  r[0] = entry_ns;
  r[1] = wait_ns;
  r[2] = gridDim.x | (static_cast<unsigned long long>(gridDim.y) << 32);
  r[3] = gridDim.z | (static_cast<unsigned long long>(blockDim.x) << 32);
}
#endif
// The first statement of every kernel launched through kernels::cuda::launch: pdl_wait(), then
// pdl_launch_dependents() (the next kernel's blocks are scheduled once this kernel's predecessor has completed and
// this kernel's blocks are past their wait). Session 17 measured the other order (trigger, then wait: dependents
// scheduled one kernel further ahead, onto a GPU still busy with the predecessor) in the decode step: gemma-2b B1
// 881.3 vs 951.9 / 955.1 tok/s, 7b 344.1 vs 349.3 / 349.6 (reports/runs/2026-12-02-h200-s17); bench_sync's
// pdl_first mode keeps the microbenchmark. trigger = false: only the wait; the kernel then triggers its dependents
// itself, later (the GEMVs trigger at the end of each block, GemvParams::late_trigger in kernels/gemm/gemv_device.cuh),
// or lets its exit do it.
__device__ __forceinline__ void pdl_enter(bool trigger = true) {
#if TEGEMMA_STEP_TIMELINE && defined(__CUDACC__)
  const unsigned long long entry_ns = globaltimer_ns();
#endif
  pdl_wait();
  if (trigger) pdl_launch_dependents();
#if TEGEMMA_STEP_TIMELINE && defined(__CUDACC__)
  step_timeline_record(entry_ns);
#endif
}
}  // namespace dev

#if TEGEMMA_STEP_TIMELINE && defined(__CUDACC__)
namespace timeline_detail {
// This translation unit's setter of its dev::g_step_timeline, registered at static initialisation.
static void set_this_unit(unsigned long long* buffer) {
  TG_CHECK_CUDA(cudaMemcpyToSymbol(dev::g_step_timeline, &buffer, sizeof buffer));
}
[[maybe_unused]] static const bool g_registered = register_step_timeline_setter(&set_this_unit);
}  // namespace timeline_detail
#endif

namespace cuda {
// Throws the refused launch's error naming the kernel (cudaFuncGetName), its grid, block and dynamic shared memory,
// and clears the sticky-free launch error.
[[noreturn]] void launch_failed(cudaError_t err, const void* kernel, dim3 grid, dim3 block, std::size_t smem);

// kernel<<<grid, block, smem, stream>>>(args...) in thread-block clusters of cluster_x blocks along x (0 or 1: no
// cluster attribute), with the programmatic-stream-serialization attribute while a ProgrammaticLaunchScope is open on
// this thread. Errors are checked like TG_CHECK_LAUNCH.
template <typename... KernelArgs, typename... Args>
void launch_clustered(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
                      unsigned cluster_x, Args&&... args) {
  cudaLaunchAttribute attrs[2]{};
  unsigned n = 0;
  if (programmatic_launch_enabled()) {
    attrs[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  if (cluster_x > 1) {
    attrs[n].id = cudaLaunchAttributeClusterDimension;
    attrs[n].val.clusterDim.x = cluster_x;
    attrs[n].val.clusterDim.y = 1;
    attrs[n].val.clusterDim.z = 1;
    ++n;
  }
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = n > 0 ? attrs : nullptr;
  cfg.numAttrs = n;
#if TEGEMMA_STEP_TIMELINE
  if (step_timeline_active()) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    cudaStreamIsCapturing(stream, &cs);
    step_timeline_note_launch(reinterpret_cast<const void*>(kernel), grid.x, grid.y, grid.z, block.x,
                              cs == cudaStreamCaptureStatusActive);
  }
#endif
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (err != cudaSuccess) [[unlikely]] {
    launch_failed(err, reinterpret_cast<const void*>(kernel), grid, block, smem);
  }
}

// The same without clusters: kernel<<<grid, block, smem, stream>>>(args...), PDL inside a ProgrammaticLaunchScope.
template <typename... KernelArgs, typename... Args>
void launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
            Args&&... args) {
  launch_clustered(kernel, grid, block, smem, stream, 0u, std::forward<Args>(args)...);
}
}  // namespace cuda

}  // namespace tg::kernels
