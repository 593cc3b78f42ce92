// Checksums of what we write (issue 11, faults): XXH64 against libxxhash's values, and corrupted
// checkpoints -- flipped bytes anywhere in a file, truncated shards, damaged checksum entries -- are
// refused with an error naming the file and the tensor, never loaded as silently different weights.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/tests/test_temp_dir.h"
#include "common/checksum.h"
#include "common/file_io.h"
#include "common/safetensors.h"

namespace tg {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir() { return ::tg::testing::test_temp_dir("tegemma_ck_"); }

std::span<const uint8_t> as_bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

std::vector<uint8_t> raw(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.data());
  return {p, p + t.nbytes()};
}

// Runs `fn`, expects a tg::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << parts.front() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

// ---- XXH64 ------------------------------------------------------------------------------------------
TEST(Xxh64, MatchesLibxxhash) {
  // Expected values from libxxhash 0.8.1 (XXH64 through ctypes on Debian's libxxhash0): every length class
  // of the algorithm (< 4, 4..7, 8..31, exactly 32, > 32 with each tail) and a non-zero seed.
  EXPECT_EQ(xxh64(as_bytes("")), 0xef46db3751d8e999ull);
  EXPECT_EQ(xxh64(as_bytes("a")), 0xd24ec4f1a98c6e5bull);
  EXPECT_EQ(xxh64(as_bytes("abc")), 0x44bc2cf5ad770999ull);
  EXPECT_EQ(xxh64(as_bytes("0123456789abcdef0123456789abcdef")), 0x642a94958e71e6c5ull);
  EXPECT_EQ(xxh64(as_bytes("The quick brown fox jumps over the lazy dog")), 0x0b242d361fda71bcull);
  EXPECT_EQ(xxh64(as_bytes(""), 0x9E3779B97F4A7C15ull), 0xc4349fc93c010000ull);
  EXPECT_EQ(xxh64(as_bytes("abc"), 0x9E3779B97F4A7C15ull), 0x2ed0f59d6b43ac8bull);

  std::vector<uint8_t> b(1000);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>((i * 7 + 3) & 0xFF);
  const std::vector<std::pair<std::size_t, uint64_t>> prefixes = {
      {1, 0x1f25c8d0bc1f4bb6ull},  {3, 0x31d2363f52e564c9ull},  {4, 0x9bb64b7d66ee9fdaull},
      {5, 0xc7608efddb7051feull},  {7, 0x9a7b149959ce60d8ull},  {8, 0xdab99d95c6f90092ull},
      {9, 0x170bb6bf975b4c02ull},  {12, 0xd52e407833af5133ull}, {31, 0xa2aa5f33cc4a6119ull},
      {32, 0x23c3c17ef790fd97ull}, {33, 0x50a7cfc7ba588784ull}, {63, 0x5e3e54b431c7493cull},
      {64, 0x0eb64b3ef6eeb01full}, {100, 0xa61f8d4c170fe531ull}, {1000, 0x5f235fa033f1a3fbull},
  };
  for (const auto& [n, want] : prefixes) {
    EXPECT_EQ(xxh64(std::span<const uint8_t>(b.data(), n)), want) << n << " bytes";
    // Unaligned input (tensors in a mapped file start anywhere) hashes the same.
    std::vector<uint8_t> shifted(n + 3);
    std::copy_n(b.begin(), n, shifted.begin() + 3);
    EXPECT_EQ(xxh64(std::span<const uint8_t>(shifted.data() + 3, n)), want) << n << " bytes at offset 3";
  }
}

TEST(Xxh64, HexForm) {
  EXPECT_EQ(xxh64_hex(0xef46db3751d8e999ull), "ef46db3751d8e999");
  EXPECT_EQ(xxh64_hex(0x0000000000000001ull), "0000000000000001");
  uint64_t v = 7;
  EXPECT_TRUE(parse_xxh64_hex("ef46db3751d8e999", v));
  EXPECT_EQ(v, 0xef46db3751d8e999ull);
  EXPECT_TRUE(parse_xxh64_hex("EF46DB3751D8E999", v));
  EXPECT_EQ(v, 0xef46db3751d8e999ull);
  for (const char* bad : {"", "ef46db3751d8e99", "ef46db3751d8e9990", "ef46db3751d8e99g", "0x46db3751d8e999",
                          " f46db3751d8e999"}) {
    v = 7;
    EXPECT_FALSE(parse_xxh64_hex(bad, v)) << bad;
    EXPECT_EQ(v, 7u) << "untouched on failure";
  }
}

// ---- checkpoints --------------------------------------------------------------------------------------
struct Model {
  std::vector<std::string> names;
  std::vector<std::vector<uint8_t>> data;
  std::vector<std::pair<std::string, TensorView>> views;
};

// BF16 tensors of awkward sizes, an F32 one, a scalar and an empty one.
Model make_model() {
  Model m;
  const std::vector<std::tuple<std::string, DType, Shape>> specs = {
      {"model.embed_tokens.weight", DType::BF16, {37, 16}},
      {"model.layers.0.self_attn.q_proj.weight", DType::BF16, {16, 16}},
      {"model.layers.0.mlp.down_proj.weight", DType::BF16, {16, 40}},
      {"model.norm.weight", DType::F32, {16}},
      {"scalar", DType::BF16, {}},
      {"empty", DType::BF16, {0}},
  };
  std::mt19937 rng(11);
  for (const auto& [name, dtype, shape] : specs) {
    m.names.push_back(name);
    std::vector<uint8_t> d(static_cast<std::size_t>(shape.numel()) * dtype_size(dtype));
    for (auto& b : d) b = static_cast<uint8_t>(rng());
    m.data.push_back(std::move(d));
  }
  for (std::size_t i = 0; i < specs.size(); ++i) {
    m.views.emplace_back(m.names[i], TensorView(m.data[i].data(), std::get<1>(specs[i]), std::get<2>(specs[i])));
  }
  return m;
}

// Loads every tensor of the checkpoint in its own dtype; the raw bytes in the model's order.
std::vector<std::vector<uint8_t>> load_all(const fs::path& dir, const Model& m) {
  const CheckpointReader r(dir);
  std::vector<std::vector<uint8_t>> out;
  for (const auto& [name, view] : m.views) out.push_back(raw(r.load(name, view.dtype)));
  return out;
}

// Damage on disk: a plain overwrite (no fsync: thousands of these run in one test).
void overwrite(const fs::path& file, const std::string& bytes) {
  std::ofstream(file, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void flip_byte(const fs::path& file, uint64_t offset, uint8_t mask) {
  std::string bytes = read_file(file);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] = static_cast<char>(bytes[offset] ^ mask);
  overwrite(file, bytes);
}

TEST(CheckpointChecksum, WrittenForEveryTensorAndVerifiedOnLoad) {
  const auto dir = temp_dir();
  const Model m = make_model();
  write_checkpoint(dir, m.views);
  const SafetensorsFile f(dir / "model.safetensors");
  for (std::size_t i = 0; i < m.names.size(); ++i) {
    SCOPED_TRACE(m.names[i]);
    ASSERT_TRUE(f.has_checksum(m.names[i]));
    const std::string& hex = f.header().metadata.at("xxh64:" + m.names[i]);
    EXPECT_EQ(hex, xxh64_hex(xxh64(m.data[i]))) << "the header holds the XXH64 of the tensor's bytes";
  }
  EXPECT_EQ(f.header().metadata.at("format"), "pt") << "HF's metadata is kept";
  EXPECT_EQ(f.verify_all(), m.names.size());
  EXPECT_EQ(CheckpointReader(dir).verify_checksums(), m.names.size());
  const auto loaded = load_all(dir, m);
  for (std::size_t i = 0; i < m.names.size(); ++i) EXPECT_EQ(loaded[i], m.data[i]) << m.names[i];
  tg::remove_tree(dir);
}

TEST(CheckpointChecksum, ShardsCarryTheirOwnChecksums) {
  const auto dir = temp_dir();
  const Model m = make_model();
  write_checkpoint(dir, m.views, 1024);
  const CheckpointReader r(dir);
  EXPECT_EQ(r.verify_checksums(), m.names.size());
  int shards = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    ++shards;
    const SafetensorsFile f(e.path());
    for (const auto& t : f.header().tensors) EXPECT_TRUE(f.has_checksum(t.name)) << e.path() << " " << t.name;
    EXPECT_EQ(f.verify_all(), f.header().tensors.size());
  }
  EXPECT_EQ(shards, 4);
  tg::remove_tree(dir);
}

TEST(CheckpointChecksum, AFlippedByteInATensorNamesTheFileAndTensor) {
  const auto dir = temp_dir();
  const Model m = make_model();
  write_checkpoint(dir, m.views);
  const fs::path file = dir / "model.safetensors";
  const std::string good = read_file(file);
  for (std::size_t i = 0; i < m.names.size(); ++i) {
    if (m.data[i].empty()) continue;
    SCOPED_TRACE(m.names[i]);
    const SafetensorsHeader h = parse_safetensors(as_bytes(good), "good");
    const auto e = std::find_if(h.tensors.begin(), h.tensors.end(), [&](const auto& t) { return t.name == m.names[i]; });
    ASSERT_NE(e, h.tensors.end());
    overwrite(file, good);
    flip_byte(file, h.data_offset + e->begin + e->nbytes() / 2, 0x04);
    const CheckpointReader r(dir);  // the structure is intact: opening works
    expect_error([&] { r.load(m.names[i], m.views[i].second.dtype); },
                 {file.string(), "'" + m.names[i] + "'", "corrupted", "xxh64"});
    // A converting load checks too.
    expect_error([&] { r.load(m.names[i], DType::F32); }, {"'" + m.names[i] + "'", "corrupted"});
    expect_error([&] { r.verify_checksums(); }, {"'" + m.names[i] + "'", "corrupted"});
    for (std::size_t j = 0; j < m.names.size(); ++j) {  // the damage is confined to its tensor
      if (j != i) {
        EXPECT_EQ(raw(r.load(m.names[j], m.views[j].second.dtype)), m.data[j]) << m.names[j];
      }
    }
  }
  tg::remove_tree(dir);
}

// The property behind the feature: one flipped bit ANYWHERE in a file we wrote -- length, header, checksum
// entries, padding, data -- is either refused with a tg::Error when the checkpoint is opened or loaded, or
// harmless (the loaded bytes are exactly the original ones, e.g. a flip inside the "format" metadata value).
TEST(CheckpointChecksum, EveryFlippedBitIsDetectedOrHarmless) {
  const auto dir = temp_dir();
  const Model m = make_model();
  write_checkpoint(dir, m.views);
  const fs::path file = dir / "model.safetensors";
  const std::string good = read_file(file);
  int refused = 0, harmless = 0;
  for (std::size_t pos = 0; pos < good.size(); ++pos) {
    std::string bad = good;
    bad[pos] = static_cast<char>(bad[pos] ^ (1 << (pos % 8)));
    overwrite(file, bad);
    try {
      const auto loaded = load_all(dir, m);
      for (std::size_t i = 0; i < m.names.size(); ++i) {
        ASSERT_EQ(loaded[i], m.data[i]) << "bit " << pos % 8 << " of byte " << pos << " changed '" << m.names[i]
                                        << "' silently";
      }
      ++harmless;
    } catch (const Error&) {
      ++refused;
    }
  }
  const SafetensorsHeader h = parse_safetensors(as_bytes(good), "good");
  EXPECT_GE(static_cast<uint64_t>(refused), good.size() - h.data_offset) << "every data byte at least";
  std::printf("%zu positions: %d refused, %d harmless\n", good.size(), refused, harmless);
  tg::remove_tree(dir);
}

TEST(CheckpointChecksum, TruncatedShardIsRefusedNamingIt) {
  const auto dir = temp_dir();
  const Model m = make_model();
  // 1 KiB shards: embed (1184 B) | q_proj (512) | down_proj (1280) | norm + scalar + empty.
  write_checkpoint(dir, m.views, 1024);
  const fs::path shard = dir / "model-00002-of-00004.safetensors";
  ASSERT_TRUE(fs::exists(shard));
  const std::string good = read_file(shard);
  const SafetensorsHeader h = parse_safetensors(as_bytes(good), "good");
  for (const uint64_t keep : {uint64_t{0}, uint64_t{5}, uint64_t{8}, h.data_offset - 3, h.data_offset,
                              static_cast<uint64_t>(good.size()) - 1}) {
    SCOPED_TRACE(keep);
    overwrite(shard, good.substr(0, keep));
    expect_error([&] { CheckpointReader r(dir); }, {shard.string()});
  }
  // The message says what happened for the common case, a copy cut short inside the data.
  overwrite(shard, good.substr(0, good.size() - 1));
  expect_error([&] { CheckpointReader r(dir); }, {shard.string(), "truncated"});
  tg::remove_tree(dir);
}

TEST(CheckpointChecksum, DamagedChecksumEntriesAreRefused) {
  const auto dir = temp_dir();
  const fs::path file = dir / "t.safetensors";
  const std::vector<uint8_t> d = {1, 2, 3, 4};
  const TensorView v(const_cast<uint8_t*>(d.data()), DType::U8, Shape{4});
  {
    SafetensorsWriter w;
    w.add("t", v);
    w.add_metadata("xxh64:gone", xxh64_hex(1));  // a checksum for a tensor the file does not hold
    w.write(file);
  }
  expect_error([&] { SafetensorsFile f(file); }, {file.string(), "'gone'", "does not contain"});
  {
    SafetensorsWriter w;
    w.add("t", v);
    w.add_metadata("xxh64:t", "not-a-digest");
    w.write(file);
  }
  expect_error([&] { SafetensorsFile f(file); }, {file.string(), "'xxh64:t'", "16 hex digits"});
  {
    SafetensorsWriter w;  // a wrong (well-formed) checksum: opening works, loading refuses
    w.add("t", v);
    w.add_metadata("xxh64:t", xxh64_hex(xxh64(d) ^ 1));
    w.write(file);
  }
  const SafetensorsFile f(file);
  expect_error([&] { f.load("t", DType::U8); }, {file.string(), "'t'", "corrupted"});
  tg::remove_tree(dir);
}

TEST(CheckpointChecksum, FilesWithoutChecksumsStillLoad) {
  // HF's files carry no checksums; nor does a plain SafetensorsWriter (its bytes match HF's writer).
  const auto dir = temp_dir();
  const Model m = make_model();
  SafetensorsWriter w;
  for (const auto& [name, view] : m.views) w.add(name, view);
  w.write(dir / "model.safetensors");
  const SafetensorsFile f(dir / "model.safetensors");
  for (const auto& [key, value] : f.header().metadata) EXPECT_FALSE(key.starts_with("xxh64:")) << key;
  EXPECT_EQ(f.verify_all(), 0u);
  EXPECT_EQ(CheckpointReader(dir).verify_checksums(), 0u);
  const auto loaded = load_all(dir, m);
  for (std::size_t i = 0; i < m.names.size(); ++i) EXPECT_EQ(loaded[i], m.data[i]) << m.names[i];
  tg::remove_tree(dir);
}

TEST(AtomicFile, WriteAtOverwritesOnlyWhatWasWritten) {
  const auto dir = temp_dir();
  const fs::path file = dir / "f.bin";
  {
    AtomicFile f(file);
    f.write("hello world");
    f.write_at(6, "W", 1);
    f.write_at(0, "H", 1);
    expect_error([&] { f.write_at(10, "xy", 2); }, {"past the 11 bytes written"});
    expect_error([&] { f.write_at(12, "x", 1); }, {"past the 11 bytes written"});
    f.commit();
  }
  EXPECT_EQ(read_file(file), "Hello World");
  tg::remove_tree(dir);
}

}  // namespace
}  // namespace tg
