#include "common/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <queue>
#include <utility>

#include "common/check.h"
#include "common/file_io.h"

namespace tg {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581, what a space becomes
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD
constexpr size_t kMaxPieceSize = 8000;                         // sentencepiece's limit

uint64_t fnv1a64(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

bool is_trail_byte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }
bool is_valid_codepoint(char32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

// sentencepiece's OneCharLen: the sequence length the lead byte announces (1 for stray trail bytes).
size_t one_char_len(char c) { return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[static_cast<unsigned char>(c) >> 4]; }

// "<0x4A>" -> 0x4A; -1 if `piece` is not exactly a byte piece as sentencepiece spells them.
int piece_to_byte(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = piece[i];
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return -1;  // sentencepiece writes upper-case hex only
    }
    v = v * 16 + d;
  }
  return v;
}

std::string byte_piece(unsigned char b) {
  static const char* hex = "0123456789ABCDEF";
  return std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
}

// ---- Protobuf wire format: just enough to read a ModelProto, with bounds checks on every read -----------
class WireReader {
 public:
  WireReader(std::string_view buf, size_t begin, size_t end, std::string_view source)
      : buf_(buf), pos_(begin), end_(end), source_(source) {}

  bool done() const { return pos_ >= end_; }
  size_t pos() const { return pos_; }

  [[noreturn]] void fail(size_t at, const std::string& what) const {
    TG_FAIL("tokenizer model '", source_, "': offset ", at, ": ", what,
            " (not a valid sentencepiece ModelProto?)");
  }

  uint64_t varint() {
    const size_t start = pos_;
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= end_) fail(start, "truncated varint");
      const uint8_t b = static_cast<uint8_t>(buf_[pos_++]);
      if (shift == 63 && (b & 0x7E) != 0) fail(start, "varint overflows 64 bits");
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return v;
    }
    fail(start, "varint longer than 10 bytes");
  }

  // Reads a tag; returns false at the end of the message.
  bool tag(uint32_t* field, uint32_t* wire) {
    if (done()) return false;
    tag_pos_ = pos_;
    const uint64_t t = varint();
    *field = static_cast<uint32_t>(t >> 3);
    *wire = static_cast<uint32_t>(t & 7);
    if (*field == 0 || (t >> 3) > 0x1FFFFFFF) fail(tag_pos_, "invalid field number " + std::to_string(t >> 3));
    return true;
  }

  // The [begin, end) range of a length-delimited field's payload; advances past it.
  std::pair<size_t, size_t> delimited() {
    const size_t start = pos_;
    const uint64_t n = varint();
    if (n > end_ - pos_) {
      fail(start, "length " + std::to_string(n) + " runs past the end of its message (" +
                      std::to_string(end_ - pos_) + " bytes left)");
    }
    const size_t b = pos_;
    pos_ += static_cast<size_t>(n);
    return {b, pos_};
  }
  std::string_view bytes() {
    const auto [b, e] = delimited();
    return buf_.substr(b, e - b);
  }
  uint32_t fixed32() {
    if (end_ - pos_ < 4) fail(pos_, "truncated fixed32");
    uint32_t v;
    std::memcpy(&v, buf_.data() + pos_, 4);  // little-endian host (x86-64 / aarch64)
    pos_ += 4;
    return v;
  }
  float float32() {
    const uint32_t u = fixed32();
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }

  void expect_wire(uint32_t field, uint32_t wire, uint32_t want) const {
    if (wire != want) {
      fail(tag_pos_, "field " + std::to_string(field) + " has wire type " + std::to_string(wire) + ", expected " +
                         std::to_string(want));
    }
  }

  void skip(uint32_t field, uint32_t wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1:
        if (end_ - pos_ < 8) fail(pos_, "truncated fixed64 in field " + std::to_string(field));
        pos_ += 8;
        break;
      case 2: delimited(); break;
      case 5: fixed32(); break;
      default:
        fail(tag_pos_, "unsupported wire type " + std::to_string(wire) + " (field " + std::to_string(field) + ")");
    }
  }

  std::string_view buf() const { return buf_; }

 private:
  std::string_view buf_;
  size_t pos_, end_;
  size_t tag_pos_ = 0;
  std::string_view source_;
};

int32_t as_int32(uint64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }  // proto int32

struct ParsedModel {
  struct RawPiece {
    std::string text;
    float score = 0.0f;
    uint64_t type = 1;
    size_t offset = 0;
  };
  std::vector<RawPiece> pieces;
  TokenizerModelInfo info;
};

void parse_piece(WireReader& r, ParsedModel::RawPiece* p) {
  uint32_t field, wire;
  while (r.tag(&field, &wire)) {
    if (field == 1) {
      r.expect_wire(field, wire, 2);
      p->text = std::string(r.bytes());
    } else if (field == 2) {
      r.expect_wire(field, wire, 5);
      p->score = r.float32();
    } else if (field == 3) {
      r.expect_wire(field, wire, 0);
      p->type = r.varint();
    } else {
      r.skip(field, wire);
    }
  }
}

void parse_trainer_spec(WireReader& r, TokenizerModelInfo* info) {
  uint32_t field, wire;
  while (r.tag(&field, &wire)) {
    auto str = [&]() {
      r.expect_wire(field, wire, 2);
      return std::string(r.bytes());
    };
    auto num = [&]() {
      r.expect_wire(field, wire, 0);
      return r.varint();
    };
    switch (field) {
      case 3: {
        const uint64_t t = num();
        static const char* names[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
        info->model_type = t >= 1 && t <= 4 ? names[t] : "unknown(" + std::to_string(t) + ")";
        break;
      }
      case 4: info->trainer_vocab_size = as_int32(num()); break;
      case 24: info->treat_whitespace_as_suffix = num() != 0; break;
      case 25: info->split_digits = num() != 0; break;
      case 35: info->byte_fallback = num() != 0; break;
      case 44: info->unk_surface = str(); break;
      case 45: info->unk_piece = str(); break;
      case 46: info->bos_piece = str(); break;
      case 47: info->eos_piece = str(); break;
      case 48: info->pad_piece = str(); break;
      default: r.skip(field, wire);
    }
  }
}

// Returns whether the spec carries a non-empty precompiled charsmap.
bool parse_normalizer_spec(WireReader& r, TokenizerModelInfo* info) {
  bool charsmap = false;
  uint32_t field, wire;
  while (r.tag(&field, &wire)) {
    switch (field) {
      case 1:
        r.expect_wire(field, wire, 2);
        if (info) info->normalizer_name = std::string(r.bytes()); else r.bytes();
        break;
      case 2:
        r.expect_wire(field, wire, 2);
        charsmap = !r.bytes().empty();
        break;
      case 3:
      case 4:
      case 5: {
        r.expect_wire(field, wire, 0);
        const bool v = r.varint() != 0;
        if (!info) break;
        if (field == 3) info->add_dummy_prefix = v;
        if (field == 4) info->remove_extra_whitespaces = v;
        if (field == 5) info->escape_whitespaces = v;
        break;
      }
      default: r.skip(field, wire);
    }
  }
  return charsmap;
}

ParsedModel parse_model_proto(std::string_view bytes, std::string_view source) {
  ParsedModel m;
  WireReader r(bytes, 0, bytes.size(), source);
  uint32_t field, wire;
  while (r.tag(&field, &wire)) {
    if (field >= 1 && field <= 5 && field != 4) r.expect_wire(field, wire, 2);
    if (field == 1) {
      ParsedModel::RawPiece p;
      p.offset = r.pos();
      const auto [b, e] = r.delimited();
      WireReader sub(bytes, b, e, source);
      parse_piece(sub, &p);
      m.pieces.push_back(std::move(p));
    } else if (field == 2) {
      const auto [b, e] = r.delimited();
      WireReader sub(bytes, b, e, source);
      parse_trainer_spec(sub, &m.info);
    } else if (field == 3) {
      const auto [b, e] = r.delimited();
      WireReader sub(bytes, b, e, source);
      m.info.has_precompiled_charsmap = parse_normalizer_spec(sub, &m.info);
    } else if (field == 5) {
      const auto [b, e] = r.delimited();
      WireReader sub(bytes, b, e, source);
      m.info.has_denormalizer = parse_normalizer_spec(sub, nullptr);
    } else {
      r.skip(field, wire);
    }
  }
  return m;
}

}  // namespace

// ---- UTF-8 (sentencepiece's string_util semantics) -------------------------------------------------------
char32_t utf8_decode(std::string_view s, size_t* len) {
  const size_t n = s.size();
  if (n == 0) {
    *len = 0;
    return 0xFFFD;
  }
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  if (b(0) < 0x80) {
    *len = 1;
    return b(0);
  } else if (n >= 2 && (b(0) & 0xE0) == 0xC0) {
    const char32_t cp = ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    if (is_trail_byte(s[1]) && cp >= 0x80 && is_valid_codepoint(cp)) {
      *len = 2;
      return cp;
    }
  } else if (n >= 3 && (b(0) & 0xF0) == 0xE0) {
    const char32_t cp = ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    if (is_trail_byte(s[1]) && is_trail_byte(s[2]) && cp >= 0x800 && is_valid_codepoint(cp)) {
      *len = 3;
      return cp;
    }
  } else if (n >= 4 && (b(0) & 0xF8) == 0xF0) {
    const char32_t cp = ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    if (is_trail_byte(s[1]) && is_trail_byte(s[2]) && is_trail_byte(s[3]) && cp >= 0x10000 &&
        is_valid_codepoint(cp)) {
      *len = 4;
      return cp;
    }
  }
  *len = 1;
  return 0xFFFD;
}

bool utf8_valid_char(std::string_view s, size_t* len) {
  const char32_t c = utf8_decode(s, len);
  return c != 0xFFFD || *len == 3;  // a literal U+FFFD is valid
}

void utf8_append(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

const char* to_string(PieceType t) {
  switch (t) {
    case PieceType::Normal: return "NORMAL";
    case PieceType::Unknown: return "UNKNOWN";
    case PieceType::Control: return "CONTROL";
    case PieceType::UserDefined: return "USER_DEFINED";
    case PieceType::Unused: return "UNUSED";
    case PieceType::Byte: return "BYTE";
  }
  return "?";
}

// ---- PrefixTrie --------------------------------------------------------------------------------------
void Tokenizer::PrefixTrie::insert(std::string_view s, int32_t id) {
  int32_t node = 0;
  for (const char c : s) {
    const auto key = static_cast<unsigned char>(c);
    auto it = nodes[node].next.find(key);
    if (it == nodes[node].next.end()) {
      nodes.push_back(Node{});
      const auto child = static_cast<int32_t>(nodes.size() - 1);
      nodes[node].next.emplace(key, child);
      node = child;
    } else {
      node = it->second;
    }
  }
  nodes[node].id = id;
}

size_t Tokenizer::PrefixTrie::longest_match(std::string_view s, int32_t* id) const {
  size_t best = 0;
  int32_t node = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const auto it = nodes[node].next.find(static_cast<unsigned char>(s[i]));
    if (it == nodes[node].next.end()) break;
    node = it->second;
    if (nodes[node].id >= 0) {
      best = i + 1;
      *id = nodes[node].id;
    }
  }
  return best;
}

// ---- Loading -----------------------------------------------------------------------------------------
Tokenizer Tokenizer::from_file(const std::filesystem::path& path) {
  const std::string bytes = read_file(path);
  return from_bytes(bytes, path.string());
}

Tokenizer Tokenizer::from_bytes(std::string_view bytes, std::string_view source) {
  ParsedModel m = parse_model_proto(bytes, source);
  Tokenizer t;
  t.source_ = std::string(source);
  t.info_ = std::move(m.info);
  t.fingerprint_ = fnv1a64(bytes);
  TG_CHECK(!m.pieces.empty(), "tokenizer model '", source, "': no pieces (an empty or non-sentencepiece file?)");
  TG_CHECK(m.pieces.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
           "tokenizer model '", source, "': too many pieces: ", m.pieces.size());
  t.pieces_.reserve(m.pieces.size());
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    auto& p = m.pieces[i];
    TG_CHECK(p.type >= 1 && p.type <= 6, "tokenizer model '", source, "': offset ", p.offset, ": piece ", i,
             " has type ", p.type, ", expected 1..6 (NORMAL..BYTE)");
    t.pieces_.push_back(Piece{std::move(p.text), p.score, static_cast<PieceType>(p.type)});
  }
  t.init(source);
  return t;
}

void Tokenizer::init(std::string_view source) {
  const auto fail_prefix = [&]() { return "tokenizer model '" + std::string(source) + "': "; };
  TG_CHECK(info_.model_type == "BPE", fail_prefix(), "model_type ", info_.model_type,
           " is not supported (only BPE, Gemma's type); train with spm_train --model_type=bpe");
  TG_CHECK(!info_.has_precompiled_charsmap, fail_prefix(), "normalizer '", info_.normalizer_name,
           "' uses a precompiled charsmap, which is not supported (only the identity normaliser, as Gemma uses); "
           "train with --normalization_rule_name=identity");
  TG_CHECK(!info_.has_denormalizer, fail_prefix(), "a denormalizer charsmap is not supported");
  TG_CHECK(!info_.treat_whitespace_as_suffix, fail_prefix(), "treat_whitespace_as_suffix is not supported");

  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  int n_bytes = 0;
  for (int32_t i = 0; i < vocab_size(); ++i) {
    const Piece& p = pieces_[static_cast<size_t>(i)];
    TG_CHECK(!p.text.empty(), fail_prefix(), "piece ", i, " is empty");
    TG_CHECK(p.text.size() < kMaxPieceSize, fail_prefix(), "piece ", i, " is ", p.text.size(),
             " bytes long (sentencepiece's limit is ", kMaxPieceSize, ")");
    TG_CHECK(p.text.find('\0') == std::string::npos, fail_prefix(), "piece ", i, " contains a NUL byte");
    const bool normal = p.type == PieceType::Normal || p.type == PieceType::UserDefined ||
                        p.type == PieceType::Unused;
    // sentencepiece keeps two maps and rejects duplicates within each; a piece in both would make
    // PieceToId ambiguous, so we reject that as well.
    if (const int32_t first = piece_to_id(p.text); first >= 0) {
      TG_FAIL(fail_prefix(), "piece '", p.text, "' is defined twice (ids ", first, " and ", i, ")");
    }
    (normal ? normal_ : reserved_).emplace(std::string_view(p.text), i);
    if (p.type == PieceType::UserDefined) user_defined_.insert(p.text, i);
    if (p.type == PieceType::Control || p.type == PieceType::Unknown) special_.insert(p.text, i);
    if (p.type == PieceType::Unknown) {
      TG_CHECK(unk_id_ < 0, fail_prefix(), "two UNKNOWN pieces (ids ", unk_id_, " and ", i, ")");
      unk_id_ = i;
    }
    if (p.type == PieceType::Byte) {
      TG_CHECK(info_.byte_fallback, fail_prefix(), "byte piece '", p.text, "' (id ", i,
               ") found although byte_fallback is false");
      const int b = piece_to_byte(p.text);
      TG_CHECK(b >= 0, fail_prefix(), "byte piece ", i, " is '", p.text, "', expected <0xXX>");
      byte_ids_[b] = i;
      ++n_bytes;
    }
  }
  TG_CHECK(unk_id_ >= 0, fail_prefix(), "no UNKNOWN (<unk>) piece");
  if (info_.byte_fallback) {
    TG_CHECK(n_bytes == 256, fail_prefix(), "byte_fallback is on but there are ", n_bytes,
             " byte pieces, expected 256");
  }
  const auto control_id = [&](const std::string& piece) {
    const auto it = reserved_.find(piece);
    return it != reserved_.end() && pieces_[static_cast<size_t>(it->second)].type == PieceType::Control
               ? it->second
               : -1;
  };
  bos_id_ = control_id(info_.bos_piece);
  eos_id_ = control_id(info_.eos_piece);
  pad_id_ = control_id(info_.pad_piece);
}

// ---- Accessors ---------------------------------------------------------------------------------------
void Tokenizer::check_id(int32_t id) const {
  TG_CHECK(id >= 0 && id < vocab_size(), "tokenizer '", source_, "': token id ", id, " is out of range [0, ",
           vocab_size(), ")");
}
const std::string& Tokenizer::piece(int32_t id) const {
  check_id(id);
  return pieces_[static_cast<size_t>(id)].text;
}
float Tokenizer::score(int32_t id) const {
  check_id(id);
  return pieces_[static_cast<size_t>(id)].score;
}
PieceType Tokenizer::type(int32_t id) const {
  check_id(id);
  return pieces_[static_cast<size_t>(id)].type;
}
int32_t Tokenizer::piece_to_id(std::string_view piece) const {
  if (const auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
  if (const auto it = normal_.find(piece); it != normal_.end()) return it->second;
  return -1;
}
int32_t Tokenizer::lookup(std::string_view piece) const {
  const int32_t id = piece_to_id(piece);
  return id >= 0 ? id : unk_id_;
}

// ---- Normalizer (sentencepiece's Normalizer::Normalize without a charsmap) ------------------------------
std::string Tokenizer::normalize(std::string_view input) const {
  std::string out;
  if (input.empty()) return out;
  // One normalization step: a user-defined piece verbatim, else one UTF-8 character, else U+FFFD for one
  // malformed byte.
  const auto prefix = [&](std::string_view s) -> std::pair<std::string_view, size_t> {
    int32_t id;
    if (const size_t n = user_defined_.longest_match(s, &id); n > 0) return {s.substr(0, n), n};
    size_t len = 0;
    if (!utf8_valid_char(s, &len)) return {kReplacementChar, 1};
    return {s.substr(0, len), len};
  };
  const bool remove_extra = info_.remove_extra_whitespaces;
  if (remove_extra) {
    while (!input.empty()) {
      const auto [sp, n] = prefix(input);
      if (sp != " ") break;
      input.remove_prefix(n);
    }
    if (input.empty()) return out;
  }
  out.reserve(input.size() * 3);
  const auto add_ws = [&]() {
    if (info_.escape_whitespaces) {
      out += kSpaceSymbol;
    } else {
      out += ' ';
    }
  };
  if (info_.add_dummy_prefix) add_ws();
  bool is_prev_space = remove_extra;
  while (!input.empty()) {
    auto [sp, n] = prefix(input);
    while (is_prev_space && !sp.empty() && sp.front() == ' ') sp.remove_prefix(1);
    if (!sp.empty()) {
      for (const char c : sp) {
        if (info_.escape_whitespaces && c == ' ') {
          out += kSpaceSymbol;
        } else {
          out += c;
        }
      }
      is_prev_space = sp.back() == ' ';
    }
    input.remove_prefix(n);
    if (!remove_extra) is_prev_space = false;
  }
  if (remove_extra) {
    const std::string_view space = info_.escape_whitespaces ? kSpaceSymbol : std::string_view(" ");
    while (out.size() >= space.size() && std::string_view(out).substr(out.size() - space.size()) == space) {
      out.resize(out.size() - space.size());
    }
  }
  return out;
}

// ---- BPE (sentencepiece bpe::Model::SampleEncode with alpha = 0) ------------------------------------------
void Tokenizer::bpe(std::string_view normalized, std::vector<std::pair<std::string_view, int32_t>>* out) const {
  struct Symbol {
    int prev, next;
    bool freeze;
    std::string_view piece;
  };
  struct SymbolPair {
    int left, right;
    float score;
    size_t size;
  };
  // Highest score first; among equal scores the leftmost pair (sentencepiece's SymbolPairComparator).
  struct Worse {
    bool operator()(const SymbolPair& a, const SymbolPair& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };
  if (normalized.empty()) return;
  std::vector<Symbol> symbols;
  symbols.reserve(normalized.size());
  std::priority_queue<SymbolPair, std::vector<SymbolPair>, Worse> agenda;
  // Merged UNUSED pieces are split back into their two halves afterwards.
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;

  const auto maybe_add_pair = [&](int left, int right) {
    if (left == -1 || right == -1 || symbols[left].freeze || symbols[right].freeze) return;
    const std::string_view piece(symbols[left].piece.data(), symbols[left].piece.size() + symbols[right].piece.size());
    const auto it = normal_.find(piece);
    if (it == normal_.end()) return;
    const Piece& p = pieces_[static_cast<size_t>(it->second)];
    agenda.push(SymbolPair{left, right, p.score, piece.size()});
    if (p.type == PieceType::Unused) rev_merge[piece] = {symbols[left].piece, symbols[right].piece};
  };

  // Characters (or whole user-defined pieces, frozen) as the initial symbols.
  std::string_view rest = normalized;
  int index = 0;
  while (!rest.empty()) {
    int32_t id;
    size_t n = user_defined_.longest_match(rest, &id);
    const bool freeze = n > 0;
    if (!freeze) n = std::min(rest.size(), one_char_len(rest[0]));
    Symbol s{index == 0 ? -1 : index - 1, rest.size() == n ? -1 : index + 1, freeze, rest.substr(0, n)};
    rest.remove_prefix(n);
    ++index;
    symbols.push_back(s);
  }
  for (size_t i = 1; i < symbols.size(); ++i) maybe_add_pair(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!agenda.empty()) {
    const SymbolPair top = agenda.top();
    agenda.pop();
    Symbol& l = symbols[static_cast<size_t>(top.left)];
    Symbol& r = symbols[static_cast<size_t>(top.right)];
    // Stale: one side was merged away or grew since this pair was queued.
    if (l.piece.empty() || r.piece.empty() || l.piece.size() + r.piece.size() != top.size) continue;
    l.piece = std::string_view(l.piece.data(), l.piece.size() + r.piece.size());
    l.next = r.next;
    if (r.next >= 0) symbols[static_cast<size_t>(r.next)].prev = top.left;
    r.piece = std::string_view();
    maybe_add_pair(l.prev, top.left);
    maybe_add_pair(top.left, l.next);
  }

  std::function<void(std::string_view)> resegment = [&](std::string_view w) {
    const int32_t id = lookup(w);
    if (id < 0 || pieces_[static_cast<size_t>(id)].type != PieceType::Unused) {
      out->emplace_back(w, id);
      return;
    }
    const auto it = rev_merge.find(w);
    if (it == rev_merge.end()) {
      out->emplace_back(w, id);
      return;
    }
    resegment(it->second.first);
    resegment(it->second.second);
  };
  for (int i = 0; i != -1; i = symbols[static_cast<size_t>(i)].next) resegment(symbols[static_cast<size_t>(i)].piece);
}

// ---- Encode --------------------------------------------------------------------------------------------
void Tokenizer::encode_segment(std::string_view text, std::vector<int32_t>* ids,
                               std::vector<std::string>* pieces) const {
  const std::string normalized = normalize(text);
  std::vector<std::pair<std::string_view, int32_t>> result;
  bpe(normalized, &result);
  bool prev_unk = false;
  for (const auto& [w, id] : result) {
    const bool is_unk = pieces_[static_cast<size_t>(id)].type == PieceType::Unknown;
    if (is_unk && info_.byte_fallback) {
      for (const char c : w) {
        const auto b = static_cast<unsigned char>(c);
        ids->push_back(byte_ids_[b]);
        if (pieces) pieces->push_back(byte_piece(b));
      }
    } else if (is_unk && prev_unk) {
      // A run of unknown characters is one <unk> (sentencepiece merges them).
      if (pieces) pieces->back() += w;
    } else {
      ids->push_back(id);
      if (pieces) pieces->emplace_back(w);
    }
    prev_unk = is_unk;
  }
}

void Tokenizer::encode_impl(std::string_view text, const EncodeOptions& opt, std::vector<int32_t>* ids,
                            std::vector<std::string>* pieces) const {
  if (opt.add_bos) {
    TG_CHECK(bos_id_ >= 0, "tokenizer '", source_, "': add_bos asked but the model has no BOS control piece '",
             info_.bos_piece, "'");
    ids->push_back(bos_id_);
    if (pieces) pieces->push_back(pieces_[static_cast<size_t>(bos_id_)].text);
  }
  if (!opt.parse_special || special_.empty()) {
    encode_segment(text, ids, pieces);
  } else {
    size_t seg = 0, i = 0;
    while (i < text.size()) {
      int32_t id = -1;
      const size_t n = special_.longest_match(text.substr(i), &id);
      if (n == 0) {
        ++i;
        continue;
      }
      encode_segment(text.substr(seg, i - seg), ids, pieces);
      ids->push_back(id);
      if (pieces) pieces->push_back(pieces_[static_cast<size_t>(id)].text);
      i += n;
      seg = i;
    }
    encode_segment(text.substr(seg), ids, pieces);
  }
  if (opt.add_eos) {
    TG_CHECK(eos_id_ >= 0, "tokenizer '", source_, "': add_eos asked but the model has no EOS control piece '",
             info_.eos_piece, "'");
    ids->push_back(eos_id_);
    if (pieces) pieces->push_back(pieces_[static_cast<size_t>(eos_id_)].text);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& opt) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 2 + 2);
  encode_impl(text, opt, &ids, nullptr);
  return ids;
}

std::vector<std::string> Tokenizer::encode_pieces(std::string_view text, const EncodeOptions& opt) const {
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  encode_impl(text, opt, &ids, &pieces);
  return pieces;
}

// ---- Decode (sentencepiece's SentencePieceProcessor::Decode) -------------------------------------------
namespace {

// Byte-fallback bytes to text: each valid UTF-8 character as is, each malformed byte as U+FFFD.
void append_byte_run(std::string_view bytes, std::string* out) {
  size_t off = 0;
  while (off < bytes.size()) {
    size_t len = 0;
    if (utf8_valid_char(bytes.substr(off), &len)) {
      out->append(bytes.substr(off, len));
    } else {
      out->append(kReplacementChar);
      len = 1;
    }
    off += len;
  }
}

// How many bytes the decision at the start of `bytes` looks at (the length DecodeUTF8 would need).
size_t needed_bytes(unsigned char lead) {
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;  // ASCII, stray trail byte or an invalid lead byte: decided on its own
}

}  // namespace

namespace {
// One non-byte piece's text. `is_bos_ws`: nothing has been written yet, so a leading U+2581 is the space the
// normaliser added (add_dummy_prefix) or kept from removed leading spaces, and is dropped.
std::string decode_piece(const std::string& piece, PieceType type, const TokenizerModelInfo& info,
                         const DecodeOptions& opt, bool is_bos_ws, bool* bos_ws_seen) {
  *bos_ws_seen = false;
  if (type == PieceType::Control) return opt.skip_special ? std::string() : piece;
  if (type == PieceType::Unknown) return opt.skip_special ? info.unk_surface : piece;
  std::string_view p = piece;
  if (is_bos_ws && (info.add_dummy_prefix || info.remove_extra_whitespaces) &&
      p.substr(0, kSpaceSymbol.size()) == kSpaceSymbol) {
    p.remove_prefix(kSpaceSymbol.size());
    // With remove_extra_whitespaces every leading piece keeps being stripped until text appears.
    *bos_ws_seen = !info.remove_extra_whitespaces;
  }
  std::string out;
  out.reserve(p.size());
  size_t i = 0;
  while (i < p.size()) {
    if (p.substr(i, kSpaceSymbol.size()) == kSpaceSymbol) {
      out += ' ';
      i += kSpaceSymbol.size();
    } else {
      out += p[i++];
    }
  }
  return out;
}
}  // namespace

// sentencepiece's Decode loop state, shared by decode() and StreamDecoder so that they cannot diverge.
std::string Tokenizer::decode_step(DecodeState* st, int32_t id, const DecodeOptions& opt) const {
  const Piece& p = pieces_[static_cast<size_t>(id)];
  if (st->bos_ws_seen || st->any_text) st->is_bos_ws = false;  // sticky, as in sentencepiece
  std::string s = decode_piece(p.text, p.type, info_, opt, st->is_bos_ws, &st->bos_ws_seen);
  // Control text (only written with skip_special = false) does not count as text having started, so
  // that decoding with and without skip_special differs by the special texts alone.
  if (!s.empty() && p.type != PieceType::Control) st->any_text = true;
  return s;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& opt) const {
  for (const int32_t id : ids) check_id(id);
  std::string text;
  std::string bytes;
  DecodeState st;
  for (const int32_t id : ids) {
    const Piece& p = pieces_[static_cast<size_t>(id)];
    if (p.type == PieceType::Byte) {
      bytes.push_back(static_cast<char>(piece_to_byte(p.text)));
      continue;
    }
    if (!bytes.empty()) {
      append_byte_run(bytes, &text);
      bytes.clear();
      st.any_text = true;
    }
    text += decode_step(&st, id, opt);
  }
  append_byte_run(bytes, &text);
  return text;
}

// ---- StreamDecoder -------------------------------------------------------------------------------------
StreamDecoder::StreamDecoder(const Tokenizer& tok, DecodeOptions opt) : tok_(&tok), opt_(opt) {}

std::string StreamDecoder::emit_bytes(bool final) {
  std::string out;
  size_t off = 0;
  while (off < pending_.size()) {
    const size_t need = needed_bytes(static_cast<unsigned char>(pending_[off]));
    if (!final && pending_.size() - off < need) break;  // the character may still complete
    size_t len = 0;
    if (utf8_valid_char(std::string_view(pending_).substr(off), &len)) {
      out.append(pending_, off, len);
    } else {
      out.append(kReplacementChar);
      len = 1;
    }
    off += len;
  }
  pending_.erase(0, off);
  if (!out.empty()) state_.any_text = true;
  return out;
}

std::string StreamDecoder::push(int32_t id) {
  tok_->check_id(id);
  const auto& p = tok_->pieces_[static_cast<size_t>(id)];
  if (p.type == PieceType::Byte) {
    pending_.push_back(static_cast<char>(piece_to_byte(p.text)));
    return emit_bytes(false);
  }
  std::string out = emit_bytes(true);
  out += tok_->decode_step(&state_, id, opt_);
  return out;
}

std::string StreamDecoder::finish() { return emit_bytes(true); }

}  // namespace tg
