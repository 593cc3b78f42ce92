// The per-tensor FP8 output of the fused element-wise kernels (norm, GeGLU and their backward), on the
// host side: argument checks shared by the CPU twins and the CUDA launchers, and the CPU twin of the
// epilogue. The device side is kernels/elementwise/elementwise.cuh.
//
// Contract of a fused "... -> FP8" kernel producing a logical [rows, cols] tensor V (high precision):
//   scale      F32 [1], read (never written);
//   data       [rows, cols] E4M3/E5M2, optional: data[r, c] = fp8(V[r, c] * scale), the product rounded
//              to F32 (RN) and then to FP8 (RN, saturating to the finite max; NaN -> NaN);
//   columnwise_data [cols, rows], same dtype, optional (at least one of the two): its transpose;
//   scale_inv, columnwise_scale_inv  F32 [1], optional, may alias: each written with 1 / scale (RN);
//   amax       F32 [1], optional: max-reduced with max |V| (the existing value counts). NaN-propagating
//              as kernels/quantize: any NaN in V gives the canonical NaN 0x7FFFFFFF (an integer max over
//              the bits of |V|, ieee::abs_bits).
// Every view contiguous and on the kernel's device. V is the value the unfused kernel would have stored
// in its high-precision output (so fused == unfused + cast, bit for bit).
#pragma once

#include <cstdint>
#include <vector>

#include "common/fp8_tensor.h"

namespace tg::kernels::detail {

// Throws tg::Error naming `what` and the offending member of `out`.
void check_fp8_output(const Fp8View& out, int64_t rows, int64_t cols, Device device, const char* what);

// CPU twin of the epilogue. Construct, store() every element once, then finish().
class Fp8OutputCpu {
 public:
  explicit Fp8OutputCpu(const Fp8View& out);
  void store(int64_t r, int64_t c, float v);
  void finish();  // writes scale_inv(s) and max-reduces amax

 private:
  const Fp8View& out_;
  float scale_ = 1.0f;
  uint32_t amax_bits_ = 0;
  int64_t rows_ = 0, cols_ = 0;
};

// Max-reduces a non-negative float given by its bits (NaN bits win) into an F32 [1] host view.
void amax_reduce_host(const TensorView& amax, uint32_t abs_bits);

}  // namespace tg::kernels::detail
