// CPU twin of decode_mlp: the unfused CPU kernels in sequence.
#include "common/fp8_tensor.h"
#include "common/nvtx.h"
#include "kernels/activation/activation.h"
#include "kernels/gemm/decode_mlp.h"
#include "kernels/norm/norm.h"

namespace tg::kernels::cpu {

// The unfused CPU kernels in sequence: the definition decode_mlp's CUDA kernel reproduces bit for bit.
void decode_mlp(const DecodeMlpArgs& a) {
  TG_NVTX_FN();
  const auto [d, f] = detail::check_decode_mlp(a);
  Fp8Tensor xq = Fp8Tensor::per_tensor(DType::E4M3, 1, d, /*rowwise=*/true, /*columnwise=*/false, Device::CPU);
  Fp8View xv = xq.view();
  xv.scale = a.ln_scale;  // the caller's scale; xq's own scale_inv receives 1 / scale
  xv.amax = TensorView{};
  const Tensor rstd = Tensor::empty(DType::F32, {1});
  cpu::rmsnorm_forward_fp8(a.h, a.norm_weight, a.eps, xv, rstd.view(), TensorView{});
  const Tensor y = Tensor::empty(DType::BF16, {1, 2 * f});
  cpu::gemv(GemvOperand{xv.data, xv.scale_inv}, a.fc1, y.view(), GemvOptions{}, TensorView{});
  Fp8View act = a.act;
  act.amax = TensorView{};
  cpu::geglu_forward_fp8(y.view(), act);
  cpu::gemv(GemvOperand{act.data, act.scale_inv}, a.fc2, a.h, GemvOptions{}, a.h);
}

}  // namespace tg::kernels::cpu
