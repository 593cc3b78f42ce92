// CUDA split-half RoPE: one thread per (token, group of W consecutive pairs); it gets the W cos/sin values once
// (from rope_cos_sin_table's table with 16-byte loads when one is given and covers the position, else computed:
// FP64 sincos, ieee::sincos_angle -- the same bits either way) and rotates those pairs in every q head and k head
// of the token, 4 heads per batch of loads. Bit-exact to rope_cpu.cpp. Also the table's builder.
// Session 8 measured one thread per (token, head, group) instead (more threads, one round trip each): slower on the
// H200 at 8192 tokens (2b 26.6 vs 25.8 us, 7b 84.6 vs 82.7), so it was removed.

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/elementwise/elementwise.cuh"
#include "kernels/launch/launch.cuh"
#include "kernels/rope/rope.h"
#include "kernels/rope/rope_math.cuh"

namespace tg::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kHeadBatch = 4;

struct Heads {
  void* base = nullptr;  // null: absent
  int64_t token_stride = 0, head_stride = 0;
  int64_t heads = 0;
};

struct Args {
  Heads q, k;
  const void* positions;
  bool positions64;
  const float* inv_freq;
  const float* table;       // rope_cos_sin_table [table_positions, 2, half], or null: compute every token
  int64_t table_positions;  // tokens at positions outside [0, table_positions) compute
  int64_t tokens;
  int64_t half;
  float sign;  // +1 forward, -1 backward (the transposed rotation)
};

// W elements of A starting at p: raw storage (a BF16 chunk of 8 is 4 registers) and conversions.
template <typename A, int W>
struct Lane;
template <typename A>
struct Lane<A, 8> {
  using Raw = ew::Pack8<A>;
  static __device__ __forceinline__ Raw load(const A* p) { return ew::load8<A>(p); }
  static __device__ __forceinline__ float get(const Raw& r, int j) { return r.get(j); }
  // BF16: one 16-byte store. Through ew::store8 the PTX of rope_kernel<bf16, 8, *> had four 4-byte st.global.u32 per
  // 16 bytes (96 registers). An asm volatile st.global.v4 with a "memory" clobber (80 registers) measured SLOWER on
  // the H200 (session 9: 2b 8192 tokens 25.8 -> 27.7 us, 7b 82.7 -> 86.2): the clobber pins every later load behind
  // the store. A plain 16-byte C++ store lets the compiler schedule it. Same bytes, same bits.
  static __device__ __forceinline__ void store(A* p, const float (&f)[8]) {
    if constexpr (std::is_same_v<A, ew::bf16_t>)
      *reinterpret_cast<uint4*>(p) = ew::pack8<A>(f).v;
    else
      ew::store8<A>(p, f);
  }
};
template <typename A>
struct Lane<A, 1> {
  using Raw = A;
  static __device__ __forceinline__ Raw load(const A* p) { return *p; }
  static __device__ __forceinline__ float get(const Raw& r, int) { return dev::to_float<A>(r); }
  static __device__ __forceinline__ void store(A* p, const float (&f)[1]) { *p = dev::from_float<A>(f[0]); }
};

// Token t's position (I32 or I64).
__device__ __forceinline__ int64_t position_of(const Args& a, int64_t t) {
  return a.positions64 ? static_cast<const int64_t*>(a.positions)[t] : static_cast<const int32_t*>(a.positions)[t];
}

// One batch of kHeadBatch heads' pair halves (x_i .. and x_(i + Dh/2) ..), loaded together before any is used.
template <typename A, int W>
struct HeadBatch {
  typename Lane<A, W>::Raw x1[kHeadBatch], x2[kHeadBatch];
};

template <typename A, int W>
__device__ __forceinline__ A* token_base(const Heads& x, int64_t t, int64_t i0) {
  return static_cast<A*>(x.base) + t * x.token_stride + i0;
}

template <typename A, int W>
__device__ __forceinline__ void load_batch(const Heads& x, const A* tok, int64_t h0, int64_t half,
                                           HeadBatch<A, W>& b) {
#pragma unroll
  for (int j = 0; j < kHeadBatch; ++j) {  // all loads of the batch first
    if (h0 + j < x.heads) {
      b.x1[j] = Lane<A, W>::load(tok + (h0 + j) * x.head_stride);
      b.x2[j] = Lane<A, W>::load(tok + (h0 + j) * x.head_stride + half);
    }
  }
}

template <typename A, int W>
__device__ __forceinline__ void rotate_batch(const Heads& x, A* tok, int64_t h0, int64_t half,
                                             const HeadBatch<A, W>& b, const float (&c)[W], const float (&s)[W]) {
  using L = Lane<A, W>;
#pragma unroll
  for (int j = 0; j < kHeadBatch; ++j) {
    if (h0 + j < x.heads) {
      float o1[W], o2[W];
#pragma unroll
      for (int e = 0; e < W; ++e) {
        const float a1 = L::get(b.x1[j], e), a2 = L::get(b.x2[j], e);
        o1[e] = rope_dev::rotated_first<A>(a1, a2, c[e], s[e]);
        o2[e] = rope_dev::rotated_second<A>(a1, a2, c[e], s[e]);
      }
      L::store(tok + (h0 + j) * x.head_stride, o1);
      L::store(tok + (h0 + j) * x.head_stride + half, o2);
    }
  }
}

// Every head of x at this token, batch by batch (all loads of a batch first).
template <typename A, int W>
__device__ __forceinline__ void rotate_all_heads(const Heads& x, int64_t t, int64_t i0, int64_t half,
                                                 const float (&c)[W], const float (&s)[W]) {
  A* tok = token_base<A, W>(x, t, i0);
  for (int64_t h0 = 0; h0 < x.heads; h0 += kHeadBatch) {
    HeadBatch<A, W> b;
    load_batch<A, W>(x, tok, h0, half, b);
    rotate_batch<A, W>(x, tok, h0, half, b, c, s);
  }
}

// Grid: ceil(T * Dh/2 / W / 128) blocks of 128 threads; thread -> (token t, pairs i0 .. i0 + W - 1).
// kTable: cos / sin from the table row when it covers the position (else computed: FP64 sincos), then every q and k
// head batch by batch. H200, bench_elementwise (8192 tokens): 2b 26.0 us with the table, 27.5 computed; 7b 81.9
// against 83.5-85.1. Two kernels rather than one with a run-time table test: that one made the computed path slower
// (2b 29.8-30.2 us). Loading the first head batch before the table row (both in flight together) measured slower
// (2b 28.2 us, 7b 84.9), and holding it across the FP64 sincos costs registers (119 against 94): so the batch loads
// follow the cos / sin in both paths.
template <typename A, int W, bool kTable>
__global__ void __launch_bounds__(kThreads) rope_kernel(const Args a) {
  dev::pdl_enter();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  const int64_t groups = a.half / W;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t t = item / groups;
  if (t >= a.tokens) return;
  const int64_t i0 = (item - t * groups) * W;
  float c[W], s[W];
  // kTable false: a null table, folded at compile time (the computed path carries no table test).
  rope_dev::cos_sin_at<A, W>(kTable ? a.table : nullptr, a.table_positions, a.half, position_of(a, t), a.inv_freq,
                             i0, a.sign, c, s);
  if (a.q.base != nullptr) rotate_all_heads<A, W>(a.q, t, i0, a.half, c, s);
  if (a.k.base != nullptr) rotate_all_heads<A, W>(a.k, t, i0, a.half, c, s);
}

// rope_cos_sin_table's builder: one thread per (position p, pair i), the expression of rope_dev::cos_sin before its
// rounding to A. Grid: ceil(P * half / 256) blocks of 256 threads.
__global__ void rope_table_kernel(const float* __restrict__ inv_freq, int64_t positions, int64_t half,
                                  float* __restrict__ table) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= positions * half) return;
  const int64_t p = item / half, i = item - p * half;
  const ieee::SinCos sc = ieee::sincos_angle(ieee::fmul(static_cast<float>(p), inv_freq[i]));
  table[p * 2 * half + i] = sc.cos;
  table[p * 2 * half + half + i] = sc.sin;
}

Heads heads_of(const TensorView& x) {
  if (x.empty()) return {};
  return {x.data, x.strides[0], x.strides[1], x.shape[1]};
}

bool vec_ok(const TensorView& x) {
  return x.empty() || (x.strides[0] % 8 == 0 && x.strides[1] % 8 == 0 && ew::aligned16(x.data));
}

void rope_apply(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                const TensorView& table, float sign, Stream stream, const char* what) {
  const rope_detail::Dims dims = rope_detail::check_args(q, k, positions, inv_freq, Device::CUDA, what);
  const int64_t table_positions = rope_detail::check_table(table, dims.head_dim, Device::CUDA, what);
  if (dims.tokens == 0) return;
  Args a{};
  a.q = heads_of(q);
  a.k = heads_of(k);
  a.positions = positions.data;
  a.positions64 = positions.dtype == DType::I64;
  a.inv_freq = inv_freq.ptr<float>();
  a.table = table_positions > 0 ? table.ptr<const float>() : nullptr;
  a.table_positions = table_positions;
  a.tokens = dims.tokens;
  a.half = dims.head_dim / 2;
  a.sign = sign;
  // The table's 16-byte loads need its base aligned too (a Tensor's is; a view into one may not be).
  const bool vec = a.half % 8 == 0 && vec_ok(q) && vec_ok(k) && (a.table == nullptr || ew::aligned16(a.table));
  const int w = vec ? 8 : 1;
  const int64_t items = dims.tokens * (a.half / w);
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  TG_CHECK(blocks <= INT32_MAX, what, ": too many tokens for one launch (", dims.tokens, ")");
  const DType dtype = q.empty() ? k.dtype : q.dtype;
  const unsigned grid = static_cast<unsigned>(blocks);
  const cudaStream_t cs = cuda_stream(stream);
  TG_DISPATCH_BF16_F32(dtype, what, [&] {
    if (a.table != nullptr) {
      if (vec)
        launch(rope_kernel<scalar_t, 8, true>, grid, kThreads, 0, cs, a);
      else
        launch(rope_kernel<scalar_t, 1, true>, grid, kThreads, 0, cs, a);
    } else {
      if (vec)
        launch(rope_kernel<scalar_t, 8, false>, grid, kThreads, 0, cs, a);
      else
        launch(rope_kernel<scalar_t, 1, false>, grid, kThreads, 0, cs, a);
    }
  });
  TG_CHECK_LAUNCH("rope_kernel");
}

}  // namespace

void rope_forward(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                  Stream stream, const TensorView& table) {
  TG_NVTX_FN();
  rope_apply(q, k, positions, inv_freq, table, 1.0f, stream, "rope_forward");
}

void rope_backward(const TensorView& dq, const TensorView& dk, const TensorView& positions, const TensorView& inv_freq,
                   Stream stream, const TensorView& table) {
  TG_NVTX_FN();
  rope_apply(dq, dk, positions, inv_freq, table, -1.0f, stream, "rope_backward");
}

void rope_cos_sin_table(const TensorView& inv_freq, const TensorView& table, Stream stream) {
  TG_NVTX_FN();
  constexpr const char* what = "rope_cos_sin_table(cuda)";
  rope_detail::check_table_build(inv_freq, table, Device::CUDA, what);
  const int64_t items = table.shape[0] * table.shape[2];
  constexpr int kBuildThreads = 256;
  const int64_t blocks = (items + kBuildThreads - 1) / kBuildThreads;
  TG_CHECK(blocks <= INT32_MAX, what, ": too many positions for one launch (", table.shape[0], ")");
  rope_table_kernel<<<static_cast<unsigned>(blocks), kBuildThreads, 0, cuda_stream(stream)>>>(
      inv_freq.ptr<const float>(), table.shape[0], table.shape[2], table.ptr<float>());
  TG_CHECK_LAUNCH("rope_table_kernel");
}

}  // namespace tg::kernels::cuda
