// The CUDA recipe kernels against their CPU twins, bit for bit: the fused delayed-scaling update on
// many tensors with random histories and every edge value (0, denormal, tiny, FLT_MAX, inf, NaN), over
// history lengths around the block size and several steps on the device; current_scaling_scale over
// EVERY float32 bit pattern as the amax.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "kernels/recipe/recipe.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg::kernels {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

unsigned threads() { return std::max(1u, std::thread::hardware_concurrency()); }

// Host and device copies of one delayed-scaling state [N, L].
struct Twin {
  int64_t n, len;
  Tensor h_hist, h_scale, h_inv, h_max;  // CPU twin's state
  Tensor d_hist, d_scale, d_inv, d_max;  // the device's state

  Twin(int64_t n_, int64_t len_, std::mt19937& rng) : n(n_), len(len_) {
    h_hist = Tensor::empty(DType::F32, {n, len});
    h_scale = Tensor::empty(DType::F32, {n});
    h_inv = Tensor::empty(DType::F32, {n});
    h_max = Tensor::empty(DType::F32, {n});
    std::uniform_real_distribution<float> log_scale(-30.0f, 30.0f);
    for (int64_t i = 0; i < n * len; ++i) h_hist.ptr<float>()[i] = draw(rng);
    for (int64_t t = 0; t < n; ++t) {
      h_scale.ptr<float>()[t] = std::exp2(log_scale(rng));
      h_inv.ptr<float>()[t] = 1.0f / h_scale.ptr<float>()[t];
      h_max.ptr<float>()[t] = rng() % 2 ? 448.0f : 57344.0f;
    }
    d_hist = h_hist.to(Device::CUDA);
    d_scale = h_scale.to(Device::CUDA);
    d_inv = h_inv.to(Device::CUDA);
    d_max = h_max.to(Device::CUDA);
  }

  // An amax as a quantizer could leave it: mostly normal values over a wide range, plus every edge.
  static float draw(std::mt19937& rng) {
    static const float edge[] = {0.0f, kInf, kNaN, FLT_MAX, 1e-45f, 1e-40f, 1e-38f, 1e-36f, 448.0f, 57344.0f, 1.0f};
    std::uniform_real_distribution<float> log_amax(-149.0f, 127.9f);
    const uint32_t r = rng() % 32;
    return r < std::size(edge) ? edge[r] : std::exp2(log_amax(rng));
  }

  // The quantizers of one step: a fresh amax in each tensor's staging slot, on both sides.
  void stage(std::mt19937& rng) {
    for (int64_t t = 0; t < n; ++t) {
      const float a = draw(rng);
      h_hist.ptr<float>()[t * len] = a;
      TensorView slot(d_hist.ptr<float>() + t * len, DType::F32, {1}, Device::CUDA);
      copy_bytes(slot, TensorView(&h_hist.ptr<float>()[t * len], DType::F32, {1}));
    }
  }

  void expect_equal(const std::string& ctx) const {
    const Tensor g_hist = d_hist.to(Device::CPU), g_scale = d_scale.to(Device::CPU), g_inv = d_inv.to(Device::CPU);
    int64_t bad = 0;
    for (int64_t i = 0; i < n * len; ++i) {
      const uint32_t got = std::bit_cast<uint32_t>(g_hist.ptr<float>()[i]);
      const uint32_t want = std::bit_cast<uint32_t>(h_hist.ptr<float>()[i]);
      if (got != want && bad++ < 5) {
        ADD_FAILURE() << ctx << ": history[" << i / len << "][" << i % len << "] = " << g_hist.ptr<float>()[i]
                      << ", CPU twin " << h_hist.ptr<float>()[i];
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      for (auto [g, h, what] : {std::tuple{g_scale.ptr<float>(), h_scale.ptr<float>(), "scale"},
                                std::tuple{g_inv.ptr<float>(), h_inv.ptr<float>(), "scale_inv"}}) {
        if (std::bit_cast<uint32_t>(g[t]) != std::bit_cast<uint32_t>(h[t]) && bad++ < 5) {
          ADD_FAILURE() << ctx << ": " << what << "[" << t << "] = " << g[t] << ", CPU twin " << h[t];
        }
      }
    }
    EXPECT_EQ(bad, 0) << ctx;
  }
};

TEST(RecipeGpu, DelayedUpdateMatchesCpuTwin) {
  TG_REQUIRE_CUDA();
  std::mt19937 rng(2024);
  for (int64_t len : {1, 2, 31, 32, 33, 255, 256, 257, 1024, 1500}) {
    for (AmaxHistoryAlgo algo : {AmaxHistoryAlgo::kMax, AmaxHistoryAlgo::kMostRecent}) {
      for (int margin : {0, 2, 64}) {
        const int64_t n = len >= 1024 ? 301 : 1031;
        Twin tw(n, len, rng);
        for (int step = 0; step < 4; ++step) {  // several steps on the device without re-uploading
          const std::string ctx = "len " + std::to_string(len) + (algo == AmaxHistoryAlgo::kMax ? " max" : " most_recent") +
                                  " margin " + std::to_string(margin) + " step " + std::to_string(step);
          if (step > 0) tw.stage(rng);
          cpu::delayed_scaling_update(tw.h_hist, tw.h_scale, tw.h_inv, tw.h_max, algo, margin);
          delayed_scaling_update(tw.d_hist, tw.d_scale, tw.d_inv, tw.d_max, algo, margin);
          tw.expect_equal(ctx);
          if (HasFailure()) return;
        }
      }
    }
  }
}

// A row range of the state is a state (impl updates forward and backward rows separately): the rows
// outside the range are untouched.
TEST(RecipeGpu, DelayedUpdateOfARowRange) {
  TG_REQUIRE_CUDA();
  std::mt19937 rng(5);
  Twin tw(97, 64, rng);
  const int64_t a = 13, b = 71;
  auto rows = [&](const Tensor& t) { return t.view().slice_rows(a, b); };
  cpu::delayed_scaling_update(rows(tw.h_hist), rows(tw.h_scale), rows(tw.h_inv), rows(tw.h_max),
                              AmaxHistoryAlgo::kMax, 0);
  delayed_scaling_update(rows(tw.d_hist), rows(tw.d_scale), rows(tw.d_inv), rows(tw.d_max), AmaxHistoryAlgo::kMax, 0);
  tw.expect_equal("rows [13, 71)");
}

TEST(RecipeGpu, DelayedArgumentErrors) {
  TG_REQUIRE_CUDA();
  Tensor h = Tensor::zeros(DType::F32, {3, 8}, Device::CUDA), s = Tensor::zeros(DType::F32, {3}, Device::CUDA);
  Tensor s_host = Tensor::zeros(DType::F32, {3});
  EXPECT_NO_THROW(delayed_scaling_update(h, s, s, s, AmaxHistoryAlgo::kMax, 0));
  EXPECT_THROW(delayed_scaling_update(h, s_host, s, s, AmaxHistoryAlgo::kMax, 0), Error);
#if TEGEMMA_HAVE_CUDA  // the cuda:: launcher exists only in a CUDA build
  EXPECT_THROW(cuda::delayed_scaling_update(h.to(Device::CPU), s, s, s, AmaxHistoryAlgo::kMax, 0, {}), Error);
#endif
  EXPECT_THROW(current_scaling_scale(s, s_host, TensorView{}, ScaleRule{}), Error);
}

// current_scaling_scale over every float32 bit pattern as the amax (zeros, denormals, the overflow
// boundary, inf, NaN, negative values), for two rules; two more rules on a random sample.
TEST(RecipeGpu, CurrentScalingEveryFloat32BitExact) {
  TG_REQUIRE_CUDA();
  const float bf16_max = std::bit_cast<float>(0x7F7F0000u);
  struct RuleCase {
    ScaleRule rule;
    bool exhaustive;
  };
  const RuleCase rules[] = {{{448.0f, 0.0f, false, FLT_MAX}, true},
                            {{57344.0f, std::ldexp(1.0f, -20), true, bf16_max}, true},
                            {{448.0f, 0.0f, true, bf16_max}, false},
                            {{57344.0f, 1e-30f, false, 65504.0f}, false}};
  constexpr uint64_t kChunk = 1ull << 27;  // 128M amaxes (512 MiB) per round trip
  const int64_t kc = static_cast<int64_t>(kChunk);
  Tensor a_h = Tensor::empty(DType::F32, {kc}), s_h = Tensor::empty(DType::F32, {kc});
  Tensor i_h = Tensor::empty(DType::F32, {kc}), ws_h = Tensor::empty(DType::F32, {kc});
  Tensor wi_h = Tensor::empty(DType::F32, {kc});
  Tensor a_d = Tensor::empty(DType::F32, {kc}, Device::CUDA), s_d = Tensor::empty(DType::F32, {kc}, Device::CUDA);
  Tensor i_d = Tensor::empty(DType::F32, {kc}, Device::CUDA);
  std::mt19937 rng(11);
  for (const RuleCase& rc : rules) {
    std::atomic<uint64_t> mismatches{0};
    std::atomic<uint32_t> first_bad{0};
    const uint64_t total = rc.exhaustive ? (1ull << 32) : kChunk;
    for (uint64_t base = 0; base < total; base += kChunk) {
      uint32_t* p = a_h.ptr<uint32_t>();
      for (uint64_t i = 0; i < kChunk; ++i) p[i] = rc.exhaustive ? static_cast<uint32_t>(base + i) : rng();
      copy_bytes(a_d, a_h);
      current_scaling_scale(a_d, s_d, i_d, rc.rule);
      copy_bytes(s_h, s_d);
      copy_bytes(i_h, i_d);
      std::vector<std::thread> pool;
      const unsigned nt = threads();
      for (unsigned t = 0; t < nt; ++t) {
        pool.emplace_back([&, t] {
          const int64_t lo = kc * t / nt, hi = kc * (t + 1) / nt;
          cpu::current_scaling_scale(a_h.view().slice_rows(lo, hi), ws_h.view().slice_rows(lo, hi),
                                     wi_h.view().slice_rows(lo, hi), rc.rule);
          uint64_t bad = 0;
          for (int64_t i = lo; i < hi; ++i) {
            if ((s_h.ptr<uint32_t>()[i] != ws_h.ptr<uint32_t>()[i] || i_h.ptr<uint32_t>()[i] != wi_h.ptr<uint32_t>()[i]) &&
                bad++ == 0) {
              first_bad = a_h.ptr<uint32_t>()[i];
            }
          }
          mismatches += bad;
        });
      }
      for (auto& th : pool) th.join();
    }
    EXPECT_EQ(mismatches.load(), 0u) << "fp8_max " << rc.rule.fp8_max << " eps " << rc.rule.amax_epsilon << " pow2 "
                                     << rc.rule.power_2_scale << ": first mismatch at amax bits 0x" << std::hex
                                     << first_bad.load();
  }
}

}  // namespace
}  // namespace tg::kernels
