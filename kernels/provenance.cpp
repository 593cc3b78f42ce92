#include "kernels/provenance.h"

#include <string>

#if TEGEMMA_HAVE_CUDA
#include <cublasLt.h>
#include <cudnn.h>
#endif

namespace tg::kernels {

Provenance provenance() {
  Provenance p = base_provenance();
#if TEGEMMA_HAVE_CUDA
  p["cublaslt"] = std::to_string(cublasLtGetVersion());
  p["cudnn"] = std::to_string(cudnnGetVersion());
  p["cudnn_compiled"] = std::to_string(CUDNN_VERSION);
#endif
  return p;
}

}  // namespace tg::kernels
