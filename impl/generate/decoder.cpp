#include "impl/generate/decoder.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/env.h"
#include "common/nvtx.h"
#include "impl/generate/cuda_runtime_utils.h"
#include "impl/scaling.h"
#include "kernels/attention/attention.h"
#include "kernels/embedding/embedding.h"
#include "kernels/gemm/gemm.h"
#include "kernels/gemm/gemv.h"
#include "kernels/kv_cache/kv_cache.h"
#include "kernels/launch/programmatic_launch.h"
#include "kernels/rope/rope.h"

namespace tg::impl {

namespace {
int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

// Row r of an F32 [2, S] tensor as [S].
TensorView row_of(const TensorView& t, int64_t r) {
  const int64_t s = t.shape[1];
  return TensorView(t.ptr<float>() + r * s, DType::F32, Shape{s}, t.device);
}

void zero_view(const TensorView& t, Stream stream) {
  if (!t.empty()) zero_async(t, stream);
}
void zero_input(const GemmInput& in, Stream stream) {
  zero_view(in.hp, stream);
  zero_view(in.fp8.data, stream);
}

std::atomic<int64_t>& gemv_max_rows_setting() {
  static std::atomic<int64_t> rows{std::min<int64_t>(
      env_int("TEGEMMA_DECODE_GEMV_MAX_ROWS", kDefaultDecodeGemvMaxRows, 0, std::numeric_limits<int64_t>::max()),
      kernels::kGemvMaxRows)};
  return rows;
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// kernels::gemv's vector rules (gemv.h) for x [M, K] and W [N, K]; false sends the GEMM to cuBLASLt instead.
bool gemv_vectors_fit(const TensorView& x, const TensorView& w) {
  const int64_t xb = static_cast<int64_t>(dtype_size(x.dtype)), wb = static_cast<int64_t>(dtype_size(w.dtype));
  return x.ndim() == 2 && w.ndim() == 2 && x.strides[1] == 1 && w.strides[1] == 1 && x.shape[1] % (16 / wb) == 0 &&
         x.strides[0] * xb % 16 == 0 && w.strides[0] * wb % 16 == 0 && aligned16(x.data) && aligned16(w.data);
}

// The GEMV operands of x W^T when gemv can take them: the GEMM's own A operand (BF16 hp, or the per-tensor E4M3
// copy with its scale_inv) and the weight it would read (BF16 master, or the per-tensor E4M3 copy).
struct GemvPair {
  kernels::GemvOperand x, w;
};
std::optional<GemvPair> gemv_operands(const GemmInput& x, const LinearWeight& w) {
  if (!x.is_fp8()) {
    if (!w.has_master() || x.hp.empty() || !gemv_vectors_fit(x.hp, w.master_view)) return std::nullopt;
    return GemvPair{kernels::GemvOperand::bf16(x.hp), kernels::GemvOperand::bf16(w.master_view)};
  }
  if (!w.has_fp8) return std::nullopt;
  const Fp8View& wf = w.fp8_view();
  const bool per_tensor = x.fp8.mode == ScalingMode::kPerTensor && wf.mode == ScalingMode::kPerTensor;
  if (!per_tensor || !x.fp8.has_rowwise() || !wf.has_rowwise() || x.fp8.data.dtype != DType::E4M3 ||
      wf.data.dtype != DType::E4M3 || !gemv_vectors_fit(x.fp8.data, wf.data)) {
    return std::nullopt;
  }
  return GemvPair{kernels::GemvOperand::fp8(x.fp8), kernels::GemvOperand::fp8(wf)};
}

// The operands of a one-row step GEMM on the GEMV path with an E4M3 x (the precondition of the epilogue kernels
// gemv_geglu / gemv_qkv_rope), or none.
std::optional<GemvPair> one_row_e4m3_operands(const GemmInput& x, const LinearWeight& w, int64_t rows, bool gemv) {
  if (!gemv || rows != 1) return std::nullopt;
  std::optional<GemvPair> ops = gemv_operands(x, w);
  if (!ops || ops->x.data.dtype != DType::E4M3) return std::nullopt;
  return ops;
}

// The step GEMMs of 2 .. max-rows rows with N > kWideN (fc1, lm_head) run on cuBLASLt, not gemv; a one-row step
// keeps the GEMV for every GEMM. Measured: bench_gemm at M = 4 (H200 session 14, us, gemv on the
// tensor cores / cuBLASLt FP8): 2b fc1 24.30 / 20.88, lm_head 132.1 / 127.8, 7b fc1 41.78 / 40.69, lm_head
// 195.7 / 188.2, while the narrow shapes favour gemv (2b QKV 6.30 / 7.10, fc2 14.04 / 14.98, 7b O 8.08 / 8.63);
// inside the decode step (ci/decode_ab.sh, one call, delayed + FP8 head, P128+N256, H200, 48274a4; decode tok/s
// gemv / cuBLASLt for the wide GEMMs): gemma-2b B4 3256.6 / 3324.2, gemma-7b B4 1170.2 / 1237.6; unaffected B1
// 941.7 / 941.1 and 347.3 / 346.3 (M = 1 keeps the GEMV) and B16 11189.4 / 11201.0 and 4159.8 / 4155.0 (16 rows
// already on cuBLASLt). Was the opt-in TEGEMMA_DECODE_GEMV_WIDE_CUBLASLT=1 (1a5aa53); no knob left.
constexpr int64_t kWideN = 16384;
}  // namespace

void set_decode_gemv_max_rows(int64_t rows) {
  TG_CHECK(rows >= 0 && rows <= kernels::kGemvMaxRows, "set_decode_gemv_max_rows: expected 0 .. ",
           kernels::kGemvMaxRows, ", got ", rows);
  gemv_max_rows_setting().store(rows);
}
int64_t decode_gemv_max_rows() { return gemv_max_rows_setting().load(); }

bool decode_programmatic_launch() {
  static const bool on = env_switch("TEGEMMA_DECODE_PDL", true);
  return on;
}
// Why (step timeline, session 22): the one-block RMSNorm costs 2.98 us of the gemma-2b step's chain per layer (3.8 us
// twice per gemma-7b layer) for 0.3 us of its own run; with the late trigger its block is launched only after the
// residual GEMV's last block. Session 18's early trigger for every GEMV (966 vs 980 tok/s on gemma-2b) also moved the
// large successors (fc1's several waves, the one-wave fused QKV) that the late trigger places evenly; these move only
// small ones.
bool decode_norm_early_trigger() {
  static const bool on = env_switch("TEGEMMA_DECODE_NORM_EARLY_TRIGGER", true);
  return on;
}

GemmSite find_gemm_site(const Precision& p, const std::string& name, bool fp8) {
  GemmSite s;
  s.name = name;
  s.fp8 = fp8 && p.is_fp8();
  if (!s.fp8 || p.delayed() == nullptr) return s;
  const DelayedScalingState& st = *p.delayed();
  for (int i = 0; i + 2 < st.num_forward(); ++i) {
    const ScalingRef r{ScalingDir::kForward, i};
    if (st.name(r) != name + ".input") continue;
    s.refs.input = r;
    s.refs.weight = ScalingRef{ScalingDir::kForward, i + 1};
    s.refs.output = ScalingRef{ScalingDir::kForward, i + 2};
    return s;
  }
  TG_FAIL("Decoder: the model registered no delayed-scaling rows for GEMM '", name, "'");
}

Decoder::Decoder(GemmaForCausalLM& model) : model_(&model) {
  const GemmaConfig& cfg = model.config();
  const Precision& p = model.precision();
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string n = "layers." + std::to_string(l) + ".";
    sites_.push_back(LayerSites{find_gemm_site(p, n + "qkv", true), find_gemm_site(p, n + "o", true),
                                find_gemm_site(p, n + "fc1", true), find_gemm_site(p, n + "fc2", true)});
  }
  lm_site_ = find_gemm_site(p, "lm_head", model.options().fp8_lm_head);
  inv_freq_ = model.rope_inv_freq().view();
  rope_table_ = model.rope_table().view();  // empty on the CPU: the twins compute (the same bits)
  embed_scale_ = kernels::embedding_scale(cfg.hidden_size, DType::BF16);
}

Decoder::Acts Decoder::carve(Buffers& b, int64_t rows, int64_t lm_rows) const {
  const GemmaConfig& c = config();
  const Precision& p = model_->precision();
  const ModelWeights& w = model_->weights();
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  Acts a;
  a.rows = rows;
  a.lm_rows = lm_rows;
  a.h = b.alloc(DType::BF16, {rows, d});
  a.rstd = b.alloc(DType::F32, {rows});
  a.ln = p.alloc_input(b, sites_[0].qkv, rows, d, /*producer_fused=*/true, /*columnwise=*/false);
  a.qkv = b.alloc(DType::BF16, {rows, w.layers[0].qkv.out_features});
  a.attn = p.alloc_input(b, sites_[0].o, rows, c.q_dim(), /*producer_fused=*/false, false);
  a.fc1 = b.alloc(DType::BF16, {rows, 2 * f});
  a.act = p.alloc_input(b, sites_[0].fc2, rows, f, /*producer_fused=*/true, false);
  a.x_last = b.alloc(DType::BF16, {lm_rows, d});
  a.lm_rstd = b.alloc(DType::F32, {lm_rows});
  a.lm_in = p.alloc_input(b, lm_site_, lm_rows, d, /*producer_fused=*/true, false);
  a.logits = b.alloc(DType::BF16, {lm_rows, c.vocab_size});
  a.status = b.alloc(DType::I32, {2});
  return a;
}

TensorView Decoder::q_view(const TensorView& qkv, int64_t tokens) const {
  const GemmaConfig& c = config();
  return TensorView(qkv.data, qkv.dtype, Shape{tokens, c.num_attention_heads, c.head_dim},
                    Shape{qkv.strides[0], c.head_dim, 1}, qkv.device);
}
TensorView Decoder::k_view(const TensorView& qkv, int64_t tokens) const {
  const GemmaConfig& c = config();
  return TensorView(static_cast<char*>(qkv.data) + c.q_dim() * static_cast<int64_t>(dtype_size(qkv.dtype)), qkv.dtype,
                    Shape{tokens, c.num_key_value_heads, c.head_dim}, Shape{qkv.strides[0], c.head_dim, 1}, qkv.device);
}
TensorView Decoder::v_view(const TensorView& qkv, int64_t tokens) const {
  const GemmaConfig& c = config();
  return TensorView(static_cast<char*>(qkv.data) + (c.q_dim() + c.kv_dim()) * static_cast<int64_t>(dtype_size(qkv.dtype)),
                    qkv.dtype, Shape{tokens, c.num_key_value_heads, c.head_dim}, Shape{qkv.strides[0], c.head_dim, 1},
                    qkv.device);
}

namespace {
// Removed, measured slower in session 4/5: the in-split attention merge (547 vs 642) and the GEMV L2 prefetch (-8%);
// in session 10 a bulk L2 prefetch (cp.async.bulk.prefetch.L2) of the O / fc1 / next QKV weights: 2b 932 -> 388 tok/s.
// Removed, measured slower: the layer as gemv_fused chains (RMSNorm / cast staged in shared memory before the QKV /
// O / fc1 GEMVs, GeGLU + cast in the fc1 epilogue; TEGEMMA_DECODE_FUSED; H200 session 14, B1 decode tok/s: 2b 863.8
// vs 930.3, 7b 296.2 vs 335.3; with early weight loads before the PDL wait, TEGEMMA_GEMV_EARLY_W, 894.2 / 306.4;
// early weight loads alone 928.1 / 335.8, noise).
// Removed, measured slower (H200, 48274a4): the B1 step's MLP half (RMSNorm -> fc1 -> GeGLU -> fc2 + h) as one
// persistent kernel with one grid barrier (kernels::decode_mlp, TEGEMMA_DECODE_MLP_PERSISTENT=1; 3e8fdfa,
// docs/decode_persistent.md): bench_gemm as a graph with PDL, persistent vs the four unfused kernels, 2b 40.7 vs
// 38.2 us, 7b 74.9 vs 68.2; decode B1 tok/s 887.8 vs 941.7 (2b), 331.4 vs 347.3 (7b).
// Removed, measured slower (H200, session 16, 71e5bf4): the next GEMVs' weights requested into L2 on a side stream
// forked from the step (kernels::SidePrefetch: cp.async.bulk.prefetch.L2 from up to one block per SM, normal
// priority, joined at the step's end, so nothing in the chain waited for it; after the QKV projection the O and fc1
// weights, after fc1 the next QKV): decode B1 tok/s default / 16 / 32 / 32 + 8 / 48 + 16 MB: 2b 949.3 / 902.0 / 894.3
// / 900.0 / 885.3, 7b 348.5 / 345.7 / 341.3 / 338.5 / 330.0. The requests compete with the chain's own reads;
// the idle HBM time between the GEMVs is not free to fill.
// Removed, measured slower (H200, session 19, b04b752; decode B1 tok/s, delayed + FP8 head, 2b / 7b, default 975.5 /
// 353.7): the batch-1 GEMVs' first W loads before their PDL wait (TEGEMMA_GEMV_EARLY_W, a separate kernel instance)
// 955.5 / 347.8; decode attention's first K / V tile before its wait (all keys but the newest) together with no
// trigger after the wait (its blocks' exits placing the O projection) 973.4 / 350.8.
// On by default (TEGEMMA_DECODE_ATTN_FP8=0 turns it off): the O projection's input cast (the per-tensor BF16 -> E4M3
// quantize, 2.3 us per layer at B1, 4.1 us at B64) fused into decode attention's final write (DecodeOptions::fp8_out),
// for layers whose O input is delayed-scaling per-tensor E4M3; the same bits as the cast. H200, session 9, two runs,
// decode tok/s off / on: gemma-7b B1 (FP8 head) 330.3 / 334.0 and 331.1 / 334.4, the TE tutorial (B64, FP8 cache and
// head) 13371 / 13477 and 13535 / 13644, gemma-2b B1 936.0 / 933.2 and 933.4 / 938.6 (noise).
// On by default since session 18 (=0 turns each off, for A/B runs): the batch-1 step's fc1 GEMV and GeGLU -> E4M3
// cast as one kernel (kernels::gemv_geglu, the same bits), and its QKV GEMV and RoPE + KV-cache write as one kernel
// (kernels::gemv_qkv_rope, the same bytes): two kernel boundaries less per layer. Faster alone (bench_gemm, M = 1:
// fc1 + GeGLU 2b 21.4 vs 24.6 us, 7b 41.8 vs 44.4) but, while the GEMVs triggered their dependents early, not in
// the 2b step (session 16, decode B1 tok/s default / both: 2b 949.3 / 928.5, 7b 348.5 / 353.6): the step timeline
// showed each fused kernel's successor ~1.3 us slower, its blocks placed unevenly into the slots a several-wave
// grid freed. With the GEMVs' late trigger (gemv.cu, the default since session 18) both win on both presets
// (H200, 4809135, delayed + FP8 head; early trigger unfused / late from 256 blocks fused: 2b 950.2 / 980.0, 7b
// 348.3 / 354.5).
bool decode_geglu_epilogue_enabled() {
  static const bool on = env_switch("TEGEMMA_DECODE_GEGLU_EPILOGUE", true);
  return on;
}
bool decode_qkv_rope_enabled() {
  static const bool on = env_switch("TEGEMMA_DECODE_QKV_ROPE", true);
  return on;
}
// The batch-1 step's RMSNorm before the QKV projection computed inside the fused QKV + RoPE kernel
// (kernels::GemvNorm: every block computes the E4M3 row in shared memory, the norm kernel's bits; one kernel boundary
// less per layer) when that kernel's grid is one resident wave (kernels::gemv_norm_qkv_rope_one_wave, which has the
// H200 measurements: gemma-2b +3.0%, gemma-7b's several waves -2.1%, session 19). TEGEMMA_DECODE_NORM_QKV=1 / =0
// forces it on / off (A/B runs). Removed, measured slower (H200, decode B1 tok/s, 2b / 7b): the norm before fc1 inside
// the fc1 + GeGLU kernel (kernels::gemv_norm_geglu, TEGEMMA_DECODE_NORM_FC1=1; fc1's grid is several waves, each
// block paying the prologue): session 19 899.6 / 331.6 vs 975.3 / 355.2; session 20, with the norm kernels past one
// wave persistent (grid capped at one resident wave, one prologue per resident block), 982.1 / 347.4 vs 1004.3 /
// 354.4, and the 7b QKV norm that way 351.1: the persistent instance went too. Session 14's TEGEMMA_DECODE_FUSED
// (norm + cast staged before every GEMV, with the early trigger) was slower too: 863.8 vs 930.3.
bool decode_norm_qkv_fused(const LinearWeight& qkv, Device device) {
  static const int setting = [] {  // -1: the one-wave rule; 0 / 1: forced
    const char* e = std::getenv("TEGEMMA_DECODE_NORM_QKV");
    if (e == nullptr || *e == '\0') return -1;
    return env_switch("TEGEMMA_DECODE_NORM_QKV", false) ? 1 : 0;
  }();
  if (setting >= 0) return setting == 1;
  return kernels::gemv_norm_qkv_rope_one_wave(qkv.out_features, device);
}
// On by default (TEGEMMA_DECODE_SAMPLE_SPLIT=0 turns it off, for A/B runs): greedy rows split over
// kernels::kGreedySplit blocks through the step buffers' DecodeState::workspace (the same token; one block scanning
// a 256k row took 17.9 us of the gemma-2b B1 step, H200 session 16; 32 blocks 8.1 us, session 17).
bool decode_sample_split_enabled() {
  static const bool on = env_switch("TEGEMMA_DECODE_SAMPLE_SPLIT", true);
  return on;
}
bool decode_attn_fp8_enabled() {
  static const bool on = env_switch("TEGEMMA_DECODE_ATTN_FP8", true);
  return on;
}
// A delayed-scaling per-tensor E4M3 input with only its row-wise copy: what decode attention's fp8_out writes in
// place of the separate cast.
bool rowwise_e4m3(const Fp8View& f) {
  return f.mode == ScalingMode::kPerTensor && f.has_rowwise() && !f.has_columnwise() && f.data.dtype == DType::E4M3;
}
// The RMSNorm h -> x run by the one-row GEMV kernel that reads x (kernels::GemvNorm): when x is what
// Precision::rmsnorm writes with its fused delayed cast (a per-tensor E4M3 row-wise copy) and the norm's weight is
// BF16 of a K the prologue takes; else none (the caller runs the norm).
std::optional<kernels::GemvNorm> fused_norm(const Precision& p, const TensorView& h, const TensorView& weight,
                                            float eps, const TensorView& rstd, const GemmInput& x,
                                            const GemmSite& site) {
  const GemmInput out = p.bound(x, site);
  if (out.path != InputPath::kDelayedFused || !rowwise_e4m3(out.fp8)) return std::nullopt;
  const int64_t k = h.ndim() == 2 ? h.shape[1] : 0;
  if (weight.dtype != DType::BF16 || h.dtype != DType::BF16 || k % 16 != 0 || k > kernels::kGemvNormMaxK) {
    return std::nullopt;
  }
  return kernels::GemvNorm{h, weight, eps, rstd, out.fp8};  // one-row steps only: h, rstd and x are [1, ...]
}
}  // namespace

// TransformerLayer::forward's inference path (impl/modules/transformer_layer.cpp), op for op, with the
// attention supplied by the caller.
template <typename Attend, typename ProjectQkv>
void Decoder::layer(int64_t l, const Acts& a, int64_t tokens, const Attend& attend, const ProjectQkv& project_qkv,
                    bool clear_pad_rows, bool gemv, Stream stream, bool timed_gemv) const {
  const GemmaConfig& c = config();
  const Precision& p = model_->precision();
  const LayerWeights& lw = model_->weights().layers[static_cast<std::size_t>(l)];
  const LayerSites& s = sites_[static_cast<std::size_t>(l)];
  const float eps = static_cast<float>(c.rms_norm_eps);
  // The input RMSNorm runs as its own kernel or inside the fused QKV kernel after it (fused_input_norm); the
  // post-attention one always as its own kernel.
  const std::optional<kernels::GemvNorm> norm = fused_input_norm(l, a, gemv);
  if (!norm) p.rmsnorm(a.h, lw.input_norm.view(), eps, a.rstd, a.ln, s.qkv, stream);
  if (!project_qkv(l, a.ln, lw.qkv, gemv, norm ? &*norm : nullptr)) {
    TG_CHECK(!norm, "Decoder: the input norm was left to a QKV kernel that did not run");
    linear(a.ln, lw.qkv, a.qkv, 0.0f, gemv, stream, timed_gemv);
  }
  const TensorView q = q_view(a.qkv, tokens), k = k_view(a.qkv, tokens), v = v_view(a.qkv, tokens);
  const bool quantized =
      attend(l, q, k, v, a.attn.hp.slice_rows(0, tokens).reshape({tokens, c.num_attention_heads, c.head_dim}));
  if (clear_pad_rows && a.rows > tokens) zero_async(a.attn.hp.slice_rows(tokens, a.rows), stream);
  if (!quantized) p.quantize(a.attn, s.o, stream);
  // One-row steps: the residual GEMVs before a one-block RMSNorm kernel trigger early (decode_norm_early_trigger):
  // O always; fc2 unless the next layer fuses its input norm into its QKV kernel (the last layer's is the final norm,
  // a kernel).
  const bool early = a.rows == 1 && decode_norm_early_trigger();
  const bool fc2_early = early && (l + 1 >= c.num_hidden_layers || !fused_input_norm(l + 1, a, gemv));
  {
    const kernels::EarlyTriggerScope o_trigger(early);
    linear(a.attn, lw.o, a.h, 1.0f, gemv, stream, timed_gemv);
  }
  p.rmsnorm(a.h, lw.post_attention_norm.view(), eps, a.rstd, a.ln, s.fc1, stream);
  if (!fc1_geglu(a, lw.fc1, s.fc2, gemv, stream)) {
    linear(a.ln, lw.fc1, a.fc1, 0.0f, gemv, stream, timed_gemv);
    p.geglu(a.fc1, a.act, s.fc2, stream);
  }
  {
    const kernels::EarlyTriggerScope fc2_trigger(fc2_early);
    linear(a.act, lw.fc2, a.h, 1.0f, gemv, stream, timed_gemv);
  }
}

std::optional<kernels::GemvNorm> Decoder::fused_input_norm(int64_t l, const Acts& a, bool gemv) const {
  TG_CHECK(l >= 0 && l < config().num_hidden_layers, "Decoder::fused_input_norm: layer ", l, " outside [0, ",
           config().num_hidden_layers, ")");
  const LayerWeights& lw = model_->weights().layers[static_cast<std::size_t>(l)];
  if (!decode_qkv_rope_enabled() || !one_row_e4m3_operands(a.ln, lw.qkv, a.rows, gemv) ||
      !decode_norm_qkv_fused(lw.qkv, model_->options().device)) {
    return std::nullopt;
  }
  return fused_norm(model_->precision(), a.h, lw.input_norm.view(), static_cast<float>(config().rms_norm_eps), a.rstd,
                    a.ln, sites_[static_cast<std::size_t>(l)].qkv);
}

bool Decoder::fc1_geglu(const Acts& a, const LinearWeight& fc1, const GemmSite& fc2_site, bool gemv,
                        Stream stream) const {
  if (!decode_geglu_epilogue_enabled()) return false;
  const std::optional<GemvPair> ops = one_row_e4m3_operands(a.ln, fc1, a.rows, gemv);
  if (!ops) return false;
  const GemmInput act = model_->precision().bound(a.act, fc2_site);
  if (act.path != InputPath::kDelayedFused || !rowwise_e4m3(act.fp8)) return false;
  kernels::gemv_geglu(ops->x, ops->w, act.fp8, stream);
  return true;
}

void Decoder::lm_head(const Acts& a, const TensorView& x, bool gemv, Stream stream) const {
  const Precision& p = model_->precision();
  const ModelWeights& w = model_->weights();
  p.rmsnorm(x, w.final_norm.view(), static_cast<float>(config().rms_norm_eps), a.lm_rstd, a.lm_in, lm_site_, stream);
  linear(a.lm_in, w.lm_head, a.logits, 0.0f, gemv, stream);
}

namespace {
struct ChoiceKey {
  int64_t m, n, k;
  DType x, w, out;
  bool accumulate;
  auto operator<=>(const ChoiceKey&) const = default;
};
std::mutex& choices_mutex() {
  static std::mutex m;
  return m;
}
std::map<ChoiceKey, DecodeGemvChoice>& choices() {
  static std::map<ChoiceKey, DecodeGemvChoice> c;
  return c;
}

std::atomic<double>& min_gain_setting() {
  static std::atomic<double> g{kDecodeGemvChoiceMinGain};
  return g;
}

// The timed choice (decode_gemv_timed_enabled): the cached one for the key, else both run on a scratch output
// (zeroed on the stream: an accumulating run reads it), each once eagerly first (module loads, cuBLASLt's
// heuristics and its own candidate timing happen there, outside any capture), then each candidate's kReps calls
// captured into a CUDA graph whose replays are timed in three interleaved rounds (the step runs them the same way:
// back to back on the GPU, so the host's launch cost, larger for cuBLASLt's, is not what is measured); the best
// round of each counts. Under a capture, or on the legacy default stream (which cannot be captured): false (the
// rule), not cached.
bool gemv_is_faster(const ChoiceKey& key, const std::function<void(const TensorView&)>& run_gemv,
                    const std::function<void(const TensorView&)>& run_gemm, Stream stream) {
  {
    const std::lock_guard<std::mutex> lock(choices_mutex());
    if (const auto it = choices().find(key); it != choices().end()) return it->second.gemv;
  }
  if (stream.handle == nullptr || stream_capturing(stream)) return false;
  TG_NVTX_RANGE("decode_gemv_choice");
  constexpr int kReps = 8;
  const Tensor scratch = Tensor::empty(key.out, {key.m, key.n}, Device::CUDA);
  zero_async(scratch.view(), stream);
  run_gemv(scratch.view());
  run_gemm(scratch.view());
  const auto graph_of = [&](const std::function<void(const TensorView&)>& f) {
    CudaGraph g;
    g.capture(stream, [&] {
      for (int r = 0; r < kReps; ++r) f(scratch.view());
    });
    g.replay(stream);  // the first replay (graph upload) is not timed
    return g;
  };
  const CudaGraph gemv_graph = graph_of(run_gemv), gemm_graph = graph_of(run_gemm);
  const auto time_ms = [&](const CudaGraph& g) {
    CudaEvent start, stop;
    start.record(stream);
    g.replay(stream);
    stop.record(stream);
    stop.wait();
    return stop.since(start) / kReps;
  };
  DecodeGemvChoice c;
  c.m = key.m, c.n = key.n, c.k = key.k, c.x = key.x, c.w = key.w, c.out = key.out, c.accumulate = key.accumulate;
  c.gemv_ms = c.gemm_ms = std::numeric_limits<double>::infinity();
  for (int round = 0; round < 3; ++round) {
    c.gemv_ms = std::min(c.gemv_ms, time_ms(gemv_graph));
    c.gemm_ms = std::min(c.gemm_ms, time_ms(gemm_graph));
  }
  c.gemv = c.gemv_ms < c.gemm_ms * (1.0 - min_gain_setting().load());
  const std::lock_guard<std::mutex> lock(choices_mutex());
  return choices().emplace(key, c).first->second.gemv;
}
}  // namespace

bool decode_gemv_timed_enabled() {
  static const bool on = env_switch("TEGEMMA_DECODE_GEMV_TIMED", true);
  return on;
}
std::vector<DecodeGemvChoice> decode_gemv_choices() {
  const std::lock_guard<std::mutex> lock(choices_mutex());
  std::vector<DecodeGemvChoice> v;
  for (const auto& [key, c] : choices()) v.push_back(c);
  return v;
}
void clear_decode_gemv_choices() {
  const std::lock_guard<std::mutex> lock(choices_mutex());
  choices().clear();
}
void set_decode_gemv_min_gain(double gain) {
  TG_CHECK(gain <= 1.0, "set_decode_gemv_min_gain: expected a gain <= 1, got ", gain);
  min_gain_setting().store(gain);
}
double decode_gemv_min_gain() { return min_gain_setting().load(); }

void Decoder::linear(const GemmInput& x, const LinearWeight& w, const TensorView& out, float beta, bool gemv,
                     Stream stream, bool timed_gemv) const {
  const bool wide_batched = out.ndim() == 2 && out.shape[0] >= 2 && out.shape[1] > kWideN;
  const bool timed = timed_gemv && !gemv && out.ndim() == 2 && out.shape[0] <= kernels::kGemvMaxRows &&
                     out.device == Device::CUDA && decode_gemv_timed_enabled() && !kernels::gemm_deterministic();
  if ((gemv || timed) && (beta == 0.0f || beta == 1.0f) && !wide_batched) {
    if (const std::optional<GemvPair> ops = gemv_operands(x, w)) {
      // beta 1 is the residual stream: out += x W^T (gemv's residual may be out itself).
      const auto run_gemv = [&](const TensorView& o) {
        kernels::gemv(ops->x, ops->w, o, {}, beta == 1.0f ? o : TensorView{}, stream);
      };
      const auto run_gemm = [&](const TensorView& o) { model_->precision().linear(x, w, o, beta, stream); };
      const ChoiceKey key{out.shape[0],      out.shape[1], ops->x.data.shape[1], ops->x.data.dtype,
                          ops->w.data.dtype, out.dtype,    beta != 0.0f};
      if (gemv || gemv_is_faster(key, run_gemv, run_gemm, stream)) {
        run_gemv(out);
        return;
      }
    }
  }
  model_->precision().linear(x, w, out, beta, stream);
}

TensorView Decoder::prefill(const Batch& batch, const std::vector<int32_t>& slots, const KvCacheSet& cache,
                            KvScaleMode scales, Stream stream) {
  TG_NVTX_RANGE("Decoder::prefill");
  const GemmaConfig& c = config();
  const Precision& p = model_->precision();
  batch.validate(c.vocab_size, std::min(c.max_position_embeddings, cache.max_seq()));
  const int64_t t = batch.num_tokens(), nseq = batch.num_sequences();
  TG_CHECK(static_cast<int64_t>(slots.size()) == nseq, "prefill: ", slots.size(), " cache slots for ", nseq,
           " sequences");
  for (int32_t s : slots) {
    TG_CHECK(s >= 0 && s < cache.max_batch(), "prefill: cache slot ", s, " outside [0, ", cache.max_batch(), ")");
  }
  TG_CHECK(p.phase() == ScalingPhase::kInference, "prefill: the model's scaling phase is ",
           scaling_phase_name(p.phase()), "; generation needs inference (finish the calibration first)");
  const int64_t rows = round_up(t, p.row_multiple());
  const int64_t lm_rows = round_up(nseq, lm_site_.fp8 ? p.row_multiple() : 1);

  // ids | positions | cu_seqlens | last rows | per-token cache slot: one upload.
  const int64_t n_inputs = 3 * t + 2 * nseq + 1;
  Buffers counter;
  carve(counter, rows, lm_rows);
  counter.alloc(DType::I32, {n_inputs});
  if (prefill_arena_.capacity() < counter.bytes()) {
    prefill_arena_ = Arena();
    prefill_arena_ = Arena(counter.bytes(), model_->options().device);
  }
  prefill_arena_.reset();
  Buffers b(prefill_arena_);
  const Acts a = carve(b, rows, lm_rows);
  const TensorView inputs = b.alloc(DType::I32, {n_inputs});
  auto part = [&](int64_t begin, int64_t n) {
    return TensorView(inputs.ptr<int32_t>() + begin, DType::I32, Shape{n}, inputs.device);
  };
  const TensorView ids = part(0, t), positions = part(t, t), cu_seqlens = part(2 * t, nseq + 1);
  const TensorView last_rows = part(2 * t + nseq + 1, nseq), token_slots = part(2 * t + 2 * nseq + 1, t);
  staging_.clear();
  staging_.insert(staging_.end(), batch.tokens.begin(), batch.tokens.end());
  staging_.insert(staging_.end(), batch.positions.begin(), batch.positions.end());
  staging_.insert(staging_.end(), batch.cu_seqlens.begin(), batch.cu_seqlens.end());
  const std::vector<int32_t> last = batch.last_token_rows();
  staging_.insert(staging_.end(), last.begin(), last.end());
  for (int64_t s = 0; s < nseq; ++s) staging_.insert(staging_.end(), batch.seqlen(s), slots[static_cast<std::size_t>(s)]);
  // From pageable memory the copy has consumed the staging vector when it returns (CUDA's API sync rules).
  copy_async(inputs, TensorView(staging_.data(), DType::I32, inputs.shape, Device::CPU), stream);

  const ModelWeights& w = model_->weights();
  kernels::embedding_forward(ids, w.embed.view(), embed_scale_, a.h.slice_rows(0, t), a.status, stream);
  if (rows > t) zero_async(a.h.slice_rows(t, rows), stream);

  kernels::AttentionOptions attn;
  attn.causal = true;
  attn.backend = model_->options().attention;
  // RoPE in place on q and k (the attention below reads them), the cache write, the packed causal attention.
  const auto attend = [&](int64_t l, const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& out) {
    kernels::rope_forward(q, k, positions, inv_freq_, stream, rope_table_);
    const kernels::KvCache kv = cache.layer(l, cache.max_batch());
    if (cache.fp8() && scales != KvScaleMode::kFrozen) {
      const TensorView amax = cache.amax(l);
      if (scales == KvScaleMode::kFromPrompt) zero_async(amax, stream);
      kernels::kv_rows_amax(k, row_of(amax, 0), stream);
      kernels::kv_rows_amax(v, row_of(amax, 1), stream);
      if (scales == KvScaleMode::kFromPrompt) cache.update_scales(l, stream);
    }
    kernels::kv_cache_write(k, v, token_slots, positions, kv, {}, {}, stream);
    kernels::attention_fwd(q, k, v, cu_seqlens, batch.max_seqlen, attn, out, TensorView{}, stream);
    return false;  // the layer quantizes out for the O projection
  };
  const auto no_fused_qkv = [](int64_t, const GemmInput&, const LinearWeight&, bool, const kernels::GemvNorm*) {
    return false;
  };
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    layer(l, a, t, attend, no_fused_qkv, /*clear_pad_rows=*/true, /*gemv=*/false, stream);
  }

  // The gather of each sequence's last row is the embedding kernel with the hidden states as the table (exact).
  kernels::embedding_forward(last_rows, a.h, 1.0f, a.x_last.slice_rows(0, nseq), a.status, stream);
  if (lm_rows > nseq) zero_async(a.x_last.slice_rows(nseq, lm_rows), stream);
  lm_head(a, a.x_last, /*gemv=*/false, stream);
  return a.logits.slice_rows(0, nseq);
}

std::unique_ptr<Decoder::StepBuffers> Decoder::make_step_buffers(int64_t batch, int64_t max_tokens,
                                                                 const KvCacheSet& cache, Stream stream,
                                                                 int64_t row_multiple) const {
  const GemmaConfig& c = config();
  const Precision& p = model_->precision();
  TG_CHECK(batch >= 1 && batch <= cache.max_batch(), "decode: ", batch, " sequences do not fit the KV cache's ",
           cache.max_batch(), " slots");
  TG_CHECK(max_tokens >= 1, "decode: max_tokens must be >= 1, got ", max_tokens);
  const Device dev = model_->options().device;
  TG_CHECK(row_multiple >= 0, "decode: row_multiple must be >= 0, got ", row_multiple);
  const int64_t rows = round_up(batch, row_multiple > 0 ? row_multiple : p.row_multiple());
  // The lm_head's rows: a BF16 lm_head needs no padding (its GEMM takes any M), so a padded step does not pay for
  // rows x V logits it never reads (block scaling: 128 rows of the 256k-wide GEMM at batch 1).
  const int64_t lm_rows = lm_site_.fp8 ? rows : batch;
  kernels::DecodeOptions dopt;
  const kernels::KvCache kv0 = cache.layer(0, batch);
  const TensorView q_shape(nullptr, DType::BF16, Shape{batch, c.num_attention_heads, c.head_dim}, dev);
  const std::size_t ws = kernels::decode_attention_workspace_bytes(q_shape, kv0, dopt);
  const int64_t words = kernels::seen_words(c.vocab_size);

  auto sb = std::make_unique<StepBuffers>();
  sb->batch = batch;
  const auto carve_all = [&](Buffers& b) {
    sb->acts = carve(b, rows, lm_rows);
    sb->ints = b.alloc(DType::I32, {8 * batch});
    sb->state.out_tokens = b.alloc(DType::I32, {batch, max_tokens});
    sb->state.seen = b.alloc(DType::I32, {batch, words});
    // The greedy rows' split over kGreedySplit blocks on CUDA (zeroed below; each call leaves it zeroed). Decided
    // here, so that every sample_tokens on these buffers (the step's and the generator's after the prefill) agrees.
    if (decode_sample_split_enabled()) {
      sb->state.workspace = b.alloc(DType::I32, {batch, kernels::kSampleWorkspaceWords});
    }
    sb->params = b.alloc(DType::U8, {static_cast<int64_t>(sizeof(kernels::SamplingParams))});
    sb->q = b.alloc(DType::BF16, {batch, c.num_attention_heads, c.head_dim});
    const TensorView w = ws > 0 ? b.alloc(DType::U8, {static_cast<int64_t>(ws)}) : TensorView{};
    sb->attention_workspace = kernels::Workspace{w.data, ws};
  };
  Buffers counter;
  carve_all(counter);
  sb->arena = Arena(counter.bytes(), dev);
  Buffers b(sb->arena);
  carve_all(b);
  auto part = [&](int64_t i) {
    return TensorView(sb->ints.ptr<int32_t>() + i * batch, DType::I32, Shape{batch}, dev);
  };
  kernels::DecodeState& st = sb->state;
  st.tokens = part(0);
  st.positions = part(1);
  st.seqlens = part(2);
  st.last = part(3);
  st.finished = part(4);
  st.generated = part(5);
  st.max_new = part(6);
  sb->slots = part(7);

  // Zeros everywhere that padding rows or an idle state could be read before being written.
  const Acts& a = sb->acts;
  for (const TensorView& v :
       {a.h, a.qkv, a.fc1, a.logits, a.x_last, sb->ints, st.out_tokens, st.seen, st.workspace, sb->q}) {
    zero_view(v, stream);
  }
  for (const GemmInput* in : {&a.ln, &a.attn, &a.act, &a.lm_in}) zero_input(*in, stream);
  std::vector<int32_t> slot_ids(static_cast<std::size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) slot_ids[static_cast<std::size_t>(i)] = static_cast<int32_t>(i);
  copy_async(sb->slots, TensorView(slot_ids.data(), DType::I32, Shape{batch}, Device::CPU), stream);
  kernels::SamplingParams off;
  off.mode = kernels::SamplingMode::kOff;
  copy_async(sb->params, TensorView(&off, DType::U8, sb->params.shape, Device::CPU), stream);
  sync_stream(stream);  // the host vectors above die here
  return sb;
}

void Decoder::step(const StepBuffers& sb, const KvCacheSet& cache, Stream stream) const {
  TG_NVTX_RANGE("Decoder::step");
  // Programmatic dependent launch for the step's own kernels (kernels/launch/programmatic_launch.h): each one's
  // launch overlaps the tail of the one before it. Off on the CPU backend (nothing to launch).
  const kernels::ProgrammaticLaunchScope pdl(model_->options().device == Device::CUDA && decode_programmatic_launch());
  const GemmaConfig& c = config();
  const Acts& a = sb.acts;
  const int64_t nseq = sb.batch;
  TG_CHECK(model_->precision().phase() == ScalingPhase::kInference, "decode: the model's scaling phase is ",
           scaling_phase_name(model_->precision().phase()), "; generation needs inference");
  kernels::embedding_forward(sb.state.tokens, model_->weights().embed.view(), embed_scale_, a.h.slice_rows(0, nseq),
                             a.status, stream);
  kernels::DecodeOptions dopt;
  dopt.workspace = sb.attention_workspace;
  // RoPE, the cache append of K / V and the contiguous copy of q in one kernel (q and k are read, not rotated in
  // place: nothing else reads them), then the attention over the cache. With decode_attn_fp8_enabled() and a
  // delayed-scaling per-tensor E4M3 O input, the attention writes that input itself (fp8_out, no BF16 out) and
  // returns true: the layer skips its quantize.
  const Precision& prec = model_->precision();
  const bool attn_fp8 =
      decode_attn_fp8_enabled() && prec.delayed() != nullptr && a.attn.path == InputPath::kDelayedCast;
  // By default (TEGEMMA_DECODE_QKV_ROPE=0 turns it off) a one-sequence step's QKV GEMV also applies RoPE, writes q
  // and the cache row (kernels::gemv_qkv_rope, the same bytes as the GEMV + kv_cache_write_rope); attend then skips
  // that write.
  bool kv_written = false;
  // norm: when set, the layer's input norm runs inside this kernel (kernels::GemvNorm; x is then not yet written).
  const auto project_qkv = [&](int64_t l, const GemmInput& x, const LinearWeight& w, bool gemv,
                               const kernels::GemvNorm* norm) {
    kv_written = false;
    if (!decode_qkv_rope_enabled()) return false;
    const std::optional<GemvPair> ops = one_row_e4m3_operands(x, w, a.rows, gemv);  // one row: nseq == 1
    if (!ops) return false;
    if (norm != nullptr) {
      kernels::gemv_norm_qkv_rope(*norm, ops->w, sb.slots, sb.state.positions, inv_freq_, cache.layer(l, nseq), sb.q,
                             rope_table_, stream);
    } else {
      kernels::gemv_qkv_rope(ops->x, ops->w, sb.slots, sb.state.positions, inv_freq_, cache.layer(l, nseq), sb.q,
                             rope_table_, stream);
    }
    kv_written = true;
    return true;
  };
  const auto attend = [&](int64_t l, const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& out) {
    const kernels::KvCache kv = cache.layer(l, nseq);
    if (!kv_written) {
      kernels::kv_cache_write_rope(k, v, sb.slots, sb.state.positions, inv_freq_, kv, q, sb.q, stream, rope_table_);
    }
    const GemmSite& o_site = sites_[static_cast<std::size_t>(l)].o;
    if (attn_fp8 && o_site.fp8) {
      Fp8View f = prec.bound(a.attn, o_site).fp8;  // the state's scale; amax only while training
      if (rowwise_e4m3(f)) {
        // Rows >= nseq (padding) were zeroed with the step buffers and stay zero, as the quantize of zero rows.
        f.data = f.data.slice_rows(0, nseq);
        kernels::DecodeOptions fo = dopt;
        fo.fp8_out = f;
        kernels::decode_attention(sb.q, kv, sb.state.seqlens, fo, TensorView{}, stream);
        return true;
      }
    }
    kernels::decode_attention(sb.q, kv, sb.state.seqlens, dopt, out, stream);
    return false;
  };
  // The GEMMs' M: a.rows for the layers, a.lm_rows for the lm_head (kernels::gemv when small enough).
  const int64_t gemv_rows = decode_gemv_max_rows();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    layer(l, a, nseq, attend, project_qkv, /*clear_pad_rows=*/false, a.rows <= gemv_rows, stream,
          /*timed_gemv=*/gemv_rows > 0 && a.rows > gemv_rows);  // max rows 0: no GEMV at all
  }
  lm_head(a, a.h.slice_rows(0, a.lm_rows), a.lm_rows <= gemv_rows, stream);
  kernels::sample_tokens(a.logits.slice_rows(0, nseq), sb.params, sb.state, stream);
}

}  // namespace tg::impl
