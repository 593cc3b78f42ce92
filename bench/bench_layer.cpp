// One Gemma decoder layer of the impl (impl::TransformerLayer: LayerNormLinear QKV, RoPE + cuDNN attention, the
// o-projection into the residual, LayerNormMLP), forward and forward + backward, in BF16 and under each FP8 recipe,
// on a packed batch of 4 sequences x 2048 tokens (gemma-2b and gemma-7b layer shapes). Between the kernel benchmarks
// (bench_gemm, bench_elementwise, bench_attention) and the whole step (bench_train): where a layer's time goes
// beyond its GEMMs and attention.
//
// Names: layer/ceiling_bf16/8192x8192x8192, layer/ceiling_fp8/8192x8192x8192   this run's GEMM ceilings (first)
//        layer/fwd/impl_<recipe>/<preset>/B4xS2048       the layer's training forward
//        layer/fwd_bwd/impl_<recipe>/<preset>/B4xS2048   forward, then backward from a given dh_out
//        recipe: bf16 | delayed | current | block (impl/recipe.h defaults); preset: gemma-2b | gemma-7b
// The layer runs as impl::GemmaForCausalLM::forward_backward runs each of its layers (training phase: per-layer
// activations kept, column-wise FP8 copies made in the forward's casts, the weights' column-wise FP8 copies for
// dgrad, E5M2 gradients under HYBRID, F32 weight-gradient accumulation): "fwd" is the training forward (the
// inference forward of the whole model is bench_model's prefill), so fwd_bwd - fwd is the backward.
// Not timed: the delayed-scaling updates (Precision::update_forward / update_backward: one launch per step for the
// whole model in the trainer, launched here after each timed iteration so the scales evolve as in training), the
// embedding, lm_head, loss and optimizer (bench_train_kernels, bench_train).
//
// Weights: the preset's layer 0 drawn by impl::random_weights (HF init, std 0.02) for a one-layer copy of the config
// with a 256-token vocabulary (the embedding is not used: a few KB instead of 1-1.6 GB drawn on the host), once per
// preset, then copied and quantized on the device per recipe (impl::copy_weights, column-wise FP8 copies). The layer's
// input h and the output gradient dh_out are pseudo-random BF16 around N(0, 1) (random_device); positions 0..2047
// per sequence. Two untimed warm-up steps (cuDNN plans, GEMM heuristics, delayed scales settled from their initial 1).
//
// Timing: CUDA events on the default stream (the layer's stream) around each forward or forward + backward
// (CudaEventTimer, manual time), fixed iteration counts as the end-to-end benchmarks (20 fwd, 10 fwd_bwd).
// Counters:
//   tokens_per_second    4 x 2048 tokens per iteration
//   flops, gemm_roofline_frac   model FLOPs / s against this run's GEMM ceiling: the BF16 ceiling for bf16, the FP8
//                        ceiling for the FP8 recipes (bench_model's convention; tegemma report labels it so)
//   arena_gib            the layer's activations + backward buffers
// Model FLOPs per layer (bench_model / bench_train's conventions, without the lm_head): N = D (H + 2 Hkv) Dh +
// H Dh D + 3 D F linear weights, A = 4 B H Dh S(S+1)/2 causal attention (QK^T and PV);
// fwd = 2 N T + A, fwd_bwd = 6 N T + 3 A (T = B S).
//
// No reference/ rows: the LibTorch reference exposes its building blocks (rms_norm, apply_rope, ...) and the whole
// tg::ref::GemmaModel, but no single decoder layer with a backward short of running the model under autograd; its
// end-to-end train step and prefill on the same batch are bench_reference's (e2e/train_step/reference/...,
// e2e/prefill/reference/...).
#include <cuda_runtime.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "bench/common/bench_util.h"
#include "common/cuda_check.h"
#include "common/gemma_config.h"
#include "impl/buffers.h"
#include "impl/grads.h"
#include "impl/modules/common.h"
#include "impl/modules/transformer_layer.h"
#include "impl/precision.h"
#include "impl/recipe.h"
#include "impl/weights.h"
#include "kernels/attention/attention.h"
#include "kernels/rope/rope.h"

namespace tg::bench {
namespace {

struct Workload {
  std::string preset;
  int64_t batch = 4, seqlen = 2048;
  int64_t tokens() const { return batch * seqlen; }
  std::string shape() const {
    std::string s("B");  // appended, not "B" + ...: GCC 12's -Wrestrict false positive on operator+(const char*, &&)
    s += std::to_string(batch);
    s += "xS";
    s += std::to_string(seqlen);
    return s;
  }
};

// The preset's one-layer config (layer 0's shapes; a tiny vocabulary: the embedding is never used).
GemmaConfig one_layer_config(const std::string& preset) {
  GemmaConfig c = GemmaConfig::preset(preset);
  c.num_hidden_layers = 1;
  c.vocab_size = 256;
  return c;
}

// One layer with everything it runs on, for one (preset, recipe). Heap-allocated and never moved: the layer holds
// pointers to the weights and to inv_freq.
struct Rig {
  std::string key;
  GemmaConfig cfg;
  impl::Recipe recipe;
  impl::ModelWeights weights;
  impl::Precision precision;
  Tensor inv_freq;
  impl::TransformerLayer layer;
  Tensor indices;  // I32: token ids (unused by the layer, zeros), positions, cu_seqlens, last rows
  impl::BatchView batch;
  Arena arena;
  impl::TransformerLayer::Activations act;
  impl::TransformerLayer::BackwardBuffers bw;
  Tensor h, dh_out, dh_in;
  Tensor grad_buffer;  // F32, the layer's weight gradients (accumulated into, as by the trainer)
  impl::LayerGrads grads;

  void forward() const { (void)layer.forward(h.view(), batch, act, precision, Stream{}); }
  void backward() const {
    layer.backward(h.view(), batch, act, dh_out.view(), dh_in.view(), bw, grads, precision, Stream{});
  }
  void update_scales(bool backward_too) {
    precision.update_forward();
    if (backward_too) precision.update_backward();
  }
};

struct Cache {
  std::string master_preset;
  std::unique_ptr<impl::ModelWeights> master;  // the preset's one-layer BF16 weights on the device
  std::unique_ptr<Rig> rig;
};
Cache& cache() {
  static Cache c;
  return c;
}

std::unique_ptr<Rig> make_rig(const Workload& w, const std::string& recipe_text) {
  Cache& c = cache();
  const GemmaConfig cfg = one_layer_config(w.preset);
  if (c.master_preset != w.preset) {
    c.master.reset();
    impl::WeightOptions mo;
    mo.device = Device::CUDA;
    c.master = std::make_unique<impl::ModelWeights>(impl::random_weights(cfg, 7, mo));
    c.master_preset = w.preset;
  }
  auto r = std::make_unique<Rig>();
  r->cfg = cfg;
  r->recipe = impl::Recipe::parse(recipe_text);
  impl::WeightOptions wo;
  wo.device = Device::CUDA;
  wo.recipe = r->recipe;
  wo.storage = impl::WeightStorage::kMaster;
  wo.columnwise = r->recipe.is_fp8();  // training: the dgrad GEMMs read the weights' transposed FP8 copies
  r->weights = impl::copy_weights(*c.master, wo);
  r->precision = impl::Precision(r->recipe, Device::CUDA);
  r->inv_freq =
      kernels::rope_inv_freq_table(cfg.head_dim, static_cast<float>(cfg.rope_theta), 1.0f, Device::CUDA);
  r->layer = impl::TransformerLayer(cfg, r->weights.layers[0], 0, r->precision, &r->inv_freq,
                                    kernels::AttentionBackend::kCudnn);
  r->precision.finalize();
  r->precision.set_training(true);

  // The packed batch: B sequences of S tokens, positions 0..S-1 each.
  const int64_t t = w.tokens(), m = r->precision.training_row_multiple();
  impl::BatchView& bv = r->batch;
  bv.tokens = t;
  bv.sequences = w.batch;
  bv.rows = (t + m - 1) / m * m;
  bv.max_seqlen = w.seqlen;
  std::vector<int32_t> host(static_cast<std::size_t>(2 * t + 2 * w.batch + 1), 0);
  for (int64_t i = 0; i < t; ++i) host[static_cast<std::size_t>(t + i)] = static_cast<int32_t>(i % w.seqlen);
  for (int64_t b = 0; b <= w.batch; ++b) host[static_cast<std::size_t>(2 * t + b)] = static_cast<int32_t>(b * w.seqlen);
  for (int64_t b = 0; b < w.batch; ++b) {
    host[static_cast<std::size_t>(2 * t + w.batch + 1 + b)] = static_cast<int32_t>((b + 1) * w.seqlen - 1);
  }
  r->indices = Tensor::empty(DType::I32, {static_cast<int64_t>(host.size())}, Device::CUDA);
  copy_bytes(r->indices.view(), TensorView(host.data(), DType::I32, r->indices.shape(), Device::CPU));
  auto part = [&](int64_t begin, int64_t n) {
    return TensorView(r->indices.view().ptr<int32_t>() + begin, DType::I32, Shape{n}, Device::CUDA);
  };
  bv.token_ids = part(0, t);
  bv.positions = part(t, t);
  bv.cu_seqlens = part(2 * t, w.batch + 1);
  bv.last_rows = part(2 * t + w.batch + 1, w.batch);

  // Activations and backward buffers: counted, then carved from one arena (as the model does).
  impl::Buffers counter;
  (void)r->layer.allocate(counter, bv, r->precision, /*training=*/true);
  (void)r->layer.allocate_backward(counter, bv, r->precision);
  r->arena = Arena(counter.bytes(), Device::CUDA);
  impl::Buffers b(r->arena);
  r->act = r->layer.allocate(b, bv, r->precision, /*training=*/true);
  r->bw = r->layer.allocate_backward(b, bv, r->precision);

  const int64_t d = cfg.hidden_size;
  r->h = random_device(DType::BF16, {bv.rows, d}, 31);
  r->dh_out = random_device(DType::BF16, {bv.rows, d}, 32);
  r->dh_in = Tensor::empty(DType::BF16, {bv.rows, d}, Device::CUDA);
  if (bv.rows > t) {  // padding rows are zero, as the model keeps them
    impl::zero_async(r->h.view().slice_rows(t, bv.rows), Stream{});
    impl::zero_async(r->dh_out.view().slice_rows(t, bv.rows), Stream{});
  }

  const int64_t qkv = (cfg.q_dim() + 2 * cfg.kv_dim()), f = cfg.intermediate_size;
  const std::vector<Shape> shapes = {{d}, {qkv, d}, {d, cfg.q_dim()}, {d}, {2 * f, d}, {d, f}};
  int64_t numel = 0;
  for (const Shape& s : shapes) numel += s.numel();
  r->grad_buffer = Tensor::zeros(DType::F32, {numel}, Device::CUDA);
  std::vector<TensorView> views;
  int64_t offset = 0;
  for (const Shape& s : shapes) {
    views.emplace_back(r->grad_buffer.view().ptr<float>() + offset, DType::F32, s, Device::CUDA);
    offset += s.numel();
  }
  r->grads = {views[0], views[1], views[2], views[3], views[4], views[5]};

  for (int i = 0; i < 2; ++i) {  // warm-up
    r->forward();
    r->backward();
    r->update_scales(true);
  }
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  r->key = w.preset + "/" + recipe_text;
  return r;
}

Rig& rig_for(const Workload& w, const std::string& recipe) {
  Cache& c = cache();
  if (c.rig && c.rig->key == w.preset + "/" + recipe) return *c.rig;
  c.rig.reset();
  TG_CHECK_CUDA(cudaDeviceSynchronize());
  c.rig = make_rig(w, recipe);
  return *c.rig;
}

void bm_layer(benchmark::State& state, Workload w, std::string recipe, bool backward) {
  if (!cuda_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  Rig* r = nullptr;
  try {
    r = &rig_for(w, recipe);
    for (auto _ : state) {
      {
        CudaEventTimer timer(state);
        r->forward();
        if (backward) r->backward();
      }
      r->update_scales(backward);  // after the stop event: untimed
    }
  } catch (const std::exception& e) {
    cache().rig.reset();
    state.SkipWithError(e.what());
    return;
  }
  const GemmaConfig& cfg = r->cfg;
  const double t = static_cast<double>(w.tokens());
  const double n = layer_linear_params(cfg);
  const double a = layer_attention_flops(cfg, static_cast<double>(w.batch), causal_pairs(static_cast<double>(w.seqlen)));
  const double flops = backward ? 6.0 * n * t + 3.0 * a : 2.0 * n * t + a;
  set_tokens(state, t);
  set_roofline(state, 0.0, flops, r->recipe.is_fp8() ? Ceiling::kFp8Gemm : Ceiling::kBf16Gemm);
  state.counters["arena_gib"] = static_cast<double>(r->arena.capacity()) / (1ull << 30);
}

void add(const std::string& name, auto fn, int iterations) {
  benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(iterations);
}

const bool registered = [] {
  // This run's GEMM ceilings (bench/common), first: 5 iterations of 10 calls.
  add("layer/ceiling_bf16/8192x8192x8192", [](benchmark::State& st) { bm_gemm_ceiling(st, Ceiling::kBf16Gemm); }, 5);
  add("layer/ceiling_fp8/8192x8192x8192", [](benchmark::State& st) { bm_gemm_ceiling(st, Ceiling::kFp8Gemm); }, 5);
  for (const char* preset : {"gemma-2b", "gemma-7b"}) {
    const Workload w{preset};
    for (const char* recipe : {"bf16", "delayed", "current", "block"}) {
      const std::string tail = std::string("/impl_") + recipe + "/" + preset + "/" + w.shape();
      add("layer/fwd" + tail, [=](benchmark::State& st) { bm_layer(st, w, recipe, false); }, 20);
      add("layer/fwd_bwd" + tail, [=](benchmark::State& st) { bm_layer(st, w, recipe, true); }, 10);
    }
  }
  return true;
}();

}  // namespace
}  // namespace tg::bench

TG_BENCH_MAIN()
