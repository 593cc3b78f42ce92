// Device facts the launchers size their grids with, queried once and cached (per device, and per kernel, block
// and shared-memory size for occupancy): launchers run on every step of training and of eager decoding, where a
// cudaDeviceGetAttribute / cudaFuncSetAttribute / occupancy query per launch is host time the GPU waits for.
#pragma once

#include <cstddef>

namespace tg::kernels::cuda {

int current_device();
// Multiprocessors of the current device.
int sm_count();
// The opt-in maximum of dynamic shared memory per block on the current device (bytes).
int max_smem_per_block();
// Blocks of `kernel` resident per multiprocessor with `threads` threads and `smem` bytes of dynamic shared memory
// (at least 1). When the kernel's static plus this dynamic shared memory pass 48 KB, its dynamic limit is raised
// first (to the largest size asked for so far, so that a launch sized earlier keeps its room). Call it before
// launching any kernel with dynamic shared memory.
int resident_blocks(const void* kernel, int threads, std::size_t smem);

}  // namespace tg::kernels::cuda
