// What every module of the impl model reads besides its own weights.
#pragma once

#include <cstdint>

#include "common/tensor.h"

namespace tg::impl {

// The device-side batch (views into the model's arena; see impl/batch.h for the meaning).
struct BatchView {
  int64_t tokens = 0;     // T: real tokens
  int64_t rows = 0;       // activation rows: T rounded up to Precision::row_multiple() (block scaling: 128);
                          // rows [T, rows) are zero padding that no attention reads
  int64_t sequences = 0;  // B
  int64_t max_seqlen = 0;
  TensorView token_ids;   // I32 [T]
  TensorView positions;   // I32 [T]
  TensorView cu_seqlens;  // I32 [B + 1]
  TensorView last_rows;   // I32 [B]: the row of each sequence's last token
};

}  // namespace tg::impl
