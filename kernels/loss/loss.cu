// CUDA side of kernels/loss: one thread block per row (online softmax over the row, then the gradient
// sweep; 16-byte vectors for BF16 rows laid out for them, else element by element), and one block for the FP64
// loss reduction in the ORDER of loss.h.
#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/elementwise/elementwise.cuh"
#include "kernels/loss/loss.h"

namespace tg::kernels::cuda {

namespace {

constexpr int kThreads = 512;

// (max, sum of exp(x - max)) of two partial rows; an empty partial has max -inf and sum 0.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2;
    s = s2;
    return;
  }
  const float mx = fmaxf(m, m2);
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

// (m, s) of the block's threads merged into the row's (max, log of the sum of exp(x - max)): warp shuffles, then
// warp 0's partials in shared memory, merged by thread 0 in warp order. All threads call it (it synchronises).
__device__ __forceinline__ void block_lse(float m, float s, float& m_out, float& log_s_out) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    merge(m, s, m2, s2);
  }
  __shared__ float sm[kThreads / 32], ss[kThreads / 32];
  __shared__ float m_shared, log_s_shared;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float mt = sm[0], st = ss[0];
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) merge(mt, st, sm[w], ss[w]);
    m_shared = mt;
    log_s_shared = logf(st);  // lse = mt + log_s, never formed: mt may dwarf log_s
  }
  __syncthreads();
  m_out = m_shared;
  log_s_out = log_s_shared;
}

// Row t of logits: lse by an online softmax (each thread keeps its running max and sum over the columns
// j = tid, tid + blockDim, ...; then a warp-shuffle and shared-memory merge), row_loss, then the gradient.
// logits and dlogits may be the same buffer (in place): neither is __restrict__.
template <typename In, typename Out>
__global__ void cross_entropy_kernel(const In* logits, int64_t ld_in, const int32_t* __restrict__ targets,
                                     float scale, Out* dlogits, int64_t ld_out, float* __restrict__ row_loss,
                                     int64_t vocab) {
  const int64_t t = blockIdx.x;
  const In* x = logits + t * ld_in;
  const int32_t y = targets[t];
  const bool ignored = y < 0 || y >= vocab;  // -100, or an invalid id (never read out of bounds)
  if (ignored) {
    if (threadIdx.x == 0) row_loss[t] = 0.0f;
    if (dlogits != nullptr) {
      Out* dx = dlogits + t * ld_out;
      for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) dx[j] = dev::from_float<Out>(0.0f);
    }
    return;
  }
  float m = -INFINITY, s = 0.0f;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float v = dev::to_float<In>(x[j]);
    if (v > m) {
      s = (m == -INFINITY ? 0.0f : s * expf(m - v)) + 1.0f;
      m = v;
    } else {
      s += expf(v - m);
    }
  }
  // The target's logit is read before block_lse's barriers: in place, the thread that owns column y overwrites it in
  // the gradient sweep below, which nothing else orders after thread 0's read (a race found by racecheck's
  // serialised schedule, session 10: row_loss took the gradient's value).
  const float x_y = threadIdx.x == 0 ? dev::to_float<In>(x[y]) : 0.0f;
  float mt, log_s;
  block_lse(m, s, mt, log_s);
  if (threadIdx.x == 0) row_loss[t] = (mt - x_y) + log_s;
  if (dlogits == nullptr) return;
  Out* dx = dlogits + t * ld_out;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = expf((dev::to_float<In>(x[j]) - mt) - log_s);  // read before the (in-place) write
    dx[j] = dev::from_float<Out>((p - (j == y ? 1.0f : 0.0f)) * scale);
  }
}

// The BF16 row as 16-byte vectors (8 logits each: vocab, the row stride and the base are multiples of 8 elements /
// 16 bytes; dlogits likewise in its dtype, or absent). The scalar kernel above keeps one 2-byte load per thread in
// flight behind a loop-carried expf chain: ~4 KB of reads in flight per SM, which by Little's law caps HBM at ~0.9
// TB/s (measured: 8.8 ms for 8192 x 256000 in place, 23% of the 4.1 TB/s roofline of one read + one write). Here each
// thread issues kUnroll independent 16-byte loads before it uses any (64 bytes in flight per thread, 16x the scalar
// kernel's), folds each vector into its running (m, s) with one rescale per vector, and the gradient sweep reads and
// writes 16 bytes at a time. Two passes over the row (the max and sum, then the gradient): ~3 bytes of HBM traffic
// per 2-byte logit in place, a floor of ~3.1 ms at 8192 x 256000. In place: every element is read (pass 2's load)
// before this thread overwrites it, and no other thread touches it (but thread 0's read of the target logit, made
// before the block's barriers); plain loads, not the read-only path, because the buffer is written in the same kernel.
constexpr int kVecUnroll = 4;

template <typename Out>
__global__ void __launch_bounds__(kThreads) cross_entropy_bf16_vec_kernel(const dev::bf16_t* logits, int64_t ld_in,
                                                                         const int32_t* __restrict__ targets,
                                                                         float scale, Out* dlogits, int64_t ld_out,
                                                                         float* __restrict__ row_loss, int64_t vocab) {
  const int64_t t = blockIdx.x;
  const dev::bf16_t* x = logits + t * ld_in;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const int64_t nvec = vocab / 8;
  const int32_t y = targets[t];
  const bool ignored = y < 0 || y >= vocab;  // -100, or an invalid id (never read out of bounds)
  if (ignored) {
    if (threadIdx.x == 0) row_loss[t] = 0.0f;
    if (dlogits != nullptr) {
      const float zero[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      Out* dx = dlogits + t * ld_out;
      for (int64_t v = threadIdx.x; v < nvec; v += kThreads) ew::store8<Out>(dx + 8 * v, zero);
    }
    return;
  }
  // Pass 1: this thread's running max m and sum s of exp(x - m) over its vectors tid, tid + kThreads, ...
  float m = -INFINITY, s = 0.0f;
  for (int64_t v0 = threadIdx.x; v0 < nvec; v0 += static_cast<int64_t>(kThreads) * kVecUnroll) {
    uint4 in[kVecUnroll];
#pragma unroll
    for (int u = 0; u < kVecUnroll; ++u) {
      const int64_t v = v0 + static_cast<int64_t>(u) * kThreads;
      in[u] = v < nvec ? xv[v] : make_uint4(0xFF80FF80u, 0xFF80FF80u, 0xFF80FF80u, 0xFF80FF80u);  // -inf: no term
    }
#pragma unroll
    for (int u = 0; u < kVecUnroll; ++u) {
      float f[8];
      ew::unpack8(ew::Pack8<dev::bf16_t>{in[u]}, f);
      float vmax = f[0];
#pragma unroll
      for (int i = 1; i < 8; ++i) vmax = fmaxf(vmax, f[i]);
      if (vmax == -INFINITY) continue;  // padding (or a row of -inf logits: contributes nothing, as in the twin)
      if (vmax > m) {
        s = m == -INFINITY ? 0.0f : s * expf(m - vmax);
        m = vmax;
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) s += expf(f[i] - m);
    }
  }
  const float x_y = threadIdx.x == 0 ? dev::to_float<dev::bf16_t>(x[y]) : 0.0f;  // before the barriers: as above
  float mt, log_s;
  block_lse(m, s, mt, log_s);
  if (threadIdx.x == 0) row_loss[t] = (mt - x_y) + log_s;
  if (dlogits == nullptr) return;
  // Pass 2: the gradient, kVecUnroll vectors loaded before any is written.
  Out* dx = dlogits + t * ld_out;
  for (int64_t v0 = threadIdx.x; v0 < nvec; v0 += static_cast<int64_t>(kThreads) * kVecUnroll) {
    uint4 in[kVecUnroll];
#pragma unroll
    for (int u = 0; u < kVecUnroll; ++u) {
      const int64_t v = v0 + static_cast<int64_t>(u) * kThreads;
      if (v < nvec) in[u] = xv[v];
    }
#pragma unroll
    for (int u = 0; u < kVecUnroll; ++u) {
      const int64_t v = v0 + static_cast<int64_t>(u) * kThreads;
      if (v < nvec) {
        float f[8], g[8];
        ew::unpack8(ew::Pack8<dev::bf16_t>{in[u]}, f);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const float p = expf((f[i] - mt) - log_s);
          g[i] = (p - (8 * v + i == y ? 1.0f : 0.0f)) * scale;
        }
        ew::store8<Out>(dx + 8 * v, g);
      }
    }
  }
}

// loss[0] += scale * R with R in the FP64 ORDER of loss.h (one block of kLossReduceLanes threads).
__global__ void loss_reduce_kernel(const float* __restrict__ row_loss, int64_t rows, float scale, float* loss) {
  __shared__ double lane[kLossReduceLanes];
  double acc = 0.0;
  for (int64_t t = threadIdx.x; t < rows; t += kLossReduceLanes) acc += static_cast<double>(row_loss[t]);
  lane[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kLossReduceLanes / 2; o >= 1; o /= 2) {
    if (static_cast<int>(threadIdx.x) < o) lane[threadIdx.x] += lane[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) loss[0] = static_cast<float>(static_cast<double>(loss[0]) + static_cast<double>(scale) * lane[0]);
}

template <typename T>
struct IsFloatOrBf16 {
  static constexpr bool value = false;
};
template <>
struct IsFloatOrBf16<float> {
  static constexpr bool value = true;
};
template <>
struct IsFloatOrBf16<dev::bf16_t> {
  static constexpr bool value = true;
};

// The 16-byte vector kernel wherever the layout allows (BF16 logits; vocab, row strides and bases in whole 16-byte
// vectors: the Gemma vocabularies and every row-major [T, V] buffer of the model). Returns whether it launched.
template <typename In, typename Out>
bool launch_vectorised(const TensorView& logits, const TensorView& targets, float scale, const TensorView& dlogits,
                       const TensorView& row_loss, int64_t rows, int64_t vocab, cudaStream_t s) {
  if constexpr (std::is_same_v<In, dev::bf16_t> && IsFloatOrBf16<Out>::value) {
    const bool vec = vocab % 8 == 0 && logits.strides[0] % 8 == 0 && ew::aligned16(logits.data) &&
                     (dlogits.empty() || (dlogits.strides[0] % 8 == 0 && ew::aligned16(dlogits.data)));
    if (!vec) return false;
    cross_entropy_bf16_vec_kernel<Out><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
        static_cast<const In*>(logits.data), logits.strides[0], targets.ptr<const int32_t>(), scale,
        dlogits.empty() ? nullptr : static_cast<Out*>(dlogits.data), dlogits.empty() ? 0 : dlogits.strides[0],
        row_loss.ptr<float>(), vocab);
    return true;
  } else {
    return false;
  }
}

}  // namespace

void cross_entropy(const TensorView& logits, const TensorView& targets, float scale, const TensorView& dlogits,
                   const TensorView& row_loss, const TensorView& loss, Stream stream) {
  TG_NVTX_FN();
  const auto d = loss_detail::check_args(logits, targets, scale, dlogits, row_loss, loss, Device::CUDA,
                                         "cuda::cross_entropy");
  TG_CHECK(d.rows <= 0x7fffffff, "cuda::cross_entropy: at most 2^31 - 1 rows per call, got ", d.rows);
  const cudaStream_t s = cuda_stream(stream);
  const DType out_dtype = dlogits.empty() ? logits.dtype : dlogits.dtype;
  TG_DISPATCH_FLOAT(logits.dtype, "cuda::cross_entropy(logits)", [&] {
    using In = scalar_t;
    TG_DISPATCH_FLOAT(out_dtype, "cuda::cross_entropy(dlogits)", [&] {
      using Out = scalar_t;
      if (launch_vectorised<In, Out>(logits, targets, scale, dlogits, row_loss, d.rows, d.vocab, s)) return;
      if constexpr (IsFloatOrBf16<In>::value && IsFloatOrBf16<Out>::value) {
        cross_entropy_kernel<In, Out><<<static_cast<unsigned>(d.rows), kThreads, 0, s>>>(
            static_cast<const In*>(logits.data), logits.strides[0], targets.ptr<const int32_t>(), scale,
            dlogits.empty() ? nullptr : static_cast<Out*>(dlogits.data), dlogits.empty() ? 0 : dlogits.strides[0],
            row_loss.ptr<float>(), d.vocab);
      } else {
        TG_FAIL("cuda::cross_entropy: logits and dlogits must be BF16 or F32");  // checked before; unreachable
      }
    });
  });
  TG_CHECK_LAUNCH("cross_entropy_kernel");
  if (!loss.empty()) {
    loss_reduce_kernel<<<1, kLossReduceLanes, 0, s>>>(row_loss.ptr<const float>(), d.rows, scale, loss.ptr<float>());
    TG_CHECK_LAUNCH("loss_reduce_kernel");
  }
}

}  // namespace tg::kernels::cuda
