// kernels/kv_cache on CUDA. All three are memory-bound copies; the FP8 conversion uses the same RN division
// and SATFINITE E4M3 rounding as the CPU twin (and as kv_append_kernel).
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_utils.cuh"
#include "kernels/elementwise/ieee_math.h"
#include "kernels/kv_cache/kv_cache.h"
#include "kernels/launch/launch.cuh"
#include "kernels/rope/rope_math.cuh"

namespace tg::kernels::cuda {

namespace {

using dev::bf16_t;
using dev::e4m3_t;

struct WriteArgs {
  const bf16_t* k;
  const bf16_t* v;
  const bf16_t* q;
  bf16_t* q_out;
  int64_t k_stride, v_stride, q_stride;  // token strides (elements)
  const int32_t* slots;
  const int32_t* positions;
  void* k_cache;
  void* v_cache;
  const float* k_scale;
  const float* v_scale;
  bool per_head_scale;
  int B, max_seq, Hkv, Dh, H;
  int kv_chunks;  // blocks per token for each of K and V: ceil(Hkv * Dh / blockDim.x)
  const float* inv_freq;  // null: no RoPE (kv_cache_write); else kv_cache_write_rope's table [Dh / 2]
  const float* cos_sin;   // rope_cos_sin_table [cos_sin_positions, 2, Dh / 2], or null: compute every position
  int cos_sin_positions;
};

// Element i of a row [heads, Dh] (head stride Dh), RoPE-rotated at `pos` when a.inv_freq is set: element d < Dh/2 of
// a head pairs with d + Dh/2 (rope.h), each thread computing its own element's pair (rope_dev: rope_kernel's
// arithmetic, so the bytes match rope_forward + the plain write), rounded to BF16 as rope_forward's store does.
// cos / sin come from the table when a.cos_sin covers pos (two 4-byte loads, the same row for every block of the
// step's token: L1/L2 hits), else from the FP64 sincos -- the same bits (rope_math.cuh).
__device__ __forceinline__ bf16_t row_element(const WriteArgs& a, const bf16_t* row, int i, int pos) {
  if (a.inv_freq == nullptr) return row[i];
  const int half = a.Dh / 2, d = i % a.Dh, j = d % half;
  const bool first = d < half;
  const float self = __bfloat162float(row[i]), partner = __bfloat162float(row[first ? i + half : i - half]);
  float c[1], s[1];
  rope_dev::cos_sin_at<bf16_t, 1>(a.cos_sin, a.cos_sin_positions, half, pos, a.inv_freq, j, 1.0f, c, s);
  const float x1 = first ? self : partner, x2 = first ? partner : self;
  return dev::from_float<bf16_t>(first ? rope_dev::rotated_first<bf16_t>(x1, x2, c[0], s[0])
                                       : rope_dev::rotated_second<bf16_t>(x1, x2, c[0], s[0]));
}

// grid (T, 2 * kv_chunks + q_chunks): y in [0, kv_chunks) K, [kv_chunks, 2 kv_chunks) V, the rest the q copy (when q
// is given), each block blockDim.x consecutive elements of its row, one per thread; K and q RoPE-rotated on the way
// when a.inv_freq is set. One element per thread rather than a loop over the row: a loop's next loads wait for the
// previous stores (the compiler cannot prove they do not alias), so gemma-2b's q row of 2048 elements on one block
// of 256 threads was 8 dependent round trips (6.3 us per decode-step call in session 5's profile).
// Element-wise: any Dh, any alignment.
template <bool kFp8>
__global__ void kv_cache_write_kernel(WriteArgs a) {
  dev::pdl_enter();  // launched with PDL inside a decode step (kernels/launch/programmatic_launch.h)
  const int t = blockIdx.x, y = blockIdx.y;
  if (y >= 2 * a.kv_chunks) {
    if (a.q == nullptr) return;
    const int n = a.H * a.Dh, i = (y - 2 * a.kv_chunks) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const bf16_t* src = a.q + t * a.q_stride;
    const int qpos = a.positions[t];  // rope_forward rotates every token's q
    a.q_out[static_cast<int64_t>(t) * n + i] = row_element(a, src, i, qpos);
    return;
  }
  const bool is_v = y >= a.kv_chunks;
  const int n = a.Hkv * a.Dh, i = (y - (is_v ? a.kv_chunks : 0)) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int slot = a.slots[t], pos = a.positions[t];
  if (slot < 0 || slot >= a.B || pos < 0 || pos >= a.max_seq) return;
  WriteArgs r = a;
  if (is_v) r.inv_freq = nullptr;  // V is not rotated
  const bf16_t* src = (is_v ? a.v : a.k) + t * (is_v ? a.v_stride : a.k_stride);
  const int64_t dst = (static_cast<int64_t>(slot) * a.max_seq + pos) * n;
  if constexpr (kFp8) {
    const float* scale = is_v ? a.v_scale : a.k_scale;
    uint8_t* out = static_cast<uint8_t*>(is_v ? a.v_cache : a.k_cache) + dst;
    const float s = scale[a.per_head_scale ? i / a.Dh : 0];
    out[i] = dev::from_float<e4m3_t>(ieee::fdiv(__bfloat162float(row_element(r, src, i, pos)), s)).bits;
  } else {
    bf16_t* out = static_cast<bf16_t*>(is_v ? a.v_cache : a.k_cache) + dst;
    out[i] = row_element(r, src, i, pos);
  }
}

// dst row (b, j) = src row (index ? index[b] : b, j) for j < length; rows of row_bytes bytes, strides in rows.
// One block per (j, b); 4-byte words when row_bytes allows (it does for every Gemma shape), bytes otherwise.
__global__ void copy_rows_kernel(const char* __restrict__ src, char* __restrict__ dst,
                                 const int32_t* __restrict__ index, int B, int64_t src_seq_rows, int64_t dst_seq_rows,
                                 int64_t row_bytes) {
  const int j = blockIdx.x, b = blockIdx.y;
  int from = b;
  if (index != nullptr) from = index[b];
  char* out = dst + (b * dst_seq_rows + j) * row_bytes;
  if (from < 0 || from >= B) {  // an invalid source row becomes zeros (the CPU twin rejects it)
    for (int64_t i = threadIdx.x; i < row_bytes; i += blockDim.x) out[i] = 0;
    return;
  }
  const char* in = src + (from * src_seq_rows + j) * row_bytes;
  if (row_bytes % 4 == 0) {
    const int64_t words = row_bytes / 4;
    for (int64_t i = threadIdx.x; i < words; i += blockDim.x) {
      reinterpret_cast<uint32_t*>(out)[i] = reinterpret_cast<const uint32_t*>(in)[i];
    }
  } else {
    for (int64_t i = threadIdx.x; i < row_bytes; i += blockDim.x) out[i] = in[i];
  }
}

// grid (ceil(T / kRowsPerBlock), Hkv): block (tb, h) reduces head h over its rows, one atomic per block.
constexpr int kRowsPerBlock = 16;
__global__ void kv_rows_amax_kernel(const bf16_t* __restrict__ x, int64_t stride, int T, int Dh, bool per_head,
                                    float* __restrict__ amax) {
  const int h = blockIdx.y;
  const int t0 = blockIdx.x * kRowsPerBlock, t1 = min(T, t0 + kRowsPerBlock);
  uint32_t m = 0;
  for (int t = t0; t < t1; ++t) {
    const bf16_t* row = x + t * stride + static_cast<int64_t>(h) * Dh;
    for (int c = threadIdx.x; c < Dh; c += blockDim.x) m = max(m, ieee::abs_bits(__bfloat162float(row[c])));
  }
  for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  __shared__ uint32_t warp_m[32];
  if ((threadIdx.x & 31) == 0) warp_m[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) m = max(m, warp_m[w]);
    atomicMax(reinterpret_cast<unsigned int*>(amax + (per_head ? h : 0)), m);
  }
}

}  // namespace

namespace {
// The launch behind kv_cache_write and kv_cache_write_rope (inv_freq null: no rotation; cos_sin null: no table).
void write_rows(const kv_cache_detail::WriteDims& d, const TensorView& k, const TensorView& v, const TensorView& slots,
                const TensorView& positions, const float* inv_freq, const float* cos_sin, int64_t cos_sin_positions,
                const KvCache& cache, const TensorView& q, const TensorView& q_out, Stream stream) {
  WriteArgs a{};
  a.k = k.ptr<const bf16_t>();
  a.v = v.ptr<const bf16_t>();
  a.k_stride = k.strides[0];
  a.v_stride = v.strides[0];
  if (!q.empty()) {
    a.q = q.ptr<const bf16_t>();
    a.q_out = q_out.ptr<bf16_t>();
    a.q_stride = q.strides[0];
  }
  a.slots = slots.ptr<const int32_t>();
  a.positions = positions.ptr<const int32_t>();
  a.k_cache = cache.k.data;
  a.v_cache = cache.v.data;
  a.k_scale = d.fp8 ? cache.k_scale.ptr<const float>() : nullptr;
  a.v_scale = d.fp8 ? cache.v_scale.ptr<const float>() : nullptr;
  a.per_head_scale = d.per_head_scale;
  a.B = static_cast<int>(d.B);
  a.max_seq = static_cast<int>(d.max_seq);
  a.Hkv = static_cast<int>(d.Hkv);
  a.Dh = static_cast<int>(d.Dh);
  a.H = static_cast<int>(d.H);
  a.inv_freq = inv_freq;
  a.cos_sin = cos_sin;
  // Positions are I32: a longer table's rows past INT32_MAX could never be read.
  a.cos_sin_positions = static_cast<int>(std::min<int64_t>(cos_sin_positions, INT32_MAX));
  const int64_t kv_n = d.Hkv * d.Dh, q_n = q.empty() ? 0 : d.H * d.Dh;
  const int threads = static_cast<int>(std::clamp<int64_t>((std::max(kv_n, q_n) + 31) / 32 * 32, 32, 256));
  a.kv_chunks = static_cast<int>((kv_n + threads - 1) / threads);
  const int64_t q_chunks = (q_n + threads - 1) / threads;
  TG_CHECK(2 * a.kv_chunks + q_chunks <= 65535, "kv_cache_write(cuda): rows of ", kv_n, " / ", q_n,
           " elements need more than 65535 blocks per token");
  const dim3 grid(static_cast<unsigned>(d.T), static_cast<unsigned>(2 * a.kv_chunks + q_chunks));
  const cudaStream_t s = cuda_stream(stream);
  if (d.fp8) {
    launch(kv_cache_write_kernel<true>, grid, threads, 0, s, a);
  } else {
    launch(kv_cache_write_kernel<false>, grid, threads, 0, s, a);
  }
  TG_CHECK_LAUNCH("kv_cache_write_kernel");
}
}  // namespace

void kv_cache_write(const TensorView& k, const TensorView& v, const TensorView& slots, const TensorView& positions,
                    const KvCache& cache, const TensorView& q, const TensorView& q_out, Stream stream) {
  TG_NVTX_FN();
  const auto d = kv_cache_detail::check_write(k, v, slots, positions, cache, q, q_out, Device::CUDA,
                                              "kv_cache_write(cuda)");
  write_rows(d, k, v, slots, positions, nullptr, nullptr, 0, cache, q, q_out, stream);
}

void kv_cache_write_rope(const TensorView& k, const TensorView& v, const TensorView& slots,
                         const TensorView& positions, const TensorView& inv_freq, const KvCache& cache,
                         const TensorView& q, const TensorView& q_out, Stream stream, const TensorView& table) {
  TG_NVTX_FN();
  int64_t table_positions = 0;
  const auto d = kv_cache_detail::check_write_rope(k, v, slots, positions, inv_freq, cache, q, q_out, Device::CUDA,
                                                   "kv_cache_write_rope(cuda)", table, &table_positions);
  write_rows(d, k, v, slots, positions, inv_freq.ptr<const float>(),
             table_positions > 0 ? table.ptr<const float>() : nullptr, table_positions, cache, q, q_out, stream);
}

void kv_cache_reorder(const KvCache& cache, const TensorView& src, int64_t length, const TensorView& scratch,
                      Stream stream) {
  TG_NVTX_FN();
  constexpr const char* what = "kv_cache_reorder(cuda)";
  const auto d = kv_cache_detail::check_reorder(cache, src, length, scratch, Device::CUDA, what);
  if (length == 0) return;
  const cudaStream_t s = cuda_stream(stream);
  const dim3 grid(static_cast<unsigned>(length), static_cast<unsigned>(d.B));
  const int threads = static_cast<int>(std::clamp<int64_t>(d.row_bytes / 4, 32, 256));
  for (const TensorView* t : {&cache.k, &cache.v}) {
    // Gather into the scratch ([B, length] rows), then copy back (the sources overlap the destinations).
    copy_rows_kernel<<<grid, threads, 0, s>>>(static_cast<const char*>(t->data), static_cast<char*>(scratch.data),
                                              src.ptr<const int32_t>(), static_cast<int>(d.B), d.max_seq, length,
                                              d.row_bytes);
    TG_CHECK_LAUNCH("copy_rows_kernel");
    copy_rows_kernel<<<grid, threads, 0, s>>>(static_cast<const char*>(scratch.data), static_cast<char*>(t->data),
                                              nullptr, static_cast<int>(d.B), length, d.max_seq, d.row_bytes);
    TG_CHECK_LAUNCH("copy_rows_kernel");
  }
}

void kv_rows_amax(const TensorView& x, const TensorView& amax, Stream stream) {
  TG_NVTX_FN();
  constexpr const char* what = "kv_rows_amax(cuda)";
  const int64_t slots = kv_cache_detail::check_amax(x, amax, Device::CUDA, what);
  const int64_t t = x.shape[0], heads = x.shape[1], dh = x.shape[2];
  const dim3 grid(static_cast<unsigned>((t + kRowsPerBlock - 1) / kRowsPerBlock), static_cast<unsigned>(heads));
  const int threads = static_cast<int>(std::clamp<int64_t>((dh + 31) / 32 * 32, 32, 256));
  kv_rows_amax_kernel<<<grid, threads, 0, cuda_stream(stream)>>>(
      x.ptr<const bf16_t>(), x.strides[0], static_cast<int>(t), static_cast<int>(dh), slots > 1, amax.ptr<float>());
  TG_CHECK_LAUNCH("kv_rows_amax_kernel");
}

}  // namespace tg::kernels::cuda
