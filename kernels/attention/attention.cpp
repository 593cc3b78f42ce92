// Device dispatch of kernels/attention: CPU tensors go to the CPU twin, CUDA tensors to kernels/attention/*.cu
// and the cuDNN wrapper.
#include "kernels/attention/attention.h"

namespace tg::kernels {

#if !TEGEMMA_HAVE_CUDA
namespace {
[[noreturn]] void no_cuda(const char* what) { TG_FAIL(what, ": CUDA tensors in a build without CUDA"); }
}  // namespace
#endif

void attention_fwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& cu_seqlens,
                   int64_t max_seqlen, const AttentionOptions& opt, const TensorView& out, const TensorView& lse,
                   Stream stream) {
  if (q.device == Device::CPU) return cpu::attention_fwd(q, k, v, cu_seqlens, max_seqlen, opt, out, lse);
#if TEGEMMA_HAVE_CUDA
  cuda::attention_fwd(q, k, v, cu_seqlens, max_seqlen, opt, out, lse, stream);
#else
  no_cuda("attention_fwd");
#endif
}

void attention_bwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   const TensorView& lse, const TensorView& dout, const TensorView& cu_seqlens, int64_t max_seqlen,
                   const AttentionOptions& opt, const TensorView& dq, const TensorView& dk, const TensorView& dv,
                   Stream stream) {
  if (q.device == Device::CPU) {
    return cpu::attention_bwd(q, k, v, out, lse, dout, cu_seqlens, max_seqlen, opt, dq, dk, dv);
  }
#if TEGEMMA_HAVE_CUDA
  cuda::attention_bwd(q, k, v, out, lse, dout, cu_seqlens, max_seqlen, opt, dq, dk, dv, stream);
#else
  no_cuda("attention_bwd");
#endif
}

std::size_t attention_fwd_workspace_bytes(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const TensorView& cu_seqlens, int64_t max_seqlen, const AttentionOptions& opt,
                                          const TensorView& out, const TensorView& lse) {
  if (q.device == Device::CPU) return 0;
#if TEGEMMA_HAVE_CUDA
  return cuda::attention_fwd_workspace_bytes(q, k, v, cu_seqlens, max_seqlen, opt, out, lse);
#else
  no_cuda("attention_fwd_workspace_bytes");
#endif
}

std::size_t attention_bwd_workspace_bytes(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const TensorView& out, const TensorView& lse, const TensorView& dout,
                                          const TensorView& cu_seqlens, int64_t max_seqlen, const AttentionOptions& opt,
                                          const TensorView& dq, const TensorView& dk, const TensorView& dv) {
  if (q.device == Device::CPU) return 0;
#if TEGEMMA_HAVE_CUDA
  return cuda::attention_bwd_workspace_bytes(q, k, v, out, lse, dout, cu_seqlens, max_seqlen, opt, dq, dk, dv);
#else
  no_cuda("attention_bwd_workspace_bytes");
#endif
}

void kv_cache_append(const TensorView& k_new, const TensorView& v_new, const TensorView& positions,
                     const KvCache& cache, Stream stream) {
  if (k_new.device == Device::CPU) return cpu::kv_cache_append(k_new, v_new, positions, cache);
#if TEGEMMA_HAVE_CUDA
  cuda::kv_cache_append(k_new, v_new, positions, cache, stream);
#else
  no_cuda("kv_cache_append");
#endif
}

void decode_attention(const TensorView& q, const KvCache& cache, const TensorView& seqlens, const DecodeOptions& opt,
                      const TensorView& out, Stream stream) {
  if (q.device == Device::CPU) return cpu::decode_attention(q, cache, seqlens, opt, out);
#if TEGEMMA_HAVE_CUDA
  cuda::decode_attention(q, cache, seqlens, opt, out, stream);
#else
  no_cuda("decode_attention");
#endif
}

std::size_t decode_attention_workspace_bytes(const TensorView& q, const KvCache& cache, const DecodeOptions& opt) {
  if (q.device == Device::CPU) return 0;
#if TEGEMMA_HAVE_CUDA
  return cuda::decode_attention_workspace_bytes(q, cache, opt);
#else
  no_cuda("decode_attention_workspace_bytes");
#endif
}

}  // namespace tg::kernels
