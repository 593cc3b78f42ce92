// Helpers of the training tests: an FP64 Gemma (the finite-difference oracle, written from gemma.md without
// any impl or kernels code), model setup for training on the CPU backend, and host copies.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <numbers>
#include <vector>

#include "common/gemma_config.h"
#include "common/numeric.h"
#include "common/tensor.h"
#include "impl/batch.h"
#include "impl/model.h"
#include "impl/weights.h"

namespace tg::impl::testing {

// A host F32 copy of any F32/BF16 view.
inline std::vector<double> host_values(const TensorView& v) {
  const Tensor h = Tensor::copy_of(v, Device::CPU);
  std::vector<double> out(static_cast<std::size_t>(h.numel()));
  for (int64_t i = 0; i < h.numel(); ++i) {
    out[static_cast<std::size_t>(i)] =
        h.dtype() == DType::F32 ? h.ptr<float>()[i] : bf16_bits_to_float(h.ptr<uint16_t>()[i]);
  }
  return out;
}

// The model's weights in FP64, fused layout (qkv = [q; k; v] rows, fc1 = [gate; up] rows), and the forward
// loss of a packed batch: the mean cross-entropy over the non-ignored targets. Everything in double; no
// rounding anywhere except what the weights already are (BF16 values, exact in double).
struct Fp64Gemma {
  GemmaConfig c;
  double embed_scale = 0;  // the model's constant: sqrt(D) rounded to BF16 (HF's normalizer)
  std::vector<double> embed, final_norm;
  struct Layer {
    std::vector<double> input_norm, qkv, o, post_norm, fc1, fc2;
  };
  std::vector<Layer> layers;

  static Fp64Gemma from(const ModelWeights& w) {
    Fp64Gemma g;
    g.c = w.config;
    g.embed_scale = round_bf16(static_cast<float>(std::sqrt(static_cast<double>(w.config.hidden_size))));
    g.embed = host_values(w.embed.view());
    g.final_norm = host_values(w.final_norm.view());
    for (const LayerWeights& l : w.layers) {
      g.layers.push_back({host_values(l.input_norm.view()), host_values(l.qkv.master_view),
                          host_values(l.o.master_view), host_values(l.post_attention_norm.view()),
                          host_values(l.fc1.master_view), host_values(l.fc2.master_view)});
    }
    return g;
  }

  // Every parameter tensor in the Optimizer's order (impl/optimizer.cpp): embed, per layer (input norm, qkv,
  // o, post norm, fc1, fc2), final norm.
  std::vector<std::vector<double>*> params() {
    std::vector<std::vector<double>*> p{&embed};
    for (Layer& l : layers) {
      for (auto* t : {&l.input_norm, &l.qkv, &l.o, &l.post_norm, &l.fc1, &l.fc2}) p.push_back(t);
    }
    p.push_back(&final_norm);
    return p;
  }

  std::vector<double> rmsnorm(const std::vector<double>& x, const std::vector<double>& w, int64_t t_count) const {
    const int64_t d = c.hidden_size;
    std::vector<double> y(x.size());
    for (int64_t t = 0; t < t_count; ++t) {
      double ss = 0;
      for (int64_t j = 0; j < d; ++j) ss += x[t * d + j] * x[t * d + j];
      const double r = 1.0 / std::sqrt(ss / d + c.rms_norm_eps);
      for (int64_t j = 0; j < d; ++j) y[t * d + j] = x[t * d + j] * r * (1.0 + w[j]);
    }
    return y;
  }
  // y [T, N] = x [T, K] W^T, W [N, K].
  static std::vector<double> linear(const std::vector<double>& x, const std::vector<double>& w, int64_t t_count,
                                    int64_t n, int64_t k) {
    std::vector<double> y(static_cast<std::size_t>(t_count * n), 0.0);
    for (int64_t t = 0; t < t_count; ++t)
      for (int64_t i = 0; i < n; ++i) {
        double acc = 0;
        for (int64_t j = 0; j < k; ++j) acc += x[t * k + j] * w[i * k + j];
        y[t * n + i] = acc;
      }
    return y;
  }
  static double gelu_tanh(double x) {
    const double beta = std::sqrt(2.0 / std::numbers::pi);
    return 0.5 * x * (1.0 + std::tanh(beta * (x + 0.044715 * x * x * x)));
  }

  double loss(const Batch& b, const std::vector<int32_t>& targets) const {
    const int64_t t_count = b.num_tokens(), d = c.hidden_size, h_n = c.num_attention_heads,
                  kv_n = c.num_key_value_heads, dh = c.head_dim, f = c.intermediate_size, v = c.vocab_size;
    const int64_t qkv_w = (h_n + 2 * kv_n) * dh, half = dh / 2;
    std::vector<double> h(static_cast<std::size_t>(t_count * d));
    for (int64_t t = 0; t < t_count; ++t)
      for (int64_t j = 0; j < d; ++j) h[t * d + j] = embed[b.tokens[t] * d + j] * embed_scale;
    std::vector<int64_t> seq_of(static_cast<std::size_t>(t_count));
    for (int64_t s = 0; s < b.num_sequences(); ++s)
      for (int64_t t = b.cu_seqlens[s]; t < b.cu_seqlens[s + 1]; ++t) seq_of[t] = s;
    for (const Layer& l : layers) {
      std::vector<double> qkv = linear(rmsnorm(h, l.input_norm, t_count), l.qkv, t_count, qkv_w, d);
      for (int64_t t = 0; t < t_count; ++t) {  // RoPE on q and k heads
        for (int64_t head = 0; head < h_n + kv_n; ++head) {
          double* x = &qkv[t * qkv_w + head * dh];
          for (int64_t i = 0; i < half; ++i) {
            const double inv_freq = 1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / dh);
            const double ang = b.positions[t] * inv_freq, co = std::cos(ang), si = std::sin(ang);
            const double a = x[i], bb = x[i + half];
            x[i] = a * co - bb * si;
            x[i + half] = bb * co + a * si;
          }
        }
      }
      std::vector<double> att(static_cast<std::size_t>(t_count * h_n * dh), 0.0);
      const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
      for (int64_t t = 0; t < t_count; ++t) {
        for (int64_t head = 0; head < h_n; ++head) {
          const int64_t kvh = head / (h_n / kv_n);
          const double* q = &qkv[t * qkv_w + head * dh];
          std::vector<double> s;
          std::vector<int64_t> keys;
          for (int64_t j = b.cu_seqlens[seq_of[t]]; j <= t; ++j) {
            const double* k = &qkv[j * qkv_w + (h_n + kvh) * dh];
            double dot = 0;
            for (int64_t e = 0; e < dh; ++e) dot += q[e] * k[e];
            s.push_back(dot * scale);
            keys.push_back(j);
          }
          double mx = -1e300, z = 0;
          for (double x : s) mx = std::max(mx, x);
          for (double& x : s) z += (x = std::exp(x - mx));
          for (std::size_t n = 0; n < keys.size(); ++n) {
            const double* vv = &qkv[keys[n] * qkv_w + (h_n + kv_n + kvh) * dh];
            for (int64_t e = 0; e < dh; ++e) att[(t * h_n + head) * dh + e] += s[n] / z * vv[e];
          }
        }
      }
      const std::vector<double> o = linear(att, l.o, t_count, d, h_n * dh);
      for (std::size_t i = 0; i < h.size(); ++i) h[i] += o[i];
      const std::vector<double> fc = linear(rmsnorm(h, l.post_norm, t_count), l.fc1, t_count, 2 * f, d);
      std::vector<double> g(static_cast<std::size_t>(t_count * f));
      for (int64_t t = 0; t < t_count; ++t)
        for (int64_t j = 0; j < f; ++j) g[t * f + j] = gelu_tanh(fc[t * 2 * f + j]) * fc[t * 2 * f + f + j];
      const std::vector<double> m = linear(g, l.fc2, t_count, d, f);
      for (std::size_t i = 0; i < h.size(); ++i) h[i] += m[i];
    }
    const std::vector<double> logits = linear(rmsnorm(h, final_norm, t_count), embed, t_count, v, d);
    double sum = 0;
    int64_t n = 0;
    for (int64_t t = 0; t < t_count; ++t) {
      if (targets[t] < 0) continue;
      double mx = -1e300, z = 0;
      for (int64_t j = 0; j < v; ++j) mx = std::max(mx, logits[t * v + j]);
      for (int64_t j = 0; j < v; ++j) z += std::exp(logits[t * v + j] - mx);
      sum += mx + std::log(z) - logits[t * v + targets[t]];
      ++n;
    }
    return sum / n;
  }
};

}  // namespace tg::impl::testing
