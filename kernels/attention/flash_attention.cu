// Our own flash attention (the AttentionBackend::kFlash twin of cuDNN): BF16 tensor cores (mma.sync
// m16n8k16, FP32 accumulation), online softmax, K / V tiles in shared memory, never an [S, S] matrix.
//
// Forward (FlashAttention-2 schedule): one block of 4 warps per (64-query tile, query head, sequence);
// warp w owns query rows 16w..16w+15. Per 64-key tile: S = Q K^T, mask, online softmax (log2 domain),
// O += P V with P rounded to BF16 in registers. The next K tile is prefetched (cp.async) while softmax
// and P V run, the next V tile while the next S runs. Causal blocks stop at their diagonal; blocks whose
// query tile starts beyond the sequence length exit at once (no compute on padding).
//
// Backward: deterministic (no atomics), P recomputed from the forward's lse:
//   dsum kernel : D_i = sum_d dout_id out_id
//   dq kernel   : per query tile (like the forward): dS = P (dout V^T - D), dq = scale dS K
//   dkdv kernel : per 64-key tile and kv head, looping over the g query heads of the group and the query
//                 tiles: S^T = K Q^T, P^T, then dV = sum P^T dout (mode dv) or dK = scale sum dS^T Q (mode dk;
//                 dS^T needs dP^T = V dout^T). dK and dV are separate launches because two 16 x Dh FP32
//                 accumulators per warp do not fit in registers at Dh = 256.
// The backward recomputes S three times (simple, a fallback and a twin for cuDNN; not tuned).
#include <cuda_bf16.h>

#include <mutex>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/attention/attention_cuda.h"
#include "kernels/attention/flash_common.cuh"
#include "kernels/cuda/device_utils.cuh"

namespace tg::kernels::cuda {

namespace {

using bf16 = __nv_bfloat16;
using namespace flash;

constexpr int kThreads = 128;  // 4 warps
constexpr int kBr = 64;        // query rows per tile (16 per warp)
constexpr int kBc = 64;        // keys per tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct KernelArgs {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  bf16* o;
  float* lse;
  const bf16* dout;
  bf16* dq;
  bf16* dk;
  bf16* dv;
  float* dsum;  // D = rowsum(dout * out), laid out like lse
  const int32_t* cu;
  attn::Strides sq, sk, sv, so, sdo, sdq, sdk, sdv;
  int B, S, H, Hkv, g;
  int64_t T;
  float scale, scale_log2;
};

struct Seq {
  int start;  // first token (packed) / 0 (dense)
  int len;
};
__device__ __forceinline__ Seq seq_of(const KernelArgs& p, int b) {
  if (p.cu == nullptr) return {0, p.S};
  const int start = p.cu[b];
  return {start, max(0, min(p.cu[b + 1] - start, p.S))};  // clamped: memory-safe even for a bad max_seqlen
}
// Row 0 of head h of sequence b of an operand.
template <typename T>
__device__ __forceinline__ T* head_base(T* base, const attn::Strides& st, const KernelArgs& p, int b, int start, int h,
                                        int dh) {
  const int64_t off = p.cu ? static_cast<int64_t>(start) * st.token : static_cast<int64_t>(b) * st.batch;
  return base + off + static_cast<int64_t>(h) * dh;
}
// Index into lse / D (packed [T, H], dense [B, H, S]).
__device__ __forceinline__ int64_t stat_index(const KernelArgs& p, int b, int start, int row, int h) {
  return p.cu ? static_cast<int64_t>(start + row) * p.H + h : (static_cast<int64_t>(b) * p.H + h) * p.S + row;
}

// c = X[x0 .. x0+15][0..DH) * Y[0..NC)[0..DH)^T  (X, Y padded row-major smem tiles; c as n-tiles of 8 columns)
template <int DH, int NC>
__device__ __forceinline__ void gemm_abt(float (&c)[NC / 8][4], const bf16* sX, int x0, const bf16* sY, int lane) {
  constexpr int L = DH + 8;
#pragma unroll
  for (int n = 0; n < NC / 8; ++n) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < DH / 16; ++kk) {
    uint32_t a[4];
    ldmatrix_x4(a, sX + (x0 + (lane & 15)) * L + kk * 16 + (lane >> 4) * 8);
#pragma unroll
    for (int nn = 0; nn < NC / 16; ++nn) {
      uint32_t b[4];
      ldmatrix_x4(b, sY + (nn * 16 + (lane & 7) + (lane >> 4) * 8) * L + kk * 16 + ((lane >> 3) & 1) * 8);
      mma_bf16(c[2 * nn], a, b[0], b[1]);
      mma_bf16(c[2 * nn + 1], a, b[2], b[3]);
    }
  }
}

// c += P[0..15][0..KR) * Z[0..KR)[0..DH): P in accumulator layout (rounded to BF16 here), Z a padded smem tile.
template <int DH, int KR>
__device__ __forceinline__ void gemm_pz(float (&c)[DH / 8][4], const float (&p)[KR / 8][4], const bf16* sZ, int lane) {
  constexpr int L = DH + 8;
#pragma unroll
  for (int kk = 0; kk < KR / 16; ++kk) {
    const uint32_t a[4] = {pack_bf16(p[2 * kk][0], p[2 * kk][1]), pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                           pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                           pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int nn = 0; nn < DH / 16; ++nn) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, sZ + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * L + nn * 16 + (lane >> 4) * 8);
      mma_bf16(c[2 * nn], a, b[0], b[1]);
      mma_bf16(c[2 * nn + 1], a, b[2], b[3]);
    }
  }
}

// Writes the warp's 16 x DH accumulator rows (times row factors f0 for row g, f1 for row g + 8) as BF16 into the
// staging tile, then the block copies rows [row0, row0 + 64) that are < len to global with 16-byte stores.
template <int DH>
__device__ __forceinline__ void store_tile(const float (&c)[DH / 8][4], float f0, float f1, bf16* stage, bf16* dst,
                                           int64_t stride, int row0, int len, int warp, int lane, int tid) {
  constexpr int L = DH + 8;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int n = 0; n < DH / 8; ++n) {
    const int col = n * 8 + 2 * t;
    *reinterpret_cast<__nv_bfloat162*>(stage + (warp * 16 + g) * L + col) =
        __floats2bfloat162_rn(c[n][0] * f0, c[n][1] * f0);
    *reinterpret_cast<__nv_bfloat162*>(stage + (warp * 16 + g + 8) * L + col) =
        __floats2bfloat162_rn(c[n][2] * f1, c[n][3] * f1);
  }
  __syncthreads();
  constexpr int kChunks = DH / 8;
  for (int i = tid; i < 64 * kChunks; i += kThreads) {
    const int r = i / kChunks, ch = i % kChunks;
    if (row0 + r < len) {
      *reinterpret_cast<uint4*>(dst + static_cast<int64_t>(row0 + r) * stride + ch * 8) =
          *reinterpret_cast<const uint4*>(stage + r * L + ch * 8);
    }
  }
}

template <int DH>
constexpr int tile_elems() {
  return 64 * (DH + 8);
}

// ---- forward ------------------------------------------------------------------------------------------------
template <int DH, bool CAUSAL>
__global__ void __launch_bounds__(kThreads) flash_fwd_kernel(KernelArgs p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sK = sQ + tile_elems<DH>();
  bf16* sV = sK + tile_elems<DH>();
  const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const Seq sq = seq_of(p, b);
  const int q0 = qt * kBr;
  if (q0 >= sq.len) return;
  const int hk = h / p.g;
  const bf16* qb = head_base(p.q, p.sq, p, b, sq.start, h, DH);
  const bf16* kb = head_base(p.k, p.sk, p, b, sq.start, hk, DH);
  const bf16* vb = head_base(p.v, p.sv, p, b, sq.start, hk, DH);
  const int kv_len = CAUSAL ? min(sq.len, q0 + kBr) : sq.len;
  const int n_tiles = (kv_len + kBc - 1) / kBc;

  load_tile_async<kBr, DH, kThreads>(sQ, qb, p.sq.token, q0, sq.len, tid);
  load_tile_async<kBc, DH, kThreads>(sK, kb, p.sk.token, 0, sq.len, tid);
  cp_async_commit();
  load_tile_async<kBc, DH, kThreads>(sV, vb, p.sv.token, 0, sq.len, tid);
  cp_async_commit();

  float o[DH / 8][4];
#pragma unroll
  for (int n = 0; n < DH / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};

  for (int j = 0; j < n_tiles; ++j) {
    const int k0 = j * kBc;
    cp_async_wait<1>();  // Q and K_j have landed (V_j may be in flight)
    __syncthreads();
    float s[kBc / 8][4];
    gemm_abt<DH, kBc>(s, sQ, warp * 16, sK, lane);
    __syncthreads();  // every warp is done with K_j
    if (j + 1 < n_tiles) {
      load_tile_async<kBc, DH, kThreads>(sK, kb, p.sk.token, k0 + kBc, sq.len, tid);
      cp_async_commit();
    }
    // mask, online softmax in the log2 domain: x = s * scale * log2(e)
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + n * 8 + 2 * t + (e & 1);
        const int r = e >> 1;
        const bool ok = key < sq.len && (!CAUSAL || key <= row[r]);
        s[n][e] = ok ? s[n][e] * p.scale_log2 : -INFINITY;
        mx[r] = fmaxf(mx[r], s[n][e]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullMask, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet stays at 0
      alpha[r] = exp2f(m[r] - m_use);
      m[r] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) {
        s[n][2 * r] = exp2f(s[n][2 * r] - m_use);
        s[n][2 * r + 1] = exp2f(s[n][2 * r + 1] - m_use);
        sum += s[n][2 * r] + s[n][2 * r + 1];
      }
      l[r] = l[r] * alpha[r] + sum;  // per-thread partial; the quad is reduced at the end
    }
#pragma unroll
    for (int n = 0; n < DH / 8; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    if (j + 1 < n_tiles) {
      cp_async_wait<1>();  // V_j landed; K_{j+1} may be in flight
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    gemm_pz<DH, kBc>(o, s, sV, lane);
    __syncthreads();  // every warp is done with V_j
    if (j + 1 < n_tiles) {
      load_tile_async<kBc, DH, kThreads>(sV, vb, p.sv.token, k0 + kBc, sq.len, tid);
      cp_async_commit();
    }
  }

  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFullMask, l[r], 1);
    l[r] += __shfl_xor_sync(kFullMask, l[r], 2);
    inv[r] = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
  }
  if (p.lse != nullptr && t == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (row[r] < sq.len) p.lse[stat_index(p, b, sq.start, row[r], h)] = (m[r] + log2f(l[r])) * kLn2;
    }
  }
  __syncthreads();
  store_tile<DH>(o, inv[0], inv[1], sQ, head_base(p.o, p.so, p, b, sq.start, h, DH), p.so.token, q0, sq.len, warp, lane,
                 tid);
}

// ---- backward -----------------------------------------------------------------------------------------------
// One warp per (token, head): D = sum_d dout * out in FP32.
template <int DH>
__global__ void flash_bwd_dsum_kernel(KernelArgs p) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (w >= p.T * p.H) return;
  const int64_t tok = w / p.H;
  const int h = static_cast<int>(w % p.H);
  int64_t off_o, off_do, idx;
  if (p.cu) {
    off_o = tok * p.so.token;
    off_do = tok * p.sdo.token;
    idx = tok * p.H + h;
  } else {
    const int64_t bb = tok / p.S, i = tok % p.S;
    off_o = bb * p.so.batch + i * p.so.token;
    off_do = bb * p.sdo.batch + i * p.sdo.token;
    idx = (bb * p.H + h) * p.S + i;
  }
  const bf16* o = p.o + off_o + static_cast<int64_t>(h) * DH;
  const bf16* d = p.dout + off_do + static_cast<int64_t>(h) * DH;
  float acc = 0.0f;
  for (int c = lane; c < DH; c += 32) acc += __bfloat162float(o[c]) * __bfloat162float(d[c]);
  acc = dev::warp_sum(acc);
  if (lane == 0) p.dsum[idx] = acc;
}

template <int DH, bool CAUSAL>
__global__ void __launch_bounds__(kThreads) flash_bwd_dq_kernel(KernelArgs p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sdO = sQ + tile_elems<DH>();
  bf16* sK = sdO + tile_elems<DH>();
  bf16* sV = sK + tile_elems<DH>();
  const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const Seq sq = seq_of(p, b);
  const int q0 = qt * kBr;
  if (q0 >= sq.len) return;
  const int hk = h / p.g;
  const bf16* kb = head_base(p.k, p.sk, p, b, sq.start, hk, DH);
  const bf16* vb = head_base(p.v, p.sv, p, b, sq.start, hk, DH);
  load_tile_async<kBr, DH, kThreads>(sQ, head_base(p.q, p.sq, p, b, sq.start, h, DH), p.sq.token, q0, sq.len, tid);
  load_tile_async<kBr, DH, kThreads>(sdO, head_base(p.dout, p.sdo, p, b, sq.start, h, DH), p.sdo.token, q0, sq.len,
                                     tid);
  cp_async_commit();
  const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  float lse2[2], dsum[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool valid = row[r] < sq.len;
    lse2[r] = valid ? p.lse[stat_index(p, b, sq.start, row[r], h)] * kLog2e : INFINITY;
    dsum[r] = valid ? p.dsum[stat_index(p, b, sq.start, row[r], h)] : 0.0f;
  }
  float dq[DH / 8][4];
#pragma unroll
  for (int n = 0; n < DH / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
  const int kv_len = CAUSAL ? min(sq.len, q0 + kBr) : sq.len;
  for (int k0 = 0; k0 < kv_len; k0 += kBc) {
    load_tile_async<kBc, DH, kThreads>(sK, kb, p.sk.token, k0, sq.len, tid);
    load_tile_async<kBc, DH, kThreads>(sV, vb, p.sv.token, k0, sq.len, tid);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    float s[kBc / 8][4], dp[kBc / 8][4];
    gemm_abt<DH, kBc>(s, sQ, warp * 16, sK, lane);
    gemm_abt<DH, kBc>(dp, sdO, warp * 16, sV, lane);
#pragma unroll
    for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + n * 8 + 2 * t + (e & 1);
        const int r = e >> 1;
        const bool ok = key < sq.len && (!CAUSAL || key <= row[r]);
        const float pr = ok ? exp2f(s[n][e] * p.scale_log2 - lse2[r]) : 0.0f;
        s[n][e] = pr * (dp[n][e] - dsum[r]);  // dS
      }
    }
    gemm_pz<DH, kBc>(dq, s, sK, lane);
    __syncthreads();  // K / V tiles are overwritten next
  }
  __syncthreads();
  store_tile<DH>(dq, p.scale, p.scale, sQ, head_base(p.dq, p.sdq, p, b, sq.start, h, DH), p.sdq.token, q0, sq.len, warp,
                 lane, tid);
}

// MODE_DK = false: dV = sum_h sum_i P^T dout ; true: dK = scale sum_h sum_i dS^T q.
template <int DH, bool CAUSAL, bool MODE_DK>
__global__ void __launch_bounds__(kThreads) flash_bwd_dkdv_kernel(KernelArgs p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);
  bf16* sV = sK + tile_elems<DH>();  // used in dk mode only
  bf16* sQ = sV + tile_elems<DH>();
  bf16* sdO = sQ + tile_elems<DH>();
  float* sLse2 = reinterpret_cast<float*>(sdO + tile_elems<DH>());
  float* sDsum = sLse2 + kBr;
  const int kt = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const Seq sq = seq_of(p, b);
  const int k0 = kt * kBc;
  if (k0 >= sq.len) return;
  load_tile_async<kBc, DH, kThreads>(sK, head_base(p.k, p.sk, p, b, sq.start, hk, DH), p.sk.token, k0, sq.len, tid);
  if (MODE_DK) {
    load_tile_async<kBc, DH, kThreads>(sV, head_base(p.v, p.sv, p, b, sq.start, hk, DH), p.sv.token, k0, sq.len, tid);
  }
  cp_async_commit();
  const int key[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
  float acc[DH / 8][4];
#pragma unroll
  for (int n = 0; n < DH / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  const int q_first = CAUSAL ? (k0 / kBr) * kBr : 0;
  for (int h = hk * p.g; h < (hk + 1) * p.g; ++h) {
    const bf16* qb = head_base(p.q, p.sq, p, b, sq.start, h, DH);
    const bf16* dob = head_base(p.dout, p.sdo, p, b, sq.start, h, DH);
    for (int q0 = q_first; q0 < sq.len; q0 += kBr) {
      load_tile_async<kBr, DH, kThreads>(sQ, qb, p.sq.token, q0, sq.len, tid);
      load_tile_async<kBr, DH, kThreads>(sdO, dob, p.sdo.token, q0, sq.len, tid);
      cp_async_commit();
      for (int i = tid; i < kBr; i += kThreads) {
        const bool valid = q0 + i < sq.len;
        sLse2[i] = valid ? p.lse[stat_index(p, b, sq.start, q0 + i, h)] * kLog2e : INFINITY;
        sDsum[i] = valid && MODE_DK ? p.dsum[stat_index(p, b, sq.start, q0 + i, h)] : 0.0f;
      }
      cp_async_wait<0>();
      __syncthreads();
      float st[kBr / 8][4];  // S^T: this warp's 16 keys x the 64 queries
      gemm_abt<DH, kBr>(st, sK, warp * 16, sQ, lane);
      float dpt[kBr / 8][4];
      if (MODE_DK) gemm_abt<DH, kBr>(dpt, sV, warp * 16, sdO, lane);
#pragma unroll
      for (int n = 0; n < kBr / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qi = n * 8 + 2 * t + (e & 1);
          const int kr = key[e >> 1];
          const bool ok = kr < sq.len && q0 + qi < sq.len && (!CAUSAL || kr <= q0 + qi);
          const float pr = ok ? exp2f(st[n][e] * p.scale_log2 - sLse2[qi]) : 0.0f;
          st[n][e] = MODE_DK ? pr * (dpt[n][e] - sDsum[qi]) : pr;
        }
      }
      gemm_pz<DH, kBr>(acc, st, MODE_DK ? sQ : sdO, lane);
      __syncthreads();  // sQ / sdO / stats are overwritten next
    }
  }
  const float f = MODE_DK ? p.scale : 1.0f;
  __syncthreads();
  if (MODE_DK) {
    store_tile<DH>(acc, f, f, sQ, head_base(p.dk, p.sdk, p, b, sq.start, hk, DH), p.sdk.token, k0, sq.len, warp, lane,
                   tid);
  } else {
    store_tile<DH>(acc, f, f, sQ, head_base(p.dv, p.sdv, p, b, sq.start, hk, DH), p.sdv.token, k0, sq.len, warp, lane,
                   tid);
  }
}

// ---- host side ---------------------------------------------------------------------------------------------------
KernelArgs kernel_args(const attn_detail::FlashArgs& a) {
  KernelArgs k{};
  k.q = static_cast<const bf16*>(a.q);
  k.k = static_cast<const bf16*>(a.k);
  k.v = static_cast<const bf16*>(a.v);
  k.o = static_cast<bf16*>(a.o);
  k.lse = a.lse;
  k.dout = static_cast<const bf16*>(a.dout);
  k.dq = static_cast<bf16*>(a.dq);
  k.dk = static_cast<bf16*>(a.dk);
  k.dv = static_cast<bf16*>(a.dv);
  k.cu = a.cu_seqlens;
  k.sq = a.sq;
  k.sk = a.sk;
  k.sv = a.sv;
  k.so = a.so;
  k.sdo = a.sdo;
  k.sdq = a.sdq;
  k.sdk = a.sdk;
  k.sdv = a.sdv;
  k.B = static_cast<int>(a.d.B);
  k.S = static_cast<int>(a.d.S);
  k.H = static_cast<int>(a.d.H);
  k.Hkv = static_cast<int>(a.d.Hkv);
  k.g = static_cast<int>(a.d.group());
  k.T = a.d.T;
  k.scale = a.scale;
  k.scale_log2 = a.scale * kLog2e;
  return k;
}

void check_flash_args(const attn_detail::FlashArgs& a, bool backward, const char* what) {
  const int64_t dh = a.d.Dh;
  TG_CHECK(dh == 16 || dh == 32 || dh == 64 || dh == 128 || dh == 256, what,
           ": the flash kernels take head dims 16, 32, 64, 128, 256; got ", dh);
  TG_CHECK(a.d.S <= (1 << 30) && a.d.B <= 65535 && a.d.H <= 65535, what, ": shape too large for the grid");
  attn_detail::check_aligned_operands(a, backward, what);
}

template <typename Kernel>
void set_smem(Kernel kernel, std::size_t bytes) {
  // Idempotent; cheap enough to repeat per launch (no allocation), keeps the per-instantiation state out.
  TG_CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <int DH, bool CAUSAL>
void fwd_launch(const KernelArgs& k, cudaStream_t s) {
  const std::size_t smem = 3 * tile_elems<DH>() * sizeof(bf16);
  set_smem(flash_fwd_kernel<DH, CAUSAL>, smem);
  const dim3 grid((k.S + kBr - 1) / kBr, k.H, k.B);
  flash_fwd_kernel<DH, CAUSAL><<<grid, kThreads, smem, s>>>(k);
  TG_CHECK_LAUNCH("flash_fwd_kernel");
}

template <int DH, bool CAUSAL>
void bwd_launch(const KernelArgs& k, cudaStream_t s) {
  const int64_t rows = k.T * k.H;
  flash_bwd_dsum_kernel<DH><<<static_cast<unsigned>((rows * 32 + 255) / 256), 256, 0, s>>>(k);
  TG_CHECK_LAUNCH("flash_bwd_dsum_kernel");
  const std::size_t smem_dq = 4 * tile_elems<DH>() * sizeof(bf16);
  set_smem(flash_bwd_dq_kernel<DH, CAUSAL>, smem_dq);
  flash_bwd_dq_kernel<DH, CAUSAL><<<dim3((k.S + kBr - 1) / kBr, k.H, k.B), kThreads, smem_dq, s>>>(k);
  TG_CHECK_LAUNCH("flash_bwd_dq_kernel");
  const std::size_t smem_kv = 4 * tile_elems<DH>() * sizeof(bf16) + 2 * kBr * sizeof(float);
  const dim3 grid_kv((k.S + kBc - 1) / kBc, k.Hkv, k.B);
  set_smem(flash_bwd_dkdv_kernel<DH, CAUSAL, false>, smem_kv);
  flash_bwd_dkdv_kernel<DH, CAUSAL, false><<<grid_kv, kThreads, smem_kv, s>>>(k);
  TG_CHECK_LAUNCH("flash_bwd_dkdv_kernel(dv)");
  set_smem(flash_bwd_dkdv_kernel<DH, CAUSAL, true>, smem_kv);
  flash_bwd_dkdv_kernel<DH, CAUSAL, true><<<grid_kv, kThreads, smem_kv, s>>>(k);
  TG_CHECK_LAUNCH("flash_bwd_dkdv_kernel(dk)");
}

template <bool CAUSAL, typename F>
void by_head_dim(int64_t dh, F&& f) {
  switch (dh) {
    case 16:
      f.template operator()<16, CAUSAL>();
      break;
    case 32:
      f.template operator()<32, CAUSAL>();
      break;
    case 64:
      f.template operator()<64, CAUSAL>();
      break;
    case 128:
      f.template operator()<128, CAUSAL>();
      break;
    case 256:
      f.template operator()<256, CAUSAL>();
      break;
    default:
      TG_FAIL("flash attention: unsupported head dim ", dh);
  }
}

}  // namespace

namespace attn_detail {

void flash_fwd(const FlashArgs& a, Stream stream) {
  TG_NVTX_FN();
  check_flash_args(a, false, "attention_fwd(cuda, flash)");
  const KernelArgs k = kernel_args(a);
  const cudaStream_t s = cuda_stream(stream);
  auto launch = [&]<int DH, bool CAUSAL>() { fwd_launch<DH, CAUSAL>(k, s); };
  if (a.causal) {
    by_head_dim<true>(a.d.Dh, launch);
  } else {
    by_head_dim<false>(a.d.Dh, launch);
  }
}

std::size_t flash_bwd_workspace_bytes(const attn::Dims& d) {
  return align_up(static_cast<std::size_t>(d.T * d.H) * sizeof(float));
}

void flash_bwd(const FlashArgs& a, void* workspace, Stream stream) {
  TG_NVTX_FN();
  check_flash_args(a, true, "attention_bwd(cuda, flash)");
  KernelArgs k = kernel_args(a);
  k.dsum = static_cast<float*>(workspace);
  const cudaStream_t s = cuda_stream(stream);
  auto launch = [&]<int DH, bool CAUSAL>() { bwd_launch<DH, CAUSAL>(k, s); };
  if (a.causal) {
    by_head_dim<true>(a.d.Dh, launch);
  } else {
    by_head_dim<false>(a.d.Dh, launch);
  }
}

}  // namespace attn_detail

}  // namespace tg::kernels::cuda
