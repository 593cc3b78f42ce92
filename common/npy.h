// NumPy .npy files (format version 1.0): what `tegemma forward --dump-logits` writes and tests read.
#pragma once

#include <filesystem>
#include <span>
#include <vector>

#include "common/tensor.h"

namespace tg {

// Writes a float32 array of `shape` (C order) atomically.
void write_npy_f32(const std::filesystem::path& path, std::span<const float> data, const Shape& shape);

struct NpyArray {
  Shape shape;
  std::vector<float> data;
};
// Reads a little-endian float32 C-order .npy (what write_npy_f32 writes); clear errors otherwise.
NpyArray read_npy_f32(const std::filesystem::path& path);

}  // namespace tg
