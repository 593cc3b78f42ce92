// Helpers of the impl model tests: the HF fixtures under reference/fixtures (read without LibTorch), small
// configs, and error metrics over host F32 tensors.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/file_io.h"
#include "common/gemma_config.h"
#include "common/safetensors.h"
#include "common/tensor.h"

namespace tg::impl::testing {

inline std::filesystem::path fixtures_dir() {
  return std::filesystem::path(TEGEMMA_SOURCE_DIR) / "reference" / "fixtures";
}
inline std::vector<std::string> fixture_names() { return {"mqa_f32", "gqa_bf16_sharded", "hd256_bf16"}; }

// One HF fixture: the checkpoint directory, its prompts and HF's recorded tensors (expected.safetensors).
class Fixture {
 public:
  explicit Fixture(const std::string& name) : dir_(fixtures_dir() / name), expected_(dir_ / "expected.safetensors") {
    json_ = nlohmann::json::parse(read_file(dir_ / "expected.json"));
  }
  const std::filesystem::path& dir() const { return dir_; }
  std::vector<std::vector<int64_t>> prompts() const {
    return json_["prompts"].get<std::vector<std::vector<int64_t>>>();
  }
  const nlohmann::json& json() const { return json_; }
  Tensor array(const std::string& key) const { return expected_.load(key, DType::F32); }

 private:
  std::filesystem::path dir_;
  SafetensorsFile expected_;
  nlohmann::json json_;
};

inline std::span<const float> span_of(const Tensor& t) { return {t.ptr<float>(), static_cast<std::size_t>(t.numel())}; }

// max |a - b| / max |b|: the error relative to the scale of the expected tensor.
inline double rel_err(std::span<const float> a, std::span<const float> b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size() || b.empty()) return 1e30;
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - b[i]);
    err = std::isnan(d) ? INFINITY : std::max(err, d);
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return err / (scale > 0 ? scale : 1.0);
}
inline double rel_err(const Tensor& a, const Tensor& b) { return rel_err(span_of(a), span_of(b)); }

// Rows [begin, end) of a host F32 [rows, cols] tensor as a span.
inline std::span<const float> rows_of(const Tensor& t, int64_t begin, int64_t end) {
  const int64_t cols = t.shape()[-1];
  return {t.ptr<float>() + begin * cols, static_cast<std::size_t>((end - begin) * cols)};
}

inline int64_t argmax(std::span<const float> row) { return std::max_element(row.begin(), row.end()) - row.begin(); }

// Deterministic prompts: BOS (2) then ids in [3, vocab), one per requested length.
inline std::vector<std::vector<int64_t>> random_prompts(int64_t vocab, const std::vector<int64_t>& lengths,
                                                        uint64_t seed) {
  std::vector<std::vector<int64_t>> out;
  uint64_t x = seed;
  for (int64_t n : lengths) {
    std::vector<int64_t> p{2};
    while (static_cast<int64_t>(p.size()) < n) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      p.push_back(3 + static_cast<int64_t>((x >> 33) % static_cast<uint64_t>(vocab - 3)));
    }
    out.push_back(p);
  }
  return out;
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

// Small configs. tiny128: every GEMM dimension a multiple of 128 (block scaling), MQA, q width != hidden.
inline GemmaConfig tiny_config() { return GemmaConfig::preset("tiny"); }
inline GemmaConfig tiny128_config() {
  GemmaConfig c = GemmaConfig::preset("tiny");
  c.vocab_size = 384;
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;  // q width 256 != hidden 128
  return c;
}

}  // namespace tg::impl::testing
