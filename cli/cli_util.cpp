#include "cli/cli_util.h"

#include "common/args.h"

namespace tg::cli {

std::vector<std::vector<int64_t>> parse_token_prompts(const std::string& text) {
  std::vector<std::vector<int64_t>> prompts(1);
  std::string cur;
  auto flush_id = [&](std::size_t pos) {
    if (cur.empty()) {
      throw UsageError("--tokens: empty token id at character " + std::to_string(pos) + " of '" + text +
                       "' (expected e.g. 2,651,9 or 2,651;2,5 for two prompts)");
    }
    const auto v = parse_int(cur);
    if (!v) throw UsageError("--tokens: '" + cur + "' is not an integer token id");
    prompts.back().push_back(*v);
    cur.clear();
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ',') {
      flush_id(i);
    } else if (c == ';') {
      flush_id(i);
      prompts.emplace_back();
    } else if (c != ' ') {
      cur += c;
    }
  }
  flush_id(text.size());
  return prompts;
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::CPU;
  if (s == "cuda") return Device::CUDA;
  throw UsageError("--device: expected cpu or cuda, got '" + s + "'");
}

}  // namespace tg::cli
