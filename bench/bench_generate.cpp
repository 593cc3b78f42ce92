// KV-cached generation end to end (tg::impl::Generator: packed prefill, CUDA-graph decode step, device-side
// greedy selection), random weights of the real gemma-2b and gemma-7b shapes, every precision (issue 7).
//
// Names (Google Benchmark appends /iterations:<n>/manual_time):
//   e2e/decode/impl/<precision>[+fp8kv][+fp8head]/<preset>/B<b>/P<p>+N<n>
//       generate(): prefill of B prompts of P tokens, greedy decode to N new tokens per row, EOS ignored
//       (a) B1/P128+N256 on gemma-2b and gemma-7b: bf16, delayed, current, block, and delayed / current with an
//           FP8 lm_head (+fp8head). Targets (FP8): gemma-2b >= 1200 tok/s, gemma-7b >= 380 tok/s.
//       (b) the TE tutorial's benchmark, gemma-7b B64/P20+N492 (max_seq 512): every precision with the BF16
//           and the FP8 KV cache (+fp8kv), and delayed+fp8kv+fp8head. Target (FP8): <= 2.5 s end to end.
//       (d) small batches, B4, B8 and B16 /P128+N256, delayed + FP8 head: the decode GEMMs of 4-16 rows (GEMVs up
//           to TEGEMMA_DECODE_GEMV_MAX_ROWS, above it the timed GEMV / cuBLASLt choice per shape,
//           impl/generate/decoder.h).
//   e2e/ttft/impl/<precision>/<preset>/B1/P2048
//       (c) time to first token: the prefill of one 2048-token prompt and the first token's selection.
// <precision>: bf16 (BF16 weights and GEMMs) | delayed (DelayedScaling, calibrated on the benchmark's prompts) |
// current (Float8CurrentScaling) | block (Float8BlockScaling 1x128 x 128x128); FP8 precisions run FP8-only weights
// (no BF16 copies, no transposes: the inference configuration); the lm_head is BF16 (the tied embedding) unless
// +fp8head.
//
// Timing: CUDA events on the generator's stream around the whole generate() call (manual time; host work that
// leaves the GPU idle counts), so real_time is the end-to-end latency; the generator's own events split it into
// prefill and decode. The model, its calibration, the KV cache, the graph capture (a short warm-up generation
// per batch size) are set up once per benchmark and never timed; random BF16 master weights are drawn once per
// shape and each engine copies / quantizes them on the device.
//
// Counters (per iteration):
//   tokens_per_second         B * N new tokens / end-to-end seconds (prefill included, as HF's figures)
//   decode_tokens_per_second  B * decode steps / decode seconds (the N - 1 steps after the prefill's token)
//   seconds                   end-to-end seconds of one generate()
//   prefill_ms, per_step_ms   the generator's split (CUDA events)
//   weight_roofline_frac      decode bytes / decode seconds / 4.1 TB/s, decode bytes = per step the weights every
//                             step reads in their stored dtype (layers' linear weights FP8 or BF16, norms BF16,
//                             the lm_head FP8 or BF16, B embedding rows) + the KV cache rows attended (step j of
//                             N - 1 attends P + j positions per row and layer, K and V, 2 or 1 bytes); the same
//                             bytes at 4.1 TB/s give roofline_tokens_per_second (for the decode steps)
//   weight_bytes_per_step     the weight part of the above (bytes)
//   hbm_roofline_frac         = weight_roofline_frac (the counter name every benchmark's roofline goes by)
//   ttft_ms                   (c) the end-to-end time of the generate() of one token
//   target, meets_target      the target where it has one (tok/s for (a), seconds for (b)) and 1 / 0
// Total run time: ~2-4 minutes on an H200, dominated by drawing the gemma-7b master weights and the 8 tutorial runs.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/common/bench_util.h"
#include "common/cuda_check.h"
#include "common/gemma_config.h"
#include "impl/batch.h"
#include "impl/generate/generator.h"
#include "impl/model.h"

namespace tg::bench {
namespace {

struct Variant {
  std::string precision;  // bf16 | delayed | current | block
  bool fp8_head = false;
  std::string key() const { return precision + (fp8_head ? "+fp8head" : ""); }
  bool fp8() const { return precision != "bf16"; }
};

enum class Kind { kDecode, kTtft };

struct Workload {
  Kind kind = Kind::kDecode;
  std::string preset;
  Variant variant;
  bool fp8_kv = false;
  int64_t batch = 1, prompt = 128, new_tokens = 256;
  int iterations = 2;
  double target = 0;  // tok/s (B1 decode) or seconds (tutorial); 0: none
  bool target_is_seconds = false;

  std::string name() const {
    const std::string b = "/B" + std::to_string(batch);
    if (kind == Kind::kTtft) return "e2e/ttft/impl/" + variant.key() + "/" + preset + b + "/P" + std::to_string(prompt);
    std::string prec = variant.precision + (fp8_kv ? "+fp8kv" : "") + (variant.fp8_head ? "+fp8head" : "");
    return "e2e/decode/impl/" + prec + "/" + preset + b + "/P" + std::to_string(prompt) + "+N" +
           std::to_string(new_tokens);
  }
};

std::vector<std::vector<int64_t>> random_prompts(const GemmaConfig& c, int64_t batch, int64_t len, uint64_t seed) {
  std::vector<std::vector<int64_t>> out;
  uint64_t x = seed;
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int64_t> p{c.bos_token_id};
    while (static_cast<int64_t>(p.size()) < len) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      p.push_back(3 + static_cast<int64_t>((x >> 33) % static_cast<uint64_t>(c.vocab_size - 3)));
    }
    out.push_back(std::move(p));
  }
  return out;
}

// Bytes every decode step reads whatever the context: the linear weights as the GEMMs read them, the norms, the
// lm_head's weight and B embedding rows.
double weight_bytes_per_step(const GemmaConfig& c, const Variant& v, int64_t batch) {
  const double d = static_cast<double>(c.hidden_size);
  const double linear = layer_linear_params(c);
  const double layers = static_cast<double>(c.num_hidden_layers);
  const double w = v.fp8() ? 1.0 : 2.0;
  const double head = static_cast<double>(c.vocab_size) * d * (v.fp8_head ? 1.0 : 2.0);
  const double norms = 2.0 * d * (2 * layers + 1);
  return layers * linear * w + head + norms + 2.0 * d * static_cast<double>(batch);
}

// KV cache bytes the N - 1 decode steps read: step j (1..N-1) attends P + j positions of every row and layer.
double kv_bytes_of_decode(const GemmaConfig& c, const Workload& w) {
  const double per_position = static_cast<double>(c.num_hidden_layers) * 2.0 * static_cast<double>(c.kv_dim()) *
                              (w.fp8_kv ? 1.0 : 2.0) * static_cast<double>(w.batch);
  double positions = 0;
  for (int64_t j = 1; j < w.new_tokens; ++j) positions += static_cast<double>(w.prompt + j);
  return per_position * positions;
}

// ---- One model on the GPU at a time, next to its shape's BF16 master weights ---------------------------------
struct Loaded {
  std::string preset;
  std::optional<impl::ModelWeights> master;
  std::string key;  // preset/variant
  std::optional<impl::GemmaForCausalLM> model;
  bool calibrated = false;
  // Wall seconds of the last setup steps (counters setup_*_s: where a decode A/B call's minutes go), 0 when reused.
  double weights_s = 0, model_s = 0;
};
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
Loaded& loaded() {
  static Loaded l;
  return l;
}

impl::GemmaForCausalLM& model_for(const Workload& w) {
  Loaded& l = loaded();
  const std::string key = w.preset + "/" + w.variant.key();
  l.weights_s = l.model_s = 0;
  if (l.key == key) return *l.model;
  l.model.reset();
  l.key.clear();
  l.calibrated = false;
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  const GemmaConfig cfg = GemmaConfig::preset(w.preset);
  if (l.preset != w.preset) {
    l.master.reset();
    impl::WeightOptions mo;
    mo.device = Device::CUDA;
    const auto t0 = std::chrono::steady_clock::now();
    l.master.emplace(impl::random_weights(cfg, 7, mo));
    TG_CHECK_CUDA(cudaDeviceSynchronize());
    l.weights_s = seconds_since(t0);
    l.preset = w.preset;
  }
  const auto t0 = std::chrono::steady_clock::now();
  impl::ModelOptions o;
  o.recipe = impl::Recipe::parse(w.variant.precision);
  o.device = Device::CUDA;
  o.storage = w.variant.fp8() ? impl::WeightStorage::kFp8Only : impl::WeightStorage::kMaster;
  o.fp8_lm_head = w.variant.fp8_head;
  impl::WeightOptions wo;
  wo.device = o.device;
  wo.recipe = o.recipe;
  wo.storage = o.storage;
  wo.fp8_lm_head = o.fp8_lm_head;
  l.model.emplace(impl::copy_weights(*l.master, wo), o);
  l.key = key;
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  l.model_s = seconds_since(t0);
  return *l.model;
}

double ms_between(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  TG_CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
  return ms;
}

void bm_generate(benchmark::State& state, const Workload& w) {
  const GemmaConfig cfg = GemmaConfig::preset(w.preset);
  impl::GemmaForCausalLM& m = model_for(w);
  const auto prompts = random_prompts(cfg, w.batch, w.prompt, 1);
  const int64_t new_tokens = w.kind == Kind::kTtft ? 1 : w.new_tokens;

  impl::GeneratorOptions go;
  go.max_batch = w.batch;
  go.max_seq = w.prompt + new_tokens;
  go.kv_dtype = w.fp8_kv ? DType::E4M3 : DType::BF16;
  impl::Generator g(m, go);
  const auto t_calibrate = std::chrono::steady_clock::now();
  // Calibration (untimed): delayed scaling's GEMM scales (once per model) and the FP8 cache's scales, on prompts
  // of the workload's shape drawn with another seed (at most 8 rows: the amaxes of a representative sample).
  const std::vector<impl::Batch> calib{
      impl::Batch::from_prompts(random_prompts(cfg, std::min<int64_t>(w.batch, 8), w.prompt, 2))};
  if (w.fp8_kv) {
    g.calibrate(calib);  // the model's too (a no-op unless delayed)
    loaded().calibrated = true;
  } else if (!loaded().calibrated) {
    m.calibrate(calib);
    loaded().calibrated = true;
  }

  const double calibrate_s = seconds_since(t_calibrate);
  impl::GenerationConfig gc;
  gc.max_new_tokens = new_tokens;
  gc.ignore_eos = true;
  const auto t_warm = std::chrono::steady_clock::now();
  {
    impl::GenerationConfig warm = gc;  // capture + heuristics + prefill arena (a short run: same batch size)
    warm.max_new_tokens = std::min<int64_t>(new_tokens, 4);
    (void)g.generate(prompts, warm);
  }
  const double warm_s = seconds_since(t_warm);
  const cudaStream_t s = cuda_stream(g.stream());
  double seconds = 0, prefill_ms = 0, decode_ms = 0;
  int64_t steps = 0, produced = 0;
  for (auto _ : state) {
    cudaEvent_t a, b;
    TG_CHECK_CUDA(cudaEventCreate(&a));
    TG_CHECK_CUDA(cudaEventCreate(&b));
    TG_CHECK_CUDA(cudaEventRecord(a, s));
    const impl::GenerationResult r = g.generate(prompts, gc);
    TG_CHECK_CUDA(cudaEventRecord(b, s));
    TG_CHECK_CUDA(cudaEventSynchronize(b));
    const double ms = ms_between(a, b);
    TG_CHECK_CUDA(cudaEventDestroy(a));
    TG_CHECK_CUDA(cudaEventDestroy(b));
    state.SetIterationTime(ms * 1e-3);
    seconds += ms * 1e-3;
    prefill_ms += r.timing.prefill_ms;
    decode_ms += r.timing.decode_ms;
    steps += r.timing.decode_steps;
    produced += r.timing.new_tokens;
  }
  const double iters = static_cast<double>(state.iterations());
  using benchmark::Counter;
  TG_CHECK(produced == static_cast<int64_t>(iters) * w.batch * new_tokens, "bench_generate: ", produced,
           " tokens produced, expected ", static_cast<int64_t>(iters) * w.batch * new_tokens);
  state.counters["seconds"] = seconds / iters;
  state.counters["prefill_ms"] = prefill_ms / iters;
  state.counters["setup_weights_s"] = loaded().weights_s;  // random BF16 masters (0: reused)
  state.counters["setup_model_s"] = loaded().model_s;      // the variant's weights and model (0: reused)
  state.counters["setup_calibrate_s"] = calibrate_s;
  state.counters["setup_warm_s"] = warm_s;  // the short warm-up run: graph capture, heuristics
  state.counters["steps_per_graph"] = static_cast<double>(g.steps_per_graph());  // decode steps per graph replay
  if (w.kind == Kind::kTtft) {
    state.counters["ttft_ms"] = 1e3 * seconds / iters;
    set_tokens(state, static_cast<double>(w.batch * w.prompt));  // prompt tokens per second of the prefill
    return;
  }
  set_tokens(state, static_cast<double>(w.batch * new_tokens));
  const double step_weights = weight_bytes_per_step(cfg, w.variant, w.batch);
  const double decode_bytes = step_weights * static_cast<double>(w.new_tokens - 1) + kv_bytes_of_decode(cfg, w);
  const double decode_s = decode_ms * 1e-3 / iters;
  state.counters["per_step_ms"] = steps > 0 ? decode_ms / static_cast<double>(steps) : 0.0;
  state.counters["decode_tokens_per_second"] =
      decode_s > 0 ? static_cast<double>(w.batch * (w.new_tokens - 1)) / decode_s : 0.0;
  state.counters["weight_roofline_frac"] = decode_s > 0 ? decode_bytes / decode_s / kHbmBytesPerSecond : 0.0;
  state.counters["hbm_roofline_frac"] = state.counters["weight_roofline_frac"];  // the name the report reads
  state.counters["roofline_tokens_per_second"] =
      static_cast<double>(w.batch * (w.new_tokens - 1)) / (decode_bytes / kHbmBytesPerSecond);
  state.counters["weight_bytes_per_step"] = step_weights;
  if (w.target > 0) {
    const double tps = static_cast<double>(w.batch * new_tokens) * iters / seconds;
    state.counters["target"] = w.target;
    state.counters["meets_target"] = w.target_is_seconds ? (seconds / iters <= w.target) : (tps >= w.target);
  }
}

void add(const Workload& w) {
  benchmark::RegisterBenchmark(w.name().c_str(),
                               [w](benchmark::State& st) {
                                 try {
                                   bm_generate(st, w);
                                 } catch (const std::exception& e) {
                                   st.SkipWithError(e.what());
                                   loaded().model.reset();
                                   loaded().key.clear();
                                 }
                               })
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond)
      ->Iterations(w.iterations);
}

const bool registered = [] {
  add_context("generate_timing", "CUDA events around generate() on the generator's stream");
  // Ordered so that each shape's master weights are drawn once and each model is built once.
  const std::vector<Variant> variants = {{"bf16"},          {"delayed"}, {"delayed", true}, {"current"},
                                         {"current", true}, {"block"}};
  for (const std::string preset : {"gemma-2b", "gemma-7b"}) {
    const bool is_7b = preset == "gemma-7b";
    for (const Variant& v : variants) {
      Workload d;  // (a) batch 1
      d.preset = preset;
      d.variant = v;
      d.iterations = is_7b ? 2 : 3;
      if (v.fp8()) d.target = is_7b ? 380 : 1200;
      add(d);
      if (!v.fp8_head) {
        Workload t;  // (c) time to first token
        t.kind = Kind::kTtft;
        t.preset = preset;
        t.variant = v;
        t.prompt = 2048;
        t.new_tokens = 1;
        t.iterations = 5;
        add(t);
      }
      // (d) small batches (a serving step of a few sequences): the decode GEMMs of 4-16 rows, delayed + FP8 head
      if (v.precision == "delayed" && v.fp8_head) {
        for (int64_t batch : {4, 8, 16}) {
          Workload s;
          s.preset = preset;
          s.variant = v;
          s.batch = batch;
          s.iterations = is_7b ? 2 : 3;
          add(s);
        }
      }
      // (b) the TE tutorial's benchmark: every precision with both caches, and the configuration built for its
      // target (delayed scaling, FP8 lm_head, FP8 KV cache) once.
      const bool tutorial_best = v.precision == "delayed" && v.fp8_head;
      if (is_7b && (!v.fp8_head || tutorial_best)) {
        for (bool fp8_kv : {false, true}) {
          if (tutorial_best && !fp8_kv) continue;
          Workload e;
          e.preset = preset;
          e.variant = v;
          e.fp8_kv = fp8_kv;
          e.batch = 64;
          e.prompt = 20;
          e.new_tokens = 492;
          e.iterations = 1;
          if (v.fp8()) {
            e.target = 2.5;
            e.target_is_seconds = true;
          }
          add(e);
        }
      }
    }
  }
  return true;
}();

}  // namespace
}  // namespace tg::bench

TG_BENCH_MAIN()
