// Device-side building blocks shared by the kernels: scalar conversions with the project's rounding
// rules (common/numeric.h is their CPU twin), dtype dispatch, vector access, reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/check.h"
#include "common/dtype.h"

namespace tg::kernels::dev {

// ---- Asynchronous 16-byte copies global -> shared (cp.async, Ampere and later) ------------------------------------
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const auto s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// ---- Element types ------------------------------------------------------------------------------
// FP8 values are moved as raw bytes; these tags give them distinct C++ types for templates.
struct e4m3_t { uint8_t bits; };
struct e5m2_t { uint8_t bits; };
using bf16_t = __nv_bfloat16;
using f16_t = __half;

template <typename T> __device__ __forceinline__ float to_float(T x);
template <> __device__ __forceinline__ float to_float<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_float<bf16_t>(bf16_t x) { return __bfloat162float(x); }
template <> __device__ __forceinline__ float to_float<f16_t>(f16_t x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_float<e4m3_t>(e4m3_t x) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(x.bits, __NV_E4M3)));
}
template <> __device__ __forceinline__ float to_float<e5m2_t>(e5m2_t x) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(x.bits, __NV_E5M2)));
}

// Round-to-nearest-even; FP8 saturates to the finite max (SATFINITE), as common/numeric.h.
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16_t from_float<bf16_t>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ f16_t from_float<f16_t>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ e4m3_t from_float<e4m3_t>(float x) {
  return e4m3_t{__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)};
}
template <> __device__ __forceinline__ e5m2_t from_float<e5m2_t>(float x) {
  return e5m2_t{__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2)};
}

// ---- Reductions ---------------------------------------------------------------------------------
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// atomicMax for non-negative floats (amax): the int ordering of non-negative IEEE floats is the
// float ordering. NaN (positive bit pattern above inf) wins, so a NaN amax propagates as the recipe
// rules expect.
__device__ __forceinline__ void atomic_max_nonneg(float* addr, float v) {
  atomicMax(reinterpret_cast<int*>(addr), __float_as_int(v));
}

}  // namespace tg::kernels::dev

// Runtime dtype -> compile-time element type. The body sees `scalar_t`.
#define TG_DISPATCH_FLOAT_CASE(DT, TYPE, ...) \
  case ::tg::DType::DT: {                     \
    using scalar_t = TYPE;                    \
    __VA_ARGS__();                            \
    break;                                    \
  }
#define TG_DISPATCH_FLOAT(dtype, what, ...)                                                        \
  switch (dtype) {                                                                                 \
    TG_DISPATCH_FLOAT_CASE(F32, float, __VA_ARGS__)                                                \
    TG_DISPATCH_FLOAT_CASE(BF16, ::tg::kernels::dev::bf16_t, __VA_ARGS__)                          \
    TG_DISPATCH_FLOAT_CASE(F16, ::tg::kernels::dev::f16_t, __VA_ARGS__)                            \
    TG_DISPATCH_FLOAT_CASE(E4M3, ::tg::kernels::dev::e4m3_t, __VA_ARGS__)                          \
    TG_DISPATCH_FLOAT_CASE(E5M2, ::tg::kernels::dev::e5m2_t, __VA_ARGS__)                          \
    default: TG_FAIL(what, ": unsupported dtype ", dtype, " (expected F32, BF16, F16, F8_E4M3 or F8_E5M2)"); \
  }
