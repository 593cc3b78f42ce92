// Test-only engines for the parity harness: a tiny deterministic causal "transformer" with Gemma's moving
// parts in miniature (RMSNorm with a 1 + w weight, a RoPE-style rotation of pairs, a causal mixing step, a
// GEMM whose output can be quantized, a residual stream), so the planted bugs of issue 8 have faithful
// stand-ins:
//   kNormWeightNoOne  the RMSNorm weight used as w instead of 1 + w (in one layer)
//   kRopePairSwap     RoPE rotating interleaved pairs (2i, 2i+1) instead of halves (i, i + D/2) (one layer)
//   kGemmScale2       a GEMM output off by 2x, as a wrong FP8 scale_inv gives (one layer)
//   kLogitsScale2     the final logits scaled by 2
// Precision emulation: kF32 (exact), kBF16 (the residual stream stored in BF16; float instead of double
// accumulation, so it differs from the reference by rounding only), kFP8 (BF16 plus E4M3 current-scaled GEMM
// inputs and weights).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/numeric.h"
#include "common/tensor.h"
#include "parity/engine.h"

namespace tg::parity::fake {

struct FakeBug {
  enum Kind { kNone, kNormWeightNoOne, kRopePairSwap, kGemmScale2, kLogitsScale2 };
  Kind kind = kNone;
  int layer = -1;
};

struct FakeOptions {
  enum Precision { kF32, kBF16, kFP8 };
  int vocab = 64;
  int hidden = 16;  // D (even)
  int layers = 3;   // L
  uint64_t seed = 7;
  Precision precision = kF32;
  FakeBug bug;
  // (prompt index, generation step) -> token emitted instead of the argmax (a forced divergence).
  std::map<std::pair<int, int>, int32_t> forced;
  bool throw_in_forward = false;  // simulates an engine that cannot run
  int drop_tap = -1;              // >= 0: return one tap fewer (a malformed result)
};

class FakeEngine : public Engine {
 public:
  FakeEngine(std::string name, std::string recipe, FakeOptions o)
      : name_(std::move(name)), recipe_(std::move(recipe)), o_(std::move(o)) {
    uint64_t s = o_.seed * 0x9E3779B97F4A7C15ull + 1;
    auto next = [&s]() {  // splitmix64 -> uniform [-1, 1): the same numbers on every platform
      s += 0x9E3779B97F4A7C15ull;
      uint64_t z = s;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      return static_cast<float>(static_cast<double>(z >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    };
    const int D = o_.hidden;
    emb_.resize(static_cast<std::size_t>(o_.vocab) * D);
    for (auto& x : emb_) x = next();
    norm_w_.resize(static_cast<std::size_t>(o_.layers) * D);
    for (auto& x : norm_w_) x = 0.5f * next();  // Gemma-like: w near 0, the scale is 1 + w
    gemm_w_.resize(static_cast<std::size_t>(o_.layers) * D * D);
    for (auto& x : gemm_w_) x = next() * (1.5f / std::sqrt(float(D)));
    unemb_.resize(static_cast<std::size_t>(o_.vocab) * D);
    for (auto& x : unemb_) x = next() * 0.8f;
  }

  std::string name() const override { return name_; }
  std::string precision() const override { return recipe_; }
  Provenance provenance() const override { return {{"fake_seed", std::to_string(o_.seed)}}; }

  ForwardResult forward(const std::vector<TokenIds>& prompts, const ForwardOptions& opts) override {
    TG_CHECK(!o_.throw_in_forward, name_, ": simulated failure (out of memory)");
    ForwardResult out;
    for (const auto& p : prompts) out.prompts.push_back(run(p, opts));
    return out;
  }

  std::vector<TokenIds> generate_greedy(const std::vector<TokenIds>& prompts, const GenerateOptions& g) override {
    std::vector<TokenIds> out;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      TokenIds seq = prompts[i], gen;
      for (int step = 0; step < g.max_new_tokens; ++step) {
        ForwardOptions fo;
        fo.want_taps = false;
        fo.last_position_only = true;
        const PromptForward f = run(seq, fo);
        const float* row = f.logits.ptr<float>();
        int32_t tok = static_cast<int32_t>(std::max_element(row, row + o_.vocab) - row);
        auto it = o_.forced.find({static_cast<int>(i), step});
        if (it != o_.forced.end()) tok = it->second;
        gen.push_back(tok);
        seq.push_back(tok);
        if (std::find(g.eos_token_ids.begin(), g.eos_token_ids.end(), tok) != g.eos_token_ids.end()) break;
      }
      out.push_back(std::move(gen));
    }
    return out;
  }

  // The reference's logits for one sequence (all positions), for tests that need the true margins.
  std::vector<float> logits_of(const TokenIds& seq) {
    ForwardOptions fo;
    fo.want_taps = false;
    const PromptForward f = run(seq, fo);
    return {f.logits.ptr<float>(), f.logits.ptr<float>() + f.logits.numel()};
  }

 private:
  bool bug_at(FakeBug::Kind k, int layer) const { return o_.bug.kind == k && o_.bug.layer == layer; }

  float store(float x) const { return o_.precision == FakeOptions::kF32 ? x : round_bf16(x); }

  // Per-tensor current scaling to E4M3 and back (what an FP8 GEMM input sees).
  static void fake_quant(std::vector<float>& v) {
    float amax = 0.0f;
    for (float x : v) amax = std::max(amax, std::fabs(x));
    if (amax == 0.0f) return;
    const float scale = 448.0f / amax;
    for (float& x : v) x = round_to(DType::E4M3, x * scale) / scale;
  }

  PromptForward run(const TokenIds& ids, const ForwardOptions& opts) const {
    const int S = static_cast<int>(ids.size()), D = o_.hidden, V = o_.vocab;
    for (int32_t t : ids) TG_CHECK(t >= 0 && t < V, name_, ": token ", t, " outside [0, ", V, ")");
    std::vector<float> h(static_cast<std::size_t>(S) * D);
    for (int t = 0; t < S; ++t)
      for (int d = 0; d < D; ++d) h[t * D + d] = store(emb_[ids[t] * D + d] * 2.0f);
    PromptForward out;
    for (int l = 0; l < o_.layers; ++l) {
      // RMSNorm (1 + w), then a rotation of pairs by position (RoPE in miniature).
      std::vector<float> x(h.size());
      for (int t = 0; t < S; ++t) {
        double ss = 0.0;
        for (int d = 0; d < D; ++d) ss += double(h[t * D + d]) * h[t * D + d];
        const float inv = static_cast<float>(1.0 / std::sqrt(ss / D + 1e-6));
        for (int d = 0; d < D; ++d) {
          const float w = norm_w_[l * D + d];
          const float scale = bug_at(FakeBug::kNormWeightNoOne, l) ? w : 1.0f + w;
          x[t * D + d] = h[t * D + d] * inv * scale;
        }
        const bool interleaved = bug_at(FakeBug::kRopePairSwap, l);
        for (int i = 0; i < D / 2; ++i) {
          const int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + D / 2;
          const double ang = t * std::pow(100.0, -2.0 * i / D);
          const float c = static_cast<float>(std::cos(ang)), s = static_cast<float>(std::sin(ang));
          const float xa = x[t * D + a], xb = x[t * D + b];
          x[t * D + a] = xa * c - xb * s;
          x[t * D + b] = xb * c + xa * s;
        }
      }
      // Causal mixing (attention in miniature): the mean over positions <= t.
      std::vector<float> m(h.size());
      for (int d = 0; d < D; ++d) {
        double acc_d = 0.0;
        float acc_f = 0.0f;
        for (int t = 0; t < S; ++t) {
          acc_d += x[t * D + d];
          acc_f += x[t * D + d];
          m[t * D + d] = o_.precision == FakeOptions::kF32 ? static_cast<float>(acc_d / (t + 1)) : acc_f / (t + 1);
        }
      }
      // The GEMM: y = W m, quantized inputs under FP8.
      std::vector<float> w(gemm_w_.begin() + static_cast<std::ptrdiff_t>(l) * D * D,
                           gemm_w_.begin() + static_cast<std::ptrdiff_t>(l + 1) * D * D);
      if (o_.precision == FakeOptions::kFP8) {
        fake_quant(m);
        fake_quant(w);
      }
      const float gemm_scale = bug_at(FakeBug::kGemmScale2, l) ? 2.0f : 1.0f;
      for (int t = 0; t < S; ++t) {
        for (int o = 0; o < D; ++o) {
          double acc_d = 0.0;
          float acc_f = 0.0f;
          for (int i = 0; i < D; ++i) {
            acc_d += double(w[o * D + i]) * m[t * D + i];
            acc_f += w[o * D + i] * m[t * D + i];
          }
          const float y = o_.precision == FakeOptions::kF32 ? static_cast<float>(acc_d) : acc_f;
          h[t * D + o] = store(h[t * D + o] + std::tanh(gemm_scale * y));
        }
      }
      if (opts.want_taps && l != o_.drop_tap) {
        Tensor tap = Tensor::empty(DType::F32, {S, D});
        std::copy(h.begin(), h.end(), tap.ptr<float>());
        out.taps.push_back(std::move(tap));
      }
    }
    // Final RMSNorm and the unembedding.
    const int first = opts.last_position_only ? S - 1 : 0;
    out.logits = Tensor::empty(DType::F32, {S - first, V});
    const float logit_scale = o_.bug.kind == FakeBug::kLogitsScale2 ? 2.0f : 1.0f;
    for (int t = first; t < S; ++t) {
      double ss = 0.0;
      for (int d = 0; d < D; ++d) ss += double(h[t * D + d]) * h[t * D + d];
      const double inv = 1.0 / std::sqrt(ss / D + 1e-6);
      for (int v = 0; v < V; ++v) {
        double acc = 0.0;
        for (int d = 0; d < D; ++d) acc += double(unemb_[v * D + d]) * h[t * D + d] * inv;
        out.logits.ptr<float>()[(t - first) * V + v] = store(static_cast<float>(acc) * logit_scale);
      }
    }
    return out;
  }

  std::string name_, recipe_;
  FakeOptions o_;
  std::vector<float> emb_, norm_w_, gemm_w_, unemb_;  // [V, D], [L, D], [L, D, D], [V, D]
};

}  // namespace tg::parity::fake
