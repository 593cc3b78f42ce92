// KV-cached generation with the impl model: HF generate() semantics (impl/generate/generation.h), greedy,
// sampling (temperature, top-k, top-p, repetition penalty, min_new_tokens, per-sequence EOS and budgets) and beam
// search, on the CUDA backend (the product) or the CPU backend (CI: the same steps, eagerly).
//
//   prefill   the real prompt tokens only, packed (no padding anywhere), through Decoder::prefill: K / V into the
//             cache, logits of each prompt's last token, the first token selected on the device.
//   decode    Decoder::step for all B sequences at once: captured ONCE per batch size in a CUDA graph and
//             replayed, GeneratorOptions::steps_per_graph steps per replay (GeneratorOptions::cuda_graph; eager
//             otherwise: the same kernels, bit for bit). The state
//             (tokens, positions, lengths, EOS flags, budgets, the RNG counter = tokens generated) lives on the
//             device and the step advances it itself; the host only reads back each step's B tokens and EOS
//             flags, asynchronously, a few launches behind, to stream text and to stop once every sequence
//             is finished. Finished sequences stop writing the cache and attending (length 0).
//   beam      host-side bookkeeping (impl/generate/beam_search.h) over the device logits; the cache rows are
//             reordered by parent beam on the device; each step's forward is the same captured graph with
//             selection off (tokens and positions uploaded by the host).
//
// Precision: whatever the model runs (bf16, delayed / current / block FP8, FP8-only weights, FP8 lm_head).
// Delayed scaling must be calibrated first (Generator::calibrate or GemmaForCausalLM::calibrate): generation
// with the initial scales of 1 is refused. The KV cache is BF16 or FP8 E4M3 (impl/kv_cache.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "impl/batch.h"
#include "impl/generate/cuda_runtime_utils.h"
#include "impl/generate/decoder.h"
#include "impl/generate/generation.h"
#include "impl/kv_cache.h"
#include "impl/model.h"

namespace tg::impl {

inline constexpr int64_t kDefaultStepsPerGraph = 4;

struct GeneratorOptions {
  int64_t max_batch = 1;         // KV cache slots: prompts x num_beams per generate() call
  int64_t max_seq = 0;           // positions per sequence (prompt + new tokens); 0 = max_position_embeddings
  DType kv_dtype = DType::BF16;  // BF16 or E4M3 (impl/kv_cache.h)
  bool kv_per_head_scale = true;
  float kv_headroom = 2.0f;
  bool cuda_graph = true;    // CUDA: replay a captured decode step (false: launch the same kernels eagerly)
  int64_t lookahead = 4;     // CUDA: decode steps in flight before the host waits (Generator::launches_in_flight)
  // CUDA graphs: decode steps per replay, in [1, 64]; 0 = TEGEMMA_DECODE_STEPS_PER_GRAPH, else
  // kDefaultStepsPerGraph (4: H200, session 21, decode B1 delayed + FP8 head, tok/s S = 1 / 4 / 8: gemma-2b 1006.4 /
  // 1014.3 / 1013.6, gemma-7b 354.1 / 356.4 at S = 4; B16 2b 11378 / 11285, 7b 4258 / 4262, single runs). S > 1
  // also captures S steps back to back in one graph: no graph launch or read-back between them, their kernels chained
  // by PDL; each captured step's sampler writes its flags (kernels::DecodeState::flags) into its own row of a
  // device buffer, read back once per replay. The decode loop replays it while S or more steps remain, then runs
  // single steps. The same tokens either way; the price is the steps already launched when the host learns that
  // every sequence has finished (Generator::launches_in_flight). Greedy and sampling only: captured on a batch
  // size's first such call (beam search and the teacher-forced steps keep single steps).
  int64_t steps_per_graph = 0;
};

class Generator {
 public:
  // The model must outlive the generator. Its stream is synchronised once; the generator then works on a
  // stream of its own (CUDA graphs cannot capture the legacy default stream).
  Generator(GemmaForCausalLM& model, const GeneratorOptions& opts = {});
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // Generates for unpadded prompts (token ids). Bad input -> tg::Error naming it: an empty prompt list or
  // prompt, a token id outside the vocabulary, a prompt + max_new_tokens beyond the context (max_seq), more
  // sequences (prompts x num_beams) than the cache's max_batch, inconsistent generation parameters, an
  // uncalibrated delayed-scaling model.
  GenerationResult generate(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& cfg,
                            const TokenCallback& on_token = {});

  // Delayed scaling: the model's calibration (GemmaForCausalLM::calibrate) on these batches; an FP8 cache:
  // its scales from the same prompts' K / V, frozen afterwards.
  void calibrate(const std::vector<Batch>& batches);

  // ---- Teacher forcing (tests, parity): the cache and the steps without selection --------------------------
  // Prefill of the prompts into cache slots 0 .. B-1: host F32 logits [B, V] of each prompt's last token.
  Tensor prefill_logits(const std::vector<std::vector<int64_t>>& prompts);
  // One decode step of B = tokens.size() sequences (slots 0 .. B-1): sequence b feeds tokens[b] at
  // positions[b] (-1: the row is idle: no cache write, no attention). Host F32 logits [B, V].
  Tensor step_logits(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions);

  const KvCacheSet& cache() const { return cache_; }
  const GeneratorOptions& options() const { return opts_; }
  Stream stream() const { return stream_; }
  bool uses_graphs() const { return graphs_; }
  int64_t graph_captures() const { return captures_; }  // batch sizes captured (each: its step graph(s))
  int64_t steps_per_graph() const { return multi_steps_; }
  // Decode launches (single steps or S-step replays) in flight before the host waits for the oldest one's flags:
  // lookahead + 1 single steps; for S > 1, max(2, ceil(lookahead / S)) + 1 replays. After the last sequence
  // finishes, at most S - 1 + (launches_in_flight() - 1) x S more steps run (idle rows, nothing recorded).
  int64_t launches_in_flight() const;
  int64_t decode_steps_run() const { return steps_run_; }

 private:
  struct Plan {
    std::unique_ptr<Decoder::StepBuffers> sb;
    CudaGraph graph;
    // GeneratorOptions::steps_per_graph > 1: the graph of that many steps and its flags, I32 [2 S, B] on the device
    // (step j's last | finished in rows 2 j, 2 j + 1); empty until capture_multi_step.
    CudaGraph multi_graph;
    Tensor multi_flags;
    kernels::SamplingParams params;  // the host copy of what sb->params holds
    // CUDA: the read-back ring (ring_slots() slots of S x last | finished [2 B], page-locked) and its events, made
    // once per batch size: cudaMallocHost / cudaFreeHost per generate() would cost a device synchronisation.
    PinnedBuffer ring;
    std::vector<CudaEvent> ready;
    std::unique_ptr<CudaEvent> ev0, ev_first, ev_end;
  };
  Plan& plan(int64_t batch);
  int64_t ring_slots() const;            // the read-back ring: max(lookahead + 1, launches_in_flight())
  void capture_multi_step(Plan& p, int64_t batch);  // the S-step graph, on a batch size's first sampling call
  void run_step(Plan& p, int64_t n = 1);  // one step, or with n = multi_steps_ > 1 one replay of the S-step graph
  void set_params(Plan& p, const kernels::SamplingParams& params);
  KvScaleMode prefill_scale_mode() const;
  GenerationResult sample_loop(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& cfg,
                               const std::vector<int64_t>& eos, int64_t pad, const TokenCallback& on_token);
  GenerationResult beam_loop(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& cfg,
                             const std::vector<int64_t>& eos, int64_t pad, const TokenCallback& on_token);
  Tensor logits_to_host(const TensorView& logits) const;

  GemmaForCausalLM* model_;
  GeneratorOptions opts_;
  OwnedStream owned_stream_;
  Stream stream_;
  bool cuda_ = false, graphs_ = false;
  KvCacheSet cache_;
  Decoder decoder_;
  std::map<int64_t, Plan> plans_;
  int64_t captures_ = 0, steps_run_ = 0;
  int64_t multi_steps_ = 1;  // GeneratorOptions::steps_per_graph resolved; 1 without graphs
};

}  // namespace tg::impl
