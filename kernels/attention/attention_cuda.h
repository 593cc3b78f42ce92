// Internal interfaces between the CUDA translation units of kernels/attention (not part of the API).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/tensor.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/attention_args.h"

namespace tg::kernels::cuda::attn_detail {

// Device scratch: the caller's workspace when given (checked to be large enough), else a per-device cached
// buffer that only grows (no allocation once warmed up) until release_attention_state(). 256-byte aligned.
// A newly grown cached buffer is zeroed on `stream` (once per growth, not per call): cuDNN's GQA / MQA backward
// (fmha_reduce_head_ragged, cuDNN 9.19) reads rows of its own scratch that it never writes -- the padding of a
// ragged batch -- and discards what it reads (AttentionGpu.CudnnBackwardPoisonedWorkspace: a NaN-filled workspace
// gives the same dQ / dK / dV). Zeroing makes those bytes defined (compute-sanitizer initcheck, session 11); what a
// caller's own workspace holds does not matter, as that test shows.
void* scratch(const Workspace& ws, std::size_t bytes, const char* what, Stream stream);

// Frees the attention library state of every device: the cuDNN state (release_cudnn_state) and the cached scratch
// buffers (after cudaDeviceSynchronize on each device that has one); the next call creates them again. Part of
// tg::kernels::release_library_state() (kernels/library_state.h), whose rules apply. Does nothing when nothing
// was created.
void release_attention_state();

inline std::size_t align_up(std::size_t n, std::size_t a = 256) { return (n + a - 1) / a * a; }

// Everything the flash kernels need about one call (element strides; head stride is Dh everywhere).
struct FlashArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;                 // may be null in the forward (not saved)
  const int32_t* cu_seqlens = nullptr;  // null: dense layout
  attn::Strides sq, sk, sv, so;
  // backward only
  const void* dout = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  attn::Strides sdo, sdq, sdk, sdv;
  attn::Dims d;
  float scale = 0.0f;
  bool causal = true;
};

// Both backends' operand rule: every BF16 operand of the call (q, k, v, out; with `backward` also dout, dq, dk, dv)
// 16-byte aligned with token / batch strides that are multiples of 8 elements, else a TG_CHECK failure naming it.
void check_aligned_operands(const FlashArgs& a, bool backward, const char* what);

void flash_fwd(const FlashArgs& a, Stream stream);
std::size_t flash_bwd_workspace_bytes(const attn::Dims& d);
void flash_bwd(const FlashArgs& a, void* workspace, Stream stream);

// cuDNN fused attention (cudnn_sdpa.cpp).
std::size_t cudnn_fwd_workspace_bytes(const FlashArgs& a);
void cudnn_fwd(const FlashArgs& a, const Workspace& ws, Stream stream);
std::size_t cudnn_bwd_workspace_bytes(const FlashArgs& a, bool deterministic);
void cudnn_bwd(const FlashArgs& a, bool deterministic, const Workspace& ws, Stream stream);
// Destroys the cached SDPA plans (their descriptors) and the cuDNN handles (cudnnDestroy) of every device, after
// cudaDeviceSynchronize on each device that has some; called by release_attention_state().
void release_cudnn_state();

// Per-sequence lengths and ragged offsets for cuDNN (attention_aux.cu): from cu_seqlens (or the dense
// length S when cu_seqlens is null) writes seqlens[b] = len_b (b < B; entries B..B_pad-1 = 0) and, for each
// of n_offsets token strides, offsets[i][b] = start_b * stride_i (b <= B; entries up to B_pad = the last).
constexpr int kMaxOffsetArrays = 10;  // 8 operands + Stats, with room
struct RaggedArgs {
  const int32_t* cu_seqlens = nullptr;
  int B = 0;
  int B_pad = 0;
  int S = 0;
  int32_t* seqlens = nullptr;
  int n_offsets = 0;
  int64_t stride[kMaxOffsetArrays] = {};
  int64_t* offsets[kMaxOffsetArrays] = {};
};
void ragged_offsets(const RaggedArgs& a, Stream stream);

}  // namespace tg::kernels::cuda::attn_detail
