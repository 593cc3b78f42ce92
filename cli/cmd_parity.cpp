// tegemma parity: impl against the LibTorch reference (and each FP8 recipe against impl BF16) on per-layer
// taps, logits, greedy generations and training loss curves, judged by the thresholds file; what CI runs.
// The runs are parity/suite.h's; this file only turns flags into SuiteOptions and prints / writes the report.
//
// Exit code: 0 every threshold held; 1 a threshold was violated; 2 could not run (bad input, an engine that
// failed, --device cuda without a GPU, nothing compared). The JSON (parity/SCHEMA.md) is written in every
// case where --out was given, atomically.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/args.h"
#include "common/check.h"
#include "common/tensor.h"
#include "impl/fault_injection.h"
#include "parity/rejudge.h"
#include "parity/report.h"
#include "parity/suite.h"

namespace tg::cli {

namespace {

// "bf16,delayed:margin=1,len=16,current" -> {"bf16", "delayed:margin=1,len=16", "current"}: a recipe's own
// options also use commas, so a piece with '=' and no ':' continues the recipe before it (';' works as ',').
std::vector<std::string> split_recipes(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) throw UsageError("--precisions: empty entry in '" + text + "'");
    const bool option = cur.find('=') != std::string::npos && cur.find(':') == std::string::npos;
    if (option && !out.empty()) {
      out.back() += "," + cur;
    } else if (option && out.empty()) {
      throw UsageError("--precisions: '" + cur + "' is a recipe option without a recipe before it");
    } else {
      out.push_back(cur);
    }
    cur.clear();
  };
  for (char c : text) {
    if (c == ',' || c == ';') {
      flush();
    } else if (c != ' ') {
      cur += c;
    }
  }
  flush();
  return out;
}

std::vector<std::filesystem::path> split_paths(const std::string& text) {
  std::vector<std::filesystem::path> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t end = std::min(text.find(',', pos), text.size());
    if (end > pos) out.emplace_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  if (out.empty()) throw UsageError("--loss-curves: no path given");
  return out;
}

// A report that records why nothing ran (exit 2), written if --out was given.
int could_not_run(const std::string& why, const std::string& out, const nlohmann::json& run) {
  std::fprintf(stderr, "tegemma parity: %s\n", why.c_str());
  if (!out.empty()) {
    parity::Report r = parity::Report::create();
    r.run = run;
    r.errors.push_back(why);
    r.write(out);
  }
  return 2;
}

}  // namespace

// --rejudge REPORT: the recorded measurements judged by the thresholds of this build (or --thresholds FILE).
int rejudge_report(const ArgParser& p) {
  for (const char* o :
       {"model", "config", "add-model", "layers", "precisions", "prompts", "loss-curves", "loss-size", "device"}) {
    if (p.given(o)) throw UsageError(std::string("--rejudge runs nothing: --") + o + " does not apply");
  }
  const std::string out = p.get("out");
  nlohmann::json run{{"command", "tegemma parity --rejudge " + p.get("rejudge")}};
  parity::Report r;
  try {
    const parity::Report recorded = parity::Report::load(p.get("rejudge"));
    const parity::Thresholds th = parity::Thresholds::resolve(p.given("thresholds") ? p.get("thresholds") : "");
    r = parity::rejudge(recorded, th);
  } catch (const Error& e) {
    return could_not_run(e.what(), out, run);
  }
  parity::SummaryOptions so;
  so.color = ::isatty(::fileno(stdout)) != 0;
  std::printf("%s", r.summary(so).c_str());
  std::printf("rejudged: %lld check verdicts changed\n",
              static_cast<long long>(r.run["rejudged"]["changed_checks"].get<int64_t>()));
  if (!out.empty()) {
    r.write(out);
    std::printf("parity report: %s\n", out.c_str());
  }
  return r.exit_code();
}

int cmd_parity(Args args) {
  const bool have_gpu = cuda_available();
  ArgParser p("tegemma parity",
              "impl vs the LibTorch reference and FP8 recipes vs impl BF16: per-layer taps, logits, greedy "
              "generations, loss curves; exit 0 pass, 1 a threshold violated, 2 could not run");
  p.option("suite",
           "ci (CPU: tiny presets + the HF fixtures, all recipes), full (CUDA: gemma-2b/7b shapes at reduced "
           "depth, all recipes) or none (only --loss-curves); --model / --config replace the suite's models",
           have_gpu ? "full" : "ci")
      .option("model", "an HF Gemma checkpoint directory instead of the suite's models")
      .option("config", "random weights of a preset instead: tiny | small | gemma-2b | gemma-7b")
      .option("add-model", "checkpoint directories compared beside the suite's models, comma-separated (e.g. the "
                           "trained small model of the loss-curve runs: <run>/checkpoints/<latest>)")
      .option("layers", "reduced depth: num_hidden_layers of --config, or of the full suite's models")
      .option("seed", "seed of the random weights", "0")
      .option("precisions",
              "recipes to run, comma-separated (bf16, delayed[:...], current[:...], block[:...]); default: all "
              "four, each where the model's shapes allow it. bf16 always runs (the FP8 baseline)")
      .option("device", "cpu or cuda (default: cpu for --suite ci, cuda for full, else cuda when available)")
      .option("storage", "impl FP8 weights: master (BF16 + FP8 copies) or fp8-only", "master")
      .flag("fp8-lm-head", "impl FP8 engines run the tied lm_head GEMM in FP8 too")
      .option("prompts", "prompt-set file (parity/SCHEMA.md section 3); default: the built-in set")
      .option("thresholds", "thresholds file overriding the built-in entries it names (parity/SCHEMA.md section 2)")
      .option("out", "write the report JSON here (atomically)")
      .option("generate", "new tokens per greedy generation (0: no generation comparisons)", "16")
      .option("loss-curves",
              "training logs of `tegemma train` (JSON lines), comma-separated files or directories of *.jsonl")
      .option("loss-size", "size class for the loss thresholds (tiny|small|2b|7b); default: from the logs")
      .option("fixtures", "the HF fixtures directory of --suite ci (default: reference/fixtures of the source tree)")
      .option("rejudge", "a recorded report JSON: judge its measured values again with the thresholds (built-in, "
                         "or --thresholds) instead of running anything; --out writes the re-judged report")
      .flag("quiet", "no progress lines (the summary is still printed)");
  p.parse(args);
  if (p.help_requested()) {
    std::printf("%s", p.usage().c_str());
    std::printf(
        "\nTEST-ONLY: the environment variable %s=rmsnorm_w|rope_swap|fp8_scale_x2[:layer=N] plants a known bug\n"
        "into every impl engine (impl/fault_injection.h); the harness must then exit 1 naming that layer.\n",
        impl::FaultInjection::kEnvVar);
    return 0;
  }
  if (p.given("rejudge")) return rejudge_report(p);
  if (p.given("model") && p.given("config")) throw UsageError("give at most one of --model DIR and --config NAME");
  const std::string suite = p.get("suite");
  if (suite != "ci" && suite != "full" && suite != "none")
    throw UsageError("--suite: expected ci, full or none, got '" + suite + "'");
  const int64_t layers = p.given("layers") ? p.get_int("layers", 1, 1024) : 0;
  if (layers > 0 && !p.given("config") && (p.given("model") || suite != "full"))
    throw UsageError("--layers applies to --config or to --suite full");
  const auto seed = static_cast<uint64_t>(p.get_int("seed", 0));
  const std::string storage = p.get("storage");
  if (storage != "master" && storage != "fp8-only")
    throw UsageError("--storage: expected master or fp8-only, got '" + storage + "'");
  const std::string out = p.get("out");

  std::string cmdline = "tegemma parity";
  for (const auto& a : args) cmdline += " " + a;
  nlohmann::json run{{"command", cmdline}};

  parity::SuiteOptions o;
  const bool own_models = p.given("model") || p.given("config");
  o.suite = own_models ? "custom" : suite;  // the report's run.suite: --model / --config replace the suite's models
  std::string device = p.given("device") ? p.get("device")
                       : own_models      ? (have_gpu ? "cuda" : "cpu")
                       : suite == "full" ? "cuda"
                                         : "cpu";
  if (device != "cpu" && device != "cuda") throw UsageError("--device: expected cpu or cuda, got '" + device + "'");
  if (device == "cuda" && !have_gpu) {
    return could_not_run(std::string("--device cuda") + (p.given("device") ? "" : " (the " + suite + " suite's)") +
                             ": no CUDA device is visible, or this build has no CUDA backend; run --suite ci "
                             "(the CPU backend) here",
                         out, run);
  }
  o.device = device == "cuda" ? Device::CUDA : Device::CPU;
  o.storage = storage == "master" ? impl::WeightStorage::kMaster : impl::WeightStorage::kFp8Only;
  o.fp8_lm_head = p.flag_set("fp8-lm-head");
  if (p.given("precisions")) o.precisions = split_recipes(p.get("precisions"));
  if (p.given("prompts")) o.prompts_file = p.get("prompts");
  if (p.given("thresholds")) o.thresholds_file = p.get("thresholds");
  o.generate = static_cast<int>(p.get_int("generate", 0, 4096));
  if (p.given("loss-curves")) o.loss_curves = split_paths(p.get("loss-curves"));
  if (p.given("loss-size")) {
    o.loss_size = p.get("loss-size");
    if (o.loss_size != "tiny" && o.loss_size != "small" && o.loss_size != "2b" && o.loss_size != "7b")
      throw UsageError("--loss-size: expected tiny, small, 2b or 7b, got '" + o.loss_size + "'");
  }
  try {
    o.fault = impl::FaultInjection::from_env();  // TEST-ONLY; the one place the variable is read
    if (p.given("model")) {
      o.models.push_back(parity::checkpoint_case(p.get("model")));
    } else if (p.given("config")) {
      o.models.push_back(parity::preset_case(p.get("config"), layers, seed));
    } else {
      o.models = parity::suite_models(suite, p.get("fixtures"), seed, layers);
    }
    if (p.given("add-model")) {
      for (const auto& dir : split_paths(p.get("add-model"))) o.models.push_back(parity::checkpoint_case(dir));
    }
  } catch (const Error& e) {
    return could_not_run(e.what(), out, run);
  }
  const bool quiet = p.flag_set("quiet");
  if (!quiet) o.log = [](const std::string& line) { std::fprintf(stderr, "parity: %s\n", line.c_str()); };
  if (o.fault.active()) {
    std::fprintf(stderr, "parity: TEST-ONLY fault injection %s=%s: every impl engine carries a planted bug\n",
                 impl::FaultInjection::kEnvVar, o.fault.to_string().c_str());
  }

  parity::Report report = parity::run_suite(o);
  for (const auto& [k, v] : run.items()) report.run[k] = v;

  parity::SummaryOptions so;
  so.color = ::isatty(::fileno(stdout)) != 0;
  for (const auto& s : report.run.value("skipped", nlohmann::json::array())) {
    std::printf("SKIP  %s[%s]: %s\n", s.value("model", "").c_str(), s.value("precision", "").c_str(),
                s.value("reason", "").c_str());
  }
  if (o.fault.active())
    std::printf("NOTE  TEST-ONLY planted bug in every impl engine: %s\n", o.fault.to_string().c_str());
  std::printf("%s", report.summary(so).c_str());
  if (!out.empty()) {
    report.write(out);
    std::printf("parity report: %s\n", out.c_str());
  }
  return report.exit_code();
}

}  // namespace tg::cli
