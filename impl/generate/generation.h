// What to generate and what comes back: HF generate() semantics (../shared/docs/gemma.md section 4; the
// LibTorch reference's reference/generate.h is the oracle). Plain structs, no device code.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace tg::impl {

enum class EarlyStopping { kFalse, kTrue, kNever };  // HF early_stopping = False | True | "never"

struct GenerationConfig {
  int64_t max_new_tokens = 20;
  int64_t min_new_tokens = 0;  // EOS logits forced to -inf until this many tokens are new
  bool do_sample = false;      // false: greedy (num_beams == 1) or beam search
  double temperature = 1.0;
  int64_t top_k = 50;          // HF's default; applies only when sampling; 0 disables
  double top_p = 1.0;
  double repetition_penalty = 1.0;
  int64_t num_beams = 1;
  double length_penalty = 1.0;
  EarlyStopping early_stopping = EarlyStopping::kFalse;
  int64_t num_return_sequences = 1;   // beam search: the best n of num_beams
  std::vector<int64_t> eos_token_ids;  // empty: the model config's
  bool ignore_eos = false;             // no stop tokens: every row runs to its budget (benchmarks)
  int64_t pad_token_id = -1;           // -1: the model config's
  uint64_t seed = 0;                   // sampling: Philox key (kernels/sampling)
  // Per-prompt budgets (each <= max_new_tokens; greedy/sampling only). Not an HF feature.
  std::vector<int64_t> max_new_tokens_per_row;
  // HF feeds left-padded input_ids to its repetition penalty, so a prompt shorter than the longest one of its
  // batch also penalises the pad token. true reproduces that (the oracle's behaviour); false penalises only
  // tokens the sequence really contains.
  bool penalize_padding = true;
};

struct GenerationTiming {
  double prefill_ms = 0;     // prompt forward + the first token's selection (time to first token)
  double decode_ms = 0;      // every later step
  int64_t decode_steps = 0;  // steps run after the prefill (the last ones may only see finished rows)
  int64_t new_tokens = 0;    // tokens produced over all sequences, the first ones included
  double per_step_ms() const { return decode_steps > 0 ? decode_ms / static_cast<double>(decode_steps) : 0.0; }
  double total_ms() const { return prefill_ms + decode_ms; }
  double tokens_per_second() const { return total_ms() > 0 ? 1e3 * static_cast<double>(new_tokens) / total_ms() : 0; }
};

struct GenerationResult {
  // Per returned sequence (prompts x num_return_sequences, a prompt's rows adjacent): the new tokens, the
  // EOS that ended a sequence included, nothing after it.
  std::vector<std::vector<int64_t>> tokens;
  std::vector<double> scores;  // beam search: HF's sequences_scores (sum of log-probs / length^length_penalty)
  GenerationTiming timing;
};

// Called on the host as tokens become known, in order within each sequence (greedy / sampling: while the
// device runs ahead; beam search: once at the end, as the hypotheses are only final then).
using TokenCallback = std::function<void(int64_t sequence, int32_t token)>;

}  // namespace tg::impl
