// The parity suites: what `tegemma parity` runs (cli/cmd_parity.cpp parses the flags into SuiteOptions).
//
// For each model, with the LibTorch reference in BF16 as "the reference" and impl under each precision:
//
//   reference[bf16] vs impl[bf16]     implementation error (forward: per-layer taps + logits; generation)
//   reference[bf16] vs impl[P]        total error of recipe P (forward; generation)
//   impl[bf16]      vs impl[P]        quantization error of recipe P alone (forward; generation)
//
// for every FP8 recipe P. A bug in impl's shared code shows in the first two rows and not the third; an
// FP8-only bug shows in the last two rows and not the first.
//
// Suites (models; the default precisions are all four recipes, each where the model's shapes allow it --
// block scaling needs every GEMM width a multiple of 128 -- and a skipped recipe is noted, not an error):
//   ci    the CPU backend: the tiny preset (seeded random weights, HF init with std 0.05 and non-zero norm
//         weights, std 0.3, so a missing "1 +" cannot hide), the tiny preset widened to hidden 128 /
//         intermediate 256 (so that block scaling runs), and the HF fixtures in reference/fixtures
//         (mqa_f32, gqa_bf16_sharded, hd256_bf16). A minute or two on 2 cores.
//   full  CUDA: gemma-2b- and gemma-7b-shaped random-weight models (full width and vocabulary, HF init with
//         non-zero norms) at reduced depth (kFullSuiteLayers layers unless `layers` says otherwise).
//   none  no models: only the loss curves given.
// `models` (--model DIR / --config NAME) replaces the suite's models.
//
// Prompts: the default set (parity/prompts/default.json) or a file. The default set's ids go up to 511; for a
// model with a smaller vocabulary (the fixtures: 256, 320, 384) each id is reduced modulo the vocabulary (the
// set's prompt ids and lengths are unchanged; the report's run.prompt_folding says where). A user file is
// never folded: an id outside the vocabulary is an error. Text prompts run when the checkpoint directory
// holds a tokenizer.model.
//
// Delayed scaling is calibrated on its own seeded random prompts (seeds.calibration; lengths 64, 48, 32, 17),
// not on the prompts it is judged on, as a deployed model would be.
//
// Loss curves: JSON-lines logs of `tegemma train` (files, or directories whose *.jsonl files are taken).
// Each log says which run it is by "engine" and "recipe" keys in its records (the reports/ convention), or
// else by its file name's tokens (reference_bf16.jsonl, impl_delayed.jsonl). Pairs: reference[bf16] vs every
// impl curve, and impl[bf16] vs every impl FP8 curve; a curve in no pair is checked on its own (NaN, spikes).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/gemma_config.h"
#include "impl/fault_injection.h"
#include "impl/weights.h"
#include "parity/report.h"

namespace tg::parity {

inline constexpr int64_t kFullSuiteLayers = 4;

struct ModelCase {
  std::string name;                   // "tiny", "mqa_f32", "gemma-2b-L4", or the checkpoint directory's name
  std::string source;                 // "preset:tiny:seed=0", "fixture:<dir>", "<dir>"
  std::filesystem::path dir;          // an HF checkpoint; empty for random weights
  std::optional<GemmaConfig> config;  // random weights of this config (seeded)
  uint64_t seed = 0;
  impl::RandomInit init;
  // The thresholds' size class: a reduced-depth model of a preset's shape keeps the full-depth model's
  // class (its widths, head_dim and vocabulary are what the size-specific thresholds are about).
  std::string size_class;
};

// Random weights of a preset (tiny, small, gemma-2b, gemma-7b); layers > 0 reduces the depth.
ModelCase preset_case(const std::string& preset, int64_t layers, uint64_t seed);
// An HF checkpoint directory.
ModelCase checkpoint_case(const std::filesystem::path& dir);
// The suite's models (see the header comment). `layers` > 0 overrides the full suite's depth.
std::vector<ModelCase> suite_models(const std::string& suite, const std::filesystem::path& fixtures_dir, uint64_t seed,
                                    int64_t layers);

struct SuiteOptions {
  std::string suite = "ci";       // ci | full | none | custom (--model / --config): recorded in run.suite
  std::vector<ModelCase> models;  // what runs (suite_models() or --model / --config)
  // Recipe strings (impl::Recipe::parse). Empty: bf16, delayed, current and block, each only where the model's
  // shapes allow it. Given: every one must run (a model that cannot is a comparison error, exit 2). bf16 is
  // always run: it is the baseline of the FP8 rows.
  std::vector<std::string> precisions;
  Device device = Device::CPU;
  impl::WeightStorage storage = impl::WeightStorage::kMaster;  // of the FP8 engines
  bool fp8_lm_head = false;
  std::filesystem::path prompts_file;     // empty: the built-in default set
  std::filesystem::path thresholds_file;  // empty: the built-in thresholds only
  int generate = 16;                      // new tokens per greedy generation; 0: no generation comparisons
  std::vector<std::filesystem::path> loss_curves;
  std::string loss_size;  // size class for the loss thresholds; empty: from the logs, else small
  uint64_t calibration_seed = 1;
  impl::FaultInjection fault;                   // TEST-ONLY: planted into every impl engine (impl/fault_injection.h)
  std::function<void(const std::string&)> log;  // progress lines; empty: silent
};

// Runs everything; never throws for bad input or engines that fail: those become report errors (exit 2).
Report run_suite(const SuiteOptions& o);

// "libtorch" version of the reference in this build ("" without LibTorch).
std::string libtorch_version();

}  // namespace tg::parity
