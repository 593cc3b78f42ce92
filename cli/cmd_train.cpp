// tegemma train: train the impl model (BF16 or an FP8 recipe) or the LibTorch reference (the oracle) on a token
// file, with the same initial weights and the same data order for both, so their loss curves compare step by
// step (tegemma parity --loss-curves reads the logs this writes).
//
// Output directory (--out):
//   train.jsonl     one JSON object per step: {"step", "loss", "grad_norm", "clip_coef", "lr", "tokens",
//                   "tokens_per_s", "skipped", "engine", "recipe" (the kind: bf16 | delayed | current | block),
//                   "num_params", "init_seed" (random init only)} (+ "fp8": scale/amax of a few tensors under an
//                   FP8 recipe), and {"step", "val_loss", "engine", "recipe"} every --val-every steps ("step" is
//                   the 0-based step just finished; a validation record follows its step's record)
//   run.json        the run: arguments, model config, data, provenance; at the end the summary
//   checkpoints/    impl only: step-NNNNNNNN/ (impl/trainer.h: HF weights + optimizer + scaling state + data
//                   position, per-tensor checksums), `latest`; every --ckpt-every steps, at the end, on Ctrl-C
//   init/           --engine reference: the initial weights handed to the reference (an HF checkpoint)
//   final/          --engine reference: the trained weights (BF16 HF checkpoint)
// Initial weights: --init DIR (an HF checkpoint: fine-tuning) or the impl's seeded random init (--init-seed,
// default --seed; another --init-seed with the same --seed is the run-to-run noise run of ci/train_curves.sh); the
// reference gets the same weights through init/ (the two engines' random generators differ).
// Data order: BatchSampler(seed, batch, seq) of common/data.h; step k uses micro-batches k*A .. k*A+A-1 (A =
// --grad-accum), so a resumed run continues the exact order. The reference sees each window of S+1 tokens as
// input_ids (HF shifts the labels), the impl sees its first S tokens with the next-token targets: the same loss.
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "common/args.h"
#include "common/check.h"
#include "common/data.h"
#include "common/file_io.h"
#include "common/gemma_config.h"
#include "common/progress.h"
#include "impl/model.h"
#include "impl/trainer.h"
#include "kernels/gemm/gemm.h"
#include "kernels/provenance.h"
#if TEGEMMA_HAVE_TORCH
#include "reference/engine.h"
#endif

namespace tg::cli {

namespace {

namespace fs = std::filesystem;

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted.store(true); }

// A preset name, or a config.json file (or an HF directory holding one).
GemmaConfig config_from(const std::string& s) {
  for (const std::string& n : GemmaConfig::preset_names()) {
    if (s == n) return GemmaConfig::preset(s);
  }
  fs::path p(s);
  if (fs::is_directory(p)) p /= "config.json";
  if (!fs::exists(p)) {
    std::string names;
    for (const std::string& n : GemmaConfig::preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw UsageError("--config: '" + s + "' is neither a preset (" + names + ") nor a config.json file");
  }
  return GemmaConfig::from_file(p);
}

// The training log: appended line by line and flushed, so a crash loses at most the line being written.
class JsonLog {
 public:
  explicit JsonLog(const fs::path& path) : out_(path, std::ios::app) {
    TG_CHECK(out_.good(), "cannot open ", path.string(), " for appending");
  }
  void write(const nlohmann::json& j) {
    out_ << j.dump() << '\n';
    out_.flush();
  }

 private:
  std::ofstream out_;
};

// Keeps the records of train.jsonl with step < `keep` (a resumed run repeats the steps after its checkpoint).
void truncate_log(const fs::path& path, int64_t keep) {
  if (!fs::exists(path)) return;
  std::istringstream in(read_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() < keep) {
      kept += line + "\n";
    }
  }
  write_file_atomic(path, kept);
}

std::string status_line(double loss, double tokens_per_s, bool skipped) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "loss %.4f | %s tok/s%s", loss, Progress::format_rate(tokens_per_s).c_str(),
                skipped ? " | SKIPPED (non-finite gradient)" : "");
  return buf;
}

}  // namespace

int cmd_train(Args args) {
  ArgParser p("tegemma train", "train the impl model (BF16 or an FP8 recipe) or the LibTorch reference on a token file");
  p.option("config", "model shape: tiny | small | gemma-2b | gemma-7b | a config.json (random init, --seed)")
      .option("init", "fine-tune: start from this HF checkpoint directory instead of a random init")
      .option("layers", "override num_hidden_layers of --config")
      .option("precision", "bf16 or an FP8 recipe: delayed[:...] | current[:...] | block[:...] (impl)", "bf16")
      .option("engine", "impl or reference (the LibTorch oracle: bf16)", "impl")
      .option("device", "cpu or cuda", cuda_available() ? "cuda" : "cpu")
      .option("data", "token file (tegemma prepare-data)", "assets/fortunes/tokens-512.bin")
      .option("steps", "optimizer steps (the schedule's length)", "", true)
      .option("batch", "sequences per micro-batch", "8")
      .option("seq", "tokens per sequence", "128")
      .option("grad-accum", "micro-batches per optimizer step", "1")
      .option("lr", "peak learning rate", "3e-4")
      .option("warmup", "linear warmup steps", "0")
      .option("min-lr-ratio", "cosine floor as a fraction of --lr (0: HF's cosine to 0)", "0")
      .option("weight-decay", "AdamW decoupled weight decay (not on norm weights)", "0")
      .option("beta1", "AdamW beta1", "0.9")
      .option("beta2", "AdamW beta2", "0.999")
      .option("eps", "AdamW epsilon", "1e-8")
      .option("max-grad-norm", "clip the global gradient norm to this (<= 0: off)", "1.0")
      .option("seed", "random init and data order", "0")
      .option("init-seed", "random init only (default: --seed): a noise run keeps --seed's data order with another init")
      .option("val-every", "validation loss every K steps (0: only at the end)", "0")
      .option("val-batches", "validation batches (of --batch x --seq) per evaluation", "8")
      .option("ckpt-every", "impl: checkpoint every K steps (0: only at the end and on Ctrl-C)", "0")
      .option("loss-chunk", "impl: lm_head rows per chunk (0: ~1 GiB of logits)", "0")
      .option("out", "output directory (train.jsonl, run.json, checkpoints/)", "", true)
      .flag("resume", "impl: continue from --out's latest checkpoint (same arguments)")
      .flag("deterministic", "bitwise-reproducible GEMM and attention algorithms (exact resume on a GPU)")
      .flag("quiet", "no progress bar");
  p.parse(args);
  if (p.help_requested()) {
    std::printf("%s", p.usage().c_str());
    return 0;
  }
  const std::string engine = p.get("engine");
  if (engine != "impl" && engine != "reference") throw UsageError("--engine: expected impl or reference, got '" + engine + "'");
  if (p.given("config") == p.given("init")) throw UsageError("give exactly one of --config NAME|FILE or --init DIR");
  const Device device = parse_device(p.get("device"));
  if (device == Device::CUDA && !cuda_available()) {
    throw UsageError("--device cuda: no CUDA device is visible (or this build has no CUDA backend)");
  }
  const bool impl_engine = engine == "impl";
  const impl::Recipe recipe = impl::Recipe::parse(p.get("precision"));
  if (!impl_engine) {
    if (recipe.is_fp8()) throw UsageError("--engine reference trains in bf16 only, got --precision " + p.get("precision"));
    if (p.flag_set("resume") || p.get_int("ckpt-every", 0) != 0) {
      throw UsageError("--resume and --ckpt-every apply to --engine impl (the reference's optimizer state is not "
                       "exposed by its facade)");
    }
  }
  const int64_t steps = p.get_int("steps", 1), batch = p.get_int("batch", 1), seq = p.get_int("seq", 1),
                accum = p.get_int("grad-accum", 1), val_every = p.get_int("val-every", 0),
                val_batches = p.get_int("val-batches", 1), ckpt_every = p.get_int("ckpt-every", 0);
  const uint64_t seed = static_cast<uint64_t>(p.get_int("seed", 0));
  if (p.given("init-seed") && p.given("init")) throw UsageError("--init-seed applies to a random init (--config), not --init");
  const uint64_t init_seed = p.given("init-seed") ? static_cast<uint64_t>(p.get_int("init-seed", 0)) : seed;
  const fs::path out(p.get("out"));
  const bool quiet = p.flag_set("quiet");

  // Model config and data.
  GemmaConfig cfg = p.given("config") ? config_from(p.get("config")) : impl::load_config(p.get("init"));
  if (p.given("layers")) {
    if (!p.given("config")) throw UsageError("--layers applies to --config only");
    cfg.num_hidden_layers = p.get_int("layers", 1, 1024);
  }
  cfg.validate("--config");
  TG_CHECK(seq <= cfg.max_position_embeddings, "--seq ", seq, " exceeds the model's max_position_embeddings ",
           cfg.max_position_embeddings);
  const TokenDataset data(p.get("data"));
  TG_CHECK(static_cast<int64_t>(data.header().vocab_size) <= cfg.vocab_size, "--data ", p.get("data"),
           " was tokenized with a vocabulary of ", data.header().vocab_size, ", the model has only ", cfg.vocab_size,
           " embeddings");
  const BatchSampler sampler(data, seed, batch, seq);
  auto micro_windows = [&](int64_t step) {
    std::vector<TokenBatch> mbs;
    for (int64_t i = 0; i < accum; ++i) mbs.push_back(sampler.batch(step * accum + i));
    return mbs;
  };
  std::optional<ValidationBatches> val;
  if (data.size(Split::Validation) > static_cast<uint64_t>(seq)) val.emplace(data, batch, seq, val_batches);

  impl::TrainOptions to;
  to.lr = p.get_double("lr", 0);
  to.warmup_steps = p.get_int("warmup", 0);
  to.total_steps = steps;
  to.min_lr_ratio = p.get_double("min-lr-ratio", 0, 1);
  to.adamw.beta1 = p.get_double("beta1", 0, 0.999999);
  to.adamw.beta2 = p.get_double("beta2", 0, 0.999999);
  to.adamw.eps = p.get_double("eps", 1e-30);
  to.adamw.weight_decay = p.get_double("weight-decay", 0);
  to.adamw.max_grad_norm = p.get_double("max-grad-norm");
  to.grad_accum_steps = accum;
  to.deterministic = p.flag_set("deterministic");
  if (const char* env = std::getenv("TEGEMMA_INJECT_NAN_GRAD_STEP"); env != nullptr && *env != '\0') {
    const auto k = parse_int(env);
    TG_CHECK(k.has_value() && *k >= 0, "TEGEMMA_INJECT_NAN_GRAD_STEP: expected a step index, got '", env, "'");
    to.inject_nan_grad_at_step = *k;  // TEST-ONLY (impl/trainer.h)
    std::fprintf(stderr, "tegemma train: TEST-ONLY: a NaN gradient is injected at step %lld\n",
                 static_cast<long long>(*k));
  }
  if (const char* env = std::getenv("TEGEMMA_TEST_HANG_IN_CHECKPOINT"); env != nullptr && *env != '\0') {
    const auto k = parse_int(env);
    TG_CHECK(k.has_value() && *k >= 0, "TEGEMMA_TEST_HANG_IN_CHECKPOINT: expected a step count, got '", env, "'");
    to.hang_in_checkpoint_at_step = *k;  // TEST-ONLY (impl/trainer.h): the checkpoint of step k never finishes
  }

  // The run's description: also the checkpoint metadata a resume must match.
  const nlohmann::json data_meta = {{"checksum", data.header().checksum},
                                    {"seed", seed},
                                    {"batch", batch},
                                    {"seq", seq},
                                    {"grad_accum", accum}};
  // "recipe" is the kind (bf16 / delayed / current / block: what parity and the reports pair runs by); the
  // full specification goes to "recipe_spec" in run.json.
  const std::string recipe_name = impl_engine ? std::string(recipe.name()) : "bf16";
  fs::create_directories(out);
  nlohmann::json run = {{"engine", engine},
                        {"recipe", recipe_name},
                        {"recipe_spec", impl_engine ? recipe.to_string() : "bf16"},
                        {"num_params", cfg.num_params()},
                        {"device", device == Device::CUDA ? "cuda" : "cpu"},
                        {"init", p.given("init") ? p.get("init") : "random:seed=" + std::to_string(init_seed)},
                        {"config", nlohmann::json::parse(cfg.to_json_text())},
                        {"data", data_meta},
                        {"data_path", fs::absolute(p.get("data")).string()},
                        {"steps", steps},
                        {"lr", to.lr},
                        {"warmup", to.warmup_steps},
                        {"deterministic", to.deterministic},
                        {"provenance", kernels::provenance()}};
  std::vector<std::string> argv(args.begin(), args.end());
  run["args"] = argv;

  // Initial weights (impl's seeded init, or --init), built once as impl weights.
  impl::ModelOptions mo;
  mo.recipe = impl_engine ? recipe : impl::Recipe::bf16();
  mo.device = device;
  mo.deterministic = to.deterministic;
  mo.loss_chunk_rows = p.get_int("loss-chunk", 0);
  auto build_model = [&]() {
    if (p.given("init")) return impl::GemmaForCausalLM::load(p.get("init"), mo);
    return impl::GemmaForCausalLM::random(cfg, init_seed, mo);
  };

  std::signal(SIGINT, on_sigint);
  const fs::path log_path = out / "train.jsonl";
  int64_t first_step = 0;
  std::unique_ptr<impl::Trainer> trainer;
#if TEGEMMA_HAVE_TORCH
  std::unique_ptr<ref::TrainSession> session;
#endif
  if (impl_engine) {
    trainer = std::make_unique<impl::Trainer>(build_model(), to);
    if (p.flag_set("resume")) {
      const fs::path ckpt = impl::latest_checkpoint(out);
      TG_CHECK(!ckpt.empty(), "--resume: ", out.string(), " has no checkpoint (checkpoints/latest)");
      const nlohmann::json meta = trainer->load_checkpoint(ckpt);
      TG_CHECK(meta.value("data", nlohmann::json()) == data_meta, "--resume: ", ckpt.string(), " was written with ",
               "other data arguments (", meta.value("data", nlohmann::json()).dump(), "), this run has ",
               data_meta.dump());
      first_step = trainer->steps_done();
      truncate_log(log_path, first_step);
      std::fprintf(stderr, "tegemma train: resumed from %s at step %lld\n", ckpt.string().c_str(),
                   static_cast<long long>(first_step));
    } else {
      fs::remove(log_path);
    }
    run["weights_bytes"] = trainer->model().weights().bytes();
    run["optimizer_bytes"] = 4 * 4 * trainer->optimizer().num_elements();
  } else {
#if TEGEMMA_HAVE_TORCH
    fs::remove(log_path);
    const fs::path init = out / "init";
    tg::remove_tree(init);
    build_model().save(init);  // BF16: exactly the impl's initial weights
    ref::EngineOptions eo;
    eo.dtype = DType::BF16;
    eo.device = device;
    const ref::Engine e = ref::Engine::load(init, eo);
    ref::TrainConfig tc;
    tc.lr = to.lr;
    tc.warmup_steps = to.warmup_steps;
    tc.total_steps = steps;
    tc.min_lr_ratio = to.min_lr_ratio;
    tc.beta1 = to.adamw.beta1;
    tc.beta2 = to.adamw.beta2;
    tc.eps = to.adamw.eps;
    tc.weight_decay = to.adamw.weight_decay;
    tc.max_grad_norm = to.adamw.max_grad_norm;
    tc.grad_accum_steps = accum;
    session = std::make_unique<ref::TrainSession>(e, tc);
#else
    throw UsageError("--engine reference: this build has no LibTorch (configure with TEGEMMA_TORCH=ON)");
#endif
  }
  write_file_atomic(out / "run.json", run.dump(2) + "\n");
  JsonLog log(log_path);

  auto validate = [&]() -> double {
    if (!val) return std::nan("");
    int64_t n = 0;
    double sum = 0;
    std::vector<impl::TrainBatch> batches;
    for (int64_t i = 0; i < val->num_batches(); ++i) {
      const TokenBatch tb = val->batch(i);
      if (impl_engine) {
        batches.push_back(impl::TrainBatch::from_windows(tb));
        continue;
      }
#if TEGEMMA_HAVE_TORCH
      std::vector<int32_t> ids = tb.tokens;
      const TensorView v(ids.data(), DType::I32, Shape{tb.rows, tb.seq + 1}, Device::CPU);
      sum += session->eval_loss(v) * static_cast<double>(tb.rows * tb.seq);
      n += tb.rows * tb.seq;
#endif
    }
    return impl_engine ? trainer->eval_loss(batches) : sum / static_cast<double>(n);
  };

  const nlohmann::json ckpt_meta = {{"data", data_meta}, {"engine", engine}, {"recipe", recipe_name}};
  Progress progress("train " + engine + " " + std::string(recipe.name()), steps, quiet);
  const auto t_run = Clock::now();
  int64_t tokens_total = 0;
  double last_loss = std::nan(""), last_val = std::nan("");
  int64_t skipped_total = 0;
  bool interrupted = false;
  for (int64_t step = first_step; step < steps; ++step) {
    const auto t0 = Clock::now();
    const std::vector<TokenBatch> windows = micro_windows(step);
    nlohmann::json rec = {{"step", step}, {"engine", engine}, {"recipe", recipe_name}, {"num_params", cfg.num_params()}};
    // Which random init this run started from: parity tells a noise run (another --init-seed) by it.
    if (!p.given("init")) rec["init_seed"] = init_seed;
    int64_t tokens = 0;
    if (impl_engine) {
      std::vector<impl::TrainBatch> mbs;
      for (const TokenBatch& w : windows) mbs.push_back(impl::TrainBatch::from_windows(w));
      const impl::StepResult r = trainer->step(mbs);
      tokens = r.tokens;
      rec["loss"] = r.loss;
      rec["grad_norm"] = r.grad_norm;
      rec["clip_coef"] = r.clip_coef;
      rec["lr"] = r.lr;
      rec["skipped"] = r.skipped;
      skipped_total += r.skipped;
      last_loss = r.loss;
      if (recipe.is_fp8()) rec["fp8"] = trainer->fp8_stats();
    } else {
#if TEGEMMA_HAVE_TORCH
      std::vector<std::vector<int32_t>> ids;
      std::vector<TensorView> views;
      for (const TokenBatch& w : windows) ids.push_back(w.tokens);
      for (std::size_t i = 0; i < ids.size(); ++i) {
        views.emplace_back(ids[i].data(), DType::I32, Shape{windows[i].rows, windows[i].seq + 1}, Device::CPU);
        tokens += windows[i].rows * windows[i].seq;
      }
      const ref::TrainStepResult r = session->step(views);
      rec["loss"] = r.loss;
      rec["grad_norm"] = r.grad_norm;
      rec["lr"] = r.lr;
      rec["skipped"] = false;
      last_loss = r.loss;
#endif
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    tokens_total += tokens;
    rec["tokens"] = tokens;
    rec["tokens_per_s"] = secs > 0 ? static_cast<double>(tokens) / secs : 0.0;
    log.write(rec);
    if (rec["skipped"].get<bool>()) {
      std::fprintf(stderr, "\ntegemma train: step %lld SKIPPED: non-finite gradient (grad norm %s); weights unchanged\n",
                   static_cast<long long>(step), rec["grad_norm"].dump().c_str());
    }
    const bool last = step + 1 == steps;
    if ((val_every > 0 && (step + 1) % val_every == 0) || last) {
      last_val = validate();
      if (!std::isnan(last_val)) log.write({{"step", step}, {"val_loss", last_val}, {"engine", engine}, {"recipe", recipe_name}});
    }
    progress.update(step + 1, status_line(last_loss, rec["tokens_per_s"].get<double>(), rec["skipped"].get<bool>()));
    interrupted = g_interrupted.load();
    if (impl_engine && ((ckpt_every > 0 && (step + 1) % ckpt_every == 0) || last || interrupted)) {
      const fs::path dir = impl::save_run_checkpoint(*trainer, out, ckpt_meta);
      if (interrupted) std::fprintf(stderr, "\ntegemma train: interrupted; checkpoint saved to %s\n", dir.c_str());
    }
    if (interrupted) break;
  }
  progress.finish(status_line(last_loss, 0, false));
#if TEGEMMA_HAVE_TORCH
  if (session && !interrupted) session->snapshot().save(out / "final", DType::BF16);
#endif
  const double secs = std::chrono::duration<double>(Clock::now() - t_run).count();
  run["summary"] = {{"steps_done", impl_engine ? trainer->steps_done() : steps},
                    {"final_loss", last_loss},
                    {"final_val_loss", last_val},
                    {"skipped_steps", skipped_total},
                    {"seconds", secs},
                    {"tokens_per_s", secs > 0 ? static_cast<double>(tokens_total) / secs : 0.0},
                    {"interrupted", interrupted}};
  if (impl_engine) run["arena_bytes"] = trainer->model().arena_bytes();
  write_file_atomic(out / "run.json", run.dump(2) + "\n");
  std::printf("%s\n", run["summary"].dump().c_str());
  return interrupted ? 130 : 0;
}

}  // namespace tg::cli
