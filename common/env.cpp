#include "common/env.h"

#include <cerrno>
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

long long env_int(const char* name, long long default_value, long long lo, long long hi) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return default_value;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(env, &end, 10);
  const bool starts_ok = (env[0] >= '0' && env[0] <= '9') || env[0] == '-';  // strtoll would skip blanks
  TG_CHECK(starts_ok && end != env && *end == '\0' && errno == 0 && v >= lo && v <= hi, name,
           " must be an integer in [", lo, ", ", hi, "], got '", env, "'");
  return v;
}

}  // namespace tg
