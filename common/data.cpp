#include "common/data.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/tokenizer.h"

namespace tg {

// ---- Randomness --------------------------------------------------------------------------------------------
uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::below(uint64_t n) {
  TG_CHECK(n > 0, "SplitMix64::below: n must be positive");
  // Reject the top partial block of 2^64 so that every residue is equally likely.
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x;
  do {
    x = next();
  } while (x >= limit);
  return x % n;
}

std::vector<uint64_t> random_permutation(uint64_t n, SplitMix64& rng) {
  std::vector<uint64_t> p(n);
  for (uint64_t i = 0; i < n; ++i) p[i] = i;
  for (uint64_t i = n; i > 1; --i) std::swap(p[i - 1], p[rng.below(i)]);
  return p;
}

uint64_t fnv1a64(std::span<const uint8_t> bytes, uint64_t h) {
  for (const uint8_t b : bytes) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}

// ---- Corpus ------------------------------------------------------------------------------------------------
std::string clean_fortune(std::string_view raw) {
  std::vector<std::string> lines(1);
  std::vector<size_t> cp_starts;  // byte offsets of the code points of the current line (for backspace)
  size_t i = 0;
  while (i < raw.size()) {
    size_t len = 0;
    const char32_t c = utf8_decode(raw.substr(i), &len);  // malformed -> U+FFFD, len 1
    i += len;
    std::string& line = lines.back();
    if (c == '\n') {
      lines.emplace_back();
      cp_starts.clear();
    } else if (c == '\b') {
      if (!cp_starts.empty()) {
        line.resize(cp_starts.back());
        cp_starts.pop_back();
      }
    } else if ((c < 0x20 && c != '\t') || c == 0x7F || (c >= 0x80 && c <= 0x9F)) {
      // control characters ("\r" included) are dropped
    } else {
      cp_starts.push_back(line.size());
      utf8_append(c, &line);
    }
  }
  for (auto& l : lines) {
    while (!l.empty() && (l.back() == ' ' || l.back() == '\t')) l.pop_back();
  }
  size_t first = 0, last = lines.size();
  while (first < last && lines[first].empty()) ++first;
  while (last > first && lines[last - 1].empty()) --last;
  std::string out;
  for (size_t k = first; k < last; ++k) {
    if (k > first) out += '\n';
    out += lines[k];
  }
  return out;
}

std::vector<std::string> parse_fortune_file(std::string_view text) {
  std::vector<std::string> docs;
  size_t entry_begin = 0, pos = 0;
  const auto flush = [&](size_t end) {
    std::string doc = clean_fortune(text.substr(entry_begin, end - entry_begin));
    if (!doc.empty()) docs.push_back(std::move(doc));
  };
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    const size_t next = eol == std::string_view::npos ? text.size() : eol + 1;
    if (eol == std::string_view::npos) eol = text.size();
    const std::string_view line = text.substr(pos, eol - pos);
    if (line == "%" || line == "%\r") {
      flush(pos);
      entry_begin = next;
    }
    pos = next;
  }
  flush(text.size());
  return docs;
}

std::vector<std::string> read_fortune_corpus(const std::filesystem::path& dir, CorpusStats* stats) {
  namespace fs = std::filesystem;
  TG_CHECK(fs::is_directory(dir), "fortunes directory '", dir.string(),
           "' does not exist (install the Debian package `fortunes`)");
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!fs::is_regular_file(e.symlink_status())) continue;  // *.u8 links, subdirectories
    if (e.path().extension() == ".dat") continue;              // strfile indexes
    files.push_back(e.path());
  }
  std::sort(files.begin(), files.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename().string() < b.filename().string(); });
  TG_CHECK(!files.empty(), "fortunes directory '", dir.string(), "' holds no fortune files");
  CorpusStats st;
  std::vector<std::string> docs;
  std::unordered_set<std::string> seen;
  for (const auto& f : files) {
    ++st.files;
    const std::string text = read_file(f);
    std::vector<std::string> entries = parse_fortune_file(text);
    st.entries += static_cast<int64_t>(entries.size());
    for (auto& d : entries) {
      if (!seen.insert(d).second) {
        ++st.duplicates;
        continue;
      }
      st.bytes += static_cast<int64_t>(d.size());
      docs.push_back(std::move(d));
    }
  }
  st.documents = static_cast<int64_t>(docs.size());
  if (stats) *stats = st;
  return docs;
}

std::string corpus_to_jsonl(std::span<const std::string> docs) {
  std::string out;
  for (const auto& d : docs) {
    out += nlohmann::json{{"text", d}}.dump();
    out += '\n';
  }
  return out;
}

std::vector<std::string> read_corpus_jsonl(const std::filesystem::path& path) {
  const std::string text = read_file(path);
  std::vector<std::string> docs;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    ++line_no;
    const std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      TG_FAIL("corpus '", path.string(), "': line ", line_no, ": not JSON: ", e.what());
    }
    TG_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(), "corpus '", path.string(), "': line ",
             line_no, ": expected an object with a string field \"text\"");
    docs.push_back(j["text"].get<std::string>());
  }
  return docs;
}

// ---- Token file --------------------------------------------------------------------------------------------
namespace {

constexpr char kMagic[8] = {'T', 'G', 'T', 'O', 'K', 'E', 'N', 'S'};
constexpr size_t kChecksumOffset = 120;

void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

std::vector<uint8_t> encode_header(const TokenFileHeader& h) {
  std::vector<uint8_t> b(TokenFileHeader::kSize, 0);
  std::memcpy(b.data(), kMagic, 8);
  put32(&b[8], h.version);
  put32(&b[12], h.token_bytes);
  put32(&b[16], h.vocab_size);
  put32(&b[20], static_cast<uint32_t>(h.bos_id));
  put32(&b[24], static_cast<uint32_t>(h.eos_id));
  put64(&b[32], h.train_tokens);
  put64(&b[40], h.val_tokens);
  put64(&b[48], h.train_docs);
  put64(&b[56], h.val_docs);
  put64(&b[64], h.tokenizer_fingerprint);
  put64(&b[72], h.split_seed);
  put64(&b[kChecksumOffset], h.checksum);
  return b;
}

std::vector<uint8_t> encode_tokens(std::span<const int32_t> tokens, uint32_t token_bytes, uint32_t vocab,
                                   const std::filesystem::path& path, const char* split) {
  std::vector<uint8_t> out(tokens.size() * token_bytes);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t t = tokens[i];
    TG_CHECK(t >= 0 && static_cast<uint32_t>(t) < vocab, "token file '", path.string(), "': ", split, " token ", i,
             " is ", t, ", outside [0, ", vocab, ")");
    for (uint32_t k = 0; k < token_bytes; ++k) out[i * token_bytes + k] = static_cast<uint8_t>(t >> (8 * k));
  }
  return out;
}

}  // namespace

TokenFileHeader write_token_file(const std::filesystem::path& path, TokenFileHeader meta,
                                 std::span<const int32_t> train, std::span<const int32_t> val) {
  TG_CHECK(meta.vocab_size > 0, "write_token_file '", path.string(), "': vocab_size must be positive");
  meta.version = TokenFileHeader::kVersion;
  meta.token_bytes = meta.vocab_size <= 65536 ? 2 : 4;
  meta.train_tokens = train.size();
  meta.val_tokens = val.size();
  meta.checksum = 0;
  const auto tr = encode_tokens(train, meta.token_bytes, meta.vocab_size, path, "train");
  const auto va = encode_tokens(val, meta.token_bytes, meta.vocab_size, path, "validation");
  auto head = encode_header(meta);
  uint64_t h = fnv1a64(std::span<const uint8_t>(head.data(), kChecksumOffset));
  h = fnv1a64(tr, h);
  h = fnv1a64(va, h);
  meta.checksum = h;
  put64(&head[kChecksumOffset], h);
  AtomicFile f(path);
  f.write(head.data(), head.size());
  f.write(tr.data(), tr.size());
  f.write(va.data(), va.size());
  f.commit();
  return meta;
}

TokenFileHeader tokenize_corpus(const Tokenizer& tok, std::span<const std::string> docs, double val_fraction,
                                uint64_t seed, const std::filesystem::path& out) {
  TG_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, "tokenize_corpus: val_fraction must be in [0, 1), got ",
           val_fraction);
  const auto n = static_cast<uint64_t>(docs.size());
  uint64_t n_val = 0;
  if (val_fraction > 0.0) {
    n_val = std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(val_fraction * static_cast<double>(n))));
  }
  TG_CHECK(n_val < n, "tokenize_corpus: ", n, " documents cannot give ", n_val,
           " validation documents and a non-empty train split");
  SplitMix64 rng(seed);
  const std::vector<uint64_t> order = random_permutation(n, rng);
  EncodeOptions opt;
  opt.add_bos = tok.bos_id() >= 0;
  opt.add_eos = tok.eos_id() >= 0;
  std::vector<int32_t> train, val;
  for (uint64_t k = 0; k < n; ++k) {
    const auto ids = tok.encode(docs[order[k]], opt);
    auto& dst = k < n - n_val ? train : val;
    dst.insert(dst.end(), ids.begin(), ids.end());
  }
  TokenFileHeader meta;
  meta.vocab_size = static_cast<uint32_t>(tok.vocab_size());
  meta.bos_id = tok.bos_id();
  meta.eos_id = tok.eos_id();
  meta.train_docs = n - n_val;
  meta.val_docs = n_val;
  meta.tokenizer_fingerprint = tok.fingerprint();
  meta.split_seed = seed;
  return write_token_file(out, meta, train, val);
}

TokenDataset::TokenDataset(const std::filesystem::path& path) : TokenDataset(path, Options{}) {}

TokenDataset::TokenDataset(const std::filesystem::path& path, Options opt) : file_(path) {
  const std::string name = "token file '" + path.string() + "': ";
  const auto bytes = file_.bytes();
  const std::string hint = " (regenerate it with ci/prepare_data.sh)";
  TG_CHECK(bytes.size() >= TokenFileHeader::kSize, name, bytes.size(), " bytes, smaller than the ",
           TokenFileHeader::kSize, "-byte header (truncated?)");
  const uint8_t* b = bytes.data();
  TG_CHECK(std::memcmp(b, kMagic, 8) == 0, name, "bad magic (expected \"TGTOKENS\"): not a tegemma token file");
  TokenFileHeader& h = header_;
  h.version = get32(b + 8);
  TG_CHECK(h.version == TokenFileHeader::kVersion, name, "version ", h.version, ", expected ",
           TokenFileHeader::kVersion, hint);
  h.token_bytes = get32(b + 12);
  h.vocab_size = get32(b + 16);
  h.bos_id = static_cast<int32_t>(get32(b + 20));
  h.eos_id = static_cast<int32_t>(get32(b + 24));
  h.train_tokens = get64(b + 32);
  h.val_tokens = get64(b + 40);
  h.train_docs = get64(b + 48);
  h.val_docs = get64(b + 56);
  h.tokenizer_fingerprint = get64(b + 64);
  h.split_seed = get64(b + 72);
  h.checksum = get64(b + kChecksumOffset);
  TG_CHECK(h.token_bytes == 2 || h.token_bytes == 4, name, "token_bytes ", h.token_bytes, ", expected 2 or 4");
  TG_CHECK(h.vocab_size > 0 && (h.token_bytes == 4 || h.vocab_size <= 65536), name, "vocab_size ", h.vocab_size,
           " does not fit ", h.token_bytes, "-byte tokens");
  TG_CHECK(get32(b + 28) == 0 && std::all_of(b + 80, b + kChecksumOffset, [](uint8_t x) { return x == 0; }), name,
           "reserved header bytes are not zero");
  const uint64_t max_tokens = (std::numeric_limits<uint64_t>::max() - TokenFileHeader::kSize) / h.token_bytes;
  TG_CHECK(h.train_tokens <= max_tokens && h.val_tokens <= max_tokens - h.train_tokens, name,
           "token counts overflow (train ", h.train_tokens, ", validation ", h.val_tokens, ")");
  const uint64_t want = TokenFileHeader::kSize + (h.train_tokens + h.val_tokens) * h.token_bytes;
  TG_CHECK(bytes.size() == want, name, "size ", bytes.size(), " bytes, expected ", want, " = ", TokenFileHeader::kSize,
           " + (", h.train_tokens, " train + ", h.val_tokens, " validation tokens) x ", h.token_bytes,
           (bytes.size() < want ? " (truncated)" : " (trailing bytes)"));
  if (opt.verify) {
    uint64_t sum = fnv1a64(bytes.subspan(0, kChecksumOffset));
    sum = fnv1a64(bytes.subspan(TokenFileHeader::kSize), sum);
    TG_CHECK(sum == h.checksum, name, "checksum mismatch: the header says 0x", std::hex, h.checksum,
             ", the contents give 0x", sum, std::dec, " (corrupted)", hint);
    const uint64_t n = h.train_tokens + h.val_tokens;
    for (uint64_t i = 0; i < n; ++i) {
      const uint8_t* p = b + TokenFileHeader::kSize + i * h.token_bytes;
      const uint32_t t = h.token_bytes == 2 ? static_cast<uint32_t>(p[0] | (p[1] << 8)) : get32(p);
      TG_CHECK(t < h.vocab_size, name, "token ", i, " is ", t, ", outside the vocabulary [0, ", h.vocab_size, ")");
    }
  }
}

int32_t TokenDataset::token(Split s, uint64_t i) const {
  int32_t t;
  read(s, i, 1, &t);
  return t;
}

void TokenDataset::read(Split s, uint64_t begin, uint64_t n, int32_t* out) const {
  const uint64_t size = this->size(s);
  TG_CHECK(begin <= size && n <= size - begin, "token file '", path().string(), "': read of [", begin, ", ",
           begin + n, ") is outside the ", s == Split::Train ? "train" : "validation", " split of ", size, " tokens");
  const uint8_t* p = file_.bytes().data() + TokenFileHeader::kSize + (split_base(s) + begin) * header_.token_bytes;
  if (header_.token_bytes == 2) {
    for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(p[2 * i] | (p[2 * i + 1] << 8));
  } else {
    for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(get32(p + 4 * i));
  }
}

// ---- Batches -----------------------------------------------------------------------------------------------
std::vector<int32_t> TokenBatch::inputs() const {
  std::vector<int32_t> v(static_cast<size_t>(rows * seq));
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(tokens.begin() + r * (seq + 1), seq, v.begin() + r * seq);
  }
  return v;
}

std::vector<int32_t> TokenBatch::targets() const {
  std::vector<int32_t> v(static_cast<size_t>(rows * seq));
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(tokens.begin() + r * (seq + 1) + 1, seq, v.begin() + r * seq);
  }
  return v;
}

BatchSampler::BatchSampler(const TokenDataset& data, uint64_t seed, int64_t batch, int64_t seq)
    : data_(&data), seed_(seed), batch_(batch), seq_(seq) {
  TG_CHECK(batch >= 1 && seq >= 1, "BatchSampler: batch and seq must be positive, got batch ", batch, ", seq ", seq);
  const uint64_t n = data.size(Split::Train);
  const auto s = static_cast<uint64_t>(seq);
  // With any phase in [0, S), windows_ windows of S + 1 tokens at stride S fit: phase + W*S + 1 <= N.
  windows_ = n >= s ? static_cast<int64_t>((n - s) / s) : 0;
  TG_CHECK(windows_ >= batch, "token file '", data.path().string(), "': the train split has ", n, " tokens, ",
           windows_, " windows of ", seq + 1, " tokens (stride ", seq, "), fewer than batch ", batch);
}

void BatchSampler::load_epoch(int64_t epoch) const {
  if (epoch == cached_epoch_) return;
  // One stream per (seed, epoch): the seed and the epoch are mixed through SplitMix64 so that nearby seeds
  // and epochs give unrelated orders.
  SplitMix64 mix(seed_);
  SplitMix64 rng(mix.next() ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(epoch + 1)));
  phase_ = rng.below(static_cast<uint64_t>(seq_));
  perm_ = random_permutation(static_cast<uint64_t>(windows_), rng);
  cached_epoch_ = epoch;
}

TokenBatch BatchSampler::batch(int64_t step) const {
  TG_CHECK(step >= 0, "BatchSampler: step must be non-negative, got ", step);
  load_epoch(epoch_of(step));
  const int64_t k = step % steps_per_epoch();
  TokenBatch out;
  out.rows = batch_;
  out.seq = seq_;
  out.tokens.resize(static_cast<size_t>(batch_ * (seq_ + 1)));
  out.starts.resize(static_cast<size_t>(batch_));
  for (int64_t r = 0; r < batch_; ++r) {
    const uint64_t w = perm_[static_cast<size_t>(k * batch_ + r)];
    const uint64_t start = phase_ + w * static_cast<uint64_t>(seq_);
    out.starts[static_cast<size_t>(r)] = start;
    data_->read(Split::Train, start, static_cast<uint64_t>(seq_ + 1), out.tokens.data() + r * (seq_ + 1));
  }
  return out;
}

ValidationBatches::ValidationBatches(const TokenDataset& data, int64_t batch, int64_t seq, int64_t max_batches)
    : data_(&data), batch_(batch), seq_(seq) {
  TG_CHECK(batch >= 1 && seq >= 1, "ValidationBatches: batch and seq must be positive, got batch ", batch,
           ", seq ", seq);
  const uint64_t n = data.size(Split::Validation);
  windows_ = n >= 1 ? static_cast<int64_t>((n - 1) / static_cast<uint64_t>(seq)) : 0;
  TG_CHECK(windows_ >= 1, "token file '", data.path().string(), "': the validation split has ", n,
           " tokens, fewer than one window of ", seq + 1);
  batches_ = (windows_ + batch - 1) / batch;
  if (max_batches > 0) batches_ = std::min(batches_, max_batches);
}

TokenBatch ValidationBatches::batch(int64_t i) const {
  TG_CHECK(i >= 0 && i < batches_, "ValidationBatches: batch ", i, " is outside [0, ", batches_, ")");
  TokenBatch out;
  out.rows = std::min(batch_, windows_ - i * batch_);
  out.seq = seq_;
  out.tokens.resize(static_cast<size_t>(out.rows * (seq_ + 1)));
  out.starts.resize(static_cast<size_t>(out.rows));
  for (int64_t r = 0; r < out.rows; ++r) {
    const auto start = static_cast<uint64_t>((i * batch_ + r) * seq_);
    out.starts[static_cast<size_t>(r)] = start;
    data_->read(Split::Validation, start, static_cast<uint64_t>(seq_ + 1), out.tokens.data() + r * (seq_ + 1));
  }
  return out;
}

}  // namespace tg
