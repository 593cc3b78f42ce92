// The impl model on the CPU backend (the CPU twins of every kernel): batches, weight loading / saving / random
// init, and the BF16 forward against HF transformers' own recorded answers (reference/fixtures, read without
// LibTorch). FP8 recipes: test_model_fp8_cpu.cpp. impl vs the LibTorch reference: parity/tests.
//
// BF16 tolerance (errors are max|x - y| / max|y| over a logits tensor): HF's BF16 answer is itself an
// approximation of its FP32 answer, at a distance n = rel_err(hf_bf16, hf_f32) (0.8% to 5% on these models).
// The impl rounds at different points (the residual add is fused into the GEMM: one rounding instead of two;
// attention keeps the scores in FP32 where HF's eager path rounds q.k to BF16; GEMMs accumulate in another
// order), so it cannot match HF's BF16 bits, but it must be as good an approximation of the FP32 answer:
// rel_err(impl, hf_f32) <= 1.5 n + 2 BF16 ulps at the logit scale (2^-7), the reference's own criterion
// (reference/tests/test_hf_fixtures.cpp).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include <unistd.h>

#include "common/check.h"
#include "common/file_io.h"
#include "common/numeric.h"
#include "common/safetensors.h"
#include "impl/batch.h"
#include "impl/model.h"
#include "impl/weights.h"
#include "kernels/tests/gpu_test_util.h"
#include "kernels/quantize/quantize.h"
#include "model_test_util.h"

namespace tg::impl {
namespace {

using testing::Fixture;
using testing::rel_err;
using testing::rows_of;

constexpr double kBf16Ulps = 0.0078;  // 2 BF16 ulps (2^-7) relative to the logit scale

std::filesystem::path temp_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / ("tegemma_impl_" + name + "_" + std::to_string(::getpid()));
  tg::remove_tree(d);
  std::filesystem::create_directories(d);
  return d;
}

using ::tg::testing::expect_error;

ModelOptions cpu_options(const char* recipe = "bf16") {
  ModelOptions o;
  o.recipe = Recipe::parse(recipe);
  o.device = Device::CPU;
  return o;
}

// ---- Batch ------------------------------------------------------------------------------------------------

TEST(Batch, FromPromptsPacksWithoutPadding) {
  const Batch b = Batch::from_prompts({{5, 6, 7}, {8}, {9, 10}});
  EXPECT_EQ(b.tokens, (std::vector<int32_t>{5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{0, 1, 2, 0, 0, 1}));
  EXPECT_EQ(b.cu_seqlens, (std::vector<int32_t>{0, 3, 4, 6}));
  EXPECT_EQ(b.max_seqlen, 3);
  EXPECT_EQ(b.last_token_rows(), (std::vector<int32_t>{2, 3, 5}));
  EXPECT_NO_THROW(b.validate(11, 8));
}

TEST(Batch, FromPaddedDropsPaddingWithHfPositions) {
  // Left padding (HF generate) and a hole in the middle: positions are cumsum(mask) - 1 at the kept tokens.
  const Batch b = Batch::from_padded({{0, 0, 2, 3}, {2, 4, 0, 5}}, {{0, 0, 1, 1}, {1, 1, 0, 1}});
  EXPECT_EQ(b.tokens, (std::vector<int32_t>{2, 3, 2, 4, 5}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{0, 1, 0, 1, 2}));
  EXPECT_EQ(b.cu_seqlens, (std::vector<int32_t>{0, 2, 5}));
  EXPECT_EQ(b.max_seqlen, 3);
}

TEST(Batch, BadInputIsNamed) {
  expect_error([] { Batch::from_prompts({{1, 2}, {}}); }, "prompt 1 is empty");
  expect_error([] { Batch::from_padded({{1, 2}}, {{0, 0}}); }, "row 0 has no token");
  expect_error([] { Batch::from_padded({{1, 2}}, {{1, 2}}); }, "expected 0 or 1");
  expect_error([] { Batch::from_prompts({{1, 99}}).validate(50, 8); }, "(sequence 0, index 1) has id 99");
  expect_error([] { Batch::from_prompts({{1, 2, 3}}).validate(50, 2); }, "(sequence 0, index 2) has position 2");
  Batch b = Batch::from_prompts({{1, 2}, {3}});
  b.max_seqlen = 1;
  expect_error([&] { b.validate(50, 8); }, "max_seqlen is 1");
  b = Batch::from_prompts({{1, 2}, {3}});
  b.cu_seqlens = {0, 2, 2, 3};
  b.max_seqlen = 2;
  expect_error([&] { b.validate(50, 8); }, "sequence 1 is empty");
}

// ---- Weights ----------------------------------------------------------------------------------------------

class FixtureWeights : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureWeights, LoadFusesQkvAndGateUpInBlockLayout) {
  const Fixture fx(GetParam());
  const CheckpointReader reader(fx.dir());
  const ModelWeights w = load_weights(fx.dir(), WeightOptions{});
  const GemmaConfig& c = w.config;
  auto expect_rows = [&](const TensorView& fused, int64_t begin, const std::string& hf) {
    const Tensor t = reader.load(hf, DType::BF16);  // the loader's conversion (F32 -> BF16 RNE) on the host
    ASSERT_EQ(std::memcmp(static_cast<const char*>(fused.data) + begin * fused.shape[1] * 2, t.data(), t.nbytes()), 0)
        << hf;
  };
  EXPECT_EQ(w.embed.shape(), (Shape{c.vocab_size, c.hidden_size}));
  expect_rows(w.embed.view(), 0, "model.embed_tokens.weight");
  expect_rows(w.final_norm.view().reshape({1, c.hidden_size}), 0, "model.norm.weight");
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = w.layers[static_cast<std::size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ASSERT_EQ(lw.qkv.master.shape(), (Shape{c.q_dim() + 2 * c.kv_dim(), c.hidden_size}));
    expect_rows(lw.qkv.master_view, 0, p + "self_attn.q_proj.weight");
    expect_rows(lw.qkv.master_view, c.q_dim(), p + "self_attn.k_proj.weight");
    expect_rows(lw.qkv.master_view, c.q_dim() + c.kv_dim(), p + "self_attn.v_proj.weight");
    expect_rows(lw.o.master_view, 0, p + "self_attn.o_proj.weight");
    ASSERT_EQ(lw.fc1.master.shape(), (Shape{2 * c.intermediate_size, c.hidden_size}));
    expect_rows(lw.fc1.master_view, 0, p + "mlp.gate_proj.weight");
    expect_rows(lw.fc1.master_view, c.intermediate_size, p + "mlp.up_proj.weight");
    expect_rows(lw.fc2.master_view, 0, p + "mlp.down_proj.weight");
    expect_rows(lw.input_norm.view().reshape({1, c.hidden_size}), 0, p + "input_layernorm.weight");
    expect_rows(lw.post_attention_norm.view().reshape({1, c.hidden_size}), 0, p + "post_attention_layernorm.weight");
    EXPECT_FALSE(lw.qkv.has_fp8);
  }
  EXPECT_EQ(w.lm_head.master_view.data, w.embed.data());  // tied
}

TEST_P(FixtureWeights, SaveRoundTripsThroughHfNames) {
  const Fixture fx(GetParam());
  const ModelWeights w = load_weights(fx.dir(), WeightOptions{});
  const auto dir = temp_dir("roundtrip_" + GetParam());
  save_checkpoint(dir, w, DType::BF16, /*max_shard_bytes=*/64 << 10);  // small shards: the index path too
  // The saved directory holds exactly the HF tensors, with HF's shapes, and a config equal to the original.
  const CheckpointReader saved(dir);
  std::vector<std::string> want;
  for (const auto& [name, shape] : hf_tensor_shapes(w.config)) {
    want.push_back(name);
    EXPECT_EQ(saved.entry(name).shape, shape) << name;
    EXPECT_EQ(saved.entry(name).dtype, DType::BF16) << name;
  }
  std::sort(want.begin(), want.end());
  EXPECT_EQ(saved.names(), want);
  GemmaConfig a = load_config(dir), b = w.config;
  a.torch_dtype = b.torch_dtype = "";
  EXPECT_EQ(a, b);
  // Loading it back gives the same fused weights, bit for bit.
  const ModelWeights back = load_weights(dir, WeightOptions{});
  auto same = [](const Tensor& x, const Tensor& y) { return testing::bitwise_equal(x, y); };
  EXPECT_TRUE(same(back.embed, w.embed));
  EXPECT_TRUE(same(back.final_norm, w.final_norm));
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    EXPECT_TRUE(same(back.layers[l].qkv.master, w.layers[l].qkv.master)) << l;
    EXPECT_TRUE(same(back.layers[l].o.master, w.layers[l].o.master)) << l;
    EXPECT_TRUE(same(back.layers[l].fc1.master, w.layers[l].fc1.master)) << l;
    EXPECT_TRUE(same(back.layers[l].fc2.master, w.layers[l].fc2.master)) << l;
    EXPECT_TRUE(same(back.layers[l].input_norm, w.layers[l].input_norm)) << l;
    EXPECT_TRUE(same(back.layers[l].post_attention_norm, w.layers[l].post_attention_norm)) << l;
  }
  // F32 files hold the BF16 values exactly.
  const auto dir32 = temp_dir("roundtrip32_" + GetParam());
  save_checkpoint(dir32, w, DType::F32);
  const CheckpointReader f32(dir32);
  EXPECT_EQ(f32.entry("model.layers.0.mlp.up_proj.weight").dtype, DType::F32);
  const ModelWeights back32 = load_weights(dir32, WeightOptions{});
  EXPECT_TRUE(same(back32.layers[0].fc1.master, w.layers[0].fc1.master));
  EXPECT_TRUE(same(back32.embed, w.embed));
  tg::remove_tree(dir);
  tg::remove_tree(dir32);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureWeights, ::testing::ValuesIn(testing::fixture_names()));

// A copy of the hd256 fixture's tensors with one edit, written as a new checkpoint.
std::filesystem::path edited_checkpoint(const std::string& tag, const std::string& drop, const std::string& add,
                                        const Shape& add_shape, bool config_too = true) {
  const Fixture fx("hd256_bf16");
  const CheckpointReader reader(fx.dir());
  const auto dir = temp_dir("edit_" + tag);
  std::vector<Tensor> keep;
  std::vector<std::pair<std::string, TensorView>> named;
  for (const std::string& n : reader.names()) {
    if (n == drop) continue;
    keep.push_back(reader.load(n, DType::BF16));
    named.emplace_back(n, keep.back().view());
  }
  if (!add.empty()) {
    if (add == "lm_head.weight" && add_shape.ndim() == 0) {  // a tied head that differs from the embedding
      keep.push_back(reader.load("model.embed_tokens.weight", DType::BF16));
      keep.back().ptr<uint16_t>()[7] ^= 0x0100;
    } else {
      keep.push_back(Tensor::zeros(DType::BF16, add_shape));
    }
    named.emplace_back(add, keep.back().view());
  }
  write_checkpoint(dir, named);
  if (config_too) std::filesystem::copy_file(fx.dir() / "config.json", dir / "config.json");
  return dir;
}

TEST(Weights, CheckpointProblemsNameTheHfTensor) {
  expect_error(
      [] {
        load_weights(edited_checkpoint("missing", "model.layers.1.self_attn.k_proj.weight", "", {}), WeightOptions{});
      },
      "missing tensor model.layers.1.self_attn.k_proj.weight (expected shape [512, 64])");
  expect_error(
      [] {
        load_weights(edited_checkpoint("shape", "model.layers.0.mlp.up_proj.weight",
                                       "model.layers.0.mlp.up_proj.weight", {128, 65}),
                     WeightOptions{});
      },
      "tensor model.layers.0.mlp.up_proj.weight: expected shape [128, 64], got [128, 65]");
  expect_error(
      [] {
        load_weights(edited_checkpoint("extra", "", "model.layers.0.self_attn.q_norm.weight", {256}), WeightOptions{});
      },
      "unexpected tensor model.layers.0.self_attn.q_norm.weight");
  expect_error([] { load_weights(edited_checkpoint("untied", "", "lm_head.weight", {}), WeightOptions{}); },
               "lm_head.weight differs from model.embed_tokens.weight");
  expect_error([] { load_weights(edited_checkpoint("noconfig", "", "", {}, false), WeightOptions{}); },
               "no config.json");
  // A tied lm_head equal to the embedding is accepted.
  {
    const Fixture fx("hd256_bf16");
    const CheckpointReader reader(fx.dir());
    const auto dir = temp_dir("tied");
    std::vector<Tensor> keep;
    std::vector<std::pair<std::string, TensorView>> named;
    for (const std::string& n : reader.names()) {
      keep.push_back(reader.load(n, DType::BF16));
      named.emplace_back(n, keep.back().view());
    }
    named.emplace_back("lm_head.weight", keep.front().view());
    ASSERT_EQ(named.front().first, "model.embed_tokens.weight");
    write_checkpoint(dir, named);
    std::filesystem::copy_file(fx.dir() / "config.json", dir / "config.json");
    EXPECT_NO_THROW(load_weights(dir, WeightOptions{}));
  }
}

TEST(Weights, RandomInitIsDeterministicAndHfShaped) {
  const GemmaConfig c = testing::tiny_config();
  RandomInit init;
  init.norm_std = 0.1;
  const ModelWeights a = random_weights(c, 7, WeightOptions{}, init), b = random_weights(c, 7, WeightOptions{}, init);
  const ModelWeights other = random_weights(c, 8, WeightOptions{}, init);
  EXPECT_TRUE(testing::bitwise_equal(a.embed, b.embed));
  EXPECT_TRUE(testing::bitwise_equal(a.layers[1].fc1.master, b.layers[1].fc1.master));
  EXPECT_FALSE(testing::bitwise_equal(a.layers[1].fc1.master, other.layers[1].fc1.master));
  // The padding row is zero; linear weights have mean ~0 and std ~0.02; gate and up are different draws.
  const uint16_t* e = a.embed.ptr<uint16_t>();
  for (int64_t j = 0; j < c.hidden_size; ++j) EXPECT_EQ(e[c.pad_token_id * c.hidden_size + j], 0);
  const Tensor& fc1 = a.layers[0].fc1.master;
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < fc1.numel(); ++i) {
    const double v = bf16_bits_to_float(fc1.ptr<uint16_t>()[i]);
    sum += v;
    sq += v * v;
  }
  const double n = static_cast<double>(fc1.numel()), mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 4 * 0.02 / std::sqrt(n));
  EXPECT_NEAR(sd, 0.02, 0.02 * 0.05);
  EXPECT_NE(std::memcmp(fc1.data(), fc1.ptr<uint16_t>() + fc1.numel() / 2, fc1.nbytes() / 2), 0);
  double norm_sq = 0;
  for (int64_t j = 0; j < c.hidden_size; ++j) {
    const double v = bf16_bits_to_float(a.layers[0].input_norm.ptr<uint16_t>()[j]);
    norm_sq += v * v;
  }
  EXPECT_GT(norm_sq, 0.0);  // norm_std > 0: a missing "1 +" in the norm cannot hide
  const ModelWeights hf_like = random_weights(c, 7, WeightOptions{});
  for (int64_t j = 0; j < c.hidden_size; ++j) EXPECT_EQ(hf_like.final_norm.ptr<uint16_t>()[j], 0);
}

TEST(Weights, Fp8OnlyStorageKeepsNoMasterAndNoTranspose) {
  WeightOptions o;
  o.recipe = Recipe::current();
  o.storage = WeightStorage::kFp8Only;
  ModelWeights w = random_weights(testing::tiny_config(), 1, o);
  for (const LayerWeights& l : w.layers) {
    for (const LinearWeight* lin : {&l.qkv, &l.o, &l.fc1, &l.fc2}) {
      EXPECT_FALSE(lin->has_master()) << lin->name;
      EXPECT_TRUE(lin->has_fp8) << lin->name;
      EXPECT_TRUE(lin->fp8_view().has_rowwise()) << lin->name;
      EXPECT_FALSE(lin->fp8_view().has_columnwise()) << lin->name;
    }
  }
  WeightOptions m = o;
  m.storage = WeightStorage::kMaster;
  const ModelWeights master = random_weights(testing::tiny_config(), 1, m);
  EXPECT_LT(w.bytes(), master.bytes());
  expect_error([&] { save_checkpoint(temp_dir("fp8only"), w); }, "FP8-only weights");
  expect_error([&] { quantize_weights(w, Recipe::current(), false, false); }, "no BF16 master");
  WeightOptions bad;
  bad.storage = WeightStorage::kFp8Only;
  expect_error([&] { random_weights(testing::tiny_config(), 1, bad); }, "FP8-only storage needs an FP8 recipe");
}

TEST(Weights, CopyWeightsEqualsBuildingForTheTargetDirectly) {
  const GemmaConfig c = testing::tiny128_config();
  const ModelWeights master = random_weights(c, 9, WeightOptions{});
  WeightOptions o;
  o.recipe = Recipe::block();
  o.storage = WeightStorage::kFp8Only;
  o.fp8_lm_head = true;
  const ModelWeights direct = random_weights(c, 9, o), copied = copy_weights(master, o);
  EXPECT_TRUE(testing::bitwise_equal(copied.embed, direct.embed));
  for (std::size_t l = 0; l < direct.layers.size(); ++l) {
    for (auto [a, b] : {std::pair{&copied.layers[l].qkv, &direct.layers[l].qkv},
                        std::pair{&copied.layers[l].fc2, &direct.layers[l].fc2}}) {
      EXPECT_FALSE(a->has_master());
      ASSERT_EQ(a->fp8_view().data.nbytes(), b->fp8_view().data.nbytes());
      EXPECT_EQ(std::memcmp(a->fp8_view().data.data, b->fp8_view().data.data, a->fp8_view().data.nbytes()), 0);
      EXPECT_EQ(
          std::memcmp(a->fp8_view().scale_inv.data, b->fp8_view().scale_inv.data, a->fp8_view().scale_inv.nbytes()), 0);
    }
    EXPECT_TRUE(testing::bitwise_equal(copied.layers[l].input_norm, direct.layers[l].input_norm));
  }
  EXPECT_TRUE(copied.lm_head.has_fp8);
  expect_error([&] { copy_weights(copied, WeightOptions{}); }, "FP8-only weights");
}

TEST(Weights, Fp8WeightScalesFollowTheRecipe) {
  const GemmaConfig c = testing::tiny128_config();
  const ModelWeights bf = random_weights(c, 3, WeightOptions{});
  const TensorView master = bf.layers[0].fc1.master_view;
  float amax = 0;
  for (int64_t i = 0; i < master.numel(); ++i) {
    amax = std::max(amax, std::abs(bf16_bits_to_float(master.ptr<uint16_t>()[i])));
  }
  for (const char* r : {"current", "delayed:margin=2", "current:pow2=1"}) {
    const Recipe recipe = Recipe::parse(r);
    const Fp8Tensor q = quantize_weight(master, recipe, false);
    const float scale = q.view().scale.ptr<float>()[0];
    float want = (recipe.kind == RecipeKind::kDelayed ? 448.0f / 4.0f : 448.0f) / amax;
    if (recipe.power_2_scale) want = std::exp2(std::floor(std::log2(want)));
    EXPECT_EQ(scale, want) << r;
    EXPECT_EQ(q.view().scale_inv.ptr<float>()[0], 1.0f / want) << r;
    // Dequantized, every element is within E4M3's half ulp (2^-4 relative) or the subnormal step.
    Tensor deq = Tensor::empty(DType::F32, master.shape);
    kernels::dequantize(q.view(), false, deq.view());
    for (int64_t i = 0; i < master.numel(); ++i) {
      const float x = bf16_bits_to_float(master.ptr<uint16_t>()[i]);
      ASSERT_LE(std::abs(deq.ptr<float>()[i] - x), std::max(std::abs(x) * 0.0625f, 0x1p-10f / want) * 1.001f)
          << r << " " << i;
    }
  }
  // Block scaling: 128x128 tiles with power-of-two scales by default.
  const Fp8Tensor blk = quantize_weight(master, Recipe::block(), true);
  EXPECT_EQ(blk.view().mode, ScalingMode::kBlock128x128);
  EXPECT_TRUE(blk.view().has_columnwise());
  const float s0 = blk.view().scale_inv.ptr<float>()[0];
  EXPECT_EQ(s0, std::exp2(std::round(std::log2(s0))));
}

// ---- BF16 forward vs HF -----------------------------------------------------------------------------------

class FixtureModel : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureModel, Bf16LogitsAsCloseToHfFp32AsHfBf16) {
  const Fixture fx(GetParam());
  GemmaForCausalLM m = GemmaForCausalLM::load(fx.dir(), cpu_options());
  const auto prompts = fx.prompts();
  ForwardOptions fo;
  fo.logits = LogitsMode::kAll;
  int compared = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const ForwardOutput out = m.run(Batch::from_prompts({prompts[i]}), fo);
    const Tensor hf32 = fx.array("logits_f32/" + std::to_string(i)),
                 hf16 = fx.array("logits_bf16/" + std::to_string(i));
    ASSERT_EQ(out.logits.shape(), hf32.shape());
    const double ours = rel_err(out.logits, hf32), theirs = rel_err(hf16, hf32);
    EXPECT_LE(ours, 1.5 * theirs + kBf16Ulps) << "prompt " << i;
    EXPECT_LE(rel_err(out.logits, hf16), std::max(2e-2, 1.5 * theirs) + kBf16Ulps) << "prompt " << i;
    // Top-1 agrees with HF FP32 wherever HF's own top-2 margin is clear of BF16 noise.
    const int64_t v = m.config().vocab_size;
    for (int64_t t = 0; t < out.logits.shape()[0]; ++t) {
      auto ref = rows_of(hf32, t, t + 1);
      std::vector<float> sorted(ref.begin(), ref.end());
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      if (sorted[0] - sorted[1] < 0.25) continue;
      EXPECT_EQ(testing::argmax(rows_of(out.logits, t, t + 1)), testing::argmax(ref)) << "prompt " << i << " row " << t;
      ++compared;
    }
    (void)v;
    std::cout << "[impl bf16] " << GetParam() << " prompt " << i << ": vs HF f32 " << ours << " (HF bf16 " << theirs
              << "), vs HF bf16 " << rel_err(out.logits, hf16) << "\n";
  }
  EXPECT_GT(compared, 10);
}

TEST_P(FixtureModel, Bf16TapsMatchHfLayerOutputs) {
  const Fixture fx(GetParam());
  GemmaForCausalLM m = GemmaForCausalLM::load(fx.dir(), cpu_options());
  ForwardOptions fo;
  fo.logits = LogitsMode::kAll;
  fo.taps = true;
  const ForwardOutput out = m.run(Batch::from_prompts({fx.prompts().back()}), fo);
  ASSERT_EQ(static_cast<int64_t>(out.taps.size()), m.config().num_hidden_layers);
  for (std::size_t l = 0; l < out.taps.size(); ++l) {
    const Tensor hf32 = fx.array("taps_f32/layer_out/" + std::to_string(l));
    const Tensor hf16 = fx.array("taps_bf16/layer_out/" + std::to_string(l));
    EXPECT_LE(rel_err(out.taps[l], hf32), 1.5 * rel_err(hf16, hf32) + kBf16Ulps) << "layer " << l;
  }
  const Tensor hf32 = fx.array("taps_f32/final_hidden"), hf16 = fx.array("taps_bf16/final_hidden");
  ASSERT_EQ(out.final_hidden.shape(), hf32.shape());
  EXPECT_LE(rel_err(out.final_hidden, hf32), 1.5 * rel_err(hf16, hf32) + kBf16Ulps);
}

TEST_P(FixtureModel, LeftPaddedHfBatchMatchesHfAtRealTokens) {
  const Fixture fx(GetParam());
  GemmaForCausalLM m = GemmaForCausalLM::load(fx.dir(), cpu_options());
  const auto ids = fx.json()["batch/input_ids"].get<std::vector<std::vector<int64_t>>>();
  const auto mask = fx.json()["batch/attention_mask"].get<std::vector<std::vector<int64_t>>>();
  ForwardOptions fo;
  fo.logits = LogitsMode::kAll;
  const ForwardOutput out = m.run(Batch::from_padded(ids, mask), fo);
  const Tensor hf32 = fx.array("batch/logits_f32"), hf16 = fx.array("batch/logits_bf16");  // [B, S, V]
  const int64_t s = hf32.shape()[1], v = hf32.shape()[2];
  std::vector<float> want32, want16;
  for (std::size_t r = 0; r < ids.size(); ++r) {
    for (int64_t j = 0; j < s; ++j) {
      if (!mask[r][static_cast<std::size_t>(j)]) continue;
      const int64_t row = static_cast<int64_t>(r) * s + j;
      want32.insert(want32.end(), hf32.ptr<float>() + row * v, hf32.ptr<float>() + (row + 1) * v);
      want16.insert(want16.end(), hf16.ptr<float>() + row * v, hf16.ptr<float>() + (row + 1) * v);
    }
  }
  const double theirs = rel_err(want16, want32);
  EXPECT_LE(rel_err(testing::span_of(out.logits), want32), 1.5 * theirs + kBf16Ulps);
}

TEST_P(FixtureModel, PackedBatchEqualsOneByOneBitwise) {
  // BF16: every op is row-local except attention, which cu_seqlens confines to its sequence; the CPU twins
  // are deterministic, so packing changes nothing.
  const Fixture fx(GetParam());
  GemmaForCausalLM m = GemmaForCausalLM::load(fx.dir(), cpu_options());
  const auto prompts = fx.prompts();
  ForwardOptions fo;
  fo.logits = LogitsMode::kAll;
  const ForwardOutput packed = m.run(Batch::from_prompts(prompts), fo);
  fo.logits = LogitsMode::kLastPerSequence;
  const ForwardOutput last = m.run(Batch::from_prompts(prompts), fo);
  ASSERT_EQ(last.logits.shape()[0], static_cast<int64_t>(prompts.size()));
  int64_t row = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    fo.logits = LogitsMode::kAll;
    const ForwardOutput one = m.run(Batch::from_prompts({prompts[i]}), fo);
    const int64_t n = static_cast<int64_t>(prompts[i].size());
    auto a = rows_of(packed.logits, row, row + n), b = testing::span_of(one.logits);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), b.size_bytes()), 0) << "prompt " << i;
    auto l = rows_of(last.logits, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
    auto lb = rows_of(one.logits, n - 1, n);
    EXPECT_EQ(std::memcmp(l.data(), lb.data(), lb.size_bytes()), 0) << "prompt " << i << " (last position)";
    row += n;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureModel, ::testing::ValuesIn(testing::fixture_names()));

// ---- Model mechanics --------------------------------------------------------------------------------------

TEST(Model, ArenaIsReusedAndGrowsOnlyForLargerBatches) {
  GemmaForCausalLM m = GemmaForCausalLM::random(testing::tiny_config(), 5, cpu_options());
  ForwardOptions fo;
  const Batch small = Batch::from_prompts({{2, 3, 4}, {2, 5}});
  const ForwardOutput a = m.run(small, fo);
  const std::size_t bytes = m.arena_bytes();
  EXPECT_GT(bytes, 0u);
  const ForwardOutput b = m.run(small, fo);
  EXPECT_EQ(m.arena_bytes(), bytes);
  EXPECT_TRUE(testing::bitwise_equal(a.logits, b.logits));
  m.run(Batch::from_prompts({{2}}), fo);  // smaller: same arena
  EXPECT_EQ(m.arena_bytes(), bytes);
  m.run(Batch::from_prompts({std::vector<int64_t>(40, 7)}), fo);
  EXPECT_GT(m.arena_bytes(), bytes);
  const std::size_t grown = m.arena_bytes();
  m.reserve(100, 4, fo);
  EXPECT_GT(m.arena_bytes(), grown);
}

TEST(Model, TrainingModeKeepsActivationsAndGivesTheSameLogits) {
  GemmaForCausalLM m = GemmaForCausalLM::random(testing::tiny_config(), 5, cpu_options());
  const Batch b = Batch::from_prompts({{2, 3, 4, 9}, {2, 5}});
  ForwardOptions fo;
  fo.logits = LogitsMode::kAll;
  const ForwardOutput infer = m.run(b, fo);
  const std::size_t infer_bytes = m.arena_bytes();
  fo.training = true;
  const ForwardOutput train = m.run(b, fo);
  EXPECT_TRUE(testing::bitwise_equal(infer.logits, train.logits));
  EXPECT_GT(m.arena_bytes(), infer_bytes);  // per-layer activations
}

TEST(Model, RejectsWhatItCannotRun) {
  expect_error([] { GemmaForCausalLM::random(testing::tiny_config(), 1, cpu_options("block")); },
               "must be a multiple of 128 under the block recipe");
  GemmaConfig odd = testing::tiny_config();
  odd.intermediate_size = 100;
  expect_error([&] { GemmaForCausalLM::random(odd, 1, cpu_options("current")); }, "K = 100");
  ModelOptions o = cpu_options();
  o.fp8_lm_head = true;
  expect_error([&] { GemmaForCausalLM::random(testing::tiny_config(), 1, o); }, "FP8 lm_head needs an FP8 recipe");
  GemmaForCausalLM m = GemmaForCausalLM::random(testing::tiny_config(), 1, cpu_options());
  expect_error([&] { m.run(Batch::from_prompts({{1, 512}}), ForwardOptions{}); }, "(sequence 0, index 1) has id 512");
}

}  // namespace
}  // namespace tg::impl
