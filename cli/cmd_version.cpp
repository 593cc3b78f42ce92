#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/args.h"
#include "common/provenance.h"
#include "kernels/provenance.h"

namespace tg::cli {

int cmd_version(Args args) {
  ArgParser p("tegemma version", "print version and provenance as JSON");
  p.parse(args);
  if (p.help_requested()) {
    std::printf("%s", p.usage().c_str());
    return 0;
  }
  nlohmann::json j = kernels::provenance();
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

}  // namespace tg::cli
