// Helpers shared by the reference tests: HF fixture access, comparison metrics, small random models.
#pragma once

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/file_io.h"
#include "common/safetensors.h"
#include "reference/model.h"

namespace tg::ref::testing {

inline std::filesystem::path fixtures_dir() {
  return std::filesystem::path(TEGEMMA_SOURCE_DIR) / "reference" / "fixtures";
}

// max |a - b| / max |b|: the error relative to the scale of the expected tensor (how the tolerances of
// these tests are stated).
inline double rel_err(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kCPU, at::kDouble), y = b.to(at::kCPU, at::kDouble);
  EXPECT_EQ(x.sizes(), y.sizes());
  if (x.sizes() != y.sizes()) return 1e30;
  const double scale = y.abs().max().item<double>();
  return (x - y).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

inline at::Tensor long_2d(const nlohmann::json& j) {
  std::vector<int64_t> flat;
  const int64_t rows = static_cast<int64_t>(j.size());
  int64_t cols = 0;
  for (const auto& r : j) {
    cols = static_cast<int64_t>(r.size());
    for (const auto& v : r) flat.push_back(v.get<int64_t>());
  }
  return at::tensor(flat, at::TensorOptions().dtype(at::kLong)).view({rows, cols});
}

// Random token ids [rows, cols] in [lo, hi) from a seeded CPU generator (independent of test order).
inline at::Tensor random_ids(int64_t lo, int64_t hi, int64_t rows, int64_t cols, uint64_t seed = 1) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(lo, hi, {rows, cols}, gen, at::TensorOptions().dtype(at::kLong));
}

inline at::Tensor long_1d(const std::vector<int64_t>& v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kLong));
}

// One HF fixture directory: the checkpoint, expected.json and expected.safetensors.
class Fixture {
 public:
  explicit Fixture(const std::string& name)
      : name_(name), dir_(fixtures_dir() / name), file_(dir_ / "expected.safetensors") {
    json_ = nlohmann::json::parse(read_file(dir_ / "expected.json"));
    cfg_ = load_config(dir_);
  }
  const std::string& name() const { return name_; }
  const std::filesystem::path& dir() const { return dir_; }
  const nlohmann::json& json() const { return json_; }
  const GemmaConfig& config() const { return cfg_; }
  // An F32 array of expected.safetensors as a CPU float tensor.
  at::Tensor array(const std::string& key) const {
    const Tensor t = file_.load(key, DType::F32);
    return at::from_blob(t.data(), t.shape().vec(), at::TensorOptions().dtype(at::kFloat)).clone();
  }
  // The reference model loaded from this checkpoint (cached per dtype).
  const GemmaModel& model(at::ScalarType dtype) const {
    auto& slot = dtype == at::kFloat ? f32_ : bf16_;
    if (!slot) slot = std::make_unique<GemmaModel>(cfg_, load_weights(dir_, cfg_, dtype, at::kCPU));
    return *slot;
  }

 private:
  std::string name_;
  std::filesystem::path dir_;
  SafetensorsFile file_;
  nlohmann::json json_;
  GemmaConfig cfg_;
  mutable std::unique_ptr<GemmaModel> f32_, bf16_;
};

inline const Fixture& fixture(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Fixture>> cache;
  auto& f = cache[name];
  if (!f) f = std::make_unique<Fixture>(name);
  return *f;
}

inline std::vector<std::string> fixture_names() { return {"mqa_f32", "gqa_bf16_sharded", "hd256_bf16"}; }

// A small config with awkward sizes (GQA, q width != hidden) for the self-consistency tests.
inline GemmaConfig tiny_config() {
  GemmaConfig c;
  c.vocab_size = 131;
  c.hidden_size = 40;
  c.intermediate_size = 72;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 12;
  c.max_position_embeddings = 256;
  c.torch_dtype = "float32";
  return c;
}

// Random weights scaled like the fixtures (logits of std ~1.5) with non-zero norms.
inline RandomInit lively_init() {
  RandomInit init;
  init.std = 0.25;
  init.norm_std = 0.3;
  return init;
}

}  // namespace tg::ref::testing
