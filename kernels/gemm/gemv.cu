// gemv on the CUDA cores: see gemv.h for the contract and the design.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "common/cuda_check.h"
#include "common/env.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/elementwise/elementwise.cuh"
#include "kernels/gemm/gemv.h"
#include "kernels/gemm/gemv_device.cuh"
#include "kernels/launch/device_info.h"
#include "kernels/launch/launch.cuh"
#include "kernels/launch/programmatic_launch.h"
#include "kernels/norm/norm_device.cuh"
#include "kernels/rope/rope_math.cuh"

namespace tg::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// 8 consecutive x elements of row r starting at element k (16-byte aligned for BF16, 8-byte for E4M3) -> floats.
template <bool kXE4m3>
__device__ __forceinline__ void load_x8(const GemvParams& p, int r, int64_t k, float (&f)[8]) {
  if constexpr (kXE4m3) {
    const uint8_t* row = static_cast<const uint8_t*>(p.x) + static_cast<int64_t>(r) * p.ldx;
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(row + k));
    unpack8<true>(make_uint4(v.x, v.y, 0u, 0u), 0, f);
  } else {
    const __nv_bfloat16* row = static_cast<const __nv_bfloat16*>(p.x) + static_cast<int64_t>(r) * p.ldx;
    unpack8<false>(__ldg(reinterpret_cast<const uint4*>(row + k)), 0, f);
  }
}

// The x elements of W chunk `chunk` for row 0 (kRows == 1 preloads them next to the W loads): E4M3 x with E4M3 W
// is one 16-byte vector (16 codes), BF16 x is one (BF16 W: 8 elements) or two (E4M3 W: 16 elements) vectors.
template <bool kWE4m3, bool kXE4m3>
__device__ __forceinline__ void load_x_chunk(const GemvParams& p, int64_t chunk, uint4 (&xv)[2]) {
  if constexpr (kXE4m3) {
    xv[0] = __ldg(reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.x)) + chunk);
  } else if constexpr (kWE4m3) {
    const uint4* row = reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.x));
    xv[0] = __ldg(row + 2 * chunk);
    xv[1] = __ldg(row + 2 * chunk + 1);
  } else {
    xv[0] = __ldg(reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.x)) + chunk);
  }
}
// The 8 floats of x piece h (8-element half of a 16-element chunk, or the whole 8-element chunk).
template <bool kXE4m3>
__device__ __forceinline__ void unpack_x(const uint4 (&xv)[2], int h, float (&f)[8]) {
  if constexpr (kXE4m3) {
    unpack8<true>(xv[0], h, f);
  } else {
    unpack8<false>(xv[h], 0, f);
  }
}

// Warp w of the grid owns columns [w * kCols, w * kCols + kCols). Lane l accumulates chunks l, l + 32, ... of those
// W rows against the matching x elements of every row r < m; a fixed butterfly then sums the lanes. kRows == 1
// loads x next to W (both in flight before any use); more rows read x per piece through L1 (re-used across the
// kCols columns).
//
// kSplit > 1 (one-column warps only): the kSplit warps of a group share one column, warp s of the group taking the
// s-th contiguous slice of K (whole 32-chunk stripes); each slice is summed as above, then the slices' sums are
// added in slice order through shared memory and the group's first warp finishes the column. More warps and more
// loads in flight per column for the narrow, long-K shapes (k_split() below says when).
//
// kEpi (M = 1, 2 columns, no split; gemv.h): kEpiGeglu (gemv_geglu) -- warp w owns output w of act from W rows w
// (gate) and F + w (up); kEpiQkvRope (gemv_qkv_rope) -- warp w owns the RoPE pair w of the fused QKV output: head
// w / (Dh / 2), element j = w % (Dh / 2) and j + Dh / 2 of that head. Each row with the same arithmetic as above,
// then the epilogue.
enum : int { kEpiPlain = 0, kEpiGeglu = 1, kEpiQkvRope = 2 };

// The RMSNorm -> E4M3 prologue (GemvNorm in gemv.h), every thread of the block: x's E4M3 codes into x_s as
// rmsnorm_forward_fp8 computes them (norm.h; the shared pieces in kernels/norm/norm_device.cuh): every warp sums
// the squares in the LANE ORDER (lane l: 8-element chunks l, l + 32, ..., then the butterfly) and takes rstd;
// thread t quantizes chunks t, t + 128, ...: V = BF16((h * rstd) * (1 + w)), code = E4M3(V * scale). Block 0 also
// writes rstd and x's scale_inv and max-reduces the amax over |y| rounded to BF16 once (the norm kernels' rule).
// Returns x's scale_inv (1 / scale, one RN division: what the norm kernel writes).
__device__ __forceinline__ float norm_prologue(const GemvParams& p, uint8_t* x_s) {
  const GemvParams::Norm& nm = p.norm;
  const int lane = threadIdx.x % 32;
  const int chunks = p.k / 8;
  const ew::bf16_t* h = static_cast<const ew::bf16_t*>(nm.h);
  const ew::bf16_t* w = static_cast<const ew::bf16_t*>(nm.w);
  float ss = 0.0f;
  for (int c = lane; c < chunks; c += 32) {
    const ew::Pack8<ew::bf16_t> v = ew::load8_any(h + 8 * c, 8, true);
#pragma unroll
    for (int i = 0; i < 8; ++i) ss = ieee::ffma(v.get(i), v.get(i), ss);
  }
  const float r = norm_device::rstd_of(norm_device::warp_butterfly_sum(ss), nm.inv_d, nm.eps);
  const float scale = *nm.x_scale;
  float amax_y = 0.0f;
  for (int c = threadIdx.x; c < chunks; c += kThreads) {
    const ew::Pack8<ew::bf16_t> hv = ew::load8_any(h + 8 * c, 8, true);
    float g[8], y[8], v[8];
    ew::unpack8(ew::load8_any(w + 8 * c, 8, true), g);
#pragma unroll
    for (int i = 0; i < 8; ++i) y[i] = ieee::fmul(ieee::fmul(hv.get(i), r), ieee::fadd(1.0f, g[i]));
    const ew::Pack8<ew::bf16_t> vp = ew::pack8<ew::bf16_t>(y);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      v[i] = vp.get(i);
      amax_y = norm_device::max_abs_nan(amax_y, y[i]);
    }
    *reinterpret_cast<uint2*>(x_s + 8 * c) = ew::quantize8<dev::e4m3_t>(v, scale);
  }
  if (blockIdx.x == 0) {  // uniform in the block
    if (nm.x_amax != nullptr) ew::block_amax_commit(nm.x_amax, ieee::abs_bits(ew::round_to<ew::bf16_t>(amax_y)));
    if (threadIdx.x == 0) {
      *nm.rstd = r;
      *nm.x_scale_inv = ieee::fdiv(1.0f, scale);
    }
  }
  __syncthreads();
  return ieee::fdiv(1.0f, scale);
}
template <bool kWE4m3, bool kXE4m3, int kRows, int kCols, int kSplit = 1, int kEpi = kEpiPlain, bool kNorm = false>
__device__ __forceinline__ void gemv_body(const GemvParams p) {
  constexpr int kChunkElems = kWE4m3 ? 16 : 8;  // W elements per 16-byte chunk
  constexpr int kHalves = kChunkElems / 8;      // 8-element pieces per chunk
  constexpr int kUnroll = kLoadsPerLane / kCols;
  constexpr bool kPreloadX = kRows == 1;
  static_assert(kSplit == 1 || (kCols == 1 && kWarps % kSplit == 0), "K splits: one-column warps, whole groups");
  constexpr bool kPaired = kEpi != kEpiPlain;
  // Output pairs per warp: 1, or 2 for the QKV + RoPE kernel whose one-pair grid would be more than one wave.
  constexpr int kPairs = kPaired ? kCols / 2 : 1;
  static_assert(!kPaired || (kRows == 1 && kSplit == 1 && (kCols == 2 || (kCols == 4 && kEpi == kEpiQkvRope))),
                "the epilogues: one row, column pairs (two pairs per warp: the QKV + RoPE kernel only)");
  static_assert(!kNorm || (kEpi == kEpiQkvRope && kWE4m3 && kXE4m3), "the norm prologue: the QKV + RoPE kernel");
  const int lane = threadIdx.x % 32;
  const int warp_in_block = threadIdx.x / 32;
  const int split = warp_in_block % kSplit;
  const int64_t warp_id = static_cast<int64_t>(blockIdx.x) * (kWarps / kSplit) + warp_in_block / kSplit;
  const int64_t col0 = kPaired ? warp_id * kPairs : warp_id * kCols;  // the first output (pair) of this warp
  const int64_t n_out = kPaired ? p.n / 2 : p.n;  // output columns: act's F or the RoPE pairs, or N
  // This warp's chunks: [k_begin, k_end) (the whole row without a split).
  const int slice = kSplit == 1 ? p.chunks : ((p.chunks + 32 * kSplit - 1) / (32 * kSplit)) * 32;
  const int k_begin = min(p.chunks, split * slice);
  const int k_end = kSplit == 1 ? p.chunks : min(p.chunks, k_begin + slice);

  // Columns past N re-read the last row (harmless, never stored) so the loop stays branch-free. (Before session 15
  // a partial last group, col0 < N <= col0 + c, read row N: one row past W's end.)
  const uint4* wrow[kCols];
#pragma unroll
  for (int c = 0; c < kCols; ++c) {
    int64_t col = min(col0 + c, static_cast<int64_t>(p.n) - 1);
    if constexpr (kEpi == kEpiGeglu) col = min(col0, n_out - 1) + c * n_out;
    if constexpr (kEpi == kEpiQkvRope) {  // column c: element j (c even) or j + Dh / 2 (c odd) of pair col0 + c / 2
      const int64_t half = p.rope.head_dim / 2, pair = min(col0 + c / 2, n_out - 1);
      col = (pair / half) * p.rope.head_dim + pair % half + (c % 2) * half;
    }
    wrow[c] = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.w) + col * p.ldw * (kWE4m3 ? 1 : 2));
  }
  // W chunks of one iteration: lane l takes chunks base + 32 u (u < kUnroll) of each of its kCols rows.
  uint4 wv[kUnroll][kCols];
  auto load_w = [&](int base) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = base + 32 * u;
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        if (chunk < k_end) wv[u][c] = __ldcs(wrow[c] + chunk);  // past the end: never read (the loop below stops)
      }
    }
  };
  const bool active = col0 < n_out;
  // With kNorm the W loads run one iteration ahead (each iteration loads the next one's W at its end), the first
  // ones right after the PDL wait, so that they are in flight during the norm prologue. (Session 18's early-W knob,
  // the first loads before the wait, measured slower: see decoder.cpp.)
  constexpr bool kWAhead = kNorm;
  dev::pdl_enter(!p.late_trigger);  // late: the dependents triggered at the end (GemvParams::late_trigger)
  if constexpr (kNorm) {
    if (active) load_w(k_begin + lane);
  }
  // kNorm: x computed from h into shared memory by the whole block (before any warp may leave).
  __shared__ __align__(16) uint8_t x_norm[kNorm ? kGemvNormMaxK : 16];
  float x_scale_inv = 0.0f;
  if constexpr (kNorm) x_scale_inv = norm_prologue(p, x_norm);
  // Whole warps only: without a split (or the GeGLU's amax) no block-level synchronisation follows; with one, a
  // whole group is past N or not, and the groups of a block meet at the one barrier below whatever they did.
  if (kSplit == 1 && kEpi != kEpiGeglu && !active) return;

  float acc[kRows][kCols];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0f;
  }

  for (int base = k_begin + lane; active && base < k_end; base += 32 * kUnroll) {
    uint4 xv[kPreloadX ? kUnroll : 1][2];
    if constexpr (!kWAhead) load_w(base);
    if constexpr (kPreloadX) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int chunk = base + 32 * u;
        if constexpr (kNorm) {
          if (chunk < k_end) xv[u][0] = reinterpret_cast<const uint4*>(x_norm)[chunk];
        } else {
          if (chunk < k_end) load_x_chunk<kWE4m3, kXE4m3>(p, chunk, xv[u]);  // past the end: never read
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = base + 32 * u;
      if (chunk >= k_end) break;  // the slice's tail: lanes past the end stop (uniform until the last iteration)
#pragma unroll
      for (int h = 0; h < kHalves; ++h) {
        float wf[kCols][8];
#pragma unroll
        for (int c = 0; c < kCols; ++c) unpack8<kWE4m3>(wv[u][c], h, wf[c]);
        const int64_t k = static_cast<int64_t>(chunk) * kChunkElems + 8 * h;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          if (r > 0 && r >= p.m) break;  // row 0 always exists (M >= 1, checked): no branch for it
          float xf[8];
          if constexpr (kPreloadX) {
            unpack_x<kXE4m3>(xv[u], h, xf);
          } else {
            load_x8<kXE4m3>(p, r, k, xf);
          }
#pragma unroll
          for (int e = 0; e < 8; ++e) {
#pragma unroll
            for (int c = 0; c < kCols; ++c) acc[r][c] = fmaf(xf[e], wf[c][e], acc[r][c]);
          }
        }
      }
    }
    if constexpr (kWAhead) load_w(base + 32 * kUnroll);  // the next iteration's (chunks past k_end: not read)
  }

  const float scale = kNorm ? out_scale_x(p, x_scale_inv) : out_scale(p);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = dev::warp_sum(acc[r][c]);  // xor butterfly: every lane has it
  }
  if constexpr (kSplit > 1) {
    // The slices' sums of each column, added in slice order by the group's first warp (fixed order: same bits).
    __shared__ float part[kWarps][kRows][kCols];
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) part[warp_in_block][r][c] = acc[r][c];
      }
    }
    __syncthreads();
    if (split != 0 || !active) return;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        float sum = part[warp_in_block][r][c];
#pragma unroll
        for (int s = 1; s < kSplit; ++s) sum += part[warp_in_block + s][r][c];
        acc[r][c] = sum;
      }
    }
  }
  if constexpr (kEpi == kEpiQkvRope) {
    // The unfused chain's arithmetic: qkv = BF16(acc * scale); then kv_cache_write_rope's row_element for the pair
    // (x1 = element j, x2 = element j + Dh / 2 of head hh): q heads rotated into q_out, k heads rotated and v heads
    // as they are into the cache row (slots[0], positions[0]) when both are in range (E4M3: RN(value / scale)).
    // Lane q finishes the warp's pair q (every lane holds every sum after the butterfly).
    const GemvParams::RopeKv& e = p.rope;
#pragma unroll
    for (int q = 0; q < kPairs; ++q) {
      const int64_t pair = col0 + q;
      if (lane != q || pair >= n_out) continue;
      const int half = e.head_dim / 2;
      const int hh = static_cast<int>(pair / half), j = static_cast<int>(pair % half);
      const float x1 = ew::round_to<ew::bf16_t>(acc[0][2 * q] * scale);
      const float x2 = ew::round_to<ew::bf16_t>(acc[0][2 * q + 1] * scale);
      const int pos = e.positions[0];
      const bool is_v = hh >= e.heads + e.kv_heads;
      float y1 = x1, y2 = x2;
      if (!is_v) {
        float c[1], s[1];
        rope_dev::cos_sin_at<ew::bf16_t, 1>(e.cos_sin, e.cos_sin_positions, half, pos, e.inv_freq, j, 1.0f, c, s);
        y1 = ew::round_to<ew::bf16_t>(rope_dev::rotated_first<ew::bf16_t>(x1, x2, c[0], s[0]));
        y2 = ew::round_to<ew::bf16_t>(rope_dev::rotated_second<ew::bf16_t>(x1, x2, c[0], s[0]));
      }
      if (hh < e.heads) {
        dev::bf16_t* qo = static_cast<dev::bf16_t*>(e.q_out) + static_cast<int64_t>(hh) * e.head_dim + j;
        qo[0] = dev::from_float<dev::bf16_t>(y1);
        qo[half] = dev::from_float<dev::bf16_t>(y2);
      } else {
        const int slot = e.slots[0];
        if (slot >= 0 && slot < e.cache_b && pos >= 0 && pos < e.max_seq) {
          const int kh = hh - e.heads - (is_v ? e.kv_heads : 0);
          const int64_t dst = (static_cast<int64_t>(slot) * e.max_seq + pos) * e.kv_heads * e.head_dim +
                              static_cast<int64_t>(kh) * e.head_dim + j;
          if (e.fp8) {
            const float sc = (is_v ? e.v_scale : e.k_scale)[e.per_head_scale ? kh : 0];
            uint8_t* out = static_cast<uint8_t*>(is_v ? e.v_cache : e.k_cache) + dst;
            out[0] = dev::from_float<dev::e4m3_t>(ieee::fdiv(y1, sc)).bits;
            out[half] = dev::from_float<dev::e4m3_t>(ieee::fdiv(y2, sc)).bits;
          } else {
            dev::bf16_t* out = static_cast<dev::bf16_t*>(is_v ? e.v_cache : e.k_cache) + dst;
            out[0] = dev::from_float<dev::bf16_t>(y1);
            out[half] = dev::from_float<dev::bf16_t>(y2);
          }
        }
      }
    }
  } else if constexpr (kEpi == kEpiGeglu) {
    // The unfused chain's arithmetic: fc1 = BF16(acc * scale) (store_out's rounding, no residual); then
    // geglu_forward_fp8: V = BF16(BF16(gelu_tanh(gate)) * up), act = E4M3(V * act_scale), amax over |V|.
    const float act_scale = *p.act_scale;
    uint32_t amax_bits = 0;
    if (active && lane == 0) {
      const float g = ew::round_to<ew::bf16_t>(acc[0][0] * scale);
      const float u = ew::round_to<ew::bf16_t>(acc[0][1] * scale);
      const float v = ew::round_to<ew::bf16_t>(ieee::fmul(ew::round_to<ew::bf16_t>(ieee::gelu_tanh(g)), u));
      p.act[col0] = static_cast<uint8_t>(__nv_cvt_float_to_fp8(ieee::fmul(v, act_scale), __NV_SATFINITE, __NV_E4M3));
      amax_bits = ieee::abs_bits(v);
    }
    ew::block_amax_commit(p.act_amax, amax_bits);  // every thread of the block (inactive warps give 0)
    if (blockIdx.x == 0 && threadIdx.x == 0 && p.act_scale_inv != nullptr) {
      *p.act_scale_inv = ieee::fdiv(1.0f, act_scale);
    }
  } else {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        // Lane (r * kCols + c) % 32 stores (r, c): the stores spread over the lanes.
        if (r < p.m && col0 + c < p.n && lane == (r * kCols + c) % 32) store_out(p, r, col0 + c, acc[r][c], scale);
      }
    }
  }
  if (p.late_trigger) dev::pdl_launch_dependents();
}

template <bool kWE4m3, bool kXE4m3, int kRows, int kCols, int kSplit = 1, int kEpi = kEpiPlain, bool kNorm = false>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const GemvParams p) {
  gemv_body<kWE4m3, kXE4m3, kRows, kCols, kSplit, kEpi, kNorm>(p);
}
// The same compiled for 6 resident blocks per SM (<= 80 registers): the QKV + RoPE kernel with the norm prologue and
// two pairs per warp (95 registers unbounded: 5 blocks, 660 per wave on the H200 < the 7b's 768 blocks). (A
// minimum-blocks bound on the other instances changes their allocation: they keep gemv_kernel.)
template <bool kWE4m3, bool kXE4m3, int kRows, int kCols, int kSplit = 1, int kEpi = kEpiPlain, bool kNorm = false>
__global__ void __launch_bounds__(kThreads, 6) gemv_kernel_6(const GemvParams p) {
  gemv_body<kWE4m3, kXE4m3, kRows, kCols, kSplit, kEpi, kNorm>(p);
}

// ---- The tensor-core path (tuning::set_gemv_mma): E4M3 x with E4M3 W, any M <= 16 -----------------------------
// The CUDA-core loop above spends ~65-83 warp instructions per 512 W bytes (each code converted to FP32 and FMA'd,
// x converted again by every warp); this one spends ~25: the codes become F16 pairs (one F2FP per 2 codes, exact:
// every E4M3 value is an F16 value) and mma.sync.m16n8k16 (F16 x F16 -> FP32 accumulate) multiplies them exactly
// and adds them in the tensor core. A = x (16 token rows; rows >= M re-read row M - 1 and are never stored, rows
// g + 8 are zero when M <= 8), B = 8 W rows (the warp's 8 output columns).
// Lane (g, t) = (lane / 4, lane % 4) loads 16 bytes of W row n0 + g at k = 64 i + 16 t (round i) and the same 16
// bytes of x rows g (and g + 8). Bytes 4j .. 4j + 3 feed the round's j-th MMA: B's pairs (k 2t, 2t + 1) = bytes
// 4j, 4j + 1 and (2t + 8, 2t + 9) = bytes 4j + 2, 4j + 3. That permutes k the same way for every row, so A takes the
// same bytes of x and the dot products are unchanged. D's lane (g, t) then holds tokens g (d0, d1) and g + 8 (d2,
// d3) of W rows n0 + 2t, n0 + 2t + 1: no butterfly. K is split over kSplit warps of a block as in the loop above
// (whole 64-element rounds; slices added in slice order through shared memory).
constexpr int kMmaThreads = 256;
constexpr int kMmaWarps = kMmaThreads / 32;
constexpr int kMmaCols = 8;     // W rows (output columns) per warp: the MMA's N
constexpr int kMmaUnroll = 8;   // 16-byte W loads in flight per lane per iteration
constexpr int kMmaRoundK = 64;  // K per round: 4 lanes x 16 codes

// The 4 E4M3 codes of u -> two F16 pairs: lo = bytes 0, 1 and hi = bytes 2, 3 (exact; F2FP reads each half).
__device__ __forceinline__ void f16x2_of_e4m3x4(uint32_t u, uint32_t& lo, uint32_t& hi) {
  asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.rn.f16x2.e4m3x2 %0, l;\n\tcvt.rn.f16x2.e4m3x2 %1, h;\n\t}"
      : "=r"(lo), "=r"(hi)
      : "r"(u));
}
// 16-byte loads as volatile asm: they stay ahead of the (volatile) MMAs of the same iteration, so all of an
// iteration's loads are in flight before its first use (ptxas otherwise interleaves them with the arithmetic).
__device__ __forceinline__ uint4 ld_stream(const void* p) {  // W: read once (ld.global.cs)
  uint4 v;
  asm volatile("ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ uint4 ld_shared_ro(const void* p) {  // x: read by every warp (ld.global.nc, L1)
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
// d += A (16 x 16, F16, row-major fragment a0..a3) * B (16 x 8, F16, column fragment b0, b1), FP32.
__device__ __forceinline__ void mma_f16_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <bool kTall, int kSplit>
__global__ void __launch_bounds__(kMmaThreads) gemv_mma_kernel(const GemvParams p) {
  static_assert(kMmaWarps % kSplit == 0, "K splits: whole warp groups");
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int split = warp % kSplit;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * (kMmaWarps / kSplit) + warp / kSplit) * kMmaCols;
  const bool active = n0 < p.n;  // whole warps (and whole split groups)
  const uint8_t* w = static_cast<const uint8_t*>(p.w) + min(n0 + g, static_cast<int64_t>(p.n) - 1) * p.ldw;
  const uint8_t* x0 = static_cast<const uint8_t*>(p.x) + static_cast<int64_t>(min(g, p.m - 1)) * p.ldx;
  const uint8_t* x1 = kTall ? static_cast<const uint8_t*>(p.x) + static_cast<int64_t>(min(g + 8, p.m - 1)) * p.ldx : x0;
  const int rounds = (p.k + kMmaRoundK - 1) / kMmaRoundK;
  const int per = (rounds + kSplit - 1) / kSplit;
  const int r_begin = min(rounds, split * per), r_end = min(rounds, r_begin + per);
  dev::pdl_enter();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  if (kSplit == 1 && !active) return;

  float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  // kTail: the slice's last iteration, where rounds past r_end or lanes past K load zeros (0 * 0 adds nothing).
  // Lane pointers at this lane's 16 bytes of round i0 (advanced by whole iterations: immediate load offsets).
  const int k_lane = r_begin * kMmaRoundK + 16 * t;
  const uint8_t *wb = w + k_lane, *xb = x0 + k_lane, *xb8 = x1 + k_lane;
  const auto step = [&](int i0, auto tail) {
    constexpr bool kTail = decltype(tail)::value;
    uint4 wv[kMmaUnroll], xv[kMmaUnroll];
    [[maybe_unused]] uint4 xv8[kMmaUnroll];  // rows g + 8 (kTall)
    const int k0 = i0 * kMmaRoundK + 16 * t;
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      const bool in = !kTail || (i0 + u < r_end && k0 + u * kMmaRoundK < p.k);
      const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
      wv[u] = in ? ld_stream(wb + u * kMmaRoundK) : zero;
      xv[u] = in ? ld_shared_ro(xb + u * kMmaRoundK) : zero;
      if constexpr (kTall) xv8[u] = in ? ld_shared_ro(xb8 + u * kMmaRoundK) : zero;
    }
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      if (kTail && i0 + u >= r_end) break;  // warp-uniform: every lane runs every MMA
      const uint32_t wr[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
      const uint32_t xr[4] = {xv[u].x, xv[u].y, xv[u].z, xv[u].w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        uint32_t a0, a1 = 0u, a2, a3 = 0u, b0, b1;
        f16x2_of_e4m3x4(xr[j], a0, a2);
        if constexpr (kTall) {
          const uint32_t x8[4] = {xv8[u].x, xv8[u].y, xv8[u].z, xv8[u].w};
          f16x2_of_e4m3x4(x8[j], a1, a3);
        }
        f16x2_of_e4m3x4(wr[j], b0, b1);
        mma_f16_16816(d, a0, a1, a2, a3, b0, b1);
      }
    }
  };
  // Rounds wholly inside K run without predicates; the rest (at most one iteration) with them.
  const int r_full = min(r_end, p.k / kMmaRoundK);
  int i0 = r_begin;
  if (active) {
    for (; i0 + kMmaUnroll <= r_full; i0 += kMmaUnroll) {
      step(i0, std::false_type{});
      wb += kMmaUnroll * kMmaRoundK;
      xb += kMmaUnroll * kMmaRoundK;
      if constexpr (kTall) xb8 += kMmaUnroll * kMmaRoundK;
    }
    if (i0 < r_end) step(i0, std::true_type{});
  }
  if constexpr (kSplit > 1) {
    // The slices' sums, added in slice order by the group's first warp (fixed order: same bits every run).
    __shared__ float part[kMmaWarps][4][32];
#pragma unroll
    for (int i = 0; i < 4; ++i) part[warp][i][lane] = d[i];
    __syncthreads();
    if (split != 0 || !active) return;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float sum = part[warp][i][lane];
#pragma unroll
      for (int s = 1; s < kSplit; ++s) sum += part[warp + s][i][lane];
      d[i] = sum;
    }
  }
  const float scale = out_scale(p);
  const int64_t col = n0 + 2 * t;
#pragma unroll
  for (int h = 0; h < (kTall ? 2 : 1); ++h) {
    const int r = g + 8 * h;
    if (r >= p.m) continue;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      if (col + c < p.n) store_out(p, r, col + c, d[2 * h + c], scale);
    }
  }
}

// The rule (tuning::GemvMma::kRule): the tensor-core path for M >= 2, the CUDA-core loop at M = 1. H200 session 14
// (946dd66, bench_gemm alone, us, tensor cores / CUDA-core loop / cuBLASLt FP8): M = 4: 2b QKV 6.30 / 12.76 / 7.10,
// fc1 24.30 / 37.91 / 20.88, fc2 14.04 / 68.45 / 14.98, lm_head 132.1 / 206.6 / 127.8, 7b fc2 23.85 / 83.69 / 25.17;
// M = 16: 2b fc1 24.3 / 128.8 / 20.9, fc2 15.8 / 245.6 / 15.1 (the loop's FMAs per byte grow with M). M = 1: the
// tensor cores win alone on the narrow shapes (7b O 7.68 / 8.58, 2b fc2 13.73 / 14.21) and lose on the wide ones
// (2b fc1 24.25 / 20.56, lm_head 131.3 / 119.1: each load instruction reads 64 bytes of 8 rows instead of 512 of
// one), and inside the decode step even the narrow-only rule lost on gemma-7b (B1 336.4 vs 346.9 tok/s; 2b 945.7
// vs 942.6), so M = 1 stays on the loop. Decode B4 (gemma-2b, delayed + FP8 head): 3250.5 vs 1757.1 tok/s.

// The tensor-core path's K split: the fewest warps per 8 columns (1, 2, 4, 8) that put >= 16 warps on each of 132
// SMs, and no more than the 64-element rounds of K.
int mma_k_split(int64_t n, int64_t k) {
  constexpr int64_t kTargetWarps = 132 * 16;
  const int64_t groups = (n + kMmaCols - 1) / kMmaCols, rounds = (k + kMmaRoundK - 1) / kMmaRoundK;
  int split = 1;
  while (split < kMmaWarps && groups * split < kTargetWarps && 2 * split <= rounds) split *= 2;
  return split;
}
void launch_mma(const GemvParams& p, cudaStream_t stream) {
  const int split = mma_k_split(p.n, p.k);
  const int64_t groups = (p.n + kMmaCols - 1) / kMmaCols;
  const unsigned blocks = static_cast<unsigned>((groups * split + kMmaWarps - 1) / kMmaWarps);
  auto go = [&](auto kernel) { launch(kernel, blocks, kMmaThreads, 0, stream, p); };
  const bool tall = p.m > 8;
  switch (split) {
    case 8: return tall ? go(gemv_mma_kernel<true, 8>) : go(gemv_mma_kernel<false, 8>);
    case 4: return tall ? go(gemv_mma_kernel<true, 4>) : go(gemv_mma_kernel<false, 4>);
    case 2: return tall ? go(gemv_mma_kernel<true, 2>) : go(gemv_mma_kernel<false, 2>);
    default: return tall ? go(gemv_mma_kernel<true, 1>) : go(gemv_mma_kernel<false, 1>);
  }
}

// Columns per warp: one while that still gives >= 64 warps per SM-sized slice of the grid (the small-N shapes:
// more warps, more loads in flight); otherwise 2 (M <= 2) or 4 (M >= 4: x is re-read from L1 once per kCols
// columns, which is what limits the larger M).
int columns_per_warp(int64_t n, int rows) {
  constexpr int64_t kWarpsForOneColumn = 132 * 64;
  if (n < kWarpsForOneColumn) return 1;
  return rows >= 4 ? 4 : 2;
}

}  // namespace

// Warps per column (kSplit) of the one-column shapes: tuning::set_gemv_k_split's value when set (1, 2, 4), else
// 2 for K >= 24576 (the 7b fc2) and 1 below. H200, session 8 (commit 2f59713), M = 1 E4M3, split 2 vs 1: 7b fc2
// 1x3072x24576 26.2 vs 28.3 us; 2b fc2 1x2048x16384 16.1 vs 15.9; QKV / O slower (2b 1x2560x2048 8.46 vs 7.83,
// 7b 1x3072x4096 10.9 vs 10.5); split 4 never beat 2 (7b fc2 26.9).
// TEGEMMA_GEMV_KSPLIT_FROM_K (read once) moves the threshold for decode A/B runs (16384 splits the 2b fc2 too: alone
// no faster in session 8, unmeasured in the step).
int gemv_k_split_rule(int64_t k) {
  static const int64_t split_from_k = env_int("TEGEMMA_GEMV_KSPLIT_FROM_K", 24576, 1, int64_t{1} << 30);
  const int forced = tuning::gemv_k_split();
  if (forced != 0) return forced;
  return k >= split_from_k ? 2 : 1;
}

namespace {

// Every CUDA-core GEMV triggers its programmatic dependents at the end of each block (GemvParams::late_trigger), not
// after its wait: the next kernel's blocks are then placed once this grid's last blocks retire, evenly on a nearly
// empty GPU, instead of into the slots that a several-wave grid frees one by one. H200, session 18 (4809135; decode
// B1 tok/s, delayed + FP8 head, 2b / 7b): early trigger 950.2 / 348.3; with both B1 epilogues (decoder.cpp) and the
// trigger late from 2048 blocks 966.2 / 353.6, from 256 blocks (every B1 GEMV of both presets) 980.0 / 354.5, for
// grids of more than one resident wave 966.4 / 355.6. TEGEMMA_GEMV_LATE_TRIGGER_BLOCKS (read once) = N: only GEMVs
// of >= N blocks trigger late; 0: none (the early trigger, for A/B runs); unset: 1, every GEMV.
bool late_trigger_for(int64_t blocks) {
  static const int64_t from = env_int("TEGEMMA_GEMV_LATE_TRIGGER_BLOCKS", 1, 0, int64_t{1} << 30);
  return from > 0 && blocks >= from;
}
template <typename Kernel>
void launch_gemv(Kernel kernel, unsigned blocks, cudaStream_t stream, GemvParams p) {
  p.late_trigger = gemv_triggers_late(blocks);
  launch(kernel, blocks, kThreads, 0, stream, p);
}

unsigned blocks_for(int64_t column_groups, int split) {
  return static_cast<unsigned>((column_groups * split + kWarps - 1) / kWarps);
}
// f(std::integral_constant<int, S>{}) with S = k_split(k): the one-column kernels' split as a template argument.
template <typename F>
void with_k_split(int64_t k, F&& f) {
  switch (gemv_k_split_rule(k)) {
    case 4: return f(std::integral_constant<int, 4>{});
    case 2: return f(std::integral_constant<int, 2>{});
    default: return f(std::integral_constant<int, 1>{});
  }
}

template <bool kWE4m3, bool kXE4m3, int kRows>
void launch_rows(const GemvParams& p, cudaStream_t stream) {
  const int cols = columns_per_warp(p.n, kRows);
  const int64_t warps = (p.n + cols - 1) / cols;
  constexpr int kWide = kRows >= 4 ? 4 : 2;
  if (cols == 1) {
    with_k_split(p.k, [&](auto split) {
      constexpr int kS = decltype(split)::value;
      launch_gemv(gemv_kernel<kWE4m3, kXE4m3, kRows, 1, kS>, blocks_for(warps, kS), stream, p);
    });
  } else {
    launch_gemv(gemv_kernel<kWE4m3, kXE4m3, kRows, kWide>, blocks_for(warps, 1), stream, p);
  }
}

template <bool kWE4m3, bool kXE4m3>
void dispatch(const GemvParams& p, cudaStream_t stream) {
  if (p.m <= 1) return launch_rows<kWE4m3, kXE4m3, 1>(p, stream);
  if (p.m <= 2) return launch_rows<kWE4m3, kXE4m3, 2>(p, stream);
  if (p.m <= 4) return launch_rows<kWE4m3, kXE4m3, 4>(p, stream);
  if (p.m <= 8) return launch_rows<kWE4m3, kXE4m3, 8>(p, stream);
  launch_rows<kWE4m3, kXE4m3, 16>(p, stream);
}

}  // namespace

namespace tuning {
namespace {
// TEGEMMA_GEMV_KSPLIT (read once: 0, 1, 2 or 4) for the decode A/B runs; set_gemv_k_split overrides it.
std::atomic<int>& k_split_setting() {
  static std::atomic<int> v{[] {
    const char* e = std::getenv("TEGEMMA_GEMV_KSPLIT");
    if (e == nullptr || *e == '\0') return 0;
    const std::string s(e);
    TG_CHECK(s == "0" || s == "1" || s == "2" || s == "4", "TEGEMMA_GEMV_KSPLIT must be 0, 1, 2 or 4, got '", s, "'");
    return std::stoi(s);
  }()};
  return v;
}
// TEGEMMA_GEMV_QKV_PAIRS (read once: 0, 1 or 2) for the decode A/B runs; set_gemv_qkv_pairs overrides it.
std::atomic<int>& qkv_pairs_setting() {
  static std::atomic<int> v{static_cast<int>(env_int("TEGEMMA_GEMV_QKV_PAIRS", 0, 0, 2))};
  return v;
}
// TEGEMMA_GEMV_MMA (read once: rule, always or never; unset: rule) for the decode A/B runs; set_gemv_mma overrides it.
std::atomic<GemvMma>& mma_setting() {
  static std::atomic<GemvMma> v{[] {
    const char* e = std::getenv("TEGEMMA_GEMV_MMA");
    const std::string s = e == nullptr ? "" : e;
    if (s.empty() || s == "rule") return GemvMma::kRule;
    if (s == "always") return GemvMma::kAlways;
    TG_CHECK(s == "never", "TEGEMMA_GEMV_MMA must be rule, always or never, got '", s, "'");
    return GemvMma::kNever;
  }()};
  return v;
}
}  // namespace
void set_gemv_k_split(int split) {
  TG_CHECK(split == 0 || split == 1 || split == 2 || split == 4, "set_gemv_k_split: 0, 1, 2 or 4, got ", split);
  k_split_setting().store(split);
}
int gemv_k_split() { return k_split_setting().load(); }
void set_gemv_qkv_pairs(int pairs) {
  TG_CHECK(pairs >= 0 && pairs <= 2, "set_gemv_qkv_pairs: 0, 1 or 2, got ", pairs);
  qkv_pairs_setting().store(pairs);
}
int gemv_qkv_pairs() { return qkv_pairs_setting().load(); }
void set_gemv_mma(GemvMma mode) { mma_setting().store(mode); }
GemvMma gemv_mma() { return mma_setting().load(); }

}  // namespace tuning

// Inside an EarlyTriggerScope (kernels/launch/programmatic_launch.h) the trigger comes right after the wait.
bool gemv_triggers_late(int64_t blocks) { return !early_trigger_enabled() && late_trigger_for(blocks); }

bool gemv_takes_mma(DType x, DType w, int64_t m) {
  if (x != DType::E4M3 || w != DType::E4M3) return false;
  switch (tuning::gemv_mma()) {
    case tuning::GemvMma::kAlways: return true;
    case tuning::GemvMma::kNever: return false;
    default: return m >= 2;
  }
}

namespace {
// The epilogue kernels' GEMV part: x [1, K] . W^T, both per-tensor E4M3 (checked by the caller), alpha 1.
GemvParams one_row_e4m3_params(const GemvOperand& x, const GemvOperand& w, const detail::GemvDims& d) {
  GemvParams p{};
  p.x = x.data.data;
  p.w = w.data.data;
  p.x_scale_inv = x.scale_inv.ptr<const float>();
  p.w_scale_inv = w.scale_inv.ptr<const float>();
  p.ldx = d.ldx;
  p.ldw = d.ldw;
  p.m = 1;
  p.n = static_cast<int>(d.n);
  p.k = static_cast<int>(d.k);
  p.chunks = static_cast<int>(d.k / 16);
  p.alpha = 1.0f;
  return p;
}
}  // namespace

namespace {
// The QKV + RoPE kernel: pairs per warp (1 or 2: the columns 2 x pairs), with or without the norm prologue.
template <int kPairs, bool kNorm>
constexpr auto qkv_rope_kernel_of() {
  if constexpr (kPairs == 2 && kNorm) {
    return gemv_kernel_6<true, true, 1, 4, 1, kEpiQkvRope, true>;
  } else {
    return gemv_kernel<true, true, 1, 2 * kPairs, 1, kEpiQkvRope, kNorm>;
  }
}
template <int kPairs, bool kNorm>
constexpr auto qkv_rope_kernel = qkv_rope_kernel_of<kPairs, kNorm>();
// Its blocks resident at once on the current GPU: one wave.
template <int kPairs, bool kNorm>
int64_t qkv_rope_wave() {
  static const int64_t wave =
      static_cast<int64_t>(resident_blocks(reinterpret_cast<const void*>(qkv_rope_kernel<kPairs, kNorm>), kThreads, 0)) *
      sm_count();
  return wave;
}
int64_t qkv_rope_wave(int pairs, bool norm) {
  if (pairs == 2) return norm ? qkv_rope_wave<2, true>() : qkv_rope_wave<2, false>();
  return norm ? qkv_rope_wave<1, true>() : qkv_rope_wave<1, false>();
}
// RoPE pairs per warp for n_pairs pairs: tuning::gemv_qkv_pairs() when set, else the rule: two when one pair per
// warp would take more than one resident wave (gemma-7b: 1536 blocks of one pair per warp, 1.66 waves of 924 on the
// H200; 768 blocks of two, one wave of 792), one otherwise (gemma-2b: 320 blocks).
int qkv_rope_pairs(int64_t n_pairs, bool norm) {
  const int forced = tuning::gemv_qkv_pairs();
  if (forced != 0) return forced;
  return static_cast<int64_t>(blocks_for(n_pairs, 1)) <= qkv_rope_wave(1, norm) ? 1 : 2;
}
unsigned qkv_rope_blocks(int64_t n_pairs, int pairs) { return blocks_for((n_pairs + pairs - 1) / pairs, 1); }
// GemvNorm -> the prologue's parameters (checked by the caller).
void set_norm(GemvParams& p, const GemvNorm& n) {
  GemvParams::Norm& m = p.norm;
  m.h = n.h.data;
  m.w = n.weight.data;
  m.eps = n.eps;
  m.inv_d = ieee::fdiv(1.0f, static_cast<float>(n.h.shape[1]));
  m.rstd = n.rstd.ptr<float>();
  m.x_scale = n.x.scale.ptr<const float>();
  m.x_scale_inv = n.x.scale_inv.ptr<float>();
  m.x_amax = n.x.amax.empty() ? nullptr : static_cast<uint32_t*>(n.x.amax.data);
}

void qkv_rope_impl(const GemvOperand& x, const GemvOperand& w, const TensorView& slots, const TensorView& positions,
                   const TensorView& inv_freq, const KvCache& cache, const TensorView& q_out, const TensorView& table,
                   const GemvNorm* norm, Stream stream) {
  TG_NVTX_FN();
  const detail::GemvQkvRopeDims d = detail::check_gemv_qkv_rope(x, w, slots, positions, inv_freq, cache, q_out, table);
  check_device(q_out, Device::CUDA, "cuda::gemv_qkv_rope(q_out)");
  TG_CHECK(d.gemv.k <= INT32_MAX && d.gemv.n <= INT32_MAX && d.max_seq <= INT32_MAX && d.cache_b <= INT32_MAX,
           "gemv_qkv_rope: sizes beyond the kernel's int range");
  GemvParams p = one_row_e4m3_params(x, w, d.gemv);
  GemvParams::RopeKv& e = p.rope;
  e.q_out = q_out.data;
  e.k_cache = cache.k.data;
  e.v_cache = cache.v.data;
  e.k_scale = d.fp8 ? cache.k_scale.ptr<const float>() : nullptr;
  e.v_scale = d.fp8 ? cache.v_scale.ptr<const float>() : nullptr;
  e.slots = slots.ptr<const int32_t>();
  e.positions = positions.ptr<const int32_t>();
  e.inv_freq = inv_freq.ptr<const float>();
  e.cos_sin = d.table_positions > 0 ? table.ptr<const float>() : nullptr;
  e.cos_sin_positions = static_cast<int>(d.table_positions);
  e.heads = static_cast<int>(d.heads);
  e.kv_heads = static_cast<int>(d.kv_heads);
  e.head_dim = static_cast<int>(d.head_dim);
  e.cache_b = static_cast<int>(d.cache_b);
  e.max_seq = static_cast<int>(d.max_seq);
  e.fp8 = d.fp8;
  e.per_head_scale = d.per_head_scale;
  // With the norm: every block computes the prologue, also past one resident wave (there correct, but slower: the
  // decoder uses it past one wave only when forced, gemv_norm_qkv_rope_one_wave).
  const int pairs = qkv_rope_pairs(d.gemv.n / 2, norm != nullptr);
  const unsigned blocks = qkv_rope_blocks(d.gemv.n / 2, pairs);
  const cudaStream_t s = cuda_stream(stream);
  if (norm != nullptr) set_norm(p, *norm);
  if (pairs == 2) {
    launch_gemv(norm != nullptr ? qkv_rope_kernel<2, true> : qkv_rope_kernel<2, false>, blocks, s, p);
  } else {
    launch_gemv(norm != nullptr ? qkv_rope_kernel<1, true> : qkv_rope_kernel<1, false>, blocks, s, p);
  }
  TG_CHECK_LAUNCH("gemv_kernel (QKV RoPE epilogue)");
}

// The norm's x operand, checked, on the GPU.
GemvOperand norm_operand(const GemvNorm& norm, const char* op) {
  const GemvOperand x = detail::check_gemv_norm(norm, op);
  check_device(norm.x.data, Device::CUDA, op);
  return x;
}
}  // namespace

void gemv_geglu(const GemvOperand& x, const GemvOperand& w, const Fp8View& act, Stream stream) {
  TG_NVTX_FN();
  const detail::GemvDims d = detail::check_gemv_geglu(x, w, act);
  check_device(act.data, Device::CUDA, "cuda::gemv_geglu(act)");
  TG_CHECK(d.k <= INT32_MAX && d.n <= INT32_MAX, "gemv_geglu: N = ", d.n, ", K = ", d.k,
           " is beyond the kernel's int range");
  GemvParams p = one_row_e4m3_params(x, w, d);
  p.act = static_cast<uint8_t*>(act.data.data);
  p.act_scale = act.scale.ptr<const float>();
  p.act_scale_inv = act.scale_inv.empty() ? nullptr : act.scale_inv.ptr<float>();
  p.act_amax = act.amax.empty() ? nullptr : static_cast<uint32_t*>(act.amax.data);
  launch_gemv(gemv_kernel<true, true, 1, 2, 1, kEpiGeglu>, blocks_for(d.n / 2, 1), cuda_stream(stream), p);
  TG_CHECK_LAUNCH("gemv_kernel (GeGLU epilogue)");
}

void gemv_qkv_rope(const GemvOperand& x, const GemvOperand& w, const TensorView& slots, const TensorView& positions,
                   const TensorView& inv_freq, const KvCache& cache, const TensorView& q_out, const TensorView& table,
                   Stream stream) {
  qkv_rope_impl(x, w, slots, positions, inv_freq, cache, q_out, table, nullptr, stream);
}
void gemv_norm_qkv_rope(const GemvNorm& norm, const GemvOperand& w, const TensorView& slots,
                        const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                        const TensorView& q_out, const TensorView& table, Stream stream) {
  qkv_rope_impl(norm_operand(norm, "cuda::gemv_norm_qkv_rope"), w, slots, positions, inv_freq, cache, q_out, table,
                &norm, stream);
}

bool gemv_norm_qkv_rope_one_wave(int64_t n) {
  TG_CHECK(n >= 2 && n % 2 == 0, "gemv_norm_qkv_rope_one_wave: N must be even and >= 2, got ", n);
  const int pairs = qkv_rope_pairs(n / 2, true);
  return static_cast<int64_t>(qkv_rope_blocks(n / 2, pairs)) <= qkv_rope_wave(pairs, true);
}

void gemv(const GemvOperand& x, const GemvOperand& w, const TensorView& out, const GemvOptions& opt,
          const TensorView& residual, Stream stream) {
  TG_NVTX_FN();
  const detail::GemvDims d = detail::check_gemv(x, w, out, residual);
  check_device(out, Device::CUDA, "cuda::gemv(out)");
  static_assert(kGemvMaxRows == 16, "launch() instantiates row tiles up to 16");
  const bool w_fp8 = w.data.dtype == DType::E4M3, x_fp8 = x.data.dtype == DType::E4M3;
  const int64_t chunks = d.k / (w_fp8 ? 16 : 8);
  TG_CHECK(d.k <= INT32_MAX && d.n <= INT32_MAX, "gemv: N = ", d.n, ", K = ", d.k, " is beyond the kernel's int range");
  GemvParams p{};
  p.x = x.data.data;
  p.w = w.data.data;
  p.x_scale_inv = x_fp8 ? x.scale_inv.ptr<const float>() : nullptr;
  p.w_scale_inv = w_fp8 ? w.scale_inv.ptr<const float>() : nullptr;
  p.out = out.data;
  p.residual = residual.empty() ? nullptr : residual.data;
  p.ldx = d.ldx;
  p.ldw = d.ldw;
  p.ldo = d.ldo;
  p.ldr = d.ldr;
  p.m = static_cast<int>(d.m);
  p.n = static_cast<int>(d.n);
  p.k = static_cast<int>(d.k);
  p.chunks = static_cast<int>(chunks);
  p.alpha = opt.alpha;
  p.out_f32 = out.dtype == DType::F32;
  const cudaStream_t s = cuda_stream(stream);
  if (gemv_takes_mma(x.data.dtype, w.data.dtype, d.m)) {
    launch_mma(p, s);
  } else if (!w_fp8) {
    dispatch<false, false>(p, s);
  } else if (!x_fp8) {
    dispatch<true, false>(p, s);
  } else {
    dispatch<true, true>(p, s);
  }
  TG_CHECK_LAUNCH("gemv_kernel");
}

}  // namespace tg::kernels::cuda
