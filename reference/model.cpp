// The reference forward pass, loss and KV cache. Every function names the HF code it mirrors
// (transformers 5.17, models/gemma/modeling_gemma.py unless stated); the same ATen ops are used in the same
// order and dtypes so that rounding happens at the same points as in HF.
#include "reference/model.h"

#include <torch/version.h>

#include <cmath>
#include <limits>

#include "common/check.h"

// at::scaled_dot_product_attention with a `scale` argument exists from LibTorch 2.1 on.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define TG_REF_HAVE_SDPA 1
#else
#define TG_REF_HAVE_SDPA 0
#endif
// ... and its enable_gqa argument from 2.5 on.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
#define TG_REF_HAVE_SDPA_GQA 1
#else
#define TG_REF_HAVE_SDPA_GQA 0
#endif

namespace tg::ref {

bool sdpa_available() { return TG_REF_HAVE_SDPA != 0; }

namespace {

// torch.finfo(dtype).min: the finite "masked" value of HF's eager mask.
double lowest_value(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return std::numeric_limits<float>::lowest();
    case at::kBFloat16: return -3.3895313892515355e38;  // finfo(torch.bfloat16).min
    case at::kHalf: return -65504.0;
    default: TG_FAIL("reference: unsupported activation dtype ", c10::toString(dtype));
  }
}

// BF16 products on the CPU. LibTorch 1.13's CPU BF16 matmul accumulates in BF16 for some shapes (the M=1
// batched products of a decode step are off by several ulps, which the softmax then amplifies), unlike cuBLAS
// and torch 2.x's oneDNN path, which accumulate in FP32 and round once. On the CPU the product is therefore
// computed in FP32 and rounded once here: the contract of a correct BF16 GEMM, whatever the LibTorch.
bool fp32_gemm(const at::Tensor& a) { return a.device().is_cpu() && a.scalar_type() != at::kFloat; }

at::Tensor mm_linear(const at::Tensor& x, const at::Tensor& w) {
  if (!fp32_gemm(x)) return at::linear(x, w);
  return at::linear(x.to(at::kFloat), w.to(at::kFloat)).to(x.scalar_type());
}

at::Tensor mm_matmul(const at::Tensor& a, const at::Tensor& b) {
  if (!fp32_gemm(a)) return at::matmul(a, b);
  return at::matmul(a.to(at::kFloat), b.to(at::kFloat)).to(a.scalar_type());
}

// HF's sdpa_attention_forward (integrations/sdpa_attention.py): without a mask (causal, no padding, no cache)
// is_causal=True and, for head_dim <= 256, the kv heads go in unexpanded with enable_gqa (where LibTorch has
// it); otherwise repeat_kv and the additive mask. q [B, H, T, Dh], k/v [B, Hkv, S, Dh] -> [B, H, T, Dh].
at::Tensor sdpa_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                          bool is_causal, double scaling, int64_t n_rep) {
#if TG_REF_HAVE_SDPA
  if (is_causal && k.size(-1) <= 256) {  // HF's use_gqa_in_sdpa: no mask and head_dim <= 256
#if TG_REF_HAVE_SDPA_GQA
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, scaling, /*enable_gqa=*/n_rep > 1);
#else
    return at::scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), {}, 0.0, true, scaling);
#endif
  }
  if (is_causal) {
    return at::scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), {}, 0.0, true, scaling);
  }
  return at::scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), mask, 0.0, false, scaling);
#else
  (void)q, (void)k, (void)v, (void)mask, (void)is_causal, (void)scaling, (void)n_rep;
  TG_FAIL("reference: at::scaled_dot_product_attention needs LibTorch >= 2.1");
#endif
}

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

// ---- Building blocks ------------------------------------------------------------------------------------

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  // GemmaRMSNorm.forward: _norm(x.float()) * (1.0 + weight.float()), then type_as(x).
  const at::Tensor xf = x.to(at::kFloat);
  at::Tensor out = xf * at::rsqrt(xf.pow(2).mean({-1}, /*keepdim=*/true) + eps);
  out = out * (w.to(at::kFloat) + 1.0);
  return out.to(x.scalar_type());
}

at::Tensor rope_inv_freq(int64_t head_dim, double theta, at::Device device) {
  // compute_default_rope_parameters: 1.0 / (base ** (arange(0, dim, 2, dtype=float) / dim)), on the CPU,
  // then moved (HF computes it at construction and moves the buffer with the model).
  const at::Tensor exponent = at::arange(0, head_dim, 2, at::TensorOptions().dtype(at::kFloat)) / head_dim;
  const at::Tensor inv_freq = at::reciprocal(at::pow(at::Scalar(theta), exponent));
  return inv_freq.to(device);
}

std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& position_ids,
                                               at::ScalarType dtype) {
  // GemmaRotaryEmbedding.forward (fp32, autocast off): freqs = (inv_freq[None, :, None] @ pos[:, None, :])^T,
  // emb = cat(freqs, freqs), cos/sin * attention_scaling (1.0 for the default rope), cast to x.dtype.
  const int64_t b = position_ids.size(0);
  const at::Tensor inv = inv_freq.unsqueeze(0).unsqueeze(-1).expand({b, -1, 1}).to(at::kFloat);  // [B, Dh/2, 1]
  const at::Tensor pos = position_ids.unsqueeze(1).to(at::kFloat);                               // [B, 1, T]
  const at::Tensor freqs = at::matmul(inv, pos).transpose(1, 2);                                  // [B, T, Dh/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1);                                             // [B, T, Dh]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // apply_rotary_pos_emb with unsqueeze_dim=1; rotate_half(x) = cat(-x2, x1) (split-half pairs (i, i + Dh/2)).
  const at::Tensor c = cos.unsqueeze(1);
  const at::Tensor s = sin.unsqueeze(1);
  const int64_t half = x.size(-1) / 2;
  const at::Tensor x1 = x.narrow(-1, 0, half);
  const at::Tensor x2 = x.narrow(-1, half, half);
  const at::Tensor rotated = at::cat({-x2, x1}, -1);
  return x * c + rotated * s;
}

at::Tensor repeat_kv(const at::Tensor& x, int64_t n_rep) {
  if (n_rep == 1) return x;
  const int64_t b = x.size(0), hkv = x.size(1), s = x.size(2), dh = x.size(3);
  return x.unsqueeze(2).expand({b, hkv, n_rep, s, dh}).reshape({b, hkv * n_rep, s, dh});
}

at::Tensor additive_causal_mask(int64_t batch, int64_t q_len, int64_t past, const at::Tensor& attention_mask,
                                at::ScalarType dtype, at::Device device) {
  // masking_utils.sdpa_mask (causal_mask_function and padding_mask_function) + eager_mask's bool -> float.
  const int64_t kv_len = past + q_len;
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor q_idx = at::arange(q_len, long_opts) + past;  // cache positions of the queries
  const at::Tensor kv_idx = at::arange(kv_len, long_opts);
  at::Tensor allowed = kv_idx.unsqueeze(0).le(q_idx.unsqueeze(1)).unsqueeze(0);  // [1, T, S]
  if (attention_mask.defined()) {
    TG_CHECK(attention_mask.dim() == 2 && attention_mask.size(0) == batch && attention_mask.size(1) == kv_len,
             "reference forward: attention_mask must be [B, cache length + T] = [", batch, ", ", kv_len,
             "], got ", shape_str(attention_mask.sizes()));
    allowed = allowed.logical_and(attention_mask.to(device).to(at::kBool).unsqueeze(1));  // [B, T, S]
  }
  allowed = allowed.expand({batch, q_len, kv_len}).unsqueeze(1);  // [B, 1, T, S]
  return at::zeros({batch, 1, q_len, kv_len}, at::TensorOptions().dtype(dtype).device(device))
      .masked_fill_(allowed.logical_not(), lowest_value(dtype));
}

at::Tensor positions_from_mask(const at::Tensor& attention_mask) {
  // GenerationMixin._prepare_position_ids_for_generation (5.17): cumsum(-1) - 1, masked_fill(mask == 0, 0).
  const at::Tensor m = attention_mask.to(at::kLong);
  return (m.cumsum(-1) - 1).masked_fill(m.eq(0), 0);
}

// ---- KV cache ---------------------------------------------------------------------------------------------

KVCache KVCache::allocate(const GemmaConfig& cfg, int64_t batch, int64_t capacity, at::ScalarType dtype,
                          at::Device device) {
  TG_CHECK(batch > 0 && capacity > 0, "KVCache: batch and capacity must be positive, got ", batch, " and ",
           capacity);
  KVCache c;
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    c.k.push_back(at::zeros({batch, cfg.num_key_value_heads, capacity, cfg.head_dim}, opts));
    c.v.push_back(at::zeros({batch, cfg.num_key_value_heads, capacity, cfg.head_dim}, opts));
  }
  return c;
}

void KVCache::reorder(const at::Tensor& rows) {
  for (size_t l = 0; l < k.size(); ++l) {
    const at::Tensor r = rows.to(k[l].device(), at::kLong);
    k[l] = k[l].index_select(0, r);
    v[l] = v[l].index_select(0, r);
  }
}

// ---- The model --------------------------------------------------------------------------------------------

GemmaModel::GemmaModel(GemmaConfig cfg, GemmaWeights weights, AttentionImpl attention)
    : cfg_(std::move(cfg)), w_(std::move(weights)), attention_(attention) {
  cfg_.validate();
  TG_CHECK(static_cast<int64_t>(w_.layers.size()) == cfg_.num_hidden_layers, "GemmaModel: config has ",
           cfg_.num_hidden_layers, " layers, weights have ", w_.layers.size());
  TG_CHECK(attention_ != AttentionImpl::Sdpa || sdpa_available(),
           "GemmaModel: attention=sdpa needs LibTorch >= 2.1 (at::scaled_dot_product_attention); this is ",
           TORCH_VERSION_MAJOR, ".", TORCH_VERSION_MINOR);
  TG_CHECK(cfg_.hidden_activation == "gelu_pytorch_tanh" || cfg_.hidden_activation == "gelu_tanh",
           "GemmaModel: only the tanh GELU is implemented (Gemma was trained with it); config asks for '",
           cfg_.hidden_activation, "'");
  // FP32 is the debug precision, so an FP32 model on CUDA pins cuBLAS to IEEE FP32 products. TF32 (off by
  // default in LibTorch, but a caller or TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 can turn it on) rounds every
  // product's inputs to 10 mantissa bits: ~1e-4 relative on the logits at Gemma's init scale instead of ~1e-7.
  // Process-wide on purpose: a training step's backward runs on autograd's device threads, which a
  // thread-local at::NoTF32Guard would not reach.
  if (w_.device().is_cuda() && w_.dtype() == at::kFloat) at::globalContext().setAllowTF32CuBLAS(false);
  inv_freq_ = rope_inv_freq(cfg_.head_dim, cfg_.rope_theta, w_.device());
  // GemmaTextScaledWordEmbedding: embedding(ids) * tensor(sqrt(hidden)) (a float32 0-d tensor) cast to the
  // weight dtype, so sqrt(2048) becomes 45.25 in BF16 before the multiply. Made on the device once (a host
  // scalar copied per forward would synchronise).
  const float normalizer = static_cast<float>(std::sqrt(static_cast<double>(cfg_.hidden_size)));
  normalizer_ = at::full({}, normalizer, at::TensorOptions().dtype(at::kFloat).device(w_.device())).to(w_.dtype());
}

at::Tensor GemmaModel::forward(const ForwardArgs& a) const {
  TG_CHECK(a.input_ids.defined() && a.input_ids.dim() == 2, "reference forward: input_ids must be [B, T]");
  const int64_t batch = a.input_ids.size(0);
  const int64_t q_len = a.input_ids.size(1);
  TG_CHECK(batch > 0 && q_len > 0, "reference forward: empty input_ids ", shape_str(a.input_ids.sizes()));
  const int64_t past = a.cache ? a.cache->length : 0;
  const int64_t kv_len = past + q_len;
  const at::Device dev = device();
  const at::ScalarType dt = dtype();
  const int64_t n_heads = cfg_.num_attention_heads, dh = cfg_.head_dim;
  const int64_t n_rep = cfg_.group_size();
  if (a.cache) {
    TG_CHECK(a.cache->batch() == batch, "reference forward: cache batch ", a.cache->batch(), " != input batch ",
             batch);
    TG_CHECK(kv_len <= a.cache->capacity(), "reference forward: cache capacity ", a.cache->capacity(),
             " < cache length ", past, " + ", q_len, " new tokens");
    TG_CHECK(a.cache->k[0].scalar_type() == dt, "reference forward: cache dtype must be the activation dtype");
  }
  TG_CHECK(a.logits_to_keep >= 0 && a.logits_to_keep <= q_len, "reference forward: logits_to_keep ",
           a.logits_to_keep, " not in [0, T=", q_len, "]");

  const at::Tensor ids = a.input_ids.to(dev, at::kLong);
  // GemmaModel.forward: position_ids default = arange(T) + past_seen_tokens, shape [1, T].
  at::Tensor pos;
  if (a.position_ids.defined()) {
    TG_CHECK(a.position_ids.dim() == 2 && a.position_ids.size(1) == q_len &&
                 (a.position_ids.size(0) == batch || a.position_ids.size(0) == 1),
             "reference forward: position_ids must be [B, T] or [1, T], got ", shape_str(a.position_ids.sizes()));
    pos = a.position_ids.to(dev, at::kLong);
  } else {
    pos = (at::arange(q_len, at::TensorOptions().dtype(at::kLong).device(dev)) + past).unsqueeze(0);
  }

  // create_causal_mask. With SDPA, no cache and no padding, HF passes no mask and is_causal=True instead.
  const bool sdpa = attention_ == AttentionImpl::Sdpa;
  const bool sdpa_is_causal = sdpa && past == 0 && !a.attention_mask.defined();
  at::Tensor mask;
  if (!sdpa_is_causal) mask = additive_causal_mask(batch, q_len, past, a.attention_mask, dt, dev);

  at::Tensor h = at::embedding(w_.embed_tokens, ids, cfg_.pad_token_id) * normalizer_;  // [B, T, D]

  const auto [cos, sin] = rope_cos_sin(inv_freq_, pos, dt);  // [B or 1, T, Dh]
  const double scaling = std::pow(static_cast<double>(dh), -0.5);
  const double eps = cfg_.rms_norm_eps;

  if (a.taps) *a.taps = Taps{};
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    const LayerWeights& lw = w_.layers[l];
    if (a.taps) a.taps->layer_inputs.push_back(h.detach());

    // GemmaDecoderLayer: h = h + attn(input_layernorm(h)); h = h + mlp(post_attention_layernorm(h)).
    at::Tensor residual = h;
    at::Tensor x = rms_norm(h, lw.input_layernorm, eps);

    // GemmaAttention.forward
    at::Tensor q = mm_linear(x, lw.q_proj).view({batch, q_len, -1, dh}).transpose(1, 2);  // [B, H, T, Dh]
    at::Tensor k = mm_linear(x, lw.k_proj).view({batch, q_len, -1, dh}).transpose(1, 2);  // [B, Hkv, T, Dh]
    at::Tensor v = mm_linear(x, lw.v_proj).view({batch, q_len, -1, dh}).transpose(1, 2);  // [B, Hkv, T, Dh]
    q = apply_rope(q, cos, sin);
    k = apply_rope(k, cos, sin);
    if (a.cache) {
      a.cache->k[l].narrow(2, past, q_len).copy_(k);
      a.cache->v[l].narrow(2, past, q_len).copy_(v);
      k = a.cache->k[l].narrow(2, 0, kv_len);  // [B, Hkv, S, Dh]
      v = a.cache->v[l].narrow(2, 0, kv_len);
    }
    at::Tensor attn;  // [B, H, T, Dh]
    if (!sdpa) {
      // eager_attention_forward: repeat_kv, scores in the activation dtype, + mask, softmax in fp32, cast back.
      const at::Tensor k_rep = repeat_kv(k, n_rep);  // [B, H, S, Dh]
      const at::Tensor v_rep = repeat_kv(v, n_rep);
      at::Tensor scores = mm_matmul(q, k_rep.transpose(2, 3)) * scaling;  // [B, H, T, S]
      scores = scores + mask;
      const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(dt);
      attn = mm_matmul(probs, v_rep);
    } else {
      attn = sdpa_attention(q, k, v, mask, sdpa_is_causal, scaling, n_rep);
    }
    attn = attn.transpose(1, 2).contiguous().reshape({batch, q_len, n_heads * dh});
    h = residual + mm_linear(attn, lw.o_proj);

    // GemmaMLP: down(act(gate(x)) * up(x)), act = gelu_pytorch_tanh.
    residual = h;
    x = rms_norm(h, lw.post_attention_layernorm, eps);
    const at::Tensor gated = at::gelu(mm_linear(x, lw.gate_proj), "tanh") * mm_linear(x, lw.up_proj);
    h = residual + mm_linear(gated, lw.down_proj);

    if (a.taps) a.taps->layer_outputs.push_back(h.detach());
  }
  h = rms_norm(h, w_.norm, eps);
  if (a.taps) a.taps->final_hidden = h.detach();
  if (a.cache) a.cache->length = kv_len;
  if (!a.compute_logits) return h;

  // GemmaForCausalLM.forward: lm_head(hidden_states[:, -logits_to_keep:, :]), tied to embed_tokens.
  if (a.logits_to_keep > 0) h = h.narrow(1, q_len - a.logits_to_keep, a.logits_to_keep);
  at::Tensor logits = mm_linear(h, w_.embed_tokens);
  if (a.taps) a.taps->logits = logits.detach();
  return logits;
}

// ---- Loss ---------------------------------------------------------------------------------------------------

at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels, double num_items) {
  TG_CHECK(logits.dim() == 3 && labels.dim() == 2 && logits.size(0) == labels.size(0) &&
               logits.size(1) == labels.size(1),
           "causal_lm_loss: logits [B, T, V] and labels [B, T] expected, got ", shape_str(logits.sizes()), " and ",
           shape_str(labels.sizes()));
  // loss_utils.ForCausalLMLoss: upcast, pad labels right with -100, shift left, flatten, fixed_cross_entropy.
  const int64_t vocab = logits.size(2);
  const at::Tensor lf = logits.to(at::kFloat).reshape({-1, vocab});
  const at::Tensor padded = at::constant_pad_nd(labels.to(at::kLong), {0, 1}, -100);
  const at::Tensor shifted = padded.narrow(1, 1, labels.size(1)).contiguous().view({-1}).to(lf.device());
  if (num_items < 0) return at::cross_entropy_loss(lf, shifted, {}, at::Reduction::Mean, -100, 0.0);
  return at::cross_entropy_loss(lf, shifted, {}, at::Reduction::Sum, -100, 0.0) / num_items;
}

int64_t count_loss_targets(const at::Tensor& labels) {
  TG_CHECK(labels.device().is_cpu() && labels.dim() == 2, "count_loss_targets: labels must be [B, T] on the CPU");
  if (labels.size(1) < 2) return 0;
  return labels.narrow(1, 1, labels.size(1) - 1).ne(-100).sum().item<int64_t>();
}

}  // namespace tg::ref
