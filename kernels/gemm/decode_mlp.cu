// decode_mlp on the GPU: see decode_mlp.h for the contract and the design.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/elementwise/elementwise.cuh"
#include "kernels/gemm/decode_mlp.h"
#include "kernels/gemm/gemv_device.cuh"
#include "kernels/launch/device_info.h"
#include "kernels/launch/launch.cuh"

namespace tg::kernels::cuda {

namespace {

constexpr int kMlpThreads = 512;
constexpr int kMlpWarps = kMlpThreads / 32;

struct MlpParams {
  __nv_bfloat16* h;  // [D], read by the norm, then h[n] += fc2 row n
  const __nv_bfloat16* norm_w;
  float eps, inv_d;
  const float* ln_scale;
  const uint8_t* w1;  // [2F, D]
  const float* w1_scale_inv;
  int64_t ldw1;
  const float* act_scale;
  float* act_scale_inv;
  uint8_t* act;  // [F]
  const uint8_t* w2;  // [D, F]
  const float* w2_scale_inv;
  int64_t ldw2;
  int* barrier;  // [2]: arrivals, generation
  int d, f;
};

// L2 prefetch of `bytes` bytes from p (128-byte lines spread over the warp's lanes): weights a phase will read
// next, requested while the warp would otherwise wait.
__device__ __forceinline__ void prefetch_l2(const uint8_t* p, int64_t bytes, int lane) {
  for (int64_t off = 128 * lane; off < bytes; off += 128 * 32) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
  }
}

// Every block of the grid arrives before any leaves. barrier[0] counts arrivals (the last one resets it),
// barrier[1] is the generation the others wait to change; both stay consistent from call to call. A wait longer
// than ~10 s traps (a grid that is not all resident would otherwise hang the stream).
__device__ __forceinline__ void grid_barrier(int* barrier) {
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile int* gen = barrier + 1;
    const int g = *gen;
    __threadfence();  // this block's writes before its arrival
    if (atomicAdd(barrier, 1) == static_cast<int>(gridDim.x) - 1) {
      atomicExch(barrier, 0);
      __threadfence();
      atomicAdd(barrier + 1, 1);
    } else {
      for (unsigned spins = 0; *gen == g; ++spins) {
        if (spins > (1u << 24)) __trap();  // ~16M polls of >= 0.5 us each
        __nanosleep(32);
      }
    }
    __threadfence();  // the other blocks' writes before this block's reads
  }
  __syncthreads();
}

template <int kSplit>
__global__ void __launch_bounds__(kMlpThreads, 1) decode_mlp_kernel(const MlpParams p) {
  extern __shared__ __align__(16) uint8_t smem[];  // xs [D] (fc1's x), then xa [F] (fc2's x)
  __shared__ float rstd_s;
  __shared__ float part[kMlpWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warps = static_cast<int>(gridDim.x) * kMlpWarps;
  const int gw = static_cast<int>(blockIdx.x) * kMlpWarps + warp;
  const int d_chunks = p.d / 16, f_chunks = p.f / 16;

  // The first gate / up rows' weights into L2 before waiting on the previous kernel (they do not depend on it).
  if (gw < p.f) {
    prefetch_l2(p.w1 + static_cast<int64_t>(gw) * p.ldw1, p.d, lane);
    prefetch_l2(p.w1 + static_cast<int64_t>(gw + p.f) * p.ldw1, p.d, lane);
  }
  dev::pdl_wait();

  // Phase 1 (every block): xs = E4M3(RMSNorm(h) * ln_scale), rmsnorm_forward_fp8's arithmetic (one warp sums the
  // squares in the norm kernel's order, then the element-wise pass over the block).
  uint8_t* xs = smem;
  const uint4* hrow = reinterpret_cast<const uint4*>(p.h);
  if (warp == 0) {
    float acc = 0.0f;
    for (int c = lane; c < p.d / 8; c += 32) {
      const ew::Pack8<ew::bf16_t> hv{hrow[c]};
#pragma unroll
      for (int i = 0; i < 8; ++i) acc = ieee::ffma(hv.get(i), hv.get(i), acc);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc = ieee::fadd(acc, __shfl_xor_sync(0xFFFFFFFFu, acc, o));
    if (lane == 0) rstd_s = ieee::fdiv(1.0f, ieee::fsqrt(ieee::fadd(ieee::fmul(acc, p.inv_d), p.eps)));
  }
  __syncthreads();
  {
    const float rstd = rstd_s, scale = *p.ln_scale;
    for (int c = threadIdx.x; c < p.d / 8; c += kMlpThreads) {
      const ew::Pack8<ew::bf16_t> hv{hrow[c]};
      const ew::Pack8<ew::bf16_t> wv{__ldg(reinterpret_cast<const uint4*>(p.norm_w) + c)};
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        v[e] = ew::round_to<ew::bf16_t>(ieee::fmul(ieee::fmul(hv.get(e), rstd), ieee::fadd(1.0f, wv.get(e))));
      }
      *reinterpret_cast<uint2*>(xs + 8 * c) = ew::quantize8<dev::e4m3_t>(v, scale);
    }
  }
  __syncthreads();

  // Phase 2: act[j] = E4M3(GeGLU(gate_j, up_j) * act_scale), gate / up rows j and j + F in one warp; the unfused
  // chain's roundings (fc1 output to BF16, gelu to BF16, the product to BF16).
  {
    const float scale = ieee::fdiv(1.0f, *p.ln_scale) * *p.w1_scale_inv;  // (1 * x_scale_inv) * w_scale_inv
    const float act_scale = *p.act_scale;
    for (int j = gw; j < p.f; j += warps) {
      const uint4* rows[2] = {reinterpret_cast<const uint4*>(p.w1 + static_cast<int64_t>(j) * p.ldw1),
                              reinterpret_cast<const uint4*>(p.w1 + static_cast<int64_t>(j + p.f) * p.ldw1)};
      float acc[2];
      lane_sums<2>(rows, xs, 0, d_chunks, lane, acc);
      acc[0] = dev::warp_sum(acc[0]);
      acc[1] = dev::warp_sum(acc[1]);
      if (lane == 0) {
        const float g = ew::round_to<ew::bf16_t>(acc[0] * scale);
        const float u = ew::round_to<ew::bf16_t>(acc[1] * scale);
        const float a = ew::round_to<ew::bf16_t>(ieee::fmul(ew::round_to<ew::bf16_t>(ieee::gelu_tanh(g)), u));
        p.act[j] = static_cast<uint8_t>(__nv_cvt_float_to_fp8(ieee::fmul(a, act_scale), __NV_SATFINITE, __NV_E4M3));
      }
    }
    if (gw == 0 && lane == 0) *p.act_scale_inv = ieee::fdiv(1.0f, act_scale);
  }

  // fc2's split: kSplit warps per output row, warp s of a group taking the s-th slice of whole 32-chunk stripes
  // (gemv's k_split rule and slice arithmetic: the same bits as the unfused GEMV).
  constexpr int kGroups = kMlpWarps / kSplit;
  const int split = warp % kSplit;
  const int slice = kSplit == 1 ? f_chunks : ((f_chunks + 32 * kSplit - 1) / (32 * kSplit)) * 32;
  const int k_begin = min(f_chunks, split * slice);
  const int k_end = kSplit == 1 ? f_chunks : min(f_chunks, k_begin + slice);
  const int rounds = (p.d + static_cast<int>(gridDim.x) * kGroups - 1) / (static_cast<int>(gridDim.x) * kGroups);
  auto row_of = [&](int r) { return (r * static_cast<int>(gridDim.x) + static_cast<int>(blockIdx.x)) * kGroups + warp / kSplit; };
  // The first fc2 slice this warp streams, into L2 while the grid meets.
  if (row_of(0) < p.d) {
    prefetch_l2(p.w2 + static_cast<int64_t>(row_of(0)) * p.ldw2 + 16 * static_cast<int64_t>(k_begin),
                16 * static_cast<int64_t>(k_end - k_begin), lane);
  }
  grid_barrier(p.barrier);
  dev::pdl_launch_dependents();

  // Phase 3: h[n] += fc2 row n . act (act staged from L2 into shared memory: written by other blocks in this
  // kernel, so not through the read-only path).
  uint8_t* xa = smem + p.d;
  for (int c = threadIdx.x; c < f_chunks; c += kMlpThreads) {
    reinterpret_cast<uint4*>(xa)[c] = __ldcg(reinterpret_cast<const uint4*>(p.act) + c);
  }
  __syncthreads();
  const float scale = ieee::fdiv(1.0f, *p.act_scale) * *p.w2_scale_inv;
  GemvParams out{};
  out.out = p.h;
  out.residual = p.h;
  for (int r = 0; r < rounds; ++r) {
    const int n = row_of(r);
    const bool active = n < p.d;  // whole split groups
    float acc[1] = {0.0f};
    if (active) {
      const uint4* rows[1] = {reinterpret_cast<const uint4*>(p.w2 + static_cast<int64_t>(n) * p.ldw2)};
      lane_sums<1>(rows, xa, k_begin, k_end, lane, acc);
      acc[0] = dev::warp_sum(acc[0]);
    }
    if constexpr (kSplit > 1) {
      if (lane == 0) part[warp] = acc[0];
      __syncthreads();
      if (split == 0) {
        float sum = part[warp];
#pragma unroll
        for (int s = 1; s < kSplit; ++s) sum += part[warp + s];
        acc[0] = sum;
      }
      __syncthreads();  // part is reused next round
    }
    if (active && split == 0 && lane == 0) store_out(out, 0, n, acc[0], scale);  // gemv's epilogue, h as residual
  }
}

}  // namespace

void decode_mlp(const DecodeMlpArgs& a, Stream stream) {
  TG_NVTX_FN();
  const auto [d, f] = detail::check_decode_mlp(a);
  check_device(a.h, Device::CUDA, "cuda::decode_mlp(h)");
  TG_CHECK(2 * f <= INT32_MAX && d <= INT32_MAX, "decode_mlp: D = ", d, ", F = ", f, " is beyond the kernel's int range");
  MlpParams p{};
  p.h = static_cast<__nv_bfloat16*>(a.h.data);
  p.norm_w = a.norm_weight.ptr<const __nv_bfloat16>();
  p.eps = a.eps;
  p.inv_d = 1.0f / static_cast<float>(d);  // as rmsnorm_forward's inv_d (one IEEE division)
  p.ln_scale = a.ln_scale.ptr<const float>();
  p.w1 = static_cast<const uint8_t*>(a.fc1.data.data);
  p.w1_scale_inv = a.fc1.scale_inv.ptr<const float>();
  p.ldw1 = a.fc1.data.strides[0];
  p.act_scale = a.act.scale.ptr<const float>();
  p.act_scale_inv = a.act.scale_inv.ptr<float>();
  p.act = static_cast<uint8_t*>(a.act.data.data);
  p.w2 = static_cast<const uint8_t*>(a.fc2.data.data);
  p.w2_scale_inv = a.fc2.scale_inv.ptr<const float>();
  p.ldw2 = a.fc2.data.strides[0];
  p.barrier = a.barrier.ptr<int>();
  p.d = static_cast<int>(d);
  p.f = static_cast<int>(f);
  const std::size_t smem = static_cast<std::size_t>(d + f);
  TG_CHECK(smem <= static_cast<std::size_t>(max_smem_per_block()), "decode_mlp: x and act need D + F = ", smem,
           " bytes of shared memory, the device has ", max_smem_per_block());
  const cudaStream_t s = cuda_stream(stream);
  auto go = [&](auto kernel) {
    // One wave: every block resident at once (the grid barrier waits for all of them).
    const int per_sm = resident_blocks(reinterpret_cast<const void*>(kernel), kMlpThreads, smem);
    TG_CHECK(per_sm >= 1, "decode_mlp: the kernel does not fit on a multiprocessor with ", smem, " bytes of shared memory");
    launch(kernel, static_cast<unsigned>(per_sm * sm_count()), kMlpThreads, smem, s, p);
  };
  // fc2's K split: gemv's rule for this one-column shape (so the bits match the unfused GEMV).
  switch (gemv_k_split_rule(f)) {
    case 4: go(decode_mlp_kernel<4>); break;
    case 2: go(decode_mlp_kernel<2>); break;
    default: go(decode_mlp_kernel<1>); break;
  }
  TG_CHECK_LAUNCH("decode_mlp_kernel");
}

}  // namespace tg::kernels::cuda
