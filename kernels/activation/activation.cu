// CUDA GeGLU forward/backward: one kernel shape for every variant. A block owns a tile of 64 rows x 128
// output columns; each of its 256 threads handles 4 chunks of 8 consecutive columns (16 threads cover a
// tile row, so a warp reads two 256-byte segments of gate and of up per chunk). FP8 outputs are also
// staged in shared memory when the transposed copy is wanted, and written transposed at the end.
// All math through the IEEE helpers: bit-exact to activation_cpu.cpp.
#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/activation/activation.h"
#include "kernels/elementwise/elementwise.cuh"
#include "kernels/elementwise/fp8_out.h"

namespace tg::kernels::cuda {

namespace {

using ew::Pack8;

constexpr int kThreads = 256;
constexpr int kTileRows = 64;
constexpr int kTileCols = 128;                          // output columns per tile (16 chunks of 8)
constexpr int kChunksPerRow = kTileCols / 8;            // 16
constexpr int kRowsPerPass = kThreads / kChunksPerRow;  // 16
constexpr int kPasses = kTileRows / kRowsPerPass;       // 4 chunks per thread
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
template <Dir kDir, typename A, typename Out>
__global__ void __launch_bounds__(kThreads) geglu_kernel(const Args a) {
  constexpr bool kFp8 = std::is_same_v<Out, dev::e4m3_t> || std::is_same_v<Out, dev::e5m2_t>;
  constexpr int kHalves = kDir == Dir::kForward ? 1 : 2;  // backward writes [d_gate | d_up]
  __shared__ __align__(16) uint8_t tile[kFp8 ? kHalves : 1][kFp8 ? kTileRows : 1][kFp8 ? kPitch : 4];
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTileRows;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTileCols;
  const int cc = threadIdx.x % kChunksPerRow, ro = threadIdx.x / kChunksPerRow;
  const int64_t col = col0 + 8 * cc;
  const int n = static_cast<int>(max(static_cast<int64_t>(0), min(static_cast<int64_t>(8), a.f - col)));
  float scale = 1.0f;
  if constexpr (kFp8) scale = *a.fp8.scale;
  const bool stage = kFp8 && a.fp8.col_data != nullptr;
  uint32_t amax_bits = 0;

  // All loads of the thread's chunks first (up to 12 independent 16-byte loads in flight).
  Pack8<A> g[kPasses], u[kPasses];
  [[maybe_unused]] Pack8<A> d[kDir == Dir::kBackward ? kPasses : 1];
#pragma unroll
  for (int p = 0; p < kPasses; ++p) {
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
  for (int p = 0; p < kPasses; ++p) {
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
      const int rows_here = static_cast<int>(min(static_cast<int64_t>(kTileRows), a.rows - row0));
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

bool rows_ok(const TensorView& t) { return t.empty() || (t.strides[0] % 8 == 0 && ew::aligned16(t.data)); }

dim3 grid_for(int64_t rows, int64_t f) {
  const int64_t gx = (f + kTileCols - 1) / kTileCols, gy = (rows + kTileRows - 1) / kTileRows;
  TG_CHECK(gy <= 65535 && gx <= INT32_MAX, "geglu: too many tokens for one launch (T = ", rows,
           ", at most 65535 * 64)");
  return dim3(static_cast<unsigned>(gx > 0 ? gx : 1), static_cast<unsigned>(gy > 0 ? gy : 1));
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
  const dim3 grid = grid_for(a.rows, f);
  TG_DISPATCH_BF16_F32(fc1.dtype, "geglu_forward(fc1)", [&] {
    using A = scalar_t;
    TG_DISPATCH_BF16_F32(out.dtype, "geglu_forward(out)", [&] {
      geglu_kernel<Dir::kForward, A, scalar_t><<<grid, kThreads, 0, cuda_stream(stream)>>>(a);
    });
  });
  TG_CHECK_LAUNCH("geglu_kernel");
}

void geglu_forward_fp8(const TensorView& fc1, const Fp8View& out, Stream stream) {
  TG_NVTX_FN();
  const int64_t f = activation_detail::check_fc1(fc1, Device::CUDA, "geglu_forward_fp8(fc1)");
  detail::check_fp8_output(out, fc1.shape[0], f, Device::CUDA, "geglu_forward_fp8(out)");
  Args a = base_args(fc1, f);
  set_fp8(a, out);
  const dim3 grid = grid_for(a.rows, f);  // at least one block: scale_inv is always written
  TG_DISPATCH_BF16_F32(fc1.dtype, "geglu_forward_fp8(fc1)", [&] {
    using A = scalar_t;
    TG_DISPATCH_FP8(out.dtype(), "geglu_forward_fp8(out)",
                    [&] { geglu_kernel<Dir::kForward, A, scalar_t><<<grid, kThreads, 0, cuda_stream(stream)>>>(a); });
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
  const dim3 grid = grid_for(a.rows, f);
  TG_DISPATCH_BF16_F32(fc1.dtype, "geglu_backward(fc1)", [&] {
    using A = scalar_t;
    TG_DISPATCH_BF16_F32(dfc1.dtype, "geglu_backward(dfc1)", [&] {
      geglu_kernel<Dir::kBackward, A, scalar_t><<<grid, kThreads, 0, cuda_stream(stream)>>>(a);
    });
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
  const dim3 grid = grid_for(a.rows, f);
  TG_DISPATCH_BF16_F32(fc1.dtype, "geglu_backward_fp8(fc1)", [&] {
    using A = scalar_t;
    TG_DISPATCH_FP8(dfc1.dtype(), "geglu_backward_fp8(dfc1)",
                    [&] { geglu_kernel<Dir::kBackward, A, scalar_t><<<grid, kThreads, 0, cuda_stream(stream)>>>(a); });
  });
  TG_CHECK_LAUNCH("geglu_kernel");
}

}  // namespace tg::kernels::cuda
