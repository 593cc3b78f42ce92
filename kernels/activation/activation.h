// GeGLU, Gemma's MLP activation: out = gelu_tanh(gate) * up, on fc1's output [T, 2F] = [gate | up]
// (gate is the FIRST half of each row: TE's fc1 layout and HF's gate_proj / up_proj order).
//
// GELU is PyTorch's gelu(approximate='tanh') in FP32 (../shared/docs/gemma.md section 2.6; the exact
// operation order is ieee::gelu_tanh in kernels/elementwise/ieee_math.h, with a host/device-identical
// tanh within 2^-21.7 absolute of the true tanh, so results match PyTorch's FP32 GELU to a few FP32 ulps).
// Rounding points follow HF in the activation dtype A (= fc1's dtype, BF16 or F32):
//   forward    a = round_A(gelu(g));  out = round_O(a * u)            (act_fn(gate) is a BF16 tensor, then
//                                                                      the product of two BF16 tensors)
//   backward   a = round_A(gelu(g)) (recomputed, nothing saved but fc1)
//              d_up   = round_O(dout * a)                             (mul's backward)
//              da     = round_A(dout * u)
//              d_gate = round_O(da * gelu'(g))                        (GeluBackward, tanh: ieee::gelu_tanh_grad)
//   with O = the output's dtype (BF16 or F32), every product one RN float multiply.
// FP8 variants (per-tensor, kernels/elementwise/fp8_out.h): V = round_A(the value above), then
// fp8(V * scale), amax over |V|: fused == BF16 output + a separate cast, bit for bit. The backward's FP8
// output is d_fc1 [T, 2F] (typically E5M2 under HYBRID) with its transpose [2F, T].
//
// Shapes: fc1 [T, 2F], out [T, F], dout [T, F], d_fc1 [T, 2F]; 2-D views with unit column stride and any
// row stride (so fc1 may be a GEMM output with padding); dout has fc1's dtype. Views must not overlap.
// The CUDA kernels vectorise when F and the row strides are multiples of 8 and pointers are 16-byte
// aligned, element access otherwise (same results).
#pragma once

#include "common/fp8_tensor.h"
#include "common/tensor.h"

namespace tg::kernels {

// out = round(round_A(gelu(gate)) * up); optional amax F32 [1] max-reduced with max |out|.
void geglu_forward(const TensorView& fc1, const TensorView& out, const TensorView& amax = {}, Stream stream = {});
void geglu_forward_fp8(const TensorView& fc1, const Fp8View& out, Stream stream = {});
void geglu_backward(const TensorView& dout, const TensorView& fc1, const TensorView& dfc1, Stream stream = {});
void geglu_backward_fp8(const TensorView& dout, const TensorView& fc1, const Fp8View& dfc1, Stream stream = {});

namespace cpu {
void geglu_forward(const TensorView& fc1, const TensorView& out, const TensorView& amax);
void geglu_forward_fp8(const TensorView& fc1, const Fp8View& out);
void geglu_backward(const TensorView& dout, const TensorView& fc1, const TensorView& dfc1);
void geglu_backward_fp8(const TensorView& dout, const TensorView& fc1, const Fp8View& dfc1);
}  // namespace cpu
namespace cuda {
void geglu_forward(const TensorView& fc1, const TensorView& out, const TensorView& amax, Stream stream);
void geglu_forward_fp8(const TensorView& fc1, const Fp8View& out, Stream stream);
void geglu_backward(const TensorView& dout, const TensorView& fc1, const TensorView& dfc1, Stream stream);
void geglu_backward_fp8(const TensorView& dout, const TensorView& fc1, const Fp8View& dfc1, Stream stream);
}  // namespace cuda

namespace activation_detail {
// Checks fc1 [T, 2F] (BF16/F32, 2-D, unit column stride, even width) and returns F.
int64_t check_fc1(const TensorView& fc1, Device device, const char* what);
// A [rows, cols] BF16/F32 view with unit column stride (dtype checked when `dtype` is given).
void check_act(const TensorView& t, int64_t rows, int64_t cols, Device device, const char* what,
               const DType* dtype = nullptr);
void check_amax(const TensorView& amax, Device device, const char* what);
}  // namespace activation_detail

}  // namespace tg::kernels
