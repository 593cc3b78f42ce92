// kernels/sampling, CPU twin: the RNG against Random123's published answers, the bit-exact exp against FP64,
// the warpers (temperature, top-k, top-p) against a line-by-line transcription of HF's logits warpers in FP64,
// the draw's distribution (chi-square), the state update of a decode step (EOS, budgets, penalties, min new
// tokens), and argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "common/numeric.h"
#include "kernels/sampling/sampling.h"
#include "kernels/sampling/sampling_math.h"

namespace tg::kernels {
namespace {

using sampling::Philox4;

TEST(SamplingMath, PhiloxMatchesRandom123KnownAnswers) {
  // Random123's kat_vectors for philox4x32 with 10 rounds.
  struct Kat {
    Philox4 ctr;
    uint32_t k0, k1;
    Philox4 expect;
  };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
      {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
       0xffffffffu,
       0xffffffffu,
       {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
      {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
       0xa4093822u,
       0x299f31d0u,
       {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
  };
  for (const Kat& k : kats) {
    const Philox4 r = sampling::philox4x32_10(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(r.x[i], k.expect.x[i]) << "word " << i;
  }
}

TEST(SamplingMath, RandomBitsDependOnSeedSequenceAndStep) {
  const uint64_t a = sampling::random_bits(7, 0, 0);
  EXPECT_EQ(a, sampling::random_bits(7, 0, 0));
  EXPECT_NE(a, sampling::random_bits(8, 0, 0));
  EXPECT_NE(a, sampling::random_bits(7, 1, 0));
  EXPECT_NE(a, sampling::random_bits(7, 0, 1));
  EXPECT_NE(a, sampling::random_bits(7ull << 32, 0, 0));  // the seed's high word counts
}

TEST(SamplingMath, ExpNonPosWithinTwoUlpOfFp64) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-86.6f, 0.0f);  // e^x normal
  double worst = 0;
  for (int i = 0; i < 200000; ++i) {
    const float x = i < 1000 ? -static_cast<float>(i) * 0.0866f : u(rng);
    const float got = sampling::exp_nonpos(x);
    const double want = std::exp(static_cast<double>(x));
    const double ulp = std::ldexp(1.0, std::ilogb(want) - 23);
    worst = std::max(worst, std::abs(got - want) / ulp);
  }
  EXPECT_LE(worst, 2.0) << "max error in ulps";
  EXPECT_EQ(sampling::exp_nonpos(0.0f), 1.0f);
  EXPECT_EQ(sampling::exp_nonpos(-88.0f), 0.0f);
  EXPECT_EQ(sampling::exp_nonpos(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(sampling::weight_of(2.5f, 2.5f), uint64_t{1} << 40);
  EXPECT_EQ(sampling::weight_of(-std::numeric_limits<float>::infinity(), 1.0f), 0u);
}

TEST(SamplingMath, OrderKeyIsTheFloatOrder) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.0f, 30.0f);
  std::vector<float> v{
      -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity(), -0.0f, 0.0f, 1e-40f, -1e-40f};
  for (int i = 0; i < 2000; ++i) v.push_back(n(rng));
  for (float a : v) {
    for (int j = 0; j < 50; ++j) {
      const float b = v[static_cast<std::size_t>(j)];
      EXPECT_EQ(a < b, sampling::order_key(a) < sampling::order_key(b)) << a << " vs " << b;
      EXPECT_EQ(a == b, sampling::order_key(a) == sampling::order_key(b)) << a << " vs " << b;
    }
    if (a == a) {
      EXPECT_EQ(sampling::key_value(sampling::order_key(a)), a + 0.0f);
    }
  }
}

// argmax_key: the maximum over any partition of a row's keys is the greedy scan's token (larger value first, ties
// -> the lowest index, -0 == +0, NaN never; an all-NaN row -> 0).
TEST(SamplingMath, ArgmaxKeyOrdersLikeTheGreedyScan) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  auto k = [](float v, uint32_t i) { return sampling::argmax_key(v, i); };
  EXPECT_GT(k(2.0f, 9), k(1.0f, 0));
  EXPECT_GT(k(1.0f, 3), k(1.0f, 4)) << "ties: the lower index wins";
  EXPECT_GT(k(0.0f, 1), k(-0.0f, 2)) << "-0 is +0: the index decides";
  EXPECT_GT(k(-0.0f, 1), k(0.0f, 2));
  EXPECT_GT(k(-inf, 5), 0u) << "-inf is selectable";
  EXPECT_GT(k(-inf, 0), k(-inf, 5));
  EXPECT_EQ(k(nan, 0), 0u);
  EXPECT_EQ(k(-nan, 0), 0u);
  EXPECT_GT(k(inf, 7), k(3e38f, 0));
  EXPECT_EQ(sampling::argmax_key_index(k(1.5f, 123456)), 123456);
  EXPECT_EQ(sampling::argmax_key_index(0), 0) << "empty (all NaN): token 0, as the scan";
  // Random rows with many ties and NaNs: the key maximum over shuffled chunks is select_token's greedy token.
  std::mt19937 rng(11);
  SamplingParams sp;
  sp.mode = SamplingMode::kGreedy;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> s(97);
    for (float& x : s) x = static_cast<float>(static_cast<int>(rng() % 7) - 3);  // -3 .. 3: ties everywhere
    for (int j = 0; j < trial % 5; ++j) s[rng() % s.size()] = nan;
    if (trial % 17 == 0) s.assign(s.size(), nan);
    uint64_t best = 0;
    for (std::size_t i = 0; i < s.size(); ++i) best = std::max(best, k(s[i], static_cast<uint32_t>(i)));
    int want = -1;  // the scan: first index of the largest non-NaN value
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == s[i] && (want < 0 || s[i] > s[static_cast<std::size_t>(want)])) want = static_cast<int>(i);
    }
    EXPECT_EQ(sampling::argmax_key_index(best), want < 0 ? 0 : want) << "trial " << trial;
    EXPECT_EQ(cpu::select_token(s.data(), static_cast<int64_t>(s.size()), sp, 0, 0).token, want < 0 ? 0 : want);
  }
}

// ---- HF's warpers, transcribed (generation/logits_process.py), in FP64 except where HF rounds to FP32 ----
struct HfKept {
  std::vector<uint8_t> kept;    // finite after the warpers
  std::vector<double> prob;     // softmax of the warped scores (relative to the kept set)
  double min_cut_distance = 1;  // the smallest |cumulative - (1 - p)| (ambiguous near 0)
};

HfKept hf_warpers(const std::vector<float>& scores, float temperature, int64_t top_k, double top_p) {
  const int64_t v = static_cast<int64_t>(scores.size());
  std::vector<float> s = scores;
  for (float& x : s) x = x / temperature;  // FP32 tensor / Python float
  if (top_k > 0) {
    const int64_t k = std::min(top_k, v);
    std::vector<float> sorted = s;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    const float kth = sorted[static_cast<std::size_t>(k - 1)];
    for (float& x : s) {
      if (x < kth) x = -std::numeric_limits<float>::infinity();
    }
  }
  HfKept out;
  if (top_p < 1.0) {
    std::vector<int64_t> idx(static_cast<std::size_t>(v));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return s[a] < s[b]; });
    double m = -INFINITY;
    for (float x : s) m = std::max(m, static_cast<double>(x));
    double z = 0;
    for (float x : s) z += std::exp(x - m);
    const double cut = static_cast<float>(1.0 - top_p);
    double cum = 0;
    for (int64_t r = 0; r < v; ++r) {
      const int64_t i = idx[static_cast<std::size_t>(r)];
      cum += std::exp(s[i] - m) / z;
      if (r != v - 1) out.min_cut_distance = std::min(out.min_cut_distance, std::abs(cum - cut));  // last: kept
      if (cum <= cut && r != v - 1) s[i] = -std::numeric_limits<float>::infinity();
    }
  }
  double m = -INFINITY, z = 0;
  for (float x : s) m = std::max(m, static_cast<double>(x));
  for (float x : s) z += std::exp(x - m);
  for (float x : s) {
    out.kept.push_back(std::isfinite(x) ? 1 : 0);
    out.prob.push_back(std::exp(x - m) / z);
  }
  return out;
}

std::vector<float> bf16_logits(int64_t v, uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, stddev);
  std::vector<float> s(static_cast<std::size_t>(v));
  for (float& x : s) x = round_bf16(n(rng));  // BF16 logits: many exact ties
  return s;
}

TEST(SelectToken, WarpersMatchHfTranscription) {
  int64_t compared = 0, ambiguous = 0;
  for (uint32_t seed = 0; seed < 6; ++seed) {
    const std::vector<float> s = bf16_logits(997, 100 + seed, 3.0f);
    for (float t : {0.7f, 1.0f, 1.6f}) {
      for (int64_t k : {0, 1, 7, 50, 996, 997, 5000}) {
        for (double p : {1.0, 0.95, 0.9, 0.5, 0.05, 0.0}) {
          SamplingParams sp;
          sp.mode = SamplingMode::kSample;
          sp.temperature = t;
          sp.top_k = static_cast<int32_t>(k);
          sp.set_top_p(p);
          sp.set_seed(seed);
          const cpu::RowTrace tr = cpu::select_token(s.data(), 997, sp, 0, 0);
          const HfKept hf = hf_warpers(s, t, k, p);
          if (p < 1.0 && hf.min_cut_distance < 1e-8) {
            ++ambiguous;  // within the 2^-40 weight resolution of the cut: either answer is right
            continue;
          }
          for (std::size_t i = 0; i < s.size(); ++i) {
            if (hf.prob[i] < 1e-11) continue;  // below the 2^-40 weight resolution
            ASSERT_EQ(tr.kept[i], hf.kept[i])
                << "token " << i << " T=" << t << " k=" << k << " p=" << p << " seed=" << seed;
          }
          EXPECT_TRUE(tr.kept[static_cast<std::size_t>(tr.token)]) << "drew a removed token";
          ++compared;
        }
      }
    }
  }
  EXPECT_GE(compared, 740) << ambiguous << " configurations were too close to the top-p cut to compare";
}

TEST(SelectToken, GreedyTakesTheLowestIndexOfTies) {
  const std::vector<float> s{1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
  SamplingParams sp;
  sp.mode = SamplingMode::kGreedy;
  EXPECT_EQ(cpu::select_token(s.data(), 5, sp, 0, 0).token, 1);
}

TEST(SelectToken, DrawsFollowTheDistribution) {
  // Chi-square goodness of fit over 40000 draws (step = the draw counter) at temperature 0.8 with top-k 6 of 8.
  const std::vector<float> s{0.5f, 1.25f, -0.75f, 2.0f, 0.0f, 1.0f, -3.0f, 0.25f};
  SamplingParams sp;
  sp.mode = SamplingMode::kSample;
  sp.temperature = 0.8f;
  sp.top_k = 6;
  sp.set_seed(20240601);
  const HfKept hf = hf_warpers(s, 0.8f, 6, 1.0);
  std::vector<int64_t> count(s.size(), 0);
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++count[static_cast<std::size_t>(cpu::select_token(s.data(), 8, sp, 3, i).token)];
  double chi2 = 0;
  int dof = -1;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (!hf.kept[i]) {
      EXPECT_EQ(count[i], 0) << "token " << i << " was removed by top-k";
      continue;
    }
    const double e = n * hf.prob[i];
    chi2 += (count[i] - e) * (count[i] - e) / e;
    ++dof;
  }
  EXPECT_EQ(dof, 5);
  EXPECT_LT(chi2, 25.7) << "chi-square with 5 degrees of freedom (p = 1e-4)";
}

TEST(SelectToken, TopPZeroKeepsTheLargestTokenOnly) {
  const std::vector<float> s{1.0f, 4.0f, 4.0f, 2.0f};  // tie at the top: the stable ascending sort's last is index 2
  SamplingParams sp;
  sp.mode = SamplingMode::kSample;
  sp.set_top_p(0.0);
  for (uint32_t step = 0; step < 20; ++step) EXPECT_EQ(cpu::select_token(s.data(), 4, sp, 0, step).token, 2);
}

// ---- sample_tokens: the decode-step state machine ---------------------------------------------------------
struct HostState {
  int64_t b, v, n;
  std::vector<float> logits;  // [B, V] F32
  std::vector<int32_t> tokens, positions, seqlens, generated, max_new, finished, last, out, seen;
  HostState(int64_t b_, int64_t v_, int64_t n_)
      : b(b_),
        v(v_),
        n(n_),
        logits(static_cast<std::size_t>(b_ * v_), 0.0f),
        tokens(b_, 0),
        positions(b_, 0),
        seqlens(b_, 0),
        generated(b_, 0),
        max_new(b_, 100),
        finished(b_, 0),
        last(b_, 7),
        out(b_ * n_, -9),
        seen(b_ * seen_words(v_), 0) {}
  DecodeState state() {
    auto vec = [](std::vector<int32_t>& x, Shape s) { return TensorView(x.data(), DType::I32, s, Device::CPU); };
    DecodeState st;
    st.tokens = vec(tokens, {b});
    st.positions = vec(positions, {b});
    st.seqlens = vec(seqlens, {b});
    st.generated = vec(generated, {b});
    st.max_new = vec(max_new, {b});
    st.finished = vec(finished, {b});
    st.last = vec(last, {b});
    st.out_tokens = vec(out, {b, n});
    st.seen = vec(seen, {b, seen_words(v)});
    return st;
  }
  void run(const SamplingParams& p) {
    SamplingParams copy = p;
    cpu::sample_tokens(TensorView(logits.data(), DType::F32, Shape{b, v}, Device::CPU),
                       TensorView(&copy, DType::U8, Shape{int64_t{sizeof(copy)}}, Device::CPU), state());
  }
  void see(int64_t row, int64_t id) { seen[static_cast<std::size_t>(row * seen_words(v) + id / 32)] |= 1 << (id % 32); }
};

TEST(SampleTokens, GreedyStepAdvancesTheState) {
  HostState h(3, 40, 5);
  for (int64_t r = 0; r < 3; ++r) h.logits[static_cast<std::size_t>(r * 40 + 10 + r)] = 5.0f;
  h.positions = {4, 9, 2};
  h.finished = {0, 1, 0};
  SamplingParams p;
  p.mode = SamplingMode::kGreedy;
  h.run(p);
  EXPECT_EQ(h.last, (std::vector<int32_t>{10, -1, 12}));
  EXPECT_EQ(h.tokens, (std::vector<int32_t>{10, 0, 12}));
  EXPECT_EQ(h.positions, (std::vector<int32_t>{5, 9, 3}));
  EXPECT_EQ(h.seqlens, (std::vector<int32_t>{6, 0, 4}));
  EXPECT_EQ(h.generated, (std::vector<int32_t>{1, 0, 1}));
  EXPECT_EQ(h.out[0], 10);
  EXPECT_EQ(h.out[5], -9) << "a finished row records nothing";
  EXPECT_EQ(h.out[10], 12);
}

TEST(SampleTokens, EosAndBudgetFinishRows) {
  HostState h(3, 40, 5);
  for (int64_t r = 0; r < 3; ++r) h.logits[static_cast<std::size_t>(r * 40 + (r == 0 ? 1 : 20))] = 5.0f;
  h.positions = {4, 4, 4};
  h.max_new = {100, 100, 1};
  SamplingParams p;
  p.mode = SamplingMode::kGreedy;
  p.num_eos = 1;
  p.eos[0] = 1;
  p.pad_token_id = 3;
  h.run(p);
  EXPECT_EQ(h.last, (std::vector<int32_t>{1, 20, 20}));
  EXPECT_EQ(h.finished, (std::vector<int32_t>{1, 0, 1}));  // EOS; running; budget of 1 reached
  EXPECT_EQ(h.positions, (std::vector<int32_t>{-1, 5, -1}));
  EXPECT_EQ(h.seqlens, (std::vector<int32_t>{0, 6, 0}));
  EXPECT_EQ(h.tokens, (std::vector<int32_t>{3, 20, 3}));
  EXPECT_EQ(h.out[0], 1) << "the EOS itself is recorded";
  h.run(p);
  EXPECT_EQ(h.last, (std::vector<int32_t>{-1, 20, -1}));
  EXPECT_EQ(h.generated, (std::vector<int32_t>{1, 2, 1}));
}

// DecodeState::flags: a copy of last | finished as the call leaves them, every row (finished before the call,
// finishing at it, running).
TEST(SampleTokens, FlagsCopyLastAndFinished) {
  HostState h(3, 40, 5);
  for (int64_t r = 0; r < 3; ++r) h.logits[static_cast<std::size_t>(r * 40 + (r == 0 ? 1 : 20))] = 5.0f;
  h.finished = {0, 0, 1};
  SamplingParams p;
  p.mode = SamplingMode::kGreedy;
  p.num_eos = 1;
  p.eos[0] = 1;
  std::vector<int32_t> flags(6, 77);
  DecodeState st = h.state();
  st.flags = TensorView(flags.data(), DType::I32, Shape{2, 3}, Device::CPU);
  SamplingParams copy = p;
  cpu::sample_tokens(TensorView(h.logits.data(), DType::F32, Shape{3, 40}, Device::CPU),
                     TensorView(&copy, DType::U8, Shape{int64_t{sizeof(copy)}}, Device::CPU), st);
  EXPECT_EQ(flags, (std::vector<int32_t>{1, 20, -1, 1, 0, 1}));  // EOS; running; finished before
  EXPECT_EQ(h.last, (std::vector<int32_t>{1, 20, -1}));
  st.flags = TensorView(flags.data(), DType::I32, Shape{3, 2}, Device::CPU);
  EXPECT_THROW(cpu::sample_tokens(TensorView(h.logits.data(), DType::F32, Shape{3, 40}, Device::CPU),
                                  TensorView(&copy, DType::U8, Shape{int64_t{sizeof(copy)}}, Device::CPU), st),
               Error);
}

TEST(SampleTokens, RepetitionPenaltyAndMinNewTokensFollowHf) {
  HostState h(1, 64, 8);
  h.logits[5] = 3.0f;   // seen: 3 / 2 = 1.5
  h.logits[6] = 2.0f;   // unseen
  h.logits[7] = -0.5f;  // seen, negative: -1
  h.logits[9] = 4.0f;   // EOS, blocked while generated < min_new_tokens
  h.see(0, 5);
  h.see(0, 7);
  SamplingParams p;
  p.mode = SamplingMode::kGreedy;
  p.repetition_penalty = 2.0f;
  p.min_new_tokens = 1;
  p.num_eos = 1;
  p.eos[0] = 9;
  h.run(p);
  EXPECT_EQ(h.last[0], 6) << "3 / 2 < 2 (penalised), EOS blocked";
  EXPECT_TRUE((h.seen[0] >> 6) & 1) << "the chosen token joins the penalised set";
  h.logits[6] = 0.0f;
  h.run(p);
  EXPECT_EQ(h.last[0], 9) << "min_new_tokens reached: EOS allowed";
  EXPECT_EQ(h.finished[0], 1);
}

TEST(SampleTokens, OffModeChangesNothing) {
  HostState h(2, 16, 4);
  h.logits[3] = 1.0f;
  SamplingParams p;
  p.mode = SamplingMode::kOff;
  const HostState before = h;
  h.run(p);
  EXPECT_EQ(h.tokens, before.tokens);
  EXPECT_EQ(h.last, before.last);
  EXPECT_EQ(h.out, before.out);
}

TEST(SampleTokens, SampledTokensAreReproducibleAndSeeded) {
  const std::vector<float> s = bf16_logits(300, 9, 2.0f);
  SamplingParams p;
  p.mode = SamplingMode::kSample;
  p.top_k = 40;
  p.set_top_p(0.9);
  auto run = [&](uint64_t seed) {
    HostState h(1, 300, 64);
    h.logits = s;
    p.set_seed(seed);
    for (int i = 0; i < 64; ++i) h.run(p);
    return h.out;
  };
  EXPECT_EQ(run(1), run(1));
  EXPECT_NE(run(1), run(2));
}

TEST(SampleTokens, BadArgumentsAreNamed) {
  HostState h(2, 16, 4);
  SamplingParams p;
  DecodeState st = h.state();
  const TensorView params(&p, DType::U8, Shape{int64_t{sizeof(p)}}, Device::CPU);
  const TensorView logits(h.logits.data(), DType::F32, Shape{2, 16}, Device::CPU);
  st.positions = TensorView(h.positions.data(), DType::I32, Shape{1}, Device::CPU);
  EXPECT_THROW(cpu::sample_tokens(logits, params, st), Error);
  st = h.state();
  st.seen = TensorView(h.seen.data(), DType::I32, Shape{2, 2}, Device::CPU);
  EXPECT_THROW(cpu::sample_tokens(logits, params, st), Error);
  // The optional workspace: the right shape is accepted (the twin does not use it), a wrong one is named.
  std::vector<int32_t> ws(2 * kSampleWorkspaceWords, 0);
  st = h.state();
  st.workspace = TensorView(ws.data(), DType::I32, Shape{2, kSampleWorkspaceWords}, Device::CPU);
  EXPECT_NO_THROW(cpu::sample_tokens(logits, params, st));
  st = h.state();
  st.workspace = TensorView(ws.data(), DType::I32, Shape{1, kSampleWorkspaceWords}, Device::CPU);
  try {
    cpu::sample_tokens(logits, params, st);
    ADD_FAILURE() << "a [1, " << kSampleWorkspaceWords << "] workspace accepted for 2 rows";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("state.workspace"), std::string::npos) << e.what();
  }
  p.temperature = 0.0f;
  try {
    cpu::sample_tokens(logits, params, h.state());
    ADD_FAILURE() << "temperature 0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("temperature"), std::string::npos) << e.what();
  }
  p.temperature = 1.0f;
  p.num_eos = 1;
  p.eos[0] = 16;
  EXPECT_THROW(cpu::sample_tokens(logits, params, h.state()), Error);
}

}  // namespace
}  // namespace tg::kernels
