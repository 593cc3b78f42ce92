// convert: element-wise dtype conversion without scaling.
//   dst[i] = round(src[i]) in dst's format: RNE; FP8 saturates to its finite max; NaN stays NaN.
// Float formats F32, BF16, F16, F8_E4M3, F8_E5M2 in any combination. src and dst contiguous, same
// shape, same device. The rounding rules are those of common/numeric.h (the CPU twin uses them).
#pragma once

#include "common/tensor.h"

namespace tg::kernels {

void convert(const TensorView& src, const TensorView& dst, Stream stream = {});

namespace cpu {
void convert(const TensorView& src, const TensorView& dst);
}
namespace cuda {
void convert(const TensorView& src, const TensorView& dst, Stream stream);
}

}  // namespace tg::kernels
