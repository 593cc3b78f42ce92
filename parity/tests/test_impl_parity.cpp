// impl (tg::impl::GemmaForCausalLM) against the LibTorch reference (tg::ref::Engine, through its torch-free
// facade), per layer and end to end. Label cpu: the CPU backends on the HF fixtures and on small random models
// in both checkpoint directions (impl saves -> reference loads, and back). Label gpu: CUDA on gemma-2b and
// gemma-7b shaped random models (full width and vocabulary, two layers). One source, two binaries:
// test_impl_parity_cpu and test_impl_parity_gpu (TG_IMPL_PARITY_GPU=1).
//
// Tolerance table. n = the reference's own BF16 error, measured per case against the reference in FP32 on
// the same device: n_max = max|ref_bf16 - ref_f32| / max|ref_f32|, n_rms = rrmse(ref_bf16, ref_f32), both per
// logits tensor (or per layer tap). It measures how much this model amplifies rounding noise.
//
//   comparison                      metric                 bound             reason
//   ------------------------------  ---------------------  ----------------  ---------------------------------------
//   impl BF16 vs ref BF16           max rel err, logits    2 n_max + 2^-7    two BF16 evaluations of one FP32
//                                   and every layer tap                      computation, each ~n from it, rounded
//                                                                            at different points (fused residual
//                                                                            GEMM, FP32 attention scores)
//   impl BF16 vs ref FP32           max rel err            1.5 n_max + 2^-7  as good an approximation of FP32 as
//                                                                            the reference's BF16 (its own HF gate)
//   impl FP8 vs ref FP32            rrmse, logits and      32 n_rms          E4M3's half-ulp is 16x BF16's; 2x for
//   (delayed, current, block)       every layer tap                          the number of cast points (measured on
//                                                                            the fixtures: 7x - 22x)
//   top-1 (BF16 and FP8)            every position whose   must agree        e = the reference's own BF16 error on
//                                   ref FP32 top-2 margin                    that row's top-5 logits (>= 1 BF16 ulp
//                                   >= 4 f e (f = 1 BF16,                    of the top logit); a flip needs 2 f x
//                                   16 FP8)                                  the reference's error (see top1())
//   KL(ref FP32 || impl), last      per sequence           BF16: 4 k + 1e-5  KL is ~Var(logit error) / 2, quadratic
//   position                                               FP8: 2 * 16^2 k   in the error: k = KL(ref FP32 || ref
//                                                          + 1e-4            BF16), the largest over the case's
//                                                                            prompts (one row's KL is noisy);
//                                                                            ulp ratio squared for FP8
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/crash_handler.h"
#include "common/file_io.h"
#include "common/gemma_config.h"
#include "impl/batch.h"
#include "impl/model.h"
#include "impl/tests/model_test_util.h"
#include "parity/metrics.h"
#include "reference/engine.h"

namespace tg::parity {
namespace {

using impl::Batch;
using impl::ForwardOptions;
using impl::GemmaForCausalLM;
using impl::LogitsMode;
using impl::ModelOptions;
using impl::Recipe;
using impl::testing::random_prompts;

constexpr double kBf16Ulps = 0.0078125;  // 2^-7: two BF16 ulps at the tensor's scale
constexpr double kUlpRatio = 16.0;

std::filesystem::path source_dir() { return std::filesystem::path(TEGEMMA_SOURCE_DIR); }
std::filesystem::path fixture_dir(const std::string& name) { return source_dir() / "reference" / "fixtures" / name; }

std::filesystem::path temp_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() / ("tegemma_parity_" + name + "_" + std::to_string(::getpid()));
  tg::remove_tree(d);
  std::filesystem::create_directories(d);
  return d;
}

std::span<const float> span_of(const Tensor& t) { return {t.ptr<float>(), static_cast<std::size_t>(t.numel())}; }
std::span<const float> rows(const Tensor& t, int64_t b, int64_t e) {
  const int64_t c = t.shape()[-1];
  return {t.ptr<float>() + b * c, static_cast<std::size_t>((e - b) * c)};
}

double max_rel(std::span<const float> test, std::span<const float> ref) {
  const ArrayStats s = compare_arrays(ref, test);
  double scale = 0;
  for (float r : ref) scale = std::max(scale, std::abs(static_cast<double>(r)));
  return s.max_abs_err / (scale > 0 ? scale : 1.0);
}
double rrmse(std::span<const float> test, std::span<const float> ref) {
  const ArrayStats s = compare_arrays(ref, test);
  double rms = 0;
  for (float r : ref) rms += static_cast<double>(r) * r;
  rms = std::sqrt(rms / static_cast<double>(ref.size()));
  return s.rmse / (rms > 0 ? rms : 1.0);
}

// Top-1 agreement with the FP32 reference on the rows whose top-2 margin clears the noise at the top of the
// distribution. That noise is estimated independently of the side under test, from the reference's own BF16 run
// of the same row: e = max |ref16 - ref32| over ref32's 5 largest logits, and at least one BF16 ulp of the top
// logit (the rounding every BF16 logit carries; the error of a logit grows with its magnitude, so a global RMSE
// would understate it exactly where top-1 is decided). Rows with margin >= 4 * factor * e are checked: a flip
// there needs the test's error on a leading logit to exceed 2 * factor times the reference's BF16 error
// (factor 1 for BF16, 16 = the E4M3/BF16 ulp ratio for FP8).
struct Top1 {
  int64_t checked = 0, wrong = 0;
  std::string first_wrong;
};
Top1 top1(std::span<const float> ref32, std::span<const float> ref16, std::span<const float> test, int64_t vocab,
          double factor) {
  Top1 out;
  const int64_t n = static_cast<int64_t>(ref32.size()) / vocab;
  for (int64_t r = 0; r < n; ++r) {
    auto row = [&](std::span<const float> x) {
      return x.subspan(static_cast<std::size_t>(r * vocab), static_cast<std::size_t>(vocab));
    };
    const RowStats s = compare_logit_row(row(ref32), row(test));
    double e = 0;
    for (int32_t i : top_k(row(ref32), 5)) e = std::max(e, std::abs(static_cast<double>(row(ref16)[i]) - row(ref32)[i]));
    const double top = std::abs(static_cast<double>(row(ref32)[s.ref_top1]));
    if (top > 0) e = std::max(e, std::exp2(std::floor(std::log2(top)) - 7));  // one BF16 ulp of the top logit
    if (s.ref_margin < 4 * factor * e) continue;
    ++out.checked;
    if (s.ref_top1 != s.test_top1) {
      ++out.wrong;
      if (out.first_wrong.empty()) {
        out.first_wrong = "row " + std::to_string(r) + ": ref top1 " + std::to_string(s.ref_top1) + " margin " +
                          std::to_string(s.ref_margin) + ", test top1 " + std::to_string(s.test_top1) +
                          ", ref bf16 noise at the top " + std::to_string(e);
      }
    }
  }
  return out;
}

// ---- The two sides --------------------------------------------------------------------------------------------

// The reference's answer for one prompt: logits [T, V] and taps L x [T, D] (F32 copies).
struct RefOut {
  Tensor logits;
  std::vector<Tensor> taps;
};

RefOut ref_forward(const ref::Engine& e, const std::vector<int64_t>& prompt) {
  std::vector<int64_t> ids = prompt;
  ref::ForwardRequest req;
  req.input_ids = TensorView(ids.data(), DType::I64, Shape{1, static_cast<int64_t>(ids.size())}, Device::CPU);
  req.want_taps = true;
  ref::ForwardResult r = e.forward(req);
  RefOut out;
  const int64_t t = static_cast<int64_t>(ids.size());
  out.logits = std::move(r.logits.reshape_({t, r.logits.shape()[-1]}));
  for (Tensor& tap : r.layer_outputs) out.taps.push_back(std::move(tap.reshape_({t, tap.shape()[-1]})));
  return out;
}

struct Case {
  std::string name;
  std::filesystem::path dir;  // HF checkpoint both sides load
  std::vector<std::vector<int64_t>> prompts;
  std::vector<std::vector<int64_t>> calibration;  // delayed scaling's calibration prompts
  // FP8 top-1 must find positions with a clear margin (false where the logits are nearly flat: gqa fixture).
  bool fp8_margins = true;
};

std::vector<std::vector<int64_t>> fixture_prompts(const std::filesystem::path& dir) {
  // expected.json's "prompts" (read with the impl's own JSON dependency, no torch).
  const std::string text = read_file(dir / "expected.json");
  return nlohmann::json::parse(text)["prompts"].get<std::vector<std::vector<int64_t>>>();
}

// Compares one case for one impl precision against the reference in BF16 and FP32 on `device`.
void compare_case(const Case& c, const std::string& recipe, Device device, const ref::Engine& ref_bf16,
                  const ref::Engine& ref_f32) {
  ModelOptions o;
  o.recipe = Recipe::parse(recipe);
  o.device = device;
  GemmaForCausalLM m = GemmaForCausalLM::load(c.dir, o);
  if (!c.calibration.empty()) m.calibrate({Batch::from_prompts(c.calibration)});
  const bool fp8 = o.recipe.is_fp8();
  const int64_t vocab = m.config().vocab_size;

  ForwardOptions fo;
  fo.logits = LogitsMode::kAll;
  fo.taps = true;
  const Batch batch = Batch::from_prompts(c.prompts);  // all prompts in one packed batch
  const impl::ForwardOutput out = m.run(batch, fo);

  // The reference's own last-position KL, per prompt first: a single row's KL swings with its distribution
  // (measured 1.6e-5 to 7.8e-5 over gemma-7b's prompts), so the bound uses the case's largest.
  std::vector<RefOut> r16s, r32s;
  double k_ref_max = 0;
  for (std::size_t p = 0; p < c.prompts.size(); ++p) {
    r16s.push_back(ref_forward(ref_bf16, c.prompts[p]));
    r32s.push_back(ref_forward(ref_f32, c.prompts[p]));
    const int64_t t = static_cast<int64_t>(c.prompts[p].size());
    k_ref_max = std::max(k_ref_max, kl_divergence(rows(r32s.back().logits, t - 1, t), rows(r16s.back().logits, t - 1, t)));
  }
  int64_t checked = 0;
  for (std::size_t p = 0; p < c.prompts.size(); ++p) {
    const int64_t b = batch.cu_seqlens[p], e = batch.cu_seqlens[p + 1], t = e - b;
    const RefOut& r16 = r16s[p];
    const RefOut& r32 = r32s[p];
    const auto ours = rows(out.logits, b, e);
    const auto l16 = span_of(r16.logits), l32 = span_of(r32.logits);
    const double n_max = max_rel(l16, l32), n_rms = rrmse(l16, l32);
    const std::string where =
        c.name + " " + recipe + " prompt " + std::to_string(p) + " (" + std::to_string(t) + " tokens)";
    if (!fp8) {
      EXPECT_LE(max_rel(ours, l16), 2 * n_max + kBf16Ulps) << where;
      EXPECT_LE(max_rel(ours, l32), 1.5 * n_max + kBf16Ulps) << where;
      for (std::size_t l = 0; l < r16.taps.size(); ++l) {
        const auto o_tap = rows(out.taps[l], b, e);
        const double nl = max_rel(span_of(r16.taps[l]), span_of(r32.taps[l]));
        EXPECT_LE(max_rel(o_tap, span_of(r16.taps[l])), 2 * nl + kBf16Ulps) << where << " layer " << l;
        EXPECT_LE(max_rel(o_tap, span_of(r32.taps[l])), 1.5 * nl + kBf16Ulps) << where << " layer " << l;
      }
    } else {
      EXPECT_LE(rrmse(ours, l32), 2 * kUlpRatio * n_rms) << where;
      for (std::size_t l = 0; l < r16.taps.size(); ++l) {
        const double nl = rrmse(span_of(r16.taps[l]), span_of(r32.taps[l]));
        EXPECT_LE(rrmse(rows(out.taps[l], b, e), span_of(r32.taps[l])), 2 * kUlpRatio * nl) << where << " layer " << l;
      }
    }
    const Top1 t1 = top1(l32, l16, ours, vocab, fp8 ? kUlpRatio : 1.0);
    EXPECT_EQ(t1.wrong, 0) << where << ": " << t1.first_wrong;
    checked += t1.checked;
    const int64_t ck = t1.checked, wrong = t1.wrong;
    const auto last32 = rows(r32.logits, t - 1, t), last16 = rows(r16.logits, t - 1, t);
    const auto last_ours = rows(out.logits, e - 1, e);
    const double k_ref = kl_divergence(last32, last16), k = kl_divergence(last32, last_ours);
    EXPECT_LE(k, fp8 ? 2 * kUlpRatio * kUlpRatio * k_ref_max + 1e-4 : 4 * k_ref_max + 1e-5) << where;
    std::cout << "[parity " << recipe << "] " << where << ": max_rel vs ref bf16 " << max_rel(ours, l16)
              << ", vs ref f32 " << max_rel(ours, l32) << " (ref bf16 " << n_max << "), rrmse vs f32 "
              << rrmse(ours, l32) << " (ref bf16 " << n_rms << "), kl_last " << k << " (ref bf16 " << k_ref
              << "), top1 " << ck - wrong << "/" << ck << std::endl;  // flushed: a crash must not eat it
  }
  if (!fp8 || c.fp8_margins) {
    EXPECT_GT(checked, 0) << c.name << " " << recipe << ": no position had a clear margin; the top-1 check is vacuous";
  }
}

ref::Engine ref_engine(const std::filesystem::path& dir, DType dtype, Device device) {
  ref::EngineOptions o;
  o.dtype = dtype;
  o.device = device;
  return ref::Engine::load(dir, o);
}

#if !TG_IMPL_PARITY_GPU
// ---- CPU: the HF fixtures and small random models ---------------------------------------------------------------

Case fixture_case(const std::string& name) {
  const auto prompts = fixture_prompts(fixture_dir(name));
  // Delayed scaling is calibrated on the prompts themselves. The fixtures' logits are too flat for FP8: no
  // position clears the FP8 noise margin (16x BF16's), so their FP8 checks rest on the rrmse, taps and KL bounds
  // (the random cases check FP8 top-1 on nearly every position).
  return Case{name, fixture_dir(name), prompts, prompts, /*fp8_margins=*/false};
}

// A random model made by one side and saved as an HF checkpoint for both (exercises both save paths).
const Case& random_case(const std::string& which) {
  static std::map<std::string, Case> cases;
  if (auto it = cases.find(which); it != cases.end()) return it->second;
  Case c;
  c.name = which;
  c.dir = temp_dir(which);
  GemmaConfig cfg = GemmaConfig::preset("tiny");
  if (which == "impl_saved_tiny") {
    // impl random init -> impl save -> both load.
    impl::RandomInit init;
    init.std = 0.05;
    init.norm_std = 0.3;
    GemmaForCausalLM::random(cfg, 3, ModelOptions{}, init).save(c.dir);
  } else {
    // reference random init (HF's, with non-zero norms) -> reference save -> both load. Widths suit block scaling.
    cfg.vocab_size = 384;
    cfg.hidden_size = 128;
    cfg.intermediate_size = 256;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.head_dim = 64;
    ref::RandomInit init;
    init.std = 0.05;
    init.norm_std = 0.3;
    ref::Engine::random(cfg, 4, ref::EngineOptions{}, init).save(c.dir, DType::BF16);
  }
  c.prompts = random_prompts(cfg.vocab_size, {1, 9, 33, 70}, 17);
  c.calibration = random_prompts(cfg.vocab_size, {40, 64}, 99);
  return cases.emplace(which, std::move(c)).first->second;
}

class ImplVsReferenceCpu : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(ImplVsReferenceCpu, LogitsAndTapsWithinTolerance) {
  const auto& [name, recipe] = GetParam();
  const bool random = name.rfind("impl_saved", 0) == 0 || name.rfind("ref_saved", 0) == 0;
  const Case c = random ? random_case(name) : fixture_case(name);
  const ref::Engine r16 = ref_engine(c.dir, DType::BF16, Device::CPU), r32 = ref_engine(c.dir, DType::F32, Device::CPU);
  compare_case(c, recipe, Device::CPU, r16, r32);
}

auto case_name = [](const auto& info) { return std::get<0>(info.param) + "_" + std::get<1>(info.param); };
// Block scaling needs every GEMM width to be a multiple of 128: only ref_saved_tiny128 has that.
INSTANTIATE_TEST_SUITE_P(PerTensor, ImplVsReferenceCpu,
                         ::testing::Combine(::testing::Values("mqa_f32", "gqa_bf16_sharded", "hd256_bf16",
                                                              "impl_saved_tiny"),
                                            ::testing::Values("bf16", "delayed", "current")),
                         case_name);
INSTANTIATE_TEST_SUITE_P(AllRecipes, ImplVsReferenceCpu,
                         ::testing::Combine(::testing::Values("ref_saved_tiny128"),
                                            ::testing::Values("bf16", "delayed", "current", "block")),
                         case_name);

TEST(ImplCheckpoint, ImplSavedCheckpointLoadsInTheReferenceUnchanged) {
  // impl loads an HF checkpoint and saves it; the reference (HF's loading rules: names, shapes, tying) loads
  // the result and computes exactly what it computes from the original (BF16 originals: bit for bit).
  for (const std::string name : {"gqa_bf16_sharded", "hd256_bf16"}) {
    const auto saved = temp_dir("resave_" + name);
    GemmaForCausalLM::load(fixture_dir(name), ModelOptions{}).save(saved);
    const ref::Engine a = ref_engine(fixture_dir(name), DType::BF16, Device::CPU);
    const ref::Engine b = ref_engine(saved, DType::BF16, Device::CPU);
    const std::vector<int64_t> prompt = fixture_prompts(fixture_dir(name)).back();
    const Tensor la = a.logits(prompt), lb = b.logits(prompt);
    ASSERT_EQ(la.shape(), lb.shape());
    EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.nbytes()), 0) << name;
    tg::remove_tree(saved);
  }
}

#else
// ---- GPU: gemma-2b / gemma-7b shapes at reduced depth ---------------------------------------------------------

// A crash here once had no frame to unwind (a jump to address 0: std::filesystem::remove_all bound to libtorch.so's
// copy, now tg::remove_tree); common/crash_handler prints the caller of such a jump.
const bool g_crash_handler = [] {
  install_crash_handler("test_impl_parity_gpu");
  return true;
}();

class ImplVsReferenceGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(ImplVsReferenceGpu, AllRecipesWithinTolerance) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device (gpu test)";
  GemmaConfig cfg = GemmaConfig::preset(GetParam());
  cfg.num_hidden_layers = 2;  // full width and vocabulary, reduced depth
  Case c;
  c.name = GetParam() + "-L2";
  c.dir = temp_dir(c.name);
  {
    impl::RandomInit init;  // HF's init with non-zero norm weights
    init.norm_std = 0.3;
    ModelOptions o;
    o.device = Device::CUDA;
    GemmaForCausalLM::random(cfg, 5, o, init).save(c.dir);
  }
  c.prompts = random_prompts(cfg.vocab_size, {1, 17, 128, 300}, 23);
  c.calibration = random_prompts(cfg.vocab_size, {256, 200}, 29);
  c.fp8_margins = false;  // HF-init logits over 256k tokens: top-2 margins rarely clear 64 BF16 ulps
  std::optional<ref::Engine> r16, r32;
  try {
    r16.emplace(ref_engine(c.dir, DType::BF16, Device::CUDA));
    r32.emplace(ref_engine(c.dir, DType::F32, Device::CUDA));
  } catch (const Error& e) {
    GTEST_SKIP() << "the reference cannot run on CUDA here: " << e.what();
  }
  for (const char* recipe : {"bf16", "delayed", "current", "block"}) {
    SCOPED_TRACE(recipe);
    compare_case(c, recipe, Device::CUDA, *r16, *r32);
  }
  tg::remove_tree(c.dir);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ImplVsReferenceGpu, ::testing::Values("gemma-2b", "gemma-7b"), [](const auto& info) {
  std::string s = info.param;
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
});
#endif

}  // namespace
}  // namespace tg::parity
