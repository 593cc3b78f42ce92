// nvtx::mark_initialized (common/nvtx.h): the NVTX Memory API for Compute Sanitizer. CUDA builds only: the CUDA
// runtime part of the Mem extension (nvToolsExtMemCudaRt.h) includes cuda_runtime.h. Header-only like the rest of
// NVTX v3 (the tool is found through dlopen, as for the ranges): nothing to link beyond what NvtxRange needs.
#include "common/nvtx.h"

#include <nvtx3/nvToolsExtMem.h>
#include <nvtx3/nvToolsExtMemCudaRt.h>

#include <algorithm>

#include "common/tensor.h"

namespace tg::nvtx {
namespace {

nvtxDomainHandle_t domain() {
  static const nvtxDomainHandle_t d = nvtxDomainCreateA("tegemma");  // null without a tool (NVTX's default domain)
  return d;
}

void mark(const nvtxMemVirtualRangeDesc_t* ranges, std::size_t count, Stream stream) {
  nvtxMemMarkInitializedBatch_t batch{};
  batch.extCompatID = NVTX_EXT_COMPATID_MEM;
  batch.structSize = sizeof(batch);
  batch.regionType = NVTX_MEM_TYPE_VIRTUAL_ADDRESS;
  batch.regionDescCount = count;
  batch.regionDescElementSize = sizeof(nvtxMemVirtualRangeDesc_t);
  batch.regionDescElements = ranges;
  // isPerThreadStream = 0: the project's streams are explicit handles (nullptr = the legacy default stream).
  nvtxMemCudaMarkInitialized(domain(), static_cast<cudaStream_t>(stream.handle), 0, &batch);
}

}  // namespace

void mark_initialized(const void* ptr, std::size_t bytes, Stream stream) {
  if (ptr == nullptr || bytes == 0) return;
  const nvtxMemVirtualRangeDesc_t range{bytes, ptr};
  mark(&range, 1, stream);
}

void mark_initialized_rows(const void* ptr, std::size_t rows, std::size_t row_bytes, std::size_t pitch_bytes,
                           Stream stream) {
  if (ptr == nullptr || rows == 0 || row_bytes == 0) return;
  if (rows == 1 || pitch_bytes == row_bytes) {
    mark_initialized(ptr, rows * row_bytes, stream);
    return;
  }
  constexpr std::size_t kBatch = 64;
  nvtxMemVirtualRangeDesc_t ranges[kBatch];
  const auto* base = static_cast<const unsigned char*>(ptr);
  for (std::size_t r0 = 0; r0 < rows; r0 += kBatch) {
    const std::size_t n = std::min(kBatch, rows - r0);
    for (std::size_t i = 0; i < n; ++i) ranges[i] = {row_bytes, base + (r0 + i) * pitch_bytes};
    mark(ranges, n, stream);
  }
}

}  // namespace tg::nvtx
