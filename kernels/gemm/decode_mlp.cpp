// decode_mlp dispatcher and the argument checks shared by the CPU twin and the CUDA kernel.
#include "kernels/gemm/decode_mlp.h"

#include <cstdint>

namespace tg::kernels {

namespace {
bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }
}  // namespace

namespace detail {

std::pair<int64_t, int64_t> check_decode_mlp(const DecodeMlpArgs& a) {
  const TensorView& h = a.h;
  TG_CHECK(!h.empty() && h.dtype == DType::BF16 && h.ndim() == 2 && h.shape[0] == 1 && h.is_contiguous(),
           "decode_mlp: h must be a contiguous BF16 [1, D], got ", h.describe());
  const int64_t d = h.shape[1];
  const Device dev = h.device;
  TG_CHECK(d % 16 == 0, "decode_mlp: D = ", d, " must be a multiple of 16");
  TG_CHECK(aligned16(h.data), "decode_mlp: h must be 16-byte aligned");
  TG_CHECK(a.norm_weight.dtype == DType::BF16 && a.norm_weight.numel() == d && a.norm_weight.is_contiguous() &&
               a.norm_weight.device == dev && aligned16(a.norm_weight.data),
           "decode_mlp: norm_weight must be a contiguous, 16-byte aligned BF16 [D = ", d, "] on h's device, got ",
           a.norm_weight.describe());
  TG_CHECK(a.eps >= 0.0f, "decode_mlp: eps must be >= 0, got ", a.eps);
  TG_CHECK(a.ln_scale.dtype == DType::F32 && a.ln_scale.numel() == 1 && a.ln_scale.device == dev,
           "decode_mlp: ln_scale must be F32 [1] on h's device, got ", a.ln_scale.describe());
  check_gemv_operand(a.fc1, "decode_mlp fc1");
  check_gemv_operand(a.fc2, "decode_mlp fc2");
  TG_CHECK(a.fc1.data.dtype == DType::E4M3 && a.fc2.data.dtype == DType::E4M3,
           "decode_mlp: fc1 and fc2 must be F8_E4M3 (per-tensor), got ", a.fc1.data.dtype, " and ", a.fc2.data.dtype);
  const int64_t f2 = a.fc1.data.shape[0];
  TG_CHECK(a.fc1.data.shape[1] == d && f2 % 2 == 0, "decode_mlp: fc1 must be [2F, D = ", d, "], got ",
           a.fc1.data.describe());
  const int64_t f = f2 / 2;
  TG_CHECK(f % 16 == 0, "decode_mlp: F = ", f, " must be a multiple of 16");
  TG_CHECK(a.fc2.data.shape[0] == d && a.fc2.data.shape[1] == f, "decode_mlp: fc2 must be [D = ", d, ", F = ", f,
           "], got ", a.fc2.data.describe());
  for (const GemvOperand* w : {&a.fc1, &a.fc2}) {
    TG_CHECK(w->data.device == dev && aligned16(w->data.data) && w->data.strides[0] % 16 == 0,
             "decode_mlp: the weights must be on h's device, 16-byte aligned, with row strides that are multiples of "
             "16 bytes, got ", w->data.describe());
  }
  const Fp8View& act = a.act;
  TG_CHECK(act.mode == ScalingMode::kPerTensor && act.data.dtype == DType::E4M3 && act.data.numel() == f &&
               act.data.is_contiguous() && act.data.device == dev && aligned16(act.data.data),
           "decode_mlp: act must be a contiguous per-tensor F8_E4M3 [1, F = ", f, "] on h's device, got ",
           act.data.describe());
  TG_CHECK(act.scale.dtype == DType::F32 && act.scale.numel() == 1 && act.scale_inv.dtype == DType::F32 &&
               act.scale_inv.numel() == 1,
           "decode_mlp: act needs F32 [1] scale and scale_inv, got ", act.scale.describe(), " and ",
           act.scale_inv.describe());
  if (dev == Device::CUDA) {
    TG_CHECK(a.barrier.dtype == DType::I32 && a.barrier.numel() == 2 && a.barrier.device == dev,
             "decode_mlp: barrier must be I32 [2] on the device (zeroed once), got ", a.barrier.describe());
  }
  return {d, f};
}

}  // namespace detail

void decode_mlp(const DecodeMlpArgs& a, Stream stream) {
  if (a.h.device == Device::CPU) return cpu::decode_mlp(a);
#if TEGEMMA_HAVE_CUDA
  cuda::decode_mlp(a, stream);
#else
  (void)stream;
  TG_FAIL("decode_mlp: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
