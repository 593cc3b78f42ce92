// Small helper kernel for the cuDNN path: per-sequence lengths and ragged (THD) element offsets computed on
// the device from cu_seqlens, so no host round trip is needed.
#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/attention/attention_cuda.h"

namespace tg::kernels::cuda::attn_detail {

namespace {

__global__ void ragged_offsets_kernel(RaggedArgs a) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i > a.B_pad) return;
  const int b = min(i, a.B);  // entries past the real batch repeat the end (empty sequences)
  const int64_t start = a.cu_seqlens ? a.cu_seqlens[b] : static_cast<int64_t>(b) * a.S;
  if (i < a.B_pad) {
    int32_t len = 0;
    if (i < a.B) len = a.cu_seqlens ? a.cu_seqlens[i + 1] - a.cu_seqlens[i] : a.S;
    if (a.seqlens) a.seqlens[i] = max(0, min(len, a.S));
  }
#pragma unroll
  for (int k = 0; k < kMaxOffsetArrays; ++k) {
    if (k < a.n_offsets) a.offsets[k][i] = start * a.stride[k];
  }
}

}  // namespace

void ragged_offsets(const RaggedArgs& a, Stream stream) {
  TG_CHECK(a.n_offsets >= 0 && a.n_offsets <= kMaxOffsetArrays, "ragged_offsets: at most ", kMaxOffsetArrays,
           " offset arrays, got ", a.n_offsets);
  TG_CHECK(a.B >= 1 && a.B_pad >= a.B, "ragged_offsets: need 1 <= B <= B_pad, got B = ", a.B, ", B_pad = ", a.B_pad);
  const int n = a.B_pad + 1;
  ragged_offsets_kernel<<<(n + 127) / 128, 128, 0, cuda_stream(stream)>>>(a);
  TG_CHECK_LAUNCH("ragged_offsets_kernel");
}

}  // namespace tg::kernels::cuda::attn_detail
