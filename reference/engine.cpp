// The torch-free facade: converts between tg::Tensor / std::vector and at::Tensor around the torch-facing API.
#include "reference/engine.h"

#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "reference/generate.h"
#include "reference/model.h"
#include "reference/trainer.h"

namespace tg::ref {

namespace {

at::Device torch_device(const EngineOptions& o) {
  if (o.device == Device::CPU) return at::Device(at::kCPU);
  TG_CHECK(at::hasCUDA(), "reference engine: CUDA requested but this LibTorch has no CUDA device");
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(o.device_index));
}

// A host I64/I32 view as an int64 CPU at::Tensor (copied).
at::Tensor ids_to_torch(const TensorView& v, const char* what) {
  TG_CHECK(v.device == Device::CPU, "reference engine: ", what, " must be on the host");
  TG_CHECK(v.dtype == DType::I64 || v.dtype == DType::I32, "reference engine: ", what, " must be I64 or I32, got ",
           v.dtype);
  check_contiguous(v, what);
  const std::vector<int64_t> sizes = v.shape.vec();
  const at::ScalarType st = v.dtype == DType::I64 ? at::kLong : at::kInt;
  return at::from_blob(v.data, sizes, at::TensorOptions().dtype(st)).to(at::kLong, false, /*copy=*/true);
}

void check_vocab(const at::Tensor& ids, int64_t vocab) {
  if (ids.numel() == 0) return;
  TG_CHECK(ids.min().item<int64_t>() >= 0 && ids.max().item<int64_t>() < vocab,
           "reference engine: token ids outside the vocabulary [0, ", vocab, ")");
}

Tensor to_host_f32(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU, at::kFloat).contiguous();
  const std::vector<int64_t> sizes(c.sizes().begin(), c.sizes().end());
  Tensor out = Tensor::empty(DType::F32, Shape(std::span<const int64_t>(sizes)));
  std::memcpy(out.data(), c.data_ptr(), out.nbytes());
  return out;
}

std::vector<int64_t> row(const at::Tensor& t2d, int64_t r) {
  const at::Tensor c = t2d[r].to(at::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

struct Engine::Impl {
  EngineOptions opts;
  GemmaModel model;
};

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;
Engine::~Engine() = default;

Engine Engine::load(const std::filesystem::path& dir, const EngineOptions& opts) {
  GemmaConfig cfg = load_config(dir);
  GemmaWeights w = load_weights(dir, cfg, to_scalar_type(opts.dtype), torch_device(opts));
  return Engine(std::make_unique<Impl>(Impl{opts, GemmaModel(std::move(cfg), std::move(w), opts.attention)}));
}

Engine Engine::random(const GemmaConfig& cfg, uint64_t seed, const EngineOptions& opts, const RandomInit& init) {
  GemmaWeights w = random_weights(cfg, seed, to_scalar_type(opts.dtype), torch_device(opts), init);
  return Engine(std::make_unique<Impl>(Impl{opts, GemmaModel(cfg, std::move(w), opts.attention)}));
}

const GemmaConfig& Engine::config() const { return impl_->model.config(); }
const EngineOptions& Engine::options() const { return impl_->opts; }

ForwardResult Engine::forward(const ForwardRequest& req) const {
  c10::NoGradGuard no_grad;
  const at::Tensor ids = ids_to_torch(req.input_ids, "input_ids");
  TG_CHECK(ids.dim() == 2, "reference engine: input_ids must be [B, T]");
  check_vocab(ids, config().vocab_size);
  ForwardArgs args;
  args.input_ids = ids;
  if (!req.attention_mask.empty()) {
    args.attention_mask = ids_to_torch(req.attention_mask, "attention_mask");
    TG_CHECK(args.attention_mask.sizes() == ids.sizes(), "reference engine: attention_mask must match input_ids");
  }
  if (!req.position_ids.empty()) {
    args.position_ids = ids_to_torch(req.position_ids, "position_ids");
  } else if (args.attention_mask.defined()) {
    args.position_ids = positions_from_mask(args.attention_mask);
  }
  args.logits_to_keep = req.last_position_only ? 1 : 0;
  Taps taps;
  if (req.want_taps) args.taps = &taps;
  const at::Tensor logits = impl_->model.forward(args);
  ForwardResult out;
  out.logits = to_host_f32(logits);
  if (req.want_taps) {
    for (const auto& t : taps.layer_inputs) out.layer_inputs.push_back(to_host_f32(t));
    for (const auto& t : taps.layer_outputs) out.layer_outputs.push_back(to_host_f32(t));
    out.final_hidden = to_host_f32(taps.final_hidden);
  }
  return out;
}

Tensor Engine::logits(const std::vector<int64_t>& ids) const {
  std::vector<int64_t> copy = ids;
  const TensorView v(copy.data(), DType::I64, Shape{1, static_cast<int64_t>(copy.size())});
  ForwardRequest req;
  req.input_ids = v;
  return forward(req).logits;
}

double Engine::loss(const TensorView& input_ids, const TensorView& labels) const {
  c10::NoGradGuard no_grad;
  const at::Tensor ids = ids_to_torch(input_ids, "input_ids");
  check_vocab(ids, config().vocab_size);
  const at::Tensor lab = labels.empty() ? ids : ids_to_torch(labels, "labels");
  ForwardArgs args;
  args.input_ids = ids;
  const at::Tensor logits = impl_->model.forward(args);
  return causal_lm_loss(logits, lab).item<double>();
}

GenerateResult Engine::generate(const std::vector<std::vector<int64_t>>& prompts,
                                const GenerationConfig& gen) const {
  const GenerationOutput g = tg::ref::generate(impl_->model, prompts, gen);
  GenerateResult out;
  out.prompt_length = g.prompt_length;
  const std::vector<int64_t> eos =
      gen.ignore_eos ? std::vector<int64_t>{} : gen.eos_token_ids.empty() ? config().eos_token_ids : gen.eos_token_ids;
  const int64_t n_per_prompt = gen.num_beams > 1 ? gen.num_return_sequences : 1;
  for (int64_t r = 0; r < g.sequences.size(0); ++r) {
    std::vector<int64_t> seq = row(g.sequences, r);
    out.sequences.push_back(seq);
    // New tokens up to and including the first EOS; for greedy/sampling also stop at the per-row limit.
    std::vector<int64_t> fresh;
    const int64_t limit = gen.max_new_tokens_per_row.empty()
                              ? gen.max_new_tokens
                              : gen.max_new_tokens_per_row[static_cast<size_t>(r / n_per_prompt)];
    for (size_t i = static_cast<size_t>(g.prompt_length); i < seq.size(); ++i) {
      if (static_cast<int64_t>(fresh.size()) >= limit) break;
      fresh.push_back(seq[i]);
      if (std::find(eos.begin(), eos.end(), seq[i]) != eos.end()) break;
    }
    out.new_tokens.push_back(std::move(fresh));
  }
  if (g.sequence_scores.defined()) {
    const at::Tensor s = g.sequence_scores.to(at::kDouble).contiguous();
    out.sequence_scores.assign(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
  }
  return out;
}

void Engine::save(const std::filesystem::path& dir, DType file_dtype) const {
  save_checkpoint(dir, config(), impl_->model.weights(), file_dtype);
}

// ---- TrainSession -----------------------------------------------------------------------------------------

TrainSession::TrainSession(const Engine& init, const TrainConfig& tc) : opts_(init.options()) {
  TrainConfig t = tc;
  t.attention = opts_.attention;  // the engine's choice (e.g. Sdpa for speed) carries over to training
  trainer_ = std::make_unique<Trainer>(init.config(), init.impl_->model.weights(), t, torch_device(opts_));
}
TrainSession::TrainSession(TrainSession&&) noexcept = default;
TrainSession& TrainSession::operator=(TrainSession&&) noexcept = default;
TrainSession::~TrainSession() = default;

TrainStepResult TrainSession::step(const std::vector<TensorView>& input_ids, const std::vector<TensorView>& labels) {
  TG_CHECK(labels.empty() || labels.size() == input_ids.size(), "TrainSession: ", input_ids.size(),
           " id batches but ", labels.size(), " label batches");
  std::vector<MicroBatch> mbs;
  for (size_t i = 0; i < input_ids.size(); ++i) {
    const at::Tensor ids = ids_to_torch(input_ids[i], "input_ids");
    mbs.push_back({ids, labels.empty() ? ids : ids_to_torch(labels[i], "labels")});
  }
  const StepStats s = trainer_->step(mbs);
  return {s.loss.item<double>(), s.grad_norm.item<double>(), s.lr, s.step};
}

double TrainSession::eval_loss(const TensorView& input_ids, const TensorView& labels) const {
  const at::Tensor ids = ids_to_torch(input_ids, "input_ids");
  return trainer_->eval_loss({ids, labels.empty() ? ids : ids_to_torch(labels, "labels")}).item<double>();
}

Engine TrainSession::snapshot() const {
  EngineOptions o = opts_;
  o.dtype = trainer_->train_config().compute_dtype;
  return Engine(std::make_unique<Engine::Impl>(Engine::Impl{o, trainer_->compute_model()}));
}

}  // namespace tg::ref
