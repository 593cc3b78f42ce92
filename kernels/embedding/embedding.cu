// CUDA scaled embedding: forward gather (one warp per token), deterministic backward (the block of an
// id's first occurrence accumulates all of that id's tokens in token order; embedding.h has the contract).
// Out-of-range ids are recorded in the status buffer and never dereferenced.
#include <algorithm>
#include <climits>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/elementwise/elementwise.cuh"
#include "kernels/embedding/embedding.h"
#include "kernels/launch/device_info.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {

using dev::cp_async16;
using dev::cp_async_commit;
using dev::cp_async_wait;
using ew::bf16_t;

constexpr int kThreads = 128;
constexpr int kFwdThreads = 256;  // forward: 8 warps, one token each
constexpr int kFwdWarps = kFwdThreads / 32;
constexpr int kIdsPerThread = 4;                       // ids compared per thread per scan step
constexpr int kScanWindow = kThreads * kIdsPerThread;  // 512 token positions per scan step
constexpr int kColChunks = 4;                          // 8-column chunks per thread per column window
static_assert(kThreads * 8 * kColChunks == 4096, "the column windows below are 4096 columns");
constexpr int kMatchUnroll = 8;                        // dout rows in flight per accumulation step

struct Ids {
  const void* p;
  bool is64;
  __device__ __forceinline__ int64_t operator[](int64_t t) const {
    return is64 ? static_cast<const int64_t*>(p)[t] : static_cast<const int32_t*>(p)[t];
  }
};

// status = {0, INT_MAX}: no bad id yet (a kernel, so that the whole call can be captured in a CUDA graph).
__global__ void embedding_status_init_kernel(int* status) {
  dev::pdl_enter();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  status[0] = 0;
  status[1] = INT_MAX;
}

__device__ __forceinline__ void record_bad(int* status, int64_t t) {
  atomicAdd(&status[0], 1);
  atomicMin(&status[1], static_cast<int>(t));
}

// Grid: ceil(T / 8) blocks of 256 threads; warp w of block b writes out[8b + w]. Each lane issues all
// its loads of a window of U chunks (U = 8 BF16 / 4 F32: a whole 2048-wide BF16 row) before the first
// store, so a warp has 4 KB of the row in flight at once, and 4 blocks per SM (64 registers) make that
// 128 KB per SM: the gather is a chain of two dependent loads (id, then the row), and only many rows in
// flight hide it. (One 128-thread block per token kept 2 chunks per thread in flight and paid a block
// launch per 4 KB.)
template <typename E>
constexpr int fwd_window() {
  return sizeof(E) == 2 ? 8 : 4;  // 32 registers of raw row either way
}
template <typename E, typename O>
__global__ void __launch_bounds__(kFwdThreads, 4)
    embedding_forward_kernel(Ids ids, int64_t tokens, const E* __restrict__ table, int64_t ld_table, int64_t vocab,
                             int64_t cols, float scale, O* __restrict__ out, int64_t ld_out, int* status, bool vec) {
  constexpr int kU = fwd_window<E>();
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kFwdWarps + (threadIdx.x >> 5);
  if (t >= tokens) return;  // no block-wide synchronisation below
  const int64_t id = ids[t];
  const bool bad = id < 0 || id >= vocab;
  if (bad && lane == 0) record_bad(status, t);
  const int64_t chunks = (cols + 7) / 8;
  const E* src = table + (bad ? 0 : id) * ld_table;
  O* orow = out + t * ld_out;
  auto valid = [&](int64_t c) { return static_cast<int>(min(static_cast<int64_t>(8), cols - 8 * c)); };
  for (int64_t c0 = lane; c0 < chunks; c0 += 32 * kU) {
    ew::Pack8<E> row[kU];
#pragma unroll
    for (int k = 0; k < kU; ++k) {  // all loads first
      const int64_t c = c0 + 32 * k;
      if (c < chunks && !bad) row[k] = ew::load8_any(src + 8 * c, valid(c), vec);
    }
#pragma unroll
    for (int k = 0; k < kU; ++k) {
      const int64_t c = c0 + 32 * k;
      if (c >= chunks) continue;
      float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      if (!bad) {
        ew::unpack8(row[k], v);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = ieee::fmul(v[i], scale);
      }
      ew::store8_any(orow + 8 * c, v, valid(c), vec);
    }
  }
}

// Async forward (BF16 table, vectorisable rows): a persistent grid whose warp w (of W in all) gathers
// tokens w, w + W, ... . One token per warp and one warp per 8 KB of loads left each warp a chain of two
// dependent round trips (id, then the row) followed by its stores, and the 1024-block grid of T = 8192
// ran as two lock-step waves of that chain (68-75% of HBM bandwidth). Here a warp loads the ids of its
// next 32 tokens with one load per lane, and the rows pass through a ring of 2 buffers in shared memory
// (cp.async, 2048 columns per buffer: a "unit" is one token's window of 2048 columns): while unit u is
// scaled and stored, units u + 1 and u + 2 are in flight. Each lane copies and reads back only its own
// chunks, so the thread's cp.async.wait_group is all the synchronisation needed.
constexpr int kAsyncU = 8;                         // chunks per lane per unit
constexpr int kAsyncUnitElems = 32 * kAsyncU * 8;  // 2048 columns
constexpr size_t kAsyncSmem = static_cast<size_t>(kFwdWarps) * 2 * kAsyncUnitElems * sizeof(bf16_t);

template <typename O>
__global__ void __launch_bounds__(kFwdThreads, 3)
    embedding_forward_async_kernel(Ids ids, int64_t tokens, const bf16_t* __restrict__ table, int64_t ld_table,
                                   int64_t vocab, int64_t cols, float scale, O* __restrict__ out, int64_t ld_out,
                                   int* status) {
  dev::pdl_enter();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  extern __shared__ __align__(16) uint8_t smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  bf16_t* ring = reinterpret_cast<bf16_t*>(smem) + warp * 2 * kAsyncUnitElems;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kFwdWarps;
  const int64_t gw = static_cast<int64_t>(blockIdx.x) * kFwdWarps + warp;
  const int64_t chunks = cols / 8;  // cols % 8 == 0 here
  const int64_t windows = (chunks + 32 * kAsyncU - 1) / (32 * kAsyncU);
  const int64_t my_tokens = gw < tokens ? (tokens - 1 - gw) / warps + 1 : 0;

  // Producer state: the next unit to copy (the warp's pk-th token, window pw); lane l holds the id of the
  // warp's token id_base + l (-1: absent or out of range, recorded once when its batch is loaded).
  int64_t pk = 0, pw = 0, id_base = -32, id_reg = -1;
  int64_t buf_id0 = -1, buf_id1 = -1;  // the id whose unit each buffer holds (-1: zeros)
  auto prefetch_next = [&](int b) {
    int64_t id = -1;
    if (pk < my_tokens) {
      if ((pk & ~int64_t{31}) != id_base) {  // warp-uniform: the next batch of 32 ids
        id_base = pk & ~int64_t{31};
        const int64_t k = id_base + lane;
        id_reg = -1;
        if (k < my_tokens) {
          const int64_t t = gw + k * warps;
          id_reg = ids[t];
          if (id_reg < 0 || id_reg >= vocab) {
            record_bad(status, t);
            id_reg = -1;
          }
        }
      }
      id = __shfl_sync(0xFFFFFFFFu, id_reg, static_cast<int>(pk & 31));
      if (id >= 0) {
        const bf16_t* src = table + id * ld_table;
#pragma unroll
        for (int k = 0; k < kAsyncU; ++k) {
          const int64_t c = pw * 32 * kAsyncU + lane + 32 * k;
          if (c < chunks) cp_async16(ring + b * kAsyncUnitElems + 8 * (lane + 32 * k), src + 8 * c);
        }
      }
      if (++pw == windows) {
        pw = 0;
        ++pk;
      }
    }
    if (b == 0)
      buf_id0 = id;
    else
      buf_id1 = id;
    cp_async_commit();
  };
  prefetch_next(0);
  prefetch_next(1);

  int buf = 0;
  for (int64_t k = 0; k < my_tokens; ++k) {
    O* orow = out + (gw + k * warps) * ld_out;
    for (int64_t w = 0; w < windows; ++w) {
      cp_async_wait<1>();  // this unit has landed; the next one may still be in flight
      const bool live = (buf == 0 ? buf_id0 : buf_id1) >= 0;
      float v[kAsyncU][8];
#pragma unroll
      for (int u = 0; u < kAsyncU; ++u) {
        const int64_t c = w * 32 * kAsyncU + lane + 32 * u;
        ew::Pack8<bf16_t> p{make_uint4(0, 0, 0, 0)};
        if (live && c < chunks) p = {*reinterpret_cast<const uint4*>(ring + buf * kAsyncUnitElems + 8 * (lane + 32 * u))};
#pragma unroll
        for (int i = 0; i < 8; ++i) v[u][i] = ieee::fmul(p.get(i), scale);  // 0 * scale = 0 for a bad id
      }
      prefetch_next(buf);  // the buffer's reads are consumed: it takes the unit two ahead
#pragma unroll
      for (int u = 0; u < kAsyncU; ++u) {
        const int64_t c = w * 32 * kAsyncU + lane + 32 * u;
        if (c < chunks) ew::store8_any(orow + 8 * c, v[u], 8, true);
      }
      buf ^= 1;
    }
  }
  cp_async_wait<0>();  // no copy outlives the block
}

// Block-wide exclusive prefix sum of `count` (blockDim.x == kThreads); returns this thread's offset and
// sets `total`. Uses `warp_sums` (kThreads / 32 ints of shared memory). Synchronises.
__device__ __forceinline__ int block_exclusive_scan(int count, int* warp_sums, int& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = count;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int up = __shfl_up_sync(0xFFFFFFFFu, incl, o);
    if (lane >= o) incl += up;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  int before = 0;
  total = 0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) {
    if (w < warp) before += warp_sums[w];
    total += warp_sums[w];
  }
  return before + incl - count;
}

// Grid: T blocks of 128 threads. Block t exits unless t is the first occurrence of its id; otherwise it
// adds the contributions of every token with that id, in increasing token order, to dtable[id].
template <typename G>
__global__ void __launch_bounds__(kThreads)
    embedding_backward_kernel(Ids ids, int64_t tokens, const G* __restrict__ dout, int64_t ld_dout, float scale,
                              float* __restrict__ dtable, int64_t ld_dtable, int64_t vocab, int64_t cols, int* status,
                              bool vec, bool dtable_vec) {
  __shared__ int list[kScanWindow];
  __shared__ int warp_sums[kThreads / 32];
  const int64_t t = blockIdx.x;
  const int64_t id = ids[t];
  if (id < 0 || id >= vocab) {  // uniform across the block
    if (threadIdx.x == 0) record_bad(status, t);
    return;
  }
  // Not the first occurrence: an earlier token's block does this id.
  for (int64_t base = 0; base < t; base += kScanWindow) {
    bool earlier = false;
#pragma unroll
    for (int k = 0; k < kIdsPerThread; ++k) {
      const int64_t p = base + threadIdx.x * kIdsPerThread + k;
      earlier |= p < t && ids[p] == id;
    }
    if (__syncthreads_or(earlier)) return;
  }

  const int64_t chunks = (cols + 7) / 8;
  float* drow = dtable + id * ld_dtable;
  for (int64_t w0 = 0; w0 < chunks; w0 += kThreads * kColChunks) {  // column windows of 4096
    float acc[kColChunks][8];
#pragma unroll
    for (int k = 0; k < kColChunks; ++k) {
      const int64_t c = w0 + threadIdx.x + k * kThreads;
      if (c < chunks) {
        ew::unpack8(
            ew::load8_any(drow + 8 * c, static_cast<int>(min(static_cast<int64_t>(8), cols - 8 * c)), dtable_vec),
            acc[k]);
      }
    }
    for (int64_t base = t; base < tokens; base += kScanWindow) {
      // This window's occurrences, in increasing token order, into list[0 .. total).
      const int64_t first = base + threadIdx.x * kIdsPerThread;
      unsigned mask = 0;
#pragma unroll
      for (int k = 0; k < kIdsPerThread; ++k) {
        if (first + k < tokens && ids[first + k] == id) mask |= 1u << k;
      }
      int total = 0;
      int slot = block_exclusive_scan(__popc(mask), warp_sums, total);
#pragma unroll
      for (int k = 0; k < kIdsPerThread; ++k) {
        if (mask & (1u << k)) list[slot++] = static_cast<int>(first + k);
      }
      __syncthreads();
      for (int m0 = 0; m0 < total; m0 += kMatchUnroll) {
#pragma unroll
        for (int k = 0; k < kColChunks; ++k) {
          const int64_t c = w0 + threadIdx.x + k * kThreads;
          if (c >= chunks) continue;
          const int n = static_cast<int>(min(static_cast<int64_t>(8), cols - 8 * c));
          ew::Pack8<G> rows[kMatchUnroll];
#pragma unroll
          for (int u = 0; u < kMatchUnroll; ++u) {  // independent loads first
            if (m0 + u < total) rows[u] = ew::load8_any(dout + list[m0 + u] * ld_dout + 8 * c, n, vec);
          }
#pragma unroll
          for (int u = 0; u < kMatchUnroll; ++u) {  // then the adds, in token order
            if (m0 + u < total) {
#pragma unroll
              for (int i = 0; i < 8; ++i) acc[k][i] = ieee::fadd(acc[k][i], ieee::fmul(rows[u].get(i), scale));
            }
          }
        }
      }
      __syncthreads();  // list and warp_sums are rewritten by the next window
    }
#pragma unroll
    for (int k = 0; k < kColChunks; ++k) {
      const int64_t c = w0 + threadIdx.x + k * kThreads;
      if (c < chunks) {
        ew::store8_any(drow + 8 * c, acc[k], static_cast<int>(min(static_cast<int64_t>(8), cols - 8 * c)), dtable_vec);
      }
    }
  }
}

bool rows_ok(const TensorView& t) { return t.strides[0] % 8 == 0 && ew::aligned16(t.data); }

// The status buffer: the caller's, or a private one checked synchronously at the end.
class StatusScope {
 public:
  StatusScope(const TensorView& status, Stream stream) : stream_(stream) {
    if (status.empty()) {
      own_ = Tensor::empty(DType::I32, Shape{2}, Device::CUDA);
      view_ = own_.view();
    } else {
      view_ = status;
    }
    launch(embedding_status_init_kernel, 1, 1, 0, cuda_stream(stream), ptr());
    TG_CHECK_LAUNCH("embedding_status_init_kernel");
  }
  int* ptr() const { return static_cast<int*>(view_.data); }
  // With a private buffer: wait and throw on bad ids.
  void finish(const TensorView& ids, int64_t vocab) const {
    if (!own_.view().empty()) embedding_check_status(view_, ids, vocab, stream_);
  }

 private:
  Stream stream_;
  Tensor own_;
  TensorView view_;
};

}  // namespace

void embedding_forward(const TensorView& ids, const TensorView& table, float scale, const TensorView& out,
                       const TensorView& status, Stream stream) {
  TG_NVTX_FN();
  embedding_detail::check_args(ids, table, out, scale, status, Device::CUDA, false, "embedding_forward");
  StatusScope st(status, stream);
  const int64_t t_count = ids.numel(), cols = table.shape[1];
  if (t_count > 0 && cols > 0) {
    const bool vec = cols % 8 == 0 && rows_ok(table) && rows_ok(out);
    const Ids id_ref{ids.data, ids.dtype == DType::I64};
    TG_DISPATCH_BF16_F32(table.dtype, "embedding_forward(table)", [&] {
      using E = scalar_t;
      TG_DISPATCH_BF16_F32(out.dtype, "embedding_forward(out)", [&] {
        const int64_t warp_blocks = (t_count + kFwdWarps - 1) / kFwdWarps;
        if constexpr (std::is_same_v<E, bf16_t>) {
          if (vec) {  // persistent grid: as many blocks as are resident at once
            const auto kernel = embedding_forward_async_kernel<scalar_t>;
            const int per_sm = resident_blocks(reinterpret_cast<const void*>(kernel), kFwdThreads, kAsyncSmem);
            const auto blocks =
                static_cast<unsigned>(std::min<int64_t>(warp_blocks, static_cast<int64_t>(per_sm) * sm_count()));
            launch(kernel, blocks, kFwdThreads, kAsyncSmem, cuda_stream(stream), id_ref, t_count,
                   table.ptr<bf16_t>(), table.strides[0], table.shape[0], cols, scale, out.ptr<scalar_t>(),
                   out.strides[0], st.ptr());
            return;
          }
        }
        embedding_forward_kernel<E, scalar_t><<<static_cast<unsigned>(warp_blocks), kFwdThreads, 0,
                                                cuda_stream(stream)>>>(
            id_ref, t_count, table.ptr<E>(), table.strides[0], table.shape[0], cols, scale, out.ptr<scalar_t>(),
            out.strides[0], st.ptr(), vec);
      });
    });
    TG_CHECK_LAUNCH("embedding_forward_kernel");
  }
  st.finish(ids, table.shape[0]);
}

void embedding_backward(const TensorView& ids, const TensorView& dout, float scale, const TensorView& dtable,
                        const TensorView& status, Stream stream) {
  TG_NVTX_FN();
  embedding_detail::check_args(ids, dtable, dout, scale, status, Device::CUDA, true, "embedding_backward");
  StatusScope st(status, stream);
  const int64_t t_count = ids.numel(), cols = dtable.shape[1];
  if (t_count > 0 && cols > 0) {
    const bool vec = cols % 8 == 0 && rows_ok(dout);
    const bool dtable_vec = cols % 8 == 0 && rows_ok(dtable);
    const Ids id_ref{ids.data, ids.dtype == DType::I64};
    TG_DISPATCH_BF16_F32(dout.dtype, "embedding_backward(dout)", [&] {
      embedding_backward_kernel<scalar_t><<<static_cast<unsigned>(t_count), kThreads, 0, cuda_stream(stream)>>>(
          id_ref, t_count, dout.ptr<scalar_t>(), dout.strides[0], scale, dtable.ptr<float>(), dtable.strides[0],
          dtable.shape[0], cols, st.ptr(), vec, dtable_vec);
    });
    TG_CHECK_LAUNCH("embedding_backward_kernel");
  }
  st.finish(ids, dtable.shape[0]);
}

}  // namespace tg::kernels::cuda
