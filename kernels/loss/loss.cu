// CUDA side of kernels/loss: one thread block per row (online softmax over the row, then the gradient
// sweep), and one block for the FP64 loss reduction in the ORDER of loss.h.
#include <cfloat>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_utils.cuh"
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
    const float log_s = logf(st);  // lse = mt + log_s, never formed: mt may dwarf log_s
    m_shared = mt;
    log_s_shared = log_s;
    row_loss[t] = (mt - dev::to_float<In>(x[y])) + log_s;
  }
  __syncthreads();
  if (dlogits == nullptr) return;
  const float mt = m_shared, log_s = log_s_shared;
  Out* dx = dlogits + t * ld_out;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = expf((dev::to_float<In>(x[j]) - mt) - log_s);  // read before the (in-place) write
    dx[j] = dev::from_float<Out>((p - (j == y ? 1.0f : 0.0f)) * scale);
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
