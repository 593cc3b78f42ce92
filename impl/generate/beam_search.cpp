#include "impl/generate/beam_search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/check.h"

namespace tg::impl {

namespace {

constexpr float kImpossible = -1.0e9f;

// Indices of the n largest values, descending; equal values in increasing index order.
std::vector<int64_t> top_n(const std::vector<float>& v, int64_t n) {
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  const auto better = [&](int64_t a, int64_t b) {
    return v[static_cast<std::size_t>(a)] > v[static_cast<std::size_t>(b)] ||
           (v[static_cast<std::size_t>(a)] == v[static_cast<std::size_t>(b)] && a < b);
  };
  const auto mid = idx.begin() + std::min<int64_t>(n, static_cast<int64_t>(idx.size()));
  std::partial_sort(idx.begin(), mid, idx.end(), better);
  idx.resize(static_cast<std::size_t>(mid - idx.begin()));
  return idx;
}

}  // namespace

void beam_log_probs(const float* logits, int64_t vocab, const std::vector<int64_t>& seen, float penalty,
                    const std::vector<int64_t>& eos, bool block_eos, float* out) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < vocab; ++i) m = std::max(m, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - m);
  const float lse = static_cast<float>(std::log(sum));
  for (int64_t i = 0; i < vocab; ++i) out[i] = (logits[i] - m) - lse;
  if (penalty != 1.0f) {
    for (int64_t id : seen) {
      float& x = out[id];
      x = x < 0.0f ? x * penalty : x / penalty;
    }
  }
  if (block_eos) {
    for (int64_t e : eos) out[e] = -std::numeric_limits<float>::infinity();
  }
}

BeamSearch::BeamSearch(const Options& o) : o_(o) {
  TG_CHECK(o.batch >= 1 && o.num_beams >= 1 && o.vocab >= 1, "BeamSearch: expected batch, num_beams and vocab >= 1");
  TG_CHECK(o.max_new_tokens >= 1, "BeamSearch: max_new_tokens must be >= 1, got ", o.max_new_tokens);
  TG_CHECK(o.num_return_sequences >= 1 && o.num_return_sequences <= o.num_beams,
           "BeamSearch: num_return_sequences must be in [1, num_beams = ", o.num_beams, "], got ",
           o.num_return_sequences);
  const int64_t n = o.batch * o.num_beams;
  running_.resize(static_cast<std::size_t>(n));
  finished_.resize(static_cast<std::size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    running_[static_cast<std::size_t>(r)].score = r % o.num_beams == 0 ? 0.0f : kImpossible;
    finished_[static_cast<std::size_t>(r)].score = kImpossible;
  }
  early_stop_unsatisfied_.assign(static_cast<std::size_t>(o.batch), true);
}

bool BeamSearch::step(const float* log_probs) {
  const int64_t nb = o_.num_beams, vocab = o_.vocab, n = o_.batch * nb;
  const int64_t n_eos = static_cast<int64_t>(o_.eos.size());
  const int64_t keep = std::max<int64_t>(2, 1 + n_eos) * nb;
  const bool early_true = o_.early_stopping == EarlyStopping::kTrue;
  const int64_t c = generated_;
  const auto is_eos = [&](int64_t t) { return std::find(o_.eos.begin(), o_.eos.end(), t) != o_.eos.end(); };
  // HF divides FP32 scores by a Python float: the scalar is used in FP32.
  const float denom = static_cast<float>(std::pow(static_cast<double>(c + 1), o_.length_penalty));

  std::vector<Beam> running(static_cast<std::size_t>(n)), finished(static_cast<std::size_t>(n));
  next_tokens_.assign(static_cast<std::size_t>(n), 0);
  parents_.assign(static_cast<std::size_t>(n), 0);
  bool all_hits = true;
  std::vector<float> flat(static_cast<std::size_t>(nb * vocab));
  for (int64_t i = 0; i < o_.batch; ++i) {
    const int64_t r0 = i * nb;
    // _get_top_k_continuations: log-probs + running beam scores over (beam, token).
    for (int64_t b = 0; b < nb; ++b) {
      const float s = running_[static_cast<std::size_t>(r0 + b)].score;
      const float* row = log_probs + (r0 + b) * vocab;
      for (int64_t t = 0; t < vocab; ++t) flat[static_cast<std::size_t>(b * vocab + t)] = row[t] + s;
    }
    const std::vector<int64_t> cand = top_n(flat, keep);
    const int64_t k_n = static_cast<int64_t>(cand.size());
    std::vector<float> cand_lp(static_cast<std::size_t>(k_n)), run_lp(static_cast<std::size_t>(k_n));
    std::vector<bool> hits(static_cast<std::size_t>(k_n));
    for (int64_t k = 0; k < k_n; ++k) {
      const int64_t j = cand[static_cast<std::size_t>(k)];
      cand_lp[static_cast<std::size_t>(k)] = flat[static_cast<std::size_t>(j)];
      hits[static_cast<std::size_t>(k)] = is_eos(j % vocab) || c + 1 >= o_.max_new_tokens;
      all_hits = all_hits && hits[static_cast<std::size_t>(k)];
      run_lp[static_cast<std::size_t>(k)] =
          cand_lp[static_cast<std::size_t>(k)] + (hits[static_cast<std::size_t>(k)] ? kImpossible : 0.0f);
    }
    const auto candidate = [&](int64_t k) {
      const int64_t j = cand[static_cast<std::size_t>(k)];
      Beam beam = running_[static_cast<std::size_t>(r0 + j / vocab)];
      beam.tokens.push_back(j % vocab);
      return beam;
    };
    // _get_running_beams_for_next_iteration
    const std::vector<int64_t> next = top_n(run_lp, nb);
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t k = next[static_cast<std::size_t>(b)];
      Beam beam = candidate(k);
      beam.score = run_lp[static_cast<std::size_t>(k)];
      beam.finished = false;
      const int64_t j = cand[static_cast<std::size_t>(k)];
      next_tokens_[static_cast<std::size_t>(r0 + b)] = static_cast<int32_t>(j % vocab);
      parents_[static_cast<std::size_t>(r0 + b)] = static_cast<int32_t>(r0 + j / vocab);
      running[static_cast<std::size_t>(r0 + b)] = std::move(beam);
    }
    // _update_finished_beams
    bool batch_full = early_true;
    for (int64_t b = 0; b < nb; ++b) batch_full = batch_full && finished_[static_cast<std::size_t>(r0 + b)].finished;
    std::vector<float> merged_scores(static_cast<std::size_t>(nb + k_n));
    for (int64_t b = 0; b < nb; ++b) {
      merged_scores[static_cast<std::size_t>(b)] = finished_[static_cast<std::size_t>(r0 + b)].score;
    }
    for (int64_t k = 0; k < k_n; ++k) {
      const bool just_finished = hits[static_cast<std::size_t>(k)] && k < nb;
      float s = cand_lp[static_cast<std::size_t>(k)] / denom;
      if (batch_full) s += kImpossible;
      if (!early_stop_unsatisfied_[static_cast<std::size_t>(i)]) s += kImpossible;
      if (!just_finished) s += kImpossible;
      merged_scores[static_cast<std::size_t>(nb + k)] = s;
    }
    const std::vector<int64_t> kept = top_n(merged_scores, nb);
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t m = kept[static_cast<std::size_t>(b)];
      Beam beam;
      if (m < nb) {
        beam = finished_[static_cast<std::size_t>(r0 + m)];
      } else {
        beam = candidate(m - nb);
        beam.finished = hits[static_cast<std::size_t>(m - nb)] && (m - nb) < nb;
      }
      beam.score = merged_scores[static_cast<std::size_t>(m)];
      finished[static_cast<std::size_t>(r0 + b)] = std::move(beam);
    }
  }
  running_ = std::move(running);
  finished_ = std::move(finished);
  generated_ = c + 1;

  // _check_early_stop_heuristic
  const int64_t best_len =
      (o_.early_stopping == EarlyStopping::kNever && o_.length_penalty > 0.0) ? o_.max_new_tokens : generated_;
  const float best_denom = static_cast<float>(std::pow(static_cast<double>(best_len), o_.length_penalty));
  bool improvement_possible = false, all_finished = true;
  for (int64_t i = 0; i < o_.batch; ++i) {
    const int64_t r0 = i * nb;
    const float best_running = running_[static_cast<std::size_t>(r0)].score / best_denom;
    float worst = finished_[static_cast<std::size_t>(r0)].score;
    for (int64_t b = 1; b < nb; ++b) worst = std::min(worst, finished_[static_cast<std::size_t>(r0 + b)].score);
    bool any = false;
    for (int64_t b = 0; b < nb; ++b) {
      const bool fin = finished_[static_cast<std::size_t>(r0 + b)].finished;
      all_finished = all_finished && fin;
      any = any || best_running > (fin ? worst : kImpossible);
    }
    early_stop_unsatisfied_[static_cast<std::size_t>(i)] = early_stop_unsatisfied_[static_cast<std::size_t>(i)] && any;
    improvement_possible = improvement_possible || early_stop_unsatisfied_[static_cast<std::size_t>(i)];
  }
  const bool exists_open_beam = !(all_finished && early_true);
  return improvement_possible && exists_open_beam && !all_hits;
}

std::vector<std::vector<int64_t>> BeamSearch::results() const {
  std::vector<std::vector<int64_t>> out;
  for (int64_t i = 0; i < o_.batch; ++i) {
    for (int64_t b = 0; b < o_.num_return_sequences; ++b) {
      out.push_back(finished_[static_cast<std::size_t>(i * o_.num_beams + b)].tokens);
    }
  }
  return out;
}

std::vector<double> BeamSearch::scores() const {
  std::vector<double> out;
  for (int64_t i = 0; i < o_.batch; ++i) {
    for (int64_t b = 0; b < o_.num_return_sequences; ++b) {
      out.push_back(finished_[static_cast<std::size_t>(i * o_.num_beams + b)].score);
    }
  }
  return out;
}

}  // namespace tg::impl
