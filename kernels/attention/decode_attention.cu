// Decode attention over a KV cache (flash-decoding) and the KV-cache append, CUDA.
//
// decode_split_kernel: one block per (sequence, group of G query heads sharing one kv head, split of the
// sequence). The G heads are processed together so every K / V row is read once per block:
//   0. K and V tiles (32 keys for head dims >= 64) stream through shared memory with cp.async, double-buffered:
//      the next tile is in flight while the current one is used, and several blocks share an SM.
//   1. Q.K: 8 lanes share one key row (8 consecutive 16-byte chunks = 128 contiguous bytes per load),
//      the dot products of the G heads are reduced over those 8 lanes with shuffles -> scores in smem.
//   2. online softmax of the tile in every warp (running max m, sum l in registers, the same bits everywhere).
//   3. P.V: a warp owns whole V rows (one 16-byte chunk per lane), each thread accumulates G x 8 outputs.
// Two barriers per tile. With one split the block writes the output; with up to 16 (8 where the device refuses the
// non-portable cluster size) the splits of a (sequence, group) are one thread-block cluster and merge through
// distributed shared memory in the same kernel; with more, the partials (unnormalised output, m, l) go to the
// workspace and decode_combine_kernel merges them. Every reduction has a fixed order: same inputs, same bits, and
// the two merges compute the same bits from the same partials.
//
// The plan (make_plan): at batch 1 one head per block and one- or two-tile splits in a cluster (latency-bound: a
// few hundred KB of K / V per layer); at batch 64 the whole group per block and one split (HBM-bound: K and V
// streamed once with 16-byte cp.async).
// FP8 E4M3 caches: the K scale is folded into the score multiplier, the V scale into the final output.
// Optional FP8 output (DecodeOptions::fp8_out): whichever kernel writes the final output (the split kernel with one
// split or the cluster merge, else the combine kernel) also writes the E4M3 code of each BF16 output element as
// kernels::quantize's per-tensor cast would, max-reduces the block's |output| into amax (one atomic per block) and,
// in its grid's first block, scale_inv. A runtime branch on the pointer, not a template parameter.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/attention/attention_cuda.h"
#include "kernels/attention/flash_common.cuh"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/launch/device_info.h"
#include "kernels/launch/launch.cuh"
#include "kernels/recipe/scale_math.h"

namespace tg::kernels::cuda {

namespace {

using dev::bf16_t;
using dev::e4m3_t;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;

// ---- 8 consecutive elements ("a chunk") of a BF16 or E4M3 row ------------------------------------------
template <typename T>
struct Chunk;
template <>
struct Chunk<bf16_t> {
  using Raw = uint4;  // 16 bytes
  static __device__ __forceinline__ void to_float(const Raw& r, float (&f)[8]) {
    const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&r);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 x = __bfloat1622float2(p[i]);
      f[2 * i] = x.x;
      f[2 * i + 1] = x.y;
    }
  }
};
template <>
struct Chunk<e4m3_t> {
  using Raw = uint2;  // 8 bytes
  static __device__ __forceinline__ void to_float(const Raw& r, float (&f)[8]) {
    const __nv_fp8x2_storage_t* p = reinterpret_cast<const __nv_fp8x2_storage_t*>(&r);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __half2 h(__nv_cvt_fp8x2_to_halfraw2(p[i], __NV_E4M3));
      const float2 x = __half22float2(h);
      f[2 * i] = x.x;
      f[2 * i + 1] = x.y;
    }
  }
};

template <typename T>
__device__ __forceinline__ typename Chunk<T>::Raw load_chunk(const T* p) {
  return *reinterpret_cast<const typename Chunk<T>::Raw*>(p);
}

// Geometry of the kernel for head dim DH (shared by host and device).
template <int DH>
struct Geometry {
  static constexpr int kChunks = DH / 8;                                // 8-element chunks per row
  static constexpr int kLpr = kChunks < 8 ? kChunks : 8;                // Q.K: lanes per key row
  static constexpr int kCpl = kChunks / kLpr;                           // Q.K: chunks per lane
  static constexpr int kKpi = 32 / kLpr;                                // Q.K: keys per warp per step
  // Keys per tile: one Q.K step of all warps (32 for DH >= 64). Small tiles keep a block's shared memory at
  // 4 x 32 x DH x 2 bytes (64 KiB for BF16 DH 256: 2-3 resident blocks per SM, each with a tile in flight, where
  // 64-key tiles allowed one), shorten a split's critical path and let short contexts split over more SMs.
  static constexpr int kTile = kWarps * kKpi;
  static constexpr int kQkSteps = kTile / (kWarps * kKpi);
  static constexpr int kLpk = kChunks;    // P.V: lanes per key row (one chunk each)
  static constexpr int kKpw = 32 / kLpk;  // P.V: keys per warp per step
  static constexpr int kPvSteps = kTile / (kWarps * kKpw);
  static_assert(DH % 8 == 0 && DH >= 16 && DH <= 256 && (kChunks & (kChunks - 1)) == 0, "unsupported head dim");
  static_assert(kQkSteps >= 1 && kTile % (kWarps * kKpi) == 0, "Q.K: whole steps per tile");
  static_assert(kPvSteps >= 1 && kTile % (kWarps * kKpw) == 0, "P.V: whole steps per tile");
};

struct DecodeParams {
  const bf16_t* q;  // [B, H, DH]
  const void* k;    // [B, max_seq, Hkv, DH]
  const void* v;
  const float* k_scale;  // null for BF16
  const float* v_scale;
  const int32_t* seqlens;  // [B]
  bf16_t* out;             // [B, H, DH] or null (fp8_out only)
  uint8_t* fp8_out;        // [B, H, DH] E4M3 copy of out (DecodeOptions::fp8_out) or null
  const float* fp8_scale;  // its per-tensor scale [1] (read), scale_inv [1] (written), amax [1] (max-reduced) or null
  float* fp8_scale_inv;
  float* fp8_amax;
  float* o_part;           // [B, H, splits, DH] (splits > 1 without the cluster merge)
  float2* ml;              // [B, H, splits] (m, l)
  int H, Hkv, g, max_seq;
  int num_splits, chunk;  // chunk: the most keys per split (a multiple of the tile), for the longest sequence
  bool cluster_merge;     // the splits of a (sequence, group) form one thread-block cluster and merge in it
  bool per_head_scale;
  float scale;
};

// Bytes of one K or V tile in shared memory.
template <int DH, typename T>
constexpr int tile_bytes() {
  return Geometry<DH>::kTile * DH * static_cast<int>(sizeof(T));
}
// Warps whose G x DH FP32 partial outputs fit at once in the K / V tiles' shared memory, where the epilogue sums
// them (8 everywhere but E4M3 with 8 heads per block at DH >= 64: 4, two rounds).
template <int DH, int G, typename T>
constexpr int red_warps() {
  constexpr int fit = 4 * tile_bytes<DH, T>() / (G * DH * 4);
  return fit >= kWarps ? kWarps : fit >= 4 ? 4 : fit >= 2 ? 2 : 1;
}
// Dynamic shared memory of the split kernel: K and V tiles, double-buffered (reused by the epilogue's sum).
template <int DH, typename T>
constexpr int split_smem_bytes() {
  return 4 * tile_bytes<DH, T>();
}

// Issues the cp.async copies of keys [t0, t0 + kTile) of one K or V head into a tile (rows >= end zero-filled).
// A compile-time trip count (unrolled): the runtime-bounded loop cost ~100 integer / address / branch instructions
// around its 4 copies per tile, 28% of the E4M3 kernel's issue slots (session 8's static SASS count; that kernel is
// issue-bound at 64-69% of HBM where the BF16 one reaches 83-87%).
template <int DH, typename T>
__device__ __forceinline__ void load_kv_tile_async(unsigned char* tile, const T* base, int64_t row_stride, int t0,
                                                   int end, int tid) {
  constexpr int kRowBytes = DH * static_cast<int>(sizeof(T));
  constexpr int kChunksPerRow = kRowBytes / 16;
  constexpr int kTotal = Geometry<DH>::kTile * kChunksPerRow;
  constexpr int kIters = (kTotal + kThreads - 1) / kThreads;
  const unsigned char* src0 = reinterpret_cast<const unsigned char*>(base + t0 * row_stride);
#pragma unroll
  for (int k = 0; k < kIters; ++k) {
    const int i = tid + k * kThreads;
    if (kTotal % kThreads != 0 && i >= kTotal) break;
    const int r = i / kChunksPerRow, c = i % kChunksPerRow;
    const bool valid = t0 + r < end;
    const unsigned char* src = valid ? src0 + r * row_stride * static_cast<int64_t>(sizeof(T)) + c * 16
                                     : reinterpret_cast<const unsigned char*>(base);
    flash::cp_async_16(tile + r * kRowBytes + c * 16, src, valid);
  }
}

// One split's contribution to a merged output: e = e^(m_s - M) (0 for an empty split), L += l_s e, o += o_s e.
// The single definition of the merge arithmetic, used in the same order s = 0, 1, ... by the combine kernel and by
// the cluster merge (explicit fmaf: the compiler's contraction choices cannot change the bits).
__device__ __forceinline__ void merge_one(float2 ml, float o_s, float M, float& L, float& o) {
  const float e = expf(ml.x - M);
  L = fmaf(ml.y, e, L);
  if (ml.y > 0.0f) o = fmaf(o_s, e, o);
}

// out[bh, d] of the merged splits: sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M) * v_scale, s = 0, 1, ... in order.
// The partials were written by the split kernel's blocks: read through L2 (ld.global.cg). Each group of 8 splits'
// (m, l) and outputs is loaded before any of it is used, so the L2 round trips overlap instead of forming a chain
// (the combine took 7.3 us for 5 splits in session 5's profile); the arithmetic and its order are those of the plain
// loop.
__device__ __forceinline__ float merge_splits(const float* o_part, const float2* mlb, int64_t bh, int splits, int dh,
                                              int d, float vs) {
  constexpr int kBatch = 8;
  float M = -INFINITY;
#pragma unroll 8
  for (int s = 0; s < splits; ++s) M = fmaxf(M, __ldcg(mlb + s).x);
  if (M == -INFINITY) return 0.0f;
  float L = 0.0f, o = 0.0f;
  for (int s0 = 0; s0 < splits; s0 += kBatch) {
    float2 ml[kBatch];
    float ov[kBatch];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {  // every split's partial exists (the split kernel writes all of them)
      const int s = min(s0 + i, splits - 1);
      ml[i] = __ldcg(mlb + s);
      ov[i] = __ldcg(o_part + (bh * splits + s) * dh + d);
    }
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      if (s0 + i < splits) merge_one(ml[i], ov[i], M, L, o);
    }
  }
  return L > 0.0f ? o / L * vs : 0.0f;
}

// ---- the final write: BF16 output and its optional FP8 copy ---------------------------------------------------------
// Output element i = v: BF16 RNE into out (when set) and, when q is set, the E4M3 code of that BF16 value under the
// per-tensor scale s exactly as kernels::quantize's cast_kernel converts it (fl32(x * s) with __fmul_rn, then
// cvt.rn.satfinite through dev::from_float). Returns |bf16(v)| as an amax key (float bits with the sign cleared,
// NaN above inf, as quantize's abs_key), 0 without q.
__device__ __forceinline__ uint32_t write_out(bf16_t* out, uint8_t* q, float s, int64_t i, float v) {
  const bf16_t o = __float2bfloat16_rn(v);
  if (out != nullptr) out[i] = o;
  if (q == nullptr) return 0u;
  const float x = __bfloat162float(o);
  q[i] = dev::from_float<e4m3_t>(__fmul_rn(x, s)).bits;
  return __float_as_uint(x) & 0x7FFFFFFFu;
}

// The block's part of the FP8 copy's metadata, as kernels::quantize: the block max of the threads' keys max-reduced
// into *amax (when set) with one integer atomicMax on the float bits (a NaN key becomes the canonical NaN 0x7FFFFFFF
// and wins; a larger old value is kept), and scale_inv = 1 / s (scale_reciprocal, RN) from the grid's first block.
// Call from every thread of the block (it synchronises when amax is set); scratch holds >= blockDim.x / 32 words and
// may be in use by the caller until the call.
__device__ __forceinline__ void finish_fp8(uint32_t key, float* amax, float* scale_inv, float s, bool first_block,
                                           uint32_t* scratch) {
  if (amax != nullptr) {  // uniform
    key = __reduce_max_sync(kFull, key);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = key;
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t m = 0;
      for (unsigned w = 0; w < blockDim.x / 32; ++w) m = max(m, scratch[w]);
      atomicMax(reinterpret_cast<int*>(amax), static_cast<int>(m > 0x7F800000u ? 0x7FFFFFFFu : m));
    }
  }
  if (first_block && threadIdx.x == 0) *scale_inv = scale_reciprocal(s);
}

// ---- distributed shared memory of a thread-block cluster (sm_90), 32-bit shared::cluster addresses -------------
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// The address of the same shared-memory location in block `rank` of the cluster.
__device__ __forceinline__ uint32_t cluster_map(uint32_t addr, int rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(addr), "r"(rank));
  return r;
}
__device__ __forceinline__ float ld_cluster_f32(uint32_t addr) {
  float v;
  asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ float2 ld_cluster_f32x2(uint32_t addr) {
  float2 v;
  asm volatile("ld.shared::cluster.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(addr) : "memory");
  return v;
}
// Barrier of every thread of the cluster, with release / acquire semantics for shared::cluster memory: the writes
// before it are visible to every block of the cluster after it.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

// v[gi] for a runtime gi without dynamic register indexing (which would put the array in local memory).
template <int G>
__device__ __forceinline__ float select_head(const float (&v)[G], int gi) {
  float r = v[0];
#pragma unroll
  for (int i = 1; i < G; ++i) r = gi == i ? v[i] : r;
  return r;
}

// ---- split kernel ----------------------------------------------------------------------------------------------------
// Latency is what matters at batch 1 (a few hundred KB of K / V per layer: ~0.1 us of HBM time), so the per-tile
// critical path is kept short:
//  * two barriers per tile (was four): the top one both publishes the landed tile and retires the previous tile's
//    P.V reads (so the next tile's V goes into the other stage right after it), the second publishes the scores and
//    retires this tile's K reads (so the K of the tile after next goes into this stage right after it): K runs two
//    tiles ahead, V one, and a block keeps ~1.5 tiles in flight through the loop (batch 64 is HBM-bound). There is no separate softmax pass: after the second barrier EVERY warp computes the tile's running
//    max / sum of all G heads from the shared scores (one score per lane for 32-key tiles, two xor-butterfly
//    reductions) and keeps m, l in registers; the butterfly gives every lane, and every warp, the same bits because
//    the inputs and the operations are the same. P.V recomputes p = e^(s - m) per key from the same inputs: the
//    same bits as the sum's terms.
//  * q in registers when it fits (G x 8 x chunks-per-lane <= 32 floats: G = 1 at DH 256, the batch-1 default; BF16
//    caches: E4M3 keeps 4 blocks per SM), else FP32 in shared memory as before; loaded with 16-byte loads that overlap the first tile's cp.async.
//  * the epilogue sums the 8 warps' partial outputs through shared memory (the K / V tiles' space) in one round
//    (two barriers; was eight serial warp rounds), every thread owning G x DH / 256 outputs.
//  * several splits: the blocks of one (sequence, group) form a thread-block cluster (<= 16) and merge through
//    distributed shared memory (two cluster barriers, no global partials, no second kernel, no counters to reset);
//    each block merges a slice of the outputs in the fixed order s = 0..S-1, so the bits do not depend on which
//    block merges what. Beyond the cluster limit the partials go to the workspace and decode_combine_kernel.
// Blocks per SM the register allocation must allow, so that the batch-64 HBM-bound case keeps as many tiles in
// flight as before: up to 2 heads per block 3 for BF16 (what its 64 KB of DH-256 tiles allow anyway) and 4 for E4M3
// (32 KB of tiles; q then stays in shared memory), 2 for 4 heads, 1 for 8 (their accumulators).
template <int G, typename T>
constexpr int min_blocks() {
  return G <= 2 ? (sizeof(T) == 1 ? 4 : 3) : G == 4 ? 2 : 1;
}

template <int DH, int G, typename T>
__global__ void __launch_bounds__(kThreads, min_blocks<G, T>()) decode_split_kernel(DecodeParams p) {
  dev::pdl_enter();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  using Geo = Geometry<DH>;
  // q in registers: the Q.K chunks of this lane, at most 32 floats, where the register budget has room
  constexpr bool kQReg = G * Geo::kCpl * 8 <= 32 && min_blocks<G, T>() <= 3;
  constexpr int kQsRows = kQReg ? 1 : G;  // q_s is unused (1 x 1) when q lives in registers
  constexpr int kQsCols = kQReg ? 1 : DH;
  extern __shared__ __align__(16) unsigned char kv_smem[];  // [2 stages][K, V][kTile][DH] of T
  __shared__ __align__(16) float q_s[kQsRows][kQsCols];
  __shared__ float s_s[G][Geo::kTile];  // the tile's scaled scores (-inf beyond the split's end)
  __shared__ __align__(16) float acc_s[G][DH];  // the block's partial output (cluster merge only)
  __shared__ float2 ml_s[G];                    // its (m, l) per head (cluster merge only)

  const int split = blockIdx.x;
  const int groups_per_kv = p.g / G;
  const int hk = blockIdx.y / groups_per_kv;
  const int h0 = hk * p.g + (blockIdx.y % groups_per_kv) * G;  // first query head of the block
  const int b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  const int len = max(0, min(p.seqlens[b], p.max_seq));
  // The plan's chunk is sized for the longest possible sequence (max_seq or the hint). This sequence's own
  // length is spread over all the splits instead (whole tiles each, never more than the plan's chunk), so a
  // decode step captured once in a CUDA graph for max_seq keeps a short context on many SMs. A pure function of
  // (len, plan): same inputs, same bits.
  const int per_split = (len + p.num_splits - 1) / p.num_splits;
  const int chunk = min(p.chunk, max(Geo::kTile, (per_split + Geo::kTile - 1) / Geo::kTile * Geo::kTile));
  const int begin = split * chunk;
  // The last split runs to the sequence end, so a max_seqlen_hint below a length costs time, never keys.
  const int end = split == p.num_splits - 1 ? len : min(len, begin + chunk);

  const int64_t row_stride = static_cast<int64_t>(p.Hkv) * DH;
  const int64_t seq_base = (static_cast<int64_t>(b) * p.max_seq * p.Hkv + hk) * DH;
  const T* kb = static_cast<const T*>(p.k) + seq_base;
  const T* vb = static_cast<const T*>(p.v) + seq_base;
  auto k_tile = [&](int stage) { return kv_smem + (2 * stage) * tile_bytes<DH, T>(); };
  auto v_tile = [&](int stage) { return kv_smem + (2 * stage + 1) * tile_bytes<DH, T>(); };
  // Copies run ahead of the tile loop: K two tiles ahead, V one (see the loop). Commit groups in issue order:
  // {K_0, V_0}, {K_1}, then per tile j: {V_(j+1)} after barrier 1, {K_(j+2)} after barrier 2 (empty groups past the
  // end), so at the top of tile j every group but the newest ({K_(j+1)}) holds what tile j reads.
  if (begin < end) {  // the first tile (and the second one's K) in flight while q is loaded
    load_kv_tile_async<DH, T>(k_tile(0), kb, row_stride, begin, end, tid);
    load_kv_tile_async<DH, T>(v_tile(0), vb, row_stride, begin, end, tid);
  }
  flash::cp_async_commit();
  if (begin + Geo::kTile < end) load_kv_tile_async<DH, T>(k_tile(1), kb, row_stride, begin + Geo::kTile, end, tid);
  flash::cp_async_commit();

  const bf16_t* qb = p.q + (static_cast<int64_t>(b) * p.H + h0) * DH;
  // q in registers: this lane's Q.K chunks c = lane % kLpr + kLpr j (fixed for the whole split).
  float qr[kQReg ? G : 1][kQReg ? Geo::kCpl : 1][8];
  if constexpr (kQReg) {
#pragma unroll
    for (int gi = 0; gi < G; ++gi)
#pragma unroll
      for (int j = 0; j < Geo::kCpl; ++j)
        Chunk<bf16_t>::to_float(load_chunk(qb + gi * DH + (lane % Geo::kLpr + Geo::kLpr * j) * 8), qr[gi][j]);
  } else {
    for (int i = tid; i < G * DH / 8; i += kThreads) {
      float f[8];
      Chunk<bf16_t>::to_float(load_chunk(qb + i * 8), f);
#pragma unroll
      for (int e = 0; e < 8; ++e) q_s[i * 8 / DH][i * 8 % DH + e] = f[e];
    }
  }

  const int scale_idx = p.per_head_scale ? hk : 0;
  const float s_mult = p.scale * (p.k_scale ? p.k_scale[scale_idx] : 1.0f);

  float acc[G][8];
  float m_run[G], l_run[G];  // running max / sum per head: the same bits in every thread of the block
#pragma unroll
  for (int gi = 0; gi < G; ++gi) {
    m_run[gi] = -INFINITY;
    l_run[gi] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[gi][e] = 0.0f;
  }

  int stage = 0;
  for (int t0 = begin; t0 < end; t0 += Geo::kTile, stage ^= 1) {
    flash::cp_async_wait<1>();  // this thread's copies of this tile have landed ({K_(j+1)} may still be in flight)
    // Barrier 1: this tile (and, on the first one, q_s) is visible; every warp is done with the previous tile's P.V,
    // so the other V stage and s_s may be rewritten.
    __syncthreads();
    // V of the next tile into the other stage. (Session 6 first issued the next tile's K and V only here, after this
    // tile had fully landed: one tile in flight per block instead of the earlier kernel's two, and gemma-7b B64
    // BF16 decode attention, HBM-bound, went 184 -> 210 us at ctx 512. K now goes a tile further ahead, below.)
    if (t0 + Geo::kTile < end) load_kv_tile_async<DH, T>(v_tile(stage ^ 1), vb, row_stride, t0 + Geo::kTile, end, tid);
    flash::cp_async_commit();
    const T* sk = reinterpret_cast<const T*>(k_tile(stage));
    const T* sv = reinterpret_cast<const T*>(v_tile(stage));
    // ---- 1. scores of the tile
#pragma unroll
    for (int it = 0; it < Geo::kQkSteps; ++it) {
      const int key_local = it * kWarps * Geo::kKpi + warp * Geo::kKpi + lane / Geo::kLpr;
      float part[G];
#pragma unroll
      for (int gi = 0; gi < G; ++gi) part[gi] = 0.0f;
#pragma unroll
      for (int j = 0; j < Geo::kCpl; ++j) {
        const int c = lane % Geo::kLpr + Geo::kLpr * j;
        float kf[8];
        Chunk<T>::to_float(load_chunk(sk + key_local * DH + c * 8), kf);
#pragma unroll
        for (int gi = 0; gi < G; ++gi) {
          if constexpr (kQReg) {
#pragma unroll
            for (int e = 0; e < 8; ++e) part[gi] = fmaf(qr[gi][j][e], kf[e], part[gi]);
          } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) part[gi] = fmaf(q_s[gi][c * 8 + e], kf[e], part[gi]);
          }
        }
      }
#pragma unroll
      for (int off = Geo::kLpr / 2; off > 0; off >>= 1)
#pragma unroll
        for (int gi = 0; gi < G; ++gi) part[gi] += __shfl_xor_sync(kFull, part[gi], off);
      if (lane % Geo::kLpr == 0) {
#pragma unroll
        for (int gi = 0; gi < G; ++gi) s_s[gi][key_local] = t0 + key_local < end ? part[gi] * s_mult : -INFINITY;
      }
    }
    __syncthreads();  // Barrier 2: the scores are visible; every warp is done reading this tile's K stage
    // K of the tile after next into this tile's K stage, in flight during this P.V and the next tile.
    if (t0 + 2 * Geo::kTile < end) {
      load_kv_tile_async<DH, T>(k_tile(stage), kb, row_stride, t0 + 2 * Geo::kTile, end, tid);
    }
    flash::cp_async_commit();
    // ---- 2. online softmax of the tile, in every warp (identical bits everywhere: same inputs, same operations)
    float m_new[G];
    float p_lane[G] = {};  // e^(s - m) of key `lane` (32-key tiles): the P.V factors, the sum's terms' bits
#pragma unroll
    for (int gi = 0; gi < G; ++gi) {
      float tmax = -INFINITY;
#pragma unroll
      for (int i = lane; i < Geo::kTile; i += 32) tmax = fmaxf(tmax, s_s[gi][i]);
      tmax = dev::warp_max(tmax);
      m_new[gi] = fmaxf(m_run[gi], tmax);  // finite: the tile holds at least one key < end
      float sum = 0.0f;
#pragma unroll
      for (int i = lane; i < Geo::kTile; i += 32) {
        const float e = expf(s_s[gi][i] - m_new[gi]);
        if (Geo::kTile == 32) p_lane[gi] = e;
        sum += e;
      }
      sum = dev::warp_sum(sum);
      const float alpha = expf(m_run[gi] - m_new[gi]);  // 0 on the first tile (m_run = -inf)
      l_run[gi] = l_run[gi] * alpha + sum;
      m_run[gi] = m_new[gi];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[gi][e] *= alpha;
    }
    // ---- 3. P.V of the tile: p = e^(s - m), the same bits as the sum's terms above: with 32-key tiles shuffled from
    // the lane that computed it (session 8's SASS count: 4 of the 6 expf per tile were recomputations), else recomputed
    {
      const int c = lane % Geo::kLpk;
#pragma unroll
      for (int it = 0; it < Geo::kPvSteps; ++it) {
        const int key_local = it * kWarps * Geo::kKpw + warp * Geo::kKpw + lane / Geo::kLpk;
        float vf[8];
        Chunk<T>::to_float(load_chunk(sv + key_local * DH + c * 8), vf);
#pragma unroll
        for (int gi = 0; gi < G; ++gi) {
          const float pp = Geo::kTile == 32 ? __shfl_sync(kFull, p_lane[gi], key_local)
                                            : expf(s_s[gi][key_local] - m_new[gi]);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[gi][e] = fmaf(pp, vf[e], acc[gi][e]);
        }
      }
    }
  }
  flash::cp_async_wait<0>();

  // ---- sum the per-thread partials in a fixed order: lanes sharing a chunk (shuffles), then warps 0..7 in order
  // through shared memory (the K / V stages, free once every warp is past its last tile: the first barrier below).
#pragma unroll
  for (int off = Geo::kLpk; off < 32; off <<= 1)
#pragma unroll
    for (int gi = 0; gi < G; ++gi)
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[gi][e] += __shfl_xor_sync(kFull, acc[gi][e], off);
  constexpr int kOut = G * DH;                                  // outputs of the block
  constexpr int kPer = (kOut + kThreads - 1) / kThreads;        // outputs per thread: i = tid + k kThreads
  constexpr int kRed = red_warps<DH, G, T>();                   // warps summed per round
  float* red = reinterpret_cast<float*>(kv_smem);               // [kRed][G][DH]
  float tot[kPer];
#pragma unroll
  for (int k = 0; k < kPer; ++k) tot[k] = 0.0f;
#pragma unroll
  for (int w0 = 0; w0 < kWarps; w0 += kRed) {
    __syncthreads();  // the stages (first round) or the previous round's sums are done with
    if (warp >= w0 && warp < w0 + kRed && lane < Geo::kLpk) {
#pragma unroll
      for (int gi = 0; gi < G; ++gi) {
        float4* dst = reinterpret_cast<float4*>(red + ((warp - w0) * G + gi) * DH + lane * 8);
        dst[0] = make_float4(acc[gi][0], acc[gi][1], acc[gi][2], acc[gi][3]);
        dst[1] = make_float4(acc[gi][4], acc[gi][5], acc[gi][6], acc[gi][7]);
      }
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = tid + k * kThreads;
      if (kOut % kThreads == 0 || i < kOut) {
#pragma unroll
        for (int w = 0; w < kRed; ++w) tot[k] += red[w * kOut + i];
      }
    }
  }

  const int64_t bh0 = static_cast<int64_t>(b) * p.H + h0;
  const float vs = p.v_scale ? p.v_scale[scale_idx] : 1.0f;
  // The FP8 copy (runtime branch): its scale, this thread's amax key, the scores' shared memory as the reduction's
  // scratch (free after the last tile; the cluster merge reads only acc_s / ml_s remotely).
  const float fs = p.fp8_out != nullptr ? *p.fp8_scale : 1.0f;
  uint32_t key = 0;
  uint32_t* key_scratch = reinterpret_cast<uint32_t*>(&s_s[0][0]);
  static_assert(G * Geo::kTile >= kWarps, "the FP8 amax scratch fits in s_s");
  const bool first_block = blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0;
  if (p.num_splits == 1) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = tid + k * kThreads;
      if (kOut % kThreads == 0 || i < kOut) {
        const float l = select_head<G>(l_run, i / DH);
        key = max(key, write_out(p.out, p.fp8_out, fs, bh0 * DH + i, l > 0.0f ? tot[k] / l * vs : 0.0f));
      }
    }
    if (p.fp8_out != nullptr) finish_fp8(key, p.fp8_amax, p.fp8_scale_inv, fs, first_block, key_scratch);
  } else if (p.cluster_merge) {
    // ---- merge the cluster's splits through distributed shared memory
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = tid + k * kThreads;
      if (kOut % kThreads == 0 || i < kOut) acc_s[i / DH][i % DH] = tot[k];
    }
    if (tid < G) ml_s[tid] = make_float2(select_head<G>(m_run, tid), select_head<G>(l_run, tid));
    cluster_sync();  // every block's acc_s / ml_s is written and visible to the cluster
    const int S = p.num_splits;  // == the cluster size (grid.x): this block is rank `split`
    const int per_block = (kOut + S - 1) / S;
    const int lo = split * per_block, hi = min(kOut, lo + per_block);
    const uint32_t acc_addr = smem_u32(&acc_s[0][0]), ml_addr = smem_u32(&ml_s[0]);
    for (int i = lo + tid; i < hi; i += kThreads) {
      const int gi = i / DH;
      float M = -INFINITY, L = 0.0f, o = 0.0f;
      // (m, l) of every split first (M is their max), then the outputs, kBatch splits' loads in flight at a time
      constexpr int kBatch = 8;
      for (int s0 = 0; s0 < S; s0 += kBatch) {
        float mv[kBatch];
#pragma unroll
        for (int j = 0; j < kBatch; ++j)
          mv[j] = s0 + j < S ? ld_cluster_f32(cluster_map(ml_addr + gi * 8, s0 + j)) : -INFINITY;
#pragma unroll
        for (int j = 0; j < kBatch; ++j) M = fmaxf(M, mv[j]);
      }
      if (M != -INFINITY) {
        for (int s0 = 0; s0 < S; s0 += kBatch) {
          float2 ml[kBatch];
          float ov[kBatch];
#pragma unroll
          for (int j = 0; j < kBatch; ++j) {
            const int s = min(s0 + j, S - 1);
            ml[j] = ld_cluster_f32x2(cluster_map(ml_addr + gi * 8, s));
            ov[j] = ld_cluster_f32(cluster_map(acc_addr + i * 4, s));
          }
#pragma unroll
          for (int j = 0; j < kBatch; ++j)
            if (s0 + j < S) merge_one(ml[j], ov[j], M, L, o);
        }
      }
      key = max(key, write_out(p.out, p.fp8_out, fs, bh0 * DH + i, L > 0.0f ? o / L * vs : 0.0f));
    }
    if (p.fp8_out != nullptr) finish_fp8(key, p.fp8_amax, p.fp8_scale_inv, fs, first_block, key_scratch);
    cluster_sync();  // no block leaves (freeing its shared memory) while another may still read it
  } else {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = tid + k * kThreads;
      if (kOut % kThreads == 0 || i < kOut) p.o_part[((bh0 + i / DH) * p.num_splits + split) * DH + i % DH] = tot[k];
    }
    if (tid < G) {
      p.ml[(bh0 + tid) * p.num_splits + split] = make_float2(select_head<G>(m_run, tid), select_head<G>(l_run, tid));
    }
  }
}

// Merges the splits of one (sequence, head): out = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M) * v_scale (and the
// optional FP8 copy, p.fp8_out). Block: kCombineThreads.
constexpr int kCombineThreads = 128;
__global__ void decode_combine_kernel(const float* __restrict__ o_part, const float2* __restrict__ ml, DecodeParams p,
                                      int dh) {
  dev::pdl_enter();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  __shared__ uint32_t key_scratch[kCombineThreads / 32];
  const int64_t bh = blockIdx.x;
  const int hk = static_cast<int>(bh % p.H) / p.g;
  const float vs = p.v_scale ? p.v_scale[p.per_head_scale ? hk : 0] : 1.0f;
  const float fs = p.fp8_out != nullptr ? *p.fp8_scale : 1.0f;
  uint32_t key = 0;
  for (int d = threadIdx.x; d < dh; d += blockDim.x) {
    key = max(key, write_out(p.out, p.fp8_out, fs, bh * dh + d,
                             merge_splits(o_part, ml + bh * p.num_splits, bh, p.num_splits, dh, d, vs)));
  }
  if (p.fp8_out != nullptr) finish_fp8(key, p.fp8_amax, p.fp8_scale_inv, fs, blockIdx.x == 0, key_scratch);
}

// ---- append ------------------------------------------------------------------------------------------------
// One block per (sequence, K or V); each thread converts 8 consecutive elements of the new row.
template <typename T>
__global__ void kv_append_kernel(const bf16_t* __restrict__ k_new, const bf16_t* __restrict__ v_new,
                                 const int32_t* __restrict__ positions, T* __restrict__ k_cache,
                                 T* __restrict__ v_cache, const float* __restrict__ k_scale,
                                 const float* __restrict__ v_scale, bool per_head_scale, int hkv, int dh, int max_seq) {
  const int b = blockIdx.x;
  const bool is_v = blockIdx.y == 1;
  const int pos = positions[b];
  if (pos < 0 || pos >= max_seq) return;  // finished sequence / outside the cache: not written
  const int64_t row = static_cast<int64_t>(hkv) * dh;
  const bf16_t* src = (is_v ? v_new : k_new) + b * row;
  T* dst = (is_v ? v_cache : k_cache) + (static_cast<int64_t>(b) * max_seq + pos) * row;
  const float* scale = is_v ? v_scale : k_scale;
  for (int64_t i = threadIdx.x; i < row / 8; i += blockDim.x) {
    const uint4 raw = *reinterpret_cast<const uint4*>(src + i * 8);
    if constexpr (std::is_same_v<T, bf16_t>) {
      *reinterpret_cast<uint4*>(dst + i * 8) = raw;
    } else {
      const float s = scale[per_head_scale ? static_cast<int>(i * 8 / dh) : 0];
      float f[8];
      Chunk<bf16_t>::to_float(raw, f);
      uint8_t codes[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) codes[e] = dev::from_float<e4m3_t>(f[e] / s).bits;  // RN division, SATFINITE
      *reinterpret_cast<uint2*>(dst + i * 8) = *reinterpret_cast<const uint2*>(codes);
    }
  }
}

// ---- host side -------------------------------------------------------------------------------------------------
// Returns f(std::integral_constant<int, DH>{}) for DH = dh, one of the head dims the kernels are built for (16, 32,
// 64, 128, 256); any other dh is a TG_FAIL that `what` begins.
template <typename F>
decltype(auto) by_head_dim(int64_t dh, const char* what, F&& f) {
  switch (dh) {
    case 16:
      return f(std::integral_constant<int, 16>{});
    case 32:
      return f(std::integral_constant<int, 32>{});
    case 64:
      return f(std::integral_constant<int, 64>{});
    case 128:
      return f(std::integral_constant<int, 128>{});
    case 256:
      return f(std::integral_constant<int, 256>{});
    default:
      TG_FAIL(what, ": head dim must be 16, 32, 64, 128 or 256, got ", dh);
  }
}

int tile_for(int64_t dh) {
  return by_head_dim(dh, "decode_attention(cuda)",
                     [](auto dh_tag) { return Geometry<decltype(dh_tag)::value>::kTile; });
}

// Query heads per block: the option (checked), or the largest of 8 / 4 / 2 / 1 dividing the group g whose blocks
// still give the device at least one SM's worth of one-tile splits (B Hkv (g / G) tiles >= SMs). At batch 1 a
// group of 8 on one block leaves a short context on a handful of SMs, each running a serial tile loop for 8 heads
// (session 5: 15 us per layer on 5 blocks; bench decode_g1 15.5 us vs 25.0 us for 8 heads per block at ctx 512);
// one head per block gives 8x the blocks and an 8x shorter per-tile Q.K / P.V, and the K / V rows it reads 8 times
// come from L2 (a few hundred KB). At large B x Hkv (batch 64: HBM-bound) the whole group shares each K / V row.
int heads_per_block(int64_t units_per_head_block, int64_t g, int requested, const char* what) {
  if (requested != 0) {
    TG_CHECK((requested == 1 || requested == 2 || requested == 4 || requested == 8) && g % requested == 0, what,
             ": heads_per_block must be 0, 1, 2, 4 or 8 and divide H / Hkv = ", g, ", got ", requested);
    return requested;
  }
  for (int G : {8, 4, 2}) {
    if (g % G == 0 && units_per_head_block * (g / G) >= sm_count()) return G;
  }
  return 1;
}

struct Plan {
  int splits = 1;
  int chunk = 0;
  int G = 1;             // query heads per block
  bool cluster = false;  // splits > 1 merged in a thread-block cluster of `splits` blocks (no workspace)
  std::size_t workspace = 0;
};

template <int DH>
const void* split_kernel_g(int G, bool fp8) {
  switch (G) {
    case 8:
      return fp8 ? reinterpret_cast<const void*>(decode_split_kernel<DH, 8, e4m3_t>)
                 : reinterpret_cast<const void*>(decode_split_kernel<DH, 8, bf16_t>);
    case 4:
      return fp8 ? reinterpret_cast<const void*>(decode_split_kernel<DH, 4, e4m3_t>)
                 : reinterpret_cast<const void*>(decode_split_kernel<DH, 4, bf16_t>);
    case 2:
      return fp8 ? reinterpret_cast<const void*>(decode_split_kernel<DH, 2, e4m3_t>)
                 : reinterpret_cast<const void*>(decode_split_kernel<DH, 2, bf16_t>);
    default:
      return fp8 ? reinterpret_cast<const void*>(decode_split_kernel<DH, 1, e4m3_t>)
                 : reinterpret_cast<const void*>(decode_split_kernel<DH, 1, bf16_t>);
  }
}
const void* split_kernel(int64_t dh, int G, bool fp8) {
  return by_head_dim(dh, "decode_attention(cuda)",
                     [&](auto dh_tag) { return split_kernel_g<decltype(dh_tag)::value>(G, fp8); });
}

int split_smem(int64_t dh, bool fp8) { return 4 * tile_for(dh) * static_cast<int>(dh) * (fp8 ? 1 : 2); }

// Resident blocks of the split kernel on the whole device (launch/device_info.h caches the occupancy; the call
// also raises the kernel's dynamic shared-memory limit, which the cluster query below needs first).
int64_t device_resident_blocks(const void* kernel, int smem) {
  return static_cast<int64_t>(resident_blocks(kernel, kThreads, static_cast<std::size_t>(smem))) * sm_count();
}

constexpr int kPortableCluster = 8;   // the portable cluster size (sm_90)
constexpr int kMaxCluster = 16;       // the non-portable limit (H100 / H200), asked for and checked per kernel

// The largest cluster the split kernel can use on the current device: 16 when the non-portable size can be enabled
// and at least one such cluster fits (cudaOccupancyMaxActiveClusters), else 8 when that fits, else 1 (no in-kernel
// merge: the combine kernel). Cached per (device, kernel); the attribute it sets is what the launch needs.
int cluster_limit(const void* kernel, int smem) {
  static std::mutex mu;
  static std::map<std::pair<int, const void*>, int> cache;
  const auto key = std::make_pair(current_device(), kernel);
  const std::lock_guard<std::mutex> lock(mu);
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  const auto fits = [&](int size) {
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = static_cast<unsigned>(size);
    attr.val.clusterDim.y = 1;
    attr.val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(size), 1, 1);
    cfg.blockDim = dim3(kThreads, 1, 1);
    cfg.dynamicSmemBytes = static_cast<std::size_t>(smem);
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    return cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess && clusters >= 1;
  };
  int limit = 1;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess &&
      fits(kMaxCluster)) {
    limit = kMaxCluster;
  } else if (fits(kPortableCluster)) {
    limit = kPortableCluster;
  }
  (void)cudaGetLastError();  // a refused query leaves a non-sticky error: not this call's failure
  cache.emplace(key, limit);
  return limit;
}

// Picks the split count from a latency model in units of one tile's serial work (~1 us at batch 1): (waves of
// blocks) x (tiles per split), plus the merge: none for one split, ~1 tile for the in-cluster merge (two cluster
// barriers and one distributed-shared-memory round trip), ~4 for the combine kernel (a dependent launch plus two L2
// round trips: 4.7-7.3 us in session 5's profile), plus 0.05 per split (partials, a longer merge) to break ties
// towards fewer splits. At batch 1 this gives one- or two-tile splits merged in a cluster for contexts up to
// 16 x 32 (x2) keys. When one split already has a block for every resident slot (batch 64: 1024 blocks of gemma-7b,
// ~3 waves), the launch is HBM-bound and the model does not apply: one split. The model alone picked 8 cluster splits
// there for the BF16 cache (its waves x tiles count falls with more, smaller splits), 207 us at ctx 512 on the H200
// vs 157 us with one split (session 8, bench_attention decode_s1..8: the 184 -> 216 us "regression" of session 6,
// which came with the cheaper in-cluster merge); E4M3: one split was already the choice (102 us).
Plan make_plan(const attn::DecodeDims& d, const DecodeOptions& opt, const char* what) {
  TG_CHECK(opt.max_seqlen_hint >= 0 && opt.max_seqlen_hint <= d.max_seq, what, ": max_seqlen_hint must be in [0, ",
           d.max_seq, "], got ", opt.max_seqlen_hint);
  TG_CHECK(opt.num_splits >= 0, what, ": num_splits must be >= 0, got ", opt.num_splits);
  TG_CHECK(opt.max_cluster >= 0 && opt.max_cluster <= kMaxCluster, what, ": max_cluster must be in [0, ", kMaxCluster,
           "], got ", opt.max_cluster);
  const int tile = tile_for(d.Dh);
  const int64_t max_len = opt.max_seqlen_hint > 0 ? opt.max_seqlen_hint : d.max_seq;
  const int64_t tiles = (max_len + tile - 1) / tile;
  const int64_t g = d.H / d.Hkv;
  const int G = heads_per_block(d.B * d.Hkv * tiles, g, opt.heads_per_block, what);
  const int64_t blocks = d.B * d.Hkv * (g / G);
  const void* kernel = split_kernel(d.Dh, G, d.fp8);
  const int smem = split_smem(d.Dh, d.fp8);
  const int64_t slots = device_resident_blocks(kernel, smem);
  int cmax = cluster_limit(kernel, smem);
  if (opt.max_cluster > 0) cmax = std::min(cmax, opt.max_cluster);
  int64_t splits = opt.num_splits;
  if (splits == 0 && blocks >= slots) splits = 1;
  if (splits == 0) {
    double best = 0.0;
    for (int64_t s = 1; s <= std::min<int64_t>(tiles, 256); ++s) {
      const double waves = static_cast<double>((blocks * s + slots - 1) / slots);
      const double merge = s == 1 ? 0.0 : s <= cmax ? 1.0 : 4.0;
      const double cost = waves * static_cast<double>((tiles + s - 1) / s) + merge + 0.05 * static_cast<double>(s);
      if (s == 1 || cost < best) {
        best = cost;
        splits = s;
      }
    }
  }
  splits = std::clamp<int64_t>(splits, 1, tiles);
  Plan p;
  p.G = G;
  const int64_t tiles_per_split = (tiles + splits - 1) / splits;
  p.chunk = static_cast<int>(tiles_per_split * tile);
  p.splits = static_cast<int>((max_len + p.chunk - 1) / p.chunk);
  p.cluster = p.splits > 1 && p.splits <= cmax;
  if (p.splits > 1 && !p.cluster) {
    const std::size_t rows = static_cast<std::size_t>(d.B * d.H * p.splits);
    p.workspace = attn_detail::align_up(rows * d.Dh * sizeof(float)) + attn_detail::align_up(rows * sizeof(float2));
  }
  return p;
}

template <int DH, int G, typename T>
void launch_split_t(const DecodeParams& prm, dim3 grid, bool cluster, cudaStream_t stream) {
  constexpr int smem = split_smem_bytes<DH, T>();
  // make_plan raised the kernel's shared-memory limit (resident_blocks) and enabled its cluster size (cluster_limit)
  launch_clustered(decode_split_kernel<DH, G, T>, grid, kThreads, smem, stream, cluster ? grid.x : 0u, prm);
}
template <int DH, int G>
void launch_split(const DecodeParams& prm, bool fp8, dim3 grid, bool cluster, cudaStream_t stream) {
  if (fp8) {
    launch_split_t<DH, G, e4m3_t>(prm, grid, cluster, stream);
  } else {
    launch_split_t<DH, G, bf16_t>(prm, grid, cluster, stream);
  }
}

template <int DH>
void launch_split_g(const DecodeParams& prm, int G, bool fp8, dim3 grid, bool cluster, cudaStream_t stream) {
  switch (G) {
    case 8:
      return launch_split<DH, 8>(prm, fp8, grid, cluster, stream);
    case 4:
      return launch_split<DH, 4>(prm, fp8, grid, cluster, stream);
    case 2:
      return launch_split<DH, 2>(prm, fp8, grid, cluster, stream);
    default:
      return launch_split<DH, 1>(prm, fp8, grid, cluster, stream);
  }
}

void check_aligned(const void* p, std::size_t bytes, const char* what, const char* name) {
  TG_CHECK(reinterpret_cast<uintptr_t>(p) % bytes == 0, what, ": ", name, " must be ", bytes,
           "-byte aligned (vector loads)");
}

}  // namespace

std::size_t decode_attention_workspace_bytes(const TensorView& q, const KvCache& cache, const DecodeOptions& opt) {
  constexpr const char* what = "decode_attention_workspace_bytes(cuda)";
  const attn::DecodeDims d = attn::check_cache(cache, Device::CUDA, what);
  TG_CHECK(q.ndim() == 3 && q.size(0) == d.B && q.size(2) == d.Dh, what, ": q must be [B, H, Dh], got ", q.shape);
  attn::DecodeDims dq = d;
  dq.H = q.size(1);
  TG_CHECK(dq.H % d.Hkv == 0, what, ": H must be a multiple of Hkv");
  return make_plan(dq, opt, what).workspace;
}

void decode_attention(const TensorView& q, const KvCache& cache, const TensorView& seqlens, const DecodeOptions& opt,
                      const TensorView& out, Stream stream) {
  TG_NVTX_FN();
  constexpr const char* what = "decode_attention(cuda)";
  const attn::DecodeDims d = attn::check_decode(q, cache, seqlens, out, opt.fp8_out, Device::CUDA, what);
  const Plan plan = make_plan(d, opt, what);
  check_aligned(cache.k.data, 16, what, "cache.k");  // 16-byte cp.async of whole rows
  check_aligned(cache.v.data, 16, what, "cache.v");
  check_aligned(q.data, 16, what, "q");  // 16-byte loads of q rows
  const int g = static_cast<int>(d.H / d.Hkv);
  const int G = plan.G;

  DecodeParams prm{};
  prm.q = q.ptr<const bf16_t>();
  prm.k = cache.k.data;
  prm.v = cache.v.data;
  prm.k_scale = d.fp8 ? cache.k_scale.ptr<const float>() : nullptr;
  prm.v_scale = d.fp8 ? cache.v_scale.ptr<const float>() : nullptr;
  prm.seqlens = seqlens.ptr<const int32_t>();
  prm.out = out.empty() ? nullptr : out.ptr<bf16_t>();
  if (!opt.fp8_out.data.empty()) {
    prm.fp8_out = opt.fp8_out.data.ptr<uint8_t>();
    prm.fp8_scale = opt.fp8_out.scale.ptr<const float>();
    prm.fp8_scale_inv = opt.fp8_out.scale_inv.ptr<float>();
    prm.fp8_amax = opt.fp8_out.amax.empty() ? nullptr : opt.fp8_out.amax.ptr<float>();
  }
  prm.H = static_cast<int>(d.H);
  prm.Hkv = static_cast<int>(d.Hkv);
  prm.g = g;
  prm.max_seq = static_cast<int>(d.max_seq);
  prm.num_splits = plan.splits;
  prm.chunk = plan.chunk;
  prm.cluster_merge = plan.cluster;
  prm.per_head_scale = d.per_head_scale;
  prm.scale = attn::resolve_scale(opt.scale, d.Dh, what);
  if (plan.splits > 1 && !plan.cluster) {
    char* ws = static_cast<char*>(attn_detail::scratch(opt.workspace, plan.workspace, what, stream));
    const std::size_t rows = static_cast<std::size_t>(d.B * d.H * plan.splits);
    prm.o_part = reinterpret_cast<float*>(ws);
    prm.ml = reinterpret_cast<float2*>(ws + attn_detail::align_up(rows * d.Dh * sizeof(float)));
  }
  const cudaStream_t s = cuda_stream(stream);
  const dim3 grid(plan.splits, static_cast<unsigned>(d.Hkv * (g / G)), static_cast<unsigned>(d.B));
  by_head_dim(d.Dh, what,
              [&](auto dh_tag) { launch_split_g<decltype(dh_tag)::value>(prm, G, d.fp8, grid, plan.cluster, s); });
  TG_CHECK_LAUNCH("decode_split_kernel");
  if (plan.splits > 1 && !plan.cluster) {
    launch(decode_combine_kernel, static_cast<unsigned>(d.B * d.H), kCombineThreads, 0, s,
           static_cast<const float*>(prm.o_part), static_cast<const float2*>(prm.ml), prm, static_cast<int>(d.Dh));
    TG_CHECK_LAUNCH("decode_combine_kernel");
  }
}

void kv_cache_append(const TensorView& k_new, const TensorView& v_new, const TensorView& positions,
                     const KvCache& cache, Stream stream) {
  TG_NVTX_FN();
  constexpr const char* what = "kv_cache_append(cuda)";
  const attn::DecodeDims d = attn::check_append(k_new, v_new, positions, cache, Device::CUDA, what);
  TG_CHECK(d.Dh % 8 == 0, what, ": head dim must be a multiple of 8, got ", d.Dh);
  const std::size_t elem = d.fp8 ? 8 : 16;
  check_aligned(k_new.data, 16, what, "k_new");
  check_aligned(v_new.data, 16, what, "v_new");
  check_aligned(cache.k.data, elem, what, "cache.k");
  check_aligned(cache.v.data, elem, what, "cache.v");
  const dim3 grid(static_cast<unsigned>(d.B), 2);
  const int threads = static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(32, d.Hkv * d.Dh / 8)));
  const cudaStream_t s = cuda_stream(stream);
  if (d.fp8) {
    kv_append_kernel<e4m3_t><<<grid, threads, 0, s>>>(
        k_new.ptr<const bf16_t>(), v_new.ptr<const bf16_t>(), positions.ptr<const int32_t>(), cache.k.ptr<e4m3_t>(),
        cache.v.ptr<e4m3_t>(), cache.k_scale.ptr<const float>(), cache.v_scale.ptr<const float>(), d.per_head_scale,
        static_cast<int>(d.Hkv), static_cast<int>(d.Dh), static_cast<int>(d.max_seq));
  } else {
    kv_append_kernel<bf16_t>
        <<<grid, threads, 0, s>>>(k_new.ptr<const bf16_t>(), v_new.ptr<const bf16_t>(), positions.ptr<const int32_t>(),
                                  cache.k.ptr<bf16_t>(), cache.v.ptr<bf16_t>(), nullptr, nullptr, false,
                                  static_cast<int>(d.Hkv), static_cast<int>(d.Dh), static_cast<int>(d.max_seq));
  }
  TG_CHECK_LAUNCH("kv_append_kernel");
}

}  // namespace tg::kernels::cuda
