// Reference weights: HF names, checkpoint loading and saving (through common/safetensors.h), random init.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>
#include <mutex>
#include <set>
#include <sstream>

#include "common/check.h"
#include "common/file_io.h"
#include "common/safetensors.h"
#include "reference/model.h"

namespace tg::ref {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string layer_prefix(size_t l) { return "model.layers." + std::to_string(l) + "."; }

// A host F32 tg::Tensor as an owning at::Tensor of `dtype` on `device` (torch does the F32 -> BF16 rounding,
// the same conversion HF's from_pretrained(dtype=...) applies).
at::Tensor to_torch(const Tensor& t, at::ScalarType dtype, at::Device device) {
  TG_CHECK(t.dtype() == DType::F32 && t.device() == Device::CPU, "to_torch: expected a host F32 tensor");
  const std::vector<int64_t> sizes = t.shape().vec();
  const at::Tensor view = at::from_blob(t.data(), sizes, at::TensorOptions().dtype(at::kFloat));
  return view.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
}

}  // namespace

at::ScalarType to_scalar_type(DType t) {
  switch (t) {
    case DType::F32: return at::kFloat;
    case DType::BF16: return at::kBFloat16;
    case DType::F16: return at::kHalf;
    default: TG_FAIL("reference: dtype ", t, " is not an activation dtype (expected F32, BF16 or F16)");
  }
}

DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::F32;
    case at::kBFloat16: return DType::BF16;
    case at::kHalf: return DType::F16;
    default: TG_FAIL("reference: unsupported scalar type ", c10::toString(t));
  }
}

std::vector<std::pair<std::string, at::Tensor*>> GemmaWeights::named() {
  std::vector<std::pair<std::string, at::Tensor*>> out;
  out.emplace_back("model.embed_tokens.weight", &embed_tokens);
  for (size_t l = 0; l < layers.size(); ++l) {
    LayerWeights& lw = layers[l];
    const std::string p = layer_prefix(l);
    out.emplace_back(p + "input_layernorm.weight", &lw.input_layernorm);
    out.emplace_back(p + "self_attn.q_proj.weight", &lw.q_proj);
    out.emplace_back(p + "self_attn.k_proj.weight", &lw.k_proj);
    out.emplace_back(p + "self_attn.v_proj.weight", &lw.v_proj);
    out.emplace_back(p + "self_attn.o_proj.weight", &lw.o_proj);
    out.emplace_back(p + "post_attention_layernorm.weight", &lw.post_attention_layernorm);
    out.emplace_back(p + "mlp.gate_proj.weight", &lw.gate_proj);
    out.emplace_back(p + "mlp.up_proj.weight", &lw.up_proj);
    out.emplace_back(p + "mlp.down_proj.weight", &lw.down_proj);
  }
  out.emplace_back("model.norm.weight", &norm);
  return out;
}

std::vector<std::pair<std::string, const at::Tensor*>> GemmaWeights::named() const {
  std::vector<std::pair<std::string, const at::Tensor*>> out;
  for (auto& [name, t] : const_cast<GemmaWeights*>(this)->named()) out.emplace_back(name, t);
  return out;
}

GemmaWeights GemmaWeights::to(at::ScalarType dtype, at::Device device) const {
  GemmaWeights out;
  out.layers.resize(layers.size());
  auto dst = out.named();
  const auto src = named();
  for (size_t i = 0; i < src.size(); ++i) {
    *dst[i].second = src[i].second->detach().to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
  }
  return out;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> expected_tensors(const GemmaConfig& c) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, d}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(static_cast<size_t>(l));
    out.push_back({p + "input_layernorm.weight", {d}});
    out.push_back({p + "self_attn.q_proj.weight", {c.q_dim(), d}});
    out.push_back({p + "self_attn.k_proj.weight", {c.kv_dim(), d}});
    out.push_back({p + "self_attn.v_proj.weight", {c.kv_dim(), d}});
    out.push_back({p + "self_attn.o_proj.weight", {d, c.q_dim()}});
    out.push_back({p + "post_attention_layernorm.weight", {d}});
    out.push_back({p + "mlp.gate_proj.weight", {f, d}});
    out.push_back({p + "mlp.up_proj.weight", {f, d}});
    out.push_back({p + "mlp.down_proj.weight", {d, f}});
  }
  out.push_back({"model.norm.weight", {d}});
  return out;
}

GemmaConfig load_config(const std::filesystem::path& dir) { return GemmaConfig::from_file(dir / "config.json"); }

GemmaWeights load_weights(const std::filesystem::path& dir, const GemmaConfig& cfg, at::ScalarType dtype,
                          at::Device device) {
  const CheckpointReader reader(dir);
  const auto expected = expected_tensors(cfg);

  // Collect every problem first, so one run names all of them.
  std::vector<std::string> problems;
  std::set<std::string> expected_names;
  for (const auto& [name, shape] : expected) {
    expected_names.insert(name);
    if (!reader.contains(name)) {
      problems.push_back("missing tensor " + name + " (expected shape " + shape_str(shape) + ")");
    } else if (reader.entry(name).shape != shape) {
      problems.push_back("tensor " + name + ": expected shape " + shape_str(shape) + ", got " +
                         shape_str(reader.entry(name).shape));
    }
  }
  for (const std::string& name : reader.names()) {
    if (expected_names.count(name) || name == "lm_head.weight") continue;
    problems.push_back("unexpected tensor " + name + " (not part of a Gemma 1 model with this config)");
  }
  if (reader.contains("lm_head.weight") &&
      reader.entry("lm_head.weight").shape != std::vector<int64_t>{cfg.vocab_size, cfg.hidden_size}) {
    problems.push_back("tensor lm_head.weight: expected shape " +
                       shape_str({cfg.vocab_size, cfg.hidden_size}) + " (tied to embed_tokens), got " +
                       shape_str(reader.entry("lm_head.weight").shape));
  }
  if (!problems.empty()) {
    std::ostringstream msg;
    msg << "checkpoint " << dir.string() << " does not match its config (" << problems.size() << " problem"
        << (problems.size() > 1 ? "s" : "") << "):";
    for (const auto& p : problems) msg << "\n  " << p;
    TG_FAIL(msg.str());
  }

  // Every tensor is read as F32 (exact for BF16 and F32 files) and converted by torch.
  GemmaWeights w;
  w.layers.resize(static_cast<size_t>(cfg.num_hidden_layers));
  for (auto& [name, t] : w.named()) *t = to_torch(reader.load(name, DType::F32), dtype, device);

  // A tied checkpoint may still carry lm_head.weight; it must then be the embedding itself.
  if (reader.contains("lm_head.weight")) {
    const Tensor lm = reader.load("lm_head.weight", DType::F32);
    const Tensor emb = reader.load("model.embed_tokens.weight", DType::F32);
    TG_CHECK(std::memcmp(lm.data(), emb.data(), lm.nbytes()) == 0, "checkpoint ", dir.string(),
             ": lm_head.weight differs from model.embed_tokens.weight; Gemma ties them and an untied lm_head "
             "is not supported");
  }
  return w;
}

GemmaWeights random_weights(const GemmaConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device,
                            const RandomInit& init) {
  cfg.validate();
  const bool draw_on_device = init.on_device && !device.is_cpu();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  if (draw_on_device) {
    gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  }
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(draw_on_device ? device : at::Device(at::kCPU));
  GemmaWeights w;
  w.layers.resize(static_cast<size_t>(cfg.num_hidden_layers));
  const auto shapes = expected_tensors(cfg);
  auto named = w.named();
  TG_CHECK_EQ(named.size(), shapes.size(), "random_weights: tensor count");
  for (size_t i = 0; i < named.size(); ++i) {
    const auto& [name, shape] = shapes[i];
    TG_CHECK_EQ(named[i].first, name, "random_weights: tensor order");
    const bool is_norm = shape.size() == 1;
    at::Tensor t = at::empty(shape, f32);
    if (is_norm) {
      if (init.norm_std > 0) {
        t.normal_(0.0, init.norm_std, gen);
      } else {
        t.zero_();  // GemmaPreTrainedModel._init_weights: RMSNorm weights are zeros
      }
    } else {
      t.normal_(0.0, init.std, gen);
    }
    if (name == "model.embed_tokens.weight" && init.zero_pad_row && cfg.pad_token_id >= 0) {
      t[cfg.pad_token_id].zero_();  // nn.Embedding(padding_idx) init
    }
    *named[i].second = t.to(device, dtype);
  }
  return w;
}

void save_checkpoint(const std::filesystem::path& dir, const GemmaConfig& cfg, const GemmaWeights& w,
                     DType file_dtype, uint64_t max_shard_bytes) {
  TG_CHECK(file_dtype == DType::BF16 || file_dtype == DType::F32, "save_checkpoint: file dtype must be BF16 or "
           "F32, got ", file_dtype);
  std::filesystem::create_directories(dir);
  const at::ScalarType st = to_scalar_type(file_dtype);
  std::vector<at::Tensor> host;  // keeps the data alive until written
  std::vector<std::pair<std::string, TensorView>> views;
  for (const auto& [name, t] : w.named()) {
    host.push_back(t->detach().to(at::kCPU, st).contiguous());
    const at::Tensor& h = host.back();
    views.emplace_back(name, TensorView(h.data_ptr(), file_dtype, Shape(std::span<const int64_t>(h.sizes().data(),
                                                                                                   h.sizes().size()))));
  }
  GemmaConfig out_cfg = cfg;
  out_cfg.torch_dtype = file_dtype == DType::BF16 ? "bfloat16" : "float32";
  write_checkpoint(dir, views, max_shard_bytes);
  write_file_atomic(dir / "config.json", out_cfg.to_json_text());
}

}  // namespace tg::ref
