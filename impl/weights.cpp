// Weights of the impl model: HF name mapping, fused layout, checkpoint load / save, random init, FP8 copies.
#include "impl/weights.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <set>

#include "common/check.h"
#include "common/file_io.h"
#include "common/numeric.h"
#include "common/safetensors.h"
#include "impl/buffers.h"
#include "impl/scaling.h"
#include "kernels/convert/convert.h"
#include "kernels/quantize/block_layout.h"
#include "kernels/quantize/quantize.h"
#include "kernels/random/normal_stream.h"
#include "kernels/random/random.h"
#include "kernels/recipe/recipe.h"
#include "kernels/recipe/scale_math.h"

namespace tg::impl {

namespace {

std::string layer_prefix(int64_t l) { return "model.layers." + std::to_string(l) + "."; }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Which HF tensor fills which rows of which fused weight. `rows_begin` is the first row inside the fused
// tensor; norms and the embedding map whole (rows_begin 0).
enum class Slot : uint8_t { kEmbed, kFinalNorm, kInputNorm, kPostNorm, kQkv, kO, kFc1, kFc2 };
struct HfTensor {
  std::string name;
  std::vector<int64_t> shape;
  Slot slot;
  int64_t layer = -1;
  int64_t rows_begin = 0;
};

// The HF tensors of a config, in a fixed order (the random-init stream ids are positions in this list).
std::vector<HfTensor> hf_tensors(const GemmaConfig& c) {
  const int64_t d = c.hidden_size, f = c.intermediate_size, q = c.q_dim(), kv = c.kv_dim();
  std::vector<HfTensor> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, d}, Slot::kEmbed});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    out.push_back({p + "input_layernorm.weight", {d}, Slot::kInputNorm, l});
    out.push_back({p + "self_attn.q_proj.weight", {q, d}, Slot::kQkv, l, 0});
    out.push_back({p + "self_attn.k_proj.weight", {kv, d}, Slot::kQkv, l, q});
    out.push_back({p + "self_attn.v_proj.weight", {kv, d}, Slot::kQkv, l, q + kv});
    out.push_back({p + "self_attn.o_proj.weight", {d, q}, Slot::kO, l});
    out.push_back({p + "post_attention_layernorm.weight", {d}, Slot::kPostNorm, l});
    out.push_back({p + "mlp.gate_proj.weight", {f, d}, Slot::kFc1, l, 0});
    out.push_back({p + "mlp.up_proj.weight", {f, d}, Slot::kFc1, l, f});
    out.push_back({p + "mlp.down_proj.weight", {d, f}, Slot::kFc2, l});
  }
  out.push_back({"model.norm.weight", {d}, Slot::kFinalNorm});
  return out;
}

LinearWeight make_linear(std::string name, int64_t n, int64_t k, Device device) {
  LinearWeight w;
  w.name = std::move(name);
  w.out_features = n;
  w.in_features = k;
  w.master = Tensor::empty(DType::BF16, {n, k}, device);
  w.master_view = w.master.view();
  return w;
}

// Empty fused tensors of one layer (BF16 masters), filled by the loader or the random init.
LayerWeights make_layer(const GemmaConfig& c, int64_t l, Device device) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  const std::string p = "layers." + std::to_string(l) + ".";
  LayerWeights lw;
  lw.input_norm = Tensor::empty(DType::BF16, {d}, device);
  lw.qkv = make_linear(p + "qkv", c.q_dim() + 2 * c.kv_dim(), d, device);
  lw.o = make_linear(p + "o", d, c.q_dim(), device);
  lw.post_attention_norm = Tensor::empty(DType::BF16, {d}, device);
  lw.fc1 = make_linear(p + "fc1", 2 * f, d, device);
  lw.fc2 = make_linear(p + "fc2", d, f, device);
  return lw;
}

// The destination view of an HF tensor inside the fused weights.
TensorView destination(const ModelWeights& w, const HfTensor& t) {
  switch (t.slot) {
    case Slot::kEmbed:
      return w.embed.view();
    case Slot::kFinalNorm:
      return w.final_norm.view();
    case Slot::kInputNorm:
      return w.layers[static_cast<std::size_t>(t.layer)].input_norm.view();
    case Slot::kPostNorm:
      return w.layers[static_cast<std::size_t>(t.layer)].post_attention_norm.view();
    case Slot::kQkv:
      return w.layers[static_cast<std::size_t>(t.layer)].qkv.master.view().slice_rows(t.rows_begin,
                                                                                      t.rows_begin + t.shape[0]);
    case Slot::kO:
      return w.layers[static_cast<std::size_t>(t.layer)].o.master.view();
    case Slot::kFc1:
      return w.layers[static_cast<std::size_t>(t.layer)].fc1.master.view().slice_rows(t.rows_begin,
                                                                                      t.rows_begin + t.shape[0]);
    case Slot::kFc2:
      return w.layers[static_cast<std::size_t>(t.layer)].fc2.master.view();
  }
  TG_FAIL("unreachable");
}

void check_options(const GemmaConfig& c, const WeightOptions& o) {
  c.validate("impl weights");
  TG_CHECK(!(o.storage == WeightStorage::kFp8Only && !o.recipe.is_fp8()),
           "impl weights: FP8-only storage needs an FP8 recipe, got '", o.recipe.name(), "'");
  TG_CHECK(!(o.fp8_lm_head && !o.recipe.is_fp8()), "impl weights: an FP8 lm_head needs an FP8 recipe, got '",
           o.recipe.name(), "'");
  TG_CHECK(!(o.storage == WeightStorage::kFp8Only && o.columnwise),
           "impl weights: FP8-only storage is for inference and keeps no transposed (column-wise) copies");
}

// FP8 copies for one layer (and, under kFp8Only, the masters dropped right away to keep the peak low).
void finish_layer(LayerWeights& lw, const WeightOptions& o) {
  if (!o.recipe.is_fp8()) return;
  for (LinearWeight* lin : {&lw.qkv, &lw.o, &lw.fc1, &lw.fc2}) {
    lin->fp8 = quantize_weight(lin->master_view, o.recipe, o.columnwise, o.stream);
    lin->has_fp8 = true;
    if (o.storage == WeightStorage::kFp8Only) {
      lin->master = Tensor();
      lin->master_view = TensorView();
    }
  }
}

void finish_model(ModelWeights& w, const WeightOptions& o) {
  w.lm_head.name = "lm_head";
  w.lm_head.out_features = w.config.vocab_size;
  w.lm_head.in_features = w.config.hidden_size;
  w.lm_head.master_view = w.embed.view();  // tied
  if (o.fp8_lm_head) {
    w.lm_head.fp8 = quantize_weight(w.embed.view(), o.recipe, o.columnwise, o.stream);
    w.lm_head.has_fp8 = true;
  }
}

ModelWeights empty_model(const GemmaConfig& c, const WeightOptions& o) {
  ModelWeights w;
  w.config = c;
  w.device = o.device;
  w.storage = o.storage;
  w.recipe = o.recipe;
  w.embed = Tensor::empty(DType::BF16, {c.vocab_size, c.hidden_size}, o.device);
  w.final_norm = Tensor::empty(DType::BF16, {c.hidden_size}, o.device);
  return w;
}

}  // namespace

const char* weight_storage_name(WeightStorage s) { return s == WeightStorage::kMaster ? "master" : "fp8-only"; }

std::size_t ModelWeights::bytes() const {
  std::size_t n = embed.nbytes() + final_norm.nbytes();
  auto add_view = [&](const TensorView& v) {
    if (!v.empty()) n += v.nbytes();
  };
  auto add_linear = [&](const LinearWeight& w) {
    if (w.master.data()) n += w.master.nbytes();
    if (w.has_fp8) {
      const Fp8View& v = w.fp8_view();
      add_view(v.data);
      add_view(v.scale_inv);
      add_view(v.columnwise_data);
      if (v.columnwise_scale_inv.data != v.scale_inv.data) add_view(v.columnwise_scale_inv);
    }
  };
  for (const LayerWeights& l : layers) {
    n += l.input_norm.nbytes() + l.post_attention_norm.nbytes();
    for (const LinearWeight* w : {&l.qkv, &l.o, &l.fc1, &l.fc2}) add_linear(*w);
  }
  add_linear(lm_head);
  return n;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> hf_tensor_shapes(const GemmaConfig& cfg) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (const HfTensor& t : hf_tensors(cfg)) out.emplace_back(t.name, t.shape);
  return out;
}

GemmaConfig load_config(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "config.json";
  TG_CHECK(std::filesystem::exists(path), "impl: '", dir.string(), "' is not an HF checkpoint directory (no ",
           "config.json)");
  return GemmaConfig::from_file(path);
}

Fp8Tensor quantize_weight(const TensorView& master, const Recipe& recipe, bool columnwise, Stream stream) {
  TG_CHECK(recipe.is_fp8(), "quantize_weight: the recipe '", recipe.name(), "' has no FP8 weights");
  check_dtype(master, DType::BF16, "quantize_weight(master)");
  TG_CHECK(master.ndim() == 2, "quantize_weight: expected a 2-D [N, K] weight, got ", master.describe());
  const int64_t n = master.shape[0], k = master.shape[1];
  const DType fp8 = recipe.fwd_dtype();
  Fp8Tensor t = recipe.kind == RecipeKind::kBlock
                    ? kernels::make_block_fp8_tensor(ScalingMode::kBlock128x128, fp8, n, k, true, columnwise,
                                                     master.device)
                    : Fp8Tensor::per_tensor(fp8, n, k, true, columnwise, master.device);
  requantize_weight(master, t.view(), recipe, stream);
  return t;
}

void requantize_weight(const TensorView& master, const Fp8View& out, const Recipe& recipe, Stream stream) {
  TG_CHECK(recipe.is_fp8(), "requantize_weight: the recipe '", recipe.name(), "' has no FP8 weights");
  if (recipe.kind == RecipeKind::kBlock) {
    TG_CHECK(out.mode == ScalingMode::kBlock128x128, "requantize_weight: block scaling needs a 128x128 copy, got ",
             scaling_mode_name(out.mode));
    kernels::quantize(master, out, kernels::BlockQuantOptions{recipe.power_2_scale, 0.0f}, stream);
    return;
  }
  TG_CHECK(out.mode == ScalingMode::kPerTensor && !out.amax.empty() && !out.scale.empty(),
           "requantize_weight: per-tensor scaling needs a per-tensor copy with its own scale and amax");
  kernels::compute_amax(master, out.amax, stream);
  kernels::ScaleRule rule;
  if (recipe.kind == RecipeKind::kCurrent) {
    rule = CurrentScalingState(recipe).rule(ScalingDir::kForward);
  } else {  // delayed: fp8_max * 2^-margin / amax, what the history gives an unchanged weight
    rule.fp8_max = kernels::delayed_scaled_max(fp8_max(recipe.fwd_dtype()), recipe.margin);
  }
  kernels::current_scaling_scale(out.amax, out.scale, TensorView{}, rule, stream);
  Fp8View cast = out;
  cast.amax = TensorView{};  // already known
  kernels::quantize(master, cast, {}, stream);
}

void refresh_fp8_weights(ModelWeights& w, Stream stream) {
  TG_CHECK(w.storage == WeightStorage::kMaster, "refresh_fp8_weights: FP8-only weights have no BF16 master");
  auto one = [&](LinearWeight& lin) {
    if (lin.has_fp8) requantize_weight(lin.master_view, lin.fp8_view(), w.recipe, stream);
  };
  for (LayerWeights& lw : w.layers) {
    for (LinearWeight* lin : {&lw.qkv, &lw.o, &lw.fc1, &lw.fc2}) one(*lin);
  }
  one(w.lm_head);
}

void quantize_weights(ModelWeights& w, const Recipe& recipe, bool fp8_lm_head, bool columnwise, Stream stream) {
  TG_CHECK(w.storage == WeightStorage::kMaster, "quantize_weights: FP8-only weights have no BF16 master to ",
           "quantize from; load the model with master storage");
  WeightOptions o;
  o.device = w.device;
  o.recipe = recipe;
  o.fp8_lm_head = fp8_lm_head;
  o.columnwise = columnwise;
  o.stream = stream;
  check_options(w.config, o);
  for (LayerWeights& lw : w.layers) {
    for (LinearWeight* lin : {&lw.qkv, &lw.o, &lw.fc1, &lw.fc2}) {
      lin->fp8 = Fp8Tensor();
      lin->has_fp8 = false;
    }
    finish_layer(lw, o);
  }
  w.lm_head.fp8 = Fp8Tensor();
  w.lm_head.has_fp8 = false;
  finish_model(w, o);
  w.recipe = recipe;
}

ModelWeights load_weights(const std::filesystem::path& dir, const WeightOptions& opts) {
  const GemmaConfig cfg = load_config(dir);
  check_options(cfg, opts);
  const CheckpointReader reader(dir);
  const std::vector<HfTensor> expected = hf_tensors(cfg);

  // Collect every problem first, so that one run names all of them.
  std::vector<std::string> problems;
  std::set<std::string> expected_names;
  for (const HfTensor& t : expected) {
    expected_names.insert(t.name);
    if (!reader.contains(t.name)) {
      problems.push_back("missing tensor " + t.name + " (expected shape " + shape_str(t.shape) + ")");
      continue;
    }
    const SafetensorsEntry& e = reader.entry(t.name);
    if (e.shape != t.shape) {
      problems.push_back("tensor " + t.name + ": expected shape " + shape_str(t.shape) + ", got " + shape_str(e.shape));
    }
    if (!(e.dtype == DType::BF16 || e.dtype == DType::F32 || e.dtype == DType::F16)) {
      problems.push_back("tensor " + t.name + ": dtype " + e.dtype_name + " is not a weight dtype (BF16, F16, F32)");
    }
  }
  for (const std::string& name : reader.names()) {
    if (expected_names.count(name)) continue;
    if (name == "lm_head.weight") {
      const std::vector<int64_t> want{cfg.vocab_size, cfg.hidden_size};
      if (reader.entry(name).shape != want) {
        problems.push_back("tensor lm_head.weight: expected shape " + shape_str(want) + " (tied to " +
                           "model.embed_tokens.weight), got " + shape_str(reader.entry(name).shape));
      }
      continue;
    }
    problems.push_back("unexpected tensor " + name + " (not part of a Gemma 1 model with this config)");
  }
  if (!problems.empty()) {
    std::string msg;
    const std::size_t shown = std::min<std::size_t>(problems.size(), 20);
    for (std::size_t i = 0; i < shown; ++i) msg += "\n  " + problems[i];
    if (shown < problems.size()) msg += "\n  ... and " + std::to_string(problems.size() - shown) + " more";
    TG_FAIL("impl: checkpoint '", dir.string(), "' does not match its config.json (", problems.size(),
            " problem(s)):", msg);
  }
  if (reader.contains("lm_head.weight")) {
    // Tied weights: an lm_head that differs from the embedding would be silently ignored otherwise.
    const Tensor a = reader.load("lm_head.weight", DType::F32),
                 b = reader.load("model.embed_tokens.weight", DType::F32);
    TG_CHECK(std::memcmp(a.data(), b.data(), a.nbytes()) == 0, "impl: checkpoint '", dir.string(),
             "': lm_head.weight differs from model.embed_tokens.weight, but Gemma ties them (untied heads are ",
             "not supported)");
  }

  ModelWeights w = empty_model(cfg, opts);
  auto load_one = [&](const HfTensor& t) {
    const TensorView dst = destination(w, t);
    const DType file_dtype = *reader.entry(t.name).dtype;
    // A plain copy of the file's bytes to the device, then the conversion there (on the GPU for CUDA).
    const Tensor raw = reader.load(t.name, file_dtype, opts.device);
    const TensorView src = raw.view().reshape(dst.shape);
    if (file_dtype == DType::BF16) {
      copy_bytes(dst, src, opts.stream);
    } else {
      kernels::convert(src, dst, opts.stream);
    }
    sync_stream(opts.stream);  // `raw` is freed on return: the copy must have finished
  };
  std::size_t i = 0;
  load_one(expected[i++]);  // embedding
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    w.layers.push_back(make_layer(cfg, l, opts.device));
    for (int n = 0; n < 9; ++n) load_one(expected[i++]);
    finish_layer(w.layers.back(), opts);
  }
  load_one(expected[i++]);  // final norm
  finish_model(w, opts);
  return w;
}

ModelWeights random_weights(const GemmaConfig& cfg, uint64_t seed, const WeightOptions& opts, const RandomInit& init) {
  check_options(cfg, opts);
  TG_CHECK(init.std >= 0 && init.norm_std >= 0, "random_weights: std and norm_std must be >= 0, got ", init.std,
           " and ", init.norm_std);
  const std::vector<HfTensor> tensors = hf_tensors(cfg);
  ModelWeights w = empty_model(cfg, opts);
  // Drawn where the weights live (kernels::fill_normal: on a GPU without a host buffer or a copy; the same bits).
  auto fill_one = [&](std::size_t index) {
    const HfTensor& t = tensors[index];
    const bool norm = t.shape.size() == 1;
    const uint64_t key = kernels::mix64(seed ^ kernels::mix64(0x7E6E33A0ull + index));
    const TensorView dst = destination(w, t);
    kernels::fill_normal(dst, key, norm ? init.norm_std : init.std, opts.stream);
    if (t.slot == Slot::kEmbed && init.zero_pad_row && cfg.pad_token_id >= 0 && cfg.pad_token_id < cfg.vocab_size) {
      zero_async(dst.slice_rows(cfg.pad_token_id, cfg.pad_token_id + 1), opts.stream);
    }
  };
  std::size_t i = 0;
  fill_one(i++);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    w.layers.push_back(make_layer(cfg, l, opts.device));
    for (int n = 0; n < 9; ++n) fill_one(i++);
    finish_layer(w.layers.back(), opts);
  }
  fill_one(i++);
  finish_model(w, opts);
  sync_stream(opts.stream);  // ready on return, as when the draws were copied from the host (synchronously)
  return w;
}

ModelWeights copy_weights(const ModelWeights& src, const WeightOptions& opts) {
  TG_CHECK(src.storage == WeightStorage::kMaster, "copy_weights: the source holds FP8-only weights (no BF16 ",
           "master to copy)");
  check_options(src.config, opts);
  ModelWeights w = empty_model(src.config, opts);
  copy_async(w.embed.view(), src.embed.view(), opts.stream);
  copy_async(w.final_norm.view(), src.final_norm.view(), opts.stream);
  for (std::size_t l = 0; l < src.layers.size(); ++l) {
    const LayerWeights& s = src.layers[l];
    w.layers.push_back(make_layer(src.config, static_cast<int64_t>(l), opts.device));
    LayerWeights& d = w.layers.back();
    copy_async(d.input_norm.view(), s.input_norm.view(), opts.stream);
    copy_async(d.post_attention_norm.view(), s.post_attention_norm.view(), opts.stream);
    for (auto [dst, from] :
         {std::pair{&d.qkv, &s.qkv}, std::pair{&d.o, &s.o}, std::pair{&d.fc1, &s.fc1}, std::pair{&d.fc2, &s.fc2}}) {
      copy_async(dst->master.view(), from->master.view(), opts.stream);
    }
    finish_layer(d, opts);
  }
  finish_model(w, opts);
  sync_stream(opts.stream);  // host sources (pageable) and the caller's expectations: done on return
  return w;
}

void save_checkpoint(const std::filesystem::path& dir, const ModelWeights& w, DType file_dtype,
                     uint64_t max_shard_bytes) {
  TG_CHECK(file_dtype == DType::BF16 || file_dtype == DType::F32, "save_checkpoint: file dtype must be BF16 or ",
           "F32, got ", file_dtype);
  TG_CHECK(w.storage == WeightStorage::kMaster, "save_checkpoint: the model holds FP8-only weights (no BF16 ",
           "master); load it with master storage to save it");
  std::filesystem::create_directories(dir);
  std::vector<std::pair<std::string, TensorView>> named;
  std::vector<Tensor> converted;  // F32 copies must outlive write_checkpoint
  converted.reserve(hf_tensors(w.config).size());
  for (const HfTensor& t : hf_tensors(w.config)) {
    const TensorView src = destination(w, t).reshape(Shape(std::span<const int64_t>(t.shape)));
    if (file_dtype == DType::BF16) {
      named.emplace_back(t.name, src);
    } else {
      const Tensor host = Tensor::copy_of(src, Device::CPU);
      converted.push_back(Tensor::empty(DType::F32, src.shape, Device::CPU));
      kernels::convert(host.view(), converted.back().view());
      named.emplace_back(t.name, converted.back().view());
    }
  }
  write_checkpoint(dir, named, max_shard_bytes);
  GemmaConfig cfg = w.config;
  cfg.torch_dtype = file_dtype == DType::BF16 ? "bfloat16" : "float32";
  write_file_atomic(dir / "config.json", cfg.to_json_text());
}

}  // namespace tg::impl
