// gemv on the CUDA cores: see gemv.h for the contract and the design.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/gemm/gemv.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kLoadsPerLane = 8;  // 16-byte W loads in flight per lane per iteration (128 bytes)

struct GemvParams {
  const void* x;
  const void* w;
  const float* x_scale_inv;  // nullptr: BF16 x
  const float* w_scale_inv;  // nullptr: BF16 W
  void* out;
  const void* residual;      // nullptr: none (may equal out)
  int64_t ldx, ldw, ldo, ldr;  // elements
  int m, n;
  int chunks;  // 16-byte W chunks per row: K / (16 / sizeof(W element))
  float alpha;
  bool out_f32;
};

// Two BF16 in a 32-bit word -> floats (exact).
__device__ __forceinline__ float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// Two E4M3 codes in the low 16 bits of u -> floats (exact: E4M3 -> f16 is exact, cvt.rn.f16x2.e4m3x2).
__device__ __forceinline__ float2 e4m3x2(uint32_t u) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(u & 0xffffu), __NV_E4M3);
  return __half22float2(__half2(h));
}

// The 8 floats of a 16-byte vector's half `half` (0: bytes 0-7, 1: bytes 8-15) of E4M3, or of all 16 bytes of BF16.
template <bool kE4m3>
__device__ __forceinline__ void unpack8(const uint4& v, int half, float (&f)[8]) {
  if constexpr (kE4m3) {
    const uint32_t a = half == 0 ? v.x : v.z, b = half == 0 ? v.y : v.w;
    const float2 p0 = e4m3x2(a), p1 = e4m3x2(a >> 16), p2 = e4m3x2(b), p3 = e4m3x2(b >> 16);
    f[0] = p0.x; f[1] = p0.y; f[2] = p1.x; f[3] = p1.y;
    f[4] = p2.x; f[5] = p2.y; f[6] = p3.x; f[7] = p3.y;
  } else {
    f[0] = bf16_lo(v.x); f[1] = bf16_hi(v.x); f[2] = bf16_lo(v.y); f[3] = bf16_hi(v.y);
    f[4] = bf16_lo(v.z); f[5] = bf16_hi(v.z); f[6] = bf16_lo(v.w); f[7] = bf16_hi(v.w);
  }
}

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
template <bool kWE4m3, bool kXE4m3, int kRows, int kCols>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const GemvParams p) {
  constexpr int kChunkElems = kWE4m3 ? 16 : 8;  // W elements per 16-byte chunk
  constexpr int kHalves = kChunkElems / 8;      // 8-element pieces per chunk
  constexpr int kUnroll = kLoadsPerLane / kCols;
  constexpr bool kPreloadX = kRows == 1;
  dev::pdl_wait();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  dev::pdl_launch_dependents();
  const int lane = threadIdx.x % 32;
  const int64_t col0 = (static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32) * kCols;
  if (col0 >= p.n) return;  // whole warps only: no block-level synchronisation below

  // Columns past N re-read the last row (harmless, never stored) so the loop stays branch-free.
  const uint4* wrow[kCols];
#pragma unroll
  for (int c = 0; c < kCols; ++c) {
    const int64_t col = col0 + c < p.n ? col0 + c : p.n - 1;
    wrow[c] = reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(p.w) + col * p.ldw * (kWE4m3 ? 1 : 2));
  }

  float acc[kRows][kCols];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0f;
  }

  for (int base = lane; base < p.chunks; base += 32 * kUnroll) {
    uint4 wv[kUnroll][kCols];
    uint4 xv[kPreloadX ? kUnroll : 1][2];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = base + 32 * u;
#pragma unroll
      for (int c = 0; c < kCols; ++c) wv[u][c] = chunk < p.chunks ? __ldcs(wrow[c] + chunk) : make_uint4(0, 0, 0, 0);
    }
    if constexpr (kPreloadX) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int chunk = base + 32 * u;
        if (chunk < p.chunks) {
          load_x_chunk<kWE4m3, kXE4m3>(p, chunk, xv[u]);
        } else {
          xv[u][0] = xv[u][1] = make_uint4(0, 0, 0, 0);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = base + 32 * u;
      if (chunk >= p.chunks) break;  // the row's tail: lanes past the end stop (uniform until the last iteration)
#pragma unroll
      for (int h = 0; h < kHalves; ++h) {
        float wf[kCols][8];
#pragma unroll
        for (int c = 0; c < kCols; ++c) unpack8<kWE4m3>(wv[u][c], h, wf[c]);
        const int64_t k = static_cast<int64_t>(chunk) * kChunkElems + 8 * h;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          if (r >= p.m) break;
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
  }

  float scale = p.alpha;
  if (p.x_scale_inv != nullptr) scale *= *p.x_scale_inv;
  if (p.w_scale_inv != nullptr) scale *= *p.w_scale_inv;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = dev::warp_sum(acc[r][c]);  // xor butterfly: every lane has it
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const int64_t col = col0 + c;
      // Lane (r * kCols + c) % 32 stores (r, c): the stores spread over the lanes.
      if (r < p.m && col < p.n && lane == (r * kCols + c) % 32) {
        float v = acc[r][c] * scale;
        if (p.out_f32) {
          if (p.residual != nullptr) v += static_cast<const float*>(p.residual)[r * p.ldr + col];
          static_cast<float*>(p.out)[r * p.ldo + col] = v;
        } else {
          if (p.residual != nullptr) v += __bfloat162float(static_cast<const __nv_bfloat16*>(p.residual)[r * p.ldr + col]);
          static_cast<__nv_bfloat16*>(p.out)[r * p.ldo + col] = __float2bfloat16_rn(v);
        }
      }
    }
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

template <bool kWE4m3, bool kXE4m3, int kRows>
void launch_rows(const GemvParams& p, cudaStream_t stream) {
  const int cols = columns_per_warp(p.n, kRows);
  const int64_t warps = (p.n + cols - 1) / cols;
  const auto blocks = static_cast<unsigned>((warps + kWarps - 1) / kWarps);
  constexpr int kWide = kRows >= 4 ? 4 : 2;
  if (cols == 1) {
    launch(gemv_kernel<kWE4m3, kXE4m3, kRows, 1>, blocks, kThreads, 0, stream, p);
  } else {
    launch(gemv_kernel<kWE4m3, kXE4m3, kRows, kWide>, blocks, kThreads, 0, stream, p);
  }
}

template <bool kWE4m3, bool kXE4m3>
void launch(const GemvParams& p, cudaStream_t stream) {
  if (p.m <= 1) return launch_rows<kWE4m3, kXE4m3, 1>(p, stream);
  if (p.m <= 2) return launch_rows<kWE4m3, kXE4m3, 2>(p, stream);
  if (p.m <= 4) return launch_rows<kWE4m3, kXE4m3, 4>(p, stream);
  if (p.m <= 8) return launch_rows<kWE4m3, kXE4m3, 8>(p, stream);
  launch_rows<kWE4m3, kXE4m3, 16>(p, stream);
}

}  // namespace

void gemv(const GemvOperand& x, const GemvOperand& w, const TensorView& out, const GemvOptions& opt,
          const TensorView& residual, Stream stream) {
  TG_NVTX_FN();
  const detail::GemvDims d = detail::check_gemv(x, w, out, residual);
  check_device(out, Device::CUDA, "cuda::gemv(out)");
  static_assert(kGemvMaxRows == 16, "launch() instantiates row tiles up to 16");
  const bool w_fp8 = w.data.dtype == DType::E4M3, x_fp8 = x.data.dtype == DType::E4M3;
  const int64_t chunks = d.k / (w_fp8 ? 16 : 8);
  TG_CHECK(chunks <= INT32_MAX && d.n <= INT32_MAX, "gemv: N = ", d.n, ", K = ", d.k, " is beyond the kernel's int range");
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
  p.chunks = static_cast<int>(chunks);
  p.alpha = opt.alpha;
  p.out_f32 = out.dtype == DType::F32;
  const cudaStream_t s = cuda_stream(stream);
  if (!w_fp8) {
    launch<false, false>(p, s);
  } else if (!x_fp8) {
    launch<true, false>(p, s);
  } else {
    launch<true, true>(p, s);
  }
  TG_CHECK_LAUNCH("gemv_kernel");
}

}  // namespace tg::kernels::cuda
