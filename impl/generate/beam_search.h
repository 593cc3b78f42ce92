// Beam search bookkeeping on the host: HF's vectorised GenerationMixin._beam_search (transformers 5.17), line by
// line as the LibTorch reference's reference/generate.cpp runs it, over FP32 log-probabilities of each running
// beam's next token (gemma.md 4.4). The device runs the forward steps; after each step the generator copies the
// B x num_beams logits rows to the host, this class picks the next running beams, and the generator reorders the
// KV cache rows by parent beam on the device (kernels::kv_cache_reorder).
//
// Per step (c = tokens generated so far):
//   scores = log_probs + running beam score; the top K = max(2, 1 + n_eos) * num_beams candidates of each prompt
//   over (beam, token); candidates hitting EOS (or the length limit) become finished hypotheses with score
//   sum_logprob / (c + 1)^length_penalty (only those among the first num_beams candidates); the best num_beams
//   other candidates continue; early stopping as HF (True / False / "never"). Scores are FP32 as HF's on a CPU
//   model; -1e9 marks impossible entries as HF does. Ties among equal scores go to the lower flat index.
#pragma once

#include <cstdint>
#include <vector>

#include "impl/generate/generation.h"

namespace tg::impl {

// HF's beam-search scores of one row: log_softmax of the FP32 logits [V] (FP32 result; the normaliser summed in
// double), then the processors: repetition penalty over the ids in `seen` (log-probs are negative: multiplied),
// EOS -> -inf while block_eos (min_new_tokens not reached).
void beam_log_probs(const float* logits, int64_t vocab, const std::vector<int64_t>& seen, float penalty,
                    const std::vector<int64_t>& eos, bool block_eos, float* out);

class BeamSearch {
 public:
  struct Options {
    int64_t batch = 1;  // prompts
    int64_t num_beams = 2;
    int64_t vocab = 0;
    int64_t max_new_tokens = 1;
    int64_t num_return_sequences = 1;
    double length_penalty = 1.0;
    EarlyStopping early_stopping = EarlyStopping::kFalse;
    std::vector<int64_t> eos;
  };
  explicit BeamSearch(const Options& o);

  // One step over log_probs [batch * num_beams, V] (row r = prompt r / num_beams, beam r % num_beams; already
  // log-softmaxed and processed). Returns false when the search is over (no forward step is needed any more).
  bool step(const float* log_probs);

  int64_t generated() const { return generated_; }  // c
  // After a step that returned true: the token each running beam feeds next, and the running row (flat index
  // into batch * num_beams) whose KV cache it continues.
  const std::vector<int32_t>& next_tokens() const { return next_tokens_; }
  const std::vector<int32_t>& parents() const { return parents_; }
  // The generated tokens of running beam `row` (the repetition penalty's context).
  const std::vector<int64_t>& running(int64_t row) const { return running_[static_cast<std::size_t>(row)].tokens; }

  // The best num_return_sequences finished hypotheses of each prompt (adjacent), and their scores.
  std::vector<std::vector<int64_t>> results() const;
  std::vector<double> scores() const;

 private:
  struct Beam {
    std::vector<int64_t> tokens;
    float score = 0.0f;
    bool finished = false;
  };
  Options o_;
  int64_t generated_ = 0;
  std::vector<Beam> running_;   // [batch * num_beams]
  std::vector<Beam> finished_;  // [batch * num_beams]: HF's `sequences` / beam_scores / is_sent_finished
  std::vector<bool> early_stop_unsatisfied_;  // [batch]
  std::vector<int32_t> next_tokens_, parents_;
};

}  // namespace tg::impl
