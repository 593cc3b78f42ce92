// Token selection for generation, one row per sequence, entirely on the device: HF generate()'s logits
// processors and warpers (../shared/docs/gemma.md 4.2-4.3), greedy argmax or a seeded draw, and the
// per-sequence bookkeeping of a decode step (EOS, budgets, positions), so a decode step needs no host round trip.
//
// ---- Scores, per row b (HF's order) -------------------------------------------------------------------------
//   s_i = float(logits[b, i])                                     BF16 -> F32 exactly (HF upcasts a copy)
//   repetition penalty (penalty != 1), for every token i marked in seen[b]:
//       s_i = s_i < 0 ? s_i * penalty : s_i / penalty               one RN float op (HF's where(...))
//   min_new_tokens: while generated[b] < min_new_tokens, s_e = -inf for every EOS id e
//   greedy: token = argmax_i s_i, ties -> the lowest index (torch.argmax)
//   sampling:
//     temperature: s_i = s_i / T                                    (skipped for T == 1: exact anyway)
//     top-k (0 < k < V): kth = the k-th largest s (ties counted), keep s_i >= kth (all ties at kth survive)
//     weights: w_i = floor(e^(s_i - max s) * 2^40) for kept tokens (sampling_math.h: exact integer sums)
//     top-p (p < 1): in HF's ascending order (s, then index, ascending: a stable sort), remove every token whose
//         cumulative weight is <= floor(c * W) (double arithmetic), W the total and c = top_p_cut = float(1 - p)
//         (HF's FP32 comparison with the Python double 1 - p); the largest token always stays.
//         (HF compares an FP32 cumsum of FP32 softmax probabilities with 1 - p: the two agree except for tokens
//         within ~1e-7 of the cut and for probabilities below 2^-40.)
//     draw: u = 64 random bits of Philox4x32-10 keyed by the seed, counter (generated[b], b) (sampling_math.h);
//         t = floor(u * W' / 2^64) with W' the kept total; token = the smallest index i whose cumulative kept
//         weight (in index order) exceeds t. The result is a pure function of (logits, seen, params, state):
//         the CPU twin and the CUDA kernel choose the same token, bit for bit.
//
// ---- State update, per row b (one kernel, no host involvement) ---------------------------------------------
//   finished[b] != 0:  last[b] = -1, nothing else changes.
//   else, with g = generated[b] and t the chosen token:
//       out_tokens[b, g] = t (if g < N), generated[b] = g + 1, last[b] = t, seen[b] gets t (penalty != 1 only)
//       if t is an EOS id (and EOS ids are given) or g + 1 >= max_new[b]:
//           finished[b] = 1, positions[b] = -1, seqlens[b] = 0, tokens[b] = pad   (the row stops: no cache
//           writes (position -1), no attention (length 0))
//       else: tokens[b] = t, positions[b] += 1, seqlens[b] = positions[b] + 1   (t is the next step's input)
//   positions[b] is the position of the token whose logits these are (after a prefill of n tokens: n - 1).
//
// ---- Parameters on the device ------------------------------------------------------------------------------
// SamplingParams lives in device memory (a U8 view of sizeof(SamplingParams) bytes) and is read by the kernel
// at run time, so a decode step captured once in a CUDA graph serves every generation config: the host writes
// new parameters (a stream-ordered copy) instead of re-capturing. mode == kOff makes the call a no-op (beam
// search and teacher forcing drive the steps from the host).
//
// Shapes (I32 unless said): logits [B, V] BF16 or F32 (unit column stride, row stride >= V); tokens, positions,
// seqlens, generated, max_new, finished, last [B]; out_tokens [B, N]; seen [B, ceil(V / 32)] (bit i % 32 of
// word i / 32; I32 storage). V <= 2^23. Everything contiguous, on the logits' device.
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"

namespace tg::kernels {

inline constexpr int kMaxEosTokens = 8;

enum class SamplingMode : int32_t { kOff = 0, kGreedy = 1, kSample = 2 };

struct SamplingParams {
  SamplingMode mode = SamplingMode::kGreedy;
  float temperature = 1.0f;         // > 0 (sampling)
  int32_t top_k = 0;                // 0 (or >= V): off (sampling)
  float top_p = 1.0f;               // in [0, 1]; 1: off (sampling)
  float top_p_cut = 0.0f;           // float(1 - top_p) computed in double, as HF compares (set_top_p)
  float repetition_penalty = 1.0f;  // > 0; 1: off
  int32_t min_new_tokens = 0;
  int32_t num_eos = 0;
  int32_t eos[kMaxEosTokens] = {};
  int32_t pad_token_id = 0;
  uint32_t seed_lo = 0, seed_hi = 0;

  void set_top_p(double p) {
    top_p = static_cast<float>(p);
    top_p_cut = static_cast<float>(1.0 - p);
  }
  void set_seed(uint64_t seed) {
    seed_lo = static_cast<uint32_t>(seed);
    seed_hi = static_cast<uint32_t>(seed >> 32);
  }
  uint64_t seed() const { return (static_cast<uint64_t>(seed_hi) << 32) | seed_lo; }
};

// Throws tg::Error naming the field for parameters the kernel cannot run with (vocab: V).
void check_sampling_params(const SamplingParams& p, int64_t vocab);

struct DecodeState {
  TensorView tokens;      // [B]  in/out: this step's input token -> the next step's
  TensorView positions;   // [B]  in/out
  TensorView seqlens;     // [B]  out
  TensorView generated;   // [B]  in/out
  TensorView max_new;     // [B]  in
  TensorView finished;    // [B]  in/out
  TensorView last;        // [B]  out: the token chosen at this call, -1 for rows finished before it
  TensorView out_tokens;  // [B, N] out
  TensorView seen;        // [B, ceil(V / 32)] in/out (read and updated only when repetition_penalty != 1)
  // Optional I32 [B, kSampleWorkspaceWords], zeroed once by its owner (and left zeroed by every call): with it the
  // CUDA kernel splits a greedy row over kGreedySplit blocks (partial argmaxes, the last block to arrive merges
  // them and updates the state) instead of one block scanning the whole row. The same token either way (the
  // argmax order is total); the CPU twin only checks its shape.
  TensorView workspace;
  // Optional I32 [2, B]: a copy of what this call leaves in last [B] (row 0) and finished [B] (row 1), written by
  // the same thread that writes them (kOff writes nothing). For a reader of every call's flags while several calls
  // run back to back (the generator's multi-step graphs give each captured step its own [2, B]).
  TensorView flags;
};

// Words of one row of DecodeState::seen.
inline int64_t seen_words(int64_t vocab) { return (vocab + 31) / 32; }
// Blocks per greedy row with a workspace, and the workspace's words per row: an arrival ticket, then per block its
// partial argmax value (F32 bits) and index.
inline constexpr int kGreedySplit = 32;
inline constexpr int64_t kSampleWorkspaceWords = 1 + 2 * kGreedySplit;

// One selection step for every row (see the header comment). params: U8 [sizeof(SamplingParams)].
void sample_tokens(const TensorView& logits, const TensorView& params, const DecodeState& state, Stream stream = {});

namespace cpu {
void sample_tokens(const TensorView& logits, const TensorView& params, const DecodeState& state);

// What the CPU twin decided for one row (tests: the warpers against an independent HF-literal oracle).
struct RowTrace {
  int32_t token = -1;
  float max_score = 0.0f;     // the largest warped score
  uint64_t total = 0;         // W: kept weights after top-k
  uint64_t kept_total = 0;    // W': after top-p
  uint64_t target = 0;        // t
  std::vector<uint8_t> kept;  // [V] 1 = survived top-k and top-p (sampling only)
};
// Selects the token of one row: scores [V] already penalised (repetition, min-new-tokens), F32 on the host.
RowTrace select_token(const float* scores, int64_t vocab, const SamplingParams& p, uint32_t sequence, uint32_t step);
}  // namespace cpu

namespace cuda {
void sample_tokens(const TensorView& logits, const TensorView& params, const DecodeState& state, Stream stream);
}  // namespace cuda

namespace sampling_detail {
struct Dims {
  int64_t batch = 0, vocab = 0, max_tokens = 0;
};
Dims check_args(const TensorView& logits, const TensorView& params, const DecodeState& state, Device device,
                const char* what);
}  // namespace sampling_detail

}  // namespace tg::kernels
