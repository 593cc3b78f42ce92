// Prefill throughput of the whole model: the impl (tg::impl::GemmaForCausalLM) in BF16 and under each FP8
// recipe, beside the LibTorch reference (tg::ref::Engine, BF16, SDPA attention where LibTorch has it) in the
// same binary. Random weights at full depth; logits of the last position of each sequence only (generation's
// prefill, HF logits_to_keep=1).
//
// Benchmark names: model/<shape>/<engine>/<B>x<S>, engine one of
//   reference     LibTorch BF16 (registered first per shape: the later ones report speedup_vs_reference)
//   impl_bf16     BF16 GEMMs (cuBLASLt), cuDNN attention, fused norms
//   impl_delayed  FP8 DelayedScaling, calibrated once on the benchmark batch, FP8-only weights
//   impl_current  FP8 Float8CurrentScaling, FP8-only weights
//   impl_block    FP8 Float8BlockScaling (1x128 x 128x128), FP8-only weights
// Shapes (issue 5): gemma-2b at B=8, S=2048 and gemma-7b at B=4, S=2048 (16384 and 8192 tokens).
// Counters: tokens_per_second; flops (model FLOP/s: every GEMM incl. the lm_head rows, plus causal attention)
// and gemm_roofline_frac against the BF16 or FP8 GEMM ceiling measured in this run (8192^3 through
// kernels/gemm, benchmarks model/ceiling_*); speedup_vs_reference; weights_gib and arena_gib (impl memory);
// sdpa (1 when the reference used at::scaled_dot_product_attention).
// Targets: impl_bf16 >= 1.0x reference; impl_delayed and impl_current >= 1.6x reference.
//
// One model lives on the GPU at a time (7B in BF16 is 17 GB), next to the shape's BF16 master weights: those are
// generated once per shape (host-side random init, the slow part) and each impl engine copies them on the device
// and quantizes for its recipe. Nothing of the setup is timed.
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/common/bench_util.h"
#include "common/cuda_check.h"
#include "common/gemma_config.h"
#include "impl/batch.h"
#include "impl/model.h"
#if TEGEMMA_BENCH_TORCH
#include "reference/engine.h"
#endif

namespace tg::bench {
namespace {

struct Workload {
  std::string preset;
  int64_t batch, seqlen;
  int64_t tokens() const { return batch * seqlen; }
  std::string str() const { return preset + "/" + std::to_string(batch) + "x" + std::to_string(seqlen); }
};

// FLOPs of one prefill: the linear layers over every token, causal attention (QK^T and PV, half the square),
// and the lm_head over the B last rows.
double model_flops(const GemmaConfig& c, const Workload& w) {
  const double t = static_cast<double>(w.tokens()), d = static_cast<double>(c.hidden_size);
  const double per_layer_linear = 2.0 * t * layer_linear_params(c);
  const double per_layer_attn =
      layer_attention_flops(c, static_cast<double>(w.batch), causal_pairs(static_cast<double>(w.seqlen)));
  const double lm_head = 2.0 * static_cast<double>(w.batch) * d * static_cast<double>(c.vocab_size);
  return static_cast<double>(c.num_hidden_layers) * (per_layer_linear + per_layer_attn) + lm_head;
}

std::vector<std::vector<int64_t>> prompts(const GemmaConfig& c, const Workload& w, uint64_t seed) {
  std::vector<std::vector<int64_t>> out;
  uint64_t x = seed;
  for (int64_t b = 0; b < w.batch; ++b) {
    std::vector<int64_t> p{c.bos_token_id};
    while (static_cast<int64_t>(p.size()) < w.seqlen) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      p.push_back(3 + static_cast<int64_t>((x >> 33) % static_cast<uint64_t>(c.vocab_size - 3)));
    }
    out.push_back(std::move(p));
  }
  return out;
}

// ---- The one model on the GPU -------------------------------------------------------------------------------
struct Loaded {
  std::string master_key;  // the workload whose master weights are cached
  std::optional<impl::ModelWeights> master;
  std::string key;  // "<workload>/<engine>"
  std::optional<impl::GemmaForCausalLM> impl;
#if TEGEMMA_BENCH_TORCH
  std::optional<ref::Engine> ref;
#endif
};
Loaded& loaded() {
  static Loaded l;
  return l;
}
void drop_loaded() {
  loaded().impl.reset();
#if TEGEMMA_BENCH_TORCH
  loaded().ref.reset();
#endif
  loaded().key.clear();
  TG_CHECK_CUDA(cudaDeviceSynchronize());
}

std::map<std::string, double>& reference_tokens_per_second() {
  static std::map<std::string, double> m;
  return m;
}

void report(benchmark::State& state, const GemmaConfig& cfg, const Workload& w, Ceiling ceiling, double seconds,
            const std::string& engine) {
  set_tokens(state, static_cast<double>(w.tokens()));
  set_roofline(state, 0.0, model_flops(cfg, w), ceiling);
  const double tps = static_cast<double>(w.tokens()) * static_cast<double>(state.iterations()) / seconds;
  if (engine == "reference") {
    reference_tokens_per_second()[w.str()] = tps;
  } else if (auto it = reference_tokens_per_second().find(w.str()); it != reference_tokens_per_second().end()) {
    state.counters["speedup_vs_reference"] = tps / it->second;
  }
}

void bm_impl(benchmark::State& state, Workload w, std::string recipe) {
  if (!cuda_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const std::string key = w.str() + "/" + recipe;
  const GemmaConfig cfg = GemmaConfig::preset(w.preset);
  const impl::Batch batch = impl::Batch::from_prompts(prompts(cfg, w, 1));
  impl::ForwardOptions fo;  // logits of the last position of each sequence
  if (loaded().key != key) {
    drop_loaded();
    impl::ModelOptions o;
    o.recipe = impl::Recipe::parse(recipe);
    o.device = Device::CUDA;
    // Inference: FP8 recipes keep FP8-only weights (no BF16 copies, no transposes).
    o.storage = o.recipe.is_fp8() ? impl::WeightStorage::kFp8Only : impl::WeightStorage::kMaster;
    if (loaded().master_key != w.str()) {
      loaded().master.reset();
      impl::WeightOptions mo;
      mo.device = Device::CUDA;
      loaded().master.emplace(impl::random_weights(cfg, 7, mo));
      loaded().master_key = w.str();
    }
    impl::WeightOptions wo;
    wo.device = o.device;
    wo.recipe = o.recipe;
    wo.storage = o.storage;
    loaded().impl.emplace(impl::copy_weights(*loaded().master, wo), o);
    loaded().key = key;
    impl::GemmaForCausalLM& m = *loaded().impl;
    if (o.recipe.kind == impl::RecipeKind::kDelayed) m.calibrate({batch});
    m.reserve(w.tokens(), w.batch, fo);
    m.forward(batch, fo);  // warm-up: arena, cuDNN plans, GEMM heuristics
    TG_CHECK_CUDA(cudaDeviceSynchronize());
  }
  impl::GemmaForCausalLM& m = *loaded().impl;
  double seconds = 0;
  for (auto _ : state) {
    cudaEvent_t a, b;
    TG_CHECK_CUDA(cudaEventCreate(&a));
    TG_CHECK_CUDA(cudaEventCreate(&b));
    TG_CHECK_CUDA(cudaEventRecord(a, nullptr));
    m.forward(batch, fo);
    TG_CHECK_CUDA(cudaEventRecord(b, nullptr));
    TG_CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    TG_CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    TG_CHECK_CUDA(cudaEventDestroy(a));
    TG_CHECK_CUDA(cudaEventDestroy(b));
    state.SetIterationTime(ms * 1e-3);
    seconds += ms * 1e-3;
  }
  const bool fp8 = impl::Recipe::parse(recipe).is_fp8();
  report(state, cfg, w, fp8 ? Ceiling::kFp8Gemm : Ceiling::kBf16Gemm, seconds, "impl");
  state.counters["weights_gib"] = static_cast<double>(m.weights().bytes()) / (1ull << 30);
  state.counters["arena_gib"] = static_cast<double>(m.arena_bytes()) / (1ull << 30);
}

#if TEGEMMA_BENCH_TORCH
void bm_reference(benchmark::State& state, Workload w) {
  if (!cuda_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const std::string key = w.str() + "/reference";
  const GemmaConfig cfg = GemmaConfig::preset(w.preset);
  auto ps = prompts(cfg, w, 1);
  std::vector<int64_t> ids;
  for (const auto& p : ps) ids.insert(ids.end(), p.begin(), p.end());
  ref::ForwardRequest req;
  req.input_ids = TensorView(ids.data(), DType::I64, Shape{w.batch, w.seqlen}, Device::CPU);
  req.last_position_only = true;
  try {
    if (loaded().key != key) {
      drop_loaded();
      loaded().master.reset();  // another shape's (or this shape's, built after the reference) weights
      loaded().master_key.clear();
      ref::EngineOptions o;
      o.dtype = DType::BF16;
      o.device = Device::CUDA;
      o.attention = ref::AttentionImpl::Sdpa;  // the fastest reference path (LibTorch >= 2.1)
      ref::RandomInit init;  // HF's init drawn on the GPU: seconds, where the FP32 CPU draw of 2.5B took ~27 s
      init.on_device = true;
      try {
        loaded().ref.emplace(ref::Engine::random(cfg, 7, o, init));
        (void)loaded().ref->forward(req);  // warm-up
      } catch (const Error&) {             // no SDPA in this LibTorch: HF's eager path
        loaded().ref.reset();
        o.attention = ref::AttentionImpl::Explicit;
        loaded().ref.emplace(ref::Engine::random(cfg, 7, o, init));
        (void)loaded().ref->forward(req);
      }
      loaded().key = key;
    }
  } catch (const Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  const ref::Engine& e = *loaded().ref;
  double seconds = 0;
  for (auto _ : state) {
    cudaEvent_t a, b;
    TG_CHECK_CUDA(cudaEventCreate(&a));
    TG_CHECK_CUDA(cudaEventCreate(&b));
    TG_CHECK_CUDA(cudaEventRecord(a, nullptr));
    (void)e.forward(req);  // ends with the [B, 1, V] logits copied to the host (small)
    TG_CHECK_CUDA(cudaEventRecord(b, nullptr));
    TG_CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    TG_CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    TG_CHECK_CUDA(cudaEventDestroy(a));
    TG_CHECK_CUDA(cudaEventDestroy(b));
    state.SetIterationTime(ms * 1e-3);
    seconds += ms * 1e-3;
  }
  report(state, cfg, w, Ceiling::kBf16Gemm, seconds, "reference");
  state.counters["sdpa"] = e.options().attention == ref::AttentionImpl::Sdpa ? 1 : 0;
}
#endif

void add(const std::string& name, auto fn) {
  benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.5);
}

const bool registered = [] {
  // The GEMM ceilings of this run (bench/common: 8192^3 through kernels/gemm), registered first.
  add("model/ceiling_bf16/8192x8192x8192", [](benchmark::State& st) { bm_gemm_ceiling(st, Ceiling::kBf16Gemm); });
  add("model/ceiling_fp8/8192x8192x8192", [](benchmark::State& st) { bm_gemm_ceiling(st, Ceiling::kFp8Gemm); });
  for (const Workload& w : {Workload{"gemma-2b", 8, 2048}, Workload{"gemma-7b", 4, 2048}}) {
#if TEGEMMA_BENCH_TORCH
    add("model/" + w.preset + "/reference/" + std::to_string(w.batch) + "x" + std::to_string(w.seqlen),
        [=](benchmark::State& st) { bm_reference(st, w); });
#endif
    for (const char* recipe : {"bf16", "delayed", "current", "block"}) {
      add("model/" + w.preset + "/impl_" + recipe + "/" + std::to_string(w.batch) + "x" + std::to_string(w.seqlen),
          [=](benchmark::State& st) { bm_impl(st, w, recipe); });
    }
  }
  return true;
}();

}  // namespace
}  // namespace tg::bench

TG_BENCH_MAIN()
