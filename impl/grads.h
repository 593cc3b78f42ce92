// Gradients of the model's weights, in the fused layout of impl/weights.h: F32 accumulation buffers (views;
// the optimizer owns the memory, impl/optimizer.h). Backward passes ADD into them, so micro-batches
// accumulate, and the tied embedding receives both the lm_head's wgrad and the embedding's scatter.
#pragma once

#include <vector>

#include "common/tensor.h"

namespace tg::impl {

struct LayerGrads {
  TensorView input_norm;           // F32 [D]
  TensorView qkv;                  // F32 [(H + 2 Hkv) Dh, D]
  TensorView o;                    // F32 [D, H Dh]
  TensorView post_attention_norm;  // F32 [D]
  TensorView fc1;                  // F32 [2F, D]
  TensorView fc2;                  // F32 [D, F]
};

struct ModelGrads {
  TensorView embed;  // F32 [V, D]: the embedding and the tied lm_head
  std::vector<LayerGrads> layers;
  TensorView final_norm;  // F32 [D]
};

}  // namespace tg::impl
