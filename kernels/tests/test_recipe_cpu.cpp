// The recipe CPU twins (kernels/recipe) against an independent reference written here: TE's
// test_recipe.py scenarios (history lengths 1, 31 and 1024, max vs most_recent, margins 0 and 2,
// multi-step runs, the zero / tiny / normal / inf / NaN amax cases for E4M3 and E5M2, a tensor that did
// not run), the current-scaling rules (epsilon, power of two) and the block-scale rule.
//
// The reference does its arithmetic in double and rounds once to float. For one division that is the
// correctly rounded float quotient (53 >= 2*24 + 2 bits, so no double rounding), i.e. what an IEEE
// float division and __fdiv_rn give. The roll is std::rotate; the power-of-two rounding is frexp.
// Everything is compared bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/recipe/recipe.h"
#include "kernels/recipe/scale_math.h"

namespace tg::kernels {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kE4M3Max = 448.0f;
constexpr float kE5M2Max = 57344.0f;

uint32_t bits(float x) { return std::bit_cast<uint32_t>(x); }

// ---- The independent reference --------------------------------------------------------------------

float ref_div(double a, double b) { return static_cast<float>(a / b); }

struct RefTensor {
  std::vector<float> history;  // [L], history[0] is the staging slot
  float scale = 1.0f;
  float scale_inv = 1.0f;
  float fp8_max = kE4M3Max;
};

// TE's fused_amax_and_scale_update_after_reduction (kernel_bulk), written out the plain way.
void ref_update(RefTensor& t, AmaxHistoryAlgo algo, int margin) {
  const float newest = t.history[0];
  float amax = 0.0f;
  if (newest != 0.0f) {  // NaN != 0: a NaN amax still rolls
    for (float v : t.history) {
      if (!std::isnan(v)) amax = std::max(amax, v);  // CUDA fmaxf skips NaN
    }
    if (algo == AmaxHistoryAlgo::kMostRecent) amax = newest;
    std::rotate(t.history.begin(), t.history.begin() + 1, t.history.end());
    t.history[0] = 0.0f;
  }
  float scale = t.scale;
  if (std::isfinite(amax) && amax > 0.0f) scale = ref_div(std::ldexp(double{t.fp8_max}, -margin), amax);
  if (std::isinf(scale)) scale = FLT_MAX;
  t.scale = scale;
  t.scale_inv = ref_div(1.0, scale);
}

// Power-of-two rounding down, via frexp: x = m * 2^e with m in [0.5, 1) -> 2^(e-1).
float ref_pow2_down(float x) {
  int e = 0;
  (void)std::frexp(x, &e);
  return static_cast<float>(std::ldexp(1.0, e - 1));
}

float ref_current_scale(float amax, float fp8_max, float eps, bool pow2, float value_for_inf) {
  if (amax < eps) amax = eps;
  if (std::isnan(amax) || std::isinf(amax) || amax == 0.0f) return 1.0f;
  float s = ref_div(fp8_max, amax);
  if (std::isinf(s)) s = value_for_inf;
  return pow2 ? ref_pow2_down(s) : s;
}

// ---- The state under test, in the kernel's layout --------------------------------------------------

struct State {
  int64_t n = 0, len = 0;
  Tensor history, scale, scale_inv, fp8_max;

  explicit State(const std::vector<RefTensor>& ref) : n(static_cast<int64_t>(ref.size())), len(ref.at(0).history.size()) {
    history = Tensor::empty(DType::F32, {n, len});
    scale = Tensor::empty(DType::F32, {n});
    scale_inv = Tensor::empty(DType::F32, {n});
    fp8_max = Tensor::empty(DType::F32, {n});
    for (int64_t t = 0; t < n; ++t) {
      std::copy(ref[t].history.begin(), ref[t].history.end(), history.ptr<float>() + t * len);
      scale.ptr<float>()[t] = ref[t].scale;
      scale_inv.ptr<float>()[t] = ref[t].scale_inv;
      fp8_max.ptr<float>()[t] = ref[t].fp8_max;
    }
  }
  void update(AmaxHistoryAlgo algo, int margin) {
    delayed_scaling_update(history, scale, scale_inv, fp8_max, algo, margin);
  }
  float& slot0(int64_t t) { return history.ptr<float>()[t * len]; }
};

void expect_state_eq(const State& s, const std::vector<RefTensor>& ref, const std::string& ctx) {
  for (int64_t t = 0; t < s.n; ++t) {
    for (int64_t i = 0; i < s.len; ++i) {
      const float got = s.history.ptr<float>()[t * s.len + i];
      ASSERT_EQ(bits(got), bits(ref[t].history[i]))
          << ctx << ": history[" << t << "][" << i << "] = " << got << ", want " << ref[t].history[i];
    }
    ASSERT_EQ(bits(s.scale.ptr<float>()[t]), bits(ref[t].scale))
        << ctx << ": scale[" << t << "] = " << s.scale.ptr<float>()[t] << ", want " << ref[t].scale;
    ASSERT_EQ(bits(s.scale_inv.ptr<float>()[t]), bits(ref[t].scale_inv))
        << ctx << ": scale_inv[" << t << "] = " << s.scale_inv.ptr<float>()[t] << ", want " << ref[t].scale_inv;
  }
}

const char* algo_name(AmaxHistoryAlgo a) { return a == AmaxHistoryAlgo::kMax ? "max" : "most_recent"; }

// ---- TE test_fp8_scale_update_with_linear_module ---------------------------------------------------
// One Linear: forward tensors (input, weight, output) in E4M3 and backward tensors (grad_output,
// grad_input) in E5M2 (HYBRID), histories 2*U(0,1)+0.5 with history[1] of the input set to 3, random
// previous scales, margin 2. After one update: history rolled by one with slot 0 cleared, and
// scale = (fp8_max / amax) / 2^margin with amax the window max (max) or the old slot 0 (most_recent).
TEST(RecipeCpu, LinearModuleScaleUpdate) {
  for (int len : {1, 31, 1024}) {
    for (AmaxHistoryAlgo algo : {AmaxHistoryAlgo::kMax, AmaxHistoryAlgo::kMostRecent}) {
      const int margin = 2;
      std::mt19937 rng(1234 + len);
      std::uniform_real_distribution<float> u(0.0f, 1.0f);
      std::vector<RefTensor> ref(5);
      for (int t = 0; t < 5; ++t) {
        ref[t].fp8_max = t < 3 ? kE4M3Max : kE5M2Max;
        ref[t].history.resize(len);
        for (float& v : ref[t].history) v = 2 * u(rng) + 0.5f;
        ref[t].scale = 2 * u(rng) + 0.5f;
        ref[t].scale_inv = 1.0f / ref[t].scale;
      }
      if (len > 1) ref[0].history[1] = 3.0f;
      State s(ref);
      const std::vector<RefTensor> before = ref;
      for (auto& t : ref) ref_update(t, algo, margin);
      s.update(algo, margin);
      const std::string ctx = "len " + std::to_string(len) + " " + algo_name(algo);
      expect_state_eq(s, ref, ctx);
      // Not trivially passing: the scales moved, and for max the input's scale comes from the planted 3.
      for (int t = 0; t < 5; ++t) EXPECT_NE(bits(ref[t].scale), bits(before[t].scale)) << ctx;
      if (len > 1 && algo == AmaxHistoryAlgo::kMax) {
        EXPECT_EQ(s.scale.ptr<float>()[0], 448.0f / 4.0f / 3.0f) << ctx;
      }
      // Written out for one tensor: the roll and the most_recent rule.
      EXPECT_EQ(s.history.ptr<float>()[0], 0.0f) << ctx;
      EXPECT_EQ(s.history.ptr<float>()[len - 1], len == 1 ? 0.0f : before[0].history[0]) << ctx;
      if (algo == AmaxHistoryAlgo::kMostRecent) {
        EXPECT_EQ(s.scale.ptr<float>()[3], 57344.0f / 4.0f / before[3].history[0]) << ctx;
      }
    }
  }
}

// ---- TE test_fp8_scale_update_with_linear_fuser_op, extended ---------------------------------------
// Several steps; each step the quantizers max a fresh amax into slot 0, then one update. After every step
// the whole window and the scales must match the reference; the newest amaxes sit at the end in order.
TEST(RecipeCpu, MultiStepHistoryAndScales) {
  for (int len : {31, 1024}) {
    for (AmaxHistoryAlgo algo : {AmaxHistoryAlgo::kMax, AmaxHistoryAlgo::kMostRecent}) {
      for (int margin : {0, 2}) {
        const std::string ctx =
            "len " + std::to_string(len) + " " + algo_name(algo) + " margin " + std::to_string(margin);
        std::mt19937 rng(len * 7 + margin + (algo == AmaxHistoryAlgo::kMax));
        std::uniform_real_distribution<float> log_amax(-8.0f, 8.0f);
        std::vector<RefTensor> ref(4);
        for (int t = 0; t < 4; ++t) {
          ref[t].fp8_max = t % 2 ? kE5M2Max : kE4M3Max;
          ref[t].history.assign(len, 0.0f);
        }
        State s(ref);
        std::vector<std::vector<float>> seen(4);  // every amax written, per tensor
        const int steps = len == 31 ? 45 : 40;    // len 31 wraps: the oldest values fall out
        for (int step = 0; step < steps; ++step) {
          for (int t = 0; t < 4; ++t) {
            const float a = std::exp2(log_amax(rng));
            ref[t].history[0] = a;
            s.slot0(t) = a;
            seen[t].push_back(a);
          }
          for (auto& t : ref) ref_update(t, algo, margin);
          s.update(algo, margin);
          expect_state_eq(s, ref, ctx + " step " + std::to_string(step));
          // TE's check_amax_history / check_scale, from the list of written amaxes.
          for (int t = 0; t < 4; ++t) {
            const int keep = std::min<int>(static_cast<int>(seen[t].size()), len - 1);
            for (int k = 0; k < keep; ++k) {
              ASSERT_EQ(s.history.ptr<float>()[t * len + len - 1 - k], seen[t][seen[t].size() - 1 - k])
                  << ctx << " step " << step;
            }
            const int window = std::min<int>(static_cast<int>(seen[t].size()), len);
            const float amax = algo == AmaxHistoryAlgo::kMax
                                   ? *std::max_element(seen[t].end() - window, seen[t].end())
                                   : seen[t].back();
            ASSERT_EQ(s.scale.ptr<float>()[t], static_cast<float>(ref[t].fp8_max / std::exp2(margin) / amax))
                << ctx << " step " << step;
          }
        }
      }
    }
  }
}

// ---- TE test_scale_update_numeric_scenarios (history length 1) -----------------------------------
TEST(RecipeCpu, NumericScenarios) {
  for (float fp8_max : {kE4M3Max, kE5M2Max}) {
    const float tiny = fp8_max / FLT_MAX / 2.0f;  // below the smallest amax with a finite scale
    const float normal = 0.3731f + 1e-5f;
    struct Case {
      const char* name;
      float amax;
      float expected;  // with previous scale 1, as TE's test
    };
    const Case cases[] = {{"zero", 0.0f, 1.0f},
                          {"tiny", tiny, FLT_MAX},
                          {"normal", normal, fp8_max / normal},
                          {"inf", kInf, 1.0f},
                          {"nan", kNaN, 1.0f}};
    for (const Case& c : cases) {
      for (float previous : {1.0f, 0.75f}) {
        const std::string ctx = std::string(c.name) + " fp8_max " + std::to_string(fp8_max) + " previous " +
                                std::to_string(previous);
        std::vector<RefTensor> ref(1);
        ref[0].history = {c.amax};
        ref[0].scale = previous;
        ref[0].fp8_max = fp8_max;
        State s(ref);
        s.update(AmaxHistoryAlgo::kMax, 0);
        const bool keeps = std::string(c.name) == "zero" || std::string(c.name) == "inf" ||
                           std::string(c.name) == "nan";
        const float want = keeps ? previous : c.expected;
        EXPECT_EQ(bits(s.scale.ptr<float>()[0]), bits(want)) << ctx;
        EXPECT_EQ(bits(s.scale_inv.ptr<float>()[0]), bits(1.0f / want)) << ctx;
        EXPECT_EQ(s.history.ptr<float>()[0], 0.0f) << ctx;  // len 1: rolled into slot 0, then cleared
        s.slot0(0) = c.amax;  // the same with most_recent
        s.scale.ptr<float>()[0] = previous;
        s.update(AmaxHistoryAlgo::kMostRecent, 0);
        EXPECT_EQ(bits(s.scale.ptr<float>()[0]), bits(want)) << ctx << " most_recent";
      }
    }
    // The tiny boundary: amax = fp8_max / FLT_MAX rounded up still has a finite scale.
    std::vector<RefTensor> ref(1);
    ref[0].history = {std::nextafter(fp8_max / FLT_MAX, 1.0f)};
    ref[0].fp8_max = fp8_max;
    State s(ref);
    s.update(AmaxHistoryAlgo::kMax, 0);
    EXPECT_TRUE(std::isfinite(s.scale.ptr<float>()[0]));
    EXPECT_EQ(bits(s.scale.ptr<float>()[0]), bits(ref_div(fp8_max, ref[0].history[0])));
  }
}

// Longer windows: inf in the window (max) keeps the previous scale until it falls out; a NaN slot 0 is
// rolled in but skipped by the max (TE's fmaxf), and keeps the previous scale under most_recent.
TEST(RecipeCpu, InfAndNaNInLongWindow) {
  for (AmaxHistoryAlgo algo : {AmaxHistoryAlgo::kMax, AmaxHistoryAlgo::kMostRecent}) {
    std::vector<RefTensor> ref(2);
    ref[0].history = {kNaN, 2.0f, 4.0f, 1.0f};
    ref[1].history = {kInf, 2.0f, 4.0f, 1.0f};
    for (auto& t : ref) t.scale = 0.5f;
    State s(ref);
    s.update(algo, 0);
    const float* h = s.history.ptr<float>();
    EXPECT_TRUE(std::isnan(h[3])) << "NaN rolled to the end";
    EXPECT_EQ(h[4 + 3], kInf);
    EXPECT_EQ(h[0], 0.0f);
    EXPECT_EQ(h[1], 4.0f);
    if (algo == AmaxHistoryAlgo::kMax) {
      EXPECT_EQ(s.scale.ptr<float>()[0], 448.0f / 4.0f);  // NaN skipped
    } else {
      EXPECT_EQ(s.scale.ptr<float>()[0], 0.5f);           // NaN -> previous
    }
    EXPECT_EQ(s.scale.ptr<float>()[1], 0.5f);             // inf -> previous either way
    for (auto& t : ref) ref_update(t, algo, 0);
    expect_state_eq(s, ref, algo_name(algo));
  }
}

// PR #825: a tensor whose slot 0 is 0 did not run this step: its window is not rolled and its scale is
// kept, while the tensors around it roll. scale_inv is still rewritten as 1 / scale.
TEST(RecipeCpu, TensorThatDidNotRunIsNotRolled) {
  std::vector<RefTensor> ref(3);
  for (int t = 0; t < 3; ++t) {
    ref[t].history = {0.0f, 5.0f, 7.0f, 6.0f, 1.0f};
    ref[t].scale = 3.0f;
    ref[t].scale_inv = 123.0f;  // stale on purpose
  }
  ref[0].history[0] = 2.0f;
  ref[2].history[0] = 9.0f;
  State s(ref);
  s.update(AmaxHistoryAlgo::kMax, 0);
  const float* h = s.history.ptr<float>();
  const std::vector<float> idle(h + 5, h + 10);
  EXPECT_EQ(idle, (std::vector<float>{0.0f, 5.0f, 7.0f, 6.0f, 1.0f}));
  EXPECT_EQ(s.scale.ptr<float>()[1], 3.0f);
  EXPECT_EQ(s.scale_inv.ptr<float>()[1], 1.0f / 3.0f);
  EXPECT_EQ(std::vector<float>(h, h + 5), (std::vector<float>{0.0f, 7.0f, 6.0f, 1.0f, 2.0f}));
  EXPECT_EQ(std::vector<float>(h + 10, h + 15), (std::vector<float>{0.0f, 7.0f, 6.0f, 1.0f, 9.0f}));
  EXPECT_EQ(s.scale.ptr<float>()[0], 448.0f / 7.0f);
  EXPECT_EQ(s.scale.ptr<float>()[2], 448.0f / 9.0f);
  for (auto& t : ref) ref_update(t, AmaxHistoryAlgo::kMax, 0);
  expect_state_eq(s, ref, "idle tensor");
}

// Random histories with every edge value, many tensors, several steps.
TEST(RecipeCpu, RandomHistoriesWithEdgeValues) {
  std::mt19937 rng(99);
  const float edge[] = {0.0f, kInf, kNaN, FLT_MAX, 1e-45f, 1e-38f, 1e-36f, 448.0f, 1.0f};
  for (int len : {1, 2, 3, 31, 257}) {
    for (AmaxHistoryAlgo algo : {AmaxHistoryAlgo::kMax, AmaxHistoryAlgo::kMostRecent}) {
      for (int margin : {0, 2, 64}) {
        std::uniform_real_distribution<float> log_amax(-130.0f, 120.0f);
        auto draw = [&] {
          const uint32_t r = rng() % 16;
          return r < 9 ? edge[r] : std::exp2(log_amax(rng));
        };
        std::vector<RefTensor> ref(67);
        for (auto& t : ref) {
          t.history.resize(len);
          for (float& v : t.history) v = draw();
          t.scale = std::exp2(log_amax(rng) / 4);
          t.fp8_max = rng() % 2 ? kE4M3Max : kE5M2Max;
        }
        State s(ref);
        for (int step = 0; step < 5; ++step) {
          for (int64_t t = 0; t < s.n; ++t) s.slot0(t) = ref[t].history[0] = draw();
          for (auto& t : ref) ref_update(t, algo, margin);
          s.update(algo, margin);
          expect_state_eq(s, ref,
                          "len " + std::to_string(len) + " " + algo_name(algo) + " margin " +
                              std::to_string(margin) + " step " + std::to_string(step));
        }
      }
    }
  }
}

TEST(RecipeCpu, DelayedScaledMaxIsExact) {
  for (int m = 0; m <= kMaxAmaxMargin; ++m) {
    EXPECT_EQ(delayed_scaled_max(448.0f, m), static_cast<float>(std::ldexp(448.0, -m))) << m;
    EXPECT_EQ(delayed_scaled_max(57344.0f, m), static_cast<float>(std::ldexp(57344.0, -m))) << m;
  }
}

TEST(RecipeCpu, DelayedArgumentErrors) {
  Tensor h = Tensor::zeros(DType::F32, {3, 8}), s = Tensor::zeros(DType::F32, {3});
  Tensor si = Tensor::zeros(DType::F32, {3}), mx = Tensor::zeros(DType::F32, {3});
  Tensor short_s = Tensor::zeros(DType::F32, {2}), bf = Tensor::zeros(DType::BF16, {3});
  EXPECT_NO_THROW(delayed_scaling_update(h, s, si, mx, AmaxHistoryAlgo::kMax, 0));
  EXPECT_THROW(delayed_scaling_update(h, short_s, si, mx, AmaxHistoryAlgo::kMax, 0), Error);
  EXPECT_THROW(delayed_scaling_update(h, s, bf, mx, AmaxHistoryAlgo::kMax, 0), Error);
  EXPECT_THROW(delayed_scaling_update(h.view().reshape({24}), s, si, mx, AmaxHistoryAlgo::kMax, 0), Error);
  EXPECT_THROW(delayed_scaling_update(h, s, si, mx, AmaxHistoryAlgo::kMax, -1), Error);
  EXPECT_THROW(delayed_scaling_update(h, s, si, mx, AmaxHistoryAlgo::kMax, 65), Error);
  Tensor no_len = Tensor::zeros(DType::F32, {3, 0});
  EXPECT_THROW(delayed_scaling_update(no_len, s, si, mx, AmaxHistoryAlgo::kMax, 0), Error);
  try {
    delayed_scaling_update(h, short_s, si, mx, AmaxHistoryAlgo::kMax, 0);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("delayed_scaling_update"), std::string::npos) << e.what();
  }
  Tensor none = Tensor::zeros(DType::F32, {0, 4}), none1 = Tensor::zeros(DType::F32, {0});
  EXPECT_NO_THROW(delayed_scaling_update(none, none1, none1, none1, AmaxHistoryAlgo::kMax, 0));
}

// ---- Current scaling ---------------------------------------------------------------------------------

std::vector<float> run_current(const std::vector<float>& amax, const ScaleRule& rule, std::vector<float>* inv) {
  const int64_t n = static_cast<int64_t>(amax.size());
  Tensor a = Tensor::empty(DType::F32, {n}), s = Tensor::empty(DType::F32, {n}), si = Tensor::empty(DType::F32, {n});
  std::copy(amax.begin(), amax.end(), a.ptr<float>());
  current_scaling_scale(a, s, inv ? si.view() : TensorView{}, rule);
  if (inv) inv->assign(si.ptr<float>(), si.ptr<float>() + n);
  return {s.ptr<float>(), s.ptr<float>() + n};
}

TEST(RecipeCpu, CurrentScalingHandChecked) {
  const ScaleRule e4m3{kE4M3Max, 0.0f, false, FLT_MAX};
  std::vector<float> inv;
  const auto s = run_current({0.0f, kInf, -kInf, kNaN, 1.0f, 3.0f, 448.0f, 1e-37f, 2.0f}, e4m3, &inv);
  EXPECT_EQ(s[0], 1.0f);  // zero
  EXPECT_EQ(s[1], 1.0f);  // inf
  EXPECT_EQ(s[2], 1.0f);  // -inf (an amax never is; treated as non-finite)
  EXPECT_EQ(s[3], 1.0f);  // NaN
  EXPECT_EQ(s[4], 448.0f);
  EXPECT_EQ(s[5], 448.0f / 3.0f);
  EXPECT_EQ(s[6], 1.0f);
  EXPECT_EQ(s[7], FLT_MAX);  // 448 / 1e-37 overflows
  EXPECT_EQ(s[8], 224.0f);
  for (size_t i = 0; i < s.size(); ++i) EXPECT_EQ(bits(inv[i]), bits(1.0f / s[i])) << i;

  // power of two: rounded DOWN (448 -> 256, 149.33 -> 128, FLT_MAX -> 2^127); exact powers stay.
  const ScaleRule pow2{kE4M3Max, 0.0f, true, FLT_MAX};
  const auto p = run_current({1.0f, 3.0f, 1e-37f, 0.0f, 7.0f, 0.4375f, 57344.0f}, pow2, nullptr);
  EXPECT_EQ(p[0], 256.0f);
  EXPECT_EQ(p[1], 128.0f);
  EXPECT_EQ(p[2], std::ldexp(1.0f, 127));
  EXPECT_EQ(p[3], 1.0f);
  EXPECT_EQ(p[4], 64.0f);     // 448 / 7 = 64 exactly
  EXPECT_EQ(p[5], 1024.0f);   // 448 / 0.4375 = 1024 exactly
  EXPECT_EQ(p[6], 0.0078125f);  // 448 / 57344 = 2^-7 exactly

  // epsilon: amax below it is floored (0 -> fp8_max / eps, not 1); NaN is not floored.
  const ScaleRule eps{kE5M2Max, 0.5f, false, FLT_MAX};
  const auto e = run_current({0.0f, 0.25f, 0.5f, 2.0f, kNaN, kInf}, eps, nullptr);
  EXPECT_EQ(e[0], 57344.0f / 0.5f);
  EXPECT_EQ(e[1], 57344.0f / 0.5f);
  EXPECT_EQ(e[2], 57344.0f / 0.5f);
  EXPECT_EQ(e[3], 57344.0f / 2.0f);
  EXPECT_EQ(e[4], 1.0f);
  EXPECT_EQ(e[5], 1.0f);
}

TEST(RecipeCpu, CurrentScalingRandomAgainstReference) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> log_amax(-150.0f, 128.0f);
  std::vector<float> amax(20000);
  for (float& a : amax) a = std::exp2(log_amax(rng)) * (1.0f + static_cast<float>(rng() % 1000) / 1000.0f);
  amax[0] = 0.0f;
  amax[1] = kInf;
  amax[2] = kNaN;
  amax[3] = 1e-45f;  // denormal
  for (float fp8_max : {kE4M3Max, kE5M2Max}) {
    for (float eps : {0.0f, 1e-12f, 3.0f}) {
      for (bool pow2 : {false, true}) {
        for (float vfi : {FLT_MAX, 65504.0f}) {
          const ScaleRule rule{fp8_max, eps, pow2, vfi};
          std::vector<float> inv;
          const auto s = run_current(amax, rule, &inv);
          for (size_t i = 0; i < amax.size(); ++i) {
            const float want = ref_current_scale(amax[i], fp8_max, eps, pow2, vfi);
            ASSERT_EQ(bits(s[i]), bits(want)) << "amax " << amax[i] << " fp8_max " << fp8_max << " eps " << eps
                                              << " pow2 " << pow2 << " value_for_inf " << vfi;
            ASSERT_EQ(bits(inv[i]), bits(ref_div(1.0, want)));
          }
        }
      }
    }
  }
}

TEST(RecipeCpu, CurrentArgumentErrors) {
  Tensor a = Tensor::zeros(DType::F32, {4}), s = Tensor::zeros(DType::F32, {4}), s3 = Tensor::zeros(DType::F32, {3});
  const ScaleRule ok{};
  EXPECT_NO_THROW(current_scaling_scale(a, s, TensorView{}, ok));
  EXPECT_THROW(current_scaling_scale(a, s3, TensorView{}, ok), Error);
  EXPECT_THROW(current_scaling_scale(a, s, s3, ok), Error);
  EXPECT_THROW(current_scaling_scale(a, s, TensorView{}, ScaleRule{0.0f, 0.0f, false, FLT_MAX}), Error);
  EXPECT_THROW(current_scaling_scale(a, s, TensorView{}, ScaleRule{448.0f, -1.0f, false, FLT_MAX}), Error);
  EXPECT_THROW(current_scaling_scale(a, s, TensorView{}, ScaleRule{448.0f, 0.0f, false, kInf}), Error);
}

// ---- The block-scale rule (scale_math.h, used by the block quantizers) --------------------------------

TEST(RecipeCpu, BlockScaleRule) {
  const float bf16_max = std::bit_cast<float>(0x7F7F0000u);  // BF16's largest finite value
  // Hand-checked: 448 / 3.5 = 128 exactly; 448 / 3 = 149.33 -> 128 with pow2; 0/inf/NaN -> 1.
  EXPECT_EQ(block_scale_from_amax(3.5f, kE4M3Max, false, FLT_MAX), 128.0f);
  EXPECT_EQ(block_scale_from_amax(3.0f, kE4M3Max, false, FLT_MAX), 448.0f / 3.0f);
  EXPECT_EQ(block_scale_from_amax(3.0f, kE4M3Max, true, FLT_MAX), 128.0f);
  EXPECT_EQ(block_scale_from_amax(0.1f, kE5M2Max, true, FLT_MAX), 524288.0f);  // 573440 -> 2^19
  for (float bad : {0.0f, kInf, kNaN}) {
    EXPECT_EQ(block_scale_from_amax(bad, kE4M3Max, false, FLT_MAX), 1.0f) << bad;
    EXPECT_EQ(block_scale_from_amax(bad, kE4M3Max, true, bf16_max), 1.0f) << bad;
  }
  // Tiny block amax: the overflowed scale becomes the input dtype's max (TE), rounded down with pow2.
  EXPECT_EQ(block_scale_from_amax(1e-37f, kE4M3Max, false, bf16_max), bf16_max);
  EXPECT_EQ(block_scale_from_amax(1e-37f, kE4M3Max, false, FLT_MAX), FLT_MAX);
  EXPECT_EQ(block_scale_from_amax(1e-37f, kE4M3Max, true, bf16_max), std::ldexp(1.0f, 127));
  // Against the reference over a wide random range.
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> log_amax(-140.0f, 128.0f);
  for (int i = 0; i < 100000; ++i) {
    const float a = std::exp2(log_amax(rng)) * (1.0f + static_cast<float>(rng() % 4096) / 4096.0f);
    for (bool pow2 : {false, true}) {
      ASSERT_EQ(bits(block_scale_from_amax(a, kE4M3Max, pow2, bf16_max)),
                bits(ref_current_scale(a, kE4M3Max, 0.0f, pow2, bf16_max)))
          << a;
    }
  }
  // The quantized block max stays representable: amax * scale <= fp8_max (what the rule is for).
  for (int i = 0; i < 100000; ++i) {
    const float a = std::exp2(log_amax(rng) / 2);
    for (bool pow2 : {false, true}) {
      const float s = block_scale_from_amax(a, kE4M3Max, pow2, FLT_MAX);
      if (std::isfinite(a * s)) {
        ASSERT_LE(static_cast<double>(a) * s, 448.0 * (1 + 1e-7)) << a;
      }
    }
  }
}

}  // namespace
}  // namespace tg::kernels
