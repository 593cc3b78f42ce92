// nvtx::mark_initialized (common/nvtx.h) passes the right ranges to the NVTX Memory API. This binary links a static
// NVTX injection (InitializeInjectionNvtxExtension_fnptr, the hook NVTX v3 looks for when no tool library is
// named): it fills the Mem extension's nvtxMemCudaMarkInitialized slot with a recorder, so the test sees exactly
// what compute-sanitizer would be handed, without a GPU (the pointers are never dereferenced). Whether initcheck
// then treats the ranges as written is for the GPU probe (ci/sanitize_probe.sh init_impl_generate).
#include <gtest/gtest.h>
#define NVTX_NO_IMPL  // declarations and types only: the implementation (and its weak hook) is common/nvtx.cpp's
#include <nvtx3/nvToolsExtMemCudaRt.h>
#undef NVTX_NO_IMPL
#include <stdlib.h>

#include <cstdint>
#include <vector>

#include "common/nvtx.h"
#include "common/tensor.h"

namespace {

struct Call {
  cudaStream_t stream;
  uint8_t per_thread;
  uint16_t compat_id, struct_size;
  uint32_t region_type;
  size_t element_size;
  std::vector<nvtxMemVirtualRangeDesc_t> ranges;
};
std::vector<Call> g_calls;

void NVTX_API record(nvtxDomainHandle_t, cudaStream_t stream, uint8_t per_thread,
                     const nvtxMemMarkInitializedBatch_t* b) {
  const auto* r = static_cast<const nvtxMemVirtualRangeDesc_t*>(b->regionDescElements);
  g_calls.push_back({stream, per_thread, b->extCompatID, b->structSize, b->regionType, b->regionDescElementSize,
                     std::vector<nvtxMemVirtualRangeDesc_t>(r, r + b->regionDescCount)});
}

int NVTX_API inject(nvtxExtModuleInfo_t* info) {
  if (info->moduleId == NVTX_EXT_MODULEID_MEM && info->segmentsCount >= 1 &&
      info->segments[0].slotCount > NVTX3EXT_CBID_nvtxMemCudaMarkInitialized) {
    info->segments[0].functionSlots[NVTX3EXT_CBID_nvtxMemCudaMarkInitialized] = reinterpret_cast<intptr_t>(&record);
  }
  return 1;
}

}  // namespace

// The strong definition that overrides NVTX's weak one (nvtxDetail/nvtxExtInit.h, in common/nvtx.cpp).
extern "C" {
NvtxExtInitializeInjectionFunc_t InitializeInjectionNvtxExtension_fnptr = &inject;
}

namespace tg {
namespace {

const unsigned char* fake(uintptr_t a) { return reinterpret_cast<const unsigned char*>(a); }

class NvtxMarkInitialized : public ::testing::Test {
 protected:
  void SetUp() override {
    if (getenv("NVTX_INJECTION64_PATH")) GTEST_SKIP() << "a tool is attached (NVTX_INJECTION64_PATH): it, not this "
                                                         "test's recorder, receives the calls";
    g_calls.clear();
  }
};

TEST_F(NvtxMarkInitialized, OneRangeWithTheStream) {
  const Stream s{reinterpret_cast<void*>(0x5100)};
  nvtx::mark_initialized(fake(0x10000), 12288, s);
  ASSERT_EQ(g_calls.size(), 1u);
  const Call& c = g_calls[0];
  EXPECT_EQ(c.stream, reinterpret_cast<cudaStream_t>(0x5100));
  EXPECT_EQ(c.per_thread, 0);
  EXPECT_EQ(c.compat_id, NVTX_EXT_COMPATID_MEM);
  EXPECT_EQ(c.struct_size, sizeof(nvtxMemMarkInitializedBatch_t));
  EXPECT_EQ(c.region_type, static_cast<uint32_t>(NVTX_MEM_TYPE_VIRTUAL_ADDRESS));
  EXPECT_EQ(c.element_size, sizeof(nvtxMemVirtualRangeDesc_t));
  ASSERT_EQ(c.ranges.size(), 1u);
  EXPECT_EQ(c.ranges[0].ptr, fake(0x10000));
  EXPECT_EQ(c.ranges[0].size, 12288u);
}

TEST_F(NvtxMarkInitialized, NothingForAnEmptyRange) {
  nvtx::mark_initialized(fake(0x10000), 0, {});
  nvtx::mark_initialized(nullptr, 4, {});
  nvtx::mark_initialized_rows(fake(0x10000), 0, 8, 16, {});
  nvtx::mark_initialized_rows(fake(0x10000), 4, 0, 16, {});
  EXPECT_TRUE(g_calls.empty());
}

TEST_F(NvtxMarkInitialized, ContiguousRowsAreOneRange) {
  nvtx::mark_initialized_rows(fake(0x20000), 7, 96, 96, {});
  nvtx::mark_initialized_rows(fake(0x30000), 1, 96, 4096, {});  // one row: its stride does not matter
  ASSERT_EQ(g_calls.size(), 2u);
  ASSERT_EQ(g_calls[0].ranges.size(), 1u);
  EXPECT_EQ(g_calls[0].ranges[0].ptr, fake(0x20000));
  EXPECT_EQ(g_calls[0].ranges[0].size, 7u * 96);
  ASSERT_EQ(g_calls[1].ranges.size(), 1u);
  EXPECT_EQ(g_calls[1].ranges[0].ptr, fake(0x30000));
  EXPECT_EQ(g_calls[1].ranges[0].size, 96u);
}

TEST_F(NvtxMarkInitialized, StridedRowsLeaveTheGapsOut) {
  // 130 rows of 6 bytes, 16 apart: 130 ranges (in batches), none covering a gap.
  const Stream s{reinterpret_cast<void*>(0x7700)};
  nvtx::mark_initialized_rows(fake(0x40000), 130, 6, 16, s);
  ASSERT_FALSE(g_calls.empty());
  std::vector<nvtxMemVirtualRangeDesc_t> all;
  for (const Call& c : g_calls) {
    EXPECT_EQ(c.stream, reinterpret_cast<cudaStream_t>(0x7700));
    EXPECT_EQ(c.element_size, sizeof(nvtxMemVirtualRangeDesc_t));
    all.insert(all.end(), c.ranges.begin(), c.ranges.end());
  }
  ASSERT_EQ(all.size(), 130u);
  for (size_t r = 0; r < all.size(); ++r) {
    EXPECT_EQ(all[r].ptr, fake(0x40000 + 16 * r)) << "row " << r;
    EXPECT_EQ(all[r].size, 6u) << "row " << r;
  }
}

}  // namespace
}  // namespace tg
