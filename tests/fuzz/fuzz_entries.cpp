#include "fuzz_entries.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "common/args.h"
#include "common/check.h"
#include "common/gemma_config.h"
#include "common/safetensors.h"

namespace tg::fuzz {

namespace {

// A broken promise of the code under test: report and abort, which libFuzzer records as a crash.
#define FUZZ_ASSERT(cond, what)                                                 \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::fprintf(stderr, "fuzz invariant violated: %s (%s)\n", what, #cond); \
      std::abort();                                                             \
    }                                                                           \
  } while (0)

// Writes `data` to an anonymous in-memory file and returns a path that maps it, so the real
// SafetensorsFile (mmap) path runs without touching the disk.
class MemFile {
 public:
  explicit MemFile(std::span<const uint8_t> data) {
    fd_ = ::memfd_create("fuzz_safetensors", MFD_CLOEXEC);
    if (fd_ < 0) return;
    std::size_t done = 0;
    while (done < data.size()) {
      const ssize_t w = ::write(fd_, data.data() + done, data.size() - done);
      if (w <= 0) {
        ::close(fd_);
        fd_ = -1;
        return;
      }
      done += static_cast<std::size_t>(w);
    }
  }
  ~MemFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_ = -1;
};

void check_header(const SafetensorsHeader& h, std::span<const uint8_t> data) {
  FUZZ_ASSERT(h.data_offset >= 8 && h.data_offset <= data.size(), "data_offset inside the file");
  const uint64_t data_size = data.size() - h.data_offset;
  std::set<std::string> names;
  uint64_t total = 0;
  for (const SafetensorsEntry& e : h.tensors) {
    FUZZ_ASSERT(names.insert(e.name).second, "unique names");
    FUZZ_ASSERT(e.name != "__metadata__", "metadata is not a tensor");
    FUZZ_ASSERT(e.begin <= e.end && e.end <= data_size, "offsets inside the data buffer");
    FUZZ_ASSERT(e.element_size >= 1 && e.element_size <= 8, "element size");
    uint64_t numel = 1;
    bool zero = false;
    for (int64_t d : e.shape) {
      FUZZ_ASSERT(d >= 0, "non-negative dims");
      if (d == 0) zero = true;
      else FUZZ_ASSERT(!__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel), "element count fits");
    }
    if (zero) numel = 0;
    FUZZ_ASSERT(static_cast<uint64_t>(e.numel()) == numel, "numel()");
    FUZZ_ASSERT(numel * e.element_size == e.nbytes(), "byte count = numel x element size");
    total += e.nbytes();
  }
  FUZZ_ASSERT(total == data_size, "tensors tile the data buffer");
}

}  // namespace

void safetensors(std::span<const uint8_t> data) {
  SafetensorsHeader h;
  try {
    h = parse_safetensors(data, "fuzz");
  } catch (const Error&) {
    return;
  }
  check_header(h, data);
  if (data.size() > (1u << 20)) return;
  const MemFile mem(data);
  if (!mem.ok()) return;
  const SafetensorsFile file(mem.path());  // must parse identically: same bytes
  FUZZ_ASSERT(file.header().tensors.size() == h.tensors.size(), "the mapped file parses the same");
  for (const SafetensorsEntry& e : h.tensors) {
    const SafetensorsEntry* found = file.find(e.name);
    FUZZ_ASSERT(found && found->begin == e.begin && found->end == e.end, "find() returns the entry");
    for (DType to : {DType::F32, DType::BF16, DType::F16}) {
      try {
        const Tensor t = file.load(e.name, to);
        FUZZ_ASSERT(t.numel() == e.numel() && t.dtype() == to, "load() returns the tensor's shape");
      } catch (const Error&) {
        // unsupported dtype or conversion, or more than 6 dims: refused cleanly
      }
    }
  }
}

void config(std::span<const uint8_t> data) {
  const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
  GemmaConfig c;
  try {
    c = GemmaConfig::from_json_text(text, "fuzz.json");
    c.validate("fuzz.json");
  } catch (const Error&) {
    return;
  }
  FUZZ_ASSERT(c.num_params() > 0, "a valid config has parameters");
  FUZZ_ASSERT(c.q_dim() > 0 && c.kv_dim() > 0 && c.group_size() >= 1, "derived sizes");
  GemmaConfig back;
  try {
    back = GemmaConfig::from_json_text(c.to_json_text(), "round trip");
  } catch (const Error& e) {
    std::fprintf(stderr, "to_json_text output does not parse: %s\n", e.what());
    std::abort();
  }
  FUZZ_ASSERT(back == c, "to_json_text round trip");
}

void args(std::span<const uint8_t> data) {
  std::vector<std::string> argv;
  std::string cur;
  for (uint8_t b : data) {
    if (b == 0) {
      argv.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(static_cast<char>(b));
    }
  }
  argv.push_back(std::move(cur));

  ArgParser p("tegemma fuzz", "the fuzzer's fixed option set");
  p.option("model", "model directory")
      .option("steps", "training steps", "10")
      .option("lr", "learning rate", "0.001")
      .option("ids", "comma-separated token ids")
      .option("out", "output path", "", /*required=*/true)
      .flag("quiet", "no progress bar");
  (void)p.usage();
  try {
    p.parse(argv);
  } catch (const Error&) {  // UsageError included
    return;
  }
  if (p.help_requested()) return;
  // Each read may refuse its value; all of them are tried.
  auto attempt = [](auto&& fn) {
    try {
      fn();
    } catch (const Error&) {
    }
  };
  attempt([&] { (void)p.get("model"); });
  attempt([&] { (void)p.given("model"); });
  attempt([&] { (void)p.flag_set("quiet"); });
  attempt([&] {
    const int64_t v = p.get_int("steps", 0, 1'000'000);
    FUZZ_ASSERT(v >= 0 && v <= 1'000'000, "get_int honours its range");
  });
  attempt([&] {
    const double v = p.get_double("lr", 0.0, 1.0);
    FUZZ_ASSERT(v >= 0.0 && v <= 1.0, "get_double honours its range");
  });
  attempt([&] { (void)p.get_int_list("ids"); });
  attempt([&] { (void)p.get("out"); });
  attempt([&] { (void)p.get("undeclared"); });  // must refuse, not crash
}

}  // namespace tg::fuzz
