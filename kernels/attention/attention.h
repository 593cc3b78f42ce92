// Gemma attention: prefill / training (forward + backward) over packed variable-length batches, and
// decode with a KV cache. CPU twins (the golden) and CUDA implementations share each contract.
//
// ---- Semantics (docs/gemma.md 2.4) -----------------------------------------------------------------
//   s_ij = (q_i . k_j) * scale          scale = Dh^-0.5 unless AttentionOptions::scale says otherwise
//   causal: query i of a sequence sees keys j <= i of the SAME sequence (self-attention, top-left)
//   p_i  = softmax_j(s_i) in FP32;  o_i = sum_j p_ij v_j;  lse_i = max_j s_ij + log(sum_j exp(s_ij - max))
//   GQA / MQA / MHA: query head h reads kv head h / g with g = H / Hkv (repeat_kv; NOT h % Hkv).
//
// ---- Layouts of the prefill / training calls ----------------------------------------------------------
//   dense  : q [B, S, H, Dh], k / v [B, S, Hkv, Dh], out [B, S, H, Dh], lse F32 [B, H, S];
//            cu_seqlens is an empty view (every sequence has length S).
//   packed : q [T, H, Dh], k / v [T, Hkv, Dh], out [T, H, Dh], lse F32 [T, H];
//            cu_seqlens I32 [B + 1] on the tensors' device: sequence b owns tokens
//            [cu_seqlens[b], cu_seqlens[b + 1]); cu_seqlens[0] = 0, non-decreasing, cu_seqlens[B] = T
//            (sequences may be empty). max_seqlen (host) must bound every length: it picks the plan /
//            grid shape class; the values themselves stay on the device (no host round trip). Nothing
//            is computed for tokens beyond a sequence's length.
//   q / k / v / out / dq / dk / dv / dout may be strided views (e.g. q, k, v slices of one fused QKV
//   projection [T, (H + 2 Hkv) Dh]) as long as the head dimension is contiguous (stride 1) and the head
//   stride is Dh. lse is contiguous.
//
// ---- Rounding points (the CPU twin; the CUDA kernels follow the same points up to summation order) ----
//   inputs BF16 -> FP32 exactly; dot products, softmax and the P.V sum in FP32; out rounded to BF16 once;
//   lse kept in FP32. The tensor-core kernels (cuDNN, flash) additionally round P to BF16 before P.V,
//   the twin does not: GPU tests compare with a stated tolerance (kernels/tests/test_attention_gpu.cpp).
//   The CPU twin also accepts F32 q/k/v/out/dout/dq/dk/dv (used by the FP64 oracle tests); CUDA is BF16.
//
// ---- Backward -------------------------------------------------------------------------------------------
//   Inputs: q, k, v, out and lse from the forward, dout. Outputs dq (like q), dk / dv (like k, v; the g query
//   heads of a group are summed into their kv head). P is recomputed from lse:
//     P = exp(s - lse),  D_i = sum_d dout_id out_id,  dS = P (dout v^T - D),  dq = scale dS k,
//     dk = scale dS^T q,  dv = P^T dout.
//
// ---- Decode (one new token per sequence) ----------------------------------------------------------------
//   KV cache k / v [B, max_seq, Hkv, Dh] in BF16, or E4M3 with an F32 dequantisation scale per tensor ([1])
//   or per kv head ([Hkv]): value = code * scale. kv_cache_append writes this step's K / V rows at each
//   sequence's position (E4M3: code = round_e4m3_satfinite(value / scale)); decode_attention attends the
//   query of each sequence over the first seqlens[b] cache rows (the current token included, so append
//   first). seqlens / positions live on the device. A sequence with seqlens[b] == 0 gets out = 0; a
//   position < 0 or >= max_seq is not written (finished sequences pass -1).
//
// ---- CUDA backends ------------------------------------------------------------------------------------------
//   kCudnn: cuDNN's fused flash attention (graph API, backend descriptors; plans cached per shape class:
//           B, H, Hkv, bucketed max_seqlen, Dh, causal, layout, strides, direction). An unsupported graph
//           throws tg::Error with the cuDNN status and message; there is no silent fallback.
//   kFlash: our own flash-attention kernels (tensor cores, online softmax, K/V tiles in shared memory).
//   Workspace: the caller's (Workspace{ptr, bytes}, sized by *_workspace_bytes) or, when empty, a buffer
//   cached per device that grows on first use of a larger shape (warm up before CUDA-graph capture; freed with the
//   cuDNN handles and plans by kernels::release_library_state(), kernels/library_state.h).
//   The cached buffer is shared by every call on the device: concurrent calls on different streams must pass
//   their own workspaces.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/fp8_tensor.h"
#include "common/tensor.h"

namespace tg::kernels {

enum class AttentionBackend : uint8_t { kCudnn, kFlash };
const char* attention_backend_name(AttentionBackend b);

// Caller-owned device scratch memory; empty means "use the cached internal buffer".
struct Workspace {
  void* data = nullptr;
  std::size_t bytes = 0;
  bool empty() const { return data == nullptr; }
};

struct AttentionOptions {
  float scale = 0.0f;  // softmax scale; 0 selects Dh^-0.5 (Gemma 1)
  bool causal = true;
  AttentionBackend backend = AttentionBackend::kCudnn;  // CUDA tensors only
  bool deterministic = false;  // backward: bitwise-reproducible algorithms only (cuDNN: dP workspace path)
  Workspace workspace;
};

// The scale actually used for head dimension `head_dim` (opt.scale, or head_dim^-0.5 when it is 0).
float attention_scale(const AttentionOptions& opt, int64_t head_dim);

// Forward. lse may be an empty view (inference: not saved).
void attention_fwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& cu_seqlens,
                   int64_t max_seqlen, const AttentionOptions& opt, const TensorView& out, const TensorView& lse,
                   Stream stream = {});

// Backward (layouts as the forward; dq / dk / dv BF16 on CUDA).
void attention_bwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   const TensorView& lse, const TensorView& dout, const TensorView& cu_seqlens, int64_t max_seqlen,
                   const AttentionOptions& opt, const TensorView& dq, const TensorView& dk, const TensorView& dv,
                   Stream stream = {});

// Device workspace the CUDA forward / backward need for this call's shape class (cuDNN: builds and caches
// the plan). 0 for CPU tensors.
std::size_t attention_fwd_workspace_bytes(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const TensorView& cu_seqlens, int64_t max_seqlen, const AttentionOptions& opt,
                                          const TensorView& out, const TensorView& lse);
std::size_t attention_bwd_workspace_bytes(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const TensorView& out, const TensorView& lse, const TensorView& dout,
                                          const TensorView& cu_seqlens, int64_t max_seqlen, const AttentionOptions& opt,
                                          const TensorView& dq, const TensorView& dk, const TensorView& dv);

// ---- KV cache and decode --------------------------------------------------------------------------------
struct KvCache {
  TensorView k;        // [B, max_seq, Hkv, Dh] BF16 or E4M3 (contiguous)
  TensorView v;        // same shape / dtype as k
  TensorView k_scale;  // E4M3 only: F32 [1] or [Hkv] dequantisation scale; empty for BF16
  TensorView v_scale;
};

// Writes k_new / v_new [B, Hkv, Dh] (BF16) into row positions[b] (I32 [B]) of each sequence's cache.
void kv_cache_append(const TensorView& k_new, const TensorView& v_new, const TensorView& positions,
                     const KvCache& cache, Stream stream = {});

// out [B, H, Dh] BF16 = attention of q [B, H, Dh] BF16 over the first seqlens[b] (I32 [B]) cache rows (and/or its
// FP8 copy: DecodeOptions::fp8_out).
// max_seqlen_hint (host): an upper bound on every seqlens[b] that sizes the split-K grid; 0 = max_seq.
struct DecodeOptions {
  float scale = 0.0f;  // 0 selects Dh^-0.5
  int64_t max_seqlen_hint = 0;
  int num_splits = 0;  // CUDA split-K count; 0 = chosen from the shape (fill the SMs)
  // CUDA: query heads of one kv head's group per block (1, 2, 4 or 8, dividing H / Hkv); 0 = the largest that
  // divides the group and still gives B x Hkv x (H / Hkv / G) x tiles >= the SM count (every K / V row read once per
  // group at large batch; one head per block for batch-1 MQA). Fewer heads per block give a short context at batch 1
  // more blocks (gemma-2b's group of 8 on 5 blocks: 15 us per layer in session 5's profile) at the cost of reading
  // K / V once per block (from L2 when it fits). The CPU twin ignores it; the results differ only in rounding order.
  int heads_per_block = 0;
  // CUDA: the most splits merged inside the split kernel, its blocks of one (sequence, head group) forming a
  // thread-block cluster that merges through distributed shared memory (no workspace, no second kernel). 0 = the
  // device's limit (16 where the non-portable cluster size is available, else 8); 1 = never (the partials go through
  // the workspace to the combine kernel, as with more splits than the limit). Same tolerance either way; the bits
  // are fixed per (shape, options).
  int max_cluster = 0;
  Workspace workspace;
  // Optional per-tensor E4M3 copy of the output (opt-in experiment: the O projection's input cast fused into the
  // final write). When fp8_out.data is set ([B, H * Dh] or [B, H, Dh], contiguous, F8_E4M3; mode kPerTensor; no
  // column-wise copy), every output element gets the bits kernels::quantize(BF16 out, fp8_out) writes: the value
  // rounded to BF16 first, then satfinite_rne(fl32(bf16 * scale[0])); scale_inv[0] = 1 / scale[0]; when amax is
  // present, max |bf16 out| is max-reduced into amax[0] (the old value kept if larger, NaN wins). `out` may then be
  // an empty view (only the FP8 copy is written).
  Fp8View fp8_out;
};
void decode_attention(const TensorView& q, const KvCache& cache, const TensorView& seqlens, const DecodeOptions& opt,
                      const TensorView& out, Stream stream = {});
// Workspace the CUDA decode needs (split-K partials) for these shapes and options; 0 for CPU tensors.
std::size_t decode_attention_workspace_bytes(const TensorView& q, const KvCache& cache, const DecodeOptions& opt);

namespace cpu {
void attention_fwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& cu_seqlens,
                   int64_t max_seqlen, const AttentionOptions& opt, const TensorView& out, const TensorView& lse);
void attention_bwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   const TensorView& lse, const TensorView& dout, const TensorView& cu_seqlens, int64_t max_seqlen,
                   const AttentionOptions& opt, const TensorView& dq, const TensorView& dk, const TensorView& dv);
void kv_cache_append(const TensorView& k_new, const TensorView& v_new, const TensorView& positions,
                     const KvCache& cache);
void decode_attention(const TensorView& q, const KvCache& cache, const TensorView& seqlens, const DecodeOptions& opt,
                      const TensorView& out);
}  // namespace cpu

namespace cuda {
void attention_fwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& cu_seqlens,
                   int64_t max_seqlen, const AttentionOptions& opt, const TensorView& out, const TensorView& lse,
                   Stream stream);
void attention_bwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   const TensorView& lse, const TensorView& dout, const TensorView& cu_seqlens, int64_t max_seqlen,
                   const AttentionOptions& opt, const TensorView& dq, const TensorView& dk, const TensorView& dv,
                   Stream stream);
std::size_t attention_fwd_workspace_bytes(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const TensorView& cu_seqlens, int64_t max_seqlen, const AttentionOptions& opt,
                                          const TensorView& out, const TensorView& lse);
std::size_t attention_bwd_workspace_bytes(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const TensorView& out, const TensorView& lse, const TensorView& dout,
                                          const TensorView& cu_seqlens, int64_t max_seqlen, const AttentionOptions& opt,
                                          const TensorView& dq, const TensorView& dk, const TensorView& dv);
void kv_cache_append(const TensorView& k_new, const TensorView& v_new, const TensorView& positions,
                     const KvCache& cache, Stream stream);
void decode_attention(const TensorView& q, const KvCache& cache, const TensorView& seqlens, const DecodeOptions& opt,
                      const TensorView& out, Stream stream);
std::size_t decode_attention_workspace_bytes(const TensorView& q, const KvCache& cache, const DecodeOptions& opt);
}  // namespace cuda

}  // namespace tg::kernels
