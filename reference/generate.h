// KV-cached generation with HF generate() semantics (transformers 5.17 generation/utils.py): prefill of the
// whole (left-padded) prompt batch, then one-token decode steps; greedy, sampling (temperature, top-k, top-p
// in HF's order, seeded), beam search (num_beams, length_penalty, early_stopping); EOS per row,
// max_new_tokens / min_new_tokens, repetition penalty. Torch-facing (reference/ and parity/ only).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "reference/model.h"
#include "reference/options.h"

namespace tg::ref {

struct GenerationOutput {
  // HF's `sequences`: [B * n, L + new] int64 on the CPU: the (padded) prompt followed by the new tokens,
  // finished rows filled with pad (greedy/sampling) or HF's beam fill value (beam search). n = 1 for
  // greedy/sampling, num_return_sequences for beam search (rows of one prompt are adjacent).
  at::Tensor sequences;
  int64_t prompt_length = 0;  // L
  // Beam search: HF's `sequences_scores` [B * n] (sum of log-probs / generated_length^length_penalty).
  at::Tensor sequence_scores;
  // Greedy/sampling: the processed FP32 scores of each step, [B, V] each (HF output_scores), when requested.
  std::vector<at::Tensor> scores;
};

// input_ids [B, L] int64 (left-padded with pad for a batch), attention_mask [B, L] (undefined: inferred as
// HF does: ids != pad when the pad token occurs in the input and is not an EOS token, else all ones).
// Uses the model's device; everything it returns is on the CPU.
GenerationOutput generate(const GemmaModel& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                          const GenerationConfig& gen, bool keep_scores = false);

// Unpadded prompts: left-pads them with the pad token into one batch and builds the mask.
GenerationOutput generate(const GemmaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationConfig& gen, bool keep_scores = false);

// Left-pads prompts into ids [B, L] and mask [B, L] (CPU int64), as a left-padding HF tokenizer does.
std::pair<at::Tensor, at::Tensor> left_pad(const std::vector<std::vector<int64_t>>& prompts, int64_t pad_token_id);

// The logits processors of HF's _get_logits_processor, applied in its order to FP32 scores [N, V] with the
// running sequences ids [N, cur_len]: repetition penalty, min-new-tokens EOS suppression, then (sampling only)
// temperature, top-k, top-p. `min_tokens_to_keep` is 1 for sampling.
at::Tensor process_logits(const at::Tensor& ids, const at::Tensor& scores, const GenerationConfig& gen,
                          const std::vector<int64_t>& eos, int64_t prompt_length, int64_t min_tokens_to_keep = 1);

}  // namespace tg::ref
