// CUDA side of kernels/optim: chunk partials of the squared gradient norm, one finalize block (norm, clip
// coefficient, skip flag, state), and the multi-tensor AdamW update (one launch over every chunk of every
// parameter, driven by the device table). The reduction ORDER is optim.h's; the twin follows it exactly.
#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/optim/optim.h"
#include "kernels/optim/optim_table.h"

namespace tg::kernels::cuda {

namespace {

using optim_detail::Chunk;
using optim_detail::Entry;

__device__ __forceinline__ const Chunk* chunks_of(const Entry* entries, int64_t num_entries) {
  return reinterpret_cast<const Chunk*>(entries + num_entries);
}

// Block c: the FP64 sum of squares of chunk c (256 lanes, strided, then a shared-memory tree).
__global__ void adamw_sumsq_kernel(const Entry* __restrict__ entries, int64_t num_entries, double* __restrict__ partial) {
  const Chunk ch = chunks_of(entries, num_entries)[blockIdx.x];
  const Entry e = entries[ch.entry];
  const int64_t end = min(e.n, ch.begin + kAdamWChunk);
  double acc = 0.0;
  for (int64_t j = ch.begin + threadIdx.x; j < end; j += kAdamWLanes) {
    const double x = e.g[j];
    acc = __dadd_rn(acc, __dmul_rn(x, x));
  }
  __shared__ double lane[kAdamWLanes];
  lane[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kAdamWLanes / 2; o >= 1; o /= 2) {
    if (static_cast<int>(threadIdx.x) < o) lane[threadIdx.x] = __dadd_rn(lane[threadIdx.x], lane[threadIdx.x + o]);
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = lane[0];
}

// One block: sumsq over the partials, norm, coefficient, skip flag, and the state update when finite.
__global__ void adamw_finalize_kernel(const double* __restrict__ partial, int64_t num_chunks,
                                      optim_detail::HostScalars h, double* state, float* status) {
  __shared__ double lane[kAdamWReduceLanes];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < num_chunks; i += kAdamWReduceLanes) acc = __dadd_rn(acc, partial[i]);
  lane[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kAdamWReduceLanes / 2; o >= 1; o /= 2) {
    if (static_cast<int>(threadIdx.x) < o) lane[threadIdx.x] = __dadd_rn(lane[threadIdx.x], lane[threadIdx.x + o]);
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  const double sumsq = lane[0];
  const float norm = static_cast<float>(__dsqrt_rn(sumsq));
  const bool finite = isfinite(sumsq);
  status[0] = norm;
  status[1] = optim_detail::clip_coef(h.max_grad_norm, norm);
  status[2] = finite ? 0.0f : 1.0f;
  status[3] = static_cast<float>(sumsq);
  if (!finite) return;
  state[0] = __dadd_rn(state[0], 1.0);
  state[1] = __dmul_rn(state[1], h.beta1);
  state[2] = __dmul_rn(state[2], h.beta2);
}

// Block c updates chunk c; every block returns at once when the step is skipped.
__global__ void adamw_update_kernel(const Entry* __restrict__ entries, int64_t num_entries,
                                    optim_detail::HostScalars h, const double* __restrict__ state,
                                    const float* __restrict__ status) {
  if (status[2] != 0.0f) return;
  const Chunk ch = chunks_of(entries, num_entries)[blockIdx.x];
  const Entry e = entries[ch.entry];
  const optim_detail::Scalars sc = optim_detail::make_scalars(h, status[1], state[1], state[2]);
  const int64_t end = min(e.n, ch.begin + kAdamWChunk);
  for (int64_t j = ch.begin + threadIdx.x; j < end; j += blockDim.x) {
    float m = e.m[j], v = e.v[j];
    const float p = optim_detail::update_element(h, sc, e.decay != 0, e.p[j], e.g[j], m, v);
    e.p[j] = p;
    e.m[j] = m;
    e.v[j] = v;
    if (e.copy != nullptr) e.copy[j] = __bfloat16_as_ushort(__float2bfloat16_rn(p));
  }
}

template <typename Src>
__global__ void accumulate_kernel(float* __restrict__ dst, const Src* __restrict__ src, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    dst[i] = __fadd_rn(dst[i], dev::to_float<Src>(src[i]));
  }
}

}  // namespace

void adamw_step(const AdamWTable& table, const AdamWHyper& hyper, const TensorView& state, const TensorView& status,
                const TensorView& workspace, Stream stream) {
  TG_NVTX_FN();
  optim_detail::check_step_args(table, hyper, state, status, workspace, Device::CUDA, "cuda::adamw_step");
  TG_CHECK(table.num_chunks() <= 0x7fffffff, "cuda::adamw_step: too many chunks (", table.num_chunks(), ")");
  const cudaStream_t s = cuda_stream(stream);
  const auto* entries = static_cast<const Entry*>(table.device_table().data());
  const auto num_entries = static_cast<int64_t>(table.params().size());
  const auto blocks = static_cast<unsigned>(table.num_chunks());
  const optim_detail::HostScalars h = optim_detail::host_scalars(hyper);
  adamw_sumsq_kernel<<<blocks, kAdamWLanes, 0, s>>>(entries, num_entries, workspace.ptr<double>());
  TG_CHECK_LAUNCH("adamw_sumsq_kernel");
  adamw_finalize_kernel<<<1, kAdamWReduceLanes, 0, s>>>(workspace.ptr<const double>(), table.num_chunks(), h,
                                                        state.ptr<double>(), status.ptr<float>());
  TG_CHECK_LAUNCH("adamw_finalize_kernel");
  adamw_update_kernel<<<blocks, 256, 0, s>>>(entries, num_entries, h, state.ptr<const double>(),
                                             status.ptr<const float>());
  TG_CHECK_LAUNCH("adamw_update_kernel");
}

void accumulate(const TensorView& dst, const TensorView& src, Stream stream) {
  TG_NVTX_FN();
  optim_detail::check_accumulate_args(dst, src, Device::CUDA, "cuda::accumulate");
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int64_t want = (n + 255) / 256;
  const unsigned blocks = static_cast<unsigned>(want < 4096 ? want : 4096);
  const cudaStream_t s = cuda_stream(stream);
  if (src.dtype == DType::F32) {
    accumulate_kernel<float><<<blocks, 256, 0, s>>>(dst.ptr<float>(), src.ptr<const float>(), n);
  } else {
    accumulate_kernel<dev::bf16_t><<<blocks, 256, 0, s>>>(dst.ptr<float>(), static_cast<const dev::bf16_t*>(src.data), n);
  }
  TG_CHECK_LAUNCH("accumulate_kernel");
}

}  // namespace tg::kernels::cuda
