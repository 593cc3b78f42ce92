#include "kernels/library_state.h"

#if TEGEMMA_HAVE_CUDA
#include "kernels/attention/attention_cuda.h"
#include "kernels/gemm/gemm.h"
#endif

namespace tg::kernels {

void release_library_state() {
#if TEGEMMA_HAVE_CUDA
  // Each part waits for the devices it holds state on before it frees anything.
  cuda::release_gemm_state();
  cuda::attn_detail::release_attention_state();
#endif
}

}  // namespace tg::kernels
