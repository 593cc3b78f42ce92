// fuzz_replay: feeds every committed corpus input and every saved crasher to the fuzz entry points,
// so that each one stays a regression test in every build (registered with ctest, label cpu).
//
//   fuzz_replay <tests/fuzz dir>           every file under corpus/<target>/ and crashers/<target>/
//   fuzz_replay <target> <file>...          just these files (to reproduce one crasher)
//
// A tg::Error escaping an entry cannot happen (entries catch it); any other exception fails the run,
// and a crash or sanitizer report ends the process, which ctest reports as a failure.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_entries.h"

namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Returns false if the input made the entry throw something other than a handled tg::Error.
bool replay_one(const tg::fuzz::Target& t, const fs::path& p) {
  const std::vector<uint8_t> data = read_all(p);
  try {
    t.run(data);
    return true;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL %s %s: uncaught %s\n", std::string(t.name).c_str(), p.c_str(), e.what());
  } catch (...) {
    std::fprintf(stderr, "FAIL %s %s: uncaught non-std exception\n", std::string(t.name).c_str(), p.c_str());
  }
  return false;
}

std::vector<fs::path> inputs_under(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name[0] != '.' && name.rfind("README", 0) != 0) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

const tg::fuzz::Target* find_target(std::string_view name) {
  if (name.rfind("fuzz_", 0) == 0) name.remove_prefix(5);
  for (const auto& t : tg::fuzz::kTargets) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: fuzz_replay <tests/fuzz dir> | fuzz_replay <target> <file>...\n");
    return 2;
  }
  if (const tg::fuzz::Target* t = find_target(argv[1]); t && argc > 2) {
    int failed = 0;
    for (int i = 2; i < argc; ++i) failed += !replay_one(*t, argv[i]);
    std::printf("fuzz_replay: %d of %d inputs failed\n", failed, argc - 2);
    return failed ? 1 : 0;
  }
  const fs::path root = argv[1];
  int failed = 0;
  for (const auto& t : tg::fuzz::kTargets) {
    const auto corpus = inputs_under(root / "corpus" / t.name);
    const auto crashers = inputs_under(root / "crashers" / t.name);
    if (corpus.empty()) {
      // An empty corpus would make this test pass vacuously.
      std::fprintf(stderr, "FAIL %s: no corpus under %s\n", std::string(t.name).c_str(),
                   (root / "corpus" / t.name).c_str());
      ++failed;
    }
    int bad = 0;
    for (const auto& p : corpus) bad += !replay_one(t, p);
    for (const auto& p : crashers) bad += !replay_one(t, p);
    std::printf("fuzz_replay: %-12s %5zu corpus + %3zu crasher inputs, %d failed\n", std::string(t.name).c_str(),
                corpus.size(), crashers.size(), bad);
    failed += bad;
  }
  return failed ? 1 : 0;
}
