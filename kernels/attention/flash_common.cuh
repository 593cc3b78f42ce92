// Building blocks of the flash-attention kernels: cp.async tile loads, ldmatrix fragment loads and the
// m16n8k16 BF16 tensor-core MMA (FP32 accumulate), with the register layouts spelled out.
//
// mma.sync.m16n8k16.row.col (per warp; g = lane / 4, t = lane % 4):
//   A 16x16 (row-major): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B 16x8  ("col"):     b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C 16x8  (FP32):      c0, c1 = C[g][2t..2t+1], c2, c3 = C[g+8][2t..2t+1]
// Shared-memory tiles are row-major with rows padded by 8 elements (16 bytes) so that the 8 row addresses
// of one ldmatrix hit 8 different 16-byte bank groups.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace tg::kernels::cuda::flash {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; with valid == false the destination is zero-filled (nothing is read).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(p)));
}

// d += a * b for one 16x8x16 tile.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Loads rows [row0, row0 + ROWS) of a [len, DH] slice (element stride `stride` between rows) into a padded
// smem tile [ROWS][DH + 8]; rows at or beyond `len` are zero-filled. All threads of the block take part.
template <int ROWS, int DH, int THREADS>
__device__ __forceinline__ void load_tile_async(__nv_bfloat16* tile, const __nv_bfloat16* base, int64_t stride,
                                                int row0, int len, int tid) {
  constexpr int kChunks = DH / 8;
  constexpr int kTotal = ROWS * kChunks;
  for (int i = tid; i < kTotal; i += THREADS) {
    const int r = i / kChunks, c = i % kChunks;
    const bool valid = row0 + r < len;
    const __nv_bfloat16* src = valid ? base + static_cast<int64_t>(row0 + r) * stride + c * 8 : base;
    cp_async_16(tile + r * (DH + 8) + c * 8, src, valid);
  }
}

}  // namespace tg::kernels::cuda::flash
