#include "impl/batch.h"

#include <algorithm>

#include "common/check.h"

namespace tg::impl {

namespace {

int32_t to_id(int64_t v, int64_t row, int64_t col) {
  TG_CHECK(v >= INT32_MIN && v <= INT32_MAX, "Batch: token id ", v, " at [", row, ", ", col,
           "] does not fit in 32 bits");
  return static_cast<int32_t>(v);
}

}  // namespace

std::vector<int32_t> Batch::last_token_rows() const {
  std::vector<int32_t> rows;
  for (std::size_t b = 1; b < cu_seqlens.size(); ++b) rows.push_back(cu_seqlens[b] - 1);
  return rows;
}

Batch Batch::from_prompts(const std::vector<std::vector<int64_t>>& prompts) {
  TG_CHECK(!prompts.empty(), "Batch: no prompts");
  Batch b;
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    TG_CHECK(!prompts[p].empty(), "Batch: prompt ", p, " is empty (every sequence needs at least one token)");
    for (std::size_t i = 0; i < prompts[p].size(); ++i) {
      b.tokens.push_back(to_id(prompts[p][i], static_cast<int64_t>(p), static_cast<int64_t>(i)));
      b.positions.push_back(static_cast<int32_t>(i));
    }
    TG_CHECK(b.tokens.size() <= static_cast<std::size_t>(INT32_MAX), "Batch: more than 2^31 tokens");
    b.cu_seqlens.push_back(static_cast<int32_t>(b.tokens.size()));
    b.max_seqlen = std::max<int64_t>(b.max_seqlen, static_cast<int64_t>(prompts[p].size()));
  }
  return b;
}

Batch Batch::from_padded(const std::vector<std::vector<int64_t>>& input_ids,
                         const std::vector<std::vector<int64_t>>& attention_mask) {
  TG_CHECK(!input_ids.empty(), "Batch: no rows");
  TG_CHECK(input_ids.size() == attention_mask.size(), "Batch: ", input_ids.size(), " rows of ids but ",
           attention_mask.size(), " rows of attention mask");
  Batch b;
  for (std::size_t r = 0; r < input_ids.size(); ++r) {
    TG_CHECK(input_ids[r].size() == attention_mask[r].size(), "Batch: row ", r, " has ", input_ids[r].size(),
             " ids but ", attention_mask[r].size(), " mask values");
    int32_t pos = 0;
    for (std::size_t i = 0; i < input_ids[r].size(); ++i) {
      const int64_t m = attention_mask[r][i];
      TG_CHECK(m == 0 || m == 1, "Batch: attention_mask[", r, "][", i, "] = ", m, "; expected 0 or 1");
      if (!m) continue;
      b.tokens.push_back(to_id(input_ids[r][i], static_cast<int64_t>(r), static_cast<int64_t>(i)));
      b.positions.push_back(pos++);  // cumsum(mask) - 1 at the kept tokens
    }
    TG_CHECK(pos > 0, "Batch: row ", r, " has no token (its attention mask is all zeros)");
    b.cu_seqlens.push_back(static_cast<int32_t>(b.tokens.size()));
    b.max_seqlen = std::max<int64_t>(b.max_seqlen, pos);
  }
  return b;
}

void Batch::validate(int64_t vocab, int64_t max_positions) const {
  const int64_t t = num_tokens();
  TG_CHECK(t > 0, "Batch: no tokens");
  TG_CHECK(static_cast<int64_t>(positions.size()) == t, "Batch: ", t, " tokens but ", positions.size(), " positions");
  TG_CHECK(cu_seqlens.size() >= 2, "Batch: cu_seqlens needs B + 1 >= 2 entries, got ", cu_seqlens.size());
  TG_CHECK(cu_seqlens.front() == 0, "Batch: cu_seqlens[0] must be 0, got ", cu_seqlens.front());
  TG_CHECK(cu_seqlens.back() == t, "Batch: cu_seqlens[B] must equal the token count ", t, ", got ", cu_seqlens.back());
  int64_t longest = 0;
  for (int64_t b = 0; b < num_sequences(); ++b) {
    TG_CHECK(seqlen(b) > 0, "Batch: sequence ", b, " is empty (cu_seqlens[", b,
             "] = ", cu_seqlens[static_cast<std::size_t>(b)], ", cu_seqlens[", b + 1,
             "] = ", cu_seqlens[static_cast<std::size_t>(b + 1)], ")");
    longest = std::max(longest, seqlen(b));
  }
  TG_CHECK(max_seqlen == longest, "Batch: max_seqlen is ", max_seqlen, " but the longest sequence has ", longest,
           " tokens");
  for (int64_t b = 0; b < num_sequences(); ++b) {
    for (int64_t i = cu_seqlens[static_cast<std::size_t>(b)]; i < cu_seqlens[static_cast<std::size_t>(b + 1)]; ++i) {
      const int32_t id = tokens[static_cast<std::size_t>(i)], p = positions[static_cast<std::size_t>(i)];
      const int64_t at = i - cu_seqlens[static_cast<std::size_t>(b)];
      TG_CHECK(id >= 0 && id < vocab, "Batch: token ", i, " (sequence ", b, ", index ", at, ") has id ", id,
               ", outside the vocabulary [0, ", vocab, ")");
      TG_CHECK(p >= 0 && p < max_positions, "Batch: token ", i, " (sequence ", b, ", index ", at, ") has position ", p,
               ", outside [0, ", max_positions, ") (max_position_embeddings)");
    }
  }
}

}  // namespace tg::impl
