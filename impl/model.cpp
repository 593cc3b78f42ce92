#include "impl/model.h"

#include <algorithm>
#include <utility>

#include "common/check.h"
#include "common/nvtx.h"
#include "impl/buffers.h"
#include "impl/modules/layernorm_linear.h"
#include "impl/modules/transformer_layer.h"
#include "kernels/convert/convert.h"
#include "kernels/embedding/embedding.h"
#include "kernels/gemm/gemm.h"
#include "kernels/loss/loss.h"
#include "kernels/rope/rope.h"

namespace tg::impl {

namespace {

// The loss head of a plan (forward_backward / loss): none, the loss alone, or the loss and the backward.
enum class LossPlan : uint8_t { kNone, kEval, kTrain };

// What an arena carve depends on.
struct PlanKey {
  int64_t tokens = 0, sequences = 0;
  LogitsMode logits = LogitsMode::kNone;
  bool training = false;
  ScalingPhase phase = ScalingPhase::kInference;
  LossPlan loss = LossPlan::kNone;
  int64_t chunk = 0;  // lm_head rows per chunk (loss plans)
};

int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

// A host F32 copy of rows [0, n) of a device/host BF16 [*, cols] view.
Tensor to_host_f32(const TensorView& v, int64_t n) {
  const Tensor host = Tensor::copy_of(v.slice_rows(0, n), Device::CPU);
  Tensor out = Tensor::empty(DType::F32, host.shape(), Device::CPU);
  kernels::convert(host.view(), out.view());
  return out;
}

}  // namespace

void check_model_shapes(const GemmaConfig& cfg, const Recipe& recipe, bool fp8_lm_head) {
  cfg.validate("impl model");
  if (!recipe.is_fp8()) {
    TG_CHECK(!fp8_lm_head, "impl model: an FP8 lm_head needs an FP8 recipe, got 'bf16'");
    return;
  }
  const int64_t d = cfg.hidden_size, f = cfg.intermediate_size, q = cfg.q_dim();
  const int64_t qkv = q + 2 * cfg.kv_dim();
  struct Gemm {
    const char* name;
    int64_t n, k;
  };
  std::vector<Gemm> gemms{{"qkv", qkv, d}, {"o", d, q}, {"fc1", 2 * f, d}, {"fc2", d, f}};
  if (fp8_lm_head) gemms.push_back({"lm_head", cfg.vocab_size, d});
  const bool block = recipe.kind == RecipeKind::kBlock;
  const int64_t k_multiple = block ? 128 : 16;
  for (const Gemm& g : gemms) {
    TG_CHECK(g.k % k_multiple == 0, "impl model: the ", g.name, " GEMM's reduction dimension K = ", g.k,
             " must be a multiple of ", k_multiple, " under the ", recipe.name(), " recipe (",
             block ? "every 1x128 / 128x128 scaling block full" : "cuBLASLt FP8 16-byte alignment",
             "); hidden_size, num_attention_heads * head_dim and intermediate_size must all be");
    TG_CHECK(g.n % 8 == 0, "impl model: the ", g.name, " GEMM's output width N = ", g.n,
             " must be a multiple of 8 for FP8 GEMMs (16-byte aligned BF16 rows)");
  }
}

struct GemmaForCausalLM::State {
  ModelOptions opts;
  ModelWeights w;
  Precision precision;
  Tensor inv_freq;  // F32 [Dh / 2]
  Tensor fault_inv_freq;  // test-only (opts.fault rope_swap): the faulty layer's table
  // CUDA only: inv_freq's cos/sin precomputed for positions [0, rope_table_positions) (kernels::rope_cos_sin_table),
  // which the RoPE kernels read instead of evaluating an FP64 sincos per (token, pair): the same bits. Empty on the
  // CPU (the twin computes). fault_rope_table: the same from fault_inv_freq, so the planted fault survives the table.
  Tensor rope_table;
  Tensor fault_rope_table;
  float embed_scale = 1.0f;
  std::vector<TransformerLayer> layers;
  LayerNormLinear lm_head;
  Arena arena;
  PlanKey key;
  std::vector<int32_t> staging;         // host side of the per-forward index upload
  std::vector<int32_t> target_staging;  // host side of the targets' upload (loss plans)

  // Every buffer of one forward, carved in a fixed order.
  struct Views {
    BatchView batch;
    TensorView inputs;  // I32 [T + T + (B + 1) + B]: ids, positions, cu_seqlens, last rows (one upload)
    TensorView status;  // I32 [2]: the embedding kernels' bad-id report (ids are checked on the host)
    TensorView h;       // BF16 [rows, D]: the residual stream (inference: updated in place)
    std::vector<TransformerLayer::Activations> layers;  // 1 shared set (inference) or L (training)
    TensorView h_last;                                  // BF16 [lm_rows, D]: gathered last rows (kLastPerSequence)
    LayerNormLinear::Activations lm;
    TensorView logits;     // BF16 [lm_rows, V] (loss plans: [chunk, V], overwritten by its gradient)
    int64_t lm_rows = 0;   // rows the lm_head computes (padded under block scaling)
    int64_t out_rows = 0;  // rows returned
    // Loss plans (forward_backward / loss):
    TensorView targets;   // I32 [T]
    TensorView row_loss;  // F32 [chunk]
    TensorView dh[2];     // BF16 [rows, D] x 2: the residual-stream gradient, ping-pong between layers
    TransformerLayer::BackwardBuffers layer_bw;  // shared by every layer
    LayerNormLinear::BackwardBuffers lm_bw;      // the final norm's backward (d_ln = the lm_head's dgrad)
  };
  Views views;  // the last forward's

  Views carve(Buffers& b, const PlanKey& k) const {
    const int64_t d = w.config.hidden_size;
    Views v;
    BatchView& bv = v.batch;
    bv.tokens = k.tokens;
    bv.sequences = k.sequences;
    bv.rows = round_up(k.tokens, k.training ? precision.training_row_multiple() : precision.row_multiple());
    v.inputs = b.alloc(DType::I32, {2 * k.tokens + 2 * k.sequences + 1});
    if (!b.counting()) {
      auto part = [&](int64_t begin, int64_t n) {
        return TensorView(v.inputs.ptr<int32_t>() + begin, DType::I32, Shape{n}, v.inputs.device);
      };
      bv.token_ids = part(0, k.tokens);
      bv.positions = part(k.tokens, k.tokens);
      bv.cu_seqlens = part(2 * k.tokens, k.sequences + 1);
      bv.last_rows = part(2 * k.tokens + k.sequences + 1, k.sequences);
    }
    v.status = b.alloc(DType::I32, {2});
    v.h = b.alloc(DType::BF16, {bv.rows, d});
    const std::size_t sets = k.training ? layers.size() : std::min<std::size_t>(layers.size(), 1);
    for (std::size_t i = 0; i < sets; ++i) v.layers.push_back(layers[i].allocate(b, bv, precision, k.training));
    if (k.logits != LogitsMode::kNone) {
      const bool last = k.logits == LogitsMode::kLastPerSequence;
      v.out_rows = last ? k.sequences : k.tokens;
      v.lm_rows = last ? round_up(k.sequences, lm_head.site().fp8 ? precision.row_multiple() : 1) : bv.rows;
      if (last) v.h_last = b.alloc(DType::BF16, {v.lm_rows, d});
      v.lm = lm_head.allocate(b, v.lm_rows, precision, k.training);
      v.logits = b.alloc(DType::BF16, {v.lm_rows, w.config.vocab_size});
    }
    if (k.loss != LossPlan::kNone) {
      v.lm = lm_head.allocate(b, bv.rows, precision, /*training=*/false);  // BF16 lm_head: ln_out in BF16
      v.targets = b.alloc(DType::I32, {k.tokens});
      v.logits = b.alloc(DType::BF16, {k.chunk, w.config.vocab_size});
      v.row_loss = b.alloc(DType::F32, {k.chunk});
      if (k.loss == LossPlan::kTrain) {
        v.dh[0] = b.alloc(DType::BF16, {bv.rows, d});
        v.dh[1] = b.alloc(DType::BF16, {bv.rows, d});
        v.layer_bw = layers[0].allocate_backward(b, bv, precision);
        v.lm_bw = lm_head.allocate_backward(b, bv.rows);
      }
    }
    return v;
  }

  // Uploads the batch's indices (one copy), runs the embedding and the layers on the views of `v`; returns
  // the residual stream leaving the last layer.
  TensorView body(const Batch& batch, const Views& v, const BatchView& bv, bool training,
                  const std::function<void(int64_t, const TensorView&)>& on_layer) {
    const Stream stream = opts.stream;
    // One upload of every index array, from a staging vector the model keeps (so it outlives the copy).
    std::vector<int32_t>& host = staging;
    host.clear();
    host.insert(host.end(), batch.tokens.begin(), batch.tokens.end());
    host.insert(host.end(), batch.positions.begin(), batch.positions.end());
    host.insert(host.end(), batch.cu_seqlens.begin(), batch.cu_seqlens.end());
    const std::vector<int32_t> last = batch.last_token_rows();
    host.insert(host.end(), last.begin(), last.end());
    // From pageable memory, cudaMemcpyAsync has consumed `host` when it returns (CUDA's API sync rules).
    copy_async(v.inputs, TensorView(host.data(), DType::I32, v.inputs.shape, Device::CPU), stream);

    kernels::embedding_forward(bv.token_ids, w.embed.view(), embed_scale, v.h.slice_rows(0, bv.tokens), v.status,
                               stream);
    if (bv.rows > bv.tokens) zero_async(v.h.slice_rows(bv.tokens, bv.rows), stream);

    TensorView h = v.h;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const auto& act = v.layers[training ? l : 0];
      h = layers[l].forward(h, bv, act, precision, stream);
      if (on_layer) on_layer(static_cast<int64_t>(l), h);
    }
    return h;
  }

  // The lm_head's loss over the rows [0, T) chunk by chunk (and with `grads`, its backward: the lm_head's
  // dgrad into d_ln, its wgrad into grads->embed, then the final norm's backward into v.dh[0]).
  void lm_loss(const Views& v, const BatchView& bv, const TensorView& h, float scale, const TensorView& loss_sum,
               const ModelGrads* grads) {
    const Stream stream = opts.stream;
    lm_head.norm_forward(h, v.lm, precision, stream);
    const TensorView ln = v.lm.ln_out.hp;
    const TensorView d_ln = grads ? v.lm_bw.d_ln : TensorView{};
    const int64_t chunk = v.logits.shape[0];
    for (int64_t r0 = 0; r0 < bv.tokens; r0 += chunk) {
      TG_NVTX_RANGE("lm_head chunk");
      const int64_t r1 = std::min(bv.tokens, r0 + chunk), c = r1 - r0;
      const TensorView logits = v.logits.slice_rows(0, c);
      kernels::gemm(ln.slice_rows(r0, r1), w.embed.view(), logits, {}, stream);
      kernels::cross_entropy(logits, v.targets.slice_rows(r0, r1), scale, grads ? logits : TensorView{},
                             v.row_loss.slice_rows(0, c), loss_sum, stream);
      if (!grads) continue;
      kernels::GemmOptions dgrad;
      dgrad.transpose_b = true;  // d_ln = dlogits E
      kernels::gemm(logits, w.embed.view(), d_ln.slice_rows(r0, r1), dgrad, stream);
      kernels::GemmOptions wgrad;
      wgrad.beta = 1.0f;
      wgrad.transpose_a = wgrad.transpose_b = true;  // dE += dlogits^T ln
      kernels::gemm(logits, ln.slice_rows(r0, r1), grads->embed, wgrad, stream);
    }
    if (!grads) return;
    if (bv.rows > bv.tokens) zero_async(d_ln.slice_rows(bv.tokens, bv.rows), stream);
    lm_head.norm_backward(h, v.lm, d_ln, v.dh[0], TensorView{}, v.lm_bw, grads->final_norm, stream);
  }

  // Host checks and the upload of a loss plan's targets.
  void upload_targets(const Views& v, const Batch& batch, const std::vector<int32_t>& targets) {
    TG_CHECK(static_cast<int64_t>(targets.size()) == batch.num_tokens(), "GemmaForCausalLM: ", targets.size(),
             " targets for a batch of ", batch.num_tokens(), " tokens (one per token: the next token, or -100)");
    const int64_t vocab = w.config.vocab_size;
    for (std::size_t i = 0; i < targets.size(); ++i) {
      TG_CHECK(targets[i] == kernels::kIgnoreIndex || (targets[i] >= 0 && targets[i] < vocab), "GemmaForCausalLM: ",
               "target ", i, " is ", targets[i], ", expected -100 (ignored) or a token id in [0, ", vocab, ")");
    }
    target_staging = targets;
    copy_async(v.targets, TensorView(target_staging.data(), DType::I32, v.targets.shape, Device::CPU), opts.stream);
  }

  // The views for this key, (re)allocating the arena if it is too small.
  Views prepare(const PlanKey& k) {
    Buffers counter;
    carve(counter, k);
    if (arena.capacity() < counter.bytes()) {
      arena = Arena();  // free first: the old and new arenas need not coexist
      arena = Arena(counter.bytes(), opts.device);
    }
    arena.reset();
    Buffers b(arena);
    key = k;
    views = carve(b, k);
    return views;
  }
};

GemmaForCausalLM::GemmaForCausalLM(ModelWeights weights, const ModelOptions& opts) : s_(std::make_unique<State>()) {
  State& s = *s_;
  s.opts = opts;
  s.w = std::move(weights);
  const GemmaConfig& cfg = s.w.config;
  TG_CHECK(s.w.device == opts.device, "GemmaForCausalLM: the weights live on ", s.w.device, ", the options ask for ",
           opts.device);
  TG_CHECK(opts.device == Device::CPU || cuda_available(),
           "GemmaForCausalLM: --device cuda needs a CUDA build and a visible GPU");
  TG_CHECK(s.w.storage == opts.storage, "GemmaForCausalLM: the weights were built with ",
           weight_storage_name(s.w.storage), " storage, the options ask for ", weight_storage_name(opts.storage));
  check_model_shapes(cfg, opts.recipe, opts.fp8_lm_head);
  if (opts.recipe.is_fp8()) {
    TG_CHECK(s.w.recipe == opts.recipe, "GemmaForCausalLM: the weights' FP8 copies were made for '",
             s.w.recipe.to_string(), "', the model runs '", opts.recipe.to_string(), "'");
    TG_CHECK(!opts.fp8_lm_head || s.w.lm_head.has_fp8, "GemmaForCausalLM: fp8_lm_head needs the FP8 copy of the ",
             "embedding (build the weights with WeightOptions::fp8_lm_head)");
  }

  inject_weight_fault(opts.fault, s.w, opts.stream);  // test-only, inert by default
  inject_scale_fault(opts.fault, s.w, opts.stream);
  s.precision = Precision(opts.recipe, opts.device);
  s.inv_freq = kernels::rope_inv_freq_table(cfg.head_dim, static_cast<float>(cfg.rope_theta), 1.0f, opts.device);
  if (opts.fault.kind == FaultInjection::Kind::kRopeSwap) s.fault_inv_freq = faulty_rope_table(s.inv_freq);
  if (opts.device == Device::CUDA) {
    const int64_t positions = kernels::rope_table_positions(cfg.max_position_embeddings, cfg.head_dim);
    s.rope_table = kernels::rope_cos_sin_table(s.inv_freq, positions, opts.device, opts.stream);
    if (s.fault_inv_freq.data() != nullptr) {
      s.fault_rope_table = kernels::rope_cos_sin_table(s.fault_inv_freq, positions, opts.device, opts.stream);
    }
  }
  s.embed_scale = kernels::embedding_scale(cfg.hidden_size, DType::BF16);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const bool faulty = opts.fault.hits(FaultInjection::Kind::kRopeSwap, l);
    const Tensor* freq = faulty ? &s.fault_inv_freq : &s.inv_freq;
    const Tensor& table = faulty ? s.fault_rope_table : s.rope_table;
    s.layers.emplace_back(cfg, s.w.layers[static_cast<std::size_t>(l)], l, s.precision, freq, opts.attention,
                          table.data() != nullptr ? &table : nullptr);
    s.layers.back().set_deterministic(opts.deterministic);
  }
  s.lm_head = LayerNormLinear(&s.w.final_norm, &s.w.lm_head, s.precision.add_gemm("lm_head", opts.fp8_lm_head),
                              static_cast<float>(cfg.rms_norm_eps));
  s.precision.finalize();
}

namespace {
WeightOptions weight_options(const ModelOptions& o) {
  WeightOptions w;
  w.device = o.device;
  w.recipe = o.recipe;
  w.storage = o.storage;
  w.fp8_lm_head = o.fp8_lm_head;
  w.stream = o.stream;
  return w;
}
}  // namespace

GemmaForCausalLM GemmaForCausalLM::load(const std::filesystem::path& dir, const ModelOptions& opts) {
  check_model_shapes(load_config(dir), opts.recipe, opts.fp8_lm_head);  // before reading gigabytes
  return GemmaForCausalLM(load_weights(dir, weight_options(opts)), opts);
}

GemmaForCausalLM GemmaForCausalLM::random(const GemmaConfig& cfg, uint64_t seed, const ModelOptions& opts,
                                          const RandomInit& init) {
  check_model_shapes(cfg, opts.recipe, opts.fp8_lm_head);
  return GemmaForCausalLM(random_weights(cfg, seed, weight_options(opts), init), opts);
}

GemmaForCausalLM::GemmaForCausalLM(GemmaForCausalLM&&) noexcept = default;
GemmaForCausalLM& GemmaForCausalLM::operator=(GemmaForCausalLM&&) noexcept = default;
GemmaForCausalLM::~GemmaForCausalLM() = default;

const GemmaConfig& GemmaForCausalLM::config() const { return s_->w.config; }
const ModelOptions& GemmaForCausalLM::options() const { return s_->opts; }
const ModelWeights& GemmaForCausalLM::weights() const { return s_->w; }
ModelWeights& GemmaForCausalLM::weights() { return s_->w; }
const Tensor& GemmaForCausalLM::rope_inv_freq() const { return s_->inv_freq; }
const Tensor& GemmaForCausalLM::rope_table() const { return s_->rope_table; }
Precision& GemmaForCausalLM::precision() { return s_->precision; }
const Precision& GemmaForCausalLM::precision() const { return s_->precision; }
std::size_t GemmaForCausalLM::arena_bytes() const { return s_->arena.capacity(); }

void GemmaForCausalLM::reserve(int64_t max_tokens, int64_t max_sequences, const ForwardOptions& opts) {
  TG_CHECK(max_tokens >= 1 && max_sequences >= 1 && max_sequences <= max_tokens,
           "reserve: expected 1 <= max_sequences <= max_tokens, got ", max_sequences, " and ", max_tokens);
  PlanKey k{max_tokens, max_sequences, opts.logits, opts.training, s_->precision.phase()};
  s_->prepare(k);
}

TensorView GemmaForCausalLM::forward(const Batch& batch, const ForwardOptions& opts,
                                     const std::function<void(int64_t, const TensorView&)>& on_layer) {
  State& s = *s_;
  const GemmaConfig& cfg = s.w.config;
  batch.validate(cfg.vocab_size, cfg.max_position_embeddings);
  TG_CHECK(!opts.training || s.w.storage == WeightStorage::kMaster,
           "forward: training needs master weights (the model holds FP8-only weights)");
  const Stream stream = s.opts.stream;
  const PlanKey k{batch.num_tokens(), batch.num_sequences(), opts.logits, opts.training, s.precision.phase()};
  const State::Views v = s.prepare(k);
  BatchView bv = v.batch;
  bv.max_seqlen = batch.max_seqlen;
  TG_NVTX_RANGE("GemmaForCausalLM::forward");
  const TensorView h = s.body(batch, v, bv, opts.training, on_layer);
  if (opts.logits == LogitsMode::kNone) return TensorView{};

  TensorView x = h;
  if (opts.logits == LogitsMode::kLastPerSequence) {
    // The gather is the embedding kernel with the hidden states as the table and scale 1 (exact).
    kernels::embedding_forward(bv.last_rows, h, 1.0f, v.h_last.slice_rows(0, bv.sequences), v.status, stream);
    if (v.lm_rows > bv.sequences) zero_async(v.h_last.slice_rows(bv.sequences, v.lm_rows), stream);
    x = v.h_last;
  }
  s.lm_head.forward(x, v.lm, v.logits, 0.0f, s.precision, stream);
  return v.logits.slice_rows(0, v.out_rows);
}

ForwardOutput GemmaForCausalLM::run(const Batch& batch, const ForwardOptions& opts) {
  ForwardOutput out;
  const Stream stream = s_->opts.stream;
  std::function<void(int64_t, const TensorView&)> on_layer;
  if (opts.taps) {
    on_layer = [&](int64_t, const TensorView& h) {
      sync_stream(stream);
      out.taps.push_back(to_host_f32(h, batch.num_tokens()));
    };
  }
  const TensorView logits = forward(batch, opts, on_layer);
  sync_stream(stream);
  if (!logits.empty()) out.logits = to_host_f32(logits, logits.shape[0]);
  const State::Views& v = s_->views;
  if (opts.taps && !logits.empty() && !v.lm.ln_out.hp.empty()) {
    out.final_hidden = to_host_f32(v.lm.ln_out.hp, v.out_rows);
  }
  return out;
}

int64_t GemmaForCausalLM::loss_chunk_rows(int64_t tokens) const {
  TG_CHECK(tokens >= 1, "loss_chunk_rows: expected tokens >= 1, got ", tokens);
  int64_t c = s_->opts.loss_chunk_rows;
  if (c <= 0) {  // about 1 GiB of BF16 logits, in multiples of 64 rows
    const int64_t budget = (int64_t{1} << 30) / (2 * s_->w.config.vocab_size);
    c = std::max<int64_t>(64, budget / 64 * 64);
  }
  return std::min(c, tokens);
}

void GemmaForCausalLM::forward_backward(const Batch& batch, const std::vector<int32_t>& targets, float scale,
                                        const ModelGrads& grads, const TensorView& loss_sum) {
  State& s = *s_;
  const GemmaConfig& cfg = s.w.config;
  batch.validate(cfg.vocab_size, cfg.max_position_embeddings);
  TG_CHECK(s.w.storage == WeightStorage::kMaster, "forward_backward: training needs master weights (the model ",
           "holds FP8-only weights)");
  TG_CHECK(!s.opts.fp8_lm_head, "forward_backward: training runs the tied lm_head in BF16 (the embedding table ",
           "is its weight); build the model without fp8_lm_head");
  TG_CHECK(static_cast<int64_t>(grads.layers.size()) == cfg.num_hidden_layers, "forward_backward: grads have ",
           grads.layers.size(), " layers, the model ", cfg.num_hidden_layers);
  const Stream stream = s.opts.stream;
  PlanKey k{batch.num_tokens(), batch.num_sequences(), LogitsMode::kNone, true, s.precision.phase()};
  k.loss = LossPlan::kTrain;
  k.chunk = loss_chunk_rows(batch.num_tokens());
  const State::Views v = s.prepare(k);
  BatchView bv = v.batch;
  bv.max_seqlen = batch.max_seqlen;
  TG_NVTX_RANGE("GemmaForCausalLM::forward_backward");
  s.upload_targets(v, batch, targets);
  const TensorView h = s.body(batch, v, bv, /*training=*/true, {});
  s.lm_loss(v, bv, h, scale, loss_sum, &grads);

  // The layers in reverse; dh ping-pongs between the two buffers (a layer's dh_in must not alias its dh_out).
  TensorView dh = v.dh[0], other = v.dh[1];
  for (int64_t l = static_cast<int64_t>(s.layers.size()) - 1; l >= 0; --l) {
    const auto i = static_cast<std::size_t>(l);
    const TensorView h_in = l == 0 ? v.h : v.layers[i - 1].h_out;
    s.layers[i].backward(h_in, bv, v.layers[i], dh, other, v.layer_bw, grads.layers[i], s.precision, stream);
    std::swap(dh, other);
  }
  // The embedding's scatter-add joins the lm_head's wgrad in the tied F32 buffer (ids were checked on the host).
  kernels::embedding_backward(bv.token_ids, dh.slice_rows(0, bv.tokens), s.embed_scale, grads.embed, v.status,
                              stream);
}

void GemmaForCausalLM::loss(const Batch& batch, const std::vector<int32_t>& targets, float scale,
                            const TensorView& loss_sum) {
  State& s = *s_;
  const GemmaConfig& cfg = s.w.config;
  batch.validate(cfg.vocab_size, cfg.max_position_embeddings);
  TG_CHECK(!s.opts.fp8_lm_head, "loss: computed with the BF16 lm_head (the embedding table); build the model ",
           "without fp8_lm_head");
  // Evaluation must not feed the delayed-scaling amax histories: run it in the inference phase.
  const bool was_training = s.precision.phase() == ScalingPhase::kTraining;
  if (was_training) s.precision.set_training(false);
  PlanKey k{batch.num_tokens(), batch.num_sequences(), LogitsMode::kNone, false, s.precision.phase()};
  k.loss = LossPlan::kEval;
  k.chunk = loss_chunk_rows(batch.num_tokens());
  try {
    const State::Views v = s.prepare(k);
    BatchView bv = v.batch;
    bv.max_seqlen = batch.max_seqlen;
    TG_NVTX_RANGE("GemmaForCausalLM::loss");
    s.upload_targets(v, batch, targets);
    const TensorView h = s.body(batch, v, bv, /*training=*/false, {});
    s.lm_loss(v, bv, h, scale, loss_sum, nullptr);
  } catch (...) {
    if (was_training) s.precision.set_training(true);
    throw;
  }
  if (was_training) s.precision.set_training(true);
}

void GemmaForCausalLM::begin_calibration() { s_->precision.begin_calibration(s_->opts.stream); }
void GemmaForCausalLM::finish_calibration() { s_->precision.finish_calibration(s_->opts.stream); }

void GemmaForCausalLM::calibrate(const std::vector<Batch>& batches) {
  begin_calibration();
  ForwardOptions fo;
  fo.logits = s_->opts.fp8_lm_head ? LogitsMode::kLastPerSequence : LogitsMode::kNone;
  for (const Batch& b : batches) forward(b, fo);
  finish_calibration();
  sync_stream(s_->opts.stream);
}

void GemmaForCausalLM::requantize_weights() {
  quantize_weights(s_->w, s_->opts.recipe, s_->opts.fp8_lm_head, /*columnwise=*/false, s_->opts.stream);
  inject_scale_fault(s_->opts.fault, s_->w, s_->opts.stream);  // test-only, inert by default
}

void GemmaForCausalLM::save(const std::filesystem::path& dir, DType file_dtype) const {
  sync_stream(s_->opts.stream);
  save_checkpoint(dir, s_->w, file_dtype);
}

}  // namespace tg::impl
