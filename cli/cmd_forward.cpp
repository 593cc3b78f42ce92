// tegemma forward: one forward pass of the impl model (or the LibTorch reference) on token ids; writes the
// logits as a float32 .npy and prints a summary (top-5 of each prompt's last position, shapes, timing,
// provenance), as JSON with --json.
//
// Random models (--config) always take the impl's seeded weights; with --engine reference they are handed
// to the reference through a temporary HF checkpoint, so both engines see the same weights for a seed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "cli/cli_util.h"
#include "cli/commands.h"
#include "common/args.h"
#include "common/check.h"
#include "common/gemma_config.h"
#include "common/npy.h"
#include "impl/batch.h"
#include "impl/model.h"
#include "kernels/provenance.h"
#if TEGEMMA_HAVE_TORCH
#include "reference/engine.h"
#endif

namespace tg::cli {

namespace {

struct Top {
  int64_t id;
  float logit;
  double prob;
};
std::vector<Top> top5(const float* row, int64_t vocab) {
  double m = -INFINITY, s = 0;
  for (int64_t i = 0; i < vocab; ++i) m = std::max(m, static_cast<double>(row[i]));
  for (int64_t i = 0; i < vocab; ++i) s += std::exp(row[i] - m);
  std::vector<int64_t> idx(static_cast<std::size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  const int64_t k = std::min<int64_t>(5, vocab);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int64_t a, int64_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
  std::vector<Top> out;
  for (int64_t i = 0; i < k; ++i) {
    out.push_back({idx[static_cast<std::size_t>(i)], row[idx[static_cast<std::size_t>(i)]],
                   std::exp(row[idx[static_cast<std::size_t>(i)]] - m) / s});
  }
  return out;
}

}  // namespace

int cmd_forward(Args args) {
  ArgParser p("tegemma forward", "one forward pass on token ids: logits (.npy) and a summary");
  p.option("model", "HF checkpoint directory (config.json + safetensors)")
      .option("config", "random weights of a preset instead: tiny | small | gemma-2b | gemma-7b")
      .option("seed", "seed of the random weights (--config)", "0")
      .option("layers", "override num_hidden_layers of --config (reduced depth)")
      .option("precision",
              "bf16 or an FP8 recipe (delayed[:...], current[:...], block[:...]); the reference "
              "also takes f32",
              "bf16")
      .option("tokens", "token ids: 2,651,9 (one prompt) or 2,651;2,5,7 (prompts separated by ';')", "", true)
      .option("logits", "last (each prompt's last position: [B, V]) or all (every token, packed: [T, V])", "last")
      .option("dump-logits", "write the logits as a float32 .npy here")
      .option("device", "cpu or cuda", cuda_available() ? "cuda" : "cpu")
      .option("engine", "impl or reference (the LibTorch oracle)", "impl")
      .option("storage", "impl weights: master (BF16 + FP8 copies) or fp8-only (inference)", "master")
      .option("calibrate-tokens",
              "delayed scaling: calibrate on these prompts (same syntax as --tokens); "
              "default: the --tokens prompts themselves")
      .option("save", "also write the (impl) model as an HF checkpoint directory here")
      .flag("fp8-lm-head", "run the tied lm_head GEMM in FP8 too")
      .flag("json", "print the summary as JSON");
  p.parse(args);
  if (p.help_requested()) {
    std::printf("%s", p.usage().c_str());
    return 0;
  }
  if (p.given("model") == p.given("config")) throw UsageError("give exactly one of --model DIR or --config NAME");
  if (p.given("layers") && !p.given("config")) throw UsageError("--layers applies to --config only");
  const std::string engine = p.get("engine");
  if (engine != "impl" && engine != "reference")
    throw UsageError("--engine: expected impl or reference, got '" + engine + "'");
  const std::string logits_mode = p.get("logits");
  if (logits_mode != "last" && logits_mode != "all")
    throw UsageError("--logits: expected last or all, got '" + logits_mode + "'");
  const bool all = logits_mode == "all";
  const Device device = parse_device(p.get("device"));
  if (device == Device::CUDA && !cuda_available()) {
    throw UsageError("--device cuda: no CUDA device is visible (or this build has no CUDA backend)");
  }
  const auto prompts = parse_token_prompts(p.get("tokens"));
  const std::string precision = p.get("precision");

  const auto t_load = Clock::now();
  std::optional<GemmaConfig> random_cfg;
  if (p.given("config")) {
    random_cfg = GemmaConfig::preset(p.get("config"));
    if (p.given("layers")) random_cfg->num_hidden_layers = p.get_int("layers", 1, 1024);
  }
  const uint64_t seed = static_cast<uint64_t>(p.get_int("seed", 0));

  nlohmann::json j;
  j["engine"] = engine;
  j["device"] = device == Device::CUDA ? "cuda" : "cpu";
  j["model"] = p.given("model") ? p.get("model") : "random:" + p.get("config") + ":seed=" + std::to_string(seed);
  Tensor logits;  // host F32 [rows, V]
  std::vector<int64_t> last_rows;
  GemmaConfig cfg;
  double load_ms = 0, calibrate_ms = 0, forward_ms = 0;

  if (engine == "impl") {
    impl::ModelOptions o;
    o.recipe = impl::Recipe::parse(precision);
    o.device = device;
    o.fp8_lm_head = p.flag_set("fp8-lm-head");
    const std::string storage = p.get("storage");
    if (storage != "master" && storage != "fp8-only") throw UsageError("--storage: expected master or fp8-only");
    o.storage = storage == "master" ? impl::WeightStorage::kMaster : impl::WeightStorage::kFp8Only;
    impl::GemmaForCausalLM m = random_cfg ? impl::GemmaForCausalLM::random(*random_cfg, seed, o)
                                          : impl::GemmaForCausalLM::load(p.get("model"), o);
    load_ms = ms_since(t_load);
    cfg = m.config();
    if (p.given("save")) m.save(p.get("save"));
    if (o.recipe.kind == impl::RecipeKind::kDelayed) {
      const auto t = Clock::now();
      const auto calib = p.given("calibrate-tokens") ? parse_token_prompts(p.get("calibrate-tokens")) : prompts;
      m.calibrate({impl::Batch::from_prompts(calib)});
      calibrate_ms = ms_since(t);
      j["calibration_prompts"] = calib.size();
    } else if (p.given("calibrate-tokens")) {
      throw UsageError("--calibrate-tokens applies to the delayed recipe only");
    }
    const impl::Batch batch = impl::Batch::from_prompts(prompts);
    impl::ForwardOptions fo;
    fo.logits = all ? impl::LogitsMode::kAll : impl::LogitsMode::kLastPerSequence;
    const auto t = Clock::now();
    impl::ForwardOutput out = m.run(batch, fo);
    forward_ms = ms_since(t);
    logits = std::move(out.logits);
    for (int64_t b = 0; b < batch.num_sequences(); ++b) {
      last_rows.push_back(all ? batch.cu_seqlens[static_cast<std::size_t>(b + 1)] - 1 : b);
    }
    j["precision"] = o.recipe.to_string();
    j["storage"] = impl::weight_storage_name(o.storage);
    j["fp8_lm_head"] = o.fp8_lm_head;
    j["weights_bytes"] = m.weights().bytes();
    j["arena_bytes"] = m.arena_bytes();
    if (o.recipe.kind == impl::RecipeKind::kDelayed) j["calibrated"] = m.precision().calibrated();
  } else {
#if TEGEMMA_HAVE_TORCH
    if (precision != "bf16" && precision != "f32") {
      throw UsageError("--engine reference runs bf16 or f32 only, got --precision '" + precision + "'");
    }
    if (p.flag_set("fp8-lm-head") || p.get("storage") != "master" || p.given("calibrate-tokens")) {
      throw UsageError("--fp8-lm-head, --storage and --calibrate-tokens apply to --engine impl only");
    }
    std::filesystem::path dir = p.given("model") ? std::filesystem::path(p.get("model")) : std::filesystem::path();
    std::filesystem::path temp;
    if (random_cfg) {  // the impl's seeded weights, through a temporary HF checkpoint
      temp = std::filesystem::temp_directory_path() / ("tegemma_forward_" + std::to_string(::getpid()));
      impl::GemmaForCausalLM::random(*random_cfg, seed, impl::ModelOptions{}).save(temp);
      dir = temp;
    }
    if (p.given("save")) throw UsageError("--save applies to --engine impl only");
    ref::EngineOptions ro;
    ro.dtype = precision == "f32" ? DType::F32 : DType::BF16;
    ro.device = device;
    const ref::Engine e = ref::Engine::load(dir, ro);
    if (!temp.empty()) tg::remove_tree(temp);
    load_ms = ms_since(t_load);
    cfg = e.config();
    const int64_t v = cfg.vocab_size;
    std::vector<float> rows;
    const auto t = Clock::now();
    for (const auto& prompt : prompts) {
      std::vector<int64_t> ids = prompt;
      ref::ForwardRequest req;
      req.input_ids = TensorView(ids.data(), DType::I64, Shape{1, static_cast<int64_t>(ids.size())}, Device::CPU);
      req.last_position_only = !all;
      const ref::ForwardResult r = e.forward(req);
      rows.insert(rows.end(), r.logits.ptr<float>(), r.logits.ptr<float>() + r.logits.numel());
      last_rows.push_back(static_cast<int64_t>(rows.size()) / v - 1);
    }
    forward_ms = ms_since(t);
    logits = Tensor::empty(DType::F32, {static_cast<int64_t>(rows.size()) / v, v});
    std::copy(rows.begin(), rows.end(), logits.ptr<float>());
    j["precision"] = precision;
#else
    throw UsageError("--engine reference: this build has no LibTorch (configure with TEGEMMA_TORCH=ON)");
#endif
  }

  const int64_t vocab = logits.shape()[1];
  if (p.given("dump-logits")) {
    write_npy_f32(p.get("dump-logits"), {logits.ptr<float>(), static_cast<std::size_t>(logits.numel())},
                  logits.shape());
    j["dump_logits"] = p.get("dump-logits");
  }
  int64_t tokens = 0;
  for (const auto& pr : prompts) tokens += static_cast<int64_t>(pr.size());
  j["config"] = {{"vocab_size", cfg.vocab_size},
                 {"hidden_size", cfg.hidden_size},
                 {"intermediate_size", cfg.intermediate_size},
                 {"num_hidden_layers", cfg.num_hidden_layers},
                 {"num_attention_heads", cfg.num_attention_heads},
                 {"num_key_value_heads", cfg.num_key_value_heads},
                 {"head_dim", cfg.head_dim}};
  j["num_prompts"] = prompts.size();
  j["num_tokens"] = tokens;
  j["logits"] = logits_mode;
  j["logits_shape"] = logits.shape().vec();
  j["timing_ms"] = {{"load", load_ms}, {"calibrate", calibrate_ms}, {"forward", forward_ms}};
  j["tokens_per_second"] = forward_ms > 0 ? 1000.0 * static_cast<double>(tokens) / forward_ms : 0.0;
  nlohmann::json tops = nlohmann::json::array();
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    nlohmann::json row = nlohmann::json::array();
    for (const Top& t : top5(logits.ptr<float>() + last_rows[b] * vocab, vocab)) {
      row.push_back({{"id", t.id}, {"logit", t.logit}, {"prob", t.prob}});
    }
    tops.push_back(row);
  }
  j["top5_last"] = tops;
  j["provenance"] = kernels::provenance();

  if (p.flag_set("json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("tegemma forward: %s %s on %s, %s\n", engine.c_str(), j["precision"].get<std::string>().c_str(),
              j["device"].get<std::string>().c_str(), j["model"].get<std::string>().c_str());
  std::printf("  %zu prompt(s), %lld tokens -> logits [%lld, %lld] (%s)\n", prompts.size(),
              static_cast<long long>(tokens), static_cast<long long>(logits.shape()[0]), static_cast<long long>(vocab),
              logits_mode.c_str());
  std::printf("  load %.1f ms, calibrate %.1f ms, forward %.1f ms\n", load_ms, calibrate_ms, forward_ms);
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    std::printf("  prompt %zu top-5:", b);
    for (const Top& t : top5(logits.ptr<float>() + last_rows[b] * vocab, vocab)) {
      std::printf(" %lld (%.4f)", static_cast<long long>(t.id), t.prob);
    }
    std::printf("\n");
  }
  if (p.given("dump-logits")) std::printf("  logits written to %s\n", p.get("dump-logits").c_str());
  return 0;
}

}  // namespace tg::cli
