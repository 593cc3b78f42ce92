#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "common/file_io.h"
#include "common/json_util.h"
#include "common/npy.h"

namespace tg {
namespace {

std::filesystem::path temp_dir() {
  auto d = std::filesystem::temp_directory_path() / ("tegemma_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

// Google Benchmark's bare non-finite doubles (the cv of an all-zero counter, session 21's bench_gemm.json) become
// null outside strings; strings (escaped quotes included) and every other token are untouched.
TEST(JsonUtil, NonFiniteTokensBecomeNullOutsideStrings) {
  const std::string raw =
      R"({"a": NaN, "b": -nan, "c": Infinity, "d": -inf, "e": [inf, 1.5e-3, -2], "name": "NaN \"inf\" x",)"
      R"( "t": true, "f": false, "n": null})";
  const nlohmann::json j = nlohmann::json::parse(json_nonfinite_to_null(raw));
  for (const char* k : {"a", "b", "c", "d"}) EXPECT_TRUE(j[k].is_null()) << k;
  EXPECT_TRUE(j["e"][0].is_null());
  EXPECT_DOUBLE_EQ(j["e"][1].get<double>(), 1.5e-3);
  EXPECT_EQ(j["e"][2].get<int>(), -2);
  EXPECT_EQ(j["name"].get<std::string>(), "NaN \"inf\" x");
  EXPECT_TRUE(j["t"].get<bool>());
  EXPECT_FALSE(j["f"].get<bool>());
  EXPECT_TRUE(j["n"].is_null());
  EXPECT_FALSE(nlohmann::json::accept(raw));  // the input itself is not JSON
}

TEST(FileIo, AtomicWriteReplacesOnlyOnCommit) {
  const auto dir = temp_dir();
  const auto path = dir / "out.txt";
  write_file_atomic(path, "first");
  EXPECT_EQ(read_file(path), "first");
  {
    AtomicFile f(path);
    f.write("second, never committed");
    // destroyed without commit: as if an exception unwound past it
  }
  EXPECT_EQ(read_file(path), "first");
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << "leftover " << e.path();
  }
  tg::remove_tree(dir);
}

TEST(FileIo, MissingFileErrorNamesThePath) {
  try {
    read_file("/nonexistent/dir/file.bin");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/file.bin"), std::string::npos) << e.what();
  }
  EXPECT_THROW(MappedFile("/"), Error);  // a directory is not a regular file
}

TEST(Npy, WriteReadRoundTrip) {
  const auto dir = temp_dir();
  std::vector<float> v{1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  write_npy_f32(dir / "a.npy", v, Shape{2, 3});
  const auto a = read_npy_f32(dir / "a.npy");
  EXPECT_EQ(a.shape, (Shape{2, 3}));
  EXPECT_EQ(a.data, v);
  write_npy_f32(dir / "b.npy", v, Shape{6});
  EXPECT_EQ(read_npy_f32(dir / "b.npy").shape, (Shape{6}));
  // numpy requires the header (magic through newline) to be a multiple of 64 bytes
  const std::string raw = read_file(dir / "a.npy");
  EXPECT_EQ((raw.size() - v.size() * 4) % 64, 0u);
  EXPECT_EQ(raw[raw.size() - v.size() * 4 - 1], '\n');
  EXPECT_THROW(write_npy_f32(dir / "c.npy", v, Shape{4}), Error);
  tg::remove_tree(dir);
}


// remove_tree: a nested tree with files goes; a symlink inside is removed, never followed (its target outside
// the tree survives); a missing path is not an error; a file (not a directory) is removed too.
TEST(RemoveTree, RemovesNestedTreesWithoutFollowingLinks) {
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("tg_remove_tree_" + std::to_string(::getpid()));
  const fs::path outside = root.string() + "_outside";
  tg::remove_tree(root);
  tg::remove_tree(outside);
  fs::create_directories(root / "a" / "b" / "c");
  fs::create_directories(outside);
  write_file_atomic(root / "a" / "f1", "one");
  write_file_atomic(root / "a" / "b" / "c" / "f2", "two");
  write_file_atomic(outside / "keep", "kept");
  fs::create_directory_symlink(outside, root / "a" / "link");
  tg::remove_tree(root);
  EXPECT_FALSE(fs::exists(root));
  EXPECT_EQ(read_file(outside / "keep"), "kept");
  EXPECT_NO_THROW(tg::remove_tree(root));  // missing: nothing to do
  std::error_code ec;
  tg::remove_tree(outside / "keep", ec);  // a plain file
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_FALSE(fs::exists(outside / "keep"));
  tg::remove_tree(outside);
  EXPECT_FALSE(fs::exists(outside));
}

}  // namespace
}  // namespace tg
