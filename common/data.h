// The training-data pipeline shared by impl/ and the LibTorch reference, so that both see the same batches:
//   1. corpus: text documents (from Debian's `fortunes`, cleaned by fixed rules) -> corpus.jsonl
//   2. tokens: every document as [bos] + encode(doc) + [eos], documents shuffled once by a seed and split
//      train/validation by document -> one binary token file (layout below)
//   3. batches: TokenDataset memory-maps the file; BatchSampler yields [B, S+1] windows of the train split in
//      an order that is a pure function of (seed, step), so a resumed run can jump to any step exactly;
//      ValidationBatches walks the validation split in order.
// The command line is `tegemma prepare-data` (cli/cmd_prepare_data.cpp), driven by ci/prepare_data.sh.
//
// Token file layout (version 1), all integers little-endian:
//   offset  size  field
//        0     8  magic "TGTOKENS"
//        8     4  u32 version (1)
//       12     4  u32 token_bytes: 2 (uint16 tokens, vocab <= 65536) or 4 (uint32)
//       16     4  u32 vocab_size
//       20     4  i32 bos_id (-1: none)
//       24     4  i32 eos_id (-1: none)
//       28     4  u32 reserved, 0
//       32     8  u64 train_tokens
//       40     8  u64 val_tokens
//       48     8  u64 train_docs
//       56     8  u64 val_docs
//       64     8  u64 tokenizer_fingerprint (Tokenizer::fingerprint(), FNV-1a 64 of the .model bytes)
//       72     8  u64 split_seed (the seed that shuffled the documents before the split)
//       80    40  reserved, 0
//      120     8  u64 checksum: FNV-1a 64 over bytes [0, 120) and then the whole payload
//      128     .  payload: train_tokens tokens, then val_tokens tokens
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/file_io.h"

namespace tg {

// ---- Deterministic randomness (fixed algorithms: the same numbers on every compiler and machine) ---------
// SplitMix64 (Steele, Lea, Flood 2014). std::shuffle and the std distributions are implementation-defined,
// so the data order never depends on them.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  uint64_t below(uint64_t n);  // uniform in [0, n), n > 0 (rejection sampling: no modulo bias)
 private:
  uint64_t state_;
};
// Fisher-Yates permutation of [0, n) driven by `rng`.
std::vector<uint64_t> random_permutation(uint64_t n, SplitMix64& rng);
uint64_t fnv1a64(std::span<const uint8_t> bytes, uint64_t h = 0xcbf29ce484222325ull);

// ---- Corpus ----------------------------------------------------------------------------------------------
// Cleaning rules for one fortune entry (fixed: changing them changes the committed token files):
//   - malformed UTF-8 bytes become U+FFFD; "\r\n" becomes "\n", other "\r" are dropped;
//   - overstrike: a backspace deletes itself and the code point before it on its line ("_\bx" -> "x");
//   - other control characters except "\n" and "\t" (C0 and DEL) are dropped;
//   - trailing spaces and tabs are stripped from every line; leading and trailing empty lines are dropped.
std::string clean_fortune(std::string_view raw);
// Splits a strfile text (entries separated by lines holding only "%") and cleans each entry; empty
// entries are dropped.
std::vector<std::string> parse_fortune_file(std::string_view text);

struct CorpusStats {
  int64_t files = 0, entries = 0, duplicates = 0, documents = 0, bytes = 0;  // entries: non-empty, cleaned
};
// All fortune files of `dir` (regular files only: no symlinks such as the *.u8 links, no *.dat indexes,
// no subdirectories), in byte-wise sorted name order; exact duplicate documents are dropped (first kept).
std::vector<std::string> read_fortune_corpus(const std::filesystem::path& dir, CorpusStats* stats = nullptr);

// corpus.jsonl: one JSON object {"text": "..."} per line, one per document.
std::string corpus_to_jsonl(std::span<const std::string> docs);
std::vector<std::string> read_corpus_jsonl(const std::filesystem::path& path);

// ---- Token file ------------------------------------------------------------------------------------------
struct TokenFileHeader {
  static constexpr size_t kSize = 128;
  static constexpr uint32_t kVersion = 1;
  uint32_t version = kVersion;
  uint32_t token_bytes = 2;
  uint32_t vocab_size = 0;
  int32_t bos_id = -1, eos_id = -1;
  uint64_t train_tokens = 0, val_tokens = 0;
  uint64_t train_docs = 0, val_docs = 0;
  uint64_t tokenizer_fingerprint = 0;
  uint64_t split_seed = 0;
  uint64_t checksum = 0;
};

// Writes the file atomically. token_bytes is chosen from vocab_size; every token must be < vocab_size.
// Returns the header as written (with the checksum).
TokenFileHeader write_token_file(const std::filesystem::path& path, TokenFileHeader meta,
                                 std::span<const int32_t> train, std::span<const int32_t> val);

class Tokenizer;

// The corpus -> token file step: documents are shuffled with random_permutation(SplitMix64(seed)); the last
// max(1, round(val_fraction x documents)) of that order are the validation split (0 gives none), the rest
// train; each document becomes [bos] + encode(doc) + [eos] (bos/eos when the tokenizer has them), the
// documents of a split concatenated. Deterministic: the same inputs give the same bytes.
TokenFileHeader tokenize_corpus(const Tokenizer& tok, std::span<const std::string> docs, double val_fraction,
                                uint64_t seed, const std::filesystem::path& out);

enum class Split { Train, Validation };

// A read-only memory map of a token file. The constructor validates the header, the size and (by default)
// the checksum and the token range, and throws tg::Error naming the file and what is wrong.
class TokenDataset {
 public:
  struct Options {
    bool verify = true;  // checksum and token range: one pass over the file, cheap for our corpora
  };
  explicit TokenDataset(const std::filesystem::path& path);
  TokenDataset(const std::filesystem::path& path, Options opt);

  const TokenFileHeader& header() const { return header_; }
  const std::filesystem::path& path() const { return file_.path(); }
  uint64_t size(Split s) const { return s == Split::Train ? header_.train_tokens : header_.val_tokens; }
  int32_t token(Split s, uint64_t i) const;
  // Copies tokens [begin, begin + n) of a split into out (bounds-checked).
  void read(Split s, uint64_t begin, uint64_t n, int32_t* out) const;

 private:
  uint64_t split_base(Split s) const { return s == Split::Train ? 0 : header_.train_tokens; }
  MappedFile file_;
  TokenFileHeader header_;
};

// B windows of S + 1 consecutive tokens: inputs are tokens[:, :S], targets tokens[:, 1:].
struct TokenBatch {
  int64_t rows = 0;                // B (the last validation batch may have fewer)
  int64_t seq = 0;                 // S
  std::vector<int32_t> tokens;     // [rows, S + 1], row-major
  std::vector<uint64_t> starts;    // [rows]: offset of each window in its split
  std::vector<int32_t> inputs() const;   // [rows, S]
  std::vector<int32_t> targets() const;  // [rows, S]
};

// The train split cut into windows of S + 1 tokens with stride S (each token is a target once per epoch);
// epoch e starts the windows at a phase in [0, S) and visits them in a random permutation, both drawn from
// SplitMix64 seeded by (seed, e). Step k is batch k % steps_per_epoch of epoch k / steps_per_epoch; the
// last windows_per_epoch % B windows of each epoch's permutation are not used. batch(step) depends on
// nothing else, so any step can be produced in any order (resume = ask for the next step).
// Not thread-safe (it caches the current epoch's permutation); `data` must outlive the sampler.
class BatchSampler {
 public:
  BatchSampler(const TokenDataset& data, uint64_t seed, int64_t batch, int64_t seq);
  int64_t windows_per_epoch() const { return windows_; }
  int64_t steps_per_epoch() const { return windows_ / batch_; }
  int64_t epoch_of(int64_t step) const { return step / steps_per_epoch(); }
  TokenBatch batch(int64_t step) const;

 private:
  void load_epoch(int64_t epoch) const;
  const TokenDataset* data_;
  uint64_t seed_;
  int64_t batch_, seq_, windows_;
  mutable int64_t cached_epoch_ = -1;
  mutable uint64_t phase_ = 0;
  mutable std::vector<uint64_t> perm_;
};

// The validation split in order: window i covers tokens [i*S, i*S + S + 1); every token after the first is
// a target exactly once up to the tail that does not fill a window. Batches of B windows, the last one
// possibly smaller; max_batches (> 0) keeps only the first ones. `data` must outlive this object.
class ValidationBatches {
 public:
  ValidationBatches(const TokenDataset& data, int64_t batch, int64_t seq, int64_t max_batches = 0);
  int64_t num_windows() const { return windows_; }
  int64_t num_batches() const { return batches_; }
  TokenBatch batch(int64_t i) const;

 private:
  const TokenDataset* data_;
  int64_t batch_, seq_, windows_, batches_;
};

}  // namespace tg
