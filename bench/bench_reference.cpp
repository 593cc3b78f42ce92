// End-to-end benchmarks of the LibTorch reference (tg::ref, torch-facing API) in BF16 on CUDA: the baseline
// every impl and FP8 figure is compared against, so it is measured on the same workloads as HF transformers
// (bench/hf_anchors.py writes the same names with `hf` in place of `reference`; targets: train step and prefill
// >= 90% of HF, issue 4). Random weights of the real shapes, drawn on the device; SDPA attention where LibTorch
// has it (>= 2.1: the flash path for causal unpadded batches, as HF's sdpa), else HF's eager attention.
//
// Names: e2e/<workload>/reference/bf16/<preset>/<shape>
//   e2e/ceiling/reference/bf16/8192x8192x8192      at::mm BF16 GEMM (the gemm_roofline_frac ceiling of this run)
//   e2e/train_step/reference/bf16/gemma-2b/B4xS2048  forward + loss + backward + clip + fused AdamW (Trainer)
//   e2e/prefill/reference/bf16/<p>/B<b>xS<s>          forward, last-position logits only (logits_to_keep=1)
//   e2e/decode/reference/bf16/<p>/B<b>/P<p>+N<n>      generate(): prefill of P tokens + greedy decode to N new
//                                                    tokens per row through the static KV cache, no EOS stop
//   (gemma-7b/B64/P20+N492 is the TE tutorial's benchmark: its real_time is the end-to-end seconds.)
// Google Benchmark appends /iterations:<n>/manual_time to each name (fixed iteration counts: a few seconds of
// timed work each, the whole binary in about a minute plus the suite's warm-up); hf_anchors.py does the same.
//
// Timing: CUDA events on LibTorch's current stream around the whole unit of work (manual time); the setup (random
// weights, trainer state, warm-up) is cached across benchmarks of the same model and never timed. Each timed
// iteration is synchronous at its end (the event), so CPU launch overhead that leaves the GPU idle is counted.
//
// Counters (per iteration; set_roofline adds flops / gemm_roofline_frac and bytes_per_second / hbm_roofline_frac):
//   tokens_per_second  train/prefill: B*S tokens; decode: B*N new tokens (prefill time included, as HF's figures)
//   peak_allocated_gib, peak_reserved_gib  LibTorch caching-allocator peaks over the timed iterations
//   device_used_gib    cudaMemGetInfo total - free after the timed iterations (allocator cache, cuBLAS workspaces)
//   sdpa (1 = at::scaled_dot_product_attention), fused_adamw, loss (train: the last step's loss, ~ln V at init)
//
// Model FLOPs (the standard "model FLOPs": GEMMs and attention, nothing recomputed, no elementwise work):
//   N_lin = L * (D*(q + 2*kv) + q*D + 3*D*F)    non-embedding matmul parameters (q = H*Dh, kv = Hkv*Dh)
//   N_head = V*D                                 the tied lm_head (the embedding lookup itself is a gather)
//   A(B, pairs) = L * 4 * B * H * Dh * pairs     attention forward: QK^T and PV over the visible (query, key)
//                                                pairs of one row; causal prefill of S tokens: S*(S+1)/2
//   train step = 6 * (N_lin + N_head) * B*S + 3 * A(B, S(S+1)/2)        (backward = 2x forward)
//   prefill    = 2 * N_lin * B*S + 2 * N_head * B + A(B, S(S+1)/2)       (lm_head on the last position only)
//   decode     = 2 * N_lin * B*(P + N - 1) + 2 * N_head * B * N + A(B, P(P+1)/2 + sum_{j=1..N-1} (P + j))
//                (one prefill forward and N - 1 one-token forwards produce the N tokens)
// HBM bytes (decode only; a lower bound, so hbm_roofline_frac is an upper bound of the achieved fraction):
//   every forward reads the BF16 weights once, 2 * (N_lin + N_head + norms), and decode step j reads the K and V
//   cache: L * 2 * B * Hkv * Dh * 2 * (P + j) bytes. Train and prefill are GEMM-bound: no byte count.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <cuda_runtime.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench/common/bench_util.h"
#include "common/check.h"
#include "common/cuda_check.h"
#include "common/gemma_config.h"
#include "reference/generate.h"
#include "reference/model.h"
#include "reference/trainer.h"

// A CUDA LibTorch (the H200): c10::cuda streams and caching-allocator statistics. A CPU LibTorch (this
// project's CI machine) builds the same binary without them; every benchmark then skips.
#if TG_BENCH_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace tg::bench {
namespace {

enum class Kind { kTrain, kPrefill, kDecode };

struct Workload {
  Kind kind;
  std::string preset;
  int64_t batch;
  int64_t seqlen;      // train/prefill: S; decode: the prompt length P
  int64_t new_tokens;  // decode: N
  int iterations;      // timed iterations: a few seconds of work on the H200

  std::string name() const {
    const std::string b = std::to_string(batch), s = std::to_string(seqlen);
    switch (kind) {
      case Kind::kTrain: return "e2e/train_step/reference/bf16/" + preset + "/B" + b + "xS" + s;
      case Kind::kPrefill: return "e2e/prefill/reference/bf16/" + preset + "/B" + b + "xS" + s;
      case Kind::kDecode:
        return "e2e/decode/reference/bf16/" + preset + "/B" + b + "/P" + s + "+N" + std::to_string(new_tokens);
    }
    return "";
  }
};

// ---- FLOP and byte model (the formulas of the header) ------------------------------------------------------
double n_lin(const GemmaConfig& c) { return static_cast<double>(c.num_hidden_layers) * layer_linear_params(c); }
double n_head(const GemmaConfig& c) { return static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size); }
double attention_flops(const GemmaConfig& c, double batch, double pairs) {
  return static_cast<double>(c.num_hidden_layers) * layer_attention_flops(c, batch, pairs);
}

double model_flops(const GemmaConfig& c, const Workload& w) {
  const double b = static_cast<double>(w.batch), s = static_cast<double>(w.seqlen);
  switch (w.kind) {
    case Kind::kTrain: return 6.0 * (n_lin(c) + n_head(c)) * b * s + 3.0 * attention_flops(c, b, causal_pairs(s));
    case Kind::kPrefill: return 2.0 * n_lin(c) * b * s + 2.0 * n_head(c) * b + attention_flops(c, b, causal_pairs(s));
    case Kind::kDecode: {
      const double n = static_cast<double>(w.new_tokens);
      // sum_{j=1..N-1} (P + j) = (N-1) P + N(N-1)/2
      const double decode_pairs = (n - 1) * s + n * (n - 1) / 2;
      return 2.0 * n_lin(c) * b * (s + n - 1) + 2.0 * n_head(c) * b * n +
             attention_flops(c, b, causal_pairs(s) + decode_pairs);
    }
  }
  return 0.0;
}

double decode_bytes(const GemmaConfig& c, const Workload& w) {
  const double n = static_cast<double>(w.new_tokens), s = static_cast<double>(w.seqlen);
  const double norms = static_cast<double>((2 * c.num_hidden_layers + 1) * c.hidden_size);
  const double weights = 2.0 * (n_lin(c) + n_head(c) + norms);
  const double kv_per_slot = static_cast<double>(c.num_hidden_layers) * 2.0 * static_cast<double>(w.batch) *
                             static_cast<double>(c.kv_dim()) * 2.0;
  return n * weights + kv_per_slot * ((n - 1) * s + n * (n - 1) / 2);
}

// ---- Device helpers -----------------------------------------------------------------------------------------
const at::Device kCuda(at::kCUDA, 0);

cudaStream_t torch_stream() {
#if TG_BENCH_TORCH_CUDA
  return c10::cuda::getCurrentCUDAStream().stream();
#else
  return nullptr;
#endif
}

bool skip_without_torch_cuda(benchmark::State& state) {
#if TG_BENCH_TORCH_CUDA
  if (at::hasCUDA()) return false;
  state.SkipWithError("LibTorch sees no CUDA device");
#else
  state.SkipWithError("this LibTorch was built without CUDA");
#endif
  return true;
}

void reset_peak_memory() {
#if TG_BENCH_TORCH_CUDA
  c10::cuda::CUDACachingAllocator::resetPeakStats(kCuda.index());
#endif
}

void report_memory(benchmark::State& state) {
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
#if TG_BENCH_TORCH_CUDA
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(kCuda.index());
  state.counters["peak_allocated_gib"] = static_cast<double>(stats.allocated_bytes[0].peak) / kGiB;  // [0]: all pools
  state.counters["peak_reserved_gib"] = static_cast<double>(stats.reserved_bytes[0].peak) / kGiB;
#endif
  size_t free = 0, total = 0;
  TG_CHECK_CUDA(cudaMemGetInfo(&free, &total));
  state.counters["device_used_gib"] = static_cast<double>(total - free) / kGiB;
}

ref::AttentionImpl fastest_attention() {
  return ref::sdpa_available() ? ref::AttentionImpl::Sdpa : ref::AttentionImpl::Explicit;
}

// Token ids in [3, V) (no pad/eos/bos), one fixed pseudo-random stream: [rows, cols] int64 on the CPU.
at::Tensor random_ids(const GemmaConfig& c, int64_t rows, int64_t cols) {
  at::Tensor ids = at::empty({rows, cols}, at::TensorOptions().dtype(at::kLong));
  int64_t* p = ids.data_ptr<int64_t>();
  uint64_t x = 1;
  for (int64_t i = 0; i < rows * cols; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = 3 + static_cast<int64_t>((x >> 33) % static_cast<uint64_t>(c.vocab_size - 3));
  }
  return ids;
}

// ---- The one model (or trainer) on the GPU ------------------------------------------------------------------
// Benchmarks of one preset share it; switching frees the previous one first (gemma-2b training state is
// ~50 GB, gemma-7b weights 17 GB).
struct Slot {
  std::string key;
  std::unique_ptr<ref::GemmaModel> model;
  std::unique_ptr<ref::Trainer> trainer;
};
Slot& slot() {
  static Slot s;
  return s;
}

void release_slot() {
  slot().model.reset();
  slot().trainer.reset();
  slot().key.clear();
  TG_CHECK_CUDA(cudaDeviceSynchronize());
#if TG_BENCH_TORCH_CUDA
  c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

ref::GemmaWeights device_weights(const GemmaConfig& cfg) {
  ref::RandomInit init;  // HF's init (std 0.02, zero norms), drawn on the GPU (seconds, not minutes, for 7B)
  init.on_device = true;
  return ref::random_weights(cfg, 7, at::kBFloat16, kCuda, init);
}

ref::GemmaModel& inference_model(const GemmaConfig& cfg, const std::string& preset) {
  const std::string key = "model/" + preset;
  if (slot().key != key) {
    release_slot();
    slot().model = std::make_unique<ref::GemmaModel>(cfg, device_weights(cfg), fastest_attention());
    slot().key = key;
  }
  return *slot().model;
}

ref::Trainer& trainer(const GemmaConfig& cfg, const std::string& preset) {
  const std::string key = "trainer/" + preset;
  if (slot().key != key) {
    release_slot();
    ref::TrainConfig tc;  // defaults: lr 3e-4 (cosine over 1000 steps), no weight decay, clipping at norm 1.0
    tc.compute_dtype = DType::BF16;
    tc.attention = fastest_attention();
    tc.fused_adamw = true;
    slot().trainer = std::make_unique<ref::Trainer>(cfg, device_weights(cfg), tc, kCuda);
    slot().key = key;
  }
  return *slot().trainer;
}

void finish(benchmark::State& state, const GemmaConfig& cfg, const Workload& w, ref::AttentionImpl attention) {
  const double tokens = static_cast<double>(w.batch) * static_cast<double>(w.kind == Kind::kDecode ? w.new_tokens
                                                                                                     : w.seqlen);
  set_tokens(state, tokens);
  set_roofline(state, w.kind == Kind::kDecode ? decode_bytes(cfg, w) : 0.0, model_flops(cfg, w), Ceiling::kBf16Gemm);
  state.counters["sdpa"] = attention == ref::AttentionImpl::Sdpa ? 1 : 0;
  report_memory(state);
}

// ---- Workloads ----------------------------------------------------------------------------------------------
void bm_train(benchmark::State& state, const Workload& w) {
  const GemmaConfig cfg = GemmaConfig::preset(w.preset);
  ref::Trainer& t = trainer(cfg, w.preset);
  const at::Tensor ids = random_ids(cfg, w.batch, w.seqlen);
  const ref::MicroBatch mb{ids, ids};  // labels = ids (shifted inside the loss, as HF)
  for (int i = 0; i < 2; ++i) t.step({mb});  // warm-up: allocator, cuBLAS heuristics, flash kernels
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  reset_peak_memory();
  ref::StepStats last;
  for (auto _ : state) {
    CudaEventTimer timer(state, torch_stream());
    last = t.step({mb});
  }
  state.counters["loss"] = last.loss.item<double>();
  state.counters["fused_adamw"] = t.uses_fused_adamw() ? 1 : 0;
  finish(state, cfg, w, t.train_config().attention);
}

void bm_prefill(benchmark::State& state, const Workload& w) {
  const GemmaConfig cfg = GemmaConfig::preset(w.preset);
  const ref::GemmaModel& m = inference_model(cfg, w.preset);
  c10::InferenceMode inference;
  ref::ForwardArgs args;
  args.input_ids = random_ids(cfg, w.batch, w.seqlen).to(kCuda);
  args.logits_to_keep = 1;  // generation's prefill: logits of the last position only
  for (int i = 0; i < 2; ++i) (void)m.forward(args);
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  reset_peak_memory();
  for (auto _ : state) {
    CudaEventTimer timer(state, torch_stream());
    benchmark::DoNotOptimize(m.forward(args));
  }
  finish(state, cfg, w, m.attention());
}

void bm_decode(benchmark::State& state, const Workload& w) {
  const GemmaConfig cfg = GemmaConfig::preset(w.preset);
  const ref::GemmaModel& m = inference_model(cfg, w.preset);
  const at::Tensor prompts = random_ids(cfg, w.batch, w.seqlen);
  const at::Tensor mask = at::ones_like(prompts);
  ref::GenerationConfig gen;  // greedy
  gen.ignore_eos = true;      // every row runs to max_new_tokens (random weights would hit EOS at random)
  gen.max_new_tokens = std::min<int64_t>(w.new_tokens, 8);
  (void)ref::generate(m, prompts, mask, gen);  // warm-up (ends with a host copy: synchronised)
  gen.max_new_tokens = w.new_tokens;
  reset_peak_memory();
  for (auto _ : state) {
    CudaEventTimer timer(state, torch_stream());
    benchmark::DoNotOptimize(ref::generate(m, prompts, mask, gen));
  }
  finish(state, cfg, w, m.attention());
}

// ---- The BF16 GEMM ceiling of this run (at::mm 8192^3, LibTorch's cuBLAS path) ------------------------------
void bm_ceiling(benchmark::State& state) {
  constexpr int64_t n = 8192;
  release_slot();
  c10::InferenceMode inference;
  // Random data of both signs: GEMM power, and so the clocks, depend on the data (zeros would flatter).
  const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(kCuda);
  const at::Tensor a = at::randn({n, n}, opts), b = at::randn({n, n}, opts);
  at::Tensor out = at::empty({n, n}, opts);
  for (int i = 0; i < 3; ++i) at::mm_out(out, a, b);
  constexpr int kRepeats = 10;  // one event pair per 10 GEMMs (~15 ms): launch gaps do not count
  double seconds = 0.0;
  for (auto _ : state) {
    cudaEvent_t e0, e1;
    TG_CHECK_CUDA(cudaEventCreate(&e0));
    TG_CHECK_CUDA(cudaEventCreate(&e1));
    TG_CHECK_CUDA(cudaEventRecord(e0, torch_stream()));
    for (int i = 0; i < kRepeats; ++i) at::mm_out(out, a, b);
    TG_CHECK_CUDA(cudaEventRecord(e1, torch_stream()));
    TG_CHECK_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    TG_CHECK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    TG_CHECK_CUDA(cudaEventDestroy(e0));
    TG_CHECK_CUDA(cudaEventDestroy(e1));
    state.SetIterationTime(ms * 1e-3 / kRepeats);
    seconds += ms * 1e-3 / kRepeats;
  }
  const double flops = 2.0 * n * n * n;
  set_measured_ceiling(Ceiling::kBf16Gemm, flops * static_cast<double>(state.iterations()) / seconds);
  set_roofline(state, 0.0, flops, Ceiling::kBf16Gemm);
}

// Errors (tg::Error from the reference, c10::Error from LibTorch, e.g. out of memory) become the benchmark's
// error instead of ending the run.
template <typename Fn>
void guarded(benchmark::State& state, Fn fn) {
  if (skip_without_torch_cuda(state)) return;
  try {
    fn();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    release_slot();
  }
}

void add(const std::string& name, int iterations, std::function<void(benchmark::State&)> fn) {
  benchmark::RegisterBenchmark(name.c_str(), [fn](benchmark::State& st) { guarded(st, [&] { fn(st); }); })
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->Iterations(iterations);
}

const bool registered = [] {
  add_context("torch_version", TORCH_VERSION);
  add_context("reference_attention", ref::sdpa_available() ? "sdpa" : "explicit");
  add("e2e/ceiling/reference/bf16/8192x8192x8192", 20, bm_ceiling);  // 10 GEMMs (~15 ms) each
  // Ordered so that each model is built once: gemma-2b training state, gemma-2b, then gemma-7b.
  const std::vector<Workload> workloads = {
      {Kind::kTrain, "gemma-2b", 4, 2048, 0, 6},      // ~0.3 s per step at HF's speed
      {Kind::kPrefill, "gemma-2b", 8, 2048, 0, 12},   // ~0.14 s
      {Kind::kDecode, "gemma-2b", 1, 128, 256, 2},    // ~1-3 s
      {Kind::kDecode, "gemma-2b", 64, 128, 256, 2},
      {Kind::kPrefill, "gemma-7b", 4, 2048, 0, 6},    // ~0.26 s
      {Kind::kDecode, "gemma-7b", 1, 128, 256, 1},    // ~2-5 s
      {Kind::kDecode, "gemma-7b", 64, 20, 492, 1},    // the TE tutorial's generation benchmark, ~5-10 s
  };
  for (const Workload& w : workloads) {
    add(w.name(), w.iterations, [w](benchmark::State& st) {
      switch (w.kind) {
        case Kind::kTrain: bm_train(st, w); break;
        case Kind::kPrefill: bm_prefill(st, w); break;
        case Kind::kDecode: bm_decode(st, w); break;
      }
    });
  }
  return true;
}();

}  // namespace
}  // namespace tg::bench

TG_BENCH_MAIN()
