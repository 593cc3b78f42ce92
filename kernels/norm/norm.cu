// CUDA Gemma RMSNorm: one warp per row (the LANE ORDER of norm.h is the warp's natural reduction), the
// row cached in registers as raw BF16 when D fits (else re-read), FP32 math through the IEEE helpers so
// the CPU twin (norm_cpu.cpp) is matched bit for bit.
// Bandwidth (the forward is memory-bound: ~3 bytes of HBM traffic per FLOP-light element): the forward
// grid is persistent (as many blocks as fit on the device, each looping over row groups), so g = 1 + w
// is staged ONCE per block in shared memory as FP32 and every row reads it from there. Re-reading w from
// global memory per 8-element chunk, after the previous chunk's store (which may alias w as far as the
// compiler knows), made every row a chain of D/256 dependent L2 round trips.
// Latency (measured on the H200 at T = 8192: each warp of the persistent grid owns only 2-4 rows): a
// warp that loads its row, reduces, computes and stores before it issues the next row's loads turns the
// kernel into 2-4 lock-step rounds of "burst of reads, then compute, then stores", with HBM idle in
// between (the FP8 variant, at 3 blocks per SM, did 3 rounds where the BF16 one did 2, and was slower
// although it writes half the bytes). So vectorisable BF16 rows are staged by cp.async in a per-warp
// double buffer in shared memory (kAsync): the warp's next row is in flight while the current one is
// computed, and the first row is requested before the block stages g. The FP8 epilogue is kept short
// (it was ~18 instructions per element): amax tracks max |y| in FP32 (one max.NaN per element) and
// rounds it to A once at the end (RN is monotonic, so max |round(y)| = round(max |y|)).
#include <algorithm>
#include <atomic>
#include <type_traits>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/elementwise/elementwise.cuh"
#include "kernels/elementwise/fp8_out.h"
#include "kernels/norm/norm.h"
#include "kernels/norm/norm_device.cuh"
#include "kernels/launch/device_info.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {

using dev::cp_async16;
using dev::cp_async_commit;
using dev::cp_async_wait;
using ew::Pack8;
using norm_device::max_abs_nan;
using norm_device::warp_butterfly_sum;
using namespace ieee;  // NOLINT: fmul/fadd/ffma read like the formulas in norm.h

constexpr int kFwdThreads = 256;  // 8 warps, one row each (or 4 rows each for the transposed FP8 tile)
constexpr int kFwdWarps = kFwdThreads / 32;
constexpr int kTileRows = 32;     // rows per block when the transposed FP8 copy is staged
constexpr int kBwdThreads = 128;  // 4 warps: 2 groups of 16 rows x 2 accumulation chains
constexpr int kBwdGroupsPerBlock = 2;

struct WeightRef {  // w: BF16 or F32 [D]; kernels stage g = 1 + w in shared memory (stage_gain)
  const void* w;
  bool bf16;
  bool vec;  // D % 8 == 0 and w 16-byte aligned: 8-element loads
};

struct FwdArgs {
  const void* x;
  int64_t ldx;
  void* residual;  // [T, D] in/out, or null
  int64_t ldr;
  WeightRef w;
  void* y;  // high-precision output [T, D], or null (FP8 output)
  int64_t ldy;
  float* rstd;
  uint32_t* amax;  // high-precision output's amax (optional)
  int64_t rows, cols;
  float eps, inv_d;
  bool vec;      // 8-element vector access on x, residual and y
  bool fp8_vec;  // 8-byte FP8 row stores
  int rows_per_block;
  int pitch;       // bytes per staged tile row; 0 = no transposed copy
  int gain_bytes;  // shared memory for g = 1 + w: chunks * 8 floats (a multiple of 32 bytes)
  int stage_off;   // kAsync: byte offset of the per-warp row buffers (after g and the tile)
  int stages;      // kAsync: row buffers per warp (1 or 2) = rows in flight ahead of the current one
  ew::Fp8Out fp8;
};

// FP32 g = 1 + w of chunk c (n valid elements, 0 past them) from global memory.
__device__ __forceinline__ void gain8_global(const WeightRef& w, int64_t c, int n, float (&v)[8]) {
  if (w.bf16)
    ew::unpack8(ew::load8_any(static_cast<const ew::bf16_t*>(w.w) + 8 * c, n, w.vec), v);
  else
    ew::unpack8(ew::load8_any(static_cast<const float*>(w.w) + 8 * c, n, w.vec), v);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = i < n ? ieee::fadd(1.0f, v[i]) : 0.0f;
}

// FP32 g = 1 + w for the padded row (chunks * 8 elements, zeros past D) into shared memory. All threads;
// 8 elements per thread per step, so the loads of a step are independent (D = 2048 is one step).
__device__ __forceinline__ void stage_gain(const WeightRef& w, int64_t cols, float* g) {
  const int64_t chunks = (cols + 7) / 8;
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
    float v[8];
    gain8_global(w, c, static_cast<int>(min(static_cast<int64_t>(8), cols - 8 * c)), v);
    float4* p = reinterpret_cast<float4*>(g + 8 * c);
    p[0] = make_float4(v[0], v[1], v[2], v[3]);
    p[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
  __syncthreads();
}

// g for the 8 elements of chunk c (two 16-byte shared-memory loads; padding reads as 0).
__device__ __forceinline__ void gain8_smem(const float* g, int64_t c, float (&out)[8]) {
  const float4* p = reinterpret_cast<const float4*>(g + 8 * c);
  const float4 lo = p[0], hi = p[1];
  out[0] = lo.x, out[1] = lo.y, out[2] = lo.z, out[3] = lo.w;
  out[4] = hi.x, out[5] = hi.y, out[6] = hi.z, out[7] = hi.w;
}

__device__ __forceinline__ void stage_fp8x8(uint8_t* p, uint2 q, int n) {
  if (n == 8) {  // p is 4-byte aligned (pitch and 8c are multiples of 4)
    reinterpret_cast<uint32_t*>(p)[0] = q.x;
    reinterpret_cast<uint32_t*>(p)[1] = q.y;
  } else {
    ew::store_fp8x8(p, q, n, false);
  }
}

// Pass 2 of one 8-element chunk c of row t (n valid elements): y = (h * rstd) * (1 + w), one rounding at the store.
// BF16 / F32 output: y stored (amax of y tracked when asked). FP8 output: V = round_A(y) (the value the BF16 kernel
// stores), amax of y tracked (rounded to A once at the end), V * scale quantized and stored row-wise when asked;
// returns the 8 FP8 codes (the caller stages them for the transposed copy). Padding elements give y = 0 (h = 0,
// g = 0, r finite), or NaN only when the row has a NaN: the amax needs no mask. fp8row: row t of the row-wise FP8
// data (a.fp8.data + t * cols, computed once per row by the caller), or null when there is none.
template <typename T, typename Out>
__device__ __forceinline__ uint2 emit8(const FwdArgs& a, int64_t t, int64_t c, int n, const Pack8<T>& h, float r,
                                       const float (&g)[8], float scale, bool vec, bool fp8_vec, float& amax_y,
                                       uint8_t* fp8row) {
  float y[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) y[i] = fmul(fmul(h.get(i), r), g[i]);
  if constexpr (std::is_same_v<Out, T>) {
    ew::store8_any(static_cast<T*>(a.y) + t * a.ldy + 8 * c, y, n, vec);
    if (a.amax != nullptr) {
#pragma unroll
      for (int i = 0; i < 8; ++i) amax_y = max_abs_nan(amax_y, y[i]);
    }
    return make_uint2(0u, 0u);
  } else {
    const Pack8<T> vp = ew::pack8<T>(y);
    float v[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      v[i] = vp.get(i);
      amax_y = max_abs_nan(amax_y, y[i]);
    }
    const uint2 q = ew::quantize8<Out>(v, scale);
    if (fp8row != nullptr) ew::store_fp8x8(fp8row + 8 * c, q, n, fp8_vec);
    return q;
  }
}

// The forward's last step, every thread of the block: the amax over V = round_A(y) (RN is monotonic and odd, so
// max |round_A(y)| = round_A(max |y|); abs_bits maps a NaN to the canonical key), and the FP8 scale_inv.
template <typename T, typename Out>
__device__ __forceinline__ void commit_forward_amax(const FwdArgs& a, float amax_y) {
  const uint32_t amax_bits = abs_bits(ew::round_to<T>(amax_y));
  if constexpr (!std::is_same_v<Out, T>) {
    if (a.fp8.amax != nullptr) ew::block_amax_commit(a.fp8.amax, amax_bits);
    ew::write_scale_inv(a.fp8);
  } else {
    if (a.amax != nullptr) ew::block_amax_commit(a.amax, amax_bits);
  }
}

// kSpread: one row per block (grid = rows; the launcher takes it for at most one row per SM, e.g. a decode step's
// 1-64 rows, without a residual or a transposed copy). Warp 0 computes the row's sum of squares exactly as the
// warp-per-row kernel does (all N chunks of each lane, the LANE ORDER, the butterfly): same rstd, same bits. Then
// all 8 warps write the output, warp w the chunks k = w, w + 8, ... of every lane, loaded (with their 1 + w) before
// the barrier. The decode step's one-row norm took 4.8 us when one warp also did the epilogue of all 8 chunks
// (~770 instructions at ~13 cycles each, one warp issuing: latency-bound; session 5/6 profiles); here the
// epilogue's chain is an eighth as long and the loads are in flight while warp 0 reduces.
template <typename T, typename Out, int N>
__device__ __forceinline__ void rmsnorm_spread_row(const FwdArgs& a) {
  constexpr bool kFp8 = !std::is_same_v<Out, T>;
  constexpr int kPer = (N + kFwdWarps - 1) / kFwdWarps;  // epilogue chunks per lane of this warp
  __shared__ float r_shared;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t t = blockIdx.x;
  const int64_t chunks = (a.cols + 7) / 8;
  const T* xrow = static_cast<const T*>(a.x) + t * a.ldx;
  auto valid = [&](int64_t c) { return static_cast<int>(min(static_cast<int64_t>(8), a.cols - 8 * c)); };
  // The FP8 scale, requested before the row so that its round trip overlaps the row's (it was read after the
  // barrier: one more dependent round trip on the one-row decode norm's path). Consumed after the barrier.
  float scale = 1.0f;
  if constexpr (kFp8) scale = *a.fp8.scale;
  Pack8<T> mine[kPer];
  float g[kPer][8];  // 1 + w (stage_gain's values; 0 past D)
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int k = warp + kFwdWarps * j;
    const int64_t c = lane + 32 * k;
    if (k < N && c < chunks) {
      mine[j] = ew::load8_any(xrow + 8 * c, valid(c), a.vec);
      gain8_global(a.w, c, valid(c), g[j]);
    }
  }
  if (warp == 0) {  // pass 1 of the warp-per-row kernel
    Pack8<T> cache[N];
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const int64_t c = lane + 32 * k;
      if (c < chunks) cache[k] = ew::load8_any(xrow + 8 * c, valid(c), a.vec);
    }
    float acc = 0.0f;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      if (lane + 32 * k < chunks) {
#pragma unroll
        for (int i = 0; i < 8; ++i) acc = ffma(cache[k].get(i), cache[k].get(i), acc);
      }
    }
    acc = warp_butterfly_sum(acc);
    const float r = norm_device::rstd_of(acc, a.inv_d, a.eps);
    if (lane == 0) {
      r_shared = r;
      a.rstd[t] = r;
    }
  }
  __syncthreads();
  const float r = r_shared;
  float amax_y = 0.0f;
  uint8_t* const fp8row = kFp8 && a.fp8.data != nullptr ? a.fp8.data + t * a.cols : nullptr;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int k = warp + kFwdWarps * j;
    const int64_t c = lane + 32 * k;
    if (k < N && c < chunks) {  // the warp kernel's emit, with g from registers
      (void)emit8<T, Out>(a, t, c, valid(c), mine[j], r, g[j], scale, a.vec, a.fp8_vec, amax_y, fp8row);
    }
  }
  commit_forward_amax<T, Out>(a, amax_y);
}

// Persistent grid of 256-thread blocks: block b handles the row groups b, b + gridDim.x, ... of
// rows_per_block rows each; warp w of a block normalises rows w, w + 8, ... of the group. Dynamic shared
// memory: gain_bytes for g, then rows_per_block * pitch bytes when the transposed FP8 copy is written,
// then (kAsync) the row buffers at stage_off: per warp `stages` buffers x {x[, residual]} x D elements.
// N > 0: chunks per lane cached in registers (N * 32 * 8 >= D); N == 0: re-read the row.
// kAsync (BF16, N > 0, vectorisable rows): the warp's rows come through its ring of S = stages buffers:
// row j is copied into buffer j % S; once row j is in registers (and consumed by pass 1, so no read of
// the buffer is outstanding) the copy of row j + S is issued into the same buffer, so S rows are in
// flight while row j is computed. Each lane copies and reads back only its own chunks, so the thread's
// cp.async.wait_group is all the synchronisation needed.
// Resident blocks per SM asked of the register allocator (4 = 64 registers, 3 = 80, 2 = 128), as many as
// the cached row allows without spilling (the residual variant holds two rows while it loads, the FP8
// epilogue needs a few more registers); kAsync kernels are limited by shared memory first.
constexpr int fwd_min_blocks(int n, bool residual, bool fp8, bool async) {
  if (async) {
    if (residual) return n <= 4 ? 3 : n <= 12 ? 2 : 1;
    return n <= 8 ? 3 : n <= 12 ? 2 : 1;
  }
  if (residual) return n <= 2 ? 4 : n <= 4 ? 3 : n <= 12 ? 2 : 1;
  if (fp8) return n <= 8 ? 3 : 2;
  return n <= 8 ? 4 : n <= 12 ? 3 : 2;
}

// Schedules of the kFull kernel without residual (the same rows, loads and arithmetic, so the same bits; chosen by
// launch_forward, tuning::set_rmsnorm_schedule in norm.h). kSchedRing: fwd_min_blocks and the launcher's ring depth
// (2 rows at the Gemma widths: 3 blocks per SM at N 8, 2 at N 12). kSchedOccupancy: fwd_occupancy_min_blocks with a
// 1-row ring, so more warps share an SM and each requests fewer rows at launch (docs/rmsnorm_rope_analysis.md, change
// A2). H200 (session 9, 8192 rows, us, ring / occupancy): N 8 E4M3 19.36 / 16.65, BF16 21.53 / 20.13; N 12 E4M3
// 25.33 / 25.56, BF16 29.38 / 30.09: the occupancy schedule at N 8 only. (A staggered start of the 2-row ring, one row
// requested at launch and the next when it landed, change A3, measured no better: N 8 E4M3 19.79, and was removed.)
constexpr int kSchedRing = 0, kSchedOccupancy = 1;

// kSchedOccupancy's resident blocks per SM asked of the register allocator: 4 (64 registers) at N 8, 3 (80) at N 12;
// compiled for sm_90a (CUDA 13) without local memory, BF16 and FP8 output.
constexpr int fwd_occupancy_min_blocks(int n) { return n <= 8 ? 4 : 3; }

// kFull (kAsync only): every row is exactly 32 * N whole chunks and every access is a vector one (a.vec, and
// a.fp8_vec for FP8 output), so the per-chunk bounds checks, partial-chunk paths and their branches compile away
// (the SASS of the general kernel spent more instructions on them than on the math: ~24 per element, issue-bound
// at 57% of the issue slots on the H200 at 8192x2048). Same arithmetic, same bits.
template <typename T, typename Out, int N, bool kResidual, bool kAsync, bool kFull = false, bool kSpread = false,
          int kSched = kSchedRing>
__global__ void __launch_bounds__(kFwdThreads, kSched == kSchedOccupancy
                                                   ? fwd_occupancy_min_blocks(N)
                                                   : fwd_min_blocks(N, kResidual, !std::is_same_v<Out, T>, kAsync))
    rmsnorm_forward_kernel(const FwdArgs a) {
  static_assert(!kFull || kAsync, "kFull: the cp.async path (whole vectorisable rows)");
  static_assert(kSched == kSchedRing || (kFull && !kResidual), "schedules: the kFull kernel without residual");
  static_assert(!kSpread || (N > 0 && !kResidual && !kAsync && !kFull), "kSpread: cached rows, no residual");
  dev::pdl_enter();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  if constexpr (kSpread) {
    rmsnorm_spread_row<T, Out, N>(a);
    return;
  }
  constexpr bool kFp8 = !std::is_same_v<Out, T>;
  static_assert(!kAsync || (N > 0 && std::is_same_v<T, ew::bf16_t>), "kAsync: BF16 rows cached in registers");
  extern __shared__ __align__(16) uint8_t smem[];
  float* gsm = reinterpret_cast<float*>(smem);
  uint8_t* tile = smem + a.gain_bytes;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t chunks = (a.cols + 7) / 8;
  // Rows per group and row buffers per warp: the launcher's values, which kSchedOccupancy (no transposed copy, so one
  // row per warp per group; a 1-row ring) fixes at compile time: with run-time values it spilled 16 B at 64
  // registers (BF16 output).
  auto rows_per_block = [&]() -> int {
    if constexpr (kSched == kSchedOccupancy) return kFwdWarps;
    return a.rows_per_block;
  };
  [[maybe_unused]] auto stages = [&]() -> int {
    if constexpr (kSched == kSchedOccupancy) return 1;
    return a.stages;
  };
  const int64_t groups = (a.rows + rows_per_block() - 1) / rows_per_block();
  float scale = 1.0f;
  if constexpr (kFp8) scale = *a.fp8.scale;
  float amax_y = 0.0f;  // max |y| over this thread's elements (FP32, before the rounding to A)

  // kAsync: this warp's buffers, buffer b of tensor k (0 = x, 1 = residual) at (kTensors * b + k) * cols.
  constexpr int kTensors = kResidual ? 2 : 1;
  [[maybe_unused]] int buf = 0;  // the buffer of the warp's current row (rows go round the ring in order)
  [[maybe_unused]] T* rowbuf =
      reinterpret_cast<T*>(smem + a.stage_off) + static_cast<int64_t>(warp) * stages() * kTensors * a.cols;
  // kAsync: the next row this warp copies, in the order of the loops below (group pf_grp, the warp's
  // pf_i-th row of it).
  [[maybe_unused]] int64_t pf_grp = blockIdx.x;
  [[maybe_unused]] int pf_i = 0;
  // Copies of the warp's next row (if any) into buffer b: one commit group per call (possibly empty).
  [[maybe_unused]] auto prefetch_next = [&](int b) {
    const int64_t t = pf_grp * rows_per_block() + warp + kFwdWarps * pf_i;
    const bool live = pf_grp < groups && t < a.rows;
    if (++pf_i * kFwdWarps == rows_per_block()) {
      pf_i = 0;
      pf_grp += gridDim.x;
    }
    if (live && kFull) {  // whole rows: one row pointer per tensor, chunk k at the constant offset 256 k elements
      constexpr int64_t kCols = int64_t{256} * N;  // == a.cols (the launcher's kFull condition)
      const T* src = static_cast<const T*>(a.x) + t * a.ldx + 8 * lane;
      T* dst = rowbuf + (kTensors * b) * kCols + 8 * lane;
      [[maybe_unused]] const T* rsrc = kResidual ? static_cast<const T*>(a.residual) + t * a.ldr + 8 * lane : nullptr;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        cp_async16(dst + 256 * k, src + 256 * k);
        if constexpr (kResidual) cp_async16(dst + kCols + 256 * k, rsrc + 256 * k);
      }
    } else if (live) {
      const T* xrow = static_cast<const T*>(a.x) + t * a.ldx;
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const int64_t c = lane + 32 * k;
        if (c < chunks) {  // kFull takes the branch above
          cp_async16(rowbuf + (kTensors * b) * a.cols + 8 * c, xrow + 8 * c);
          if constexpr (kResidual) {
            cp_async16(rowbuf + (kTensors * b + 1) * a.cols + 8 * c,
                       static_cast<const T*>(a.residual) + t * a.ldr + 8 * c);
          }
        }
      }
    }
    cp_async_commit();
  };
  if constexpr (kAsync) {  // in flight while the block stages g
    for (int b = 0; b < stages(); ++b) prefetch_next(b);
  }
  stage_gain(a.w, a.cols, gsm);

  for (int64_t grp = blockIdx.x; grp < groups; grp += gridDim.x) {
    const int64_t row0 = grp * rows_per_block();
    const int rows_here = static_cast<int>(min(static_cast<int64_t>(rows_per_block()), a.rows - row0));
    for (int rr = warp; rr < rows_here; rr += kFwdWarps) {
      const int64_t t = row0 + rr;
      const T* xrow = static_cast<const T*>(a.x) + t * a.ldx;
      T* rrow = kResidual ? static_cast<T*>(a.residual) + t * a.ldr : nullptr;
      auto valid = [&](int64_t c) {
        if constexpr (kFull) return 8;
        return static_cast<int>(min(static_cast<int64_t>(8), a.cols - 8 * c));
      };
      const bool vec = kFull || a.vec, fp8_vec = kFull || a.fp8_vec;
      // h = x, or round(residual + x) written back to the residual stream.
      auto add_residual = [&](int64_t c, int n, Pack8<T> xv, Pack8<T> rv) {
        float h[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) h[i] = ew::round_to<T>(fadd(rv.get(i), xv.get(i)));
        ew::store8_any(rrow + 8 * c, h, n, vec);
        return ew::pack8<T>(h);
      };
      if constexpr (kAsync) {
        if (stages() == 2)
          cp_async_wait<1>();  // row j has landed; row j + 1 may still be in flight
        else
          cp_async_wait<0>();
      }

      // Pass 1: sum of squares in the LANE ORDER (padding elements are +0 and add nothing to acc >= 0).
      float acc = 0.0f;
      [[maybe_unused]] Pack8<T> cache[N > 0 ? N : 1];
      if constexpr (N > 0) {
        [[maybe_unused]] Pack8<T> rcache[kResidual ? N : 1];
#pragma unroll
        for (int k = 0; k < N; ++k) {  // all loads first: N independent 16-byte loads in flight
          const int64_t c = lane + 32 * k;
          if (kFull || c < chunks) {
            if constexpr (kAsync) {
              if constexpr (std::is_same_v<T, ew::bf16_t>) {
                cache[k] = {*reinterpret_cast<const uint4*>(rowbuf + (kTensors * buf) * a.cols + 8 * c)};
                if constexpr (kResidual)
                  rcache[k] = {*reinterpret_cast<const uint4*>(rowbuf + (kTensors * buf + 1) * a.cols + 8 * c)};
              }
            } else {
              cache[k] = ew::load8_any(xrow + 8 * c, valid(c), a.vec);
              if constexpr (kResidual) rcache[k] = ew::load8_any(rrow + 8 * c, valid(c), a.vec);
            }
          }
        }
#pragma unroll
        for (int k = 0; k < N; ++k) {
          const int64_t c = lane + 32 * k;
          if (kFull || c < chunks) {
            if constexpr (kResidual) cache[k] = add_residual(c, valid(c), cache[k], rcache[k]);
#pragma unroll
            for (int i = 0; i < 8; ++i) acc = ffma(cache[k].get(i), cache[k].get(i), acc);
          }
        }
        if constexpr (kAsync) {  // the buffer's reads are consumed: it takes the row `stages` ahead
          prefetch_next(buf);
          buf = (buf + 1) & (stages() - 1);
        }
      } else {
        for (int64_t c = lane; c < chunks; c += 32) {
          Pack8<T> h = ew::load8_any(xrow + 8 * c, valid(c), a.vec);
          if constexpr (kResidual) h = add_residual(c, valid(c), h, ew::load8_any(rrow + 8 * c, valid(c), a.vec));
#pragma unroll
          for (int i = 0; i < 8; ++i) acc = ffma(h.get(i), h.get(i), acc);
        }
      }
      acc = warp_butterfly_sum(acc);
      const float r = norm_device::rstd_of(acc, a.inv_d, a.eps);
      if (lane == 0) a.rstd[t] = r;

      // Pass 2 (emit8): y = (h * rstd) * (1 + w), stored or rounded, amax-tracked and quantized. The FP8 row pointer
      // is formed once per row: per chunk, behind the null test, the compiler re-derived t * cols in 64 bits for each
      // deferred store (~9 integer instructions per 8-byte store in the 2048-column kFull SASS).
      uint8_t* const fp8row = kFp8 && a.fp8.data != nullptr ? a.fp8.data + t * a.cols : nullptr;
      auto emit = [&](int64_t c, const Pack8<T>& h) {
        const int n = valid(c);
        float g[8];
        gain8_smem(gsm, c, g);
        const uint2 q = emit8<T, Out>(a, t, c, n, h, r, g, scale, vec, fp8_vec, amax_y, fp8row);
        if constexpr (kFp8) {
          if (a.pitch != 0) stage_fp8x8(tile + rr * a.pitch + 8 * c, q, n);
        }
      };
      if constexpr (N > 0) {
#pragma unroll
        for (int k = 0; k < N; ++k) {
          const int64_t c = lane + 32 * k;
          if (kFull || c < chunks) emit(c, cache[k]);
        }
      } else {
        for (int64_t c = lane; c < chunks; c += 32) {
          emit(c, ew::load8_any((kResidual ? rrow : xrow) + 8 * c, valid(c), a.vec));
        }
      }
      // kSchedOccupancy: one row per warp per group (rows_per_block() == kFwdWarps: the launcher takes it only without
      // the transposed copy), which the compiler does not infer from the loop bounds; the loop's state then stays live
      // and spilled (BF16 output at 64 registers).
      if constexpr (kSched == kSchedOccupancy) break;
    }
    if constexpr (kFp8) {
      if (a.pitch != 0) {  // the group's tile is complete: write its transpose, then reuse the tile
        __syncthreads();
        ew::store_transposed_tile(tile, a.pitch, rows_here, static_cast<int>(a.cols), a.fp8.col_data, a.rows, row0, 0);
        __syncthreads();
      }
    }
  }
  if constexpr (kAsync) cp_async_wait<0>();  // no copy outlives the block (the last group is empty)

  commit_forward_amax<T, Out>(a, amax_y);
}

struct BwdArgs {
  const void* dy;
  int64_t lddy;
  const void* x;
  int64_t ldx;
  WeightRef w;
  const float* rstd;
  void* dx;
  int64_t lddx;
  const void* dres;
  int64_t lddr;
  float* ws;  // [2 * groups, D]: group partials, then the chain-1 scratch rows
  int64_t rows, cols, groups;
  float inv_d;
  bool vec;        // 8-element vector access on dy, x, dx, dres
  bool ws_vec;     // ... and on the workspace
  int gain_bytes;  // shared memory for g = 1 + w (as in the forward)
};

// Grid: ceil(groups / 2) blocks of 128 threads = 2 groups x 2 chains: warp w handles group
// g = 2 * blockIdx.x + w / 2, chain s = w % 2, i.e. rows 16g + s, 16g + s + 2, ... in increasing order,
// accumulating its dw chain (FMA, per lane-owned column) in registers (N > 0) or in the workspace
// (N == 0: chain 0 in row g, chain 1 in scratch row groups + g). At the end the chain-1 warp hands its
// partial to the chain-0 warp (shared memory, or the scratch row), which writes ws[g] = P0 + P1.
// kAsync (N > 0 and a.vec): a warp's rows are double-buffered in shared memory by cp.async, so the next
// row's x and dy (8-12 KB) are in flight while the current one is computed: with only 16 rows per dw
// group and 2 chains, a T = 8192 grid has ~8 warps per SM, each a serial chain of 8 rows, and without
// the prefetch each row paid a full HBM round trip with nothing else in flight. Each lane copies and
// reads back only its own chunks, so in the row loop the thread's cp.async.wait_group is all the synchronisation
// needed. Dynamic shared memory: gain_bytes for g, then (kAsync) 4 warps x 2 buffers x {x, dy} x chunks * 8
// elements, or (N > 0) 2 * D floats of handoff. The kAsync handoff reuses the chain-1 warp's buffers at float width
// (other lanes' bytes: after a __syncwarp).
template <typename T, int N, bool kDres, bool kAsync>
__global__ void __launch_bounds__(kBwdThreads) rmsnorm_backward_kernel(const BwdArgs a) {
  extern __shared__ __align__(16) uint8_t bsm[];
  float* gsm = reinterpret_cast<float*>(bsm);
  float* handoff = reinterpret_cast<float*>(bsm + a.gain_bytes);  // [2][D]: chain-1 partials (N > 0, !kAsync)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int chain = warp & 1, slot = warp >> 1;
  const int64_t grp = static_cast<int64_t>(blockIdx.x) * kBwdGroupsPerBlock + slot;
  const bool active = grp < a.groups;  // no early return: the block synchronises below
  const int64_t chunks = (a.cols + 7) / 8;
  const int64_t t_end = active ? min(a.rows, (grp + 1) * norm_detail::kBwdGroupRows) : 0;
  float* wsrow = a.ws + (grp + (chain == 0 ? 0 : a.groups)) * a.cols;
  auto valid = [&](int64_t c) { return static_cast<int>(min(static_cast<int64_t>(8), a.cols - 8 * c)); };
  // kAsync: this warp's buffers [2][{x, dy}][chunks * 8] (buffer b, tensor k at (2b + k) * pitch).
  const int64_t pitch = chunks * 8;
  [[maybe_unused]] T* rowbuf = reinterpret_cast<T*>(bsm + a.gain_bytes) + static_cast<int64_t>(warp) * 4 * pitch;
  const int64_t t_first = grp * norm_detail::kBwdGroupRows + chain;
  // kAsync: copies of row t into buffer b (one commit group per row).
  [[maybe_unused]] auto prefetch = [&](int64_t t, int b) {
    const T* xrow = static_cast<const T*>(a.x) + t * a.ldx;
    const T* dyrow = static_cast<const T*>(a.dy) + t * a.lddy;
#pragma unroll
    for (int k = 0; k < (N > 0 ? N : 1); ++k) {
      const int64_t c = lane + 32 * k;
      if (c < chunks) {
        cp_async16(rowbuf + (2 * b) * pitch + 8 * c, xrow + 8 * c);
        cp_async16(rowbuf + (2 * b + 1) * pitch + 8 * c, dyrow + 8 * c);
      }
    }
    cp_async_commit();
  };
  if constexpr (kAsync) {  // the first row is in flight while the block stages g
    if (t_first < t_end) prefetch(t_first, 0);
  }
  stage_gain(a.w, a.cols, gsm);

  [[maybe_unused]] float accw[N > 0 ? N : 1][8];
  if constexpr (N > 0) {
#pragma unroll
    for (int k = 0; k < N; ++k) {
#pragma unroll
      for (int i = 0; i < 8; ++i) accw[k][i] = 0.0f;
    }
  } else if (active) {
    const float zero[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t c = lane; c < chunks; c += 32) ew::store8_any(wsrow + 8 * c, zero, valid(c), a.ws_vec);
  }

  float r_next = t_first < t_end ? a.rstd[t_first] : 0.0f;
  int buf = 0;

  for (int64_t t = t_first; t < t_end; t += norm_detail::kBwdChains, buf ^= 1) {
    const float r = r_next;
    const bool more = t + norm_detail::kBwdChains < t_end;
    if (more) r_next = a.rstd[t + norm_detail::kBwdChains];  // in flight during this row
    if constexpr (kAsync) {
      if (more) {
        prefetch(t + norm_detail::kBwdChains, buf ^ 1);
        cp_async_wait<1>();  // this row's group is complete, the next one may still be in flight
      } else {
        cp_async_wait<0>();
      }
    }
    const T* xrow = static_cast<const T*>(a.x) + t * a.ldx;
    const T* dyrow = static_cast<const T*>(a.dy) + t * a.lddy;
    T* dxrow = static_cast<T*>(a.dx) + t * a.lddx;
    const T* drrow = kDres ? static_cast<const T*>(a.dres) + t * a.lddr : nullptr;

    // c = (sum dn * n) / D in the LANE ORDER; padding elements are skipped (acc may be -0).
    float acc = 0.0f;
    auto dot_chunk = [&](int64_t c, const Pack8<T>& xv, const Pack8<T>& dv) {
      const int n = valid(c);
      float g[8];
      gain8_smem(gsm, c, g);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        if (i < n) acc = ffma(fmul(dv.get(i), g[i]), fmul(xv.get(i), r), acc);
      }
    };
    // dx = rstd * (dn - n * c), dw chain += dy * n.
    auto grad_chunk = [&](int64_t c, const Pack8<T>& xv, const Pack8<T>& dv, float cc, float(&aw)[8]) {
      const int n = valid(c);
      float g[8], dx[8];
      gain8_smem(gsm, c, g);
      [[maybe_unused]] float dr[8];
      if constexpr (kDres) ew::unpack8(ew::load8_any(drrow + 8 * c, n, a.vec), dr);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float nv = fmul(xv.get(i), r), dn = fmul(dv.get(i), g[i]);
        dx[i] = fmul(r, fsub(dn, fmul(nv, cc)));
        if constexpr (kDres) dx[i] = fadd(ew::round_to<T>(dx[i]), dr[i]);
        if (i < n) aw[i] = ffma(dv.get(i), nv, aw[i]);
      }
      ew::store8_any(dxrow + 8 * c, dx, n, a.vec);
    };

    if constexpr (N > 0) {
      Pack8<T> xc[N], dc[N];
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const int64_t c = lane + 32 * k;
        if (c < chunks) {
          if constexpr (kAsync) {  // whole chunks (a.vec: D % 8 == 0)
            xc[k] = {*reinterpret_cast<const uint4*>(rowbuf + (2 * buf) * pitch + 8 * c)};
            dc[k] = {*reinterpret_cast<const uint4*>(rowbuf + (2 * buf + 1) * pitch + 8 * c)};
          } else {
            xc[k] = ew::load8_any(xrow + 8 * c, valid(c), a.vec);
            dc[k] = ew::load8_any(dyrow + 8 * c, valid(c), a.vec);
          }
        }
      }
#pragma unroll
      for (int k = 0; k < N; ++k) {
        if (lane + 32 * k < chunks) dot_chunk(lane + 32 * k, xc[k], dc[k]);
      }
      const float cc = fmul(warp_butterfly_sum(acc), a.inv_d);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        if (lane + 32 * k < chunks) grad_chunk(lane + 32 * k, xc[k], dc[k], cc, accw[k]);
      }
    } else {
      for (int64_t c = lane; c < chunks; c += 32) {
        dot_chunk(c, ew::load8_any(xrow + 8 * c, valid(c), a.vec), ew::load8_any(dyrow + 8 * c, valid(c), a.vec));
      }
      const float cc = fmul(warp_butterfly_sum(acc), a.inv_d);
      for (int64_t c = lane; c < chunks; c += 32) {
        float aw[8];
        ew::unpack8(ew::load8_any(wsrow + 8 * c, valid(c), a.ws_vec), aw);
        grad_chunk(c, ew::load8_any(xrow + 8 * c, valid(c), a.vec), ew::load8_any(dyrow + 8 * c, valid(c), a.vec), cc,
                   aw);
        ew::store8_any(wsrow + 8 * c, aw, valid(c), a.ws_vec);
      }
    }
  }

  // ws[g] = P0 + P1.
  if constexpr (N > 0) {
    // kAsync: the chain-1 warp's row buffers (4 * chunks * 8 BF16 >= chunks * 8 floats), idle by now.
    float* mine = kAsync
                      ? reinterpret_cast<float*>(reinterpret_cast<T*>(bsm + a.gain_bytes) + (2 * slot + 1) * 4 * pitch)
                      : handoff + slot * a.cols;
    if (active && chain == 1) {
      // kAsync: a lane's float chunk covers two BF16 chunks of the buffers, copied and read by other lanes: the
      // whole warp is past its last read first (racecheck, session 10: a warp-level WAW with the cp.async writes).
      if constexpr (kAsync) __syncwarp();
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const int64_t c = lane + 32 * k;
        if (c < chunks) ew::store8_any(mine + 8 * c, accw[k], valid(c), a.ws_vec);
      }
    }
    __syncthreads();
    if (active && chain == 0) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const int64_t c = lane + 32 * k;
        if (c < chunks) {
          float other[8], sum[8];
          ew::unpack8(ew::load8_any(mine + 8 * c, valid(c), a.ws_vec), other);
#pragma unroll
          for (int i = 0; i < 8; ++i) sum[i] = fadd(accw[k][i], other[i]);
          ew::store8_any(wsrow + 8 * c, sum, valid(c), a.ws_vec);
        }
      }
    }
  } else {
    __syncthreads();  // the chain-1 scratch row is complete and visible to the block
    if (active && chain == 0) {
      const float* other_row = a.ws + (grp + a.groups) * a.cols;
      for (int64_t c = lane; c < chunks; c += 32) {
        float p0[8], p1[8];
        ew::unpack8(ew::load8_any(wsrow + 8 * c, valid(c), a.ws_vec), p0);
        ew::unpack8(ew::load8_any(other_row + 8 * c, valid(c), a.ws_vec), p1);
#pragma unroll
        for (int i = 0; i < 8; ++i) p0[i] = fadd(p0[i], p1[i]);
        ew::store8_any(wsrow + 8 * c, p0, valid(c), a.ws_vec);
      }
    }
  }
}

// dw[j] = sum over slices s (ascending) of sum over groups g = s, s + 32, ... (ascending) of ws[g, j].
// Grid: ceil(D / 32) blocks of 32 columns x 32 slices.
__global__ void __launch_bounds__(1024)
    rmsnorm_dw_reduce_kernel(const float* __restrict__ ws, int64_t groups, int64_t cols, void* dw, bool dw_bf16) {
  __shared__ float part[norm_detail::kReduceSlices][33];
  const int cl = threadIdx.x & 31, s = threadIdx.x >> 5;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * 32 + cl;
  float p = 0.0f;
  if (j < cols) {
#pragma unroll 4
    for (int64_t g = s; g < groups; g += norm_detail::kReduceSlices) p = fadd(p, ws[g * cols + j]);
  }
  part[s][cl] = p;
  __syncthreads();
  if (s == 0 && j < cols) {
    float total = part[0][cl];
    for (int k = 1; k < norm_detail::kReduceSlices; ++k) total = fadd(total, part[k][cl]);
    if (dw_bf16)
      static_cast<ew::bf16_t*>(dw)[j] = __float2bfloat16_rn(total);
    else
      static_cast<float*>(dw)[j] = total;
  }
}

// ---- launch helpers -------------------------------------------------------------------------------
// Chunks per lane cached in registers for BF16 rows (F32 rows use the re-reading path).
int cached_chunks(DType a, int64_t cols, bool backward) {
  if (a != DType::BF16) return 0;
  const int64_t per_lane = ((cols + 7) / 8 + 31) / 32;
  for (int n : {2, 4, 8, 12, 16}) {
    if (backward && n > 12) break;  // 12 chunks: x, dy and the dw partial use ~200 registers
    if (per_lane <= n) return n;
  }
  return 0;
}

// Calls f(std::integral_constant<int, N>{}) for the N among Ns equal to n (the chunks per lane from
// cached_chunks) and returns true, or returns false, calling nothing, where none is: the launchers then take their
// N = 0 (re-reading) kernel. Each launcher lists the N it instantiates kernels for.
template <int... Ns, typename F>
bool dispatch_chunks(int n, F&& f) {
  return ((n == Ns && (f(std::integral_constant<int, Ns>{}), true)) || ...);
}

// Shared memory per block: FP32 g = 1 + w (4 * D bytes), plus the forward's 32-row FP8 tile for the
// transposed copy (32 * D bytes) or the backward's row buffers (up to 32 * D bytes) - it must fit.
void check_smem(size_t smem, int64_t cols, const char* what) {
  const int max_smem = max_smem_per_block();
  TG_CHECK(smem <= static_cast<size_t>(max_smem), what, ": D = ", cols, " needs ", smem,
           " B of shared memory per block (FP32 1 + w, and the staging buffers of this variant), more than the "
           "device's ",
           max_smem, " B");
}

// Launches a persistent grid: min(row groups, blocks resident on the device at once), at least 1 block
// (the FP8 variant writes scale_inv even for T == 0). Session 8 measured the alternative, one block per row group
// on a non-persistent grid: slower at 8192 x 2048 / 3072 (E4M3 21.1 / 33.5 us vs 19.7 / 26.6), so it was removed.
template <typename T, typename Out, bool kRes>
void launch_forward(int n, FwdArgs a, size_t smem, cudaStream_t s) {
  const int sms = sm_count(), max_smem = max_smem_per_block();
  auto go = [&](auto kernel, size_t bytes) {
    const int per_sm = resident_blocks(reinterpret_cast<const void*>(kernel), kFwdThreads, bytes);  // + smem opt-in
    const int64_t groups = (a.rows + a.rows_per_block - 1) / a.rows_per_block;
    const int64_t cap = static_cast<int64_t>(std::max(per_sm, 1)) * sms;
    const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(groups, cap));  // blocks loop over the rest
    launch(kernel, dim3(static_cast<unsigned>(blocks)), kFwdThreads, bytes, s, a);
  };
  if constexpr (std::is_same_v<T, ew::bf16_t>) {
    // kAsync when the rows are vectorisable and the per-warp row buffers fit next to g (and the tile):
    // two buffers per warp unless one buffer lets more blocks share an SM.
    a.stage_off = static_cast<int>(smem);
    auto async_smem = [&](int stages) {
      return smem + static_cast<size_t>(kFwdWarps) * stages * (kRes ? 2 : 1) * static_cast<size_t>(a.cols) * sizeof(T);
    };
    // kSchedOccupancy for the kFull rows without residual or transposed copy at N 8 (measured faster there, above),
    // or at N 8 and 12 under tuning::set_rmsnorm_schedule(1); never under 2 (norm.h). Only the Gemma widths get the
    // instantiation, which keeps them few. Returns false, launching nothing, where it does not apply.
    auto launch_occupancy = [&](auto n_tag) {
      constexpr int kN = decltype(n_tag)::value;
      if constexpr (!kRes && (kN == 8 || kN == 12)) {
        const int sched = tuning::rmsnorm_schedule();
        if (a.pitch != 0 || sched == 2 || (sched == 0 && kN != 8)) return false;
        a.stages = 1;
        go(rmsnorm_forward_kernel<T, Out, kN, false, true, true, false, kSchedOccupancy>, async_smem(1));
        return true;
      }
      return false;
    };
    auto pick = [&](auto n_tag) {
      constexpr int kN = decltype(n_tag)::value;
      const auto kernel = rmsnorm_forward_kernel<T, Out, kN, kRes, true>;
      auto resident = [&](int stages) {  // blocks per SM with this many buffers (0: does not fit)
        const size_t bytes = async_smem(stages);
        if (bytes > static_cast<size_t>(max_smem)) return 0;
        return resident_blocks(reinterpret_cast<const void*>(kernel), kFwdThreads, bytes);
      };
      // The ring only helps a warp that has a next row to fetch: with at most one row per warp (rows <= one
      // group per SM: the decode step's 1-64 rows) it would ask for 64 KiB more shared memory per block and
      // stage the row through it for nothing, so the register path runs instead (same bits). Session 5's decode
      // profile: 5.0 us per one-row RMSNorm -> E4M3 through the ring; to be measured.
      if constexpr (!kRes) {
        if (a.pitch == 0 && a.rows >= 1 && a.rows <= static_cast<int64_t>(sms)) {  // rmsnorm_spread_row
          launch(rmsnorm_forward_kernel<T, Out, kN, false, false, false, true>, dim3(static_cast<unsigned>(a.rows)),
                 kFwdThreads, 0, s, a);
          return;
        }
      }
      const bool one_row_per_warp = a.rows_per_block == kFwdWarps && a.rows <= static_cast<int64_t>(sms) * kFwdWarps;
      if (a.vec && !one_row_per_warp) {
        const int two = resident(2), one = resident(1);
        if (two > 0 || one > 0) {
          a.stages = two >= one ? 2 : 1;
          const bool full = a.cols == int64_t{256} * kN && (std::is_same_v<Out, T> || a.fp8_vec);
          if (full && launch_occupancy(std::integral_constant<int, kN>{})) return;
          if (full)
            go(rmsnorm_forward_kernel<T, Out, kN, kRes, true, true>, async_smem(a.stages));
          else
            go(kernel, async_smem(a.stages));
          return;
        }
      }
      go(rmsnorm_forward_kernel<T, Out, kN, kRes, false>, smem);
    };
    if (dispatch_chunks<2, 4, 8, 12, 16>(n, pick)) return;
  }
  go(rmsnorm_forward_kernel<T, Out, 0, kRes, false>, smem);
}

template <typename T, bool kDres>
void launch_backward(int n, const BwdArgs& a, dim3 grid, cudaStream_t s) {
  const auto gain = static_cast<size_t>(a.gain_bytes);
  const size_t chunk_elems = static_cast<size_t>((a.cols + 7) / 8 * 8);
  auto go = [&](auto kernel, size_t smem) {
    check_smem(smem, a.cols, "rmsnorm_backward");
    (void)resident_blocks(reinterpret_cast<const void*>(kernel), kBwdThreads, smem);  // raises the smem limit once
    kernel<<<grid, kBwdThreads, smem, s>>>(a);
  };
  // Register path: BF16 rows of at most 12 chunks per lane. Vectorisable rows are prefetched (kAsync) into
  // 4 warps x 2 buffers x {x, dy} (<= 96 KiB at D = 3072); otherwise chain 1's partial goes through
  // 2 groups x D floats of shared memory.
  const size_t async_smem = gain + (kBwdThreads / 32) * 4 * chunk_elems * sizeof(T);
  const size_t sync_smem = gain + static_cast<size_t>(kBwdGroupsPerBlock) * static_cast<size_t>(a.cols) * sizeof(float);
  if constexpr (std::is_same_v<T, ew::bf16_t>) {
    auto pick = [&](auto n_tag) {
      constexpr int kN = decltype(n_tag)::value;
      if (a.vec)
        go(rmsnorm_backward_kernel<T, kN, kDres, true>, async_smem);
      else
        go(rmsnorm_backward_kernel<T, kN, kDres, false>, sync_smem);
    };
    if (dispatch_chunks<2, 4, 8, 12>(n, pick)) return;  // no 16: cached_chunks stops at 12 backward
  }
  go(rmsnorm_backward_kernel<T, 0, kDres, false>, gain);
}

bool rows_vectorisable(const TensorView& t) { return t.empty() || (t.strides[0] % 8 == 0 && ew::aligned16(t.data)); }

FwdArgs forward_args(const TensorView& x, const TensorView& w, float eps, const TensorView& rstd,
                     const TensorView& residual) {
  FwdArgs a{};
  a.x = x.data;
  a.ldx = x.strides[0];
  a.residual = residual.empty() ? nullptr : residual.data;
  a.ldr = residual.empty() ? 0 : residual.strides[0];
  a.w = {w.data, w.dtype == DType::BF16, x.shape[1] % 8 == 0 && ew::aligned16(w.data)};
  a.rstd = rstd.ptr<float>();
  a.rows = x.shape[0];
  a.cols = x.shape[1];
  a.eps = eps;
  a.inv_d = fdiv(1.0f, static_cast<float>(a.cols));
  a.vec = a.cols % 8 == 0 && rows_vectorisable(x) && rows_vectorisable(residual);
  a.rows_per_block = kFwdWarps;
  a.gain_bytes = static_cast<int>((a.cols + 7) / 8 * 8 * sizeof(float));
  return a;
}

}  // namespace

namespace tuning {
namespace {
std::atomic<int> g_rmsnorm_schedule{0};  // 0: by width (norm.h)
}  // namespace
void set_rmsnorm_schedule(int schedule) {
  TG_CHECK(schedule >= 0 && schedule <= 2, "set_rmsnorm_schedule: expected 0, 1 or 2, got ", schedule);
  g_rmsnorm_schedule.store(schedule, std::memory_order_relaxed);
}
int rmsnorm_schedule() { return g_rmsnorm_schedule.load(std::memory_order_relaxed); }
}  // namespace tuning

void rmsnorm_forward(const TensorView& x, const TensorView& w, float eps, const TensorView& y, const TensorView& rstd,
                     const TensorView& residual, const TensorView& amax, Stream stream) {
  TG_NVTX_FN();
  const DType a_type = norm_detail::check_forward_args(x, w, eps, rstd, residual, Device::CUDA, "rmsnorm_forward");
  norm_detail::check_rows(y, x.shape[0], x.shape[1], a_type, Device::CUDA, "rmsnorm_forward(y)");
  if (!amax.empty()) {
    TG_CHECK(amax.dtype == DType::F32 && amax.numel() == 1 && amax.device == Device::CUDA,
             "rmsnorm_forward: amax must be F32 [1] on the CUDA device, got ", amax.describe());
  }
  if (x.shape[0] == 0) return;
  FwdArgs a = forward_args(x, w, eps, rstd, residual);
  a.y = y.data;
  a.ldy = y.strides[0];
  a.vec = a.vec && rows_vectorisable(y);
  a.amax = amax.empty() ? nullptr : static_cast<uint32_t*>(amax.data);
  const size_t smem = static_cast<size_t>(a.gain_bytes);
  check_smem(smem, a.cols, "rmsnorm_forward");
  const int n = cached_chunks(a_type, a.cols, false);
  const cudaStream_t s = cuda_stream(stream);
  TG_DISPATCH_BF16_F32(a_type, "rmsnorm_forward", [&] {
    if (residual.empty())
      launch_forward<scalar_t, scalar_t, false>(n, a, smem, s);
    else
      launch_forward<scalar_t, scalar_t, true>(n, a, smem, s);
  });
  TG_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void rmsnorm_forward_fp8(const TensorView& x, const TensorView& w, float eps, const Fp8View& out,
                         const TensorView& rstd, const TensorView& residual, Stream stream) {
  TG_NVTX_FN();
  const DType a_type = norm_detail::check_forward_args(x, w, eps, rstd, residual, Device::CUDA, "rmsnorm_forward_fp8");
  detail::check_fp8_output(out, x.shape[0], x.shape[1], Device::CUDA, "rmsnorm_forward_fp8(out)");
  FwdArgs a = forward_args(x, w, eps, rstd, residual);
  a.fp8 = ew::make_fp8_out(out);
  a.fp8_vec = a.cols % 8 == 0 && (a.fp8.data == nullptr || (reinterpret_cast<uintptr_t>(a.fp8.data) & 7u) == 0);
  size_t smem = static_cast<size_t>(a.gain_bytes);
  if (out.has_columnwise()) {
    a.rows_per_block = kTileRows;
    int64_t pitch = (a.cols + 3) / 4 * 4;
    if ((pitch / 4) % 2 == 0) pitch += 4;  // odd word pitch: the transposed reads are bank-conflict free
    a.pitch = static_cast<int>(pitch);
    smem += static_cast<size_t>(kTileRows) * static_cast<size_t>(pitch);
  }
  check_smem(smem, a.cols, "rmsnorm_forward_fp8");
  const int n = cached_chunks(a_type, a.cols, false);
  const cudaStream_t s = cuda_stream(stream);
  // T == 0 still launches one block: scale_inv is written and amax is left as it is.
  TG_DISPATCH_BF16_F32(a_type, "rmsnorm_forward_fp8", [&] {
    using T = scalar_t;
    TG_DISPATCH_FP8(out.dtype(), "rmsnorm_forward_fp8(out)", [&] {
      if (residual.empty())
        launch_forward<T, scalar_t, false>(n, a, smem, s);
      else
        launch_forward<T, scalar_t, true>(n, a, smem, s);
    });
  });
  TG_CHECK_LAUNCH("rmsnorm_forward_kernel");
}

void rmsnorm_backward(const TensorView& dy, const TensorView& x, const TensorView& w, const TensorView& rstd,
                      const TensorView& dx, const TensorView& dw, const TensorView& workspace,
                      const TensorView& dresidual, Stream stream) {
  TG_NVTX_FN();
  norm_detail::check_backward_args(dy, x, w, rstd, dx, dw, workspace, dresidual, Device::CUDA, "rmsnorm_backward");
  BwdArgs a{};
  a.dy = dy.data;
  a.lddy = dy.strides[0];
  a.x = x.data;
  a.ldx = x.strides[0];
  a.w = {w.data, w.dtype == DType::BF16, x.shape[1] % 8 == 0 && ew::aligned16(w.data)};
  a.rstd = rstd.ptr<float>();
  a.dx = dx.data;
  a.lddx = dx.strides[0];
  a.dres = dresidual.empty() ? nullptr : dresidual.data;
  a.lddr = dresidual.empty() ? 0 : dresidual.strides[0];
  a.ws = workspace.ptr<float>();
  a.rows = x.shape[0];
  a.cols = x.shape[1];
  a.groups = rmsnorm_backward_groups(a.rows);
  a.inv_d = fdiv(1.0f, static_cast<float>(a.cols));
  a.vec = a.cols % 8 == 0 && rows_vectorisable(dy) && rows_vectorisable(x) && rows_vectorisable(dx) &&
          rows_vectorisable(dresidual);
  a.ws_vec = a.cols % 8 == 0 && ew::aligned16(workspace.data);
  a.gain_bytes = static_cast<int>((a.cols + 7) / 8 * 8 * sizeof(float));
  const cudaStream_t s = cuda_stream(stream);
  if (a.groups > 0) {
    const dim3 grid(static_cast<unsigned>((a.groups + kBwdGroupsPerBlock - 1) / kBwdGroupsPerBlock));
    const int n = cached_chunks(x.dtype, a.cols, true);
    TG_DISPATCH_BF16_F32(x.dtype, "rmsnorm_backward", [&] {
      if (dresidual.empty())
        launch_backward<scalar_t, false>(n, a, grid, s);
      else
        launch_backward<scalar_t, true>(n, a, grid, s);
    });
    TG_CHECK_LAUNCH("rmsnorm_backward_kernel");
  }
  rmsnorm_dw_reduce_kernel<<<static_cast<unsigned>((a.cols + 31) / 32), 1024, 0, s>>>(a.ws, a.groups, a.cols, dw.data,
                                                                                      dw.dtype == DType::BF16);
  TG_CHECK_LAUNCH("rmsnorm_dw_reduce_kernel");
}

}  // namespace tg::kernels::cuda
