// CUDA prefill / training attention: argument checks, backend selection (cuDNN or our flash kernels) and the
// cached device scratch buffer.
#include "kernels/attention/attention_cuda.h"

#include <cuda_runtime.h>

#include <mutex>
#include <set>
#include <unordered_map>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_sync.h"

namespace tg::kernels::cuda {

namespace attn_detail {

namespace {

// The cached scratch buffers, per device. Never destroyed (a cudaFree from a static destructor would run after the
// CUDA runtime, or LibTorch, has begun tearing down); release_attention_state() frees the buffers while CUDA is
// alive.
struct Scratch {
  std::mutex mu;
  std::unordered_map<int, Buffer> buffers;
};
Scratch& scratch_state() {
  static auto& s = *new Scratch();
  return s;
}

}  // namespace

void check_aligned_operands(const FlashArgs& a, bool backward, const char* what) {
  auto aligned = [&](const void* ptr, const attn::Strides& st, const char* name) {
    TG_CHECK(reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && st.token % 8 == 0 && st.batch % 8 == 0, what, ": ", name,
             " must be 16-byte aligned with token / batch strides that are multiples of 8 elements");
  };
  aligned(a.q, a.sq, "q");
  aligned(a.k, a.sk, "k");
  aligned(a.v, a.sv, "v");
  aligned(a.o, a.so, "out");
  if (backward) {
    aligned(a.dout, a.sdo, "dout");
    aligned(a.dq, a.sdq, "dq");
    aligned(a.dk, a.sdk, "dk");
    aligned(a.dv, a.sdv, "dv");
  }
}

void* scratch(const Workspace& ws, std::size_t bytes, const char* what, Stream stream) {
  if (!ws.empty()) {
    TG_CHECK(ws.bytes >= bytes, what, ": the caller's workspace has ", ws.bytes, " bytes, this call needs ", bytes);
    TG_CHECK(reinterpret_cast<uintptr_t>(ws.data) % 256 == 0, what, ": the workspace must be 256-byte aligned");
    return ws.data;
  }
  Scratch& s = scratch_state();
  int device = 0;
  TG_CHECK_CUDA(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(s.mu);
  Buffer& buf = s.buffers[device];
  if (buf.nbytes() < bytes) {
    // Growing frees the old buffer; cudaFree waits for the work that may still use it.
    buf = Buffer();
    buf = Buffer(align_up(bytes, std::size_t{1} << 20), Device::CUDA);
    TG_CHECK_CUDA(cudaMemsetAsync(buf.data(), 0, buf.nbytes(), cuda_stream(stream)));
  }
  return buf.data();
}

void release_attention_state() {
  release_cudnn_state();
  Scratch& s = scratch_state();
  std::lock_guard<std::mutex> lock(s.mu);
  std::set<int> devices;
  for (const auto& [device, buffer] : s.buffers) devices.insert(device);
  if (devices.empty()) return;  // nothing was created
  state_release::synchronize_devices(devices);  // throws before anything is freed
  s.buffers.clear();  // cudaFree (Buffer)
}

}  // namespace attn_detail

namespace {

using attn_detail::FlashArgs;

FlashArgs fwd_args(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& cu_seqlens,
                   int64_t max_seqlen, const AttentionOptions& opt, const TensorView& out, const TensorView& lse,
                   const char* what) {
  FlashArgs a;
  a.d = attn::check_fwd(q, k, v, cu_seqlens, max_seqlen, out, lse, Device::CUDA, attn::Io::kBf16, what);
  a.q = q.data;
  a.k = k.data;
  a.v = v.data;
  a.o = out.data;
  a.lse = lse.empty() ? nullptr : lse.ptr<float>();
  a.cu_seqlens = a.d.packed ? cu_seqlens.ptr<const int32_t>() : nullptr;
  a.sq = attn::strides_of(q, a.d.packed);
  a.sk = attn::strides_of(k, a.d.packed);
  a.sv = attn::strides_of(v, a.d.packed);
  a.so = attn::strides_of(out, a.d.packed);
  a.scale = attention_scale(opt, a.d.Dh);
  a.causal = opt.causal;
  return a;
}

FlashArgs bwd_args(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   const TensorView& lse, const TensorView& dout, const TensorView& cu_seqlens, int64_t max_seqlen,
                   const AttentionOptions& opt, const TensorView& dq, const TensorView& dk, const TensorView& dv,
                   const char* what) {
  FlashArgs a;
  a.d =
      attn::check_bwd(q, k, v, out, lse, dout, cu_seqlens, max_seqlen, dq, dk, dv, Device::CUDA, attn::Io::kBf16, what);
  a.q = q.data;
  a.k = k.data;
  a.v = v.data;
  a.o = out.data;
  a.lse = lse.ptr<float>();
  a.dout = dout.data;
  a.dq = dq.data;
  a.dk = dk.data;
  a.dv = dv.data;
  a.cu_seqlens = a.d.packed ? cu_seqlens.ptr<const int32_t>() : nullptr;
  a.sq = attn::strides_of(q, a.d.packed);
  a.sk = attn::strides_of(k, a.d.packed);
  a.sv = attn::strides_of(v, a.d.packed);
  a.so = attn::strides_of(out, a.d.packed);
  a.sdo = attn::strides_of(dout, a.d.packed);
  a.sdq = attn::strides_of(dq, a.d.packed);
  a.sdk = attn::strides_of(dk, a.d.packed);
  a.sdv = attn::strides_of(dv, a.d.packed);
  a.scale = attention_scale(opt, a.d.Dh);
  a.causal = opt.causal;
  return a;
}

}  // namespace

void attention_fwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& cu_seqlens,
                   int64_t max_seqlen, const AttentionOptions& opt, const TensorView& out, const TensorView& lse,
                   Stream stream) {
  TG_NVTX_FN();
  const FlashArgs a = fwd_args(q, k, v, cu_seqlens, max_seqlen, opt, out, lse, "attention_fwd(cuda)");
  if (a.d.T == 0) return;  // only empty sequences
  if (opt.backend == AttentionBackend::kFlash) {
    attn_detail::flash_fwd(a, stream);
  } else {
    attn_detail::cudnn_fwd(a, opt.workspace, stream);
  }
}

void attention_bwd(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                   const TensorView& lse, const TensorView& dout, const TensorView& cu_seqlens, int64_t max_seqlen,
                   const AttentionOptions& opt, const TensorView& dq, const TensorView& dk, const TensorView& dv,
                   Stream stream) {
  TG_NVTX_FN();
  const FlashArgs a = bwd_args(q, k, v, out, lse, dout, cu_seqlens, max_seqlen, opt, dq, dk, dv, "attention_bwd(cuda)");
  if (a.d.T == 0) return;
  if (opt.backend == AttentionBackend::kFlash) {
    void* ws = attn_detail::scratch(opt.workspace, attn_detail::flash_bwd_workspace_bytes(a.d), "attention_bwd(cuda)",
                                   stream);
    attn_detail::flash_bwd(a, ws, stream);
  } else {
    attn_detail::cudnn_bwd(a, opt.deterministic, opt.workspace, stream);
  }
}

std::size_t attention_fwd_workspace_bytes(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const TensorView& cu_seqlens, int64_t max_seqlen, const AttentionOptions& opt,
                                          const TensorView& out, const TensorView& lse) {
  const FlashArgs a = fwd_args(q, k, v, cu_seqlens, max_seqlen, opt, out, lse, "attention_fwd_workspace_bytes(cuda)");
  if (a.d.T == 0 || opt.backend == AttentionBackend::kFlash) return 0;
  return attn_detail::cudnn_fwd_workspace_bytes(a);
}

std::size_t attention_bwd_workspace_bytes(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const TensorView& out, const TensorView& lse, const TensorView& dout,
                                          const TensorView& cu_seqlens, int64_t max_seqlen, const AttentionOptions& opt,
                                          const TensorView& dq, const TensorView& dk, const TensorView& dv) {
  const FlashArgs a =
      bwd_args(q, k, v, out, lse, dout, cu_seqlens, max_seqlen, opt, dq, dk, dv, "attention_bwd_workspace_bytes(cuda)");
  if (a.d.T == 0) return 0;
  if (opt.backend == AttentionBackend::kFlash) return attn_detail::flash_bwd_workspace_bytes(a.d);
  return attn_detail::cudnn_bwd_workspace_bytes(a, opt.deterministic);
}

}  // namespace tg::kernels::cuda
