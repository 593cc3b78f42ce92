// KV-cached generation (impl/generate) on the CPU backend:
//   - the prefill's logits ARE the model forward's (same ops, same order: bit for bit), every recipe;
//   - KV-cached decode == the full-sequence forward: bit for bit where the arithmetic is the same (BF16 cache
//     under bf16 / delayed / block: the CPU decode attention sums in the prefill attention's order), within the
//     precision's own noise where it cannot be (current scaling: each step's amax covers other rows; FP8 cache);
//   - a batch of prompts of different lengths (HF: left-padded) == each prompt alone;
//   - greedy and beam search against HF's recorded answers (reference/fixtures), EOS / min_new_tokens /
//     repetition penalty included;
//   - sampling: reproducible, seeded, top-k 1 == greedy; EOS, budgets and the token stream;
//   - bad input: clear errors.
//
// Tolerances (each stated with its reason where it is used):
//   current scaling decode vs full forward: rrmse <= 2 n, n = rrmse(full FP8 forward, full BF16 forward) on the
//     same input: both sides are FP8 evaluations of one function whose roundings differ only through the scale
//     (the amax of different rows), each ~n from the exact value, so at most ~2n apart.
//   FP8 (E4M3) KV cache vs the same model without it: rrmse <= L x 0.036, 0.036 = E4M3's RMS relative rounding
//     error (2^-4 / sqrt(3)) of one K / V element; attention averages many rounded values, so each of the L layers'
//     caches adds at most about one element's error to the logits.
//   HF greedy comparisons: HF's top-2 margin > 0.25 (BF16 logits near 5 have an ulp of 2^-5; the reference's
//     own HF test uses the same margin).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "common/check.h"
#include "generate_test_util.h"
#include "impl/batch.h"
#include "impl/generate/beam_search.h"
#include "impl/generate/generator.h"
#include "impl/model.h"

namespace tg::impl {
namespace {

using testing::Fixture;
using testing::model_options;
using testing::random_prompts;
using testing::rel_rmse;
using testing::row;
using testing::span_of;
using testing::visible_init;

constexpr double kMarginBf16 = 0.25;

// The largest |HF BF16 logit - HF FP32 logit| over the fixture's prompts: how far BF16 rounding alone moves one
// logit on this model. A top-2 margin below twice that may flip between a BF16 and an FP32 run.
double hf_bf16_logit_noise(const Fixture& fx) {
  double worst = 0;
  for (std::size_t i = 0; i < fx.prompts().size(); ++i) {
    const Tensor a = fx.array("logits_f32/" + std::to_string(i)), b = fx.array("logits_bf16/" + std::to_string(i));
    for (int64_t j = 0; j < a.numel(); ++j) {
      worst = std::max(worst, std::abs(static_cast<double>(a.ptr<float>()[j]) - b.ptr<float>()[j]));
    }
  }
  return worst;
}

GemmaConfig config_for(const std::string& recipe) {
  return recipe.rfind("block", 0) == 0 ? testing::tiny128_config() : testing::tiny_config();
}

GemmaForCausalLM make_model(const std::string& recipe, bool fp8_only = false, uint64_t seed = 7) {
  return GemmaForCausalLM::random(config_for(recipe), seed, model_options(recipe, Device::CPU, fp8_only),
                                  visible_init());
}

GeneratorOptions gen_options(int64_t max_batch, int64_t max_seq, DType kv = DType::BF16) {
  GeneratorOptions o;
  o.max_batch = max_batch;
  o.max_seq = max_seq;
  o.kv_dtype = kv;
  return o;
}

Tensor forward_last(GemmaForCausalLM& m, const std::vector<std::vector<int64_t>>& prompts) {
  ForwardOptions fo;
  fo.logits = LogitsMode::kLastPerSequence;
  return m.run(Batch::from_prompts(prompts), fo).logits;
}

bool bitwise_equal(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// ---- the prefill is the model's forward ------------------------------------------------------------------------

class EveryRecipe : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryRecipe, PrefillLogitsAreTheModelForwardBitForBit) {
  for (bool fp8_only : {false, true}) {
    if (fp8_only && GetParam() == "bf16") continue;
    GemmaForCausalLM m = make_model(GetParam(), fp8_only);
    const auto prompts = random_prompts(m.config().vocab_size, {5, 9, 3}, 1);
    Generator g(m, gen_options(3, 64));
    g.calibrate({Batch::from_prompts(prompts)});
    const Tensor ours = g.prefill_logits(prompts);
    const Tensor want = forward_last(m, prompts);
    EXPECT_TRUE(bitwise_equal(span_of(ours), span_of(want))) << GetParam() << (fp8_only ? " fp8-only" : "");
  }
}

// ---- KV-cached decode == the full forward ---------------------------------------------------------------------

struct DecodeCase {
  std::string recipe;
  DType kv;
};

// Teacher-forced decode of two sequences at once (different lengths) against the full forward of each prefix.
// Returns the worst rrmse over the steps; `exact` also asks for bit equality.
double decode_vs_forward(GemmaForCausalLM& m, Generator& g, bool exact, const std::string& what) {
  const int64_t vocab = m.config().vocab_size;
  auto seqs = random_prompts(vocab, {6, 11}, 3);
  const auto cont = random_prompts(vocab, {12, 12}, 4);
  g.prefill_logits(seqs);
  double worst = 0;
  for (int64_t i = 0; i < 11; ++i) {
    std::vector<int32_t> tok, pos;
    for (int s = 0; s < 2; ++s) {
      const int64_t t = cont[static_cast<std::size_t>(s)][static_cast<std::size_t>(i + 1)];
      tok.push_back(static_cast<int32_t>(t));
      pos.push_back(static_cast<int32_t>(seqs[static_cast<std::size_t>(s)].size()));
      seqs[static_cast<std::size_t>(s)].push_back(t);
    }
    const Tensor ours = g.step_logits(tok, pos);
    const Tensor want = forward_last(m, seqs);
    for (int64_t s = 0; s < 2; ++s) {
      worst = std::max(worst, rel_rmse(row(ours, s), row(want, s)));
      if (exact) {
        EXPECT_TRUE(bitwise_equal(row(ours, s), row(want, s))) << what << ": step " << i << " sequence " << s;
      }
    }
  }
  return worst;
}

// n: rrmse between the FP8 model's full forward and the BF16 model's (same weights) on fresh prompts.
double fp8_noise(GemmaForCausalLM& m) {
  GemmaForCausalLM ref = GemmaForCausalLM::random(m.config(), 7, model_options("bf16", Device::CPU), visible_init());
  const auto prompts = random_prompts(m.config().vocab_size, {17, 22}, 3);
  const Tensor a = forward_last(m, prompts), b = forward_last(ref, prompts);
  return std::max(rel_rmse(span_of(a), span_of(b)), 1e-3);
}

TEST_P(EveryRecipe, KvCachedDecodeEqualsTheFullForward) {
  const std::string recipe = GetParam();
  GemmaForCausalLM m = make_model(recipe, recipe != "bf16");
  const auto calib = random_prompts(m.config().vocab_size, {6, 11, 17}, 3);
  Generator g(m, gen_options(2, 40));
  g.calibrate({Batch::from_prompts(calib)});
  // Current scaling takes each step's amax over the step's rows, the full forward over all rows: the scales
  // differ, so only the precision's own noise bounds the difference (see the top).
  const bool exact = recipe != "current";
  const double e = decode_vs_forward(m, g, exact, recipe + " bf16 cache");
  std::cout << "[decode vs forward] " << recipe << ", BF16 cache: worst logits rrmse " << e << "\n";
  if (!exact) {
    const double n = fp8_noise(m);
    std::cout << "[decode vs forward] " << recipe << ": FP8 noise n = " << n << "\n";
    EXPECT_LE(e, 2 * n) << recipe;
  }
}

TEST_P(EveryRecipe, Fp8KvCacheStaysWithinE4m3Rounding) {
  const std::string recipe = GetParam();
  for (bool calibrated : {false, true}) {
    GemmaForCausalLM m = make_model(recipe, recipe != "bf16");
    Generator g(m, gen_options(2, 40, DType::E4M3));
    const auto calib = random_prompts(m.config().vocab_size, {6, 11, 17}, 3);
    if (calibrated) {
      g.calibrate({Batch::from_prompts(calib)});
      EXPECT_TRUE(g.cache().calibrated());
    } else {
      m.calibrate({Batch::from_prompts(calib)});  // the GEMM scales only (delayed); the cache scales per prompt
      EXPECT_FALSE(g.cache().calibrated());
    }
    const double e = decode_vs_forward(m, g, false, recipe + " fp8 cache");
    std::cout << "[decode vs forward] " << recipe << ", FP8 cache" << (calibrated ? " (calibrated)" : "")
              << ": worst logits rrmse " << e << "\n";
    const double noise = recipe == "current" ? 2 * fp8_noise(m) : 0.0;  // current's own step-vs-forward noise
    EXPECT_LE(e, 0.036 * static_cast<double>(m.config().num_hidden_layers) + noise) << recipe;
    EXPECT_GT(e, 0.0) << "an FP8 cache that changes nothing was not used";
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, EveryRecipe, ::testing::Values("bf16", "delayed", "current", "block"));

// ---- batched (HF: left-padded) == one by one ------------------------------------------------------------------

TEST(Generate, BatchOfPromptsEqualsEachPromptAlone) {
  // Per-row arithmetic is independent of the batch for these recipes (no cross-row amax), so tokens must be
  // identical. (Current scaling takes one amax over the batch's rows: a different rounding, not a bug.)
  for (const std::string recipe : {"bf16", "delayed"}) {
    GemmaForCausalLM m = make_model(recipe, recipe != "bf16");
    const auto prompts = random_prompts(m.config().vocab_size, {3, 11, 7}, 5);
    Generator g(m, gen_options(3, 40));
    g.calibrate({Batch::from_prompts(prompts)});
    GenerationConfig gc;
    gc.max_new_tokens = 12;
    gc.ignore_eos = true;
    const GenerationResult batched = g.generate(prompts, gc);
    ASSERT_EQ(batched.tokens.size(), 3u);
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const GenerationResult alone = g.generate({prompts[i]}, gc);
      EXPECT_EQ(batched.tokens[i], alone.tokens[0]) << recipe << " prompt " << i;
      EXPECT_EQ(batched.tokens[i].size(), 12u);
    }
  }
}

// ---- HF's recorded answers ---------------------------------------------------------------------------------------

class HfFixture : public ::testing::TestWithParam<std::string> {};

std::vector<std::vector<int64_t>> json_rows(const nlohmann::json& j) { return j.get<std::vector<std::vector<int64_t>>>(); }

// New tokens of HF's padded `sequences` rows (after the prompt columns).
std::vector<int64_t> hf_new(const std::vector<int64_t>& seq, std::size_t prompt_len) {
  return {seq.begin() + static_cast<std::ptrdiff_t>(prompt_len), seq.end()};
}

// Ours padded as HF pads finished rows.
std::vector<int64_t> padded(std::vector<int64_t> t, std::size_t n, int64_t pad) {
  while (t.size() < n) t.push_back(pad);
  return t;
}

TEST_P(HfFixture, GreedyMatchesHfBf16) {
  const Fixture fx(GetParam());
  GemmaForCausalLM m = GemmaForCausalLM::load(fx.dir(), model_options("bf16", Device::CPU));
  Generator g(m, gen_options(4, 64));
  const auto prompts = fx.prompts();
  int64_t compared = 0, total = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    GenerationConfig gc;
    gc.max_new_tokens = 12;
    const GenerationResult r = g.generate({prompts[i]}, gc);
    const auto& rec = fx.json()["greedy_bf16"][i];
    const auto hf = rec["new_tokens"].get<std::vector<int64_t>>();
    compared += testing::compare_while_confident(r.tokens[0], hf, rec["margins"].get<std::vector<double>>(),
                                                 kMarginBf16, GetParam() + " prompt " + std::to_string(i));
    total += static_cast<int64_t>(hf.size());
  }
  std::cout << "[greedy vs HF] " << GetParam() << ": " << compared << " of " << total << " steps agree\n";
  EXPECT_GE(compared, total / 2) << "the runs diverged early on most prompts";
}

// The impl model's own top-2 margins of the PROCESSED scores (repetition penalty, min_new_tokens) along HF's
// tokens (teacher forcing). HF recorded the margins of its raw logits, which say nothing about a decision the
// penalty made (a penalised raw winner can leave a near-tie behind it).
std::vector<double> processed_margins(Generator& g, const std::vector<int64_t>& prompt, const std::vector<int64_t>& hf,
                                      const GenerationConfig& gc, bool padded) {
  std::vector<double> out;
  Tensor logits = g.prefill_logits({prompt});
  const int64_t vocab = logits.shape()[1];
  std::vector<int64_t> seen = prompt;
  if (padded) seen.push_back(0);
  for (std::size_t t = 0; t < hf.size(); ++t) {
    std::vector<float> s(logits.ptr<float>(), logits.ptr<float>() + vocab);
    for (int64_t id : seen) {
      float& x = s[static_cast<std::size_t>(id)];
      x = x < 0 ? x * static_cast<float>(gc.repetition_penalty) : x / static_cast<float>(gc.repetition_penalty);
    }
    if (static_cast<int64_t>(t) < gc.min_new_tokens) {
      for (int64_t e : gc.eos_token_ids) s[static_cast<std::size_t>(e)] = -INFINITY;
    }
    std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<>());
    out.push_back(static_cast<double>(s[0]) - s[1]);
    seen.push_back(hf[t]);
    if (t + 1 < hf.size()) {
      logits = g.step_logits({static_cast<int32_t>(hf[t])}, {static_cast<int32_t>(prompt.size() + t)});
    }
  }
  return out;
}

void check_batch_case(Generator& g, const Fixture& fx, const std::string& key, const GenerationConfig& gc,
                      double margin, int64_t min_compared) {
  const auto ids = json_rows(fx.json()["batch/input_ids"]);
  const auto mask = json_rows(fx.json()["batch/attention_mask"]);
  const auto prompts = testing::unpad(ids, mask);
  const GenerationResult r = g.generate(prompts, gc);
  const auto& c = fx.json()[key];
  const auto seqs = json_rows(c["sequences"]);
  auto margins = c["margins"].get<std::vector<std::vector<double>>>();
  std::size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  int64_t compared = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const auto hf = hf_new(seqs[i], ids[i].size());
    if (gc.repetition_penalty != 1.0) {
      const auto own = processed_margins(g, prompts[i], hf, gc, prompts[i].size() < longest);
      for (std::size_t t = 0; t < own.size() && t < margins[i].size(); ++t) margins[i][t] = std::min(margins[i][t], own[t]);
    }
    compared += testing::compare_while_confident(padded(r.tokens[i], hf.size(), 0), hf, margins[i], margin,
                                                 key + " row " + std::to_string(i));
  }
  std::cout << "[batch vs HF] " << fx.dir().filename().string() << " " << key << ": " << compared
            << " steps compared\n";
  EXPECT_GE(compared, min_compared) << key;
}

TEST_P(HfFixture, LeftPaddedBatchGreedyEosMinNewTokensAndRepetitionPenaltyMatchHf) {
  const Fixture fx(GetParam());
  GemmaForCausalLM m = GemmaForCausalLM::load(fx.dir(), model_options("bf16", Device::CPU));
  Generator g(m, gen_options(4, 64));
  GenerationConfig gc;
  gc.max_new_tokens = 10;
  check_batch_case(g, fx, "batch/greedy_bf16", gc, kMarginBf16, 8);
  // The EOS cases were recorded with the FP32 model (margins of its raw logits): the BF16 impl must agree while
  // the margin exceeds twice HF's own BF16-vs-FP32 logit error on this model.
  const double margin = std::max(kMarginBf16, 2 * hf_bf16_logit_noise(fx));
  std::cout << "[batch vs HF] " << GetParam() << ": FP32-recorded cases compared above a margin of " << margin << "\n";
  gc.eos_token_ids = {fx.json()["chosen_eos"].get<int64_t>()};
  check_batch_case(g, fx, "batch/eos", gc, margin, 8);
  gc.min_new_tokens = 6;
  gc.repetition_penalty = 1.3;
  check_batch_case(g, fx, "batch/eos_min_rep", gc, margin, 8);
}

// Sum of processed log-probs of `tokens` after `prompt` under the generator's model, / len^length_penalty: the
// score beam search must report for that hypothesis (teacher forcing through the same cache path).
double rescore(Generator& g, const std::vector<int64_t>& prompt, const std::vector<int64_t>& tokens,
               const GenerationConfig& gc, int64_t pad, bool padded) {
  Tensor logits = g.prefill_logits({prompt});
  const int64_t vocab = logits.shape()[1];
  std::vector<int64_t> seen = prompt;
  if (padded) seen.push_back(pad);
  float sum = 0.0f;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const float* x = logits.ptr<float>();
    double z = 0;
    const float m = *std::max_element(x, x + vocab);
    for (int64_t v = 0; v < vocab; ++v) z += std::exp(static_cast<double>(x[v]) - m);
    float lp = (x[tokens[i]] - m) - static_cast<float>(std::log(z));
    if (gc.repetition_penalty != 1.0 && std::find(seen.begin(), seen.end(), tokens[i]) != seen.end()) {
      lp = lp * static_cast<float>(gc.repetition_penalty);  // log-probs are negative: HF multiplies
    }
    sum += lp;
    seen.push_back(tokens[i]);
    if (i + 1 < tokens.size()) {
      logits = g.step_logits({static_cast<int32_t>(tokens[i])}, {static_cast<int32_t>(prompt.size() + i)});
    }
  }
  return sum / std::pow(static_cast<double>(tokens.size()), gc.length_penalty);
}

// HF's beams were recorded with the FP32 model; BF16 noise (up to ~2 x 0.4 between two logits here) legitimately
// reorders near-equal beams, so the hypotheses are not compared token for token with HF here (the algorithm is,
// with the reference's FP32 logits: parity/tests/test_generate_parity.cpp, exact). Here: every reported score is
// the hypothesis's score under the impl model (teacher forcing through the cache), hypotheses come best first, and
// each ends in EOS or at max_new_tokens.
TEST_P(HfFixture, BeamSearchScoresAreConsistent) {
  const Fixture fx(GetParam());
  GemmaForCausalLM m = GemmaForCausalLM::load(fx.dir(), model_options("bf16", Device::CPU));
  Generator g(m, gen_options(8, 64));
  const auto ids = json_rows(fx.json()["beam/input_ids"]);
  const auto prompts = testing::unpad(ids, json_rows(fx.json()["beam/attention_mask"]));
  std::size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  for (const std::string key : {"beam/a", "beam/b", "beam/c"}) {
    const auto& c = fx.json()[key];
    const auto& p = c["params"];
    GenerationConfig gc;
    gc.num_beams = p["num_beams"].get<int64_t>();
    gc.length_penalty = p["length_penalty"].get<double>();
    gc.num_return_sequences = p["num_return_sequences"].get<int64_t>();
    gc.max_new_tokens = p["max_new_tokens"].get<int64_t>();
    if (p.contains("eos_token_id")) gc.eos_token_ids = {p["eos_token_id"].get<int64_t>()};
    if (p.contains("repetition_penalty")) gc.repetition_penalty = p["repetition_penalty"].get<double>();
    const auto& es = p["early_stopping"];
    gc.early_stopping = es.is_string() ? EarlyStopping::kNever
                                       : (es.get<bool>() ? EarlyStopping::kTrue : EarlyStopping::kFalse);
    const GenerationResult r = g.generate(prompts, gc);
    const int64_t n_ret = gc.num_return_sequences;
    ASSERT_EQ(static_cast<int64_t>(r.tokens.size()), static_cast<int64_t>(prompts.size()) * n_ret) << key;
    const std::vector<int64_t> eos = gc.eos_token_ids.empty() ? m.config().eos_token_ids : gc.eos_token_ids;
    const auto seqs = json_rows(c["sequences"]);
    for (std::size_t i = 0; i < r.tokens.size(); ++i) {
      const auto& t = r.tokens[i];
      const auto& prompt = prompts[i / static_cast<std::size_t>(n_ret)];
      const bool padded = prompt.size() < longest;
      ASSERT_FALSE(t.empty()) << key;
      EXPECT_TRUE(static_cast<int64_t>(t.size()) == gc.max_new_tokens ||
                  std::find(eos.begin(), eos.end(), t.back()) != eos.end())
          << key << " hypothesis " << i << " neither ends in EOS nor reaches max_new_tokens";
      if (i % static_cast<std::size_t>(n_ret) != 0) {
        EXPECT_LE(r.scores[i], r.scores[i - 1]) << key << ": best first";
      }
      const double mine = rescore(g, prompt, t, gc, 0, padded);
      EXPECT_NEAR(r.scores[i], mine, 1e-4 * std::abs(mine) + 1e-5) << key << " hypothesis " << i;
      if (i % static_cast<std::size_t>(n_ret) == 0) {
        // HF's best hypothesis of this prompt (its tail filled with the first EOS), scored by the impl model.
        const int64_t fill = eos[0];
        std::vector<int64_t> hf = hf_new(seqs[i], ids[0].size());
        while (hf.size() >= 2 && hf.back() == fill && hf[hf.size() - 2] == fill) hf.pop_back();
        const double theirs = rescore(g, prompt, hf, gc, 0, padded);
        // Informational: beam search is not exhaustive, and BF16 noise can prune HF's path early.
        std::cout << "[beam vs HF] " << GetParam() << " " << key << " prompt " << i / n_ret << ": impl best " << r.scores[i]
                  << ", HF's best under the impl model " << theirs << (hf == t ? " (same hypothesis)" : "") << "\n";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfFixture, ::testing::ValuesIn(testing::fixture_names()));

// ---- sampling, EOS, budgets, streaming --------------------------------------------------------------------------

TEST(Generate, SamplingIsSeededAndTopK1IsGreedy) {
  GemmaForCausalLM m = make_model("bf16");
  const auto prompts = random_prompts(m.config().vocab_size, {4, 9, 6}, 8);
  Generator g(m, gen_options(3, 48));
  GenerationConfig gc;
  gc.max_new_tokens = 16;
  gc.ignore_eos = true;
  const GenerationResult greedy = g.generate(prompts, gc);
  gc.do_sample = true;
  gc.top_k = 1;
  gc.temperature = 0.6;
  EXPECT_EQ(g.generate(prompts, gc).tokens, greedy.tokens) << "top-k 1 keeps only the best token";
  gc.top_k = 50;
  gc.top_p = 0.9;
  gc.seed = 5;
  const GenerationResult a = g.generate(prompts, gc), b = g.generate(prompts, gc);
  EXPECT_EQ(a.tokens, b.tokens) << "same seed, same tokens";
  gc.seed = 6;
  EXPECT_NE(g.generate(prompts, gc).tokens, a.tokens) << "another seed";
  EXPECT_NE(a.tokens, greedy.tokens);
}

TEST(Generate, EosBudgetsMinNewTokensAndTheTokenStream) {
  GemmaForCausalLM m = make_model("bf16");
  const auto prompts = random_prompts(m.config().vocab_size, {5, 8}, 9);
  Generator g(m, gen_options(2, 48));
  GenerationConfig gc;
  gc.max_new_tokens = 10;
  gc.ignore_eos = true;
  const GenerationResult free_run = g.generate(prompts, gc);
  // Make the 4th token of prompt 0 an EOS: that row stops right after it, the other runs on.
  const int64_t eos = free_run.tokens[0][3];
  gc.ignore_eos = false;
  gc.eos_token_ids = {eos};
  std::vector<std::vector<int64_t>> streamed(2);
  const GenerationResult r = g.generate(prompts, gc, [&](int64_t s, int32_t t) {
    streamed[static_cast<std::size_t>(s)].push_back(t);
  });
  const auto first = std::find(free_run.tokens[0].begin(), free_run.tokens[0].end(), eos);
  EXPECT_EQ(r.tokens[0], std::vector<int64_t>(free_run.tokens[0].begin(), first + 1)) << "stops at (and keeps) EOS";
  EXPECT_EQ(streamed[0], r.tokens[0]);
  EXPECT_EQ(streamed[1], r.tokens[1]);
  // min_new_tokens: EOS is impossible before 5 new tokens.
  gc.min_new_tokens = 5;
  const GenerationResult late = g.generate(prompts, gc);
  for (const auto& t : late.tokens) {
    const auto e = std::find(t.begin(), t.end(), eos);
    if (e != t.end()) {
      EXPECT_GE(e - t.begin(), 5) << "EOS may be the 6th new token at the earliest";
    }
  }
  // Per-row budgets.
  gc.min_new_tokens = 0;
  gc.ignore_eos = true;
  gc.max_new_tokens_per_row = {3, 7};
  const GenerationResult b = g.generate(prompts, gc);
  EXPECT_EQ(b.tokens[0].size(), 3u);
  EXPECT_EQ(b.tokens[1].size(), 7u);
  EXPECT_EQ(b.tokens[1], std::vector<int64_t>(free_run.tokens[1].begin(), free_run.tokens[1].begin() + 7));
}

// ---- bad input ---------------------------------------------------------------------------------------------------

TEST(Generate, BadInputIsAClearError) {
  GemmaForCausalLM m = make_model("bf16");
  Generator g(m, gen_options(2, 32));
  GenerationConfig gc;
  gc.max_new_tokens = 8;
  const auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos ? ::testing::AssertionSuccess()
                                               : ::testing::AssertionFailure() << "'" << msg << "' lacks '" << part << "'";
  };
  EXPECT_TRUE(has(error_of([&] { g.generate({}, gc); }), "no prompts"));
  EXPECT_TRUE(has(error_of([&] { g.generate({{2, 5}, {}}, gc); }), "prompt 1 is empty"));
  EXPECT_TRUE(has(error_of([&] { g.generate({{2, 512}}, gc); }), "id 512 is outside the vocabulary [0, 512)"));
  EXPECT_TRUE(has(error_of([&] { g.generate({std::vector<int64_t>(30, 5)}, gc); }), "the context holds 32"));
  EXPECT_TRUE(has(error_of([&] { g.generate({{2}, {2}, {2}}, gc); }), "exceed the KV cache's 2 slots"));
  GenerationConfig beams = gc;
  beams.num_beams = 2;
  EXPECT_TRUE(has(error_of([&] { g.generate({{2}, {2}}, beams); }), "exceed the KV cache's 2 slots"));
  beams.do_sample = true;
  EXPECT_TRUE(has(error_of([&] { g.generate({{2}}, beams); }), "beam sampling"));
  GenerationConfig bad = gc;
  bad.top_p = 1.5;
  EXPECT_TRUE(has(error_of([&] { g.generate({{2}}, bad); }), "top_p"));
  bad = gc;
  bad.max_new_tokens = 0;
  EXPECT_TRUE(has(error_of([&] { g.generate({{2}}, bad); }), "max_new_tokens"));
  bad = gc;
  bad.eos_token_ids = {9999};
  EXPECT_TRUE(has(error_of([&] { g.generate({{2}}, bad); }), "EOS id 9999"));
  EXPECT_TRUE(has(error_of([&] { g.step_logits({600}, {0}); }), "outside the vocabulary"));
  // Delayed scaling without calibration would run with every scale at 1.
  GemmaForCausalLM d = make_model("delayed");
  Generator gd(d, gen_options(1, 32));
  EXPECT_TRUE(has(error_of([&] { gd.generate({{2, 7}}, gc); }), "never calibrated"));
  // A cache larger than the model's context.
  EXPECT_TRUE(has(error_of([&] { Generator(m, gen_options(1, 100000)); }), "max_seq"));
}

// ---- beam search bookkeeping on a hand-made distribution --------------------------------------------------------

TEST(BeamSearchUnit, FinishedHypothesesAreScoredAsHf) {
  // V = 3, token 2 = EOS, 2 beams, one prompt. Step 0: only beam 0 is live; its best continuations are token 0
  // (log 0.6) and EOS (log 0.3). EOS finishes a hypothesis of length 1 with score log(0.3) / 1.
  BeamSearch::Options o;
  o.batch = 1;
  o.num_beams = 2;
  o.vocab = 3;
  o.max_new_tokens = 2;
  o.num_return_sequences = 2;
  o.eos = {2};
  BeamSearch bs(o);
  const float l6 = std::log(0.6f), l1 = std::log(0.1f), l3 = std::log(0.3f);
  const std::vector<float> step0{l6, l1, l3, l6, l1, l3};
  ASSERT_TRUE(bs.step(step0.data()));
  EXPECT_EQ(bs.next_tokens(), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(bs.parents(), (std::vector<int32_t>{0, 0}));
  // Step 1 (the last: every candidate hits the length limit).
  const std::vector<float> step1{l1, l1, l6, l3, l3, l3};
  EXPECT_FALSE(bs.step(step1.data()));
  const auto res = bs.results();
  const auto sc = bs.scores();
  // Best: [0, EOS] = (log 0.6 + log 0.6) / 2; then [EOS] alone = log 0.3 / 1.
  EXPECT_EQ(res[0], (std::vector<int64_t>{0, 2}));
  EXPECT_NEAR(sc[0], (l6 + l6) / 2, 1e-6);
  EXPECT_EQ(res[1], (std::vector<int64_t>{2}));
  EXPECT_NEAR(sc[1], l3, 1e-6);
}

}  // namespace
}  // namespace tg::impl
