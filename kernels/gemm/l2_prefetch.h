// l2_prefetch: a hint that starts bringing the leading bytes of some device tensors into the L2 cache at the
// evict-last priority, so that a later kernel reads them from L2 instead of HBM. What it is for: the batch-1 decode
// step (impl/generate/decoder.cpp, TEGEMMA_DECODE_L2_PREFETCH_MB) spends a third of each layer in latency-bound
// kernels (one-row RMSNorm, RoPE + KV write, attention, small GEMV ramps) while HBM idles; requesting the next GEMVs'
// weights there moves those bytes into otherwise idle time. (Distinct from session 5's experiment, which prefetched a
// GEMV's own weights at its start and only added requests.)
//
// Contract: no observable effect on any value (the tensors are only read; nothing is written). The CPU backend does
// nothing (there is no cache to warm). `tensors` are prefetched in order until `max_bytes` bytes have been requested
// (each tensor's leading bytes, rounded down to 16); max_bytes <= 0 or an empty list launches nothing.
// Argument rules (tg::Error naming the tensor otherwise): every tensor non-empty, contiguous, on one device; on CUDA its
// data 16-byte aligned. At most kL2PrefetchMaxTensors tensors per call.
//
// CUDA: one block of 128 threads; each thread issues cp.async.bulk.prefetch.L2 requests of up to 32 KB with an
// evict-last cache policy (no completion to wait for, no registers held). Under programmatic dependent launch the
// kernel lets its successor launch at once and issues its requests before griddepcontrol.wait, but only exits after
// that wait: its completion still implies its predecessor's, so a decode chain that waits on it keeps its order.
// NVTX range, argument checks and the launch check as every launcher; nothing is allocated (capturable).
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"

namespace tg::kernels {

inline constexpr int kL2PrefetchMaxTensors = 8;

void l2_prefetch(const std::vector<TensorView>& tensors, int64_t max_bytes, Stream stream = {});

namespace cuda {
void l2_prefetch(const std::vector<TensorView>& tensors, int64_t max_bytes, Stream stream);
}  // namespace cuda

namespace detail {
// The argument rules above; returns the device of the tensors (CPU for an empty list).
Device check_l2_prefetch(const std::vector<TensorView>& tensors, int64_t max_bytes);
}  // namespace detail

}  // namespace tg::kernels
