// The kernels' process-lifetime library state, and its explicit release.
//
// Some CUDA ops keep state for the whole process, made on first use and reused by every later call (so that a
// warmed-up call path allocates nothing and can be captured in a CUDA graph):
//   kernels/gemm       per device a cuBLASLt handle and the heuristic cache; a 32 MiB workspace per (device, stream)
//   kernels/attention  per device a cuDNN handle and the cached SDPA execution plans (cudnn_sdpa.cpp), and the
//                      cached attention scratch buffer (attention_cuda.cpp)
// None of it is freed by a static destructor, on purpose: that would run after the CUDA runtime (or LibTorch) has
// begun tearing down. Left alone it is still allocated at exit, and compute-sanitizer --leak-check full reports it
// as leaked (ci/gpu_sanitize.sh). release_library_state() frees it while CUDA is alive; the CLI calls it before
// main returns, and every gpu-labelled test executable that links tegemma_kernels after its last test
// (kernels/tests/gpu_test_environment.cpp, added by cmake/TegemmaTest.cmake).
#pragma once

namespace tg::kernels {

// Frees the state above on every device: it first waits for each device that holds some (cudaDeviceSynchronize),
// then destroys the cuBLASLt heuristic cache, workspaces and handles (cublasLtDestroy), the cuDNN SDPA plans and
// handles (cudnnDestroy) and the attention scratch buffers. The next call of an op creates its part again.
//
// Call it with no work in flight: no op running or being enqueued by another thread (work already enqueued is
// waited for), and no CUDA graph left that captured a GEMM or an attention without its own Workspace (cuDNN or
// flash) and will be replayed: a graph holds the old workspace pointers. Nothing else (a Tensor, an Arena, a
// caller's Workspace) is touched.
//
// Harmless when nothing was created: it then makes no CUDA call at all (no context is created on a machine
// without a GPU). Throws tg::Error when a device reports an error while synchronising (that part is then not
// freed). CPU builds: a no-op.
void release_library_state();

}  // namespace tg::kernels
