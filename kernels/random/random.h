// fill_normal: random BF16 values, the same on the CPU and the GPU.
//   out[i] = bf16_rne(float(std * z_i)), z the standard normal stream `key` (kernels/random/normal_stream.h:
//   element i depends on (key, i) only). std == 0 writes +0 everywhere. out: BF16, contiguous, any size.
// impl::random_weights draws every weight with it where the weights live (on a GPU without a host buffer or a copy).
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace tg::kernels {

void fill_normal(const TensorView& out, uint64_t key, double std, Stream stream = {});

namespace cpu {
void fill_normal(const TensorView& out, uint64_t key, double std);  // on all cores
}
namespace detail {
// The contract's checks, the same on both backends: out BF16, contiguous, on `device`; std finite and >= 0.
void check_fill_normal(const TensorView& out, double std, Device device, const char* what);
}
namespace cuda {
void fill_normal(const TensorView& out, uint64_t key, double std, Stream stream);
}

}  // namespace tg::kernels
