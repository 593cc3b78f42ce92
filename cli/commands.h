// The `tegemma` subcommands. Each takes the arguments after its name and returns the process exit
// code: 0 success, 1 a check failed (parity threshold, regression), 2 could not run (bad input).
#pragma once

#include <span>
#include <string>

namespace tg::cli {

using Args = std::span<const std::string>;

struct Command {
  const char* name;
  const char* summary;
  int (*run)(Args args);
};

int cmd_version(Args args);
int cmd_prepare_data(Args args);
int cmd_forward(Args args);
int cmd_report(Args args);
int cmd_bench(Args args);
int cmd_parity(Args args);
int cmd_train(Args args);
int cmd_generate(Args args);

}  // namespace tg::cli
