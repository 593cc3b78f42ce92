// The SentencePiece tokenizer against (1) the Python sentencepiece package's outputs stored as fixtures
// (common/tests/fixtures/tokenizer/make_fixtures.py), (2) hand-checked BPE merges on synthetic models,
// (3) malformed model files, which must give tg::Error naming the file, never a crash.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/file_io.h"
#include "common/tokenizer.h"

namespace tg {
namespace {

const std::filesystem::path kRoot = TEGEMMA_SOURCE_DIR;
const std::filesystem::path kFixtures = kRoot / "common/tests/fixtures/tokenizer";

std::string from_hex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

std::string case_text(const nlohmann::json& e) {
  return e.contains("text_hex") ? from_hex(e["text_hex"].get<std::string>()) : e["text"].get<std::string>();
}

// Whether `s` is well-formed UTF-8 (each chunk the stream decoder emits must be).
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t len = 0;
    if (!utf8_valid_char(s.substr(i), &len)) return false;
    i += len;
  }
  return true;
}

// ---- Fixtures from Python sentencepiece -------------------------------------------------------------------
class Fixture : public ::testing::TestWithParam<std::string> {};

TEST_P(Fixture, MatchesPythonSentencepieceExactly) {
  const auto fx = nlohmann::json::parse(read_file(kFixtures / (GetParam() + ".json")));
  const auto tok = Tokenizer::from_file(kRoot / fx["model"].get<std::string>());
  char fp[17];
  std::snprintf(fp, sizeof fp, "%016llx", static_cast<unsigned long long>(tok.fingerprint()));
  ASSERT_EQ(fp, fx["model_fnv1a64"].get<std::string>())
      << fx["model"] << " changed since the fixture was made: rerun " << fx["generated_by"];

  int n = 0;
  for (const auto& e : fx["encode"]) {
    const std::string text = case_text(e);
    const auto ids = tok.encode(text);
    ASSERT_EQ(ids, e["ids"].get<std::vector<int32_t>>()) << "encode of " << e.dump();
    if (e.contains("pieces")) {
      ASSERT_EQ(tok.encode_pieces(text), e["pieces"].get<std::vector<std::string>>()) << e.dump();
    }
    const std::string want = e.contains("decoded") ? e["decoded"].get<std::string>() : text;
    ASSERT_EQ(tok.decode(ids), want) << "decode of " << e.dump();
    ++n;
  }
  EXPECT_GT(n, 300);
  for (const auto& e : fx["encode_bos_eos"]) {
    EncodeOptions opt;
    opt.add_bos = opt.add_eos = true;
    ASSERT_EQ(tok.encode(case_text(e), opt), e["ids"].get<std::vector<int32_t>>()) << e.dump();
  }
  for (const auto& e : fx["parse_special"]) {
    EncodeOptions opt;
    opt.parse_special = true;
    ASSERT_EQ(tok.encode(case_text(e), opt), e["ids"].get<std::vector<int32_t>>()) << e.dump();
  }
  for (const auto& e : fx["decode"]) {
    const auto ids = e["ids"].get<std::vector<int32_t>>();
    const std::string want = e["text"].get<std::string>();
    ASSERT_EQ(tok.decode(ids), want) << "decode of " << e.dump();
    // The streaming decoder gives the same text, in chunks that never split a UTF-8 character.
    StreamDecoder stream(tok);
    std::string got;
    for (const int32_t id : ids) {
      const std::string chunk = stream.push(id);
      ASSERT_TRUE(valid_utf8(chunk)) << e.dump();
      got += chunk;
    }
    got += stream.finish();
    ASSERT_EQ(got, want) << "stream decode of " << e.dump();
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, Fixture,
                         ::testing::Values("fortunes-512", "fortunes-8192", "dummy_prefix", "unused"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (auto& c : s) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return s;
                         });

// ---- Our Gemma-like models: the properties gemma.md 5 asks for ------------------------------------------
TEST(Tokenizer, FortunesModelsHaveGemmaOptionsAndIds) {
  for (const int vocab : {512, 8192}) {
    const auto tok = Tokenizer::from_file(kRoot / ("assets/fortunes/tokenizer-" + std::to_string(vocab) + ".model"));
    SCOPED_TRACE(vocab);
    EXPECT_EQ(tok.vocab_size(), vocab);
    EXPECT_EQ(tok.info().model_type, "BPE");
    EXPECT_TRUE(tok.info().byte_fallback);
    EXPECT_TRUE(tok.info().split_digits);
    EXPECT_FALSE(tok.info().add_dummy_prefix);
    EXPECT_FALSE(tok.info().remove_extra_whitespaces);
    EXPECT_EQ(tok.info().normalizer_name, "identity");
    // Gemma's special ids (gemma.md 1.3).
    EXPECT_EQ(tok.pad_id(), 0);
    EXPECT_EQ(tok.eos_id(), 1);
    EXPECT_EQ(tok.bos_id(), 2);
    EXPECT_EQ(tok.unk_id(), 3);
    EXPECT_EQ(tok.piece(4), "<mask>");
    EXPECT_EQ(tok.type(5), PieceType::Control);
    EXPECT_EQ(tok.piece(5), "<start_of_turn>");
    EXPECT_EQ(tok.piece_to_id("\n"), 7);
    EXPECT_EQ(tok.type(7), PieceType::UserDefined);
    EXPECT_EQ(tok.piece_to_id("<0x00>"), 8);
    EXPECT_EQ(tok.piece_to_id("<0xFF>"), 8 + 255);

    // No dummy prefix: a leading word has no U+2581; a space does.
    EXPECT_EQ(tok.encode_pieces("Hello").front().rfind("\xE2\x96\x81", 0), std::string::npos);
    EXPECT_EQ(tok.encode_pieces(" Hello").front().rfind("\xE2\x96\x81", 0), 0u);
    // split_digits: one piece per digit.
    EXPECT_EQ(tok.encode_pieces("2024"), (std::vector<std::string>{"2", "0", "2", "4"}));
    // "\n" is one token, never merged with its neighbours.
    const auto nl = tok.encode("a\n\nb");
    EXPECT_EQ(std::count(nl.begin(), nl.end(), 7), 2);
    // Byte fallback for a character the vocabulary lacks.
    EXPECT_EQ(tok.encode_pieces("\xF0\x9F\x98\x80"),
              (std::vector<std::string>{"<0xF0>", "<0x9F>", "<0x98>", "<0x80>"}));
    // Lossless round trip, whitespace runs and all.
    for (const std::string s : {"  two  spaces ", "\ttab\n\n", "caf\xC3\xA9 \xE4\xB8\xAD", ""}) {
      EXPECT_EQ(tok.decode(tok.encode(s)), s);
    }
    // The one loss, as in sentencepiece: a literal U+2581 in the text decodes as a space.
    EXPECT_EQ(tok.decode(tok.encode("x\xE2\x96\x81y")), "x y");
  }
}

TEST(Tokenizer, SpecialTokensAreMatchedOnlyWhenAsked) {
  const auto tok = Tokenizer::from_file(kRoot / "assets/fortunes/tokenizer-8192.model");
  const std::string chat = "<start_of_turn>user\nhi<end_of_turn>";
  EncodeOptions special;
  special.parse_special = true;
  const auto ids = tok.encode(chat, special);
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 5);
  EXPECT_EQ(ids.back(), 6);
  const auto plain = tok.encode(chat);  // sentencepiece itself does not match control pieces
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 5), 0);
  // Decoding drops control pieces (sentencepiece) or keeps their text (HF skip_special_tokens=False).
  DecodeOptions keep;
  keep.skip_special = false;
  EXPECT_EQ(tok.decode(ids), "user\nhi");
  EXPECT_EQ(tok.decode(ids, keep), chat);
  EncodeOptions bos_eos;
  bos_eos.add_bos = bos_eos.add_eos = true;
  const auto wrapped = tok.encode("hi", bos_eos);
  EXPECT_EQ(wrapped.front(), 2);
  EXPECT_EQ(wrapped.back(), 1);
  EXPECT_EQ(tok.decode(wrapped, keep), "<bos>hi<eos>");
}

TEST(Tokenizer, StreamDecoderHoldsPartialCharacters) {
  const auto tok = Tokenizer::from_file(kRoot / "assets/fortunes/tokenizer-512.model");
  const auto ids = tok.encode("a\xF0\x9F\x98\x80");  // "a" then 4 byte pieces
  ASSERT_EQ(ids.size(), 5u);
  StreamDecoder s(tok);
  EXPECT_EQ(s.push(ids[0]), "a");
  EXPECT_EQ(s.push(ids[1]), "");
  EXPECT_EQ(s.push(ids[2]), "");
  EXPECT_EQ(s.push(ids[3]), "");
  EXPECT_EQ(s.push(ids[4]), "\xF0\x9F\x98\x80");
  EXPECT_EQ(s.finish(), "");
  // A character cut short becomes U+FFFD per byte, at the next piece or at finish().
  StreamDecoder t(tok);
  EXPECT_EQ(t.push(ids[1]), "");
  EXPECT_EQ(t.push(ids[2]), "");
  EXPECT_EQ(t.push(ids[0]), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
  EXPECT_EQ(t.push(ids[1]), "");
  EXPECT_EQ(t.finish(), "\xEF\xBF\xBD");
  EXPECT_THROW(t.push(tok.vocab_size()), Error);
}

TEST(Tokenizer, DecodeRejectsOutOfRangeIds) {
  const auto tok = Tokenizer::from_file(kRoot / "assets/fortunes/tokenizer-512.model");
  const std::vector<int32_t> bad{5, 512};
  try {
    tok.decode(bad);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 512 is out of range [0, 512)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), Error);
  EXPECT_THROW(tok.piece(-3), Error);
}

// ---- Synthetic models: hand-checked BPE merges ----------------------------------------------------------
// A minimal protobuf writer for ModelProto (the test builds models without Python).
struct Proto {
  std::string b;
  void varint(uint64_t v) {
    while (v >= 0x80) {
      b.push_back(static_cast<char>((v & 0x7F) | 0x80));
      v >>= 7;
    }
    b.push_back(static_cast<char>(v));
  }
  void tag(uint32_t field, uint32_t wire) { varint((static_cast<uint64_t>(field) << 3) | wire); }
  void bytes(uint32_t field, std::string_view s) {
    tag(field, 2);
    varint(s.size());
    b += s;
  }
  void num(uint32_t field, uint64_t v) {
    tag(field, 0);
    varint(v);
  }
  void f32(uint32_t field, float f) {
    tag(field, 5);
    char c[4];
    std::memcpy(c, &f, 4);
    b.append(c, 4);
  }
};

struct SynPiece {
  std::string text;
  float score;
  PieceType type;
};

struct SynModel {
  std::vector<SynPiece> pieces;
  int model_type = 2;  // BPE
  bool byte_fallback = false;
  bool add_dummy_prefix = false, remove_extra = false;
  std::string charsmap;
  std::string serialize() const {
    Proto m;
    for (const auto& p : pieces) {
      Proto sp;
      sp.bytes(1, p.text);
      sp.f32(2, p.score);
      sp.num(3, static_cast<uint64_t>(p.type));
      m.bytes(1, sp.b);
    }
    Proto ts;
    ts.num(3, static_cast<uint64_t>(model_type));
    ts.num(35, byte_fallback);
    ts.bytes(46, "<s>");
    ts.num(43, static_cast<uint64_t>(-1));  // pad_id -1: a negative int32 is a 10-byte varint
    m.bytes(2, ts.b);
    Proto ns;
    ns.bytes(1, "identity");
    if (!charsmap.empty()) ns.bytes(2, charsmap);
    ns.num(3, add_dummy_prefix);
    ns.num(4, remove_extra);
    m.bytes(3, ns.b);
    return m.b;
  }
};

SynModel abc_model() {
  SynModel m;
  m.pieces = {{"<unk>", 0, PieceType::Unknown}, {"<s>", 0, PieceType::Control},  {"a", -10, PieceType::Normal},
              {"b", -10, PieceType::Normal},    {"c", -10, PieceType::Normal},   {"ab", -1, PieceType::Normal},
              {"bc", -0.5f, PieceType::Normal}, {"abc", -2, PieceType::Normal},  {"aa", -3, PieceType::Normal},
              {"\xE2\x96\x81", -4, PieceType::Normal}, {"<x>", 0, PieceType::UserDefined}};
  return m;
}

std::vector<std::string> pieces_of(const Tokenizer& t, std::string_view s) { return t.encode_pieces(s); }
using V = std::vector<std::string>;

TEST(Tokenizer, BpeMergesHighestScoreFirstThenLeftmost) {
  const auto tok = Tokenizer::from_bytes(abc_model().serialize(), "abc.model");
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), -1);  // "</s>" is not in the vocabulary
  // "abc": bc (-0.5) beats ab (-1); then a+bc = abc (-2) exists.
  EXPECT_EQ(pieces_of(tok, "abc"), (V{"abc"}));
  // "abab": two ab pairs of equal score, the left one first; "abab" is no piece.
  EXPECT_EQ(pieces_of(tok, "abab"), (V{"ab", "ab"}));
  // "aaa": the leftmost "aa" wins the tie.
  EXPECT_EQ(pieces_of(tok, "aaa"), (V{"aa", "a"}));
  // "cab": ab; "c" stays.
  EXPECT_EQ(pieces_of(tok, "cab"), (V{"c", "ab"}));
  // A user-defined piece is one frozen symbol: "a<x>b" never merges across it.
  EXPECT_EQ(pieces_of(tok, "a<x>b"), (V{"a", "<x>", "b"}));
  EXPECT_EQ(tok.encode("a<x>b"), (std::vector<int32_t>{2, 10, 3}));
  // Unknown characters (no byte fallback) merge into one <unk>; it decodes to " ⁇ ".
  EXPECT_EQ(tok.encode("zzab"), (std::vector<int32_t>{0, 5}));
  EXPECT_EQ(tok.decode(tok.encode("zzab")), " \xE2\x81\x87 ab");
  // A space becomes U+2581 and back.
  EXPECT_EQ(pieces_of(tok, "a b"), (V{"a", "\xE2\x96\x81", "b"}));
  EXPECT_EQ(tok.decode(tok.encode("a b")), "a b");
  EXPECT_THROW(tok.encode("x", EncodeOptions{false, true, false}), Error);  // no EOS piece
}

TEST(Tokenizer, UnusedPiecesAreSplitBack) {
  SynModel m = abc_model();
  m.pieces[6].type = PieceType::Unused;  // "bc"
  const auto tok = Tokenizer::from_bytes(m.serialize(), "unused.model");
  EXPECT_EQ(pieces_of(tok, "bc"), (V{"b", "c"}));   // merged, then re-segmented
  EXPECT_EQ(pieces_of(tok, "abc"), (V{"abc"}));     // bc is a stepping stone to the normal "abc"
}

TEST(Tokenizer, DummyPrefixAndExtraWhitespaceHandling) {
  SynModel m = abc_model();
  m.add_dummy_prefix = true;
  m.remove_extra = true;
  const auto tok = Tokenizer::from_bytes(m.serialize(), "dp.model");
  EXPECT_EQ(pieces_of(tok, "  a   b  "), (V{"\xE2\x96\x81", "a", "\xE2\x96\x81", "b"}));
  EXPECT_EQ(tok.decode(tok.encode("  a   b  ")), "a b");
  EXPECT_TRUE(tok.encode("   ").empty());
}

// ---- Malformed and unsupported models ------------------------------------------------------------------
void expect_error(const std::string& bytes, const std::string& needle) {
  try {
    Tokenizer::from_bytes(bytes, "bad.model");
    FAIL() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("bad.model"), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
}

TEST(Tokenizer, UnsupportedModelsAreRejectedWithAReason) {
  SynModel uni = abc_model();
  uni.model_type = 1;
  expect_error(uni.serialize(), "model_type UNIGRAM is not supported");
  SynModel nfkc = abc_model();
  nfkc.charsmap = std::string("\x04\x00\x00\x00xxxx", 8);
  expect_error(nfkc.serialize(), "precompiled charsmap");
  SynModel dup = abc_model();
  dup.pieces.push_back({"ab", -7, PieceType::Normal});
  expect_error(dup.serialize(), "piece 'ab' is defined twice (ids 5 and 11)");
  SynModel no_unk = abc_model();
  no_unk.pieces[0].type = PieceType::Control;
  expect_error(no_unk.serialize(), "no UNKNOWN");
  SynModel bytes = abc_model();
  bytes.pieces.push_back({"<0x41>", 0, PieceType::Byte});
  expect_error(bytes.serialize(), "byte_fallback is false");
  bytes.byte_fallback = true;
  expect_error(bytes.serialize(), "there are 1 byte pieces, expected 256");
  SynModel empty_piece = abc_model();
  empty_piece.pieces[2].text = "";
  expect_error(empty_piece.serialize(), "piece 2 is empty");
  SynModel bad_type = abc_model();
  bad_type.pieces[3].type = static_cast<PieceType>(9);
  expect_error(bad_type.serialize(), "has type 9");
  expect_error("", "no pieces");
}

TEST(Tokenizer, WireFormatDamageNamesTheOffset) {
  const std::string good = abc_model().serialize();
  expect_error(std::string("\x0a\xff\xff\xff\xff\x0f", 6), "offset 1: length");     // runs past the end
  expect_error(std::string("\x08\x01", 2), "field 1 has wire type 0, expected 2");   // pieces as a varint
  expect_error(std::string("\x00", 1), "offset 0: invalid field number 0");
  expect_error(std::string("\x33", 1), "unsupported wire type 3");                   // a group, field 6
  expect_error(std::string("\x88\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 11), "varint");
  expect_error(good.substr(0, good.size() - 1), "offset");
  expect_error(std::string("\x0a\x02\x0a\x05", 4), "offset 3: length 5 runs past the end of its message");
}

// Offsets where a top-level field of `bytes` ends: cutting the file there leaves a shorter valid proto.
std::set<size_t> top_level_boundaries(const std::string& bytes) {
  std::set<size_t> out{0};
  size_t pos = 0;
  const auto varint = [&]() {
    uint64_t v = 0;
    for (int s = 0;; s += 7) {
      const auto c = static_cast<uint8_t>(bytes[pos++]);
      v |= static_cast<uint64_t>(c & 0x7F) << s;
      if (!(c & 0x80)) return v;
    }
  };
  while (pos < bytes.size()) {
    const uint64_t t = varint();
    EXPECT_EQ(t & 7, 2u);  // all top-level fields of a ModelProto are messages
    pos += varint();
    out.insert(pos);
  }
  return out;
}

TEST(Tokenizer, EveryTruncationOfARealModelFailsCleanly) {
  const std::string model = read_file(kRoot / "assets/fortunes/tokenizer-512.model");
  const auto boundaries = top_level_boundaries(model);
  for (size_t n = 0; n < model.size(); ++n) {
    try {
      Tokenizer::from_bytes(std::string_view(model).substr(0, n), "cut.model");
      EXPECT_TRUE(boundaries.count(n)) << "a cut at " << n << " inside a field was accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      ASSERT_NE(what.find("cut.model"), std::string::npos) << what;
      if (!boundaries.count(n)) {
        ASSERT_NE(what.find("offset"), std::string::npos) << n << ": " << what;
      }
    }
  }
}

TEST(Tokenizer, RandomCorruptionNeverCrashes) {
  const std::string model = read_file(kRoot / "assets/fortunes/tokenizer-512.model");
  std::mt19937 rng(7);
  int errors = 0, loaded = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string m = model;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) m[rng() % m.size()] = static_cast<char>(rng() & 0xFF);
    try {
      const auto tok = Tokenizer::from_bytes(m, "fuzz.model");
      // Whatever loaded must still encode and decode without trouble.
      const auto ids = tok.encode("The quick brown fox\n\tjumps 123 \xF0\x9F\x98\x80");
      (void)tok.decode(ids);
      ++loaded;
    } catch (const Error& e) {
      ASSERT_NE(std::string(e.what()).find("fuzz.model"), std::string::npos) << e.what();
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
  EXPECT_GT(loaded, 0);  // flips inside piece texts or scores often still give a valid model
}

TEST(Tokenizer, MissingFileNamesThePath) {
  try {
    Tokenizer::from_file("/nonexistent/tokenizer.model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.model"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tg
