// CUDA split-half RoPE: one thread per (token, group of W consecutive pairs); it computes the W cos/sin
// values once (FP64 sincos, ieee::sincos_angle) and rotates those pairs in every q head and k head of the
// token, 4 heads per batch of loads. Bit-exact to rope_cpu.cpp.
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
  static __device__ __forceinline__ void store(A* p, const float (&f)[8]) { ew::store8<A>(p, f); }
};
template <typename A>
struct Lane<A, 1> {
  using Raw = A;
  static __device__ __forceinline__ Raw load(const A* p) { return *p; }
  static __device__ __forceinline__ float get(const Raw& r, int) { return dev::to_float<A>(r); }
  static __device__ __forceinline__ void store(A* p, const float (&f)[1]) { *p = dev::from_float<A>(f[0]); }
};

template <typename A, int W>
__device__ __forceinline__ void rotate_heads(const Heads& x, int64_t t, int64_t i0, int64_t half, const float (&c)[W],
                                             const float (&s)[W]) {
  using L = Lane<A, W>;
  A* tok = static_cast<A*>(x.base) + t * x.token_stride + i0;
  for (int64_t h0 = 0; h0 < x.heads; h0 += kHeadBatch) {
    typename L::Raw x1[kHeadBatch], x2[kHeadBatch];
#pragma unroll
    for (int b = 0; b < kHeadBatch; ++b) {  // all loads of the batch first
      if (h0 + b < x.heads) {
        x1[b] = L::load(tok + (h0 + b) * x.head_stride);
        x2[b] = L::load(tok + (h0 + b) * x.head_stride + half);
      }
    }
#pragma unroll
    for (int b = 0; b < kHeadBatch; ++b) {
      if (h0 + b < x.heads) {
        float o1[W], o2[W];
#pragma unroll
        for (int j = 0; j < W; ++j) {
          const float a1 = L::get(x1[b], j), a2 = L::get(x2[b], j);
          o1[j] = rope_dev::rotated_first<A>(a1, a2, c[j], s[j]);
          o2[j] = rope_dev::rotated_second<A>(a1, a2, c[j], s[j]);
        }
        L::store(tok + (h0 + b) * x.head_stride, o1);
        L::store(tok + (h0 + b) * x.head_stride + half, o2);
      }
    }
  }
}

// Grid: ceil(T * Dh/2 / W / 128) blocks of 128 threads; thread -> (token t, pairs i0 .. i0 + W - 1).
template <typename A, int W>
__global__ void __launch_bounds__(kThreads) rope_kernel(const Args a) {
  dev::pdl_wait();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  dev::pdl_launch_dependents();
  const int64_t groups = a.half / W;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t t = item / groups;
  if (t >= a.tokens) return;
  const int64_t i0 = (item - t * groups) * W;
  const int64_t pos =
      a.positions64 ? static_cast<const int64_t*>(a.positions)[t] : static_cast<const int32_t*>(a.positions)[t];
  const float p = static_cast<float>(pos);
  float c[W], s[W];
#pragma unroll
  for (int j = 0; j < W; ++j) {
    rope_dev::cos_sin<A>(p, a.inv_freq[i0 + j], a.sign, c[j], s[j]);
  }
  if (a.q.base != nullptr) rotate_heads<A, W>(a.q, t, i0, a.half, c, s);
  if (a.k.base != nullptr) rotate_heads<A, W>(a.k, t, i0, a.half, c, s);
}

Heads heads_of(const TensorView& x) {
  if (x.empty()) return {};
  return {x.data, x.strides[0], x.strides[1], x.shape[1]};
}

bool vec_ok(const TensorView& x) {
  return x.empty() || (x.strides[0] % 8 == 0 && x.strides[1] % 8 == 0 && ew::aligned16(x.data));
}

void rope_apply(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                float sign, Stream stream, const char* what) {
  const rope_detail::Dims dims = rope_detail::check_args(q, k, positions, inv_freq, Device::CUDA, what);
  if (dims.tokens == 0) return;
  Args a{};
  a.q = heads_of(q);
  a.k = heads_of(k);
  a.positions = positions.data;
  a.positions64 = positions.dtype == DType::I64;
  a.inv_freq = inv_freq.ptr<float>();
  a.tokens = dims.tokens;
  a.half = dims.head_dim / 2;
  a.sign = sign;
  const bool vec = a.half % 8 == 0 && vec_ok(q) && vec_ok(k);
  const int w = vec ? 8 : 1;
  const int64_t items = dims.tokens * (a.half / w);
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  TG_CHECK(blocks <= INT32_MAX, what, ": too many tokens for one launch (", dims.tokens, ")");
  const DType dtype = q.empty() ? k.dtype : q.dtype;
  TG_DISPATCH_BF16_F32(dtype, what, [&] {
    if (vec)
      launch(rope_kernel<scalar_t, 8>, static_cast<unsigned>(blocks), kThreads, 0, cuda_stream(stream), a);
    else
      launch(rope_kernel<scalar_t, 1>, static_cast<unsigned>(blocks), kThreads, 0, cuda_stream(stream), a);
  });
  TG_CHECK_LAUNCH("rope_kernel");
}

}  // namespace

void rope_forward(const TensorView& q, const TensorView& k, const TensorView& positions, const TensorView& inv_freq,
                  Stream stream) {
  TG_NVTX_FN();
  rope_apply(q, k, positions, inv_freq, 1.0f, stream, "rope_forward");
}

void rope_backward(const TensorView& dq, const TensorView& dk, const TensorView& positions, const TensorView& inv_freq,
                   Stream stream) {
  TG_NVTX_FN();
  rope_apply(dq, dk, positions, inv_freq, -1.0f, stream, "rope_backward");
}

}  // namespace tg::kernels::cuda
