#include "common/check.h"

namespace tg::detail {

void throw_error(const char* file, int line, const std::string& msg) {
  // Strip the directory part so messages stay short and stable across build machines.
  std::string f(file);
  const auto slash = f.find_last_of('/');
  const auto prev = slash == std::string::npos ? std::string::npos : f.find_last_of('/', slash - 1);
  if (prev != std::string::npos) f = f.substr(prev + 1);
  throw Error(f + ":" + std::to_string(line) + ": " + msg);
}

}  // namespace tg::detail
