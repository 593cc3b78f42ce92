// safetensors: write -> read round trips, a hand-built file checked against the format spec, one
// test per class of bad file (each must be a tg::Error naming the file and the tensor), converting
// loads, and HF checkpoint directories (single file and sharded).
#include <gtest/gtest.h>

#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/tests/test_temp_dir.h"
#include "common/file_io.h"
#include "common/numeric.h"
#include "common/safetensors.h"

namespace tg {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir() { return ::tg::testing::test_temp_dir("tegemma_st_"); }

// A safetensors file from a header text and raw data (no padding: exactly what the test says).
std::string st_file(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
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

// Bad headers parsed under the name "bad.safetensors"; the error must name it and `parts`.
void expect_bad(const std::string& file, std::vector<std::string> parts) {
  parts.insert(parts.begin(), "bad.safetensors");
  expect_error([&] { parse_safetensors(as_bytes(file), "bad.safetensors"); }, parts);
}

std::vector<uint8_t> random_bytes(std::size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::vector<uint8_t> raw(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.data());
  return {p, p + t.nbytes()};
}

// ---- round trips ---------------------------------------------------------------------------------
TEST(Safetensors, WriteReadRoundTripAllFormsOfTensor) {
  const auto dir = temp_dir();
  struct Case {
    std::string name;
    DType dtype;
    Shape shape;
  };
  const std::vector<Case> cases = {
      {"w.bf16", DType::BF16, {3, 5}},     {"w.f16", DType::F16, {7}},        {"w.f32", DType::F32, {2, 3, 4}},
      {"w.e4m3", DType::E4M3, {9}},        {"w.e5m2", DType::E5M2, {2, 2}},   {"zero.f32", DType::F32, {0, 4}},
      {"scalar.f32", DType::F32, {}},      {"ids.i64", DType::I64, {3}},      {"mask.u8", DType::U8, {5}},
      {"zero.bf16", DType::BF16, {4, 0}},  {"scalar.bf16", DType::BF16, {}},  {"ä/ünïcode name", DType::F32, {1}},
  };
  std::vector<std::vector<uint8_t>> data;
  SafetensorsWriter w;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    data.push_back(random_bytes(static_cast<std::size_t>(cases[i].shape.numel()) * dtype_size(cases[i].dtype),
                                static_cast<uint32_t>(i)));
    w.add(cases[i].name, TensorView(data.back().data(), cases[i].dtype, cases[i].shape));
  }
  w.add_metadata("note", "round trip");
  const auto path = dir / "t.safetensors";
  w.write(path);

  const SafetensorsFile f(path);
  EXPECT_EQ(f.header().data_offset % 8, 0u) << "header must be padded to a multiple of 8";
  EXPECT_EQ(f.header().metadata.at("format"), "pt");
  EXPECT_EQ(f.header().metadata.at("note"), "round trip");
  ASSERT_EQ(f.header().tensors.size(), cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    const SafetensorsEntry* e = f.find(cases[i].name);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->dtype, cases[i].dtype);
    EXPECT_EQ(e->dtype_name, dtype_name(cases[i].dtype));
    EXPECT_EQ(Shape(e->shape), cases[i].shape);
    EXPECT_EQ(e->numel(), cases[i].shape.numel());
    const auto b = f.bytes(*e);
    EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.end()), data[i]);
    const Tensor t = f.load(cases[i].name, cases[i].dtype);
    EXPECT_EQ(t.shape(), cases[i].shape);
    EXPECT_EQ(raw(t), data[i]);
  }
  // HF order on disk: dtype rank descending (I64 > F32 > BF16 > F16 > E4M3 > E5M2 > U8), then name.
  std::vector<std::string> on_disk;
  auto sorted = f.header().tensors;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return std::pair(a.begin, a.end) < std::pair(b.begin, b.end); });
  for (const auto& e : sorted) {
    if (e.nbytes() > 0) on_disk.push_back(e.name);
  }
  EXPECT_EQ(on_disk, (std::vector<std::string>{"ids.i64", "scalar.f32", "w.f32", "ä/ünïcode name", "scalar.bf16",
                                                "w.bf16", "w.f16", "w.e4m3", "w.e5m2", "mask.u8"}));
  EXPECT_EQ(f.header().tensors.front().name, "ids.i64") << "header order follows data order";
  tg::remove_tree(dir);
}

TEST(Safetensors, EmptyFileRoundTrip) {
  const auto dir = temp_dir();
  SafetensorsWriter w;
  w.write(dir / "empty.safetensors");
  const SafetensorsFile f(dir / "empty.safetensors");
  EXPECT_TRUE(f.header().tensors.empty());
  EXPECT_EQ(f.header().metadata.at("format"), "pt");
  // The smallest legal file: "{}" padded.
  const auto h = parse_safetensors(as_bytes(st_file("{}      ")), "min");
  EXPECT_TRUE(h.tensors.empty());
  EXPECT_EQ(h.data_offset, 16u);
  tg::remove_tree(dir);
}

// ---- the format spec, byte by byte ----------------------------------------------------------------
TEST(Safetensors, HandBuiltFileMatchesSpecAndWriter) {
  // Two tensors, F32 "b" = [1, -2] and BF16 "a" = [1.5, -0.25], laid out as the spec and HF's writer
  // do: __metadata__ first, F32 (higher rank) before BF16, offsets relative to the data buffer.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}})";
  std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  ASSERT_EQ(padded.size() % 8, 0u);
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((padded.size() >> (8 * i)) & 0xFF);  // u64 LE
  file += padded;
  const uint8_t data[] = {0x00, 0x00, 0x80, 0x3F,   // 1.0f
                          0x00, 0x00, 0x00, 0xC0,   // -2.0f
                          0xC0, 0x3F,               // bf16 1.5  = 0x3FC0
                          0x80, 0xBE};              // bf16 -0.25 = 0xBE80
  file.append(reinterpret_cast<const char*>(data), sizeof data);

  const auto h = parse_safetensors(as_bytes(file), "hand");
  EXPECT_EQ(h.data_offset, 8 + padded.size());
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "b");
  EXPECT_EQ(h.tensors[0].dtype, DType::F32);
  EXPECT_EQ(h.tensors[0].element_size, 4u);
  EXPECT_EQ(h.tensors[0].shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(h.tensors[0].begin, 0u);
  EXPECT_EQ(h.tensors[0].end, 8u);
  EXPECT_EQ(h.tensors[1].name, "a");
  EXPECT_EQ(h.tensors[1].dtype, DType::BF16);
  EXPECT_EQ(h.tensors[1].begin, 8u);
  EXPECT_EQ(h.tensors[1].end, 12u);
  EXPECT_EQ(h.metadata.at("format"), "pt");

  // The writer produces exactly these bytes.
  const auto dir = temp_dir();
  const float fv[] = {1.0f, -2.0f};
  const uint16_t bv[] = {0x3FC0, 0xBE80};
  SafetensorsWriter w;
  w.add("a", TensorView(const_cast<uint16_t*>(bv), DType::BF16, Shape{2}));
  w.add("b", TensorView(const_cast<float*>(fv), DType::F32, Shape{2}));
  w.write(dir / "w.safetensors");
  EXPECT_EQ(read_file(dir / "w.safetensors"), file);

  const SafetensorsFile f(dir / "w.safetensors");
  const Tensor a = f.load("a", DType::F32);
  EXPECT_EQ(a.ptr<float>()[0], 1.5f);
  EXPECT_EQ(a.ptr<float>()[1], -0.25f);
  tg::remove_tree(dir);
}

TEST(Safetensors, EveryFormatDtypeParses) {
  const std::vector<std::pair<std::string, std::size_t>> dtypes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"I16", 2}, {"U16", 2}, {"F16", 2},     {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8}, {"U64", 8}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
  };
  EXPECT_EQ(safetensors_dtype_names().size(), dtypes.size());
  for (const auto& [name, size] : dtypes) {
    SCOPED_TRACE(name);
    const std::string n = std::to_string(3 * size);
    const auto h = parse_safetensors(
        as_bytes(st_file(R"({"t":{"dtype":")" + name + R"(","shape":[3],"data_offsets":[0,)" + n + "]}}",
                         std::string(3 * size, '\x01'))),
        "all");
    ASSERT_EQ(h.tensors.size(), 1u);
    EXPECT_EQ(h.tensors[0].dtype_name, name);
    EXPECT_EQ(h.tensors[0].element_size, size);
    const bool loadable = name != "BOOL" && name != "I8" && name != "I16" && name != "U16" && name != "U32" &&
                          name != "U64";
    EXPECT_EQ(h.tensors[0].dtype.has_value(), loadable);
  }
}

TEST(Safetensors, ZeroSizeAndScalarTensorsAreLegalAnywhere) {
  // Zero-size tensors sit at any offset the tiling allows, including the very end and the same
  // offset as a neighbour; the field order inside an entry does not matter.
  const auto h = parse_safetensors(
      as_bytes(st_file(R"({"z0":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                       R"("s":{"shape":[],"data_offsets":[0,4],"dtype":"F32"},)"
                       R"("z1":{"dtype":"BF16","shape":[3,0,2],"data_offsets":[4,4]},)"
                       R"("z2":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}})",
                       std::string(4, '\0'))),
      "zero");
  ASSERT_EQ(h.tensors.size(), 4u);
  EXPECT_EQ(h.tensors[1].shape.size(), 0u);
  EXPECT_EQ(h.tensors[1].numel(), 1);
  EXPECT_EQ(h.tensors[2].numel(), 0);
  // A zero dimension makes other large dimensions harmless, as long as the product of the non-zero
  // ones stays within int64 (so that no left-to-right partial product can overflow downstream).
  EXPECT_NO_THROW(parse_safetensors(
      as_bytes(st_file(R"({"z":{"dtype":"F64","shape":[4294967296,1000000,0],"data_offsets":[0,0]}})")), "z"));
  EXPECT_THROW(parse_safetensors(
      as_bytes(st_file(R"({"z":{"dtype":"F64","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})")), "z"),
      Error);
}

// ---- bad files: one test per class ------------------------------------------------------------------
TEST(SafetensorsBad, ShorterThan8Bytes) {
  expect_bad("", {"0 bytes", "8-byte"});
  expect_bad(std::string(7, '\0'), {"7 bytes"});
}

TEST(SafetensorsBad, HeaderLongerThanFile) {
  std::string f = st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd");
  f.resize(f.size() - 10);  // truncated inside the header
  expect_bad(f, {"header length", "truncated"});
}

TEST(SafetensorsBad, HeaderOver100MB) {
  std::string f(16, ' ');
  const uint64_t n = kSafetensorsMaxHeader + 1;
  std::memcpy(f.data(), &n, 8);
  expect_bad(f, {"100000001", "limit"});
  const uint64_t huge = ~uint64_t{0};
  std::memcpy(f.data(), &huge, 8);
  expect_bad(f, {"limit"});
}

TEST(SafetensorsBad, InvalidJson) {
  expect_bad(st_file(R"({"a":{"dtype":"F32",)"), {"invalid JSON"});
  expect_bad(st_file(R"({"a":1} trailing)"), {"invalid JSON"});
  expect_bad(st_file(std::string("{\"a\":1}\0\0\0\0", 11)), {"invalid JSON"});  // NUL padding is not the spec's space padding
}

TEST(SafetensorsBad, InvalidUtf8InHeaderOrNames) {
  const std::string data(4, '\0');
  expect_bad(st_file("{\"n\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data), {"UTF-8"});
  expect_bad(st_file("{\"\xc0\xae\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data),
             {"UTF-8"});  // overlong
  expect_bad(st_file("{\"\xed\xa0\x80\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data),
             {"UTF-8"});  // an encoded surrogate
  expect_bad(st_file(R"({"\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data),
             {"invalid JSON"});  // a lone surrogate escape
  expect_bad(st_file("{\"__metadata__\":{\"k\":\"\xf5\x80\x80\x80\"}}"), {"UTF-8"});
}

TEST(SafetensorsBad, HeaderNotAnObject) {
  expect_bad(st_file("[1, 2]"), {"start with '{'"});
  expect_bad(st_file(" {}"), {"start with '{'"});
  expect_bad(st_file(""), {"start with '{'"});
}

TEST(SafetensorsBad, EntryNotAnObject) {
  expect_bad(st_file(R"({"w":[0,4]})"), {"'w'", "expected an object"});
  expect_bad(st_file(R"({"w":"F32"})"), {"'w'", "expected an object"});
}

TEST(SafetensorsBad, MissingOrExtraFields) {
  expect_bad(st_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "abcd"), {"'w'", "missing field 'dtype'"});
  expect_bad(st_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "abcd"), {"'w'", "missing field 'shape'"});
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[1]}})", "abcd"), {"'w'", "missing field 'data_offsets'"});
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"strides":[1]}})", "abcd"),
             {"'w'", "unexpected field 'strides'"});
}

TEST(SafetensorsBad, UnknownDtype) {
  expect_bad(st_file(R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", std::string(16, 'x')),
             {"'w'", "unknown dtype 'F128'", "BF16"});
  expect_bad(st_file(R"({"w":{"dtype":"bf16","shape":[1],"data_offsets":[0,2]}})", "xx"),
             {"'w'", "unknown dtype 'bf16'"});  // the format's names are case-sensitive
  expect_bad(st_file(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "abcd"), {"'w'", "dtype must be a string"});
}

TEST(SafetensorsBad, BadShapeEntries) {
  const std::string d4(4, 'x');
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", d4), {"'w'", "negative"});
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", d4), {"'w'", "integers"});
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}})", d4), {"'w'", "integers"});
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[[1]],"data_offsets":[0,4]}})", d4), {"'w'", "integers"});
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})", d4), {"'w'", "array"});
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]}})", d4),
             {"'w'", "integers"});  // beyond u64: parsed as a float
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]}})", d4),
             {"'w'", "too large"});
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", d4),
             {"'w'", "overflows"});
  // Fits in the element count, overflows once multiplied by the element size.
  expect_bad(st_file(R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]}})", d4),
             {"'w'", "overflows"});
}

TEST(SafetensorsBad, DataOffsetsNotTwoIntegers) {
  const std::string d4(4, 'x');
  for (const char* off : {"[0]", "[0,4,8]", "[]", "[\"0\",4]", "[0,4.0]", "[-1,4]", "{\"begin\":0}", "4"}) {
    SCOPED_TRACE(off);
    expect_bad(st_file(std::string(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)") + off + "}}", d4),
               {"'w'", "data_offsets"});
  }
}

TEST(SafetensorsBad, BeginAfterEnd) {
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", "abcd"),
             {"'w'", "begin 4 is after end 0"});
}

TEST(SafetensorsBad, EndBeyondDataBuffer) {
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "abcd"),
             {"'w'", "beyond the data buffer (4 bytes)"});
  expect_bad(st_file(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}})"),
             {"'w'", "beyond the data buffer"});
}

TEST(SafetensorsBad, ByteCountDisagreesWithShapeAndDtype) {
  expect_bad(st_file(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", std::string(8, 'x')),
             {"'w'", "hold 8 bytes", "needs 6"});
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[],"data_offsets":[0,0]}})"), {"'w'", "needs 4"});
}

TEST(SafetensorsBad, Overlaps) {
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                     std::string(12, 'x')),
             {"'a'", "'b'", "overlaps"});
  // Two tensors sharing the same bytes (HF refuses to write shared tensors; a reader must refuse too).
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                     std::string(4, 'x')),
             {"overlaps"});
  // A zero-size tensor inside another one.
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                     std::string(8, 'x')),
             {"'z'", "overlaps"});
}

TEST(SafetensorsBad, GapsAndUntiledBuffer) {
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                     std::string(12, 'x')),
             {"gap of 4", "'a'", "'b'"});
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, 'x')),
             {"starts with 4 unused bytes", "'a'"});
  expect_bad(st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(9, 'x')),
             {"5 unused bytes at the end", "'a'"});
  expect_bad(st_file("{}", "xyz"), {"3 bytes of data but no tensors"});
}

TEST(SafetensorsBad, DuplicateNames) {
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                     R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                     std::string(8, 'x')),
             {"duplicate key 'w'"});
  expect_bad(st_file(R"({"w":{"dtype":"F32","dtype":"BF16","shape":[1],"data_offsets":[0,4]}})", "abcd"),
             {"duplicate key 'dtype'", "'w'"});
  expect_bad(st_file(R"({"__metadata__":{},"__metadata__":{}})"), {"duplicate key '__metadata__'"});
}

TEST(SafetensorsBad, MetadataNotAStringMap) {
  expect_bad(st_file(R"({"__metadata__":{"format":1}})"), {"__metadata__", "'format'", "must be a string"});
  expect_bad(st_file(R"({"__metadata__":["pt"]})"), {"__metadata__", "object of strings"});
  expect_bad(st_file(R"({"__metadata__":null})"), {"__metadata__", "object of strings"});
  expect_bad(st_file(R"({"__metadata__":{"a":{"b":"c"}}})"), {"__metadata__", "must be a string"});
}

TEST(SafetensorsBad, DeepNesting) {
  expect_bad(st_file(R"({"w":{"dtype":"F32","shape":[[[[[1]]]]],"data_offsets":[0,4]}})", "abcd"), {"nests deeper"});
}

TEST(SafetensorsBad, ControlCharactersInNamesAreEscapedInMessages) {
  try {
    parse_safetensors(as_bytes(st_file(R"({"a\u0001\nb":{"dtype":"X","shape":[],"data_offsets":[0,0]}})")), "bad");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(R"('a\x01\x0ab')"), std::string::npos) << e.what();
  }
}

TEST(SafetensorsBad, ErrorsFromAFileNameThePath) {
  const auto dir = temp_dir();
  const auto path = dir / "broken.safetensors";
  write_file_atomic(path, st_file(R"({"layer.0.w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", "short"));
  expect_error([&] { SafetensorsFile f(path); }, {path.string(), "'layer.0.w'", "beyond the data buffer"});
  expect_error([&] { SafetensorsFile f(dir / "missing.safetensors"); }, {"missing.safetensors"});
  tg::remove_tree(dir);
}

// ---- converting loads ---------------------------------------------------------------------------------
TEST(SafetensorsLoad, Bf16ToF32IsExactForEveryPattern) {
  const auto dir = temp_dir();
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  SafetensorsWriter w;
  w.add("all", TensorView(all.data(), DType::BF16, Shape{256, 256}));
  w.write(dir / "bf16.safetensors");
  const Tensor t = SafetensorsFile(dir / "bf16.safetensors").load("all", DType::F32);
  ASSERT_EQ(t.dtype(), DType::F32);
  ASSERT_EQ(t.shape(), (Shape{256, 256}));
  for (uint32_t i = 0; i < 65536; ++i) {
    // fp32 = bf16 << 16 (the definition of BF16), NaN payloads included.
    ASSERT_EQ(std::bit_cast<uint32_t>(t.ptr<float>()[i]), i << 16) << "bf16 0x" << std::hex << i;
  }
  tg::remove_tree(dir);
}

TEST(SafetensorsLoad, F32ToBf16RoundsToNearestEven) {
  const auto dir = temp_dir();
  struct Case {
    uint32_t f32;
    uint16_t bf16;
  };
  // Hand-checked: the low 16 bits decide; exactly 0x8000 is a tie that goes to the even neighbour.
  const std::vector<Case> cases = {
      {0x3F800000, 0x3F80},  // 1.0 exact
      {0x3F808000, 0x3F80},  // tie, 0x3F80 is even: down
      {0x3F818000, 0x3F82},  // tie, 0x3F81 is odd: up
      {0x3F808001, 0x3F81},  // just above the tie: up
      {0x3F807FFF, 0x3F80},  // just below: down
      {0xBF808001, 0xBF81},  // sign-symmetric
      {0x7F7FFFFF, 0x7F80},  // FLT_MAX rounds up to +inf
      {0x7F800000, 0x7F80},  // +inf
      {0xFF800000, 0xFF80},  // -inf
      {0x00000001, 0x0000},  // the smallest subnormal rounds to zero
      {0x80000000, 0x8000},  // -0
      {0x007FFFFF, 0x0080},  // largest subnormal rounds up to the smallest normal
  };
  std::vector<uint32_t> in;
  for (const auto& c : cases) in.push_back(c.f32);
  in.push_back(0x7FC00001);  // NaN
  SafetensorsWriter w;
  w.add("x", TensorView(in.data(), DType::F32, Shape{static_cast<int64_t>(in.size())}));
  w.write(dir / "f32.safetensors");
  const SafetensorsFile f(dir / "f32.safetensors");
  const Tensor t = f.load("x", DType::BF16);
  const auto* b = t.ptr<uint16_t>();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(b[i], cases[i].bf16) << "f32 0x" << std::hex << cases[i].f32;
  }
  EXPECT_EQ(b[cases.size()] & 0x7F80, 0x7F80);
  EXPECT_NE(b[cases.size()] & 0x7F, 0) << "NaN must stay NaN";
  tg::remove_tree(dir);
}

TEST(SafetensorsLoad, F16AndBf16ConvertThroughExactFloat) {
  const auto dir = temp_dir();
  const std::vector<float> vals = {0.0f, 1.0f, -2.5f, 65504.0f, 1e-7f, 3.0e-5f, 1.00390625f, 70000.0f};
  std::vector<uint16_t> f16, bf16;
  for (float v : vals) {
    f16.push_back(float_to_f16_bits(v));
    bf16.push_back(float_to_bf16_bits(v));
  }
  SafetensorsWriter w;
  w.add("h", TensorView(f16.data(), DType::F16, Shape{static_cast<int64_t>(vals.size())}));
  w.add("b", TensorView(bf16.data(), DType::BF16, Shape{static_cast<int64_t>(vals.size())}));
  w.write(dir / "x.safetensors");
  const SafetensorsFile f(dir / "x.safetensors");
  const Tensor h32 = f.load("h", DType::F32), h_b = f.load("h", DType::BF16), b_h = f.load("b", DType::F16);
  for (std::size_t i = 0; i < vals.size(); ++i) {
    EXPECT_EQ(h32.ptr<float>()[i], f16_bits_to_float(f16[i]));
    EXPECT_EQ(h_b.ptr<uint16_t>()[i], float_to_bf16_bits(f16_bits_to_float(f16[i])));
    EXPECT_EQ(b_h.ptr<uint16_t>()[i], float_to_f16_bits(bf16_bits_to_float(bf16[i])));
  }
  EXPECT_EQ(h32.ptr<float>()[3], 65504.0f);
  EXPECT_TRUE(std::isinf(h32.ptr<float>()[7])) << "70000 overflows F16";
  tg::remove_tree(dir);
}

TEST(SafetensorsLoad, UnalignedDataIsReadSafely) {
  // Not HF order: a 1-byte tensor first puts the F32 data at an odd address.
  const auto dir = temp_dir();
  std::string data = "\x07";
  const float v[3] = {1.5f, -3.0f, 0.1f};
  data.append(reinterpret_cast<const char*>(v), sizeof v);
  std::string header = R"({"pad":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("x":{"dtype":"F32","shape":[3],"data_offsets":[1,13]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  write_file_atomic(dir / "u.safetensors", st_file(header, data));
  const SafetensorsFile f(dir / "u.safetensors");
  ASSERT_EQ(f.header().data_offset % 8, 0u);  // the map is page-aligned, so x starts at an odd address
  ASSERT_EQ(reinterpret_cast<uintptr_t>(f.bytes(*f.find("x")).data()) % 4, 1u);
  const Tensor x32 = f.load("x", DType::F32), x16 = f.load("x", DType::BF16);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(x32.ptr<float>()[i], v[i]);
    EXPECT_EQ(x16.ptr<uint16_t>()[i], float_to_bf16_bits(v[i]));
  }
  tg::remove_tree(dir);
}

TEST(SafetensorsLoad, ErrorsNameFileAndTensor) {
  const auto dir = temp_dir();
  const auto path = dir / "m.safetensors";
  write_file_atomic(path, st_file(R"({"flags":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]},)"
                                  R"("q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[2,4]},)"
                                  R"("big":{"dtype":"U8","shape":[1,1,1,1,1,1,1],"data_offsets":[4,5]}}  )",
                                  std::string("\x01\x00\x38\x40\x09", 5)));
  const SafetensorsFile f(path);
  expect_error([&] { f.load("flags", DType::F32); }, {path.string(), "'flags'", "unsupported dtype for loading"});
  expect_error([&] { f.load("q", DType::F32); }, {path.string(), "'q'", "cannot be loaded as F32"});
  expect_error([&] { f.load("nope", DType::F32); }, {path.string(), "'nope'"});
  expect_error([&] { f.load("big", DType::U8); }, {path.string(), "'big'", "7 dimensions"});
  const Tensor q = f.load("q", DType::E4M3);  // same dtype: a plain copy
  EXPECT_EQ(e4m3_bits_to_float(q.ptr<uint8_t>()[0]), 1.0f);
  EXPECT_EQ(e4m3_bits_to_float(q.ptr<uint8_t>()[1]), 2.0f);
  tg::remove_tree(dir);
}

// ---- checkpoints ------------------------------------------------------------------------------------------
struct Model {
  std::vector<std::string> names;
  std::vector<std::vector<uint8_t>> data;
  std::vector<std::pair<std::string, TensorView>> views;
};

Model make_model() {
  Model m;
  const std::vector<std::pair<std::string, Shape>> specs = {
      {"model.embed_tokens.weight", {37, 16}},  {"model.layers.0.self_attn.q_proj.weight", {16, 16}},
      {"model.layers.0.mlp.down_proj.weight", {16, 40}}, {"model.layers.1.input_layernorm.weight", {16}},
      {"model.layers.10.mlp.up_proj.weight", {40, 16}},  {"model.norm.weight", {16}},
      {"scalar", {}},                                    {"empty", {0}},
  };
  for (std::size_t i = 0; i < specs.size(); ++i) {
    m.names.push_back(specs[i].first);
    m.data.push_back(random_bytes(static_cast<std::size_t>(specs[i].second.numel()) * 2, 100 + i));
  }
  for (std::size_t i = 0; i < specs.size(); ++i) {
    m.views.emplace_back(m.names[i], TensorView(m.data[i].data(), DType::BF16, specs[i].second));
  }
  return m;
}

TEST(Checkpoint, SingleFileRoundTrip) {
  const auto dir = temp_dir();
  const Model m = make_model();
  write_checkpoint(dir, m.views);
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  const CheckpointReader r(dir);
  auto sorted = m.names;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(r.names(), sorted);
  for (std::size_t i = 0; i < m.names.size(); ++i) {
    EXPECT_EQ(raw(r.load(m.names[i], DType::BF16)), m.data[i]) << m.names[i];
  }
  tg::remove_tree(dir);
}

TEST(Checkpoint, ShardedRoundTripAndIndex) {
  const auto dir = temp_dir();
  const Model m = make_model();
  // 2 KiB shards, packed in order: embed + q (1696 B) | down + layers.1 norm (1312) | up + norm + scalar + empty.
  write_checkpoint(dir, m.views, 2048);
  const std::string index_text = read_file(dir / "model.safetensors.index.json");
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  std::vector<std::string> shards;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors") shards.push_back(e.path().filename().string());
  }
  std::sort(shards.begin(), shards.end());
  ASSERT_EQ(shards.size(), 3u);
  EXPECT_EQ(shards[0], "model-00001-of-00003.safetensors");
  EXPECT_EQ(shards[2], "model-00003-of-00003.safetensors");
  uint64_t total = 0;
  for (const auto& d : m.data) total += d.size();
  EXPECT_NE(index_text.find("\"total_size\": " + std::to_string(total)), std::string::npos) << index_text;
  EXPECT_NE(index_text.find("\"model.embed_tokens.weight\": \"model-00001-of-00003.safetensors\""),
            std::string::npos) << index_text;
  for (const auto& s : shards) {  // every shard is a complete file of its own
    EXPECT_NO_THROW(SafetensorsFile f(dir / s)) << s;
  }

  const CheckpointReader r(dir);
  EXPECT_EQ(r.names().size(), m.names.size());
  for (std::size_t i = 0; i < m.names.size(); ++i) {
    EXPECT_TRUE(r.contains(m.names[i]));
    EXPECT_EQ(r.entry(m.names[i]).dtype, DType::BF16);
    EXPECT_EQ(raw(r.load(m.names[i], DType::BF16)), m.data[i]) << m.names[i];
  }
  EXPECT_FALSE(r.contains("lm_head.weight"));
  expect_error([&] { r.load("lm_head.weight", DType::BF16); }, {dir.string(), "'lm_head.weight'"});
  const Tensor f32 = r.load("model.norm.weight", DType::F32);
  EXPECT_EQ(f32.dtype(), DType::F32);

  // Rewriting as a single file removes the stale index; rewriting sharded removes model.safetensors.
  write_checkpoint(dir, m.views);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  write_checkpoint(dir, m.views, 2048);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  EXPECT_EQ(CheckpointReader(dir).names().size(), m.names.size());
  tg::remove_tree(dir);
}

TEST(Checkpoint, WriterRefusesDuplicatesBeforeWritingAnything) {
  const auto dir = temp_dir();
  Model m = make_model();
  m.views.push_back(m.views.front());
  expect_error([&] { write_checkpoint(dir, m.views, 2048); }, {"'model.embed_tokens.weight'", "twice"});
  EXPECT_TRUE(fs::is_empty(dir));
  SafetensorsWriter w;
  w.add("a", m.views[0].second);
  expect_error([&] { w.add("a", m.views[1].second); }, {"'a'", "twice"});
  expect_error([&] { w.add("__metadata__", m.views[1].second); }, {"reserved"});
  expect_error([&] { w.add("bad\xff", m.views[1].second); }, {"UTF-8"});
  const TensorView strided = TensorView(m.data[1].data(), DType::BF16, Shape{16, 16}).slice_cols(0, 8);
  expect_error([&] { w.add("strided", strided); }, {"'strided'", "contiguous"});
  tg::remove_tree(dir);
}

class CheckpointBad : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir();
    model_ = make_model();
    write_checkpoint(dir_, model_.views, 2048);
    index_ = read_file(dir_ / "model.safetensors.index.json");
  }
  void TearDown() override { tg::remove_tree(dir_); }
  void set_index(const std::string& text) { write_file_atomic(dir_ / "model.safetensors.index.json", text); }
  fs::path dir_;
  Model model_;
  std::string index_;
};

TEST_F(CheckpointBad, NeitherFile) {
  const auto empty = dir_ / "empty";
  fs::create_directories(empty);
  expect_error([&] { CheckpointReader r(empty); },
               {empty.string(), "model.safetensors", "model.safetensors.index.json"});
  expect_error([&] { CheckpointReader r(dir_ / "nope"); }, {"nope", "not a directory"});
}

TEST_F(CheckpointBad, NameMappedToMissingShard) {
  fs::remove(dir_ / "model-00003-of-00003.safetensors");
  expect_error([&] { CheckpointReader r(dir_); }, {"index.json", "model-00003-of-00003.safetensors", "does not exist"});
}

TEST_F(CheckpointBad, NameMissingFromItsShard) {
  std::string text = index_;
  const std::string from = "\"model.norm.weight\": \"model-00003-of-00003.safetensors\"";
  const auto at = text.find(from);
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, from.size(), "\"model.norm.weight\": \"model-00001-of-00003.safetensors\"");
  set_index(text);
  expect_error([&] { CheckpointReader r(dir_); },
               {"'model.norm.weight'", "model-00001-of-00003.safetensors", "does not contain it"});
}

TEST_F(CheckpointBad, ExtraTensorsInAShardAreFine) {
  std::string text = index_;
  const std::string from = "    \"model.norm.weight\": \"model-00003-of-00003.safetensors\",\n";
  const auto at = text.find(from);
  ASSERT_NE(at, std::string::npos) << text;
  text.erase(at, from.size());
  const std::string ts = "\"total_size\": ";
  const auto t = text.find(ts) + ts.size();
  const auto e = text.find_first_not_of("0123456789", t);
  text.replace(t, e - t, std::to_string(std::stoull(text.substr(t, e - t)) - 32));
  set_index(text);
  const CheckpointReader r(dir_);
  EXPECT_FALSE(r.contains("model.norm.weight"));
  EXPECT_EQ(r.names().size(), model_.names.size() - 1);
}

TEST_F(CheckpointBad, TotalSizeMismatch) {
  std::string text = index_;
  const std::string ts = "\"total_size\": ";
  text.insert(text.find(ts) + ts.size(), "1");
  set_index(text);
  expect_error([&] { CheckpointReader r(dir_); }, {"index.json", "total_size"});
}

TEST_F(CheckpointBad, MalformedIndex) {
  set_index("{\"weight_map\": [] }");
  expect_error([&] { CheckpointReader r(dir_); }, {"index.json", "weight_map", "object"});
  set_index("{\"metadata\": {}}");
  expect_error([&] { CheckpointReader r(dir_); }, {"index.json", "missing \"weight_map\""});
  set_index("{\"weight_map\": {\"a\": 3}}");
  expect_error([&] { CheckpointReader r(dir_); }, {"index.json", "'a'", "shard file name"});
  set_index("{\"weight_map\": {\"a\": \"../model-00001-of-00003.safetensors\"}}");
  expect_error([&] { CheckpointReader r(dir_); }, {"index.json", "not a plain file name"});
  set_index("{\"weight_map\": {\"a\": \"x\", \"a\": \"y\"}}");
  expect_error([&] { CheckpointReader r(dir_); }, {"index.json", "duplicate key 'a'"});
  set_index("{\"weight_map\": ");
  expect_error([&] { CheckpointReader r(dir_); }, {"index.json", "invalid JSON"});
  set_index("{\"metadata\": {\"total_size\": \"12\"}, \"weight_map\": {}}");
  expect_error([&] { CheckpointReader r(dir_); }, {"index.json", "total_size", "non-negative integer"});
}

TEST_F(CheckpointBad, CorruptShardNamesTheShard) {
  const auto shard = dir_ / "model-00002-of-00003.safetensors";
  std::string bytes = read_file(shard);
  bytes.resize(bytes.size() - 1);
  write_file_atomic(shard, bytes);
  expect_error([&] { CheckpointReader r(dir_); }, {shard.string(), "beyond the data buffer"});
}

}  // namespace
}  // namespace tg
