// KV-cached generation (impl/generate) on the CUDA backend (label gpu; skipped without a device):
//   - graph replay == eager decode, bit for bit (teacher-forced logits of every step, greedy and sampled token
//     ids), bf16 and every FP8 recipe (delayed after calibration, current, block; FP8-only weights), BF16 and
//     FP8 KV caches, with and without the FP8 lm_head;
//   - CUDA vs the CPU backend (the golden twins): KV-cached decode logits within a stated tolerance, greedy
//     tokens equal wherever the CPU's top-2 margin exceeds what that tolerance allows to move;
//   - a batch of prompts of different lengths (HF: left-padded) == each prompt alone, on CUDA;
//   - finished sequences (EOS) stop: their tokens end at the EOS, their cache rows are no longer written, and the
//     generator stops launching steps once every row is finished;
//   - no device allocation while decoding (cudaMemGetInfo sampled from the token callback, i.e. while steps are
//     in flight) and exactly one graph capture per batch size;
//   - the real head geometries (gemma-2b: MQA, head_dim 256; gemma-7b: 16 heads of 256) at full width, 2 layers:
//     KV-cached decode == the full forward within tolerance, graph == eager.
//
// Bit-for-bit comparisons run with deterministic GEMMs (kernels::set_gemm_deterministic: no split-K
// reductions), as the model's own determinism test does: graph and eager run on different streams with
// different cuBLASLt workspaces.
//
// Tolerances (relative RMS error of a logits row, rrmse; and max-norm rel_err = max |a - b| / max |b|):
//   CUDA vs CPU (tiny128), BF16        rrmse <= 0.02   test_model_gpu.cpp's CUDA-vs-CPU bound for the same model:
//                                                      two BF16 evaluations ~0.45% from FP32 each, x2 margin for
//                                                      GEMM / attention order. The decode attention adds nothing
//                                                      new in kind: CUDA keeps P in FP32, the CPU twin too.
//   CUDA vs CPU, same FP8 recipe       rrmse <= 0.04   same source: bit-exact casts, GEMM accumulation order (and
//                                                      fast accumulation) flips occasional E4M3 roundings.
//   + FP8 (E4M3) KV cache              + 0.036 L       the CPU test's budget of an E4M3 cache (one element's RMS
//                                                      rounding, 2^-4 / sqrt(3), per layer): both backends write
//                                                      identical codes for identical K / V, so only elements whose
//                                                      BF16 inputs already differ can round apart; a loose bound.
//   + FP8 lm_head                      + 0.018         one more E4M3 cast (the final norm's output): where the
//                                                      backends' inputs differ its roundings can part, one E4M3
//                                                      rounding's RMS, 2^-4 / sqrt(12) (H200: 0.047 measured
//                                                      against the 0.04 of the FP8 recipe alone)
//   max-norm rel_err <= 2 x the rrmse bound: the largest of V errors over the largest of V logits; for these
//     near-Gaussian rows both maxima sit ~3 sigma out, the factor 2 covers the spread of the error's maximum.
//   Greedy agreement: tokens must agree wherever the CPU's top-2 margin exceeds 2 d, d the largest difference of
//     that step's logits between the two sides (asserted above to be <= the max-norm bound x max |CPU logit|):
//     no logit moved by more than d, so a flip needs a margin below 2 d. Steps after a legitimate divergence are
//     not compared (the histories differ).
//   Batched vs alone on CUDA: the same bounds (the same arithmetic in another order: cuBLASLt picks its
//     algorithm per M, the decode attention its split count per batch).
//   Decode vs full forward on CUDA (gemma widths): the prefill attention (cuDNN) rounds P to BF16 before P.V,
//     the decode attention does not, and the GEMMs run at another M: the CUDA-vs-CPU bounds again.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "common/check.h"
#include "generate_test_util.h"
#include "impl/batch.h"
#include "impl/generate/generator.h"
#include "impl/model.h"
#include "kernels/gemm/gemm.h"
#include "kernels/gemm/gemv.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg::impl {
namespace {

using Prompts = std::vector<std::vector<int64_t>>;
using testing::model_options;
using testing::random_prompts;
using testing::rel_rmse;
using testing::row;
using testing::visible_init;

// RAII: deterministic cuBLASLt algorithms for the scope (restores the previous mode).
class DeterministicGemms {
 public:
  DeterministicGemms() : was_(kernels::gemm_deterministic()) { kernels::set_gemm_deterministic(true); }
  ~DeterministicGemms() { kernels::set_gemm_deterministic(was_); }
  DeterministicGemms(const DeterministicGemms&) = delete;
  DeterministicGemms& operator=(const DeterministicGemms&) = delete;

 private:
  bool was_;
};

struct GpuCase {
  std::string recipe;
  DType kv = DType::BF16;
  bool fp8_head = false;
  std::string name() const {
    return recipe + (kv == DType::E4M3 ? "_fp8kv" : "_bf16kv") + (fp8_head ? "_fp8head" : "");
  }
  bool fp8() const { return recipe != "bf16"; }
};

void PrintTo(const GpuCase& c, std::ostream* os) { *os << c.name(); }

std::vector<GpuCase> every_case() {
  return {{"bf16", DType::BF16},         {"bf16", DType::E4M3},          {"delayed", DType::BF16},
          {"delayed", DType::E4M3},      {"delayed", DType::BF16, true}, {"current", DType::BF16},
          {"current", DType::E4M3},      {"current", DType::E4M3, true}, {"block", DType::BF16},
          {"block", DType::E4M3}};
}
std::string case_name(const ::testing::TestParamInfo<GpuCase>& i) { return i.param.name(); }

// tiny128 for every recipe: every GEMM dimension a multiple of 128 (block scaling), GQA (H 4, Hkv 2), head_dim 64.
GemmaForCausalLM make_model(const GpuCase& c, Device device, uint64_t seed = 7) {
  return GemmaForCausalLM::random(testing::tiny128_config(), seed,
                                  model_options(c.recipe, device, /*fp8_only=*/c.fp8(), c.fp8_head), visible_init());
}

GeneratorOptions gen_options(int64_t max_batch, int64_t max_seq, DType kv, bool graph = true) {
  GeneratorOptions o;
  o.max_batch = max_batch;
  o.max_seq = max_seq;
  o.kv_dtype = kv;
  o.cuda_graph = graph;
  return o;
}

GenerationConfig greedy(int64_t n) {
  GenerationConfig gc;
  gc.max_new_tokens = n;
  gc.ignore_eos = true;
  return gc;
}

// The prefill of `prompts`, then `steps` teacher-forced decode steps, step i feeding feed[b][i] at position
// |prompt b| + i. Host F32 logits [B, V]: the prefill's, then each step's (steps + 1 tensors).
std::vector<Tensor> teacher_forced(Generator& g, const Prompts& prompts, const Prompts& feed, int64_t steps) {
  std::vector<Tensor> out;
  out.push_back(g.prefill_logits(prompts));
  for (int64_t i = 0; i < steps; ++i) {
    std::vector<int32_t> tok, pos;
    for (std::size_t b = 0; b < prompts.size(); ++b) {
      tok.push_back(static_cast<int32_t>(feed[b][static_cast<std::size_t>(i)]));
      pos.push_back(static_cast<int32_t>(static_cast<int64_t>(prompts[b].size()) + i));
    }
    out.push_back(g.step_logits(tok, pos));
  }
  return out;
}

// Continuation tokens (no BOS) for teacher forcing.
Prompts continuations(int64_t vocab, std::size_t rows, int64_t n, uint64_t seed) {
  Prompts c = random_prompts(vocab, std::vector<int64_t>(rows, n + 1), seed);
  for (auto& r : c) r.erase(r.begin());
  return c;
}

double max_abs(std::span<const float> x) {
  double m = 0;
  for (float v : x) m = std::max(m, std::abs(static_cast<double>(v)));
  return m;
}

double top2_margin(std::span<const float> x) {
  std::vector<float> s(x.begin(), x.end());
  std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<>());
  return static_cast<double>(s[0]) - s[1];
}

bool all_finite(const Tensor& t) {
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (!std::isfinite(t.ptr<float>()[i])) return false;
  }
  return true;
}

// The rrmse bound of two evaluations of the same precision on different backends / in another order (see top).
double order_tolerance(const GpuCase& c, int64_t layers) {
  double tol = c.fp8() ? 0.04 : 0.02;
  if (c.kv == DType::E4M3) tol += 0.036 * static_cast<double>(layers);
  if (c.fp8_head) tol += 0.018;
  return tol;
}

// Compares the logits of `test` with `want` step by step and row by row (rrmse and max-norm bounds), then the
// greedy tokens: test_tokens[b][s] must equal want_tokens[b][s] wherever want's top-2 margin at that step exceeds
// twice the largest logit difference d measured there (no logit moved by more than d, so no flip is possible;
// the bounds above keep d <= 2 tol max |want|). `test` / `want` are the two sides' teacher-forced logits along
// want_tokens, which are the logits their own generate() runs saw while the tokens agree: each side is the same
// graph on the same history. Under cross-row arithmetic (current scaling: one amax over the step's rows) a row's
// logits also depend on the other rows' tokens, so the comparison ends at the first step where any row diverged;
// otherwise each row ends at its own first divergence. Returns the steps whose margin allowed a comparison.
int64_t compare_decode(const std::vector<Tensor>& test, const std::vector<Tensor>& want, const Prompts& test_tokens,
                       const Prompts& want_tokens, double tol, bool cross_row, const std::string& what) {
  double worst_rr = 0, worst_max = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    for (int64_t b = 0; b < want[i].shape()[0]; ++b) {
      const double rr = rel_rmse(row(test[i], b), row(want[i], b));
      const double mx = testing::rel_err(row(test[i], b), row(want[i], b));
      worst_rr = std::max(worst_rr, rr);
      worst_max = std::max(worst_max, mx);
      EXPECT_LE(rr, tol) << what << ": step " << i << " row " << b;
      EXPECT_LE(mx, 2 * tol) << what << ": step " << i << " row " << b << " (max-norm)";
    }
  }
  int64_t confident = 0, agreed = 0, total = 0;
  const std::size_t rows = want_tokens.size();
  std::vector<bool> diverged(rows, false);
  for (std::size_t b = 0; b < rows; ++b) {
    EXPECT_EQ(test_tokens[b].size(), want_tokens[b].size()) << what << " row " << b;
  }
  for (std::size_t s = 0; s < want.size(); ++s) {
    if (cross_row && std::find(diverged.begin(), diverged.end(), true) != diverged.end()) break;
    for (std::size_t b = 0; b < rows; ++b) {
      const auto& w = want_tokens[b];
      const auto& t = test_tokens[b];
      if (diverged[b] || s >= w.size() || s >= t.size()) continue;
      ++total;
      const auto logits = row(want[s], static_cast<int64_t>(b)), other = row(test[s], static_cast<int64_t>(b));
      double d = 0;
      for (std::size_t v = 0; v < logits.size(); ++v) {
        d = std::max(d, std::abs(static_cast<double>(logits[v]) - other[v]));
      }
      const double margin = top2_margin(logits);
      if (margin > 2 * d) ++confident;
      if (t[s] == w[s]) {
        ++agreed;
        continue;
      }
      EXPECT_LE(margin, 2 * d) << what << " row " << b << " step " << s << ": got token " << t[s] << ", want " << w[s]
                               << " with a top-2 margin of " << margin << " (largest logit difference " << d << ")";
      diverged[b] = true;  // the runs have legitimately diverged
    }
  }
  std::cout << "[" << what << "] worst rrmse " << worst_rr << ", worst max-norm " << worst_max << " (bound " << tol
            << "); greedy: " << agreed << " of " << total << " steps agree, " << confident << " confident\n";
  return confident;
}

// ---- graph replay == eager, bit for bit --------------------------------------------------------------------------

class GenerateGraphVsEager : public ::testing::TestWithParam<GpuCase> {};

TEST_P(GenerateGraphVsEager, ReplayEqualsEagerBitForBit) {
  TG_REQUIRE_CUDA();
  const DeterministicGemms det;
  const GpuCase c = GetParam();
  GemmaForCausalLM m = make_model(c, Device::CUDA);
  const int64_t vocab = m.config().vocab_size;
  const std::vector<Batch> calib{Batch::from_prompts(random_prompts(vocab, {6, 11, 17}, 3))};
  m.calibrate(calib);  // delayed: the GEMM scales (a no-op otherwise)
  Generator graph(m, gen_options(3, 48, c.kv, true));
  Generator eager(m, gen_options(3, 48, c.kv, false));
  ASSERT_TRUE(graph.uses_graphs());
  ASSERT_FALSE(eager.uses_graphs());
  if (c.kv == DType::E4M3) {  // the same frozen cache scales on both
    graph.calibrate(calib);
    eager.calibrate(calib);
    ASSERT_TRUE(graph.cache().calibrated());
  }
  const Prompts prompts = random_prompts(vocab, {5, 12, 9}, 4);
  const Prompts feed = continuations(vocab, 3, 10, 6);
  const std::vector<Tensor> a = teacher_forced(graph, prompts, feed, 10);
  const std::vector<Tensor> b = teacher_forced(eager, prompts, feed, 10);
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(testing::bitwise_equal(a[i], b[i])) << c.name() << ": teacher-forced step " << i;
    EXPECT_TRUE(all_finite(a[i])) << c.name() << ": step " << i;
    EXPECT_GT(max_abs(testing::span_of(a[i])), 0.0) << c.name() << ": all-zero logits";
  }
  // A decode step is not a copy of the prefill (the cache and the positions were used).
  EXPECT_GT(rel_rmse(row(a[1], 0), row(a[0], 0)), 0.0);

  GenerationConfig gc = greedy(16);
  const GenerationResult ga = graph.generate(prompts, gc), ea = eager.generate(prompts, gc);
  EXPECT_EQ(ga.tokens, ea.tokens) << c.name() << ": greedy";
  for (const auto& t : ga.tokens) EXPECT_EQ(t.size(), 16u);
  gc.do_sample = true;
  gc.temperature = 0.8;
  gc.top_k = 40;
  gc.top_p = 0.9;
  gc.repetition_penalty = 1.2;
  gc.seed = 11;
  EXPECT_EQ(graph.generate(prompts, gc).tokens, eager.generate(prompts, gc).tokens) << c.name() << ": sampling";
  EXPECT_EQ(graph.graph_captures(), 1) << "one batch size, one capture";
  EXPECT_EQ(eager.graph_captures(), 0);
}

INSTANTIATE_TEST_SUITE_P(Precisions, GenerateGraphVsEager, ::testing::ValuesIn(every_case()), case_name);

// GeneratorOptions::steps_per_graph: S = 4 steps per replay gives the single-step graph's tokens, streamed in the same
// order, with per-row budgets (rows finishing inside a replay, a remainder of single steps) and with an EOS met
// mid-replay (every row finished inside a replay: the steps after it record nothing).
TEST(GenerateMultiStepGraph, EqualsSingleStepsWithBudgetsEosAndStreaming) {
  TG_REQUIRE_CUDA();
  const GpuCase c{"delayed", DType::BF16, true};  // the benchmarks' decode: delayed scaling, FP8 lm_head
  GemmaForCausalLM m = make_model(c, Device::CUDA);
  const int64_t vocab = m.config().vocab_size;
  m.calibrate({Batch::from_prompts(random_prompts(vocab, {6, 11, 17}, 3))});
  GeneratorOptions o1 = gen_options(3, 64, c.kv), o4 = o1;
  o1.steps_per_graph = 1;
  o4.steps_per_graph = 4;
  Generator single(m, o1), multi(m, o4);
  ASSERT_EQ(single.steps_per_graph(), 1);
  ASSERT_EQ(multi.steps_per_graph(), 4);
  const Prompts prompts = random_prompts(vocab, {5, 12, 9}, 4);
  using Streamed = std::vector<std::pair<int64_t, int32_t>>;
  const auto run = [&](Generator& g, const GenerationConfig& gc, Streamed& streamed) {
    streamed.clear();
    return g.generate(prompts, gc, [&](int64_t seq, int32_t tok) { streamed.emplace_back(seq, tok); });
  };
  Streamed s1, s4;
  GenerationConfig gc = greedy(22);  // 21 decode steps: 5 replays of 4, then one single step
  gc.max_new_tokens_per_row = {5, 22, 14};
  const GenerationResult a1 = run(single, gc, s1), a4 = run(multi, gc, s4);
  EXPECT_EQ(a4.tokens, a1.tokens) << "budgets";
  EXPECT_EQ(s4, s1) << "budgets: streamed tokens and their order";
  EXPECT_EQ(a4.tokens[0].size(), 5u);
  EXPECT_EQ(a4.tokens[2].size(), 14u);
  EXPECT_EQ(a4.timing.decode_steps, 21);
  {  // lookahead 1: 3 replays in flight against 2 single steps (the read-back ring takes the larger count)
    GeneratorOptions o = o4;
    o.lookahead = 1;
    Generator near(m, o);
    Streamed sn;
    EXPECT_EQ(run(near, gc, sn).tokens, a1.tokens) << "lookahead 1";
    EXPECT_EQ(sn, s1) << "lookahead 1: streamed tokens and their order";
  }

  // An EOS: the token row 1 generated at its 7th step stops that row there (and any other row that meets it).
  // With budgets of 5 and 8 on the other rows every row has finished by the 8th step: the host stops launching
  // once it reads that (how many launches were already in flight depends on the host's pace: not compared).
  gc = greedy(22);
  gc.ignore_eos = false;
  gc.eos_token_ids = {a1.tokens[1][6]};
  gc.max_new_tokens_per_row = {5, 22, 8};
  const GenerationResult b1 = run(single, gc, s1), b4 = run(multi, gc, s4);
  EXPECT_EQ(b4.tokens, b1.tokens) << "EOS";
  EXPECT_EQ(s4, s1) << "EOS: streamed tokens and their order";
  EXPECT_LE(b1.tokens[1].size(), 7u);
  EXPECT_EQ(b1.tokens[1].back(), a1.tokens[1][6]) << "the EOS itself is recorded";
  EXPECT_LE(b4.timing.decode_steps, 21);
  EXPECT_EQ(multi.graph_captures(), 1) << "one batch size: one capture (both graphs)";
}

// ---- CUDA vs the CPU backend --------------------------------------------------------------------------------------

class GenerateCudaVsCpu : public ::testing::TestWithParam<GpuCase> {};

TEST_P(GenerateCudaVsCpu, LogitsWithinToleranceAndConfidentGreedyTokensEqual) {
  TG_REQUIRE_CUDA();
  const DeterministicGemms det;  // generate() and the teacher-forced replay of one history give the same bits
  const GpuCase c = GetParam();
  GemmaForCausalLM cpu = make_model(c, Device::CPU), gpu = make_model(c, Device::CUDA);
  const int64_t vocab = cpu.config().vocab_size, layers = cpu.config().num_hidden_layers;
  const std::vector<Batch> calib{Batch::from_prompts(random_prompts(vocab, {6, 11, 17}, 3))};
  Generator gc(cpu, gen_options(3, 48, c.kv)), gg(gpu, gen_options(3, 48, c.kv));
  gc.calibrate(calib);  // the model (delayed) and the FP8 cache scales
  gg.calibrate(calib);
  const Prompts prompts = random_prompts(vocab, {7, 13, 4}, 21);
  constexpr int64_t kNew = 12;
  const Prompts want_tokens = gc.generate(prompts, greedy(kNew)).tokens;
  const Prompts got_tokens = gg.generate(prompts, greedy(kNew)).tokens;
  // Both backends teacher-forced along the CPU's tokens: logits of the steps that chose them.
  const std::vector<Tensor> want = teacher_forced(gc, prompts, want_tokens, kNew - 1);
  const std::vector<Tensor> got = teacher_forced(gg, prompts, want_tokens, kNew - 1);
  const int64_t confident =
      compare_decode(got, want, got_tokens, want_tokens, order_tolerance(c, layers), c.recipe == "current",
                     "cuda vs cpu " + c.name());
  EXPECT_GE(confident, 1) << "no step was confident enough to compare tokens: the check is vacuous";
}

INSTANTIATE_TEST_SUITE_P(Precisions, GenerateCudaVsCpu, ::testing::ValuesIn(every_case()), case_name);

// The timed GEMV / cuBLASLt choice of the decode GEMMs past decode_gemv_max_rows() (impl/generate/decoder.h), at
// the default max rows (4) and a batch of 8: one choice per eligible shape (the tiny model's QKV / fc1 and O / fc2
// share shapes: N 512 K 128 and N 128 K 256; none is wider than 16384), each with both timings recorded, made on
// the first eager step; the graph generator replays the same choices, so its tokens and teacher-forced logits equal
// the eager generator's bit for bit. Three passes: the gain forced so that every choice is the GEMV, forced so that
// every one is cuBLASLt, and the default (whatever the timings say). Not under DeterministicGemms (which turns the
// choice off).
TEST(GenerateCuda, TimedGemvChoiceServesGraphAndEagerAlike) {
  TG_REQUIRE_CUDA();
  if (!decode_gemv_timed_enabled()) GTEST_SKIP() << "TEGEMMA_DECODE_GEMV_TIMED=0";
  const int64_t max_rows = decode_gemv_max_rows();
  set_decode_gemv_max_rows(kDefaultDecodeGemvMaxRows);
  for (const GpuCase& c : {GpuCase{"bf16"}, GpuCase{"delayed", DType::E4M3}}) {
    for (const double gain : {-1e30, 1.0, kDecodeGemvChoiceMinGain}) {
      SCOPED_TRACE(c.name() + " gain " + std::to_string(gain));
      clear_decode_gemv_choices();
      set_decode_gemv_min_gain(gain);
      GemmaForCausalLM m = make_model(c, Device::CUDA);
      const int64_t vocab = m.config().vocab_size;
      const std::vector<Batch> calib{Batch::from_prompts(random_prompts(vocab, {6, 11, 17}, 3))};
      m.calibrate(calib);
      Generator eager(m, gen_options(8, 48, c.kv, false)), graph(m, gen_options(8, 48, c.kv, true));
      if (c.kv == DType::E4M3) {
        eager.calibrate(calib);
        graph.calibrate(calib);
      }
      const Prompts prompts = random_prompts(vocab, {5, 12, 9, 7, 3, 11, 8, 6}, 4);
      const Prompts feed = continuations(vocab, 8, 6, 6);
      const std::vector<Tensor> a = teacher_forced(eager, prompts, feed, 6);
      const std::vector<DecodeGemvChoice> made = decode_gemv_choices();
      const std::vector<Tensor> b = teacher_forced(graph, prompts, feed, 6);
      for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(testing::bitwise_equal(a[i], b[i])) << "step " << i;
      EXPECT_EQ(eager.generate(prompts, greedy(10)).tokens, graph.generate(prompts, greedy(10)).tokens);
      EXPECT_EQ(decode_gemv_choices().size(), made.size()) << "the graph generator made no choice of its own";
      const GemmaConfig& cfg = m.config();
      const int64_t d = cfg.hidden_size, qkv = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim;
      std::vector<std::pair<int64_t, int64_t>> shapes{
          {qkv, d}, {d, cfg.q_dim()}, {2 * cfg.intermediate_size, d}, {d, cfg.intermediate_size}};
      for (const auto& [n, k] : shapes) {
        const auto it = std::find_if(made.begin(), made.end(), [&](const DecodeGemvChoice& x) {
          return x.n == n && x.k == k;
        });
        ASSERT_NE(it, made.end()) << "no choice for N " << n << ", K " << k;
        EXPECT_GT(it->m, kDefaultDecodeGemvMaxRows);
        EXPECT_LE(it->m, kernels::kGemvMaxRows);
        EXPECT_TRUE(std::isfinite(it->gemv_ms) && it->gemv_ms > 0.0) << it->gemv_ms;
        EXPECT_TRUE(std::isfinite(it->gemm_ms) && it->gemm_ms > 0.0) << it->gemm_ms;
        EXPECT_EQ(it->gemv, it->gemv_ms < it->gemm_ms * (1.0 - gain));
        if (gain < 0.0) {
          EXPECT_TRUE(it->gemv) << "forced: the GEMV";
        } else if (gain == 1.0) {
          EXPECT_FALSE(it->gemv) << "forced: cuBLASLt";
        }
      }
      std::sort(shapes.begin(), shapes.end());
      shapes.erase(std::unique(shapes.begin(), shapes.end()), shapes.end());
      // One key per (N, K) and accumulate flag: QKV / fc1 write, O / fc2 accumulate into h.
      EXPECT_EQ(made.size(), shapes.size()) << "one choice per eligible shape";
    }
  }
  set_decode_gemv_min_gain(kDecodeGemvChoiceMinGain);
  set_decode_gemv_max_rows(max_rows);
  clear_decode_gemv_choices();
}

// ---- batched (HF: left-padded) == one by one, on CUDA -------------------------------------------------------------

TEST(GenerateCuda, BatchOfPromptsEqualsEachPromptAlone) {
  TG_REQUIRE_CUDA();
  const DeterministicGemms det;
  // Current scaling is left out: its amax spans the batch's rows, a different rounding by design.
  for (const GpuCase& c : {GpuCase{"bf16"}, GpuCase{"delayed"}, GpuCase{"block", DType::E4M3}}) {
    GemmaForCausalLM m = make_model(c, Device::CUDA);
    const int64_t vocab = m.config().vocab_size, layers = m.config().num_hidden_layers;
    const Prompts prompts = random_prompts(vocab, {3, 14, 8}, 5);
    Generator g(m, gen_options(3, 48, c.kv));
    g.calibrate({Batch::from_prompts(prompts)});
    constexpr int64_t kNew = 12;
    const GenerationResult batched = g.generate(prompts, greedy(kNew));
    ASSERT_EQ(batched.tokens.size(), 3u);
    int64_t confident = 0;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      const Prompts alone = g.generate({prompts[i]}, greedy(kNew)).tokens;
      const std::vector<Tensor> alone_logits = teacher_forced(g, {prompts[i]}, alone, kNew - 1);
      // The batched run's row i, teacher-forced along alone's tokens, against alone.
      Prompts feed = batched.tokens;
      feed[i] = alone[0];
      const std::vector<Tensor> rows_i = teacher_forced(g, prompts, feed, kNew - 1);
      std::vector<Tensor> mine;
      for (const Tensor& t : rows_i) {
        const auto r = row(t, static_cast<int64_t>(i));
        Tensor one = Tensor::empty(DType::F32, Shape{1, vocab}, Device::CPU);
        std::copy(r.begin(), r.end(), one.ptr<float>());
        mine.push_back(std::move(one));
      }
      confident += compare_decode(mine, alone_logits, {batched.tokens[i]}, alone, order_tolerance(c, layers),
                                  /*cross_row=*/false, "batched vs alone " + c.name() + " prompt " + std::to_string(i));
    }
    EXPECT_GE(confident, 1) << c.name() << ": no confident step";
  }
}

// ---- finished sequences stop ----------------------------------------------------------------------------------------

TEST(GenerateCuda, FinishedSequencesStopTheirTokensCacheWritesAndTheLoop) {
  TG_REQUIRE_CUDA();
  const DeterministicGemms det;  // the free run and the EOS run must compute the same tokens
  const GpuCase c{"bf16"};
  GemmaForCausalLM m = make_model(c, Device::CUDA);
  const int64_t vocab = m.config().vocab_size;
  const Prompts prompts = random_prompts(vocab, {5, 9}, 9);
  constexpr int64_t kNew = 24;
  GenerationResult free_run;
  {
    Generator g(m, gen_options(2, 64, DType::BF16));
    free_run = g.generate(prompts, greedy(kNew));
  }
  // EOS := prompt 0's 4th token: row 0 stops right after its first occurrence; row 1 runs on (or stops at its own).
  const int64_t eos = free_run.tokens[0][3];
  GenerationConfig gc = greedy(kNew);
  gc.ignore_eos = false;
  gc.eos_token_ids = {eos};
  Generator g(m, gen_options(2, 64, DType::BF16));  // a fresh cache: every row starts zeroed
  std::vector<std::vector<int64_t>> streamed(2);
  const GenerationResult r =
      g.generate(prompts, gc, [&](int64_t s, int32_t t) { streamed[static_cast<std::size_t>(s)].push_back(t); });
  std::vector<int64_t> want_len;
  for (std::size_t b = 0; b < 2; ++b) {
    const auto& f = free_run.tokens[b];
    const auto first = std::find(f.begin(), f.end(), eos);
    const std::vector<int64_t> want(f.begin(), first == f.end() ? f.end() : first + 1);
    EXPECT_EQ(r.tokens[b], want) << "row " << b << ": stops at (and keeps) its first EOS";
    EXPECT_EQ(streamed[b], r.tokens[b]) << "row " << b << ": the token stream";
    want_len.push_back(static_cast<int64_t>(want.size()));
  }
  ASSERT_LE(want_len[0], 4);
  // Row b's k generated tokens: the first k - 1 were fed back (positions n .. n + k - 2); a finished row (EOS or
  // budget) never writes position n + k - 1 or later. Layer 0's K rows on the host.
  const kernels::KvCache kv = g.cache().layer(0, 2);
  const Tensor k = Tensor::copy_of(kv.k, Device::CPU);
  const int64_t max_seq = kv.k.shape[1], row_elems = kv.k.shape[2] * kv.k.shape[3];
  const auto written = [&](int64_t b, int64_t pos) {
    const auto* p = k.ptr<uint16_t>() + (b * max_seq + pos) * row_elems;
    return std::any_of(p, p + row_elems, [](uint16_t x) { return x != 0; });
  };
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t n = static_cast<int64_t>(prompts[static_cast<std::size_t>(b)].size());
    const int64_t last_fed = n + want_len[static_cast<std::size_t>(b)] - 2;
    for (int64_t pos = 0; pos <= last_fed; ++pos) EXPECT_TRUE(written(b, pos)) << "row " << b << " position " << pos;
    for (int64_t pos = last_fed + 1; pos < max_seq; ++pos) {
      EXPECT_FALSE(written(b, pos)) << "row " << b << " finished but position " << pos << " was written";
    }
  }
  // A single prompt that finishes early: the loop stops launching steps (at most S - 1 + (launches in flight - 1) x S
  // steps run past the last useful one while the host learns of the EOS: Generator::launches_in_flight), fewer than
  // the budget's kNew - 1.
  Generator g1(m, gen_options(1, 64, DType::BF16));
  const std::vector<int64_t> alone = g1.generate({prompts[0]}, greedy(kNew)).tokens[0];
  gc.eos_token_ids = {alone[3]};
  const auto first = std::find(alone.begin(), alone.end(), alone[3]);
  const int64_t len = first - alone.begin() + 1;
  const GenerationResult one = g1.generate({prompts[0]}, gc);
  EXPECT_EQ(one.tokens[0], std::vector<int64_t>(alone.begin(), first + 1));
  const int64_t s = g1.steps_per_graph();
  EXPECT_LE(one.timing.decode_steps, len - 1 + s - 1 + (g1.launches_in_flight() - 1) * s);
  EXPECT_LT(one.timing.decode_steps, kNew - 1);
}

// ---- no allocation while decoding, one capture per batch size ------------------------------------------------------

TEST(GenerateCuda, NoDeviceAllocationWhileDecodingAndOneCapturePerBatchSize) {
  TG_REQUIRE_CUDA();
  for (const GpuCase& c : {GpuCase{"bf16"}, GpuCase{"current", DType::E4M3}, GpuCase{"block"}}) {
    GemmaForCausalLM m = make_model(c, Device::CUDA);
    const int64_t vocab = m.config().vocab_size;
    Generator g(m, gen_options(3, 160, c.kv));
    const Prompts one = random_prompts(vocab, {9}, 1), three = random_prompts(vocab, {4, 17, 30}, 2);
    GenerationConfig gc = greedy(96);
    // Warm-up: one generation per batch size (captures, prefill arena, cuBLASLt heuristics and workspaces).
    g.generate(one, gc);
    g.generate(three, gc);
    EXPECT_EQ(g.graph_captures(), 2) << c.name();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    size_t free0 = 0, total = 0;
    ASSERT_EQ(cudaMemGetInfo(&free0, &total), cudaSuccess);
    int64_t samples = 0, changed = 0;
    const auto probe = [&](int64_t, int32_t) {
      size_t f = 0, t = 0;
      if (cudaMemGetInfo(&f, &t) != cudaSuccess || f != free0) ++changed;
      ++samples;
    };
    const int64_t steps0 = g.decode_steps_run();
    for (int rep = 0; rep < 3; ++rep) {
      g.generate(one, gc, probe);
      g.generate(three, gc, probe);
      gc.do_sample = true;  // new parameters: a device copy, not a re-capture
      gc.seed = static_cast<uint64_t>(rep);
    }
    g.step_logits({5}, {20});
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    size_t free1 = 0;
    ASSERT_EQ(cudaMemGetInfo(&free1, &total), cudaSuccess);
    EXPECT_EQ(free1, free0) << c.name() << ": device memory was allocated by decoding";
    EXPECT_EQ(changed, 0) << c.name() << ": free device memory changed during " << changed << " of " << samples
                          << " token callbacks";
    EXPECT_GE(samples, 3 * 4 * 96) << "the callback saw every token";
    EXPECT_EQ(g.graph_captures(), 2) << c.name() << ": one capture per batch size, whatever the config";
    EXPECT_GE(g.decode_steps_run() - steps0, 3 * 2 * 95);
  }
}

// ---- the real head geometries at full width ----------------------------------------------------------------------

class GenerateGemmaWidth : public ::testing::TestWithParam<std::string> {};

TEST_P(GenerateGemmaWidth, DecodeEqualsTheFullForwardAndGraphEqualsEager) {
  TG_REQUIRE_CUDA();
  const DeterministicGemms det;
  GemmaConfig cfg = GemmaConfig::preset(GetParam());
  cfg.num_hidden_layers = 2;
  cfg.vocab_size = 4096;  // the full width, a small vocabulary
  RandomInit init;
  init.norm_std = 0.3;
  for (const GpuCase& c : {GpuCase{"bf16"}, GpuCase{"delayed", DType::E4M3, true}}) {
    GemmaForCausalLM m =
        GemmaForCausalLM::random(cfg, 3, model_options(c.recipe, Device::CUDA, c.fp8(), c.fp8_head), init);
    const Prompts prompts = random_prompts(cfg.vocab_size, {37, 300, 1}, 8);
    const std::vector<Batch> calib{Batch::from_prompts(prompts)};
    Generator graph(m, gen_options(3, 400, c.kv, true)), eager(m, gen_options(3, 400, c.kv, false));
    graph.calibrate(calib);
    eager.calibrate(calib);
    const Prompts feed = continuations(cfg.vocab_size, 3, 8, 12);
    const std::vector<Tensor> a = teacher_forced(graph, prompts, feed, 8);
    const std::vector<Tensor> b = teacher_forced(eager, prompts, feed, 8);
    for (std::size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(testing::bitwise_equal(a[i], b[i])) << GetParam() << " " << c.name() << ": step " << i;
    }
    // Each step against the full forward of the whole prefix (the model's own prefill path).
    Prompts seqs = prompts;
    double worst = 0;
    const double tol = order_tolerance(c, cfg.num_hidden_layers);
    for (std::size_t i = 1; i < a.size(); ++i) {
      for (std::size_t s = 0; s < seqs.size(); ++s) seqs[s].push_back(feed[s][i - 1]);
      ForwardOptions fo;
      fo.logits = LogitsMode::kLastPerSequence;
      const Tensor full = m.run(Batch::from_prompts(seqs), fo).logits;
      for (int64_t s = 0; s < 3; ++s) {
        const double e = rel_rmse(row(a[i], s), row(full, s));
        worst = std::max(worst, e);
        EXPECT_LE(e, tol) << GetParam() << " " << c.name() << ": step " << i << " sequence " << s;
      }
    }
    std::cout << "[decode vs forward, CUDA] " << GetParam() << " L2 " << c.name() << ": worst rrmse " << worst
              << " (bound " << tol << ")\n";
  }
}

INSTANTIATE_TEST_SUITE_P(Presets, GenerateGemmaWidth, ::testing::Values("gemma-2b", "gemma-7b"));

}  // namespace
}  // namespace tg::impl
