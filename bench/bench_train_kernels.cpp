// The training-only kernels against the 4.1 TB/s HBM roofline: the fused cross-entropy of the lm_head
// (kernels/loss: loss + logit gradient in one pass) and the multi-tensor AdamW step (kernels/optim), at the gemma-2b
// training shapes. Both are memory-bound: one pass over [T, V] BF16 logits, one pass over ~2.5B parameters' FP32
// state.
//
// Names: <op>/<in>-><out>/<shape>, as bench_elementwise (tegemma report files "cross_entropy" and "adamw" under its
// elementwise section):
//   cross_entropy/bf16->bf16/<T>x256000   loss + dlogits written IN PLACE over the logits (what impl/model.cpp's
//                                         lm_loss does), T = 8192 (4 x 2048 in one launch), 2048 (the trainer's
//                                         chunk: loss_chunk_rows picks ~1 GiB of BF16 logits = 2048 rows), 1024
//   cross_entropy/bf16->f32/8192x256000   loss only (evaluation: dlogits empty; the F32 row losses are the output)
//   adamw/f32/gemma-2b                    kernels::adamw_step over gemma-2b's full table, built as impl/optimizer.cpp
//                                         builds it: 110 parameters (embedding, 18 x {input_norm, qkv, o,
//                                         post_attention_norm, fc1, fc2}, final norm; norms without weight decay),
//                                         2.51e9 elements in one flat F32 buffer each for the masters, gradients
//                                         and both moments, the BF16 compute copies refreshed in the same pass
//   adamw/f32/32768x2048                  the same over ONE tensor (gemma-2b's fc1, 67M elements): no table
//                                         effects, the kernel's streaming rate alone
// Bytes per launch (the op's minimal traffic; the fraction is of that, as in bench_elementwise):
//   cross_entropy, in place   logits read once 2TV + dlogits written once 2TV + targets 4T + row_loss 4T + loss 8
//                             (the kernel's second sweep over a row, when it re-reads the 512 KB row for the
//                             gradient, is not counted: it is served partly by L2 and is not minimal traffic)
//   cross_entropy, loss only  logits 2TV + targets 4T + row_loss 4T + loss 8
//   adamw                     per element 34 B: master read + write 8, grad read TWICE 8 (the global norm must be
//                             known before any update, so the sum-of-squares launch and the update launch each
//                             stream the grads: 10 GB of them cannot stay in L2), exp_avg and exp_avg_sq read +
//                             write 16, BF16 copy written 2; the chunk partials (8 B per 64k elements) and the
//                             table are ignored
// Counters: bytes_per_second, hbm_roofline_frac (bytes / time / 4.1e12), via set_roofline; adamw also
// elements_per_second.
// Inputs: logits pseudo-random BF16 around N(0, 1) (random_device), targets uniform over [0, V) with every 16th
// row ignored (-100), scale 1 / (counted targets) as the trainer's; AdamW masters and gradients around N(0, 1),
// moments zero at the start (then whatever the timed steps leave: the step is the same work for any finite values;
// the gradients are finite, so no step is skipped), lr 1e-4, weight decay 0.1, clipping at 1.0.
// Timing: CUDA events on the default stream around each launch (CudaEventTimer, manual time), one untimed warm-up
// launch first; no rotation or L2 flush: every working set here is >= 10x the 50 MB L2. In place, the cross-entropy
// overwrites its logits with gradients: later launches read those (finite, same work per element).
// Memory: cross_entropy 8192 rows 4.2 GB; adamw/gemma-2b 45 GB (4 x 10 GB F32 + 5 GB BF16). One benchmark's
// buffers live at a time.
#include <cuda_runtime.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "bench/common/bench_util.h"
#include "common/cuda_check.h"
#include "common/gemma_config.h"
#include "kernels/loss/loss.h"
#include "kernels/optim/optim.h"

namespace tg::bench {
namespace {

constexpr int64_t kVocab = 256000;

// ---- cross-entropy -------------------------------------------------------------------------------------------
void bm_cross_entropy(benchmark::State& state, int64_t rows, bool with_grad) {
  if (!cuda_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  try {
    Tensor logits = random_device(DType::BF16, {rows, kVocab}, 11);
    std::vector<int32_t> host_targets(static_cast<std::size_t>(rows));
    uint64_t x = 3;
    int64_t counted = 0;
    for (int64_t t = 0; t < rows; ++t) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      const bool ignored = t % 16 == 15;
      host_targets[static_cast<std::size_t>(t)] =
          ignored ? kernels::kIgnoreIndex : static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(kVocab));
      counted += ignored ? 0 : 1;
    }
    Tensor targets = Tensor::empty(DType::I32, {rows}, Device::CUDA);
    copy_bytes(targets.view(), TensorView(host_targets.data(), DType::I32, Shape{rows}, Device::CPU));
    Tensor row_loss = Tensor::empty(DType::F32, {rows}, Device::CUDA);
    Tensor loss = Tensor::zeros(DType::F32, {1}, Device::CUDA);
    const float scale = 1.0f / static_cast<float>(counted);
    const TensorView dlogits = with_grad ? logits.view() : TensorView{};
    auto op = [&] {
      kernels::cross_entropy(logits.view(), targets.view(), scale, dlogits, row_loss.view(), loss.view());
    };
    time_iterations(state, op);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  const double tv = static_cast<double>(rows) * static_cast<double>(kVocab);
  const double bytes = 2.0 * tv * (with_grad ? 2.0 : 1.0) + 8.0 * static_cast<double>(rows) + 8.0;
  set_roofline(state, bytes, 0.0);
}

// ---- AdamW ---------------------------------------------------------------------------------------------------
struct ParamShape {
  int64_t numel;
  bool decay;
};

// impl/optimizer.cpp's layout(): the trainable tensors in its order, with its weight-decay flags.
std::vector<ParamShape> gemma_parameters(const GemmaConfig& c) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  std::vector<ParamShape> out{{c.vocab_size * d, true}};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    out.push_back({d, false});                         // input_norm
    out.push_back({(c.q_dim() + 2 * c.kv_dim()) * d, true});  // qkv
    out.push_back({d * c.q_dim(), true});              // o
    out.push_back({d, false});                         // post_attention_norm
    out.push_back({2 * f * d, true});                  // fc1
    out.push_back({d * f, true});                      // fc2
  }
  out.push_back({d, false});  // final_norm
  return out;
}

TensorView flat_slice(const Tensor& t, int64_t offset, int64_t n) {
  return TensorView(static_cast<char*>(t.data()) + offset * static_cast<int64_t>(dtype_size(t.dtype())), t.dtype(),
                    Shape{n}, Device::CUDA);
}

void bm_adamw(benchmark::State& state, std::vector<ParamShape> params) {
  if (!cuda_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  int64_t numel = 0;
  for (const ParamShape& p : params) numel += p.numel;
  try {
    // One flat buffer per role, as impl::Optimizer keeps them.
    const Tensor master = random_device(DType::F32, {numel}, 21);
    const Tensor grad = random_device(DType::F32, {numel}, 22);
    const Tensor exp_avg = Tensor::zeros(DType::F32, {numel}, Device::CUDA);
    const Tensor exp_avg_sq = Tensor::zeros(DType::F32, {numel}, Device::CUDA);
    const Tensor copy = Tensor::empty(DType::BF16, {numel}, Device::CUDA);
    std::vector<kernels::AdamWParam> table;
    int64_t offset = 0;
    for (const ParamShape& p : params) {
      table.push_back({flat_slice(master, offset, p.numel), flat_slice(grad, offset, p.numel),
                       flat_slice(exp_avg, offset, p.numel), flat_slice(exp_avg_sq, offset, p.numel),
                       flat_slice(copy, offset, p.numel), p.decay});
      offset += p.numel;
    }
    const kernels::AdamWTable t(std::move(table));
    const Tensor adam_state = kernels::adamw_initial_state(Device::CUDA);
    const Tensor status = Tensor::zeros(DType::F32, {4}, Device::CUDA);
    const Tensor workspace = kernels::adamw_workspace(t);
    kernels::AdamWHyper h;
    h.lr = 1e-4;
    h.weight_decay = 0.1;
    h.max_grad_norm = 1.0;
    auto op = [&] { kernels::adamw_step(t, h, adam_state.view(), status.view(), workspace.view()); };
    time_iterations(state, op);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  set_roofline(state, 34.0 * static_cast<double>(numel), 0.0);
  state.counters["elements_per_second"] =
      benchmark::Counter(static_cast<double>(numel), benchmark::Counter::kIsIterationInvariantRate);
}

void add(const std::string& name, auto fn) {
  benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond);
}

// gemma-2b's fc1 [2F, D]: the single-tensor AdamW case.
constexpr int64_t kFc1Rows = 32768, kFc1Cols = 2048;

const bool registered = [] {
  for (const int64_t rows : {8192, 2048, 1024}) {
    add("cross_entropy/bf16->bf16/" + std::to_string(rows) + "x" + std::to_string(kVocab),
        [=](benchmark::State& s) { bm_cross_entropy(s, rows, true); });
  }
  add("cross_entropy/bf16->f32/8192x" + std::to_string(kVocab),
      [](benchmark::State& s) { bm_cross_entropy(s, 8192, false); });
  // The presets are read when the benchmark runs, not during static initialisation.
  add("adamw/f32/gemma-2b",
      [](benchmark::State& s) { bm_adamw(s, gemma_parameters(GemmaConfig::preset("gemma-2b"))); });
  add("adamw/f32/" + std::to_string(kFc1Rows) + "x" + std::to_string(kFc1Cols),
      [](benchmark::State& s) { bm_adamw(s, {{kFc1Rows * kFc1Cols, true}}); });
  return true;
}();

}  // namespace
}  // namespace tg::bench

TG_BENCH_MAIN()
