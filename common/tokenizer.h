// A SentencePiece tokenizer written from the published algorithm, without libsentencepiece: it reads a
// serialized sentencepiece ModelProto (`tokenizer.model`, ours from spm_train or a real Gemma one) and
// encodes/decodes exactly as SentencePieceProcessor does for the models we support.
//
// Supported: model_type BPE; normalizer without a precompiled charsmap ("identity", Gemma's and ours), with
// add_dummy_prefix / remove_extra_whitespaces / escape_whitespaces as the model says; byte_fallback;
// user-defined pieces (matched before BPE and never merged, as sentencepiece does); UNUSED pieces
// (re-segmented). Not supported, rejected when the model is loaded with an error saying so: UNIGRAM/WORD/CHAR
// models, a precompiled (e.g. nmt_nfkc) normaliser, treat_whitespace_as_suffix. ci/prepare_data.sh trains
// ours with --model_type=bpe --normalization_rule_name=identity.
//
// Beyond sentencepiece, as HF's GemmaTokenizer does: `parse_special` matches the literal text of CONTROL
// and UNKNOWN pieces (e.g. "<start_of_turn>", "<bos>") in the input before SentencePiece runs; the text
// between them is encoded segment by segment.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tg {

// sentencepiece ModelProto.SentencePiece.Type (the numbers are the wire values).
enum class PieceType : uint8_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };
const char* to_string(PieceType t);

// The ModelProto fields the tokenizer uses (proto2 defaults where the file leaves a field out).
struct TokenizerModelInfo {
  std::string model_type = "UNIGRAM";  // UNIGRAM | BPE | WORD | CHAR
  int32_t trainer_vocab_size = 8000;   // trainer_spec.vocab_size as written (the piece count is authoritative)
  bool byte_fallback = false;
  bool split_digits = false;
  bool treat_whitespace_as_suffix = false;
  std::string unk_piece = "<unk>", bos_piece = "<s>", eos_piece = "</s>", pad_piece = "<pad>";
  std::string unk_surface = " \xE2\x81\x87 ";  // " ⁇ ": what <unk> decodes to
  std::string normalizer_name;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  bool has_precompiled_charsmap = false;
  bool has_denormalizer = false;
};

struct EncodeOptions {
  bool add_bos = false;        // prepend bos_id() (an error if the model has no BOS control piece)
  bool add_eos = false;        // append eos_id()
  bool parse_special = false;  // match CONTROL/UNKNOWN piece texts in the input first (HF added tokens)
};

struct DecodeOptions {
  // true: sentencepiece's Decode (control pieces vanish, <unk> becomes unk_surface " ⁇ ").
  // false: control and unknown pieces are written as their piece text (HF skip_special_tokens=False).
  bool skip_special = true;
};

// Immutable after loading: const methods may be called from several threads at once.
class Tokenizer {
 public:
  // Parses a serialized ModelProto. Malformed or unsupported input throws tg::Error naming `source` (and
  // the byte offset for wire-format damage); nothing is ever read outside `bytes`.
  static Tokenizer from_bytes(std::string_view bytes, std::string_view source);
  static Tokenizer from_file(const std::filesystem::path& path);

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& opt = {}) const;
  // The pieces (strings) encode() would give, for debugging and tests.
  std::vector<std::string> encode_pieces(std::string_view text, const EncodeOptions& opt = {}) const;
  // Throws tg::Error on an id outside [0, vocab_size()).
  std::string decode(std::span<const int32_t> ids, const DecodeOptions& opt = {}) const;

  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }
  const std::string& piece(int32_t id) const;
  float score(int32_t id) const;
  PieceType type(int32_t id) const;
  // The id of a piece string (sentencepiece's PieceToId without the unk fallback): -1 if absent.
  int32_t piece_to_id(std::string_view piece) const;
  // -1 when the model has no such piece (sentencepiece: bos/eos/pad must be CONTROL, unk UNKNOWN).
  int32_t unk_id() const { return unk_id_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  const TokenizerModelInfo& info() const { return info_; }
  // FNV-1a 64 of the serialized model: ties a token file to the tokenizer that produced it.
  uint64_t fingerprint() const { return fingerprint_; }
  const std::string& source() const { return source_; }

 private:
  friend class StreamDecoder;
  struct Piece {
    std::string text;
    float score = 0.0f;
    PieceType type = PieceType::Normal;
  };
  // A byte trie for longest-prefix matching of a fixed string set (user-defined or special pieces).
  struct PrefixTrie {
    struct Node {
      std::map<unsigned char, int32_t> next;
      int32_t id = -1;  // piece id when a string ends here
    };
    std::vector<Node> nodes{Node{}};
    void insert(std::string_view s, int32_t id);
    // Length of the longest string of the set that prefixes `s` (0 if none); its id in *id.
    size_t longest_match(std::string_view s, int32_t* id) const;
    bool empty() const { return nodes.size() == 1; }
  };

  Tokenizer() = default;
  void init(std::string_view source);
  std::string normalize(std::string_view input) const;
  // BPE over one normalized string: (piece, id) in sentencepiece's ModelInterface sense (id may be unk).
  void bpe(std::string_view normalized, std::vector<std::pair<std::string_view, int32_t>>* out) const;
  // Appends the ids of one segment (no special-token matching) to *ids and, if given, the pieces.
  void encode_segment(std::string_view text, std::vector<int32_t>* ids, std::vector<std::string>* pieces) const;
  void encode_impl(std::string_view text, const EncodeOptions& opt, std::vector<int32_t>* ids,
                   std::vector<std::string>* pieces) const;
  int32_t lookup(std::string_view piece) const;  // reserved first, then normal; unk_id_ if absent
  struct DecodeState {
    bool is_bos_ws = true, bos_ws_seen = false, any_text = false;
  };
  std::string decode_step(DecodeState* st, int32_t id, const DecodeOptions& opt) const;
  void check_id(int32_t id) const;

  std::string source_;
  TokenizerModelInfo info_;
  std::vector<Piece> pieces_;
  std::unordered_map<std::string_view, int32_t> normal_;    // NORMAL, USER_DEFINED, UNUSED
  std::unordered_map<std::string_view, int32_t> reserved_;  // CONTROL, UNKNOWN, BYTE
  PrefixTrie user_defined_, special_;
  int32_t byte_ids_[256] = {};
  int32_t unk_id_ = -1, bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
  uint64_t fingerprint_ = 0;
};

// Decodes token by token for generation: push() returns the text that has become final (never half a
// UTF-8 character: byte-fallback pieces are held until their character is complete or proven invalid);
// the concatenation of all push() results and finish() equals Tokenizer::decode of the same ids.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, DecodeOptions opt = {});
  std::string push(int32_t id);
  std::string finish();  // flushes held bytes (an incomplete character becomes U+FFFD per byte)

 private:
  std::string emit_bytes(bool final);
  const Tokenizer* tok_;
  DecodeOptions opt_;
  std::string pending_;  // bytes of byte-fallback pieces not yet emitted
  Tokenizer::DecodeState state_;
};

// UTF-8 helpers shared with the corpus preparation. utf8_decode follows sentencepiece's DecodeUTF8: returns
// the code point and its length in *len, or U+FFFD with *len = 1 for a malformed sequence (overlong,
// surrogate, > U+10FFFF, truncated).
char32_t utf8_decode(std::string_view s, size_t* len);
bool utf8_valid_char(std::string_view s, size_t* len);  // sentencepiece's IsValidDecodeUTF8
void utf8_append(char32_t c, std::string* out);

}  // namespace tg
