// The reference against itself and against hand-computed values: building blocks (RMSNorm, RoPE, repeat_kv,
// masks, the sqrt(d) scale), KV-cached decode vs full forward, left-padded batches vs single rows, checkpoint
// errors and round trips, random init, logits processors, generation bookkeeping, the trainer (accumulation,
// clipping, weight decay, schedule, determinism), the token batcher and the torch-free facade.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/version.h>
#include <unistd.h>

#include <cmath>
#include <set>

#include "common/file_io.h"
#include "common/tests/test_temp_dir.h"
#include "common/check.h"
#include "common/numeric.h"
#include "reference/engine.h"
#include "reference/generate.h"
#include "reference/trainer.h"
#include "test_util.h"

namespace tg::ref::testing {
namespace {

namespace fs = std::filesystem;

// FP32 self-consistency: GEMM blocking differences only.
constexpr double kF32SelfRel = 1e-5;

fs::path temp_dir() { return ::tg::testing::test_temp_dir("tegemma_ref_"); }

GemmaModel tiny_model(at::ScalarType dtype, uint64_t seed = 7, GemmaConfig cfg = tiny_config()) {
  return GemmaModel(cfg, random_weights(cfg, seed, dtype, at::kCPU, lively_init()));
}

at::Tensor forward(const GemmaModel& m, const at::Tensor& ids, const at::Tensor& mask = {},
                   const at::Tensor& pos = {}, KVCache* cache = nullptr, Taps* taps = nullptr) {
  c10::NoGradGuard g;
  ForwardArgs a;
  a.input_ids = ids;
  a.attention_mask = mask;
  a.position_ids = pos;
  a.cache = cache;
  a.taps = taps;
  return m.forward(a);
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tg::Error& e) {
    return e.what();
  }
  return "";
}

// ---- Building blocks --------------------------------------------------------------------------------------

TEST(Blocks, RmsNormIsFp32TimesOnePlusWeight) {
  const at::Tensor x = at::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({1, 4});
  const at::Tensor w = at::tensor({0.0f, 1.0f, -0.5f, 0.25f});
  const at::Tensor y = rms_norm(x, w, 1e-6);
  const double r = 1.0 / std::sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-6);
  const double expected[4] = {1 * r * 1.0, 2 * r * 2.0, 3 * r * 0.5, 4 * r * 1.25};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[0][i].item<double>(), expected[i], 1e-6) << i;
  // BF16 input: computed in FP32, one rounding at the end.
  const at::Tensor xb = x.to(at::kBFloat16);
  const at::Tensor yb = rms_norm(xb, w.to(at::kBFloat16), 1e-6);
  ASSERT_EQ(yb.scalar_type(), at::kBFloat16);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(yb[0][i].item<float>(), round_bf16(static_cast<float>(expected[i]))) << i;
  }
}

TEST(Blocks, RopeRotatesSplitHalfPairs) {
  // head_dim 4, theta 10000: inv_freq = [1, 10000^-0.5 = 0.01]; pairs (0, 2) and (1, 3).
  const at::Tensor inv = rope_inv_freq(4, 10000.0, at::kCPU);
  EXPECT_FLOAT_EQ(inv[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(inv[1].item<float>(), 0.01f);
  const at::Tensor x = at::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({1, 1, 1, 4});  // [B, heads, T, Dh]
  const auto [cos3, sin3] = rope_cos_sin(inv, long_1d({3}).view({1, 1}), at::kFloat);
  const at::Tensor y = apply_rope(x, cos3, sin3).flatten();
  const double a = 3.0, b = 0.03;
  EXPECT_NEAR(y[0].item<double>(), 1 * std::cos(a) - 3 * std::sin(a), 1e-6);
  EXPECT_NEAR(y[1].item<double>(), 2 * std::cos(b) - 4 * std::sin(b), 1e-6);
  EXPECT_NEAR(y[2].item<double>(), 3 * std::cos(a) + 1 * std::sin(a), 1e-6);
  EXPECT_NEAR(y[3].item<double>(), 4 * std::cos(b) + 2 * std::sin(b), 1e-6);
  const auto [cos0, sin0] = rope_cos_sin(inv, at::zeros({1, 1}, at::kLong), at::kFloat);
  EXPECT_TRUE(at::equal(apply_rope(x, cos0, sin0), x)) << "position 0 must be the identity";
}

TEST(Blocks, RepeatKvMapsQueryHeadToKvHeadDividedByGroup) {
  const at::Tensor k = at::tensor({10.0f, 20.0f}).view({1, 2, 1, 1});  // 2 kv heads
  const at::Tensor r = repeat_kv(k, 3).flatten();
  EXPECT_TRUE(at::equal(r, at::tensor({10.0f, 10.0f, 10.0f, 20.0f, 20.0f, 20.0f})));
}

TEST(Blocks, MaskIsCausalOverCacheSlotsAndPadding) {
  // 2 cached slots + 2 new tokens; slot 0 is padding.
  const at::Tensor pad = long_1d({0, 1, 1, 1}).view({1, 4});
  const at::Tensor m = additive_causal_mask(1, 2, 2, pad, at::kBFloat16, at::kCPU).to(at::kFloat)[0][0];
  const float lo = -3.3895313892515355e38f;
  const float expected[2][4] = {{lo, 0, 0, lo}, {lo, 0, 0, 0}};
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 4; ++j) EXPECT_EQ(m[i][j].item<float>(), expected[i][j]) << i << "," << j;
  }
  EXPECT_TRUE(at::isfinite(m).all().item<bool>());
}

TEST(Blocks, PositionsFromMaskAreCumsumMinusOneWithZeroAtPadding) {
  const at::Tensor mask = long_1d({0, 0, 1, 1, 1, 1, 1, 1, 1, 1}).view({2, 5});
  EXPECT_TRUE(at::equal(positions_from_mask(mask), long_1d({0, 0, 0, 1, 2, 0, 1, 2, 3, 4}).view({2, 5})));
}

TEST(Blocks, EmbeddingScaleIsRoundedToTheActivationDtype) {
  // hidden 3072: sqrt = 55.4256 -> 55.5 in BF16 (gemma.md trap 1); FP32 keeps float(sqrt(3072)).
  GemmaConfig c = tiny_config();
  c.hidden_size = 3072;
  c.intermediate_size = 8;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 1;
  c.num_key_value_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 5;
  const at::Tensor ids = long_1d({3, 4}).view({1, 2});
  for (const at::ScalarType dt : {at::kBFloat16, at::kFloat}) {
    const GemmaModel m = tiny_model(dt, 3, c);
    Taps taps;
    forward(m, ids, {}, {}, nullptr, &taps);
    const float scale = dt == at::kBFloat16 ? 55.5f : static_cast<float>(std::sqrt(3072.0));
    const at::Tensor expected = (m.weights().embed_tokens.index_select(0, ids[0]).to(at::kFloat) * scale).to(dt);
    EXPECT_TRUE(at::equal(taps.layer_inputs[0][0], expected)) << c10::toString(dt);
  }
}

// ---- Forward consistency ----------------------------------------------------------------------------------

// Self-consistency in F32 and BF16. In F32 two computations of the same logits agree to GEMM-order noise
// (kF32SelfRel). In BF16 they can differ by rounding flips that the layers amplify; the allowance is stated
// relative to the BF16 noise of the expected value itself, i.e. its distance from the FP32 logits of the same
// weights: two BF16 computations each that far from FP32 are at most ~2x that far apart (3x allowed, and a
// floor of 1e-2). A real bug (wrong slot, position or mask) moves logits by far more.
class Precision : public ::testing::TestWithParam<at::ScalarType> {
 protected:
  void SetUp() override {
    model_ = std::make_unique<GemmaModel>(tiny_model(GetParam()));
    f32_ = std::make_unique<GemmaModel>(model_->config(), model_->weights().to(at::kFloat, at::kCPU));
  }
  // Expects `got` (from model_) to match `expected` (model_ computed another way); `expected_f32` is the
  // same computation as `expected` by the FP32 twin.
  void expect_close(const at::Tensor& got, const at::Tensor& expected, const at::Tensor& expected_f32,
                    const std::string& what) const {
    const double err = rel_err(got, expected);
    if (GetParam() == at::kFloat) {
      EXPECT_LE(err, kF32SelfRel) << what;
    } else {
      const double noise = rel_err(expected, expected_f32);
      EXPECT_LE(err, std::max(1e-2, 3.0 * noise)) << what << " (BF16 noise of the expected value " << noise << ")";
    }
  }
  const GemmaModel& m() const { return *model_; }
  const GemmaModel& f32() const { return *f32_; }

 private:
  std::unique_ptr<GemmaModel> model_, f32_;
};

TEST_P(Precision, KvCachedDecodeMatchesFullForward) {
  const at::Tensor ids = random_ids(3, 131, 2, 11);
  const at::Tensor full = forward(m(), ids);  // [2, 11, V]
  // Prefill 6 tokens, a chunk of 2, then 3 single-token steps.
  KVCache cache = KVCache::allocate(m().config(), 2, 16, m().dtype(), m().device());
  std::vector<at::Tensor> parts;
  int64_t t = 0;
  for (const int64_t n : {6, 2, 1, 1, 1}) {
    parts.push_back(forward(m(), ids.narrow(1, t, n), {}, {}, &cache));
    t += n;
    EXPECT_EQ(cache.length, t);
  }
  expect_close(at::cat(parts, 1), full, forward(f32(), ids), "cached decode vs full forward");
}

TEST_P(Precision, LeftPaddedBatchMatchesSingleRows) {
  const std::vector<std::vector<int64_t>> prompts = {{2, 17, 40}, {2, 5, 6, 7, 8, 9, 10}, {2, 99, 98, 97, 96}};
  const auto [ids, mask] = left_pad(prompts, 0);
  const at::Tensor batched = forward(m(), ids, mask, positions_from_mask(mask));
  EXPECT_TRUE(at::isfinite(batched.to(at::kFloat)).all().item<bool>());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int64_t n = static_cast<int64_t>(prompts[i].size());
    const at::Tensor one = long_1d(prompts[i]).unsqueeze(0);
    const at::Tensor rows = batched[static_cast<int64_t>(i)].narrow(0, ids.size(1) - n, n);
    expect_close(rows, forward(m(), one)[0], forward(f32(), one)[0], "prompt " + std::to_string(i));
  }
  // And through the cache: prefill the padded batch, decode one token per row.
  KVCache cache = KVCache::allocate(m().config(), 3, ids.size(1) + 1, m().dtype(), m().device());
  forward(m(), ids, mask, positions_from_mask(mask), &cache);
  const at::Tensor next = long_1d({11, 12, 13}).view({3, 1});
  const at::Tensor mask2 = at::cat({mask, at::ones({3, 1}, mask.options())}, 1);
  const at::Tensor pos2 = positions_from_mask(mask2).narrow(1, ids.size(1), 1);
  const at::Tensor step = forward(m(), next, mask2, pos2, &cache);
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int64_t> p = prompts[i];
    p.push_back(11 + static_cast<int64_t>(i));
    const at::Tensor one = long_1d(p).unsqueeze(0);
    expect_close(step[static_cast<int64_t>(i)][0], forward(m(), one)[0][-1], forward(f32(), one)[0][-1],
                 "decode row " + std::to_string(i));
  }
}

TEST_P(Precision, LastPositionLogitsAndTapsAreConsistent) {
  const GemmaModel& m = this->m();
  const at::Tensor ids = random_ids(0, 131, 2, 9);
  Taps taps;
  const at::Tensor full = forward(m, ids, {}, {}, nullptr, &taps);
  ASSERT_EQ(taps.layer_inputs.size(), 2u);
  ASSERT_EQ(taps.layer_outputs.size(), 2u);
  EXPECT_TRUE(at::equal(taps.layer_outputs[0], taps.layer_inputs[1]));
  EXPECT_TRUE(at::equal(taps.logits, full));
  // The lm_head is the tied embedding (on the CPU BF16 products are computed in FP32 and rounded once).
  EXPECT_TRUE(at::equal(
      at::linear(taps.final_hidden.to(at::kFloat), m.weights().embed_tokens.to(at::kFloat)).to(m.dtype()), full));
  c10::NoGradGuard g;
  ForwardArgs a;
  a.input_ids = ids;
  a.logits_to_keep = 1;
  const at::Tensor last = m.forward(a);
  ASSERT_EQ(last.size(1), 1);
  ForwardArgs b;
  b.input_ids = ids;
  b.logits_to_keep = 1;
  expect_close(last, full.narrow(1, 8, 1), f32().forward(b), "logits_to_keep=1 vs full");
}

TEST_P(Precision, SdpaMatchesExplicitAttention) {
  if (!sdpa_available()) GTEST_SKIP() << "LibTorch " << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << " has no scaled_dot_product_attention";
  const GemmaModel& ex = m();
  const GemmaModel sd(ex.config(), ex.weights(), AttentionImpl::Sdpa);
  const std::vector<std::vector<int64_t>> prompts = {{2, 17, 40}, {2, 5, 6, 7, 8, 9, 10}};
  const auto [ids, mask] = left_pad(prompts, 0);
  const at::Tensor real = mask.to(at::kBool);
  // Unpadded (SDPA's is_causal path), padded (additive mask path).
  const at::Tensor row = ids.narrow(0, 1, 1);
  expect_close(forward(sd, row), forward(ex, row), forward(f32(), row), "unpadded (is_causal)");
  const at::Tensor pos = positions_from_mask(mask);
  expect_close(forward(sd, ids, mask, pos).index({real}), forward(ex, ids, mask, pos).index({real}),
               forward(f32(), ids, mask, pos).index({real}), "left-padded (additive mask)");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Precision, ::testing::Values(at::kFloat, at::kBFloat16),
                         [](const auto& info) { return info.param == at::kFloat ? "F32" : "BF16"; });

// ---- Checkpoints --------------------------------------------------------------------------------------------

// Rewrites dir/model.safetensors through `edit`, which gets every tensor (host, file dtype) by name.
void rewrite(const fs::path& dir, const std::function<void(std::map<std::string, Tensor>&)>& edit) {
  std::map<std::string, Tensor> tensors;
  {
    const SafetensorsFile f(dir / "model.safetensors");
    for (const auto& e : f.header().tensors) tensors[e.name] = f.load(e.name, *e.dtype);
  }
  edit(tensors);
  SafetensorsWriter w;
  for (const auto& [name, t] : tensors) w.add(name, t);
  w.write(dir / "model.safetensors");
}

class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir();
    weights_ = random_weights(cfg_, 11, at::kFloat, at::kCPU, lively_init());
    save_checkpoint(dir_, cfg_, weights_, DType::F32);
  }
  void TearDown() override { tg::remove_tree(dir_); }
  std::string load_error() const {
    return error_of([&] { load_weights(dir_, load_config(dir_), at::kFloat, at::kCPU); });
  }
  GemmaConfig cfg_ = tiny_config();
  GemmaWeights weights_;
  fs::path dir_;
};

TEST_F(Checkpoint, RoundTripIsExactAndConfigSurvives) {
  const GemmaConfig c = load_config(dir_);
  EXPECT_EQ(c.hidden_size, cfg_.hidden_size);
  EXPECT_EQ(c.head_dim, cfg_.head_dim);
  const GemmaWeights back = load_weights(dir_, c, at::kFloat, at::kCPU);
  const auto a = weights_.named();
  const auto b = back.named();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(*a[i].second, *b[i].second)) << a[i].first;
  // Loading as BF16 rounds like torch's .to(bfloat16).
  const GemmaWeights bf = load_weights(dir_, c, at::kBFloat16, at::kCPU);
  EXPECT_TRUE(at::equal(bf.embed_tokens, weights_.embed_tokens.to(at::kBFloat16)));
}

TEST_F(Checkpoint, ShardedBf16RoundTrip) {
  const fs::path d2 = dir_ / "sharded";
  const GemmaWeights bf = weights_.to(at::kBFloat16, at::kCPU);
  save_checkpoint(d2, cfg_, bf, DType::BF16, /*max_shard_bytes=*/8000);
  EXPECT_TRUE(fs::exists(d2 / "model.safetensors.index.json"));
  const GemmaWeights back = load_weights(d2, load_config(d2), at::kBFloat16, at::kCPU);
  for (size_t i = 0; i < bf.named().size(); ++i) {
    EXPECT_TRUE(at::equal(*bf.named()[i].second, *back.named()[i].second)) << bf.named()[i].first;
  }
}

TEST_F(Checkpoint, MissingTensorIsNamed) {
  rewrite(dir_, [](auto& t) { t.erase("model.layers.1.mlp.up_proj.weight"); });
  const std::string e = load_error();
  EXPECT_NE(e.find("missing tensor model.layers.1.mlp.up_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[72, 40]"), std::string::npos) << e;
}

TEST_F(Checkpoint, WrongShapeIsNamedWithBothShapes) {
  rewrite(dir_, [](auto& t) { t["model.layers.0.self_attn.k_proj.weight"] = Tensor::zeros(DType::F32, Shape{12, 40}); });
  const std::string e = load_error();
  EXPECT_NE(e.find("model.layers.0.self_attn.k_proj.weight: expected shape [24, 40], got [12, 40]"), std::string::npos)
      << e;
}

TEST_F(Checkpoint, UnexpectedTensorIsAnError) {
  rewrite(dir_, [](auto& t) { t["model.layers.0.self_attn.q_norm.weight"] = Tensor::zeros(DType::F32, Shape{12}); });
  const std::string e = load_error();
  EXPECT_NE(e.find("unexpected tensor model.layers.0.self_attn.q_norm.weight"), std::string::npos) << e;
}

TEST_F(Checkpoint, LmHeadMustEqualTheEmbedding) {
  rewrite(dir_, [](auto& t) { t["lm_head.weight"] = Tensor::copy_of(t.at("model.embed_tokens.weight"), Device::CPU); });
  EXPECT_EQ(load_error(), "") << "an lm_head equal to embed_tokens is a tied checkpoint";
  rewrite(dir_, [](auto& t) { t.at("lm_head.weight").template ptr<float>()[5] += 1.0f; });
  const std::string e = load_error();
  EXPECT_NE(e.find("lm_head.weight differs from model.embed_tokens.weight"), std::string::npos) << e;
}

TEST(Weights, RandomInitFollowsHfAndIsSeeded) {
  const GemmaConfig c = tiny_config();
  const GemmaWeights a = random_weights(c, 5, at::kFloat, at::kCPU);
  const GemmaWeights b = random_weights(c, 5, at::kFloat, at::kCPU);
  const GemmaWeights other = random_weights(c, 6, at::kFloat, at::kCPU);
  EXPECT_TRUE(at::equal(a.layers[1].q_proj, b.layers[1].q_proj));
  EXPECT_FALSE(at::equal(a.layers[1].q_proj, other.layers[1].q_proj));
  EXPECT_TRUE(at::equal(a.norm, at::zeros_like(a.norm))) << "HF initialises RMSNorm weights to 0";
  EXPECT_TRUE(at::equal(a.layers[0].input_layernorm, at::zeros_like(a.layers[0].input_layernorm)));
  EXPECT_TRUE(at::equal(a.embed_tokens[c.pad_token_id], at::zeros({c.hidden_size}))) << "padding_idx row";
  EXPECT_NEAR(a.layers[0].gate_proj.std().item<double>(), 0.02, 0.002);
  // The BF16 weights are the rounded FP32 draws, whatever the device.
  const GemmaWeights bf = random_weights(c, 5, at::kBFloat16, at::kCPU);
  EXPECT_TRUE(at::equal(bf.layers[1].down_proj, a.layers[1].down_proj.to(at::kBFloat16)));
}

// ---- Generation ---------------------------------------------------------------------------------------------

TEST(Processors, RepetitionPenaltyMinNewTokensAndWarpersFollowHf) {
  GenerationConfig g;
  g.repetition_penalty = 2.0;
  const at::Tensor ids = long_1d({1, 2}).view({1, 2});
  const at::Tensor s = at::tensor({1.0f, 4.0f, -4.0f, 3.0f}).view({1, 4});
  // Penalised: positive / p, negative * p; tokens 1 and 2 are in the sequence.
  EXPECT_TRUE(at::equal(process_logits(ids, s, g, {}, 2), at::tensor({1.0f, 2.0f, -8.0f, 3.0f}).view({1, 4})));
  // min_new_tokens: EOS (3) is -inf while fewer than 2 tokens are new (prompt length 1 -> 1 new).
  GenerationConfig m;
  m.min_new_tokens = 2;
  const at::Tensor pm = process_logits(ids, s, m, {3}, 1);
  EXPECT_TRUE(std::isinf(pm[0][3].item<float>()) && pm[0][3].item<float>() < 0);
  EXPECT_EQ(process_logits(ids, s, m, {3}, 0)[0][3].item<float>(), 3.0f) << "2 new tokens: EOS allowed";
  // Top-k keeps ties at the threshold; greedy configs skip the warpers.
  GenerationConfig k;
  k.do_sample = true;
  k.top_k = 2;
  const at::Tensor tie = at::tensor({1.0f, 3.0f, 2.0f, 2.0f}).view({1, 4});
  const at::Tensor pk = process_logits(ids, tie, k, {}, 2);
  EXPECT_EQ(at::isfinite(pk).sum().item<int64_t>(), 3) << "both 2.0s tie with the 2nd largest";
  k.do_sample = false;
  EXPECT_TRUE(at::equal(process_logits(ids, tie, k, {}, 2), tie));
  // Top-p after temperature: probabilities of [0, ln 2, ln 4] are [1/7, 2/7, 4/7]; top_p 0.5 keeps {4/7};
  // top_p 0.6 also keeps 2/7 (remove while cumulative <= 0.4, sorted ascending: 1/7 only).
  GenerationConfig p;
  p.do_sample = true;
  p.top_k = 0;
  p.top_p = 0.5;
  const at::Tensor sp = at::tensor({0.0f, std::log(2.0f), std::log(4.0f)}).view({1, 3});
  EXPECT_EQ(at::isfinite(process_logits(ids.narrow(1, 0, 1).zero_(), sp, p, {}, 1)).sum().item<int64_t>(), 1);
  p.top_p = 0.6;
  EXPECT_EQ(at::isfinite(process_logits(ids.narrow(1, 0, 1).zero_(), sp, p, {}, 1)).sum().item<int64_t>(), 2);
  // Temperature divides.
  GenerationConfig t;
  t.do_sample = true;
  t.top_k = 0;
  t.temperature = 0.5;
  EXPECT_TRUE(at::equal(process_logits(ids, s, t, {}, 2), s * 2.0f));
}

// Greedy decoding by full recomputation (no cache): the argmax of the last position, step by step.
std::vector<int64_t> greedy_by_recompute(const GemmaModel& m, std::vector<int64_t> p, int n) {
  std::vector<int64_t> out;
  for (int i = 0; i < n; ++i) {
    const at::Tensor logits = forward(m, long_1d(p).unsqueeze(0));
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    out.push_back(next);
    p.push_back(next);
  }
  return out;
}

TEST(Generate, CachedGreedyEqualsRecomputationAndBatchEqualsSingle) {
  const GemmaModel m = tiny_model(at::kFloat, 7);
  const std::vector<std::vector<int64_t>> prompts = {{2, 17, 40}, {2, 5, 6, 7, 8, 9, 10}, {2}};
  GenerationConfig g;
  g.max_new_tokens = 8;
  g.ignore_eos = true;
  const GenerationOutput batch = generate(m, prompts, g);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::vector<int64_t> expect = greedy_by_recompute(m, prompts[i], 8);
    const at::Tensor row = batch.sequences[static_cast<int64_t>(i)].narrow(0, batch.prompt_length, 8).contiguous();
    EXPECT_EQ(std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + 8), expect) << "prompt " << i;
  }
}

TEST(Generate, EosAndPerRowLimitsFinishRowsWithPad) {
  const GemmaModel m = tiny_model(at::kFloat, 7);
  const std::vector<std::vector<int64_t>> prompts = {{2, 17, 40}, {2, 5, 6, 7, 8, 9, 10}};
  GenerationConfig g;
  g.max_new_tokens = 6;
  g.ignore_eos = true;
  const at::Tensor free_run = generate(m, prompts, g).sequences;
  const int64_t L = 7;
  // Per-row limits: row 0 stops after 2 tokens and is padded; row 1 runs to 5 and the batch stops there.
  g.max_new_tokens_per_row = {2, 5};
  const at::Tensor limited = generate(m, prompts, g).sequences;
  ASSERT_EQ(limited.size(1), L + 5);
  EXPECT_TRUE(at::equal(limited[0].narrow(0, 0, L + 2), free_run[0].narrow(0, 0, L + 2)));
  EXPECT_TRUE(at::equal(limited[0].narrow(0, L + 2, 3), at::zeros({3}, at::kLong)));
  EXPECT_TRUE(at::equal(limited[1], free_run[1].narrow(0, 0, L + 5)));
  // EOS: make row 0's second new token a stop token.
  g.max_new_tokens_per_row = {};
  g.ignore_eos = false;
  g.eos_token_ids = {free_run[0][L + 1].item<int64_t>()};
  const at::Tensor stopped = generate(m, prompts, g).sequences;
  EXPECT_EQ(stopped[0][L + 1].item<int64_t>(), g.eos_token_ids[0]) << "the EOS token itself is kept";
  if (stopped.size(1) > L + 2) {
    EXPECT_EQ(stopped[0][L + 2].item<int64_t>(), 0) << "then padding";
  }
}

TEST(Generate, BadConfigsAreErrors) {
  const GemmaModel m = tiny_model(at::kFloat);
  GenerationConfig g;
  g.num_beams = 2;
  g.do_sample = true;
  EXPECT_NE(error_of([&] { generate(m, {{2, 3}}, g); }).find("beam sampling"), std::string::npos);
  GenerationConfig t;
  t.temperature = 0;
  EXPECT_NE(error_of([&] { generate(m, {{2, 3}}, t); }).find("temperature"), std::string::npos);
  EXPECT_NE(error_of([&] { generate(m, {{2, 500}}, GenerationConfig{}); }).find("vocabulary"), std::string::npos);
}

// ---- Training -----------------------------------------------------------------------------------------------

TrainConfig f32_train(int64_t accum) {
  TrainConfig tc;
  tc.compute_dtype = DType::F32;
  tc.lr = 1e-2;
  tc.warmup_steps = 0;
  tc.total_steps = 10;
  tc.weight_decay = 0.1;
  tc.grad_accum_steps = accum;
  return tc;
}

double max_weight_diff(const GemmaWeights& a, const GemmaWeights& b) {
  double d = 0;
  for (size_t i = 0; i < a.named().size(); ++i) {
    d = std::max(d, (*a.named()[i].second - *b.named()[i].second).abs().max().item<double>());
  }
  return d;
}

TEST(Trainer, GradientAccumulationEqualsOneBigBatch) {
  const GemmaConfig c = tiny_config();
  const GemmaWeights w = random_weights(c, 3, at::kFloat, at::kCPU, lively_init());
  at::Tensor ids = random_ids(0, c.vocab_size, 2, 10);
  at::Tensor labels = ids.clone();
  labels[1].narrow(0, 2, 5).fill_(-100);  // unequal target counts per row: the token-weighted mean matters
  Trainer big(c, w, f32_train(1), at::kCPU), split(c, w, f32_train(2), at::kCPU);
  const StepStats a = big.step({{ids, labels}});
  const StepStats b = split.step({{ids.narrow(0, 0, 1), labels.narrow(0, 0, 1)}, {ids.narrow(0, 1, 1), labels.narrow(0, 1, 1)}});
  EXPECT_NEAR(a.loss.item<double>(), b.loss.item<double>(), 1e-6 * a.loss.item<double>());
  EXPECT_NEAR(a.grad_norm.item<double>(), b.grad_norm.item<double>(), 1e-5 * a.grad_norm.item<double>());
  EXPECT_LE(max_weight_diff(big.master(), split.master()), 1e-5);
  // The loss is the mean over the 9 + 4 targets of the batch.
  ForwardArgs fa;
  fa.input_ids = ids;
  c10::NoGradGuard ng;
  const double direct = causal_lm_loss(GemmaModel(c, w).forward(fa), labels).item<double>();
  EXPECT_NEAR(a.loss.item<double>(), direct, 1e-6 * direct);
}

TEST(Trainer, IsDeterministic) {
  const GemmaConfig c = tiny_config();
  const GemmaWeights w = random_weights(c, 3, at::kFloat, at::kCPU, lively_init());
  std::vector<int32_t> stream(2000);
  for (size_t i = 0; i < stream.size(); ++i) stream[i] = static_cast<int32_t>((i * 37 + i / 7) % 131);
  const TokenBatcher batcher(stream, 12, 2, 42);
  TrainConfig tc = f32_train(1);
  tc.compute_dtype = DType::BF16;
  Trainer t1(c, w, tc, at::kCPU), t2(c, w, tc, at::kCPU);
  for (int s = 0; s < 3; ++s) {
    const MicroBatch mb = batcher.batch(s);
    EXPECT_EQ(t1.step({mb}).loss.item<float>(), t2.step({mb}).loss.item<float>()) << "step " << s;
  }
  EXPECT_EQ(max_weight_diff(t1.master(), t2.master()), 0.0);
}

TEST(Trainer, ClippingScalesTheGradientToMaxNorm) {
  // With a large AdamW eps (100 >> |g|) the first update is -lr * g / (|g| + eps) ~ -lr * g / eps, proportional
  // to the (clipped) gradient, so the weight change shrinks by the clipping factor max_norm / ||g||.
  const GemmaConfig c = tiny_config();
  const GemmaWeights w = random_weights(c, 3, at::kFloat, at::kCPU, lively_init());
  const at::Tensor ids = random_ids(0, c.vocab_size, 2, 10);
  TrainConfig tc = f32_train(1);
  tc.weight_decay = 0;
  tc.eps = 100;
  tc.lr = 10;
  tc.max_grad_norm = 0;
  Trainer free(c, w, tc, at::kCPU);
  const double norm = free.step({{ids, ids}}).grad_norm.item<double>();
  tc.max_grad_norm = norm / 4;
  Trainer clipped(c, w, tc, at::kCPU);
  EXPECT_NEAR(clipped.step({{ids, ids}}).grad_norm.item<double>(), norm, 1e-6 * norm) << "reported before clipping";
  const at::Tensor d_free = free.master().layers[0].q_proj - w.layers[0].q_proj;
  const at::Tensor d_clip = clipped.master().layers[0].q_proj - w.layers[0].q_proj;
  EXPECT_LE(rel_err(d_clip * 4.0, d_free), 1e-2);  // |g|/eps nonlinearity < 1%
}

TEST(Trainer, WeightDecaySkipsNormWeights) {
  // Adam's step is ~0 with a huge eps, leaving only the decoupled decay p *= 1 - lr * wd.
  const GemmaConfig c = tiny_config();
  const GemmaWeights w = random_weights(c, 3, at::kFloat, at::kCPU, lively_init());
  const at::Tensor ids = random_ids(0, c.vocab_size, 1, 8);
  TrainConfig tc = f32_train(1);
  tc.eps = 1e12;
  tc.lr = 0.1;
  tc.weight_decay = 0.5;
  Trainer t(c, w, tc, at::kCPU);
  t.step({{ids, ids}});
  EXPECT_LE(rel_err(t.master().layers[1].up_proj, w.layers[1].up_proj * 0.95), 1e-6);
  EXPECT_LE(rel_err(t.master().embed_tokens, w.embed_tokens * 0.95), 1e-6);
  EXPECT_LE(rel_err(t.master().layers[1].input_layernorm, w.layers[1].input_layernorm), 1e-6);
  EXPECT_LE(rel_err(t.master().norm, w.norm), 1e-6);
}

TEST(Trainer, WarmupCosineSchedule) {
  TrainConfig tc;
  tc.warmup_steps = 10;
  tc.total_steps = 110;
  EXPECT_DOUBLE_EQ(lr_multiplier(tc, 0), 0.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(tc, 5), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(tc, 10), 1.0);
  EXPECT_NEAR(lr_multiplier(tc, 60), 0.5, 1e-12);
  EXPECT_NEAR(lr_multiplier(tc, 110), 0.0, 1e-12);
  // Past the end HF's cosine rises again (it is not clamped to the end value); mirrored as is.
  EXPECT_NEAR(lr_multiplier(tc, 200), 0.5 * (1.0 + std::cos(M_PI * 1.9)), 1e-12);
  tc.min_lr_ratio = 0.1;
  EXPECT_NEAR(lr_multiplier(tc, 110), 0.1, 1e-12);
}

TEST(Trainer, Bf16TrainingLowersTheLossOnARepeatedBatch) {
  const GemmaConfig c = tiny_config();
  const GemmaWeights w = random_weights(c, 3, at::kFloat, at::kCPU, lively_init());
  const at::Tensor ids = random_ids(0, c.vocab_size, 2, 16);
  TrainConfig tc;
  tc.lr = 3e-3;
  tc.total_steps = 30;
  Trainer t(c, w, tc, at::kCPU);
  const double first = t.step({{ids, ids}}).loss.item<double>();
  for (int i = 0; i < 28; ++i) t.step({{ids, ids}});
  const double last = t.step({{ids, ids}}).loss.item<double>();
  EXPECT_LT(last, 0.5 * first) << first << " -> " << last;
}

TEST(TokenBatcher, EpochsArePermutationsAndSeeded) {
  std::vector<int32_t> stream(10 * 8 + 3);
  for (size_t i = 0; i < stream.size(); ++i) stream[i] = static_cast<int32_t>(i);
  const TokenBatcher b(stream, 8, 3, 1), same(stream, 8, 3, 1), other(stream, 8, 3, 2);
  EXPECT_EQ(b.num_sequences(), 10);
  for (int e = 0; e < 3; ++e) {
    auto order = b.epoch_order(e);
    EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), 10u);
  }
  EXPECT_NE(b.epoch_order(0), b.epoch_order(1));
  EXPECT_NE(b.epoch_order(0), other.epoch_order(0));
  // Batch 3 spans epochs 0 and 1 (sequences 9, 10, 11 of the endless order) and is reproducible.
  EXPECT_TRUE(at::equal(b.batch(3).input_ids, same.batch(3).input_ids));
  const MicroBatch mb = b.batch(3);
  EXPECT_EQ(mb.input_ids[0][0].item<int64_t>(), 8 * b.epoch_order(0)[9]);
  EXPECT_EQ(mb.input_ids[1][0].item<int64_t>(), 8 * b.epoch_order(1)[0]);
  EXPECT_TRUE(at::equal(mb.labels, mb.input_ids));
}

// ---- The torch-free facade ----------------------------------------------------------------------------------

TEST(Engine, FacadeMatchesTheTorchApi) {
  const Fixture& f = fixture("gqa_bf16_sharded");
  EngineOptions o;
  o.dtype = DType::F32;
  const Engine e = Engine::load(f.dir(), o);
  EXPECT_EQ(e.config().head_dim, 24);
  std::vector<int32_t> ids32 = {2, 9, 33, 7, 100};
  ForwardRequest req;
  req.input_ids = TensorView(ids32.data(), DType::I32, Shape{1, 5});
  req.want_taps = true;
  const ForwardResult r = e.forward(req);
  const at::Tensor ref = forward(f.model(at::kFloat), long_1d({2, 9, 33, 7, 100}).view({1, 5}));
  ASSERT_EQ(r.logits.shape(), (Shape{1, 5, f.config().vocab_size}));
  const at::Tensor got = at::from_blob(r.logits.data(), {1, 5, f.config().vocab_size}, at::kFloat);
  EXPECT_TRUE(at::equal(got, ref));
  EXPECT_EQ(r.layer_inputs.size(), 3u);
  EXPECT_EQ(r.final_hidden.shape(), (Shape{1, 5, 48}));
  // Generation and loss through the facade.
  GenerationConfig g;
  g.max_new_tokens = 5;
  const GenerateResult gr = e.generate({{2, 9, 33}, {2, 7}}, g);
  const GenerationOutput direct = generate(f.model(at::kFloat), {{2, 9, 33}, {2, 7}}, g);
  EXPECT_TRUE(at::equal(long_2d(nlohmann::json(gr.sequences)), direct.sequences));
  EXPECT_LE(gr.new_tokens[0].size(), 5u);
  std::vector<int64_t> ids64 = {2, 9, 33, 7, 100};
  const double loss = e.loss(TensorView(ids64.data(), DType::I64, Shape{1, 5}));
  EXPECT_NEAR(loss, causal_lm_loss(ref, long_1d(ids64).unsqueeze(0)).item<double>(), 1e-6);
  // Bad input is a tg::Error, not a crash.
  std::vector<int64_t> bad = {2, 9999};
  req.input_ids = TensorView(bad.data(), DType::I64, Shape{1, 2});
  EXPECT_NE(error_of([&] { e.forward(req); }).find("vocabulary"), std::string::npos);
}

TEST(Engine, TrainSessionSteps) {
  EngineOptions o;
  o.dtype = DType::F32;
  const Engine e = Engine::random(tiny_config(), 9, o, lively_init());
  TrainConfig tc;
  tc.compute_dtype = DType::F32;
  tc.lr = 1e-2;
  TrainSession s(e, tc);
  std::vector<int64_t> ids(2 * 10);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 13) % 131);
  const TensorView v(ids.data(), DType::I64, Shape{2, 10});
  const TrainStepResult r0 = s.step({v});
  EXPECT_NEAR(r0.loss, e.loss(v), 1e-5 * r0.loss);
  EXPECT_GT(r0.grad_norm, 0);
  s.step({v});
  EXPECT_LT(s.eval_loss(v), r0.loss);
  EXPECT_NEAR(s.snapshot().loss(v), s.eval_loss(v), 1e-6);
}

}  // namespace
}  // namespace tg::ref::testing
