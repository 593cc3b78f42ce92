// L2 prefetch on a side stream: asks the GPU's L2 cache to fetch the leading bytes of some device tensors (a decode
// step's next weights) while the kernels enqueued after the request run, so that a later GEMV reads those bytes from
// L2 instead of HBM. What it is for: the batch-1 decode step (impl/generate/decoder.cpp,
// TEGEMMA_DECODE_L2_AHEAD_MB) spends a third of each layer in latency-bound kernels (RoPE + KV write, attention, the
// small O GEMV, the one-row RMSNorm) while HBM idles; the fc1 GEMV after them streams 67-151 MB.
//
// Why a side stream (session 10 measured the other way and lost, ac4fc00): a prefetch kernel inside the dependent
// chain delays the chain's next kernel until it completes (2b B1 932 -> 388 tok/s with one block of bulk requests
// per prefetch, ~45 us each). Here the request kernel runs on a stream of its own, forked from the caller's stream
// at issue() and joined back by join(): nothing in the caller's stream waits for it until the join.
//
// Contract: no observable effect on any value (the tensors are only read). The tensors are requested in order until
// `max_bytes` bytes are covered (each tensor's leading bytes, rounded down to 16); max_bytes == 0, an empty list or
// the CPU backend (no cache to warm) enqueue nothing. Argument rules (tg::Error naming the tensor otherwise): every
// tensor non-empty, contiguous, on one device; on CUDA 16-byte aligned. At most kL2PrefetchMaxTensors per call.
// Capturable: inside a stream capture of `stream` the side stream joins the capture at issue() and must be joined
// back with join(stream) before the capture ends (CUDA refuses an unjoined capture). No allocation after the first
// issue() (which creates the side stream and two events).
//
// CUDA: cp.async.bulk.prefetch.L2 requests of 4 KB at the normal eviction priority (session 10's evict-last lines
// accumulated in L2), spread over up to one block per SM so that no single SM's copy engine paces them; the request
// kernel is an ordinary launch (no programmatic launch) and touches nothing an earlier kernel writes.
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"

namespace tg::kernels {

inline constexpr int kL2PrefetchMaxTensors = 8;

class SidePrefetch {
 public:
  SidePrefetch() = default;
  SidePrefetch(SidePrefetch&& o) noexcept;
  SidePrefetch& operator=(SidePrefetch&& o) noexcept;
  SidePrefetch(const SidePrefetch&) = delete;
  SidePrefetch& operator=(const SidePrefetch&) = delete;
  ~SidePrefetch();

  // Creates the side stream and its two events now (issue() does it on first use otherwise): for callers whose first
  // issue() may happen inside a stream capture. A no-op once done, and in a build without CUDA.
  void prepare();
  // After everything already enqueued on `stream`, request `tensors`' leading bytes (max_bytes in all) into L2.
  void issue(const std::vector<TensorView>& tensors, int64_t max_bytes, Stream stream);
  // `stream` waits for every request issued since the last join (a no-op when none is pending).
  void join(Stream stream);
  bool pending() const { return pending_; }

 private:
  void* side_ = nullptr;  // cudaStream_t
  void* fork_ = nullptr;  // cudaEvent_t: recorded on the caller's stream at issue()
  void* done_ = nullptr;  // cudaEvent_t: recorded on the side stream after each request kernel
  bool pending_ = false;
};

namespace cuda {
// The request kernel on `side` (kernels/gemm/l2_prefetch.cu).
void l2_prefetch(const std::vector<TensorView>& tensors, int64_t max_bytes, Stream side);
}  // namespace cuda

namespace detail {
// The argument rules above; returns the device of the tensors (CPU for an empty list).
Device check_l2_prefetch(const std::vector<TensorView>& tensors, int64_t max_bytes);
}  // namespace detail

}  // namespace tg::kernels
