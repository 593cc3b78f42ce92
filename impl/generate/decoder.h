// The model's forward pass for generation, in two shapes:
//
//   prefill  packed prompts (impl/batch.h: only real tokens, cu_seqlens): every layer as GemmaForCausalLM::forward
//            runs it (same modules' ops, same order, same precision paths), plus one kernels::kv_cache_write per
//            layer that stores the post-RoPE K and V of every prompt token in its sequence's cache slot; logits of
//            each prompt's last token only. Nothing is computed for padding because there is none.
//   step     one token per sequence at its own position, from device state only (kernels/sampling's
//            DecodeState: tokens, positions, lengths): embedding gather, per layer norm(+cast) -> QKV GEMM (M = B)
//            -> kv_cache_write_rope (RoPE + cache append + q to contiguous, one kernel) -> decode_attention over
//            the cache -> o-proj + residual
//            -> MLP, final norm, lm_head, then sample_tokens, which advances the state. No host value is read and
//            nothing is allocated, so the generator captures it once in a CUDA graph and replays it.
//            Its kernels launch with programmatic dependent launch (decode_programmatic_launch()): each starts
//            while the one before it drains and waits on the device for its results.
//            A step's GEMMs with at most decode_gemv_max_rows() rows run as kernels::gemv (weight streaming on the
//            CUDA cores) instead of cuBLASLt, when the weight is BF16 or per-tensor E4M3 (block scaling keeps
//            cuBLASLt), except those of 2 or more rows with N > 16384 (fc1, lm_head: measured faster on cuBLASLt,
//            decoder.cpp). The GEMV gets the GEMM's own A operand: BF16 for a BF16 site, the producer's E4M3 copy and
//            scale_inv for an FP8 site -- so a step computes the FP8 forward's products, only the FP32 summation
//            order differs (on the CPU backend the twins give the GEMM twins' bits: decode == forward still holds
//            bit for bit). The prefill always uses the GEMMs (its logits are the model forward's).
//
// Built from the model's weights, its Precision (recipe, delayed-scaling state: the GEMM sites are looked up by
// the names the model registered, "layers.<i>.qkv" ...) and kernels; the model's own forward is not touched.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "common/tensor.h"
#include "impl/batch.h"
#include "impl/buffers.h"
#include "impl/kv_cache.h"
#include "impl/model.h"
#include "impl/precision.h"
#include "kernels/sampling/sampling.h"

namespace tg::kernels {
struct GemvNorm;  // kernels/gemm/gemv.h
}

namespace tg::impl {

// How a prefill treats an FP8 cache's scales (impl/kv_cache.h).
enum class KvScaleMode : uint8_t {
  kFrozen,      // calibrated: use the scales as they are
  kFromPrompt,  // set each layer's scales from this prompt batch's K / V amax before writing
  kAccumulate,  // calibration: max-reduce the amax, leave the scales
};

class Decoder {
 public:
  // Activations of one forward over `rows` token rows (site-independent buffers, shared by the layers).
  struct Acts {
    int64_t rows = 0, lm_rows = 0;
    TensorView h;        // BF16 [rows, D]: the residual stream
    TensorView rstd;     // F32 [rows]
    GemmInput ln;        // [rows, D]: the QKV and fc1 GEMM inputs
    TensorView qkv;      // BF16 [rows, (H + 2 Hkv) Dh]
    GemmInput attn;      // [rows, H Dh]: attention output = o-proj input
    TensorView fc1;      // BF16 [rows, 2F]
    GemmInput act;       // [rows, F]
    TensorView x_last;   // BF16 [lm_rows, D]: prefill: each sequence's last row (decode: h itself)
    TensorView lm_rstd;  // F32 [lm_rows]
    GemmInput lm_in;     // [lm_rows, D]
    TensorView logits;   // BF16 [lm_rows, V]
    TensorView status;   // I32 [2]: embedding bad-id report (never read: ids are checked or sampled)
  };

  // Everything one decode step of B sequences reads and writes (one arena; the graph's fixed addresses).
  struct StepBuffers {
    int64_t batch = 0;
    Arena arena;
    Acts acts;
    TensorView ints;          // I32 [8 B]: tokens | positions | seqlens | last | finished | generated | max_new | slots
    kernels::DecodeState state;
    TensorView slots;         // I32 [B]: 0 .. B-1 (the cache slot of row b)
    TensorView params;        // U8 [sizeof(SamplingParams)]
    TensorView q;             // BF16 [B, H, Dh]: contiguous q for decode_attention
    kernels::Workspace attention_workspace;
  };

  explicit Decoder(GemmaForCausalLM& model);

  // Logits [B, V] (device BF16, valid until the next prefill) of each sequence's last token; sequence b's K / V go
  // to cache slot slots[b]. Asynchronous on `stream`.
  TensorView prefill(const Batch& batch, const std::vector<int32_t>& slots, const KvCacheSet& cache, KvScaleMode scales,
                     Stream stream);

  // Step buffers for `batch` sequences whose outputs hold up to `max_tokens` new tokens each. The GEMMs run on
  // round_up(batch, row_multiple) rows (zero padding rows that stay zero); 0 = the precision's row_multiple().
  // Block scaling's 128 is what its prefill / training operands need; a decode step's row-wise 1x128 operands
  // only need cuBLASLt's M % 8 (kernels/gemm), so the generator asks for kCompactBlockRows first: 8x less
  // GEMM work per step at batch 1.
  static constexpr int64_t kCompactBlockRows = 16;
  std::unique_ptr<StepBuffers> make_step_buffers(int64_t batch, int64_t max_tokens, const KvCacheSet& cache,
                                                 Stream stream, int64_t row_multiple = 0) const;
  // Enqueues one decode step (see the header comment). Capturable.
  void step(const StepBuffers& sb, const KvCacheSet& cache, Stream stream) const;

  const GemmaConfig& config() const { return model_->config(); }
  GemmaForCausalLM& model() const { return *model_; }

 private:
  struct LayerSites {
    GemmSite qkv, o, fc1, fc2;
  };
  Acts carve(Buffers& b, int64_t rows, int64_t lm_rows) const;
  // One layer over acts.h's first `tokens` rows; `attend(l, q, k, v, out)` applies RoPE, writes the cache and runs
  // the attention into acts.attn.hp [tokens, H Dh] (out), or straight into acts.attn's FP8 copy for the O
  // projection, returning true (the layer then skips its quantize; acts.attn.hp is not written).
  // clear_pad_rows: zero the attention output's padding rows (rows >= tokens) first; the prefill re-carves its
  // arena per call, a decode step's padding rows are zeroed once and nothing writes them.
  // gemv: the step's choice (rows <= decode_gemv_max_rows()); the GEMMs whose operands gemv cannot take still
  // run on cuBLASLt.
  // project_qkv(l, x, w, gemv, norm) may run the QKV projection itself and return true (the decode step's fused QKV
  // + RoPE + KV-cache write, kernels::gemv_qkv_rope; acts.qkv is then not written), else the layer runs it. norm
  // (or null): the input RMSNorm to run inside that kernel (kernels::GemvNorm; the layer then skips its own).
  // timed_gemv: the GEMMs not sent to gemv by `gemv` take the timed GEMV / cuBLASLt choice (a decode step past
  // decode_gemv_max_rows(); never the prefill, whose logits are the model forward's).
  template <typename Attend, typename ProjectQkv>
  void layer(int64_t l, const Acts& a, int64_t tokens, const Attend& attend, const ProjectQkv& project_qkv,
             bool clear_pad_rows, bool gemv, Stream stream, bool timed_gemv = false) const;
  void lm_head(const Acts& a, const TensorView& x, bool gemv, Stream stream) const;
  // fc1 + GeGLU -> E4M3 as one kernels::gemv_geglu unless TEGEMMA_DECODE_GEGLU_EPILOGUE=0 and when the step
  // qualifies (one row on the GEMV path, E4M3 per-tensor fc1 operands, fc2's input produced by the fused delayed
  // cast); false: the caller runs the two ops.
  bool fc1_geglu(const Acts& a, const LinearWeight& fc1, const GemmSite& fc2_site, bool gemv, Stream stream) const;
  // out [rows, N] = x W^T + beta * out through kernels::gemv when `gemv` (or `timed_gemv` and the timed choice,
  // decode_gemv_timed_enabled) and the operands allow, else Precision::linear.
  void linear(const GemmInput& x, const LinearWeight& w, const TensorView& out, float beta, bool gemv,
              Stream stream, bool timed_gemv = false) const;
  // The layer's input RMSNorm for the fused QKV kernel (kernels::GemvNorm) when the step runs it there, else none:
  // the norm is then its own kernel.
  std::optional<kernels::GemvNorm> fused_input_norm(int64_t l, const Acts& a, bool gemv) const;
  TensorView q_view(const TensorView& qkv, int64_t tokens) const;
  TensorView k_view(const TensorView& qkv, int64_t tokens) const;
  TensorView v_view(const TensorView& qkv, int64_t tokens) const;

  GemmaForCausalLM* model_;
  std::vector<LayerSites> sites_;
  GemmSite lm_site_;
  // The model's RoPE inputs (GemmaForCausalLM::rope_inv_freq / rope_table, owned by the model): inv_freq F32
  // [Dh / 2] and, on CUDA, its cos/sin table, read by prefill's rope_forward and the decode step's
  // kv_cache_write_rope instead of an FP64 sincos per element (the same bits); empty on the CPU.
  TensorView inv_freq_;
  TensorView rope_table_;
  float embed_scale_ = 1.0f;
  // Prefill buffers: grown on demand, re-carved per call (not captured).
  Arena prefill_arena_;
  std::vector<int32_t> staging_;
};

// Decode-step GEMMs of M <= this many rows use kernels::gemv (see the header comment); 0 turns it off, at most
// kernels::kGemvMaxRows. Process-wide, read each time a step is enqueued (a captured graph keeps the choice it was
// captured with). Default kDefaultDecodeGemvMaxRows, or TEGEMMA_DECODE_GEMV_MAX_ROWS from the environment when set
// (read once; for A/B runs without a rebuild). 4, measured: since session 14 the E4M3 GEMVs of M >= 2 run on the
// tensor cores (kernels/gemm/gemv.h), which beat cuBLASLt at M = 4 on the narrow shapes (2b QKV 6.30 vs 7.10 us, fc2
// 14.04 vs 14.98) but not at M = 16 (2b fc1 24.3 vs 20.9), and decode B16 (gemma-2b, delayed + FP8 head) ran
// 10952 tok/s with 16 rows as GEMVs against 11189 with 4 (H200, reports/runs/2026-12-02-h200-s14).
inline constexpr int64_t kDefaultDecodeGemvMaxRows = 4;
void set_decode_gemv_max_rows(int64_t rows);
int64_t decode_gemv_max_rows();

// Decode-step GEMMs of decode_gemv_max_rows() < M <= kernels::kGemvMaxRows rows that kernels::gemv can take (not
// the wide ones, N > 16384: fc1 and lm_head stay on cuBLASLt) run on whichever of kernels::gemv and cuBLASLt was
// faster on the call's own operands when the shape first came up outside a graph capture: each candidate's calls
// captured into a CUDA graph and its replays timed (interleaved, into a scratch output), the GEMV taken only if
// >= decode_gemv_min_gain() faster; cached per (M, N, K, dtypes, accumulate) for the process (the device and the
// recipe's accumulation mode are not in the key: a choice can only be slower elsewhere, never wrong). Before that
// under a capture, in deterministic mode (kernels::gemm_deterministic) and on the CPU backend: cuBLASLt, the fixed
// rule. Why: at 16 rows the GEMVs won on gemma-2b B16 (+4.3%) and lost on gemma-7b B16 (-11.6%) (H200, session
// 21): no row threshold fits both. The generator's eager first step of each batch size makes the choices, its
// graphs replay them. On unless TEGEMMA_DECODE_GEMV_TIMED=0 (read once; for A/B runs).
bool decode_gemv_timed_enabled();
inline constexpr double kDecodeGemvChoiceMinGain = 0.02;
// One timed choice (tests, reports).
struct DecodeGemvChoice {
  int64_t m = 0, n = 0, k = 0;
  DType x = DType::BF16, w = DType::BF16, out = DType::BF16;
  bool accumulate = false;  // out += x W^T (the residual stream)
  bool gemv = false;        // the choice
  double gemv_ms = 0.0, gemm_ms = 0.0;  // per call, the best of the timed rounds
};
std::vector<DecodeGemvChoice> decode_gemv_choices();
// Forgets every choice. The generator captures a batch size's multi-step graph lazily, after its single-step one:
// clearing (or switching deterministic GEMMs) in between lets the two graphs of one batch size choose differently.
void clear_decode_gemv_choices();
// The gain the GEMV needs over cuBLASLt to be chosen (default kDecodeGemvChoiceMinGain; <= 1; a very negative gain
// forces the GEMV, 1 forces cuBLASLt: tests); applies to choices made after the call.
void set_decode_gemv_min_gain(double gain);
double decode_gemv_min_gain();

// Whether decode steps launch their kernels with programmatic dependent launch (kernels/launch/
// programmatic_launch.h): on unless TEGEMMA_DECODE_PDL=0 in the environment (read once; for A/B runs). Results are
// the same bits either way; only the gaps between the kernels differ.
bool decode_programmatic_launch();

// Whether the decode step's residual GEMVs before a one-block RMSNorm kernel (O; fc2 where the next QKV kernel does
// not fuse the input norm, as on gemma-7b, or where the final norm follows) trigger their dependents right after their
// PDL wait (kernels::EarlyTriggerScope) instead of at the end of each block, so that the norm's block is placed, and
// waits, while they still run. On unless TEGEMMA_DECODE_NORM_EARLY_TRIGGER=0 (read once; for A/B runs). H200,
// session 23, decode B1 tok/s (delayed + FP8 head), five runs each: 2b 1012.2-1013.9 vs 1009.7-1011.7 without, 7b
// 354.7-356.7 vs 353.8-354.7; B4 within the spread. The same early trigger before decode attention (the fused QKV
// kernel) was slower (2b 995.6 / 996.7 vs 1012.2 / 1011.8, 7b 352.2 / 353.1 vs 354.7 / 354.5: its few dozen blocks
// then share SMs with the QKV grid), before the sampler (the lm_head) no different (1011.3 / 1013.1, 354.5 / 356.4).
// The same bits either way.
bool decode_norm_early_trigger();

// The delayed-scaling rows and FP8 flag of the model's GEMM `name` (as GemmaForCausalLM registered it).
GemmSite find_gemm_site(const Precision& p, const std::string& name, bool fp8);

}  // namespace tg::impl
