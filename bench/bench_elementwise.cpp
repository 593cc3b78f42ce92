// The memory-bound Gemma kernels (kernels/norm, activation, rope, embedding) against the 4.1 TB/s HBM
// roofline, at the Gemma-2B / 7B training shapes: T = 8192 tokens (4 x 2048), D = 2048 / 3072,
// F = 16384 / 24576, head_dim 256 with (H, Hkv) = (8, 1) / (16, 16). Target: hbm_roofline_frac >= 0.8.
//
// Names: <op>/<in>-><out>[+t]/<shape>; "+t" = the FP8 output also writes its transposed copy. rmsnorm_occ /
// rmsnorm_ring: the plain rmsnorm with kernels::cuda::tuning::set_rmsnorm_schedule(1 / 2) (the "occupancy" or the
// "ring" schedule at both widths; kernels/norm/norm.h), for the A/B against the default (by width).
// Bytes per launch count every tensor the op must read or write once (FP8 bytes 1 each; small vectors
// such as w, rstd and ids included, and the FP8 scalars: scale read, scale_inv written (twice with the
// transposed copy), amax read and written); they do NOT count implementation scratch traffic (the norm
// backward's dw partials: 2 * T/16 * D * 4 bytes, about 8% on top), so the fraction is of the op's
// minimal traffic.
//   rmsnorm            x 2TD + y 2TD + w 2D + rstd 4T          (+residual: + 2TD read + 2TD write)
//   rmsnorm ->e4m3     x 2TD + q TD (+ TD transposed) + w + rstd + FP8 scalars
//   rmsnorm_bwd        dy 2TD + x 2TD + dx 2TD + w 2D + rstd 4T + dw 4D
//   geglu              fc1 4TF + out 2TF       (->e4m3: out TF, +t: 2TF, + FP8 scalars)
//   geglu_bwd          dout 2TF + fc1 4TF + dfc1 4TF     (->e5m2: dfc1 2TF, +t: 4TF, + FP8 scalars)
//   rope               q and k read and written in place: 4 T (H + Hkv) Dh, + positions 8T, + the cos/sin table rows
//                      read (the product path, rope_cos_sin_table): 8 (Dh/2) per distinct position (2048 here:
//                      2 MiB, counted once although every token of a position reads it; they are L2 hits)
//   rope_computed      (and rope_bwd_computed) the same without the table, cos/sin evaluated per (token, pair) in
//                      FP64 (the fallback path, and the product path before the table): no table bytes
//   embedding          rows 2TD + out 2TD + ids 4T + status 8 (reset and update)
//   embedding_bwd      dout 2TD + (read + write) 8D per distinct id + ids 4T + status 8; ids uniform over
//                      V = 256000 ("uniform") or with every other token the same id ("hot": the serial worst case)
//   copy               cudaMemcpy device to device of the rmsnorm / geglu activation: read + write, the
//                      ceiling this timing method reaches at that size
// Inputs are pseudo-random BF16 around N(0, 1).
// Timing: each op gets `sets` independent copies of its buffers, enough that one rotation through them
// touches >= 4x the L2 (so every launch reads its inputs from HBM, and the dirty lines a launch leaves in
// L2 are written back during the next launches, inside the timed window, as in a model's stream of
// kernels). A timed iteration runs back-to-back launches cycling through the sets (>= 0.5 GB of traffic),
// and reports the time per launch. No L2 flush: a flush (memset) leaves up to ~50 MB of dirty lines whose
// write-back lands in the timed launch (the 2026-11-30 quantize amax timings against size fit a fixed
// ~10-14 us per launch, most of a 2048-wide RMSNorm's 16 us ideal).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "bench/common/bench_util.h"
#include "common/cuda_check.h"
#include "common/fp8_tensor.h"
#include "common/numeric.h"
#include "kernels/activation/activation.h"
#include "kernels/embedding/embedding.h"
#include "kernels/norm/norm.h"
#include "kernels/rope/rope.h"
#include "kernels/tuning_scope.h"

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

// FP8 per-tensor scalars: scale read, scale_inv written (twice with the transposed copy), amax read + written.
double fp8_scalar_bytes(bool columnwise) { return 4.0 + 4.0 * (columnwise ? 2 : 1) + 8.0; }

// Buffer sets so that one rotation touches >= 4x the L2 (bytes: one launch's traffic), at most 64.
int rotation_sets(double bytes) {
  int dev = 0, l2 = 0;
  TG_CHECK_CUDA(cudaGetDevice(&dev));
  TG_CHECK_CUDA(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  const double sets = std::ceil(4.0 * l2 / std::max(bytes, 1.0));
  return static_cast<int>(std::clamp(sets, 1.0, 64.0));
}

// Times body(set) for set = 0, 1, ..., sets - 1, 0, 1, ... back to back: per-launch time and counters.
template <typename F>
void timed(benchmark::State& state, double bytes, int sets, F&& body) {
  try {
    for (int i = 0; i < sets; ++i) body(i);  // warm-up: every set once
    TG_CHECK_CUDA(cudaDeviceSynchronize());
    const int rounds = static_cast<int>(std::max(1.0, std::ceil(5e8 / (bytes * sets))));
    const int launches = rounds * sets;
    cudaEvent_t start{}, stop{};
    TG_CHECK_CUDA(cudaEventCreate(&start));
    TG_CHECK_CUDA(cudaEventCreate(&stop));
    // One benchmark iteration = one launch: a timed batch of `launches` counts as that many iterations, so the
    // reported time is per launch and --benchmark_min_time bounds the real time spent (reporting the per-launch
    // time for a whole batch made Google Benchmark run ~launches x too long: 224 s on the decode GeGLU shapes).
    while (state.KeepRunningBatch(launches)) {
      TG_CHECK_CUDA(cudaEventRecord(start));
      for (int k = 0; k < launches; ++k) body(k % sets);
      TG_CHECK_CUDA(cudaEventRecord(stop));
      TG_CHECK_CUDA(cudaEventSynchronize(stop));
      float ms = 0.0f;
      TG_CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
      state.SetIterationTime(static_cast<double>(ms) / 1000.0);
    }
    TG_CHECK_CUDA(cudaEventDestroy(start));
    TG_CHECK_CUDA(cudaEventDestroy(stop));
    set_roofline(state, bytes, 0);
    set_tokens(state, static_cast<double>(kTokens));
    state.counters["buffer_sets"] = sets;
    state.counters["launches_per_iter"] = launches;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// n copies of make(i) (each set gets its own seed, so no two sets share data).
template <typename M>
auto make_sets(int n, M&& make) {
  std::vector<decltype(make(0))> v;
  v.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v.push_back(make(i));
  return v;
}

// ---- RMSNorm ----------------------------------------------------------------------------------------
enum class NormOut { kBf16, kBf16Residual, kFp8, kFp8T };

struct NormSet {
  Tensor x, res, y, rstd;
  Fp8Tensor q;
};

// The kernels::cuda::tuning knob set for one benchmark (kernels/tuning_scope.h).
using NormSchedule = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_rmsnorm_schedule, 0>;

// schedule: kernels::cuda::tuning::set_rmsnorm_schedule for this benchmark (0 = the default), restored afterwards.
void bm_rmsnorm(benchmark::State& state, Model m, NormOut mode, int schedule = 0) {
  const NormSchedule scope(schedule);
  const double td = static_cast<double>(kTokens) * m.d;
  const bool fp8 = mode == NormOut::kFp8 || mode == NormOut::kFp8T, t = mode == NormOut::kFp8T;
  const bool with_res = mode == NormOut::kBf16Residual;
  const double common = 2 * td + 2.0 * m.d + 4.0 * kTokens;
  const double bytes =
      fp8 ? common + td * (t ? 2 : 1) + fp8_scalar_bytes(t) : common + 2 * td + (with_res ? 4 * td : 0);
  Tensor w = random_bf16({m.d});
  auto sets = make_sets(rotation_sets(bytes), [&](int i) {
    NormSet s;
    s.x = random_device(DType::BF16, {kTokens, m.d}, 1234 + i);
    if (with_res) s.res = random_device(DType::BF16, {kTokens, m.d}, 5678 + i);
    if (fp8)
      s.q = fp8_out(DType::E4M3, kTokens, m.d, t, 64.0f);
    else
      s.y = Tensor::empty(DType::BF16, {kTokens, m.d}, Device::CUDA);
    s.rstd = Tensor::empty(DType::F32, {kTokens}, Device::CUDA);
    return s;
  });
  timed(state, bytes, static_cast<int>(sets.size()), [&](int i) {
    NormSet& s = sets[static_cast<size_t>(i)];
    if (fp8)
      kernels::rmsnorm_forward_fp8(s.x, w, 1e-6f, s.q.view(), s.rstd);
    else
      kernels::rmsnorm_forward(s.x, w, 1e-6f, s.y, s.rstd, with_res ? s.res.view() : TensorView{});
  });
}

struct NormBwdSet {
  Tensor x, dy, rstd, dx, dw, ws;
};

void bm_rmsnorm_bwd(benchmark::State& state, Model m) {
  const double td = static_cast<double>(kTokens) * m.d;
  const double bytes = 6 * td + 2.0 * m.d + 4.0 * kTokens + 4.0 * m.d;
  Tensor w = random_bf16({m.d});
  auto sets = make_sets(rotation_sets(bytes), [&](int i) {
    NormBwdSet s;
    s.x = random_device(DType::BF16, {kTokens, m.d}, 1234 + i);
    s.dy = random_device(DType::BF16, {kTokens, m.d}, 4321 + i);
    s.rstd = Tensor::empty(DType::F32, {kTokens}, Device::CUDA);
    Tensor y = Tensor::empty(DType::BF16, {kTokens, m.d}, Device::CUDA);
    kernels::rmsnorm_forward(s.x, w, 1e-6f, y, s.rstd);
    s.dx = Tensor::empty(DType::BF16, {kTokens, m.d}, Device::CUDA);
    s.dw = Tensor::empty(DType::F32, {m.d}, Device::CUDA);
    s.ws = Tensor::empty(DType::F32, {kernels::rmsnorm_backward_workspace_rows(kTokens), m.d}, Device::CUDA);
    return s;
  });
  timed(state, bytes, static_cast<int>(sets.size()), [&](int i) {
    NormBwdSet& s = sets[static_cast<size_t>(i)];
    kernels::rmsnorm_backward(s.dy, s.x, w, s.rstd, s.dx, s.dw, s.ws);
  });
}

// ---- GeGLU ------------------------------------------------------------------------------------------
enum class ActOut { kBf16, kFp8, kFp8T };

// The GeGLU activations are 0.4-1.2 GB per launch, far beyond L2: one set, launches back to back.
void bm_geglu(benchmark::State& state, Model m, ActOut mode) {
  const double tf = static_cast<double>(kTokens) * m.f;
  Tensor fc1 = random_bf16({kTokens, 2 * m.f});
  if (mode == ActOut::kBf16) {
    Tensor out = Tensor::empty(DType::BF16, {kTokens, m.f}, Device::CUDA);
    timed(state, 4 * tf + 2 * tf, 1, [&](int) { kernels::geglu_forward(fc1, out); });
  } else {
    const bool t = mode == ActOut::kFp8T;
    Fp8Tensor q = fp8_out(DType::E4M3, kTokens, m.f, t, 64.0f);
    timed(state, 4 * tf + tf * (t ? 2 : 1) + fp8_scalar_bytes(t), 1,
          [&](int) { kernels::geglu_forward_fp8(fc1, q.view()); });
  }
}

void bm_geglu_bwd(benchmark::State& state, Model m, ActOut mode) {
  const double tf = static_cast<double>(kTokens) * m.f;
  Tensor fc1 = random_bf16({kTokens, 2 * m.f}), dout = random_bf16({kTokens, m.f});
  if (mode == ActOut::kBf16) {
    Tensor d = Tensor::empty(DType::BF16, {kTokens, 2 * m.f}, Device::CUDA);
    timed(state, 6 * tf + 4 * tf, 1, [&](int) { kernels::geglu_backward(dout, fc1, d); });
  } else {
    const bool t = mode == ActOut::kFp8T;
    Fp8Tensor q = fp8_out(DType::E5M2, kTokens, 2 * m.f, t, 1024.0f);
    timed(state, 6 * tf + 2 * tf * (t ? 2 : 1) + fp8_scalar_bytes(t), 1,
          [&](int) { kernels::geglu_backward_fp8(dout, fc1, q.view()); });
  }
}

// Decode shapes: one token per sequence per step, so T = the batch (fc1 = [T, 2F]); the small-row tile path of
// kernels/activation. Bytes as bm_geglu (fc1 4TF + out 2TF, ->e4m3: out TF + FP8 scalars). fc1 is a few MB
// here, so the buffers rotate like the other ops' (rotation_sets); at T = 1 even its 64 sets stay in L2, as in a
// decode step, where the fc1 GEMV has just written fc1.
void bm_geglu_decode(benchmark::State& state, int64_t t, int64_t f, ActOut mode) {
  const double tf = static_cast<double>(t) * static_cast<double>(f);
  const bool fp8 = mode != ActOut::kBf16;
  const double bytes = 4 * tf + (fp8 ? tf + fp8_scalar_bytes(false) : 2 * tf);
  const int sets = rotation_sets(bytes);
  auto fc1 = make_sets(sets, [&](int i) { return random_device(DType::BF16, {t, 2 * f}, 1234 + i); });
  if (fp8) {
    auto q = make_sets(sets, [&](int) { return fp8_out(DType::E4M3, t, f, false, 64.0f); });
    timed(state, bytes, sets,
          [&](int i) { kernels::geglu_forward_fp8(fc1[static_cast<size_t>(i)], q[static_cast<size_t>(i)].view()); });
  } else {
    auto out = make_sets(sets, [&](int) { return Tensor::empty(DType::BF16, {t, f}, Device::CUDA); });
    timed(state, bytes, sets,
          [&](int i) { kernels::geglu_forward(fc1[static_cast<size_t>(i)], out[static_cast<size_t>(i)]); });
  }
  set_tokens(state, static_cast<double>(t));  // timed() counted kTokens
}

// Device-to-device copy of `elements` BF16 values (read + written), timed like the kernels.
void bm_copy(benchmark::State& state, int64_t elements) {
  const double bytes = 4.0 * static_cast<double>(elements);
  auto sets = make_sets(rotation_sets(bytes), [&](int i) {
    return std::pair<Tensor, Tensor>(random_device(DType::BF16, {elements}, 99 + i),
                                     Tensor::empty(DType::BF16, {elements}, Device::CUDA));
  });
  timed(state, bytes, static_cast<int>(sets.size()), [&](int i) {
    auto& s = sets[static_cast<size_t>(i)];
    TG_CHECK_CUDA(cudaMemcpyAsync(s.second.data(), s.first.data(), s.first.nbytes(), cudaMemcpyDeviceToDevice));
  });
}

// ---- RoPE -------------------------------------------------------------------------------------------
// In place: each set is its own fused QKV buffer (q and k are strided views into it; v is untouched).
// table: read the model's precomputed cos/sin (positions [0, 8192), Gemma's max_position_embeddings), as the
// model does on CUDA; else compute them (rope_computed: the kernel's fallback path, and the old product path).
void bm_rope(benchmark::State& state, Model m, bool backward, bool table) {
  const int64_t w = (m.h + 2 * m.hkv) * m.dh;
  constexpr int64_t kSeqLen = 2048;  // 4 x 2048 packed: positions t % 2048
  Tensor pos = Tensor::empty(DType::I64, {kTokens}, Device::CUDA);  // positions live on the device
  std::vector<int64_t> p(kTokens);
  for (int64_t t = 0; t < kTokens; ++t) p[t] = t % kSeqLen;
  copy_bytes(pos.view(), TensorView(p.data(), DType::I64, Shape{kTokens}, Device::CPU));
  Tensor freq = kernels::rope_inv_freq_table(m.dh, 10000.0f, 1.0f, Device::CUDA);
  Tensor cos_sin;
  if (table) cos_sin = kernels::rope_cos_sin_table(freq, 8192, Device::CUDA);
  // Honest bytes for the table variant: the distinct rows read, kSeqLen positions x Dh/2 pairs x (cos + sin) F32.
  const double table_bytes = table ? 8.0 * kSeqLen * (m.dh / 2) : 0.0;
  const double bytes = 4.0 * kTokens * (m.h + m.hkv) * m.dh + 8.0 * kTokens + table_bytes;
  auto sets = make_sets(rotation_sets(bytes), [&](int i) {
    return random_device(DType::BF16, {kTokens, w}, 1234 + i);
  });
  const TensorView tv = table ? cos_sin.view() : TensorView{};
  timed(state, bytes, static_cast<int>(sets.size()), [&](int i) {
    Tensor& qkv = sets[static_cast<size_t>(i)];
    const TensorView q(qkv.data(), DType::BF16, Shape{kTokens, m.h, m.dh}, Shape{w, m.dh, 1}, Device::CUDA);
    const TensorView k(qkv.ptr<uint16_t>() + m.h * m.dh, DType::BF16, Shape{kTokens, m.hkv, m.dh}, Shape{w, m.dh, 1},
                       Device::CUDA);
    if (backward)
      kernels::rope_backward(q, k, pos, freq, {}, tv);
    else
      kernels::rope_forward(q, k, pos, freq, {}, tv);
  });
}

// ---- Embedding --------------------------------------------------------------------------------------
constexpr int64_t kVocab = 256000;

Tensor ids_device(bool hot, int64_t* distinct, uint32_t seed = 99) {
  std::vector<int32_t> ids(kTokens);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, kVocab - 1);
  for (int64_t t = 0; t < kTokens; ++t) ids[t] = hot && t % 2 == 0 ? 7 : dist(rng);
  *distinct = static_cast<int64_t>(std::set<int32_t>(ids.begin(), ids.end()).size());
  Tensor t = Tensor::empty(DType::I32, {kTokens}, Device::CUDA);
  copy_bytes(t.view(), TensorView(ids.data(), DType::I32, Shape{kTokens}, Device::CPU));
  return t;
}

// Each set has its own ids (a rotation gathers different table rows) and output.
void bm_embedding(benchmark::State& state, Model m) {
  Tensor table = random_bf16({kVocab, m.d});
  Tensor status = Tensor::empty(DType::I32, {2}, Device::CUDA);
  const float scale = kernels::embedding_scale(m.d, DType::BF16);
  const double bytes = 4.0 * kTokens * m.d + 4.0 * kTokens + 8.0;  // + the status reset and its update
  auto sets = make_sets(rotation_sets(bytes), [&](int i) {
    int64_t distinct = 0;
    return std::pair<Tensor, Tensor>(ids_device(false, &distinct, 99 + static_cast<uint32_t>(i)),
                                     Tensor::empty(DType::BF16, {kTokens, m.d}, Device::CUDA));
  });
  timed(state, bytes, static_cast<int>(sets.size()), [&](int i) {
    auto& s = sets[static_cast<size_t>(i)];
    kernels::embedding_forward(s.first, table, scale, s.second, status);
  });
}

// Sets: own ids (so own rows of the accumulation buffer) and dout; the buffer itself is shared (1-2 GB).
void bm_embedding_bwd(benchmark::State& state, Model m, bool hot) {
  Tensor acc = Tensor::zeros(DType::F32, {kVocab, m.d}, Device::CUDA);
  Tensor status = Tensor::empty(DType::I32, {2}, Device::CUDA);
  const float s = kernels::embedding_scale(m.d, DType::BF16);
  int64_t distinct = 0;
  (void)ids_device(hot, &distinct);  // the per-launch traffic of the first set sizes the rotation
  auto bytes_for = [&](int64_t d) { return 2.0 * kTokens * m.d + 8.0 * m.d * static_cast<double>(d) + 4.0 * kTokens; };
  const double bytes = bytes_for(distinct) + 8.0;  // + the status reset and its update
  auto sets = make_sets(rotation_sets(bytes), [&](int i) {
    int64_t dist = 0;
    Tensor ids = ids_device(hot, &dist, 99 + static_cast<uint32_t>(i));
    return std::pair<Tensor, Tensor>(std::move(ids), random_device(DType::BF16, {kTokens, m.d}, 777 + i));
  });
  timed(state, bytes, static_cast<int>(sets.size()), [&](int i) {
    auto& set = sets[static_cast<size_t>(i)];
    kernels::embedding_backward(set.first, set.second, s, acc, status);
  });
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
    for (const int sched : {1, 2}) {
      const std::string op = sched == 1 ? "rmsnorm_occ" : "rmsnorm_ring";
      add(op + "/bf16->bf16" + td, [=](benchmark::State& s) { bm_rmsnorm(s, m, NormOut::kBf16, sched); });
      add(op + "/bf16->e4m3" + td, [=](benchmark::State& s) { bm_rmsnorm(s, m, NormOut::kFp8, sched); });
    }
    add("rmsnorm_bwd/bf16->bf16" + td, [=](benchmark::State& s) { bm_rmsnorm_bwd(s, m); });
    add("geglu/bf16->bf16" + tf, [=](benchmark::State& s) { bm_geglu(s, m, ActOut::kBf16); });
    add("geglu/bf16->e4m3" + tf, [=](benchmark::State& s) { bm_geglu(s, m, ActOut::kFp8); });
    add("geglu/bf16->e4m3+t" + tf, [=](benchmark::State& s) { bm_geglu(s, m, ActOut::kFp8T); });
    add("geglu_bwd/bf16->bf16" + tf, [=](benchmark::State& s) { bm_geglu_bwd(s, m, ActOut::kBf16); });
    add("geglu_bwd/bf16->e5m2+t" + tf, [=](benchmark::State& s) { bm_geglu_bwd(s, m, ActOut::kFp8T); });
    add("rope/bf16" + heads, [=](benchmark::State& s) { bm_rope(s, m, false, true); });
    add("rope_bwd/bf16" + heads, [=](benchmark::State& s) { bm_rope(s, m, true, true); });
    add("rope_computed/bf16" + heads, [=](benchmark::State& s) { bm_rope(s, m, false, false); });
    add("rope_bwd_computed/bf16" + heads, [=](benchmark::State& s) { bm_rope(s, m, true, false); });
    add("embedding/bf16->bf16" + td, [=](benchmark::State& s) { bm_embedding(s, m); });
    add("embedding_bwd/uniform/bf16->f32" + td, [=](benchmark::State& s) { bm_embedding_bwd(s, m, false); });
    add("embedding_bwd/hot/bf16->f32" + td, [=](benchmark::State& s) { bm_embedding_bwd(s, m, true); });
    add("copy/bf16" + td, [=](benchmark::State& s) { bm_copy(s, kTokens * m.d); });
    add("copy/bf16" + tf, [=](benchmark::State& s) { bm_copy(s, kTokens * m.f); });
  }
  return true;
}();

// GeGLU at the decode shapes (T x F as above): Gemma-2B at batch 1, Gemma-7B at batch 64.
const bool registered_geglu_decode = [] {
  struct Decode {
    Model m;
    int64_t t;
  };
  for (const Decode d : {Decode{kModels[0], 1}, Decode{kModels[1], 64}}) {
    const Model m = d.m;
    const int64_t t = d.t;
    const std::string tf = "/" + std::to_string(t) + "x" + std::to_string(m.f);
    add("geglu/bf16->bf16" + tf, [=](benchmark::State& s) { bm_geglu_decode(s, t, m.f, ActOut::kBf16); });
    add("geglu/bf16->e4m3" + tf, [=](benchmark::State& s) { bm_geglu_decode(s, t, m.f, ActOut::kFp8); });
  }
  return true;
}();

}  // namespace
}  // namespace tg::bench

TG_BENCH_MAIN()
