// sample_tokens on CUDA: one 1024-thread block per row (sequence). Every pass re-reads the row's logits
// (BF16: 512 KB for a 256k vocabulary, L2-resident after the first pass) and recomputes the scores, so no
// scratch memory is needed:
//   greedy   one pass: block argmax (ties -> lowest index); BF16 rows in 16-byte loads, 4 in flight per thread.
//            With DecodeState::workspace the row is split over kGreedySplit blocks, each the argmax of its slice;
//            the last to arrive merges them (the whole row's argmax: the order is total) and updates the state.
//            One block scanning a 256k row took 17.9 us of the gemma-2b B1 step (H200, session 16 profile).
//   sample   max pass; top-k: 4 radix passes (8 bits each) over the 32-bit order keys with counts; the kept
//            total W; top-p: 8 radix passes over the 64-bit (order key, index) composite with integer weights;
//            the kept total W'; the draw: per-thread contiguous chunks, a block exclusive scan of their kept
//            weights, and the one thread whose chunk holds the target scans it.
// Radix selection finds the same key the CPU twin finds by sorting (the smallest key whose ascending
// cumulative count / weight exceeds the target), and every sum is an integer sum, so the result does not
// depend on the thread schedule: the kernel picks the CPU twin's token bit for bit.
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/sampling/sampling.h"
#include "kernels/sampling/sampling_math.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;

using sampling::composite_key;
using sampling::order_key;
using sampling::weight_of;

struct StatePtrs {
  int32_t* tokens;
  int32_t* positions;
  int32_t* seqlens;
  int32_t* generated;
  const int32_t* max_new;
  int32_t* finished;
  int32_t* last;
  int32_t* out_tokens;
  uint32_t* seen;
  int32_t* flags;  // optional [2, B]: last, finished (DecodeState::flags)
};

__device__ __forceinline__ float load_logit(const __nv_bfloat16* row, int i) { return __bfloat162float(row[i]); }
__device__ __forceinline__ float load_logit(const float* row, int i) { return row[i]; }

// ---- block reductions (fixed shapes; results broadcast to every thread) -----------------------------------
struct Scratch {
  unsigned long long hist[256];
  unsigned long long warp_u64[kWarps];
  float warp_f[kWarps];
  int warp_i[kWarps];
  unsigned long long bcast_u64[2];
  float bcast_f;
  int bcast_i;
  int last_part;  // merge_greedy_parts: this block arrived last (not shared with the reductions above)
};

__device__ float block_max(float v, Scratch& sm) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sm.warp_f[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float w = sm.warp_f[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) w = fmaxf(w, __shfl_xor_sync(kFull, w, o));
    if (threadIdx.x == 0) sm.bcast_f = w;
  }
  __syncthreads();
  return sm.bcast_f;
}

__device__ unsigned long long block_sum_u64(unsigned long long v, Scratch& sm) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sm.warp_u64[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    unsigned long long w = sm.warp_u64[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) w += __shfl_xor_sync(kFull, w, o);
    if (threadIdx.x == 0) sm.bcast_u64[0] = w;
  }
  __syncthreads();
  return sm.bcast_u64[0];
}

__device__ unsigned long long block_max_u64(unsigned long long v, Scratch& sm) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(kFull, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sm.warp_u64[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    unsigned long long w = sm.warp_u64[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) w = max(w, __shfl_xor_sync(kFull, w, o));
    if (threadIdx.x == 0) sm.bcast_u64[0] = w;
  }
  __syncthreads();
  return sm.bcast_u64[0];
}

// (value, index): the larger value wins, ties go to the smaller index -- associative and commutative.
__device__ __forceinline__ void argmax_merge(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}
struct ArgMax {
  float value;
  int index;
};
__device__ ArgMax block_argmax(float v, int i, Scratch& sm) {
  for (int o = 16; o > 0; o >>= 1) argmax_merge(v, i, __shfl_xor_sync(kFull, v, o), __shfl_xor_sync(kFull, i, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) {
    sm.warp_f[threadIdx.x / 32] = v;
    sm.warp_i[threadIdx.x / 32] = i;
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    float w = sm.warp_f[threadIdx.x];
    int wi = sm.warp_i[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) argmax_merge(w, wi, __shfl_xor_sync(kFull, w, o), __shfl_xor_sync(kFull, wi, o));
    if (threadIdx.x == 0) {
      sm.bcast_f = w;
      sm.bcast_i = wi;
    }
  }
  __syncthreads();
  return ArgMax{sm.bcast_f, sm.bcast_i};
}

// The greedy split (DecodeState::workspace): block `part` of `parts` publishes its partial argmax of row b; the last
// block to arrive (ticket) merges all of them -- argmax_merge is a total order on (value, -index), so the result is
// the whole row's in any merge order -- resets the ticket for the next call and returns true with the merged index
// in *chosen. Others return false. Release / acquire through __threadfence around the ticket (the classic
// last-block reduction); partials are read through L2 (__ldcg), one part per lane of warp 0 and then merged by
// shuffles: one L2 round trip. (Thread 0 alone, one part after another, made the merge a chain of dependent L2
// reads: the 32-block split cost 19.2 us of the gemma-2b B1 step inside the chain, H200 session 21 step timeline.)
__device__ bool merge_greedy_parts(ArgMax mine, int part, int parts, int32_t* ws_row, int vocab, int* chosen,
                                   Scratch& sm) {
  uint32_t* ticket = reinterpret_cast<uint32_t*>(ws_row);
  float* values = reinterpret_cast<float*>(ws_row + 1);
  int32_t* indices = ws_row + 1 + parts;
  if (threadIdx.x == 0) {
    values[part] = mine.value;
    indices[part] = mine.index;
    __threadfence();
    sm.last_part = atomicAdd(ticket, 1u) == static_cast<uint32_t>(parts - 1);
  }
  __syncthreads();
  if (!sm.last_part) return false;
  if (threadIdx.x < 32) {  // warp 0, uniform
    __threadfence();
    float best = -INFINITY;
    int best_i = vocab;
    for (int q = static_cast<int>(threadIdx.x); q < parts; q += 32) {
      argmax_merge(best, best_i, __ldcg(values + q), __ldcg(indices + q));
    }
    for (int o = 16; o > 0; o >>= 1) {
      argmax_merge(best, best_i, __shfl_xor_sync(kFull, best, o), __shfl_xor_sync(kFull, best_i, o));
    }
    if (threadIdx.x == 0) {
      *chosen = best_i < vocab ? best_i : 0;
      *ticket = 0;  // the next call starts from zero (kernel boundaries order it)
    }
  }
  return true;
}

// Exclusive prefix sum over the block (thread order).
__device__ unsigned long long block_exclusive_scan_u64(unsigned long long v, Scratch& sm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  unsigned long long incl = v;
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long up = __shfl_up_sync(kFull, incl, o);
    if (lane >= o) incl += up;
  }
  __syncthreads();
  if (lane == 31) sm.warp_u64[warp] = incl;
  __syncthreads();
  if (threadIdx.x < 32) {
    const unsigned long long w = sm.warp_u64[threadIdx.x];
    unsigned long long wi = w;
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long up = __shfl_up_sync(kFull, wi, o);
      if (lane >= o) wi += up;
    }
    sm.warp_u64[threadIdx.x] = wi - w;  // exclusive over warps
  }
  __syncthreads();
  return sm.warp_u64[warp] + incl - v;
}

// The smallest key K (nbits wide, 8 bits per pass) with sum of weights over keys <= K greater than `target`
// (which must be below the total). kw(i, key, weight) describes element i; weight 0 elements do not count.
template <typename KeyWeight>
__device__ unsigned long long radix_select(int vocab, int nbits, const KeyWeight& kw, unsigned long long target,
                                           Scratch& sm) {
  unsigned long long prefix = 0, below = 0;
  for (int shift = nbits - 8; shift >= 0; shift -= 8) {
    for (int j = threadIdx.x; j < 256; j += blockDim.x) sm.hist[j] = 0;
    __syncthreads();
    const unsigned long long high = shift + 8 >= 64 ? 0ull : (~0ull << (shift + 8));
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      unsigned long long key, w;
      kw(i, key, w);
      if (w != 0 && (key & high) == prefix) atomicAdd(&sm.hist[(key >> shift) & 255u], w);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long acc = below;
      int digit = 255;
      for (int j = 0; j < 256; ++j) {
        if (acc + sm.hist[j] > target) {
          digit = j;
          break;
        }
        acc += sm.hist[j];
      }
      sm.bcast_u64[0] = prefix | (static_cast<unsigned long long>(digit) << shift);
      sm.bcast_u64[1] = acc;
    }
    __syncthreads();
    prefix = sm.bcast_u64[0];
    below = sm.bcast_u64[1];
    __syncthreads();
  }
  return prefix;
}

// Grid (parts, B): parts = 1, or kGreedySplit with a workspace (ws: I32 [B, kSampleWorkspaceWords]); the sampling
// path runs in block 0 of its row alone (the other parts exit).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    sample_tokens_kernel(const T* __restrict__ logits, int64_t row_stride, int vocab, int words, int max_tokens,
                         const SamplingParams* __restrict__ params, StatePtrs st, int32_t* ws) {
  dev::pdl_enter();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  // Raw storage: SamplingParams has default member initialisers, which __shared__ variables cannot run.
  __shared__ alignas(SamplingParams) unsigned char p_raw[sizeof(SamplingParams)];
  __shared__ Scratch sm;
  __shared__ int chosen;
  SamplingParams& p = *reinterpret_cast<SamplingParams*>(p_raw);
  const int b = blockIdx.y, part = blockIdx.x, parts = gridDim.x;
  // The row's state, read first, beside the parameters' read (one round trip, not three dependent ones: params ->
  // finished -> generated). Only the deciding thread writes them, at the very end, after every block of the row has
  // read them (the last block to arrive decides).
  const int fin = st.finished[b], g = st.generated[b], max_new = st.max_new[b], pos0 = st.positions[b];
  if (threadIdx.x == 0) {
    memcpy(p_raw, params, sizeof(SamplingParams));
    chosen = -1;
  }
  __syncthreads();
  if (p.mode == SamplingMode::kOff) return;
  if (p.mode != SamplingMode::kGreedy && part != 0) return;
  if (fin != 0) {
    if (threadIdx.x == 0 && part == 0) {
      st.last[b] = -1;
      if (st.flags != nullptr) {
        st.flags[b] = -1;
        st.flags[gridDim.y + b] = fin;  // a copy of finished, as the CPU twin writes
      }
    }
    return;
  }
  const T* row = logits + b * row_stride;
  uint32_t* seen = st.seen + static_cast<int64_t>(b) * words;
  const bool penalty = p.repetition_penalty != 1.0f;
  const bool block_eos = g < p.min_new_tokens;
  const float pen = p.repetition_penalty;

  auto is_eos = [&](int i) {
    for (int e = 0; e < p.num_eos; ++e) {
      if (p.eos[e] == i) return true;
    }
    return false;
  };
  auto adjust = [&](float x, int i) {  // the repetition penalty and min_new_tokens' EOS block on logit i
    if (penalty && ((seen[i >> 5] >> (i & 31)) & 1u)) x = x < 0.0f ? ieee::fmul(x, pen) : ieee::fdiv(x, pen);
    if (block_eos && is_eos(i)) x = -INFINITY;
    return x;
  };
  auto score = [&](int i) { return adjust(load_logit(row, i), i); };

  if (p.mode == SamplingMode::kGreedy) {
    // This block's slice [lo, hi) of the row (the whole row without a split; slices start at multiples of 8).
    const int chunk = parts == 1 ? vocab : ((vocab + parts - 1) / parts + 7) / 8 * 8;
    const int lo = min(vocab, part * chunk), hi = min(vocab, lo + chunk);
    float best = -INFINITY;
    int best_i = vocab;
    int scalar_from = lo;  // logits of the slice before this index were covered by the vector loop
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      // 16-byte loads, 4 in flight per thread (a 256k-vocabulary BF16 row in 8 rounds for one block instead of 250
      // dependent 2-byte ones). argmax_merge is a total order on (value, -index), so the visiting order does not
      // change the result.
      if (reinterpret_cast<uintptr_t>(row) % 16 == 0) {
        constexpr int kInFlight = 4;
        const int vec_lo = lo / 8, nvec = hi / 8;
        const uint4* rv = reinterpret_cast<const uint4*>(row);
        for (int v0 = vec_lo + static_cast<int>(threadIdx.x); v0 < nvec; v0 += blockDim.x * kInFlight) {
          uint4 u[kInFlight];
#pragma unroll
          for (int k = 0; k < kInFlight; ++k) {
            const int v = v0 + k * static_cast<int>(blockDim.x);
            u[k] = v < nvec ? __ldg(rv + v) : make_uint4(0u, 0u, 0u, 0u);
          }
#pragma unroll
          for (int k = 0; k < kInFlight; ++k) {
            const int v = v0 + k * static_cast<int>(blockDim.x);
            if (v >= nvec) break;
            const __nv_bfloat16* h = reinterpret_cast<const __nv_bfloat16*>(&u[k]);
#pragma unroll
            for (int e = 0; e < 8; ++e) argmax_merge(best, best_i, adjust(__bfloat162float(h[e]), 8 * v + e), 8 * v + e);
          }
        }
        scalar_from = max(lo, nvec * 8);
      }
    }
    for (int i = scalar_from + static_cast<int>(threadIdx.x); i < hi; i += blockDim.x) {
      argmax_merge(best, best_i, score(i), i);
    }
    const ArgMax mine = block_argmax(best, best_i, sm);
    if (parts > 1) {
      if (!merge_greedy_parts(mine, part, parts, ws + static_cast<int64_t>(b) * kSampleWorkspaceWords, vocab, &chosen,
                              sm)) {
        return;  // another block of the row decides
      }
    } else if (threadIdx.x == 0) {
      chosen = mine.index < vocab ? mine.index : 0;
    }
  } else {
    const bool temper = p.temperature != 1.0f;
    auto warped = [&](int i) {
      const float x = score(i);
      return temper ? ieee::fdiv(x, p.temperature) : x;
    };
    float m = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, warped(i));
    m = block_max(m, sm);

    uint32_t kth = 0;
    if (p.top_k > 0 && p.top_k < vocab) {
      const auto counts = [&](int i, unsigned long long& key, unsigned long long& w) {
        key = order_key(warped(i));
        w = 1;
      };
      kth =
          static_cast<uint32_t>(radix_select(vocab, 32, counts, static_cast<unsigned long long>(vocab - p.top_k), sm));
    }
    const auto kept_weight = [&](int i, float x) -> unsigned long long {
      return order_key(x) >= kth ? weight_of(x, m) : 0ull;
    };
    unsigned long long total = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) total += kept_weight(i, warped(i));
    total = block_sum_u64(total, sm);

    unsigned long long cut = 0;
    if (p.top_p < 1.0f) {
      const unsigned long long target = sampling::top_p_target(p.top_p_cut, total);
      if (target >= total) {
        unsigned long long best = 0;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
          const float x = warped(i);
          if (kept_weight(i, x) != 0)
            best = max(best, static_cast<unsigned long long>(composite_key(x, static_cast<uint32_t>(i))));
        }
        cut = block_max_u64(best, sm);
      } else {
        const auto weights = [&](int i, unsigned long long& key, unsigned long long& w) {
          const float x = warped(i);
          key = composite_key(x, static_cast<uint32_t>(i));
          w = kept_weight(i, x);
        };
        cut = radix_select(vocab, 64, weights, target, sm);
      }
    }
    const auto final_weight = [&](int i) -> unsigned long long {
      const float x = warped(i);
      const unsigned long long w = kept_weight(i, x);
      return (w != 0 && composite_key(x, static_cast<uint32_t>(i)) >= cut) ? w : 0ull;
    };
    // The draw over contiguous per-thread chunks, in index order.
    const int chunk = (vocab + kThreads - 1) / kThreads;
    const int begin = min(vocab, static_cast<int>(threadIdx.x) * chunk), end = min(vocab, begin + chunk);
    unsigned long long local = 0;
    for (int i = begin; i < end; ++i) local += final_weight(i);
    const unsigned long long kept_total = block_sum_u64(local, sm);
    const unsigned long long excl = block_exclusive_scan_u64(local, sm);
    const unsigned long long t =
        sampling::mulhi64(sampling::random_bits((static_cast<uint64_t>(p.seed_hi) << 32) | p.seed_lo,
                                                static_cast<uint32_t>(b), static_cast<uint32_t>(g)),
                          kept_total);
    if (local != 0 && excl <= t && t < excl + local) {
      unsigned long long cum = excl;
      for (int i = begin; i < end; ++i) {
        cum += final_weight(i);
        if (cum > t) {
          chosen = i;
          break;
        }
      }
    }
    __syncthreads();
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  const int t = chosen;
  if (g < max_tokens) st.out_tokens[static_cast<int64_t>(b) * max_tokens + g] = t;
  st.generated[b] = g + 1;
  st.last[b] = t;
  if (penalty) seen[t >> 5] |= 1u << (t & 31);
  const bool done = (p.num_eos > 0 && is_eos(t)) || g + 1 >= max_new;
  if (st.flags != nullptr) {
    st.flags[b] = t;
    st.flags[gridDim.y + b] = done ? 1 : 0;
  }
  if (done) {
    st.finished[b] = 1;
    st.positions[b] = -1;
    st.seqlens[b] = 0;
    st.tokens[b] = p.pad_token_id;
  } else {
    st.tokens[b] = t;
    const int pos = pos0 + 1;
    st.positions[b] = pos;
    st.seqlens[b] = pos + 1;
  }
}

}  // namespace

void sample_tokens(const TensorView& logits, const TensorView& params, const DecodeState& state, Stream stream) {
  TG_NVTX_FN();
  constexpr const char* what = "sample_tokens(cuda)";
  const sampling_detail::Dims d = sampling_detail::check_args(logits, params, state, Device::CUDA, what);
  TG_CHECK(reinterpret_cast<uintptr_t>(params.data) % alignof(SamplingParams) == 0, what,
           ": params must be aligned to ", alignof(SamplingParams), " bytes");
  StatePtrs st{
      state.tokens.ptr<int32_t>(),    state.positions.ptr<int32_t>(),     state.seqlens.ptr<int32_t>(),
      state.generated.ptr<int32_t>(), state.max_new.ptr<const int32_t>(), state.finished.ptr<int32_t>(),
      state.last.ptr<int32_t>(),      state.out_tokens.ptr<int32_t>(),    reinterpret_cast<uint32_t*>(state.seen.data),
      state.flags.empty() ? nullptr : state.flags.ptr<int32_t>()};
  const auto* prm = reinterpret_cast<const SamplingParams*>(params.data);
  const int vocab = static_cast<int>(d.vocab), words = static_cast<int>(seen_words(d.vocab));
  const int max_tokens = static_cast<int>(d.max_tokens);
  const cudaStream_t s = cuda_stream(stream);
  // With a workspace every row gets kGreedySplit blocks (the mode is read on the device: a sampling row's extra
  // blocks exit at once).
  int32_t* ws = state.workspace.empty() ? nullptr : state.workspace.ptr<int32_t>();
  const dim3 grid(ws != nullptr ? kGreedySplit : 1, static_cast<unsigned>(d.batch));
  TG_CHECK(d.batch <= 65535, what, ": at most 65535 rows per call, got ", d.batch);
  if (logits.dtype == DType::BF16) {
    launch(sample_tokens_kernel<__nv_bfloat16>, grid, kThreads, 0, s, logits.ptr<const __nv_bfloat16>(),
           logits.strides[0], vocab, words, max_tokens, prm, st, ws);
  } else {
    launch(sample_tokens_kernel<float>, grid, kThreads, 0, s, logits.ptr<const float>(), logits.strides[0], vocab,
           words, max_tokens, prm, st, ws);
  }
  TG_CHECK_LAUNCH("sample_tokens_kernel");
}

}  // namespace tg::kernels::cuda
