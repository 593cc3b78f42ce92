// The input of a forward pass: a packed variable-length batch (TE's "thd" layout). B sequences are
// concatenated without padding; cu_seqlens marks their boundaries and every token carries its own position
// (RoPE), so prefill, left-padded HF batches and (next) decode steps with a KV cache are all the same shape
// of input, and no compute is spent on padding.
//
//   tokens      [T]      token ids
//   positions   [T]      each token's position in its sequence (RoPE angle; HF position_ids)
//   cu_seqlens  [B + 1]  sequence b owns tokens [cu_seqlens[b], cu_seqlens[b + 1]); cu_seqlens[0] = 0
//   max_seqlen           the longest sequence (sizes the attention grid)
//
// Batch is the host-side description; the model uploads it into its arena (one copy) at each forward.
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"

namespace tg::impl {

struct Batch {
  std::vector<int32_t> tokens;
  std::vector<int32_t> positions;
  std::vector<int32_t> cu_seqlens{0};
  int64_t max_seqlen = 0;

  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  int64_t num_sequences() const { return static_cast<int64_t>(cu_seqlens.size()) - 1; }
  int64_t seqlen(int64_t b) const {
    return cu_seqlens[static_cast<std::size_t>(b + 1)] - cu_seqlens[static_cast<std::size_t>(b)];
  }
  // Index (into tokens) of the last token of each sequence: the rows whose logits generation needs.
  std::vector<int32_t> last_token_rows() const;

  // Unpadded prompts, positions 0 .. n-1 each. Every prompt must be non-empty.
  static Batch from_prompts(const std::vector<std::vector<int64_t>>& prompts);
  // HF-style rows [B, S] with an attention mask (1 = token, 0 = padding; typically left padding): the padding
  // is dropped and positions are HF generate()'s cumsum(mask) - 1 over the row. Every row needs a token.
  static Batch from_padded(const std::vector<std::vector<int64_t>>& input_ids,
                           const std::vector<std::vector<int64_t>>& attention_mask);

  // Throws tg::Error naming the first problem: inconsistent sizes, cu_seqlens not starting at 0 / not
  // increasing / not ending at T, an empty sequence, max_seqlen not the longest length, a token id outside
  // [0, vocab), a position outside [0, max_positions).
  void validate(int64_t vocab, int64_t max_positions) const;
};

}  // namespace tg::impl
