// Mixed-precision training step. Mirrors, in order: HF's causal-LM loss with num_items_in_batch (gradient
// accumulation), torch.nn.utils.clip_grad_norm_, torch.optim.AdamW (single-tensor path, or the fused kernel),
// and transformers.get_cosine_schedule_with_warmup.
#include "reference/trainer.h"

#include <torch/version.h>

#include <cmath>
#include <numeric>

#include "common/check.h"

// at::_foreach_mul_(TensorList, const Tensor&) (a device scalar, no host sync) exists from LibTorch 2.1 on.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define TG_REF_HAVE_FOREACH_MUL_TENSOR 1
#else
#define TG_REF_HAVE_FOREACH_MUL_TENSOR 0
#endif

namespace tg::ref {

namespace {

// Host batches go to the device through pinned memory with a non-blocking copy (no host sync).
at::Tensor to_device(const at::Tensor& t, at::Device device) {
  if (device.is_cuda() && t.device().is_cpu()) return t.pin_memory().to(device, /*non_blocking=*/true);
  return t.to(device);
}

void check_batch(const MicroBatch& mb, int64_t vocab) {
  TG_CHECK(mb.input_ids.defined() && mb.input_ids.dim() == 2 && mb.input_ids.numel() > 0,
           "trainer: input_ids must be a non-empty [b, T] tensor");
  TG_CHECK(mb.labels.defined() && mb.labels.sizes() == mb.input_ids.sizes(),
           "trainer: labels must have the shape of input_ids");
  TG_CHECK(mb.input_ids.device().is_cpu() && mb.labels.device().is_cpu(),
           "trainer: micro-batches must be on the CPU (the target count is taken on the host)");
  TG_CHECK(mb.input_ids.min().item<int64_t>() >= 0 && mb.input_ids.max().item<int64_t>() < vocab,
           "trainer: token ids outside the vocabulary [0, ", vocab, ")");
}

bool is_norm_weight(const std::string& name) { return name.find("norm") != std::string::npos; }

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

double lr_multiplier(const TrainConfig& tc, int64_t step) {
  // transformers.optimization._get_cosine_schedule_with_warmup_lr_lambda (num_cycles = 0.5), and the
  // min-lr variant when min_lr_ratio > 0.
  if (step < tc.warmup_steps) {
    return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, tc.warmup_steps));
  }
  const double progress = static_cast<double>(step - tc.warmup_steps) /
                          static_cast<double>(std::max<int64_t>(1, tc.total_steps - tc.warmup_steps));
  double factor = 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress));
  if (tc.min_lr_ratio > 0.0) factor = factor * (1.0 - tc.min_lr_ratio) + tc.min_lr_ratio;
  return std::max(0.0, factor);
}

Trainer::Trainer(GemmaConfig cfg, const GemmaWeights& init, TrainConfig tc, at::Device device)
    : cfg_(std::move(cfg)), tc_(tc), device_(device) {
  cfg_.validate();
  TG_CHECK(tc_.compute_dtype == DType::BF16 || tc_.compute_dtype == DType::F32,
           "trainer: compute dtype must be BF16 or F32, got ", tc_.compute_dtype);
  TG_CHECK(tc_.grad_accum_steps >= 1, "trainer: grad_accum_steps must be >= 1, got ", tc_.grad_accum_steps);
  TG_CHECK(tc_.lr >= 0 && tc_.eps > 0 && tc_.beta1 >= 0 && tc_.beta1 < 1 && tc_.beta2 >= 0 && tc_.beta2 < 1,
           "trainer: invalid AdamW hyper-parameters (lr ", tc_.lr, ", betas ", tc_.beta1, "/", tc_.beta2, ", eps ",
           tc_.eps, ")");
  TG_CHECK(tc_.warmup_steps >= 0 && tc_.total_steps >= 1, "trainer: invalid schedule (warmup ", tc_.warmup_steps,
           ", total ", tc_.total_steps, ")");
  TG_CHECK(static_cast<int64_t>(init.layers.size()) == cfg_.num_hidden_layers,
           "trainer: weights have ", init.layers.size(), " layers, config ", cfg_.num_hidden_layers);
  master_ = init.to(at::kFloat, device_);
  for (const auto& [name, p] : master_.named()) {
    exp_avg_.push_back(at::zeros_like(*p));
    exp_avg_sq_.push_back(at::zeros_like(*p));
    decay_.push_back(!is_norm_weight(name));
  }
#if TORCH_VERSION_MAJOR >= 2
  fused_ = tc_.fused_adamw && device_.is_cuda();
#endif
  if (fused_) {
    for (size_t i = 0; i < exp_avg_.size(); ++i) {
      state_step_.push_back(at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device_)));
    }
  }
  // The compute weights: FP32 compute uses the master tensors themselves (detached aliases), BF16 compute
  // rounded copies (refreshed before every step).
  const at::ScalarType dt = to_scalar_type(tc_.compute_dtype);
  GemmaWeights compute;
  compute.layers.resize(master_.layers.size());
  auto dst = compute.named();
  const auto src = master_.named();
  for (size_t i = 0; i < src.size(); ++i) {
    *dst[i].second = dt == at::kFloat ? src[i].second->detach() : src[i].second->to(dt);
    dst[i].second->requires_grad_(true);
  }
  model_ = std::make_unique<GemmaModel>(cfg_, std::move(compute), tc_.attention);
}

void Trainer::refresh_compute_weights() {
  if (tc_.compute_dtype == DType::F32) return;  // aliases of the master: always current
  c10::NoGradGuard no_grad;
  auto dst = model_->weights().named();
  const auto src = master_.named();
  for (size_t i = 0; i < src.size(); ++i) dst[i].second->copy_(*src[i].second);  // FP32 -> BF16, RNE
}

GemmaModel Trainer::compute_model() const {
  return GemmaModel(cfg_, model_->weights().to(model_->dtype(), device_), tc_.attention);
}

StepStats Trainer::step(const std::vector<MicroBatch>& micro_batches) {
  TG_CHECK(static_cast<int64_t>(micro_batches.size()) == tc_.grad_accum_steps, "trainer: expected ",
           tc_.grad_accum_steps, " micro-batches (grad_accum_steps), got ", micro_batches.size());
  // HF Trainer's num_items_in_batch: targets over the whole accumulation window, so the accumulated
  // gradient equals the gradient of one big batch.
  int64_t num_items = 0;
  for (const MicroBatch& mb : micro_batches) {
    check_batch(mb, cfg_.vocab_size);
    num_items += count_loss_targets(mb.labels);
  }
  TG_CHECK(num_items > 0, "trainer: the micro-batches have no loss targets (all labels -100?)");

  refresh_compute_weights();
  GemmaModel& model = *model_;
  auto params = model.weights().named();

  std::vector<at::Tensor> grads(params.size());  // FP32 accumulators
  at::Tensor loss_total = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device_));
  for (const MicroBatch& mb : micro_batches) {
    const at::Tensor ids = to_device(mb.input_ids.to(at::kLong), device_);
    const at::Tensor labels = to_device(mb.labels.to(at::kLong), device_);
    ForwardArgs args;
    args.input_ids = ids;
    const at::Tensor logits = model.forward(args);
    const at::Tensor loss = causal_lm_loss(logits, labels, static_cast<double>(num_items));
    loss.backward();
    loss_total = loss_total + loss.detach();
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor& g = params[i].second->mutable_grad();
      if (!g.defined()) continue;  // a parameter that got no gradient contributes zero
      if (grads[i].defined()) {
        grads[i].add_(g);
      } else {
        grads[i] = g.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
      }
      g.reset();
    }
  }
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined()) grads[i] = at::zeros_like(*master_.named()[i].second);
  }

  c10::NoGradGuard no_grad;
  // clip_grad_norm_ (its foreach path, the default for CUDA tensors): total = ||(||g_i||)_i||,
  // coef = min(max_norm / (total + 1e-6), 1), always applied. Multi-tensor kernels: a few launches for the
  // whole model instead of two per parameter.
  const at::Tensor total_norm = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads, 2)), 2);
  if (tc_.max_grad_norm > 0) {
    // Python's `max_norm / (total_norm + 1e-6)` is total.reciprocal() * max_norm.
    const at::Tensor coef = (at::reciprocal(total_norm + 1e-6) * tc_.max_grad_norm).clamp_max(1.0);
#if TG_REF_HAVE_FOREACH_MUL_TENSOR
    at::_foreach_mul_(grads, coef);
#else
    for (at::Tensor& g : grads) g.mul_(coef);
#endif
  }

  const double lr = lr_at(step_);
  if (fused_) {
    adamw_fused(grads, lr);
  } else {
    adamw_explicit(grads, lr);
  }
  StepStats stats;
  stats.loss = loss_total;
  stats.grad_norm = total_norm;
  stats.lr = lr;
  stats.step = step_;
  ++step_;
  return stats;
}

void Trainer::adamw_explicit(const std::vector<at::Tensor>& grads, double lr) {
  // torch.optim.adam._single_tensor_adam with decoupled_weight_decay=True (AdamW), amsgrad off.
  const double step = static_cast<double>(step_ + 1);
  const double bias_correction1 = 1.0 - std::pow(tc_.beta1, step);
  const double bias_correction2 = 1.0 - std::pow(tc_.beta2, step);
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
  auto params = master_.named();
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor& p = *params[i].second;
    const double wd = decay_[i] ? tc_.weight_decay : 0.0;
    if (wd != 0.0) p.mul_(1.0 - lr * wd);
    exp_avg_[i].lerp_(grads[i], 1.0 - tc_.beta1);
    exp_avg_sq_[i].mul_(tc_.beta2).addcmul_(grads[i], grads[i], 1.0 - tc_.beta2);
    const at::Tensor denom = (exp_avg_sq_[i].sqrt() / bias_correction2_sqrt).add_(tc_.eps);
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

void Trainer::adamw_fused(const std::vector<at::Tensor>& grads, double lr) {
#if TORCH_VERSION_MAJOR >= 2
  // torch.optim.adam._fused_adam: step counters += 1, then one fused kernel per weight-decay group.
  auto params = master_.named();
  for (const bool decay : {true, false}) {
    std::vector<at::Tensor> ps, gs, ms, vs, steps;
    for (size_t i = 0; i < params.size(); ++i) {
      if (decay_[i] != decay) continue;
      ps.push_back(*params[i].second);
      gs.push_back(grads[i]);
      ms.push_back(exp_avg_[i]);
      vs.push_back(exp_avg_sq_[i]);
      steps.push_back(state_step_[i]);
    }
    if (ps.empty()) continue;
    at::_foreach_add_(steps, 1);
    at::_fused_adamw_(ps, gs, ms, vs, {}, steps, lr, tc_.beta1, tc_.beta2, decay ? tc_.weight_decay : 0.0, tc_.eps,
                      /*amsgrad=*/false, /*maximize=*/false);
  }
#else
  (void)grads;
  (void)lr;
  TG_FAIL("trainer: fused AdamW needs LibTorch >= 2.0");
#endif
}

at::Tensor Trainer::eval_loss(const MicroBatch& batch) {
  check_batch(batch, cfg_.vocab_size);
  c10::NoGradGuard no_grad;
  refresh_compute_weights();
  const GemmaModel& model = *model_;
  ForwardArgs args;
  args.input_ids = to_device(batch.input_ids.to(at::kLong), device_);
  const at::Tensor logits = model.forward(args);
  return causal_lm_loss(logits, to_device(batch.labels.to(at::kLong), device_));
}

// ---- TokenBatcher -------------------------------------------------------------------------------------------

TokenBatcher::TokenBatcher(std::vector<int32_t> tokens, int64_t seq_len, int64_t batch_size, uint64_t seed)
    : tokens_(std::move(tokens)), seq_len_(seq_len), batch_size_(batch_size), seed_(seed) {
  TG_CHECK(seq_len_ >= 2 && batch_size_ >= 1, "TokenBatcher: seq_len must be >= 2 and batch_size >= 1, got ",
           seq_len_, " and ", batch_size_);
  n_seq_ = static_cast<int64_t>(tokens_.size()) / seq_len_;
  TG_CHECK(n_seq_ >= 1, "TokenBatcher: ", tokens_.size(), " tokens make no sequence of ", seq_len_);
}

std::vector<int64_t> TokenBatcher::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(n_seq_));
  std::iota(order.begin(), order.end(), int64_t{0});
  uint64_t state = seed_ ^ (0xd1b54a32d192ed03ull * static_cast<uint64_t>(epoch + 1));
  for (int64_t i = n_seq_ - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(splitmix64(state) % static_cast<uint64_t>(i + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

MicroBatch TokenBatcher::batch(int64_t index) const {
  TG_CHECK(index >= 0, "TokenBatcher: negative batch index ", index);
  at::Tensor ids = at::empty({batch_size_, seq_len_}, at::TensorOptions().dtype(at::kLong));
  int64_t cached_epoch = -1;
  std::vector<int64_t> order;
  for (int64_t r = 0; r < batch_size_; ++r) {
    const int64_t global = index * batch_size_ + r;
    const int64_t epoch = global / n_seq_;
    if (epoch != cached_epoch) {
      order = epoch_order(epoch);
      cached_epoch = epoch;
    }
    const int64_t seq = order[static_cast<size_t>(global % n_seq_)];
    int64_t* row = ids[r].data_ptr<int64_t>();
    for (int64_t t = 0; t < seq_len_; ++t) row[t] = tokens_[static_cast<size_t>(seq * seq_len_ + t)];
  }
  return {ids, ids.clone()};
}

}  // namespace tg::ref
