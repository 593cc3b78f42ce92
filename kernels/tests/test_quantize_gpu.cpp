// CUDA quantize / amax / dequantize vs the CPU twin, BIT-EXACT: FP8 data, column-wise data, scale_inv (including
// that block-scale padding is never written), amax. Shapes: awkward ones (1x1, 7x13, 129x77, 1000x1000: the
// element-wise kernels; 144x272, 256x384: the vector kernels with partial and full tiles), each with both tile
// heights of the cast+transpose kernel; and the Gemma shapes (2048x2048, 8192x3072 = [T, D] of Gemma-7B,
// 512x24576 = [T, F]). Every input dtype; E4M3 and E5M2.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <bit>
#include <cmath>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "common/cuda_check.h"
#include "common/numeric.h"
#include "kernels/quantize/block_layout.h"
#include "kernels/quantize/quantize.h"
#include "kernels/tuning_scope.h"
#include "kernels/tests/gpu_test_util.h"
#include "kernels/tests/quantize_test_util.h"

namespace tg {
namespace {

using kernels::BlockQuantOptions;
using testing::make_fp8;
using testing::same_bytes;

struct Dims {
  int64_t rows, cols;
};
const Dims kSmallShapes[] = {{1, 1}, {7, 13}, {129, 77}, {144, 272}, {256, 384}, {1000, 1000}};
const Dims kGemmaShapes[] = {{2048, 2048}, {8192, 3072}, {512, 24576}};
const DType kInputs[] = {DType::F32, DType::BF16, DType::F16};
const DType kFp8s[] = {DType::E4M3, DType::E5M2};

std::string name_of(const Dims& d, DType in, DType fp8, ScalingMode mode, bool row, bool col, bool pow2) {
  return std::to_string(d.rows) + "x" + std::to_string(d.cols) + " " + std::string(dtype_name(in)) + "->" +
         std::string(dtype_name(fp8)) + " " + std::string(scaling_mode_name(mode)) + (row ? " row" : "") +
         (col ? " col" : "") + (mode == ScalingMode::kPerTensor ? "" : (pow2 ? " pow2" : " fp32-scales"));
}

// A per-tensor scale that saturates the largest values (x 2 past current scaling) and is not a power of two.
float test_scale(const Tensor& x, DType fp8) {
  float amax = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float a = std::fabs(testing::host_at(x, i));
    if (std::isfinite(a) && a > amax) amax = a;
  }
  return amax > 0 ? static_cast<float>(dtype_max(fp8)) / amax * 2.74f : 1.0f;
}

void poison_all(const Fp8View& v) {
  testing::poison(v.data, 0xAB);
  testing::poison(v.columnwise_data, 0xAB);
  testing::poison(v.scale_inv, 0xAB);
  testing::poison(v.columnwise_scale_inv, 0xAB);
}

// Runs the CPU twin on x_host and the CUDA kernels on x_dev (same values) and compares every output.
// amax0: the old per-tensor amax (0.25 is below max|x| of the random inputs: the max-reduce must replace it).
void compare_quantize(const Tensor& x_host, const TensorView& x_dev, ScalingMode mode, DType fp8, bool row, bool col,
                      const BlockQuantOptions& opts, const std::string& what, float amax0 = 0.25f) {
  const int64_t rows = x_host.shape()[0], cols = x_host.shape()[1];
  Fp8Tensor cpu = make_fp8(mode, fp8, rows, cols, row, col, Device::CPU);
  Fp8Tensor gpu = make_fp8(mode, fp8, rows, cols, row, col, Device::CUDA);
  poison_all(cpu.view());
  poison_all(gpu.view());
  if (mode == ScalingMode::kPerTensor) {
    const float s = test_scale(x_host, fp8);
    for (const Fp8View* v : {&cpu.view(), &gpu.view()}) {
      copy_bytes(v->scale, TensorView(const_cast<float*>(&s), DType::F32, {1}, Device::CPU));
      copy_bytes(v->amax, TensorView(const_cast<float*>(&amax0), DType::F32, {1}, Device::CPU));
    }
  }
  kernels::quantize(x_host, cpu.view(), opts);
  kernels::quantize(x_dev, gpu.view(), opts);
  const Fp8View& c = cpu.view();
  const Fp8View& g = gpu.view();
  EXPECT_TRUE(same_bytes(g.data, c.data, what + ": data"));
  EXPECT_TRUE(same_bytes(g.columnwise_data, c.columnwise_data, what + ": columnwise_data"));
  EXPECT_TRUE(same_bytes(g.scale_inv, c.scale_inv, what + ": scale_inv"));
  EXPECT_TRUE(same_bytes(g.columnwise_scale_inv, c.columnwise_scale_inv, what + ": columnwise_scale_inv"));
  if (mode == ScalingMode::kPerTensor) {
    EXPECT_TRUE(same_bytes(g.amax, c.amax, what + ": amax"));
  }
}

struct Config {
  ScalingMode mode;
  bool row, col, pow2;
};
const Config kAllConfigs[] = {
    {ScalingMode::kPerTensor, true, false, true},    {ScalingMode::kPerTensor, false, true, true},
    {ScalingMode::kPerTensor, true, true, true},     {ScalingMode::kBlock1x128, true, false, true},
    {ScalingMode::kBlock1x128, false, true, true},   {ScalingMode::kBlock1x128, true, true, true},
    {ScalingMode::kBlock1x128, true, true, false},   {ScalingMode::kBlock128x128, true, false, true},
    {ScalingMode::kBlock128x128, false, true, true}, {ScalingMode::kBlock128x128, true, true, true},
    {ScalingMode::kBlock128x128, true, true, false},
};
// The large shapes take the configurations the model uses (the CPU twin is the slow side of this test).
const Config kGemmaConfigs[] = {
    {ScalingMode::kPerTensor, true, false, true},  {ScalingMode::kPerTensor, true, true, true},
    {ScalingMode::kBlock1x128, true, true, true},  {ScalingMode::kBlock128x128, true, true, true},
    {ScalingMode::kBlock1x128, true, true, false},
};

// Runs f(" <label><value>") with a kernels::cuda::tuning knob set to each value (a speed knob: results must not
// depend on it), then sets it back to its default (0).
template <typename F>
void for_each_setting(void (*set)(int), std::initializer_list<int> values, const std::string& label, F&& f) {
  for (int v : values) {
    set(v);
    f(" " + label + std::to_string(v));
  }
  set(0);
}

// Runs f for each tile height of the fused cast+transpose kernel.
template <typename F>
void for_each_tile_height(F&& f) {
#if TEGEMMA_HAVE_CUDA
  for_each_setting(kernels::cuda::tuning::set_cast_transpose_tile_rows, {128, 256}, "tile", f);
#else
  f(std::string());
#endif
}

template <std::size_t N>
void sweep(const Dims& d, const Config (&configs)[N], uint32_t seed, const std::string& tag = "") {
  for (DType in : kInputs) {
    Tensor x = testing::random_varied(in, d.rows, d.cols, seed);
    Tensor x_dev = x.to(Device::CUDA);
    for (DType fp8 : kFp8s) {
      for (const Config& cf : configs) {
        compare_quantize(x, x_dev, cf.mode, fp8, cf.row, cf.col, BlockQuantOptions{.power_2_scale = cf.pow2},
                         name_of(d, in, fp8, cf.mode, cf.row, cf.col, cf.pow2) + tag);
        if (::testing::Test::HasFailure()) return;  // one failing configuration is enough to read
      }
    }
  }
}

TEST(QuantizeGpu, AwkwardShapesBitExact) {
  TG_REQUIRE_CUDA();
  for_each_tile_height([](const std::string& tag) {
    uint32_t seed = 1;
    for (const Dims& d : kSmallShapes) sweep(d, kAllConfigs, seed++, tag);
  });
}

TEST(QuantizeGpu, GemmaShapesBitExact) {
  TG_REQUIRE_CUDA();
  uint32_t seed = 100;
  for (const Dims& d : kGemmaShapes) sweep(d, kGemmaConfigs, seed++);
}

// The per-tensor row-wise cast picks its grid by size: one 16-byte vector per thread below 2^20 elements (decode
// activations: 2048 = Gemma-2B's [1, D] attention output, 262144 = Gemma-7B's [64, 4096], + 5 for an element-wise
// tail, 2^20 - 3 at the boundary), four per thread from 2^20 (exactly 2^20, and 1025 x 1027 with a tail). Both
// grids against the CPU twin, every input dtype and FP8 format, amax max-reduced into an old value.
TEST(QuantizeGpu, PerTensorCastBySizeBitExact) {
  TG_REQUIRE_CUDA();
  const Dims shapes[] = {{1, 2048},    {64, 4096},  {1, 262144 + 5}, {1, (int64_t{1} << 20) - 3},
                         {1024, 1024}, {1025, 1027}};
  uint32_t seed = 300;
  for (const Dims& d : shapes) {
    for (DType in : kInputs) {
      Tensor x = testing::random_varied(in, d.rows, d.cols, seed++);
      Tensor x_dev = x.to(Device::CUDA);
      for (DType fp8 : kFp8s) {
        compare_quantize(x, x_dev, ScalingMode::kPerTensor, fp8, true, false, BlockQuantOptions{},
                         name_of(d, in, fp8, ScalingMode::kPerTensor, true, false, true));
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

// inf, NaN, all-zero blocks, FP32-subnormal and tiny-amax blocks (scale overflow -> value_for_inf), +-0.
Tensor special_values(DType in, int64_t rows, int64_t cols, uint32_t seed) {
  Tensor x = testing::random_varied(in, rows, cols, seed);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (int64_t i = 0; i < rows * cols; ++i) v[static_cast<std::size_t>(i)] = testing::host_at(x, i);
  auto at = [&](int64_t r, int64_t c) -> float& { return v[static_cast<std::size_t>((r % rows) * cols + c % cols)]; };
  for (int64_t c = 0; c < cols && c < 128; ++c) at(1, c) = 0.0f;                  // a zero 1x128 strip
  for (int64_t r = 0; r < rows && r < 128; ++r) at(r, 2) = r % 2 ? -0.0f : 0.0f;  // a zero 128x1 strip
  for (int64_t c = 0; c < cols && c < 128; ++c) at(3, c) = std::ldexp(1.0f, -130) * (c % 3 ? 1.0f : -0.5f);
  at(5, 7) = INFINITY;
  at(6, 9) = -INFINITY;
  at(rows - 1, cols - 1) = NAN;
  at(4, cols / 2) = NAN;
  at(7, 3) = 1e30f;  // F16 and BF16 round this to inf / a huge value
  return testing::host_tensor(in, {rows, cols}, v);
}

TEST(QuantizeGpu, SpecialValuesBitExact) {
  TG_REQUIRE_CUDA();
  for_each_tile_height([](const std::string& tag) {
    for (const Dims& d : {Dims{256, 384}, Dims{300, 260}, Dims{16, 16}, Dims{400, 144}}) {
      for (DType in : kInputs) {
        Tensor x = special_values(in, d.rows, d.cols, 7);
        Tensor x_dev = x.to(Device::CUDA);
        for (DType fp8 : kFp8s) {
          for (const Config& cf : kAllConfigs) {
            compare_quantize(x, x_dev, cf.mode, fp8, cf.row, cf.col, BlockQuantOptions{.power_2_scale = cf.pow2},
                             "special " + name_of(d, in, fp8, cf.mode, cf.row, cf.col, cf.pow2) + tag);
          }
        }
      }
    }
  });
}

TEST(QuantizeGpu, AmaxEpsilonBitExact) {
  TG_REQUIRE_CUDA();
  Tensor x = testing::random_varied(DType::BF16, 256, 256, 3);
  Tensor x_dev = x.to(Device::CUDA);
  for (ScalingMode mode : {ScalingMode::kBlock1x128, ScalingMode::kBlock128x128}) {
    compare_quantize(x, x_dev, mode, DType::E4M3, true, true,
                     BlockQuantOptions{.power_2_scale = false, .amax_epsilon = 0.5f},
                     std::string("epsilon ") + std::string(scaling_mode_name(mode)));
  }
}

// The per-tensor amax is max-reduced into the old value with the device's int atomicMax semantics (the kernels skip
// the atomic when a plain read already shows a value at least as large): an old value above max|x|, +inf and the
// canonical NaN are kept; a negative old value (a negative int) and one below max|x| are replaced. Both kernels:
// the flat one (row-wise only, one resident wave of many blocks) and the fused one (with a column-wise copy).
TEST(QuantizeGpu, PerTensorAmaxMaxReducesIntoOldValue) {
  TG_REQUIRE_CUDA();
  const float olds[] = {0.25f, 1e30f, -2.0f, INFINITY, std::bit_cast<float>(0x7FFFFFFFu), 0.0f};
  for (const Dims& d : {Dims{7, 13}, Dims{2048, 1024}}) {
    for (DType in : {DType::BF16, DType::F32}) {
      Tensor x = testing::random_varied(in, d.rows, d.cols, 77);
      Tensor x_dev = x.to(Device::CUDA);
      for (float old : olds) {
        for (bool col : {false, true}) {
          compare_quantize(x, x_dev, ScalingMode::kPerTensor, DType::E4M3, true, col, BlockQuantOptions{},
                           "old amax " + std::to_string(old) + " " +
                               name_of(d, in, DType::E4M3, ScalingMode::kPerTensor, true, col, true),
                           old);
        }
      }
    }
  }
}

// Input views whose data pointer is not 16-byte aligned take the element-wise kernels.
TEST(QuantizeGpu, MisalignedInputBitExact) {
  TG_REQUIRE_CUDA();
  for (DType in : kInputs) {
    const Dims d{256, 384};
    Tensor x = testing::random_varied(in, d.rows, d.cols, 21);
    Tensor big = Tensor::empty(in, {d.rows * d.cols + 8}, Device::CUDA);
    TensorView x_dev(static_cast<char*>(big.data()) + dtype_size(in), in, {d.rows, d.cols}, Device::CUDA);
    copy_bytes(x_dev, x);
    for (const Config& cf : kAllConfigs) {
      compare_quantize(x, x_dev, cf.mode, DType::E4M3, cf.row, cf.col, BlockQuantOptions{.power_2_scale = cf.pow2},
                       "misaligned " + name_of(d, in, DType::E4M3, cf.mode, cf.row, cf.col, cf.pow2));
    }
  }
}

// kernels::cuda::tuning::set_amax_blocks_per_sm for a scope (a speed knob: results must not depend on it).
using AmaxBlocksScope = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_amax_blocks_per_sm, 0>;
using AmaxFilterScope = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_amax_filter, false>;
using AmaxMemopScope = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_amax_zero_memop, false>;
// Every compute_amax grid, atomic form and zeroing: (blocks per SM, filtered atomic, stream-write zeroing).
struct AmaxSetting {
  int blocks_per_sm;
  bool filter, memop;
};
constexpr AmaxSetting kAmaxSettings[] = {{0, false, false}, {1, false, false}, {3, false, false}, {4, false, false},
                                         {0, true, false},  {3, true, false},  {0, false, true}};

TEST(QuantizeGpu, ComputeAmaxBitExact) {
  TG_REQUIRE_CUDA();
  const Dims shapes[] = {{1, 1}, {7, 13}, {1000, 1000}, {8192, 3072}, {3, 5}, {1031, 4097}};
  for (const auto& [blocks_per_sm, filter, memop] : kAmaxSettings) {  // the default, and the knobs'
    const AmaxBlocksScope scope(blocks_per_sm);
    const AmaxFilterScope filter_scope(filter);
    const AmaxMemopScope memop_scope(memop);
    for (DType in : kInputs) {
      uint32_t seed = 50;
      for (const Dims& d : shapes) {
        for (bool special : {false, true}) {
          Tensor x =
              special ? special_values(in, d.rows, d.cols, seed) : testing::random_varied(in, d.rows, d.cols, seed);
          ++seed;
          Tensor want = Tensor::empty(DType::F32, {1});
          Tensor got = Tensor::empty(DType::F32, {1}, Device::CUDA);
          testing::poison(got, 0x7F);  // the op overwrites: garbage (a NaN pattern) must not survive
          kernels::compute_amax(x, want);
          const Tensor xd = x.to(Device::CUDA);
          kernels::compute_amax(xd, got);
          EXPECT_TRUE(same_bytes(got, want,
                                 "compute_amax " + std::to_string(d.rows) + "x" + std::to_string(d.cols) + " " +
                                     std::string(dtype_name(in)) + (special ? " special" : "") + " blocks/SM " +
                                     std::to_string(blocks_per_sm) + (filter ? " filtered" : "") +
                                     (memop ? " memop" : "")));
        }
      }
    }
  }
}

// One nonzero element, at the first, a middle, the last vector-loop and the last (tail) position of a shape whose
// element count is not a multiple of the vector width: the amax must come from whichever block of the resident
// grid holds it (the other blocks see only zeros and so never raise the running max).
TEST(QuantizeGpu, ComputeAmaxFindsASingleValueAnywhere) {
  TG_REQUIRE_CUDA();
  const int64_t rows = 1031, cols = 4097, n = rows * cols;
  for (const auto& [blocks_per_sm, filter, memop] : kAmaxSettings) {
    const AmaxBlocksScope scope(blocks_per_sm);
    const AmaxFilterScope filter_scope(filter);
    const AmaxMemopScope memop_scope(memop);
    for (DType in : kInputs) {
      for (int64_t p : {int64_t{0}, n / 2, n - 9, n - 1}) {
        std::vector<float> v(static_cast<std::size_t>(n), 0.0f);
        v[static_cast<std::size_t>(p)] = -3.5f;
        Tensor x = testing::host_tensor(in, {rows, cols}, v);
        Tensor got = Tensor::empty(DType::F32, {1}, Device::CUDA);
        testing::poison(got, 0x7F);
        kernels::compute_amax(x.to(Device::CUDA), got);
        const float g = Tensor::copy_of(got, Device::CPU).ptr<float>()[0];
        EXPECT_EQ(g, 3.5f) << dtype_name(in) << " at " << p << " blocks/SM " << blocks_per_sm
                           << (filter ? " filtered" : "") << (memop ? " memop" : "");
      }
    }
  }
}

// compute_amax overwrites (zeroing + max-reduce): launches of different grid sizes interleaved on two streams
// each give their own tensor's amax (descending values: an accumulating op would keep the first), and a captured
// graph of the same calls gives the same values on every replay.
void compute_amax_overwrites_per_stream_and_inside_a_capture() {
  const Dims shapes[] = {{8192, 3072}, {1, 1}, {1031, 4097}, {7, 13}};
  std::vector<Tensor> xs;
  std::vector<float> want;
  for (int i = 0; i < 8; ++i) {
    const Dims& d = shapes[i % 4];
    std::vector<float> v(static_cast<std::size_t>(d.rows * d.cols), 0.25f);
    v[v.size() / 3] = -(100.0f - 10.0f * static_cast<float>(i));  // descending: accumulating would keep 100
    xs.push_back(testing::host_tensor(DType::BF16, {d.rows, d.cols}, v).to(Device::CUDA));
    want.push_back(100.0f - 10.0f * static_cast<float>(i));
  }
  cudaStream_t raw[2] = {nullptr, nullptr};
  // Blocking streams: ordered after poison() on the legacy stream.
  for (cudaStream_t& r : raw) TG_CHECK_CUDA(cudaStreamCreate(&r));
  Tensor got = Tensor::empty(DType::F32, {8}, Device::CUDA);
  for (int round = 0; round < 3; ++round) {
    testing::poison(got, 0x7F);
    for (int i = 0; i < 8; ++i) {
      const TensorView out(got.ptr<float>() + i, DType::F32, Shape{1}, Device::CUDA);
      kernels::compute_amax(xs[static_cast<std::size_t>(i)], out, Stream{raw[i % 2]});
    }
    for (cudaStream_t r : raw) TG_CHECK_CUDA(cudaStreamSynchronize(r));
    const Tensor h = Tensor::copy_of(got, Device::CPU);
    for (int i = 0; i < 8; ++i) {
      EXPECT_EQ(h.ptr<float>()[i], want[static_cast<std::size_t>(i)]) << "round " << round << " #" << i;
    }
  }
  // A stream never used before, first used inside a global-mode capture.
  cudaStream_t fresh = nullptr;
  TG_CHECK_CUDA(cudaStreamCreate(&fresh));
  {
    const testing::CapturedGraph graph(fresh, cudaStreamCaptureModeGlobal, [&] {
      for (int i = 0; i < 8; ++i) {
        const TensorView out(got.ptr<float>() + i, DType::F32, Shape{1}, Device::CUDA);
        kernels::compute_amax(xs[static_cast<std::size_t>(i)], out, Stream{fresh});
      }
    });
    for (int replay = 0; replay < 2; ++replay) {
      testing::poison(got, 0x7F);
      graph.launch(fresh);
      TG_CHECK_CUDA(cudaStreamSynchronize(fresh));
      const Tensor h = Tensor::copy_of(got, Device::CPU);
      for (int i = 0; i < 8; ++i)
        EXPECT_EQ(h.ptr<float>()[i], want[static_cast<std::size_t>(i)]) << "replay " << replay << " #" << i;
    }
  }  // the graph is destroyed before the streams, as before
  for (cudaStream_t r : {raw[0], raw[1], fresh}) TG_CHECK_CUDA(cudaStreamDestroy(r));
}

TEST(QuantizeGpu, ComputeAmaxOverwritesPerStreamAndInsideACapture) {
  TG_REQUIRE_CUDA();
  for (bool memop : {false, true}) {  // the memset node, and the stream write (tuning::set_amax_zero_memop)
    SCOPED_TRACE(memop ? "zeroed by cuStreamWriteValue32" : "zeroed by a memset node");
    const AmaxMemopScope memop_scope(memop);
    compute_amax_overwrites_per_stream_and_inside_a_capture();
  }
}

// Copies every buffer of a host FP8 bundle into a device bundle of the same layout.
void copy_fp8(const Fp8View& dst, const Fp8View& src) {
  auto cp = [](const TensorView& d, const TensorView& s) {
    if (!d.empty() && !s.empty()) copy_bytes(d, s);
  };
  cp(dst.data, src.data);
  cp(dst.columnwise_data, src.columnwise_data);
  cp(dst.scale_inv, src.scale_inv);
  cp(dst.columnwise_scale_inv, src.columnwise_scale_inv);
}

// Bit-exact, except that two F32 NaNs are equal whatever their payloads.
::testing::AssertionResult same_values(const TensorView& got, const TensorView& want, const std::string& what) {
  if (got.dtype != DType::F32) return same_bytes(got, want, what);
  Tensor g = Tensor::copy_of(got, Device::CPU);
  Tensor w = Tensor::copy_of(want, Device::CPU);
  int64_t bad = 0;
  for (int64_t i = 0; i < g.numel(); ++i) {
    const float a = g.ptr<float>()[i], b = w.ptr<float>()[i];
    if (!(std::isnan(a) && std::isnan(b)) && testing::bits(a) != testing::bits(b)) ++bad;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " elements differ";
}

TEST(QuantizeGpu, DequantizeBitExact) {
  TG_REQUIRE_CUDA();
  for (const Dims& d : {Dims{7, 13}, Dims{256, 384}, Dims{300, 260}, Dims{2048, 2048}}) {
    for (DType fp8 : kFp8s) {
      for (ScalingMode mode : {ScalingMode::kPerTensor, ScalingMode::kBlock1x128, ScalingMode::kBlock128x128}) {
        Tensor x = special_values(DType::BF16, d.rows, d.cols, 9);
        Fp8Tensor q = make_fp8(mode, fp8, d.rows, d.cols, true, true, Device::CPU);
        if (mode == ScalingMode::kPerTensor) q.view().scale.ptr<float>()[0] = test_scale(x, fp8);
        kernels::quantize(x, q.view());
        Fp8Tensor q_dev = make_fp8(mode, fp8, d.rows, d.cols, true, true, Device::CUDA);
        copy_fp8(q_dev.view(), q.view());
        for (bool colw : {false, true}) {
          const Shape ys = colw ? Shape{d.cols, d.rows} : Shape{d.rows, d.cols};
          for (DType out : kInputs) {
            Tensor want = Tensor::empty(out, ys);
            Tensor got = Tensor::empty(out, ys, Device::CUDA);
            testing::poison(got, 0xAB);
            kernels::dequantize(q.view(), colw, want);
            kernels::dequantize(q_dev.view(), colw, got);
            EXPECT_TRUE(same_values(got, want,
                                    "dequantize " + std::to_string(d.rows) + "x" + std::to_string(d.cols) + " " +
                                        std::string(dtype_name(fp8)) + " " + std::string(scaling_mode_name(mode)) +
                                        (colw ? " col" : " row") + " -> " + std::string(dtype_name(out))));
          }
        }
      }
    }
  }
}

TEST(QuantizeGpu, RejectsMixedDevicesAndBadShapes) {
  TG_REQUIRE_CUDA();
  Tensor x = Tensor::empty(DType::BF16, {4, 8}, Device::CUDA);
  Fp8Tensor host_out = Fp8Tensor::per_tensor(DType::E4M3, 4, 8, true, false, Device::CPU);
  EXPECT_THROW(kernels::quantize(x, host_out.view()), Error);
  Fp8Tensor wrong_shape = Fp8Tensor::per_tensor(DType::E4M3, 8, 4, true, false, Device::CUDA);
  EXPECT_THROW(kernels::quantize(x, wrong_shape.view()), Error);
  Fp8Tensor blk =
      kernels::make_block_fp8_tensor(ScalingMode::kBlock1x128, DType::E4M3, 4, 16, true, true, Device::CUDA);
  EXPECT_THROW(kernels::quantize(x, blk.view()), Error);
  EXPECT_THROW(kernels::dequantize(blk.view(), true, Tensor::empty(DType::F32, {4, 16}, Device::CUDA)), Error);
}

}  // namespace
}  // namespace tg
