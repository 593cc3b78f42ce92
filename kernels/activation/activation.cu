// CUDA GeGLU forward/backward: one kernel shape for every variant. A block owns a tile of kRows rows x 128
// output columns (kRows = 64, or 16 at few rows: see tile_rows_for); each of its 256 threads handles kRows / 16
// chunks of 8 consecutive columns (16 threads cover a tile row, so a warp reads two 256-byte segments of gate and
// of up per chunk). FP8 outputs are also staged in shared memory when the transposed copy is wanted, and written
// transposed at the end. All math through the IEEE helpers: bit-exact to activation_cpu.cpp.
//
// BF16 fc1 at scale (T * F >= 2^22, vectorisable rows) takes geglu_lut_kernel instead: GeGLU is
// compute-bound there, not memory-bound (~50 instructions per element, most of them the tanh's rational
// function and its IEEE division: ~200 us of issue time at Gemma-2B shapes against 164 us of HBM time
// for the FP8 output). With a BF16 gate there are only 2^16 possible inputs, and a = round_BF16(gelu(g))
// (and the backward's FP32 gelu'(g)) depend on nothing else, so each block first tabulates them for the
// gate values that matter (|g| in [2^-16, 2^4): 5120 entries, 10 KB of shared memory, 30 KB with the
// gradient, computed by the same device functions) and then looks them up; any gate outside the table
// (zeros, tiny, huge, inf, NaN) is computed directly. The table is a cache of the exact function, so
// the results are the same bits.
#include <algorithm>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/activation/activation.h"
#include "kernels/elementwise/elementwise.cuh"
#include "kernels/elementwise/fp8_out.h"
#include "kernels/launch/device_info.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {

using dev::bf16_t;
using ew::Pack8;

constexpr int kThreads = 256;
constexpr int kTileRows = 64;                           // geglu_lut_kernel's tile, and geglu_kernel's at many rows
constexpr int kSmallTileRows = 16;                      // geglu_kernel at few rows (tile_rows_for)
constexpr int kTileCols = 128;                          // output columns per tile (16 chunks of 8)
constexpr int kChunksPerRow = kTileCols / 8;            // 16
constexpr int kRowsPerPass = kThreads / kChunksPerRow;  // 16
constexpr int kPasses = kTileRows / kRowsPerPass;       // 4 chunks per thread (64-row tiles)
constexpr int kPitch = kTileCols + 4;                   // odd word pitch for the transposed reads

struct Args {
  const void* fc1;  // [T, 2F]
  int64_t ld_fc1;
  const void* dout;  // [T, F] (backward)
  int64_t ld_dout;
  void* out;  // high-precision output: [T, F] forward, [T, 2F] backward
  int64_t ld_out;
  uint32_t* amax;  // high-precision forward output's amax (optional)
  int64_t rows, f;
  bool vec;
  ew::Fp8Out fp8;
  bool fp8_vec;
};

enum class Dir { kForward, kBackward };

// Out: the high-precision output type, or an FP8 tag type (then the epilogue of fp8_out.h).
// kRows: the tile height (64 or 16); a thread's chunks are rows ro, ro + 16, ... of the tile. The tile height
// changes only which block computes an element, never how: each element's operations are the same, and the
// amax is a max over blocks, so the results are the same bits for either height.
template <Dir kDir, typename A, typename Out, int kRows>
__global__ void __launch_bounds__(kThreads) geglu_kernel(const Args a) {
  static_assert(kRows % kRowsPerPass == 0 && kRows >= kRowsPerPass, "geglu_kernel: tile height");
  constexpr int kRowPasses = kRows / kRowsPerPass;  // chunks per thread
  dev::pdl_enter();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  constexpr bool kFp8 = std::is_same_v<Out, dev::e4m3_t> || std::is_same_v<Out, dev::e5m2_t>;
  constexpr int kHalves = kDir == Dir::kForward ? 1 : 2;  // backward writes [d_gate | d_up]
  __shared__ __align__(16) uint8_t tile[kFp8 ? kHalves : 1][kFp8 ? kRows : 1][kFp8 ? kPitch : 4];
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kRows;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTileCols;
  const int cc = threadIdx.x % kChunksPerRow, ro = threadIdx.x / kChunksPerRow;
  const int64_t col = col0 + 8 * cc;
  const int n = static_cast<int>(max(static_cast<int64_t>(0), min(static_cast<int64_t>(8), a.f - col)));
  float scale = 1.0f;
  if constexpr (kFp8) scale = *a.fp8.scale;
  const bool stage = kFp8 && a.fp8.col_data != nullptr;
  uint32_t amax_bits = 0;

  // All loads of the thread's chunks first (64-row tiles: up to 12 independent 16-byte loads in flight).
  Pack8<A> g[kRowPasses], u[kRowPasses];
  [[maybe_unused]] Pack8<A> d[kDir == Dir::kBackward ? kRowPasses : 1];
#pragma unroll
  for (int p = 0; p < kRowPasses; ++p) {
    const int64_t t = row0 + ro + p * kRowsPerPass;
    if (t < a.rows && n > 0) {
      const A* row = static_cast<const A*>(a.fc1) + t * a.ld_fc1;
      g[p] = ew::load8_any(row + col, n, a.vec);
      u[p] = ew::load8_any(row + a.f + col, n, a.vec);
      if constexpr (kDir == Dir::kBackward) {
        d[p] = ew::load8_any(static_cast<const A*>(a.dout) + t * a.ld_dout + col, n, a.vec);
      }
    }
  }

#pragma unroll
  for (int p = 0; p < kRowPasses; ++p) {
    const int r = ro + p * kRowsPerPass;
    const int64_t t = row0 + r;
    if (t >= a.rows || n <= 0) continue;
    float v[kHalves][8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if constexpr (kDir == Dir::kForward) {
        v[0][i] = ieee::fmul(ew::round_to<A>(ieee::gelu_tanh(g[p].get(i))), u[p].get(i));
      } else {
        const ieee::GeluValueGrad vg = ieee::gelu_tanh_value_grad(g[p].get(i));
        const float da = ew::round_to<A>(ieee::fmul(d[p].get(i), u[p].get(i)));
        v[0][i] = ieee::fmul(da, vg.grad);
        v[1][i] = ieee::fmul(d[p].get(i), ew::round_to<A>(vg.value));
      }
    }
#pragma unroll
    for (int h = 0; h < kHalves; ++h) {
      const int64_t out_col = h * a.f + col;
      if constexpr (!kFp8) {
        ew::store8_any(static_cast<Out*>(a.out) + t * a.ld_out + out_col, v[h], n, a.vec);
        if (a.amax != nullptr) {
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            if (i < n) amax_bits = max(amax_bits, ieee::abs_bits(ew::round_to<Out>(v[h][i])));
          }
        }
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          v[h][i] = ew::round_to<A>(v[h][i]);
          if (i < n) amax_bits = max(amax_bits, ieee::abs_bits(v[h][i]));
        }
        const uint2 q = ew::quantize8<Out>(v[h], scale);
        if (a.fp8.data != nullptr) ew::store_fp8x8(a.fp8.data + t * a.fp8.cols + out_col, q, n, a.fp8_vec);
        if (stage) {
          uint8_t* dst = &tile[kFp8 ? h : 0][kFp8 ? r : 0][8 * cc];
          if (n == 8) {
            reinterpret_cast<uint32_t*>(dst)[0] = q.x;
            reinterpret_cast<uint32_t*>(dst)[1] = q.y;
          } else {
            ew::store_fp8x8(dst, q, n, false);
          }
        }
      }
    }
  }

  if constexpr (kFp8) {
    if (a.fp8.amax != nullptr) ew::block_amax_commit(a.fp8.amax, amax_bits);
    if (stage) {
      __syncthreads();
      const int rows_here = static_cast<int>(min(static_cast<int64_t>(kRows), a.rows - row0));
      const int cols_here = static_cast<int>(min(static_cast<int64_t>(kTileCols), a.f - col0));
#pragma unroll
      for (int h = 0; h < kHalves; ++h) {
        ew::store_transposed_tile(&tile[h][0][0], kPitch, rows_here, cols_here, a.fp8.col_data, a.rows, row0,
                                  h * a.f + col0);
      }
    }
    ew::write_scale_inv(a.fp8);
  } else {
    if (a.amax != nullptr) ew::block_amax_commit(a.amax, amax_bits);
  }
}

// ---- The table-driven BF16 kernels -----------------------------------------------------------------
constexpr int kLutExpLo = 127 - 16;                    // biased exponent of 2^-16
constexpr int kLutExps = 20;                           // 2^-16 .. 2^4 (exclusive)
constexpr int kLutHalf = kLutExps * 128;               // entries per sign
constexpr int kLutEntries = 2 * kLutHalf;              // 5120
constexpr int64_t kLutMinElements = int64_t{1} << 22;  // below this, tabulating costs more than it saves

// Raw BF16 bits of gate element i of a chunk.
__device__ __forceinline__ uint32_t bf16_bits(const Pack8<bf16_t>& p, int i) {
  const uint32_t word = (i >> 1) == 0 ? p.v.x : (i >> 1) == 1 ? p.v.y : (i >> 1) == 2 ? p.v.z : p.v.w;
  return (i & 1) ? word >> 16 : word & 0xFFFFu;
}
// Table offset of a BF16 gate (by its bits), or a value >= kLutEntries when it is outside the table.
__device__ __forceinline__ uint32_t lut_offset(uint32_t bits) {
  const uint32_t off = (bits & 0x7FFFu) - (static_cast<uint32_t>(kLutExpLo) << 7);
  return off < static_cast<uint32_t>(kLutHalf) ? off + (bits >> 15) * kLutHalf : 0xFFFFFFFFu;
}

// Persistent grid of 256-thread blocks over the same 64 x 128 tiles as geglu_kernel (tile k: rows
// 64 (k / tiles_x), columns 128 (k % tiles_x)); block b takes tiles b, b + gridDim.x, ... Needs a.vec.
// Tables (static shared memory): round_BF16(gelu(g)) as BF16 bits, and for the backward gelu'(g) in FP32.
// Register budget: the forward keeps 4 blocks per SM (64 registers, 32 KB of loads in flight per block);
// the backward 2 (its 12 loads per thread put 48 KB per block in flight; 3 blocks would spill).
template <Dir kDir, typename Out>
__global__ void __launch_bounds__(kThreads, kDir == Dir::kForward ? 4 : 2) geglu_lut_kernel(const Args a) {
  using A = bf16_t;
  constexpr bool kFp8 = std::is_same_v<Out, dev::e4m3_t> || std::is_same_v<Out, dev::e5m2_t>;
  constexpr bool kBwd = kDir == Dir::kBackward;
  constexpr int kHalves = kBwd ? 2 : 1;  // backward writes [d_gate | d_up]
  __shared__ uint16_t lut_val[kLutEntries];
  __shared__ float lut_grad[kBwd ? kLutEntries : 1];
  __shared__ __align__(16) uint8_t tile[kFp8 ? kHalves : 1][kFp8 ? kTileRows : 1][kFp8 ? kPitch : 4];
  const int cc = threadIdx.x % kChunksPerRow, ro = threadIdx.x / kChunksPerRow;
  const int64_t tiles_x = (a.f + kTileCols - 1) / kTileCols;
  const int64_t tiles = tiles_x * ((a.rows + kTileRows - 1) / kTileRows);
  float scale = 1.0f;
  if constexpr (kFp8) scale = *a.fp8.scale;
  const bool stage = kFp8 && a.fp8.col_data != nullptr;
  uint32_t amax_bits = 0;  // max of |v| bits, NaN not yet canonical (see the end)

  Pack8<A> g[kPasses], u[kPasses];
  [[maybe_unused]] Pack8<A> d[kBwd ? kPasses : 1];
  auto load_tile = [&](int64_t k) {
    const int64_t row0 = k / tiles_x * kTileRows, col = k % tiles_x * kTileCols + 8 * cc;
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int64_t t = row0 + ro + p * kRowsPerPass;
      if (t < a.rows && col < a.f) {  // F % 8 == 0: a chunk is whole or absent
        const A* row = static_cast<const A*>(a.fc1) + t * a.ld_fc1;
        g[p] = ew::load8<A>(row + col);
        u[p] = ew::load8<A>(row + a.f + col);
        if constexpr (kBwd) d[p] = ew::load8<A>(static_cast<const A*>(a.dout) + t * a.ld_dout + col);
      }
    }
  };
  // The first tile's loads are in flight while the block fills its tables.
  if (blockIdx.x < tiles) load_tile(blockIdx.x);
  for (int e = threadIdx.x; e < kLutEntries; e += kThreads) {
    const uint32_t bits =
        (e >= kLutHalf ? 0x8000u : 0u) + (static_cast<uint32_t>(kLutExpLo) << 7) + static_cast<uint32_t>(e % kLutHalf);
    const float x = __uint_as_float(bits << 16);
    if constexpr (kBwd) {
      const ieee::GeluValueGrad vg = ieee::gelu_tanh_value_grad(x);
      lut_val[e] = __bfloat16_as_ushort(__float2bfloat16_rn(vg.value));
      lut_grad[e] = vg.grad;
    } else {
      lut_val[e] = __bfloat16_as_ushort(__float2bfloat16_rn(ieee::gelu_tanh(x)));
    }
  }
  __syncthreads();

  for (int64_t k = blockIdx.x; k < tiles; k += gridDim.x) {
    if (k != blockIdx.x) load_tile(k);
    const int64_t row0 = k / tiles_x * kTileRows, col0 = k % tiles_x * kTileCols, col = col0 + 8 * cc;
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int r = ro + p * kRowsPerPass;
      const int64_t t = row0 + r;
      if (t >= a.rows || col >= a.f) continue;
      float act[8], v[kHalves][8];
      [[maybe_unused]] float grad[8];
      bool miss = false;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const uint32_t off = lut_offset(bf16_bits(g[p], i));
        const bool hit = off < static_cast<uint32_t>(kLutEntries);
        miss |= !hit;
        act[i] = __uint_as_float(static_cast<uint32_t>(lut_val[hit ? off : 0]) << 16);
        if constexpr (kBwd) grad[i] = lut_grad[hit ? off : 0];
      }
      if (miss) {  // rare: compute the elements outside the table
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          if (lut_offset(bf16_bits(g[p], i)) < static_cast<uint32_t>(kLutEntries)) continue;
          if constexpr (kBwd) {
            const ieee::GeluValueGrad vg = ieee::gelu_tanh_value_grad(g[p].get(i));
            act[i] = ew::round_to<A>(vg.value);
            grad[i] = vg.grad;
          } else {
            act[i] = ew::round_to<A>(ieee::gelu_tanh(g[p].get(i)));
          }
        }
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        if constexpr (kBwd) {  // the operation order of geglu_kernel's backward
          const float da = ew::round_to<A>(ieee::fmul(d[p].get(i), u[p].get(i)));
          v[0][i] = ieee::fmul(da, grad[i]);
          v[kHalves - 1][i] = ieee::fmul(d[p].get(i), act[i]);
        } else {
          v[0][i] = ieee::fmul(act[i], u[p].get(i));
        }
      }
#pragma unroll
      for (int h = 0; h < kHalves; ++h) {
        const int64_t out_col = h * a.f + col;
        if constexpr (!kFp8) {
          ew::store8<Out>(static_cast<Out*>(a.out) + t * a.ld_out + out_col, v[h]);
          if (a.amax != nullptr) {
#pragma unroll
            for (int i = 0; i < 8; ++i)
              amax_bits = max(amax_bits, ieee::float_bits(ew::round_to<Out>(v[h][i])) & 0x7FFFFFFFu);
          }
        } else {
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            v[h][i] = ew::round_to<A>(v[h][i]);
            amax_bits = max(amax_bits, ieee::float_bits(v[h][i]) & 0x7FFFFFFFu);
          }
          const uint2 q = ew::quantize8<Out>(v[h], scale);
          if (a.fp8.data != nullptr) ew::store_fp8x8(a.fp8.data + t * a.fp8.cols + out_col, q, 8, a.fp8_vec);
          if (stage) {
            uint32_t* dst = reinterpret_cast<uint32_t*>(&tile[kFp8 ? h : 0][kFp8 ? r : 0][8 * cc]);
            dst[0] = q.x;
            dst[1] = q.y;
          }
        }
      }
    }
    if constexpr (kFp8) {
      if (stage) {
        __syncthreads();
        const int rows_here = static_cast<int>(min(static_cast<int64_t>(kTileRows), a.rows - row0));
        const int cols_here = static_cast<int>(min(static_cast<int64_t>(kTileCols), a.f - col0));
#pragma unroll
        for (int h = 0; h < kHalves; ++h) {
          ew::store_transposed_tile(&tile[h][0][0], kPitch, rows_here, cols_here, a.fp8.col_data, a.rows, row0,
                                    h * a.f + col0);
        }
        __syncthreads();
      }
    }
  }

  // Any NaN has |bits| > 0x7F800000 and so does the max: the canonical NaN key of ieee::abs_bits.
  if (amax_bits > 0x7F800000u) amax_bits = 0x7FFFFFFFu;
  if constexpr (kFp8) {
    if (a.fp8.amax != nullptr) ew::block_amax_commit(a.fp8.amax, amax_bits);
    ew::write_scale_inv(a.fp8);
  } else {
    if (a.amax != nullptr) ew::block_amax_commit(a.amax, amax_bits);
  }
}

bool use_lut(const TensorView& fc1, const Args& a) {
  return fc1.dtype == DType::BF16 && a.vec && a.rows * a.f >= kLutMinElements;
}

// Launches geglu_lut_kernel<kDir, Out> on a persistent grid (min(tiles, resident blocks)).
template <Dir kDir, typename Out>
void launch_lut(const Args& a, cudaStream_t s) {
  const int per_sm = resident_blocks(reinterpret_cast<const void*>(geglu_lut_kernel<kDir, Out>), kThreads, 0);
  const int64_t tiles = (a.f + kTileCols - 1) / kTileCols * ((a.rows + kTileRows - 1) / kTileRows);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(tiles, static_cast<int64_t>(per_sm) * sm_count()));
  geglu_lut_kernel<kDir, Out><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(a);
}

bool rows_ok(const TensorView& t) { return t.empty() || (t.strides[0] % 8 == 0 && ew::aligned16(t.data)); }

// Tile height of geglu_kernel for a [rows, 2f] fc1. Why a small-row tile: with 64-row tiles a decode step's few rows
// leave the GPU mostly idle. ncu on the H200, gemma-7b decode at batch 64 (fc1 [64, 2 x 24576] BF16 -> E4M3):
// 7.97 us per layer on a (192, 1) grid, 1.45 blocks and ~12 warps per SM, against ~1.9 us of HBM time; too few
// warps to hide the loads and the tanh-GELU arithmetic. 16-row tiles give the same shape 768 blocks with one
// chunk per thread. 64-row tiles stay wherever they give at least 2 blocks per SM (training, prefill): 4 chunks
// per thread keep more loads in flight per thread and the transposed FP8 copy's writes 64 bytes long (the staging
// works for either height; with 16-row tiles each column's run is 16 bytes). The table kernel (use_lut: BF16 and
// T * F >= 2^22) is chosen before this and keeps its 64-row tiles; decode never reaches it (7B at batch 64 is
// 64 x 24576 = 1.6M elements).
int tile_rows_for(int64_t rows, int64_t f) {
  const int64_t gx = (f + kTileCols - 1) / kTileCols, gy = (rows + kTileRows - 1) / kTileRows;
  return rows <= kTileRows || gx * gy < 2 * static_cast<int64_t>(sm_count()) ? kSmallTileRows : kTileRows;
}

dim3 grid_for(int64_t rows, int64_t f, int tile_rows) {
  const int64_t gx = (f + kTileCols - 1) / kTileCols, gy = (rows + tile_rows - 1) / tile_rows;
  TG_CHECK(gy <= 65535 && gx <= INT32_MAX, "geglu: too many tokens for one launch (T = ", rows, ", at most 65535 * ",
           tile_rows, ")");
  return dim3(static_cast<unsigned>(gx > 0 ? gx : 1), static_cast<unsigned>(gy > 0 ? gy : 1));
}

// Launches geglu_kernel<kDir, A, Out> with the tile height for a.rows (16 at decode's few rows, see tile_rows_for);
// at least one block: scale_inv is always written.
template <Dir kDir, typename A, typename Out>
void launch_direct(const Args& a, cudaStream_t stream) {
  const int tile_rows = tile_rows_for(a.rows, a.f);
  const dim3 grid = grid_for(a.rows, a.f, tile_rows);
  if (tile_rows == kSmallTileRows) {
    launch(geglu_kernel<kDir, A, Out, kSmallTileRows>, grid, kThreads, 0, stream, a);
  } else {
    launch(geglu_kernel<kDir, A, Out, kTileRows>, grid, kThreads, 0, stream, a);
  }
}

Args base_args(const TensorView& fc1, int64_t f) {
  Args a{};
  a.fc1 = fc1.data;
  a.ld_fc1 = fc1.strides[0];
  a.rows = fc1.shape[0];
  a.f = f;
  a.vec = f % 8 == 0 && rows_ok(fc1);
  return a;
}

void set_fp8(Args& a, const Fp8View& out) {
  a.fp8 = ew::make_fp8_out(out);
  a.fp8_vec = a.f % 8 == 0 && (a.fp8.data == nullptr || (reinterpret_cast<uintptr_t>(a.fp8.data) & 7u) == 0);
}

}  // namespace

void geglu_forward(const TensorView& fc1, const TensorView& out, const TensorView& amax, Stream stream) {
  TG_NVTX_FN();
  const int64_t f = activation_detail::check_fc1(fc1, Device::CUDA, "geglu_forward(fc1)");
  activation_detail::check_act(out, fc1.shape[0], f, Device::CUDA, "geglu_forward(out)");
  activation_detail::check_amax(amax, Device::CUDA, "geglu_forward(amax)");
  if (fc1.shape[0] == 0 || f == 0) return;
  Args a = base_args(fc1, f);
  a.out = out.data;
  a.ld_out = out.strides[0];
  a.vec = a.vec && rows_ok(out);
  a.amax = amax.empty() ? nullptr : static_cast<uint32_t*>(amax.data);
  if (use_lut(fc1, a)) {
    TG_DISPATCH_BF16_F32(out.dtype, "geglu_forward(out)",
                         [&] { launch_lut<Dir::kForward, scalar_t>(a, cuda_stream(stream)); });
    TG_CHECK_LAUNCH("geglu_lut_kernel");
    return;
  }
  TG_DISPATCH_BF16_F32(fc1.dtype, "geglu_forward(fc1)", [&] {
    using A = scalar_t;
    TG_DISPATCH_BF16_F32(out.dtype, "geglu_forward(out)",
                         [&] { launch_direct<Dir::kForward, A, scalar_t>(a, cuda_stream(stream)); });
  });
  TG_CHECK_LAUNCH("geglu_kernel");
}

void geglu_forward_fp8(const TensorView& fc1, const Fp8View& out, Stream stream) {
  TG_NVTX_FN();
  const int64_t f = activation_detail::check_fc1(fc1, Device::CUDA, "geglu_forward_fp8(fc1)");
  detail::check_fp8_output(out, fc1.shape[0], f, Device::CUDA, "geglu_forward_fp8(out)");
  Args a = base_args(fc1, f);
  set_fp8(a, out);
  if (use_lut(fc1, a)) {
    TG_DISPATCH_FP8(out.dtype(), "geglu_forward_fp8(out)",
                    [&] { launch_lut<Dir::kForward, scalar_t>(a, cuda_stream(stream)); });
    TG_CHECK_LAUNCH("geglu_lut_kernel");
    return;
  }
  TG_DISPATCH_BF16_F32(fc1.dtype, "geglu_forward_fp8(fc1)", [&] {
    using A = scalar_t;
    TG_DISPATCH_FP8(out.dtype(), "geglu_forward_fp8(out)",
                    [&] { launch_direct<Dir::kForward, A, scalar_t>(a, cuda_stream(stream)); });
  });
  TG_CHECK_LAUNCH("geglu_kernel");
}

void geglu_backward(const TensorView& dout, const TensorView& fc1, const TensorView& dfc1, Stream stream) {
  TG_NVTX_FN();
  const int64_t f = activation_detail::check_fc1(fc1, Device::CUDA, "geglu_backward(fc1)");
  activation_detail::check_act(dout, fc1.shape[0], f, Device::CUDA, "geglu_backward(dout)", &fc1.dtype);
  activation_detail::check_act(dfc1, fc1.shape[0], 2 * f, Device::CUDA, "geglu_backward(dfc1)");
  if (fc1.shape[0] == 0 || f == 0) return;
  Args a = base_args(fc1, f);
  a.dout = dout.data;
  a.ld_dout = dout.strides[0];
  a.out = dfc1.data;
  a.ld_out = dfc1.strides[0];
  a.vec = a.vec && rows_ok(dout) && rows_ok(dfc1);
  if (use_lut(fc1, a)) {
    TG_DISPATCH_BF16_F32(dfc1.dtype, "geglu_backward(dfc1)",
                         [&] { launch_lut<Dir::kBackward, scalar_t>(a, cuda_stream(stream)); });
    TG_CHECK_LAUNCH("geglu_lut_kernel");
    return;
  }
  TG_DISPATCH_BF16_F32(fc1.dtype, "geglu_backward(fc1)", [&] {
    using A = scalar_t;
    TG_DISPATCH_BF16_F32(dfc1.dtype, "geglu_backward(dfc1)",
                         [&] { launch_direct<Dir::kBackward, A, scalar_t>(a, cuda_stream(stream)); });
  });
  TG_CHECK_LAUNCH("geglu_kernel");
}

void geglu_backward_fp8(const TensorView& dout, const TensorView& fc1, const Fp8View& dfc1, Stream stream) {
  TG_NVTX_FN();
  const int64_t f = activation_detail::check_fc1(fc1, Device::CUDA, "geglu_backward_fp8(fc1)");
  activation_detail::check_act(dout, fc1.shape[0], f, Device::CUDA, "geglu_backward_fp8(dout)", &fc1.dtype);
  detail::check_fp8_output(dfc1, fc1.shape[0], 2 * f, Device::CUDA, "geglu_backward_fp8(dfc1)");
  Args a = base_args(fc1, f);
  a.dout = dout.data;
  a.ld_dout = dout.strides[0];
  a.vec = a.vec && rows_ok(dout);
  set_fp8(a, dfc1);
  if (use_lut(fc1, a)) {
    TG_DISPATCH_FP8(dfc1.dtype(), "geglu_backward_fp8(dfc1)",
                    [&] { launch_lut<Dir::kBackward, scalar_t>(a, cuda_stream(stream)); });
    TG_CHECK_LAUNCH("geglu_lut_kernel");
    return;
  }
  TG_DISPATCH_BF16_F32(fc1.dtype, "geglu_backward_fp8(fc1)", [&] {
    using A = scalar_t;
    TG_DISPATCH_FP8(dfc1.dtype(), "geglu_backward_fp8(dfc1)",
                    [&] { launch_direct<Dir::kBackward, A, scalar_t>(a, cuda_stream(stream)); });
  });
  TG_CHECK_LAUNCH("geglu_kernel");
}

}  // namespace tg::kernels::cuda
