// tegemma generate: KV-cached generation with the impl model (impl/generate/generator.h): greedy, sampling or beam
// search on prompts given as text (SentencePiece tokenizer), a file of prompts, or token ids. Streams the text of a
// single sequence to the terminal as it is generated (when stdout is a TTY); otherwise prints each prompt's
// continuation once done. --json prints the token ids, the text and the timing (prefill ms, per-step ms, tokens/s)
// instead.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "common/args.h"
#include "common/check.h"
#include "common/file_io.h"
#include "common/gemma_config.h"
#include "common/progress.h"
#include "common/tokenizer.h"
#include "impl/batch.h"
#include "impl/generate/generator.h"
#include "impl/kv_cache.h"
#include "impl/model.h"
#include "kernels/launch/step_timeline.h"
#include "kernels/provenance.h"

namespace tg::cli {

namespace {


std::vector<std::string> read_prompt_lines(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
    start = end + 1;
  }
  if (lines.empty()) throw UsageError("--prompts " + path + ": no prompts (one per line, empty lines are skipped)");
  return lines;
}

impl::EarlyStopping parse_early_stopping(const std::string& s) {
  if (s == "false") return impl::EarlyStopping::kFalse;
  if (s == "true") return impl::EarlyStopping::kTrue;
  if (s == "never") return impl::EarlyStopping::kNever;
  throw UsageError("--early-stopping: expected false, true or never, got '" + s + "'");
}

}  // namespace

int cmd_generate(Args args) {
  ArgParser p("tegemma generate", "KV-cached generation with the impl model (greedy, sampling, beam search)");
  p.option("model", "HF checkpoint directory (config.json + safetensors; tokenizer.model is used if present)")
      .option("config", "random weights of a preset instead: tiny | small | gemma-2b | gemma-7b")
      .option("weights-seed", "seed of the random weights (--config)", "0")
      .option("layers", "override num_hidden_layers of --config (reduced depth)")
      .option("precision", "bf16 or an FP8 recipe (delayed[:...], current[:...], block[:...])", "bf16")
      .option("storage", "weights: fp8-only (inference, default under FP8) or master (BF16 + FP8 copies)")
      .flag("fp8-lm-head", "run the tied lm_head GEMM in FP8 too")
      .option("kv-cache", "KV cache dtype: bf16 or fp8 (E4M3, one scale per kv head)", "bf16")
      .option("prompt", "one prompt as text (needs a tokenizer)")
      .option("prompts", "a file of text prompts, one per line (needs a tokenizer)")
      .option("tokens", "prompts as token ids: 2,651,9 (one) or 2,651;2,5,7 (several, ';' separated)")
      .option("tokenizer", "SentencePiece tokenizer.model (default: the --model directory's)")
      .flag("no-bos", "text prompts: do not prepend BOS (Gemma's tokenizer adds it)")
      .option("calibrate", "delayed scaling / FP8 KV cache: calibration text file (one prompt per line; default: "
                           "the prompts themselves)")
      .option("max-new-tokens", "new tokens per prompt", "32")
      .option("min-new-tokens", "EOS suppressed until this many new tokens", "0")
      .flag("greedy", "greedy decoding (the default unless a sampling option is given)")
      .option("temperature", "sampling temperature (> 0)")
      .option("top-k", "sampling: keep the k best tokens (0: off; HF's default 50)")
      .option("top-p", "sampling: nucleus mass in [0, 1] (1: off)")
      .option("seed", "sampling seed (Philox key)", "0")
      .option("repetition-penalty", "HF's repetition penalty (> 0; 1: off)", "1")
      .option("num-beams", "beam search with this many beams (1: off)", "1")
      .option("num-return-sequences", "beam search: hypotheses returned per prompt", "1")
      .option("length-penalty", "beam search: score = sum log p / length^this", "1")
      .option("early-stopping", "beam search: false, true or never (HF)", "false")
      .option("eos", "stop token ids, comma separated (default: the model config's)")
      .flag("ignore-eos", "no stop tokens: every prompt generates --max-new-tokens")
      .option("max-seq", "KV cache positions per sequence (default: the longest prompt + --max-new-tokens)")
      .option("max-batch", "KV cache sequence slots (default: prompts x beams)")
      .flag("no-cuda-graph", "launch the decode step eagerly instead of replaying a CUDA graph")
      .option("steps-per-graph", "decode steps per CUDA graph replay, 1-64 (default: TEGEMMA_DECODE_STEPS_PER_GRAPH, "
                                 "else 4)")
      .option("step-timeline", "profiling builds (-DTEGEMMA_STEP_TIMELINE=ON): write every kernel's in-chain start "
                               "times to this JSON file (ci/step_timeline.sh reads it)")
      .option("device", "cpu or cuda", cuda_available() ? "cuda" : "cpu")
      .flag("json", "print ids, text and timing as JSON")
      .flag("quiet", "no progress line on stderr (it is shown only on a TTY, and never while text streams)");
  p.parse(args);
  if (p.help_requested()) {
    std::printf("%s", p.usage().c_str());
    return 0;
  }
  if (p.given("model") == p.given("config")) throw UsageError("give exactly one of --model DIR or --config NAME");
  if (p.given("layers") && !p.given("config")) throw UsageError("--layers applies to --config only");
  const int n_inputs = int{p.given("prompt")} + int{p.given("prompts")} + int{p.given("tokens")};
  if (n_inputs != 1) throw UsageError("give exactly one of --prompt TEXT, --prompts FILE or --tokens IDS");
  const Device device = parse_device(p.get("device"));
  if (device == Device::CUDA && !cuda_available()) {
    throw UsageError("--device cuda: no CUDA device is visible (or this build has no CUDA backend)");
  }
  if (p.given("step-timeline") && !kernels::step_timeline_built()) {
    throw UsageError("--step-timeline: this build records no timeline; configure a profiling build with "
                     "-DTEGEMMA_STEP_TIMELINE=ON (ci/step_timeline.sh does)");
  }
  if (p.given("step-timeline") && device != Device::CUDA) throw UsageError("--step-timeline: needs --device cuda");
  const bool sampling = p.given("temperature") || p.given("top-k") || p.given("top-p");
  if (sampling && p.flag_set("greedy")) throw UsageError("--greedy excludes --temperature, --top-k and --top-p");

  // Tokenizer: explicit, or the checkpoint's.
  std::optional<Tokenizer> tok;
  if (p.given("tokenizer")) {
    tok = Tokenizer::from_file(p.get("tokenizer"));
  } else if (p.given("model") && std::filesystem::exists(std::filesystem::path(p.get("model")) / "tokenizer.model")) {
    tok = Tokenizer::from_file(std::filesystem::path(p.get("model")) / "tokenizer.model");
  }
  EncodeOptions enc;
  enc.add_bos = !p.flag_set("no-bos");
  enc.parse_special = true;
  const auto encode = [&](const std::string& text, const std::string& what) {
    if (!tok) throw UsageError(what + ": text prompts need a tokenizer (--tokenizer FILE, or --model DIR with a "
                                      "tokenizer.model); or give --tokens");
    if (text.empty()) throw UsageError(what + ": empty prompt");
    std::vector<int64_t> ids;
    for (int32_t id : tok->encode(text, enc)) ids.push_back(id);
    if (ids.empty()) throw UsageError(what + ": the prompt encodes to no tokens");
    return ids;
  };
  std::vector<std::vector<int64_t>> prompts;
  std::vector<std::string> texts;
  if (p.given("prompt")) {
    texts.push_back(p.get("prompt"));
    prompts.push_back(encode(texts.back(), "--prompt"));
  } else if (p.given("prompts")) {
    texts = read_prompt_lines(p.get("prompts"));
    for (std::size_t i = 0; i < texts.size(); ++i) {
      prompts.push_back(encode(texts[i], "--prompts line " + std::to_string(i + 1)));
    }
  } else {
    prompts = parse_token_prompts(p.get("tokens"));
  }

  impl::GenerationConfig gc;
  gc.max_new_tokens = p.get_int("max-new-tokens", 1, 1 << 20);
  gc.min_new_tokens = p.get_int("min-new-tokens", 0, 1 << 20);
  gc.do_sample = sampling;
  if (p.given("temperature")) gc.temperature = p.get_double("temperature");
  if (p.given("top-k")) gc.top_k = p.get_int("top-k", 0);
  if (p.given("top-p")) gc.top_p = p.get_double("top-p");
  gc.seed = static_cast<uint64_t>(p.get_int("seed", 0));
  gc.repetition_penalty = p.get_double("repetition-penalty");
  gc.num_beams = p.get_int("num-beams", 1, 64);
  gc.num_return_sequences = p.get_int("num-return-sequences", 1, 64);
  gc.length_penalty = p.get_double("length-penalty");
  gc.early_stopping = parse_early_stopping(p.get("early-stopping"));
  if (p.given("eos")) gc.eos_token_ids = p.get_int_list("eos");
  gc.ignore_eos = p.flag_set("ignore-eos");

  // The model.
  impl::ModelOptions mo;
  mo.recipe = impl::Recipe::parse(p.get("precision"));
  mo.device = device;
  mo.fp8_lm_head = p.flag_set("fp8-lm-head");
  const std::string storage = p.given("storage") ? p.get("storage") : (mo.recipe.is_fp8() ? "fp8-only" : "master");
  if (storage != "master" && storage != "fp8-only") throw UsageError("--storage: expected master or fp8-only");
  mo.storage = storage == "master" ? impl::WeightStorage::kMaster : impl::WeightStorage::kFp8Only;
  const DType kv = impl::parse_kv_cache_dtype(p.get("kv-cache"));
  const auto t_load = Clock::now();
  std::optional<GemmaConfig> random_cfg;
  if (p.given("config")) {
    random_cfg = GemmaConfig::preset(p.get("config"));
    if (p.given("layers")) random_cfg->num_hidden_layers = p.get_int("layers", 1, 1024);
  }
  impl::GemmaForCausalLM m =
      random_cfg ? impl::GemmaForCausalLM::random(*random_cfg, static_cast<uint64_t>(p.get_int("weights-seed", 0)), mo)
                 : impl::GemmaForCausalLM::load(p.get("model"), mo);
  const double load_ms = ms_since(t_load);
  const GemmaConfig& cfg = m.config();
  if (tok && tok->vocab_size() > cfg.vocab_size) {
    throw UsageError("the tokenizer has " + std::to_string(tok->vocab_size()) + " pieces, the model's vocabulary " +
                     std::to_string(cfg.vocab_size));
  }

  std::size_t longest = 0;
  for (const auto& pr : prompts) longest = std::max(longest, pr.size());
  impl::GeneratorOptions go;
  go.max_batch = p.given("max-batch") ? p.get_int("max-batch", 1)
                                      : static_cast<int64_t>(prompts.size()) * std::max<int64_t>(gc.num_beams, 1);
  go.max_seq = p.given("max-seq")
                   ? p.get_int("max-seq", 1)
                   : std::min<int64_t>(cfg.max_position_embeddings, static_cast<int64_t>(longest) + gc.max_new_tokens);
  go.kv_dtype = kv;
  go.cuda_graph = !p.flag_set("no-cuda-graph");
  if (p.given("steps-per-graph")) go.steps_per_graph = p.get_int("steps-per-graph", 1, 64);
  impl::Generator gen(m, go);

  double calibrate_ms = 0;
  if (mo.recipe.kind == impl::RecipeKind::kDelayed || kv == DType::E4M3) {
    const auto t = Clock::now();
    std::vector<std::vector<int64_t>> calib = prompts;
    if (p.given("calibrate")) {
      calib.clear();
      const auto lines = read_prompt_lines(p.get("calibrate"));
      for (std::size_t i = 0; i < lines.size(); ++i) calib.push_back(encode(lines[i], "--calibrate line " + std::to_string(i + 1)));
    }
    for (const auto& c : calib) {
      for (int64_t id : c) {
        if (id < 0 || id >= cfg.vocab_size) {
          throw UsageError("a prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                           std::to_string(cfg.vocab_size) + ")");
        }
      }
    }
    gen.calibrate({impl::Batch::from_prompts(calib)});
    calibrate_ms = ms_since(t);
  } else if (p.given("calibrate")) {
    throw UsageError("--calibrate applies to the delayed recipe and the FP8 KV cache only");
  }

  // Streaming: one sequence, a TTY, text mode.
  const bool json = p.flag_set("json");
  const bool stream = !json && tok && isatty(fileno(stdout)) && prompts.size() == 1 && gc.num_beams == 1;
  std::optional<StreamDecoder> sd;
  if (stream) {
    sd.emplace(*tok);
    std::printf("%s", texts.empty() ? "" : texts[0].c_str());
    std::fflush(stdout);
  }
  // Progress (tokens, tok/s, ETA) on a TTY's stderr unless --quiet or the text itself streams to the terminal.
  const int64_t rows = static_cast<int64_t>(prompts.size()) * (gc.num_beams > 1 ? gc.num_return_sequences : 1);
  Progress progress("generate", rows * gc.max_new_tokens, p.flag_set("quiet") || stream);
  int64_t produced = 0;
  const impl::TokenCallback on_token = [&](int64_t, int32_t t) {
    if (progress.enabled()) {
      ++produced;
      const double s = progress.elapsed_seconds();
      char status[64];
      std::snprintf(status, sizeof status, "%.1f tok/s", s > 0 ? static_cast<double>(produced) / s : 0.0);
      progress.update(produced, status);
    }
    if (!sd) return;
    std::printf("%s", sd->push(t).c_str());
    std::fflush(stdout);
  };
  std::optional<kernels::StepTimeline> timeline;
  if (p.given("step-timeline")) timeline.emplace();
  const impl::GenerationResult r = gen.generate(prompts, gc, on_token);
  if (timeline) timeline->write_json(p.get("step-timeline"));
  progress.finish();
  if (sd) std::printf("%s\n", sd->finish().c_str());

  const auto text_of = [&](const std::vector<int64_t>& ids) {
    std::vector<int32_t> v(ids.begin(), ids.end());
    return tok ? tok->decode(v) : std::string();
  };
  const impl::GenerationTiming& tm = r.timing;
  nlohmann::json j;
  j["model"] = p.given("model") ? p.get("model") : "random:" + p.get("config");
  j["device"] = device == Device::CUDA ? "cuda" : "cpu";
  j["precision"] = mo.recipe.to_string();
  j["storage"] = impl::weight_storage_name(mo.storage);
  j["fp8_lm_head"] = mo.fp8_lm_head;
  j["kv_cache"] = p.get("kv-cache");
  j["cuda_graph"] = gen.uses_graphs();
  j["mode"] = gc.num_beams > 1 ? "beam" : (gc.do_sample ? "sample" : "greedy");
  nlohmann::json outs = nlohmann::json::array();
  const int64_t per_prompt = gc.num_beams > 1 ? gc.num_return_sequences : 1;
  for (std::size_t i = 0; i < r.tokens.size(); ++i) {
    nlohmann::json o;
    o["prompt_index"] = static_cast<int64_t>(i) / per_prompt;
    o["prompt_tokens"] = prompts[i / static_cast<std::size_t>(per_prompt)];
    o["tokens"] = r.tokens[i];
    if (tok) o["text"] = text_of(r.tokens[i]);
    if (!r.scores.empty()) o["score"] = r.scores[i];
    outs.push_back(o);
  }
  j["outputs"] = outs;
  j["timing"] = {{"load_ms", load_ms},
                 {"calibrate_ms", calibrate_ms},
                 {"prefill_ms", tm.prefill_ms},
                 {"decode_ms", tm.decode_ms},
                 {"decode_steps", tm.decode_steps},
                 {"per_token_ms", tm.per_step_ms()},
                 {"new_tokens", tm.new_tokens},
                 {"tokens_per_second", tm.tokens_per_second()}};
  j["kv_cache_bytes"] = gen.cache().bytes();
  j["weights_bytes"] = m.weights().bytes();
  if (json) {
    j["provenance"] = kernels::provenance();
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  if (!stream) {
    for (std::size_t i = 0; i < r.tokens.size(); ++i) {
      std::printf("[%zu] ", i);
      if (tok) {
        std::printf("%s\n", text_of(r.tokens[i]).c_str());
      } else {
        for (std::size_t k = 0; k < r.tokens[i].size(); ++k) {
          std::printf("%s%lld", k ? "," : "", static_cast<long long>(r.tokens[i][k]));
        }
        std::printf("\n");
      }
    }
  }
  std::fprintf(stderr, "tegemma generate: %s, %s KV cache, %zu prompt(s): prefill %.1f ms, %lld steps x %.2f ms, %.1f tok/s\n",
               mo.recipe.to_string().c_str(), p.get("kv-cache").c_str(), prompts.size(), tm.prefill_ms,
               static_cast<long long>(tm.decode_steps), tm.per_step_ms(), tm.tokens_per_second());
  return 0;
}

}  // namespace tg::cli
