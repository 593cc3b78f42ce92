// NVTX ranges: every kernel launcher and model stage opens one so an Nsight timeline reads like the
// model. No-ops in builds without CUDA. NVTX3 is header-only (it ships in the CUDA include dir).
//
//   TG_NVTX_FN();                 // a range named after the enclosing function
//   TG_NVTX_RANGE("layer 3 mlp");  // a named range for the rest of the scope
#pragma once

#if TEGEMMA_HAVE_CUDA
#include <nvtx3/nvToolsExt.h>
#endif

namespace tg {

class NvtxRange {
 public:
#if TEGEMMA_HAVE_CUDA
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
#else
  explicit NvtxRange(const char*) {}
#endif
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace tg

#define TG_NVTX_CAT2_(a, b) a##b
#define TG_NVTX_CAT_(a, b) TG_NVTX_CAT2_(a, b)
#define TG_NVTX_RANGE(name) ::tg::NvtxRange TG_NVTX_CAT_(tg_nvtx_range_, __LINE__)(name)
#define TG_NVTX_FN() TG_NVTX_RANGE(__func__)
