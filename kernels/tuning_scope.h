// A kernels::cuda::tuning knob set for one scope -- a benchmark's variant, a test's pass over every setting -- and
// back to its default when the scope ends. The knobs switch between implementations with the same results
// (docs/design.md, "Measurement knobs"); the setters live next to each op's launcher.
//
//   using TileRows = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_cast_transpose_tile_rows, 0>;
//   const TileRows scope(128);  // the fused cast+transpose on 128-row tiles until the end of the block
#pragma once

namespace tg::kernels::cuda::tuning {

template <auto Set, auto Default>
class Scoped {
 public:
  explicit Scoped(decltype(Default) value) { Set(value); }
  ~Scoped() { Set(Default); }
  Scoped(const Scoped&) = delete;
  Scoped& operator=(const Scoped&) = delete;
};

}  // namespace tg::kernels::cuda::tuning
