#include "kernels/launch/device_info.h"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "common/cuda_check.h"

namespace tg::kernels::cuda {

namespace {
std::mutex& mutex() {
  static std::mutex mu;
  return mu;
}
int attribute(cudaDeviceAttr attr) {
  static auto* cache = new std::map<std::pair<int, int>, int>();  // (device, attribute) -> value; immortal
  const int device = current_device();
  const std::lock_guard<std::mutex> lock(mutex());
  const auto key = std::make_pair(device, static_cast<int>(attr));
  if (const auto it = cache->find(key); it != cache->end()) return it->second;
  int v = 0;
  TG_CHECK_CUDA(cudaDeviceGetAttribute(&v, attr, device));
  cache->emplace(key, v);
  return v;
}
}  // namespace

int current_device() {
  int device = 0;
  TG_CHECK_CUDA(cudaGetDevice(&device));
  return device;
}

int sm_count() { return attribute(cudaDevAttrMultiProcessorCount); }

int max_smem_per_block() { return attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin); }

int resident_blocks(const void* kernel, int threads, std::size_t smem) {
  // (device, kernel) -> the dynamic shared-memory limit set so far; (device, kernel, threads, smem) -> blocks.
  static auto* limits = new std::map<std::pair<int, const void*>, std::size_t>();
  static auto* blocks = new std::map<std::tuple<int, const void*, int, std::size_t>, int>();
  const int device = current_device();
  const std::lock_guard<std::mutex> lock(mutex());
  if (smem > 48 * 1024) {
    std::size_t& limit = (*limits)[{device, kernel}];
    if (smem > limit) {
      TG_CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      limit = smem;
    }
  }
  const auto key = std::make_tuple(device, kernel, threads, smem);
  if (const auto it = blocks->find(key); it != blocks->end()) return it->second;
  int n = 0;
  TG_CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem));
  n = n < 1 ? 1 : n;
  blocks->emplace(key, n);
  return n;
}

}  // namespace tg::kernels::cuda
