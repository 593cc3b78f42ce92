#include "common/env.h"

#include <cstdlib>
#include <string>

#include "common/check.h"

namespace tg {

bool env_switch(const char* name, bool default_on) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return default_on;
  const std::string v = env;
  TG_CHECK(v == "0" || v == "1", name, " must be 0 or 1, got '", v, "'");
  return v == "1";
}

}  // namespace tg
