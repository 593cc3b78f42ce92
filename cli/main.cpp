// tegemma: one CLI, subcommands. `tegemma help` lists them; `tegemma <cmd> --help` explains one.
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/args.h"
#include "common/check.h"
#include "common/crash_handler.h"
#include "kernels/library_state.h"

namespace {

constexpr tg::cli::Command kCommands[] = {
    {"version", "print version and provenance (commit, build, GPU, libraries) as JSON", tg::cli::cmd_version},
    {"prepare-data", "training data: build the corpus, tokenize it, inspect token files", tg::cli::cmd_prepare_data},
    {"forward", "one forward pass on token ids: logits (.npy) + summary (impl or reference)", tg::cli::cmd_forward},
    {"report", "result directories -> one HTML report (inline SVG) + a Markdown summary", tg::cli::cmd_report},
    {"bench", "bench compare OLD.json NEW.json: per-benchmark ratios, regressions beyond the noise", tg::cli::cmd_bench},
    {"parity", "impl vs reference and FP8 vs BF16: taps, logits, generations, loss curves (CI)", tg::cli::cmd_parity},
    {"generate", "KV-cached generation: greedy, sampling, beam search; text or token ids, streaming",
     tg::cli::cmd_generate},
    {"train", "train impl (bf16 or an FP8 recipe) or the reference: JSON-lines log, checkpoints, resume", tg::cli::cmd_train},
};

void print_help() {
  std::printf("tegemma: FP8 (Transformer-Engine-style) Gemma beside a LibTorch BF16 reference\n\n"
              "usage: tegemma <command> [options]   (tegemma <command> --help for its options)\n\ncommands:\n");
  for (const auto& c : kCommands) std::printf("  %-13s %s\n", c.name, c.summary);
  std::printf("\nexit codes: 0 ok, 1 a check failed, 2 could not run (bad input)\n");
}

int run_command(const tg::cli::Command& c, const std::vector<std::string>& args) {
  try {
    return c.run(args);
  } catch (const tg::UsageError& e) {
    std::fprintf(stderr, "tegemma %s: %s\n", c.name, e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tegemma %s: error: %s\n", c.name, e.what());
    return 2;
  }
}

// Frees the kernels' cuBLASLt / cuDNN / scratch state while CUDA is still alive (kernels/library_state.h), on the
// success and the error paths alike, so that compute-sanitizer's leak check sees none of it at exit. Makes no
// CUDA call when the command used no GPU. Everything the command owned (models, generators and their CUDA graphs)
// is gone by now. A device error that only surfaces here fails a command that had succeeded.
int release_gpu_state(const tg::cli::Command& c, int rc) {
  try {
    tg::kernels::release_library_state();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tegemma %s: error: releasing the GPU library state: %s\n", c.name, e.what());
    return rc == 0 ? 2 : rc;
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  tg::install_crash_handler("tegemma");
  if (argc < 2 || std::string(argv[1]) == "help" || std::string(argv[1]) == "--help") {
    print_help();
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  for (const auto& c : kCommands) {
    if (name != c.name) continue;
    const int rc = run_command(c, args);
    return release_gpu_state(c, rc);
  }
  std::fprintf(stderr, "tegemma: unknown command '%s' (see tegemma help)\n", name.c_str());
  return 2;
}
