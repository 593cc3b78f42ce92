// Temporary: the CUDA attention path lands in the next commits (this keeps every commit linking).
#include "kernels/attention/attention.h"

namespace tg::kernels::cuda {
namespace {
[[noreturn]] void not_yet(const char* what) { TG_FAIL(what, ": the CUDA attention path is not built in this commit"); }
}  // namespace
void attention_fwd(const TensorView&, const TensorView&, const TensorView&, const TensorView&, int64_t,
                   const AttentionOptions&, const TensorView&, const TensorView&, Stream) { not_yet("attention_fwd"); }
void attention_bwd(const TensorView&, const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                   const TensorView&, const TensorView&, int64_t, const AttentionOptions&, const TensorView&,
                   const TensorView&, const TensorView&, Stream) { not_yet("attention_bwd"); }
std::size_t attention_fwd_workspace_bytes(const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                                          int64_t, const AttentionOptions&, const TensorView&, const TensorView&) {
  not_yet("attention_fwd_workspace_bytes");
}
std::size_t attention_bwd_workspace_bytes(const TensorView&, const TensorView&, const TensorView&, const TensorView&,
                                          const TensorView&, const TensorView&, const TensorView&, int64_t,
                                          const AttentionOptions&, const TensorView&, const TensorView&,
                                          const TensorView&) {
  not_yet("attention_bwd_workspace_bytes");
}
void kv_cache_append(const TensorView&, const TensorView&, const TensorView&, const KvCache&, Stream) {
  not_yet("kv_cache_append");
}
void decode_attention(const TensorView&, const KvCache&, const TensorView&, const DecodeOptions&, const TensorView&,
                      Stream) { not_yet("decode_attention"); }
std::size_t decode_attention_workspace_bytes(const TensorView&, const KvCache&, const DecodeOptions&) {
  not_yet("decode_attention_workspace_bytes");
}
}  // namespace tg::kernels::cuda
