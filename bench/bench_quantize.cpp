// FP8 quantization throughput (kernels/quantize): memory-bound ops measured against the 4.1 TB/s HBM roofline.
//
// Benchmark names: quantize/<op>/<in>-><out>/<rows>x<cols>, ops:
//   cast                 per-tensor, row-wise copy only (+ amax)                 bytes: 2n in + n out
//   cast_transpose       per-tensor, row-wise + column-wise in one pass (+ amax) bytes: 2n in + 2n out
//   amax                 compute_amax                                            bytes: 2n in
//   amax_b1, _b3, _b4    the same at 1 / 3 / 4 blocks per SM (tuning::set_amax_blocks_per_sm; the default is 2)
//   amax_filt, amax_b3_filt  the default grid / 3 per SM (sessions 9-20's default) with the filtered end-of-block
//                        atomic (tuning::set_amax_filter(true))                   bytes: 2n in
//   amax_memop           the output zeroed by cuStreamWriteValue32 instead of a memset node
//                        (tuning::set_amax_zero_memop(true))                      bytes: 2n in
//   block1x128_row       Float8BlockScaling 1x128, row-wise copy only            bytes: 2n + n + n/128 * 4
//   block1x128           1x128 row-wise + 128x1 column-wise copies               bytes: 2n + 2n + 2 * n/128 * 4
//   block128x128         128x128 row-wise + transposed copies                    bytes: 2n + 2n + 2 * n/16384 * 4
//   dequantize           per-tensor E4M3 -> BF16, row-wise copy                  bytes: n + 2n
//   d2d_copy             cudaMemcpyAsync of the BF16 tensor: the in-run copy ceiling (bytes read + written)
// The ops through the fused cast+transpose kernel (cast_transpose, block*) run with the default tile height (by
// size, kernels/quantize/quantize.h) and also as <op>_tile128 / <op>_tile256 (kernels::cuda::tuning), so each run
// shows whether the size rule picked the faster one.
// n = rows * cols; every input is read once and every output written once (the FP8 bytes count 1 each).
// Shapes: 8192x8192, and Gemma-7B's MLP activations [T = 8192, D = 3072] and [T, F = 24576], and 4096x2048.
// Decode shapes (cast and its copy ceiling only): the attention output cast before the o-projection, Gemma-2B at
// batch 1 (1x2048) and Gemma-7B at batch 64 (64x4096): the cast's small-n grid. Their R = 16 input sets (4 KB and
// 512 KB) stay in L2, as in a decode step, where the attention kernel has just written that tensor.
// Target (issue 3): hbm_roofline_frac >= 0.8 for cast_transpose / cast / block ops at 8192x8192 and the Gemma shapes.
// Inputs are N(0, 1)-like BF16 (never zeros).
//
// Honest HBM figures (every byte counted comes from or goes to HBM, nothing else is timed):
//   - Rotating buffers instead of an L2 flush: each shape has R input copies (and each benchmark R output sets),
//     R = max(2, ceil(4 * L2 / input bytes)), so a buffer is touched again only after at least three L2 sizes of
//     other traffic. 8192x3072 BF16 is 48 MiB, about the 50 MB L2: without rotation it would partly be read from
//     L2. A memset flush is not used: it leaves up to an L2 of dirty lines whose write-back the next timed kernel
//     would pay for (uncounted bytes), while in the rotation the write-back each launch pays for is that of the
//     previous launch's outputs, the same amount it leaves behind (a steady state).
//   - One timed region = R back-to-back launches (one per set) after an untimed launch that keeps the GPU busy
//     while the start event is recorded: no host launch gap inside the region. Time per launch = region / R.
//   - Counters beside hbm_roofline_frac: copy_ceiling_frac = this op's bytes/s over the d2d_copy of the same shape
//     in the same run (cudaMemcpyAsync, rotated the same way; the practical ceiling at that size: launch and tail
//     included) and copy_ceiling_bytes_per_second (absent when the copy benchmark was filtered out).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "bench/common/bench_util.h"
#include "common/cuda_check.h"
#include "common/numeric.h"
#include "kernels/quantize/block_layout.h"
#include "kernels/quantize/quantize.h"
#include "kernels/tuning_scope.h"

namespace tg::bench {
namespace {

struct Dims {
  int64_t rows, cols;
  std::string str() const { return std::to_string(rows) + "x" + std::to_string(cols); }
  double n() const { return static_cast<double>(rows) * static_cast<double>(cols); }
};

const Dims kShapes[] = {{8192, 8192}, {8192, 3072}, {8192, 24576}, {4096, 2048}};
const Dims kDecodeShapes[] = {{1, 2048}, {64, 4096}};

// The number of buffer sets rotated through for a shape (see the header).
int rotation(const Dims& d) {
  static const double l2 = [] {
    int dev = 0, bytes = 0;
    TG_CHECK_CUDA(cudaGetDevice(&dev));
    TG_CHECK_CUDA(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, dev));
    return static_cast<double>(bytes);
  }();
  const double in_bytes = d.n() * 2;
  const int r = static_cast<int>(std::ceil(4 * l2 / in_bytes));
  return std::clamp(r, 2, 16);
}

// The R BF16 inputs of a shape (equal contents: one random fill, copied), made once.
const std::vector<Tensor>& inputs(const Dims& d) {
  static std::map<std::pair<int64_t, int64_t>, std::vector<Tensor>> cache;
  auto it = cache.find({d.rows, d.cols});
  if (it != cache.end()) return it->second;
  std::vector<Tensor> v;
  v.push_back(random_device(DType::BF16, {d.rows, d.cols}, 1));
  for (int i = 1; i < rotation(d); ++i) v.push_back(Tensor::copy_of(v[0], Device::CUDA));
  return cache.emplace(std::make_pair(d.rows, d.cols), std::move(v)).first->second;
}

// bytes/s of the d2d copy per shape, measured earlier in this run.
std::map<std::pair<int64_t, int64_t>, double>& copy_rates() {
  static std::map<std::pair<int64_t, int64_t>, double> m;
  return m;
}

// Times body(i) for buffer set i (one launch sequence on the default stream). Each batch: an untimed launch on the
// last set, then one timed region over all R sets, counted as R iterations (the reported time is per launch).
template <typename F>
void timed(benchmark::State& state, const Dims& d, double bytes, F&& body, bool is_copy = false) {
  try {
    const int r = rotation(d);
    for (int i = 0; i < r; ++i) body(i);  // warm-up: every set once
    cudaEvent_t start = nullptr, stop = nullptr;
    TG_CHECK_CUDA(cudaEventCreate(&start));
    TG_CHECK_CUDA(cudaEventCreate(&stop));
    double seconds = 0;
    while (state.KeepRunningBatch(r)) {
      body(r - 1);
      TG_CHECK_CUDA(cudaEventRecord(start, nullptr));
      for (int i = 0; i < r; ++i) body(i);
      TG_CHECK_CUDA(cudaEventRecord(stop, nullptr));
      TG_CHECK_CUDA(cudaEventSynchronize(stop));
      float ms = 0;
      TG_CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
      seconds += static_cast<double>(ms) / 1000.0;
      state.SetIterationTime(static_cast<double>(ms) / 1000.0);
    }
    TG_CHECK_CUDA(cudaEventDestroy(start));
    TG_CHECK_CUDA(cudaEventDestroy(stop));
    set_roofline(state, bytes, 0);
    state.counters["rotated_sets"] = r;
    if (seconds > 0) {
      const double rate = bytes * static_cast<double>(state.iterations()) / seconds;
      auto& rates = copy_rates();
      if (is_copy) rates[{d.rows, d.cols}] = rate;
      auto it = rates.find({d.rows, d.cols});
      if (it != rates.end()) {
        state.counters["copy_ceiling_bytes_per_second"] = it->second;
        state.counters["copy_ceiling_frac"] = rate / it->second;
      }
    }
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// The kernels::cuda::tuning knobs set for one benchmark (kernels/tuning_scope.h).
using TileRows = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_cast_transpose_tile_rows, 0>;
using AmaxBlocks = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_amax_blocks_per_sm, 0>;
using AmaxFilter = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_amax_filter, false>;
using AmaxZeroMemop = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_amax_zero_memop, false>;

// R per-tensor outputs with the current-scaling scale of the input (448 / amax), set once.
std::vector<Fp8Tensor> per_tensor_outs(const Dims& d, bool columnwise) {
  Tensor amax = Tensor::empty(DType::F32, {1}, Device::CUDA);
  kernels::compute_amax(inputs(d)[0], amax);
  float a = 0;
  TG_CHECK_CUDA(cudaMemcpy(&a, amax.data(), sizeof(float), cudaMemcpyDeviceToHost));
  const float s = a > 0 ? 448.0f / a : 1.0f;
  std::vector<Fp8Tensor> outs;
  for (int i = 0; i < rotation(d); ++i) {
    outs.push_back(Fp8Tensor::per_tensor(DType::E4M3, d.rows, d.cols, true, columnwise, Device::CUDA));
    TG_CHECK_CUDA(cudaMemcpy(outs.back().view().scale.data, &s, sizeof(float), cudaMemcpyHostToDevice));
  }
  return outs;
}

void bm_cast(benchmark::State& state, Dims d, bool columnwise, int tile_rows) {
  TileRows tr(tile_rows);
  const std::vector<Fp8Tensor> outs = per_tensor_outs(d, columnwise);
  const double bytes = d.n() * 2 + d.n() * (columnwise ? 2 : 1);
  timed(state, d, bytes, [&](int i) { kernels::quantize(inputs(d)[i], outs[i].view()); });
}

void bm_amax(benchmark::State& state, Dims d, int blocks_per_sm, bool filter = false, bool memop = false) {
  const AmaxBlocks scope(blocks_per_sm);
  const AmaxFilter filter_scope(filter);
  const AmaxZeroMemop memop_scope(memop);
  std::vector<Tensor> amax;
  for (int i = 0; i < rotation(d); ++i) amax.push_back(Tensor::empty(DType::F32, {1}, Device::CUDA));
  timed(state, d, d.n() * 2, [&](int i) { kernels::compute_amax(inputs(d)[i], amax[i]); });
}

void bm_block(benchmark::State& state, Dims d, ScalingMode mode, bool columnwise, int tile_rows) {
  TileRows tr(tile_rows);
  std::vector<Fp8Tensor> outs;
  for (int i = 0; i < rotation(d); ++i) {
    outs.push_back(kernels::make_block_fp8_tensor(mode, DType::E4M3, d.rows, d.cols, true, columnwise, Device::CUDA));
  }
  const double blocks = mode == ScalingMode::kBlock1x128 ? d.n() / 128 : d.n() / (128.0 * 128.0);
  const double bytes = d.n() * 2 + (d.n() + blocks * 4) * (columnwise ? 2 : 1);
  timed(state, d, bytes, [&](int i) { kernels::quantize(inputs(d)[i], outs[i].view()); });
}

void bm_dequantize(benchmark::State& state, Dims d) {
  const std::vector<Fp8Tensor> qs = per_tensor_outs(d, false);
  std::vector<Tensor> ys;
  for (int i = 0; i < rotation(d); ++i) {
    kernels::quantize(inputs(d)[i], qs[i].view());
    ys.push_back(Tensor::empty(DType::BF16, {d.rows, d.cols}, Device::CUDA));
  }
  timed(state, d, d.n() * 3, [&](int i) { kernels::dequantize(qs[i].view(), false, ys[i]); });
}

void bm_copy(benchmark::State& state, Dims d) {
  std::vector<Tensor> ys;
  for (int i = 0; i < rotation(d); ++i) ys.push_back(Tensor::empty(DType::BF16, {d.rows, d.cols}, Device::CUDA));
  timed(
      state, d, d.n() * 4,
      [&](int i) {
        TG_CHECK_CUDA(cudaMemcpyAsync(ys[i].data(), inputs(d)[i].data(), ys[i].nbytes(), cudaMemcpyDeviceToDevice,
                                      nullptr));
      },
      /*is_copy=*/true);
}

void add(const std::string& name, auto fn) {
  benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond);
}

const bool registered = [] {
  for (const Dims& d : kShapes) {
    const std::string s = "/" + d.str();
    add("quantize/d2d_copy/bf16->bf16" + s, [=](benchmark::State& st) { bm_copy(st, d); });
    add("quantize/cast/bf16->e4m3" + s, [=](benchmark::State& st) { bm_cast(st, d, false, 0); });
    for (int b : {0, 1, 3, 4}) {  // 0: the default grid; the blocks-per-SM knob beside it
      const std::string v = b == 0 ? "" : "_b" + std::to_string(b);
      add("quantize/amax" + v + "/bf16" + s, [=](benchmark::State& st) { bm_amax(st, d, b); });
      if (b == 0 || b == 3) {
        add("quantize/amax" + v + "_filt/bf16" + s, [=](benchmark::State& st) { bm_amax(st, d, b, true); });
      }
      if (b == 0) {
        add("quantize/amax_memop/bf16" + s, [=](benchmark::State& st) { bm_amax(st, d, 0, false, true); });
      }
    }
    for (int t : {0, 128, 256}) {  // 0: the default tile height (by size); the forced ones beside it
      const std::string v = t == 0 ? "" : "_tile" + std::to_string(t);
      add("quantize/cast_transpose" + v + "/bf16->e4m3" + s, [=](benchmark::State& st) { bm_cast(st, d, true, t); });
      add("quantize/block1x128_row" + v + "/bf16->e4m3" + s,
          [=](benchmark::State& st) { bm_block(st, d, ScalingMode::kBlock1x128, false, t); });
      add("quantize/block1x128" + v + "/bf16->e4m3" + s,
          [=](benchmark::State& st) { bm_block(st, d, ScalingMode::kBlock1x128, true, t); });
      add("quantize/block128x128" + v + "/bf16->e4m3" + s,
          [=](benchmark::State& st) { bm_block(st, d, ScalingMode::kBlock128x128, true, t); });
    }
    add("quantize/dequantize/e4m3->bf16" + s, [=](benchmark::State& st) { bm_dequantize(st, d); });
  }
  for (const Dims& d : kDecodeShapes) {
    const std::string s = "/" + d.str();
    add("quantize/d2d_copy/bf16->bf16" + s, [=](benchmark::State& st) { bm_copy(st, d); });
    add("quantize/cast/bf16->e4m3" + s, [=](benchmark::State& st) { bm_cast(st, d, false, 0); });
  }
  return true;
}();

}  // namespace
}  // namespace tg::bench

TG_BENCH_MAIN()
