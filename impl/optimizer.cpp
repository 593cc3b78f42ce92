#include "impl/optimizer.h"

#include <cstring>

#include "common/check.h"
#include "common/nvtx.h"
#include "kernels/convert/convert.h"

namespace tg::impl {

namespace {

struct Layout {
  std::string name;
  TensorView compute;  // BF16
  bool decay;
  std::vector<Parameter::HfSlice> hf;
};

// The trainable tensors in a fixed order (checkpoints, tables): embedding, per layer (input norm, qkv, o,
// post-attention norm, fc1, fc2), final norm; each with its HF names.
std::vector<Layout> layout(const ModelWeights& w) {
  const GemmaConfig& c = w.config;
  const int64_t q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size, d = c.hidden_size;
  std::vector<Layout> out;
  out.push_back({"embed", w.embed.view(), true, {{"model.embed_tokens.weight", 0, c.vocab_size}}});
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".", n = "layers." + std::to_string(l) + ".";
    out.push_back({n + "input_norm", lw.input_norm.view(), false, {{p + "input_layernorm.weight", 0, d}}});
    out.push_back({n + "qkv", lw.qkv.master_view, true,
                   {{p + "self_attn.q_proj.weight", 0, q},
                    {p + "self_attn.k_proj.weight", q, q + kv},
                    {p + "self_attn.v_proj.weight", q + kv, q + 2 * kv}}});
    out.push_back({n + "o", lw.o.master_view, true, {{p + "self_attn.o_proj.weight", 0, d}}});
    out.push_back({n + "post_attention_norm", lw.post_attention_norm.view(), false,
                   {{p + "post_attention_layernorm.weight", 0, d}}});
    out.push_back({n + "fc1", lw.fc1.master_view, true,
                   {{p + "mlp.gate_proj.weight", 0, f}, {p + "mlp.up_proj.weight", f, 2 * f}}});
    out.push_back({n + "fc2", lw.fc2.master_view, true, {{p + "mlp.down_proj.weight", 0, d}}});
  }
  out.push_back({"final_norm", w.final_norm.view(), false, {{"model.norm.weight", 0, d}}});
  return out;
}

TensorView slice(const Tensor& flat, int64_t offset, const Shape& shape) {
  return TensorView(static_cast<float*>(flat.data()) + offset, DType::F32, shape, flat.device());
}

}  // namespace

Optimizer::Optimizer(GemmaForCausalLM& model, const AdamWConfig& cfg) : model_(&model), cfg_(cfg) {
  ModelWeights& w = model.weights();
  TG_CHECK(w.storage == WeightStorage::kMaster, "Optimizer: the model holds FP8-only weights; training needs the ",
           "BF16 weights (master storage)");
  TG_CHECK(cfg.beta1 >= 0 && cfg.beta1 < 1 && cfg.beta2 >= 0 && cfg.beta2 < 1 && cfg.eps > 0 &&
               cfg.weight_decay >= 0,
           "Optimizer: invalid AdamW hyper-parameters (betas ", cfg.beta1, "/", cfg.beta2, ", eps ", cfg.eps,
           ", weight_decay ", cfg.weight_decay, ")");
  const Device dev = w.device;
  const Stream stream = model.options().stream;
  const std::vector<Layout> lay = layout(w);
  for (const Layout& l : lay) numel_ += l.compute.numel();
  master_ = Tensor::empty(DType::F32, {numel_}, dev);
  grad_ = Tensor::zeros(DType::F32, {numel_}, dev);
  exp_avg_ = Tensor::zeros(DType::F32, {numel_}, dev);
  exp_avg_sq_ = Tensor::zeros(DType::F32, {numel_}, dev);
  state_ = kernels::adamw_initial_state(dev);
  status_ = Tensor::zeros(DType::F32, {4}, dev);

  int64_t offset = 0;
  std::vector<kernels::AdamWParam> table;
  for (const Layout& l : lay) {
    Parameter p;
    p.name = l.name;
    p.master = slice(master_, offset, l.compute.shape);
    p.grad = slice(grad_, offset, l.compute.shape);
    p.exp_avg = slice(exp_avg_, offset, l.compute.shape);
    p.exp_avg_sq = slice(exp_avg_sq_, offset, l.compute.shape);
    p.compute = l.compute;
    p.decay = l.decay;
    p.hf = l.hf;
    offset += l.compute.numel();
    kernels::convert(p.compute, p.master, stream);  // BF16 -> F32: exact
    const Shape flat{p.master.numel()};
    table.push_back({p.master.reshape(flat), p.grad.reshape(flat), p.exp_avg.reshape(flat),
                     p.exp_avg_sq.reshape(flat), p.compute.reshape(flat), p.decay});
    params_.push_back(std::move(p));
  }
  table_ = kernels::AdamWTable(std::move(table));
  workspace_ = kernels::adamw_workspace(table_);

  // The gradient views in the model's layout (the same order as layout()).
  std::size_t i = 0;
  grads_.embed = params_[i++].grad;
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    LayerGrads g;
    g.input_norm = params_[i++].grad;
    g.qkv = params_[i++].grad;
    g.o = params_[i++].grad;
    g.post_attention_norm = params_[i++].grad;
    g.fc1 = params_[i++].grad;
    g.fc2 = params_[i++].grad;
    grads_.layers.push_back(g);
  }
  grads_.final_norm = params_[i++].grad;
  sync_stream(stream);
}

void Optimizer::zero_grads() { zero_async(grad_.view(), model_->options().stream); }

void Optimizer::step(double lr) {
  TG_NVTX_FN();
  const Stream stream = model_->options().stream;
  kernels::AdamWHyper h;
  h.lr = lr;
  h.beta1 = cfg_.beta1;
  h.beta2 = cfg_.beta2;
  h.eps = cfg_.eps;
  h.weight_decay = cfg_.weight_decay;
  h.max_grad_norm = cfg_.max_grad_norm;
  kernels::adamw_step(table_, h, state_.view(), status_.view(), workspace_.view(), stream);
  // The FP8 copies follow the BF16 weights the update just wrote. After a skipped step the weights did not
  // change and this reproduces the same bytes (the weight rule depends only on the weight).
  if (model_->weights().recipe.is_fp8()) refresh_fp8_weights(model_->weights(), stream);
}

StepStatus Optimizer::read_status() const {
  sync_stream(model_->options().stream);
  const Tensor host = status_.to(Device::CPU);
  StepStatus s;
  s.grad_norm = host.ptr<float>()[0];
  s.clip_coef = host.ptr<float>()[1];
  s.skipped = host.ptr<float>()[2] != 0.0f;
  return s;
}

void Optimizer::sync_model_weights() {
  const Stream stream = model_->options().stream;
  for (const Parameter& p : params_) kernels::convert(p.master, p.compute, stream);  // RNE, as the update does
  if (model_->weights().recipe.is_fp8()) refresh_fp8_weights(model_->weights(), stream);
  sync_stream(stream);
}

}  // namespace tg::impl
