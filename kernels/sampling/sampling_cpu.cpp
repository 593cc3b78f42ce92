// The CPU twin of sample_tokens: the golden. Selection thresholds are found by sorting (the CUDA kernel uses
// radix selection); both compute the same uniquely defined keys, so they agree exactly.
#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "common/numeric.h"
#include "kernels/sampling/sampling.h"
#include "kernels/sampling/sampling_math.h"

namespace tg::kernels::cpu {

namespace {

using sampling::composite_key;
using sampling::order_key;
using sampling::weight_of;

bool is_eos(const SamplingParams& p, int64_t id) {
  for (int e = 0; e < p.num_eos; ++e) {
    if (p.eos[e] == id) return true;
  }
  return false;
}

}  // namespace

RowTrace select_token(const float* scores, int64_t vocab, const SamplingParams& p, uint32_t sequence, uint32_t step) {
  RowTrace tr;
  if (p.mode == SamplingMode::kGreedy) {
    // The CUDA scan's order (ties -> the lowest index, NaN never wins, an all-NaN row -> 0) as one key maximum.
    uint64_t best = 0;
    for (int64_t i = 0; i < vocab; ++i) best = std::max(best, sampling::argmax_key(scores[i], static_cast<uint32_t>(i)));
    tr.token = sampling::argmax_key_index(best);
    tr.max_score = scores[tr.token];
    return tr;
  }
  TG_CHECK(p.mode == SamplingMode::kSample, "select_token: mode must be greedy or sample");
  std::vector<float> s(scores, scores + vocab);
  if (p.temperature != 1.0f) {
    for (float& x : s) x = ieee::fdiv(x, p.temperature);
  }
  float m = s[0];
  for (float x : s) m = std::max(m, x);
  tr.max_score = m;

  // Top-k: the k-th largest order key (ascending rank V - k), ties kept.
  uint32_t kth = 0;
  if (p.top_k > 0 && p.top_k < vocab) {
    std::vector<uint32_t> keys(static_cast<std::size_t>(vocab));
    for (int64_t i = 0; i < vocab; ++i) keys[static_cast<std::size_t>(i)] = order_key(s[static_cast<std::size_t>(i)]);
    auto nth = keys.begin() + (vocab - p.top_k);
    std::nth_element(keys.begin(), nth, keys.end());
    kth = *nth;
  }
  std::vector<uint64_t> w(static_cast<std::size_t>(vocab), 0);
  for (int64_t i = 0; i < vocab; ++i) {
    const float x = s[static_cast<std::size_t>(i)];
    if (order_key(x) >= kth) {
      w[static_cast<std::size_t>(i)] = weight_of(x, m);
      tr.total += w[static_cast<std::size_t>(i)];
    }
  }

  // Top-p: the smallest composite key whose ascending cumulative weight exceeds the cut.
  uint64_t cut_key = 0;
  if (p.top_p < 1.0f) {
    std::vector<std::pair<uint64_t, uint64_t>> kw;  // (key, weight) of the tokens with weight
    for (int64_t i = 0; i < vocab; ++i) {
      if (w[static_cast<std::size_t>(i)] > 0) {
        kw.emplace_back(composite_key(s[static_cast<std::size_t>(i)], static_cast<uint32_t>(i)),
                        w[static_cast<std::size_t>(i)]);
      }
    }
    std::sort(kw.begin(), kw.end());
    const uint64_t target = sampling::top_p_target(p.top_p_cut, tr.total);
    cut_key = kw.back().first;  // nothing crosses the cut: the largest token alone
    uint64_t cum = 0;
    for (const auto& [key, weight] : kw) {
      cum += weight;
      if (cum > target) {
        cut_key = key;
        break;
      }
    }
  }
  tr.kept.assign(static_cast<std::size_t>(vocab), 0);
  for (int64_t i = 0; i < vocab; ++i) {
    if (w[static_cast<std::size_t>(i)] > 0 &&
        composite_key(s[static_cast<std::size_t>(i)], static_cast<uint32_t>(i)) >= cut_key) {
      tr.kept[static_cast<std::size_t>(i)] = 1;
      tr.kept_total += w[static_cast<std::size_t>(i)];
    }
  }

  // The draw: the first token (index order) whose cumulative kept weight exceeds t.
  tr.target = sampling::mulhi64(sampling::random_bits(p.seed(), sequence, step), tr.kept_total);
  uint64_t cum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!tr.kept[static_cast<std::size_t>(i)]) continue;
    cum += w[static_cast<std::size_t>(i)];
    if (cum > tr.target) {
      tr.token = static_cast<int32_t>(i);
      break;
    }
  }
  TG_CHECK(tr.token >= 0, "select_token: internal error: no token drawn");
  return tr;
}

void sample_tokens(const TensorView& logits, const TensorView& params, const DecodeState& st) {
  constexpr const char* what = "sample_tokens(cpu)";
  const sampling_detail::Dims d = sampling_detail::check_args(logits, params, st, Device::CPU, what);
  SamplingParams p;
  std::memcpy(&p, params.data, sizeof(p));
  check_sampling_params(p, d.vocab);
  if (p.mode == SamplingMode::kOff) return;
  const bool penalty = p.repetition_penalty != 1.0f;
  const int64_t words = seen_words(d.vocab);
  int32_t* tokens = st.tokens.ptr<int32_t>();
  int32_t* positions = st.positions.ptr<int32_t>();
  int32_t* seqlens = st.seqlens.ptr<int32_t>();
  int32_t* generated = st.generated.ptr<int32_t>();
  const int32_t* max_new = st.max_new.ptr<const int32_t>();
  int32_t* finished = st.finished.ptr<int32_t>();
  int32_t* last = st.last.ptr<int32_t>();
  uint32_t* seen = reinterpret_cast<uint32_t*>(st.seen.data);
  int32_t* flags = st.flags.empty() ? nullptr : st.flags.ptr<int32_t>();  // [2, B]: last, finished
  const auto copy_flags = [&](int64_t b) {
    if (flags == nullptr) return;
    flags[b] = last[b];
    flags[d.batch + b] = finished[b];
  };
  std::vector<float> s(static_cast<std::size_t>(d.vocab));
  for (int64_t b = 0; b < d.batch; ++b) {
    if (finished[b]) {
      last[b] = -1;
      copy_flags(b);
      continue;
    }
    const int32_t g = generated[b];
    uint32_t* row_seen = seen + b * words;
    for (int64_t i = 0; i < d.vocab; ++i) {
      const int64_t at = b * logits.strides[0] + i;
      float x = logits.dtype == DType::BF16 ? bf16_bits_to_float(logits.ptr<const uint16_t>()[at])
                                            : logits.ptr<const float>()[at];
      if (penalty && ((row_seen[i / 32] >> (i % 32)) & 1u)) {
        x = x < 0.0f ? ieee::fmul(x, p.repetition_penalty) : ieee::fdiv(x, p.repetition_penalty);
      }
      if (g < p.min_new_tokens && is_eos(p, i)) x = -std::numeric_limits<float>::infinity();
      s[static_cast<std::size_t>(i)] = x;
    }
    const int32_t t = select_token(s.data(), d.vocab, p, static_cast<uint32_t>(b), static_cast<uint32_t>(g)).token;
    if (g < d.max_tokens) st.out_tokens.ptr<int32_t>()[b * d.max_tokens + g] = t;
    generated[b] = g + 1;
    last[b] = t;
    if (penalty) row_seen[t / 32] |= 1u << (t % 32);
    if (is_eos(p, t) || g + 1 >= max_new[b]) {
      finished[b] = 1;
      positions[b] = -1;
      seqlens[b] = 0;
      tokens[b] = p.pad_token_id;
    } else {
      tokens[b] = t;
      positions[b] += 1;
      seqlens[b] = positions[b] + 1;
    }
    copy_flags(b);
  }
}

}  // namespace tg::kernels::cpu
