// The memory-bound Gemma kernels (kernels/norm, activation, rope, embedding) against the 4.1 TB/s HBM
// roofline, at the Gemma-2B / 7B training shapes: T = 8192 tokens (4 x 2048), D = 2048 / 3072,
// F = 16384 / 24576, head_dim 256 with (H, Hkv) = (8, 1) / (16, 16). Target: hbm_roofline_frac >= 0.8.
//
// Names: <op>/<in>-><out>[+t]/<shape>; "+t" = the FP8 output also writes its transposed copy.
// Bytes per iteration count every tensor the op must read or write once (FP8 bytes 1 each; small vectors
// such as w, rstd and ids included); they do NOT count implementation scratch traffic (the norm backward's
// dw partials: 2 * T/16 * D * 4 bytes, about 8% on top), so the fraction is of the op's minimal traffic.
//   rmsnorm            x 2TD + y 2TD + w 2D + rstd 4T          (+residual: + 2TD read + 2TD write)
//   rmsnorm ->e4m3     x 2TD + q TD (+ TD transposed) + w + rstd
//   rmsnorm_bwd        dy 2TD + x 2TD + dx 2TD + w 2D + rstd 4T + dw 4D
//   geglu              fc1 4TF + out 2TF       (->e4m3: out TF, +t: 2TF)
//   geglu_bwd          dout 2TF + fc1 4TF + dfc1 4TF     (->e5m2: dfc1 2TF, +t: 4TF)
//   rope               q and k read and written in place: 4 T (H + Hkv) Dh, + positions 8T
//   embedding          rows 2TD + out 2TD + ids 4T
//   embedding_bwd      dout 2TD + (read + write) 8D per distinct id + ids 4T; ids uniform over V = 256000
//                      ("uniform") or with every other token the same id ("hot": the serial worst case)
// Inputs are pseudo-random BF16 around N(0, 1); L2 is flushed before every timed iteration.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench/common/bench_util.h"
#include "common/cuda_check.h"
#include "common/fp8_tensor.h"
#include "common/numeric.h"
#include "kernels/activation/activation.h"
#include "kernels/embedding/embedding.h"
#include "kernels/norm/norm.h"
#include "kernels/rope/rope.h"

namespace tg::bench {
namespace {

constexpr int64_t kTokens = 8192;

struct Model {
  const char* name;
  int64_t d, f, h, hkv, dh;
};
const Model kModels[] = {{"2b", 2048, 16384, 8, 1, 256}, {"7b", 3072, 24576, 16, 16, 256}};

Tensor random_bf16(Shape shape) { return random_device(DType::BF16, shape, 1234); }

Fp8Tensor fp8_out(DType fp8, int64_t rows, int64_t cols, bool columnwise, float scale) {
  Fp8Tensor q = Fp8Tensor::per_tensor(fp8, rows, cols, true, columnwise, Device::CUDA);
  TG_CHECK_CUDA(cudaMemcpy(q.view().scale.data, &scale, sizeof(scale), cudaMemcpyHostToDevice));
  return q;
}

template <typename F>
void timed(benchmark::State& state, double bytes, F&& body) {
  try {
    body();
    body();
    TG_CHECK_CUDA(cudaDeviceSynchronize());
    for (auto _ : state) {
      CudaEventTimer timer(state, nullptr, /*flush_l2=*/true);
      body();
    }
    set_roofline(state, bytes, 0);
    set_tokens(state, static_cast<double>(kTokens));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---- RMSNorm ----------------------------------------------------------------------------------------
enum class NormOut { kBf16, kBf16Residual, kFp8, kFp8T };

void bm_rmsnorm(benchmark::State& state, Model m, NormOut mode) {
  const double td = static_cast<double>(kTokens) * m.d;
  Tensor x = random_bf16({kTokens, m.d}), w = random_bf16({m.d}), res = random_bf16({kTokens, m.d});
  Tensor y = Tensor::empty(DType::BF16, {kTokens, m.d}, Device::CUDA);
  Tensor rstd = Tensor::empty(DType::F32, {kTokens}, Device::CUDA);
  const double common = 2 * td + 2.0 * m.d + 4.0 * kTokens;
  switch (mode) {
    case NormOut::kBf16:
      timed(state, common + 2 * td, [&] { kernels::rmsnorm_forward(x, w, 1e-6f, y, rstd); });
      break;
    case NormOut::kBf16Residual:
      timed(state, common + 2 * td + 4 * td, [&] { kernels::rmsnorm_forward(x, w, 1e-6f, y, rstd, res); });
      break;
    case NormOut::kFp8:
    case NormOut::kFp8T: {
      const bool t = mode == NormOut::kFp8T;
      Fp8Tensor q = fp8_out(DType::E4M3, kTokens, m.d, t, 64.0f);
      timed(state, common + td * (t ? 2 : 1), [&] { kernels::rmsnorm_forward_fp8(x, w, 1e-6f, q.view(), rstd); });
      break;
    }
  }
}

void bm_rmsnorm_bwd(benchmark::State& state, Model m) {
  const double td = static_cast<double>(kTokens) * m.d;
  Tensor x = random_bf16({kTokens, m.d}), dy = random_bf16({kTokens, m.d}), w = random_bf16({m.d});
  Tensor y = Tensor::empty(DType::BF16, {kTokens, m.d}, Device::CUDA);
  Tensor rstd = Tensor::empty(DType::F32, {kTokens}, Device::CUDA);
  kernels::rmsnorm_forward(x, w, 1e-6f, y, rstd);
  Tensor dx = Tensor::empty(DType::BF16, {kTokens, m.d}, Device::CUDA);
  Tensor dw = Tensor::empty(DType::F32, {m.d}, Device::CUDA);
  Tensor ws = Tensor::empty(DType::F32, {kernels::rmsnorm_backward_workspace_rows(kTokens), m.d}, Device::CUDA);
  const double bytes = 6 * td + 2.0 * m.d + 4.0 * kTokens + 4.0 * m.d;
  timed(state, bytes, [&] { kernels::rmsnorm_backward(dy, x, w, rstd, dx, dw, ws); });
}

// ---- GeGLU ------------------------------------------------------------------------------------------
enum class ActOut { kBf16, kFp8, kFp8T };

void bm_geglu(benchmark::State& state, Model m, ActOut mode) {
  const double tf = static_cast<double>(kTokens) * m.f;
  Tensor fc1 = random_bf16({kTokens, 2 * m.f});
  if (mode == ActOut::kBf16) {
    Tensor out = Tensor::empty(DType::BF16, {kTokens, m.f}, Device::CUDA);
    timed(state, 4 * tf + 2 * tf, [&] { kernels::geglu_forward(fc1, out); });
  } else {
    const bool t = mode == ActOut::kFp8T;
    Fp8Tensor q = fp8_out(DType::E4M3, kTokens, m.f, t, 64.0f);
    timed(state, 4 * tf + tf * (t ? 2 : 1), [&] { kernels::geglu_forward_fp8(fc1, q.view()); });
  }
}

void bm_geglu_bwd(benchmark::State& state, Model m, ActOut mode) {
  const double tf = static_cast<double>(kTokens) * m.f;
  Tensor fc1 = random_bf16({kTokens, 2 * m.f}), dout = random_bf16({kTokens, m.f});
  if (mode == ActOut::kBf16) {
    Tensor d = Tensor::empty(DType::BF16, {kTokens, 2 * m.f}, Device::CUDA);
    timed(state, 6 * tf + 4 * tf, [&] { kernels::geglu_backward(dout, fc1, d); });
  } else {
    const bool t = mode == ActOut::kFp8T;
    Fp8Tensor q = fp8_out(DType::E5M2, kTokens, 2 * m.f, t, 1024.0f);
    timed(state, 6 * tf + 2 * tf * (t ? 2 : 1), [&] { kernels::geglu_backward_fp8(dout, fc1, q.view()); });
  }
}

// ---- RoPE -------------------------------------------------------------------------------------------
void bm_rope(benchmark::State& state, Model m, bool backward) {
  const int64_t w = (m.h + 2 * m.hkv) * m.dh;
  Tensor qkv = random_bf16({kTokens, w});
  Tensor pos = Tensor::empty(DType::I64, {kTokens}, Device::CUDA);  // positions live on the device
  std::vector<int64_t> p(kTokens);
  for (int64_t t = 0; t < kTokens; ++t) p[t] = t % 2048;
  copy_bytes(pos.view(), TensorView(p.data(), DType::I64, Shape{kTokens}, Device::CPU));
  Tensor freq = kernels::rope_inv_freq_table(m.dh, 10000.0f, 1.0f, Device::CUDA);
  const TensorView q(qkv.data(), DType::BF16, Shape{kTokens, m.h, m.dh}, Shape{w, m.dh, 1}, Device::CUDA);
  const TensorView k(qkv.ptr<uint16_t>() + m.h * m.dh, DType::BF16, Shape{kTokens, m.hkv, m.dh}, Shape{w, m.dh, 1},
                     Device::CUDA);
  const double bytes = 4.0 * kTokens * (m.h + m.hkv) * m.dh + 8.0 * kTokens;
  timed(state, bytes, [&] {
    if (backward)
      kernels::rope_backward(q, k, pos, freq);
    else
      kernels::rope_forward(q, k, pos, freq);
  });
}

// ---- Embedding --------------------------------------------------------------------------------------
constexpr int64_t kVocab = 256000;

Tensor ids_device(bool hot, int64_t* distinct) {
  std::vector<int32_t> ids(kTokens);
  std::mt19937 rng(99);
  std::uniform_int_distribution<int32_t> dist(0, kVocab - 1);
  for (int64_t t = 0; t < kTokens; ++t) ids[t] = hot && t % 2 == 0 ? 7 : dist(rng);
  *distinct = static_cast<int64_t>(std::set<int32_t>(ids.begin(), ids.end()).size());
  Tensor t = Tensor::empty(DType::I32, {kTokens}, Device::CUDA);
  copy_bytes(t.view(), TensorView(ids.data(), DType::I32, Shape{kTokens}, Device::CPU));
  return t;
}

void bm_embedding(benchmark::State& state, Model m) {
  int64_t distinct = 0;
  Tensor ids = ids_device(false, &distinct);
  Tensor table = random_bf16({kVocab, m.d});
  Tensor out = Tensor::empty(DType::BF16, {kTokens, m.d}, Device::CUDA);
  Tensor status = Tensor::empty(DType::I32, {2}, Device::CUDA);
  const float s = kernels::embedding_scale(m.d, DType::BF16);
  const double bytes = 4.0 * kTokens * m.d + 4.0 * kTokens;
  timed(state, bytes, [&] { kernels::embedding_forward(ids, table, s, out, status); });
}

void bm_embedding_bwd(benchmark::State& state, Model m, bool hot) {
  int64_t distinct = 0;
  Tensor ids = ids_device(hot, &distinct);
  Tensor dout = random_bf16({kTokens, m.d});
  Tensor acc = Tensor::zeros(DType::F32, {kVocab, m.d}, Device::CUDA);
  Tensor status = Tensor::empty(DType::I32, {2}, Device::CUDA);
  const float s = kernels::embedding_scale(m.d, DType::BF16);
  const double bytes = 2.0 * kTokens * m.d + 8.0 * m.d * static_cast<double>(distinct) + 4.0 * kTokens;
  timed(state, bytes, [&] { kernels::embedding_backward(ids, dout, s, acc, status); });
  state.counters["distinct_ids"] = static_cast<double>(distinct);
}

void add(const std::string& name, auto fn) {
  benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond);
}

const bool registered = [] {
  for (const Model& m : kModels) {
    const std::string td = "/" + std::to_string(kTokens) + "x" + std::to_string(m.d);
    const std::string tf = "/" + std::to_string(kTokens) + "x" + std::to_string(m.f);
    const std::string heads = "/" + std::to_string(kTokens) + "x" + std::to_string(m.h) + "+" + std::to_string(m.hkv) +
                              "x" + std::to_string(m.dh);
    add("rmsnorm/bf16->bf16" + td, [=](benchmark::State& s) { bm_rmsnorm(s, m, NormOut::kBf16); });
    add("rmsnorm+residual/bf16->bf16" + td, [=](benchmark::State& s) { bm_rmsnorm(s, m, NormOut::kBf16Residual); });
    add("rmsnorm/bf16->e4m3" + td, [=](benchmark::State& s) { bm_rmsnorm(s, m, NormOut::kFp8); });
    add("rmsnorm/bf16->e4m3+t" + td, [=](benchmark::State& s) { bm_rmsnorm(s, m, NormOut::kFp8T); });
    add("rmsnorm_bwd/bf16->bf16" + td, [=](benchmark::State& s) { bm_rmsnorm_bwd(s, m); });
    add("geglu/bf16->bf16" + tf, [=](benchmark::State& s) { bm_geglu(s, m, ActOut::kBf16); });
    add("geglu/bf16->e4m3" + tf, [=](benchmark::State& s) { bm_geglu(s, m, ActOut::kFp8); });
    add("geglu/bf16->e4m3+t" + tf, [=](benchmark::State& s) { bm_geglu(s, m, ActOut::kFp8T); });
    add("geglu_bwd/bf16->bf16" + tf, [=](benchmark::State& s) { bm_geglu_bwd(s, m, ActOut::kBf16); });
    add("geglu_bwd/bf16->e5m2+t" + tf, [=](benchmark::State& s) { bm_geglu_bwd(s, m, ActOut::kFp8T); });
    add("rope/bf16" + heads, [=](benchmark::State& s) { bm_rope(s, m, false); });
    add("rope_bwd/bf16" + heads, [=](benchmark::State& s) { bm_rope(s, m, true); });
    add("embedding/bf16->bf16" + td, [=](benchmark::State& s) { bm_embedding(s, m); });
    add("embedding_bwd/uniform/bf16->f32" + td, [=](benchmark::State& s) { bm_embedding_bwd(s, m, false); });
    add("embedding_bwd/hot/bf16->f32" + td, [=](benchmark::State& s) { bm_embedding_bwd(s, m, true); });
  }
  return true;
}();

}  // namespace
}  // namespace tg::bench

TG_BENCH_MAIN()
