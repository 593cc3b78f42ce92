// decode_mlp: a B1 decode step's LayerNormMLP in one persistent kernel (opt-in experiment, docs/decode_persistent.md).
//
// h [1, D] += fc2(E4M3(GeGLU(fc1(E4M3(RMSNorm(h))))))), bit for bit what the unfused kernels compute in sequence
// (rmsnorm_forward_fp8 with ln_scale -> gemv -> geglu_forward_fp8 with act.scale -> gemv with h as the residual;
// both GEMVs on the CUDA-core loop, M = 1). Why: the unfused chain is four dependent kernels whose boundaries cost
// more than their work at B1 (docs/decode_persistent.md); here one grid of one wave computes the norm once per
// block, streams fc1 (gate / up rows j and j + F in one warp, GeGLU + cast in the epilogue), meets at one grid
// barrier, and streams fc2 (its first weights prefetched into L2 before the barrier).
// Operands: h BF16 [1, D] (contiguous, updated in place); norm_weight BF16 [D]; ln_scale F32 [1] (fc1's input
// scale); fc1 E4M3 [2F, D] = [gate; up], fc2 E4M3 [D, F], per-tensor with scale_inv; act E4M3 [1, F] per-tensor
// with scale (fc2's input scale) and scale_inv (written: 1 / scale) -- the GeGLU output, scratch between the phases;
// barrier I32 [2] on the device, zero before the first call (a grid barrier's arrival count, which every call
// leaves at zero, and its generation, which counts calls; one buffer per stream). D and F multiples of 16. CUDA: the grid is the number of blocks
// that fit on the device at once (the barrier needs them all resident; launched after the previous kernel's
// blocks, it waits for them to drain). CPU twin: the unfused CPU kernels in sequence (barrier unused).
#pragma once

#include <cstdint>
#include <utility>

#include "common/fp8_tensor.h"
#include "common/tensor.h"
#include "kernels/gemm/gemv.h"

namespace tg::kernels {

struct DecodeMlpArgs {
  TensorView h;            // BF16 [1, D], in place
  TensorView norm_weight;  // BF16 [D]
  float eps = 0.0f;
  TensorView ln_scale;  // F32 [1]
  GemvOperand fc1;      // E4M3 [2F, D]
  Fp8View act;          // E4M3 [1, F] with scale and scale_inv
  GemvOperand fc2;      // E4M3 [D, F]
  TensorView barrier;   // I32 [2] (CUDA)
};
void decode_mlp(const DecodeMlpArgs& a, Stream stream = {});

namespace cpu {
void decode_mlp(const DecodeMlpArgs& a);
}
namespace cuda {
void decode_mlp(const DecodeMlpArgs& a, Stream stream);
}
namespace detail {
// The checks both implementations run; returns {D, F}.
std::pair<int64_t, int64_t> check_decode_mlp(const DecodeMlpArgs& a);
}

}  // namespace tg::kernels
