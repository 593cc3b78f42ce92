// Generation, mirroring transformers 5.17 generation/utils.py: GenerationMixin._sample (greedy and
// multinomial sampling) and the vectorised GenerationMixin._beam_search, with the logits processors of
// generation/logits_process.py. Greedy/sampling keep their state on the model's device (the multinomial draw
// alone runs on the CPU); beam search keeps its bookkeeping on the CPU, in FP32 as HF does on a CPU model.
#include "reference/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/check.h"

namespace tg::ref {

namespace {

at::Tensor long_tensor(const std::vector<int64_t>& v) {
  return at::tensor(at::ArrayRef<int64_t>(v), at::TensorOptions().dtype(at::kLong));
}

// HF's EosTokenCriteria: the last token of each row is a stop token. ids [N, len] -> [N] bool.
at::Tensor hits_eos(const at::Tensor& last_tokens, const at::Tensor& eos) {
  if (eos.numel() == 0) return at::zeros_like(last_tokens, at::kBool);
  return at::isin(last_tokens, eos);
}

// One generate() forward: prefill or decode through the cache, logits of the last position only
// (generate() sets logits_to_keep=1).
ForwardArgs step_args(const at::Tensor& ids, const at::Tensor& pos, const at::Tensor& mask, KVCache& cache) {
  ForwardArgs a;
  a.input_ids = ids;
  a.position_ids = pos;
  a.attention_mask = mask;
  a.cache = &cache;
  a.logits_to_keep = 1;
  return a;
}

// GenerationMixin._gather_beams: take_along_dim over the beam axis (dim 1).
at::Tensor gather_beams(const at::Tensor& t, at::Tensor beam_indices) {
  while (beam_indices.dim() < t.dim()) beam_indices = beam_indices.unsqueeze(-1);
  return at::take_along_dim(t, beam_indices, 1);
}

void check_config(const GenerationConfig& g, int64_t vocab) {
  TG_CHECK(g.max_new_tokens >= 1, "generate: max_new_tokens must be >= 1, got ", g.max_new_tokens);
  TG_CHECK(g.min_new_tokens >= 0, "generate: min_new_tokens must be >= 0, got ", g.min_new_tokens);
  TG_CHECK(g.temperature > 0 && std::isfinite(g.temperature), "generate: temperature must be > 0, got ",
           g.temperature);
  TG_CHECK(g.top_k >= 0, "generate: top_k must be >= 0 (0 disables), got ", g.top_k);
  TG_CHECK(g.top_p >= 0 && g.top_p <= 1, "generate: top_p must be in [0, 1], got ", g.top_p);
  TG_CHECK(g.repetition_penalty > 0, "generate: repetition_penalty must be > 0, got ", g.repetition_penalty);
  TG_CHECK(g.num_beams >= 1, "generate: num_beams must be >= 1, got ", g.num_beams);
  TG_CHECK(g.num_return_sequences >= 1 && g.num_return_sequences <= g.num_beams,
           "generate: num_return_sequences must be in [1, num_beams=", g.num_beams, "], got ",
           g.num_return_sequences);
  TG_CHECK(!(g.num_beams > 1 && g.do_sample), "generate: beam sampling (num_beams > 1 with do_sample) is not "
           "implemented by the reference");
  TG_CHECK(g.max_new_tokens_per_row.empty() || g.num_beams == 1,
           "generate: max_new_tokens_per_row applies to greedy/sampling only");
  for (int64_t e : g.eos_token_ids) {
    TG_CHECK(e >= 0 && e < vocab, "generate: eos token ", e, " outside the vocabulary [0, ", vocab, ")");
  }
}

struct Prepared {
  at::Tensor ids;   // [B, L] int64 CPU
  at::Tensor mask;  // [B, L] int64 CPU
  std::vector<int64_t> eos;
  int64_t pad = -1;
};

GenerationOutput sample(const GemmaModel& model, Prepared p, const GenerationConfig& gen, bool keep_scores) {
  // The loop state lives on the model's device (so a CUDA decode step moves B token ids to the host, not B x V
  // logits); only the multinomial draw runs on the CPU, on a seeded CPU generator.
  const at::Device dev = model.device();
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(dev);
  const int64_t batch = p.ids.size(0), prompt_len = p.ids.size(1);
  const int64_t max_length = prompt_len + gen.max_new_tokens;
  const at::Tensor eos = long_tensor(p.eos).to(dev);
  const bool has_eos = !p.eos.empty();
  std::vector<int64_t> limits = gen.max_new_tokens_per_row;
  if (!limits.empty()) {
    TG_CHECK(static_cast<int64_t>(limits.size()) == batch, "generate: max_new_tokens_per_row has ",
             limits.size(), " entries for ", batch, " rows");
    for (int64_t lim : limits) {
      TG_CHECK(lim >= 1 && lim <= gen.max_new_tokens, "generate: a per-row limit of ", lim,
               " is outside [1, max_new_tokens=", gen.max_new_tokens, "]");
    }
  }
  const bool pad_finished = has_eos || !limits.empty();
  const at::Tensor row_limit = limits.empty() ? at::Tensor() : long_tensor(limits).to(dev);

  at::Generator rng = at::make_generator<at::CPUGeneratorImpl>(gen.seed);
  KVCache cache = KVCache::allocate(model.config(), batch, max_length, model.dtype(), dev);
  at::Tensor ids = p.ids.to(dev);
  at::Tensor mask = p.mask.to(dev);
  at::Tensor pos = positions_from_mask(mask);
  at::Tensor unfinished = at::ones({batch}, i64);
  GenerationOutput out;
  out.prompt_length = prompt_len;

  // Prefill: the whole prompt.
  at::Tensor logits = model.forward(step_args(ids, pos, mask, cache));
  while (true) {
    // _update_model_kwargs_for_generation: one more mask column of ones, position ids + 1.
    mask = at::cat({mask, at::ones({batch, 1}, mask.options())}, 1);
    pos = at::cat({pos, pos.narrow(1, pos.size(1) - 1, 1) + 1}, 1);

    // logits[:, -1] copied and upcast to FP32, then the processors.
    const at::Tensor next_logits = logits.select(1, logits.size(1) - 1).to(at::kFloat, false, /*copy=*/true);
    const at::Tensor scores = process_logits(ids, next_logits, gen, p.eos, prompt_len);
    if (keep_scores) out.scores.push_back(scores.to(at::kCPU));

    at::Tensor next;
    if (gen.do_sample) {
      const at::Tensor probs = at::softmax(scores, -1).to(at::kCPU);
      next = at::multinomial(probs, 1, /*replacement=*/false, rng).squeeze(1).to(dev);
    } else {
      next = at::argmax(scores, -1);
    }
    if (pad_finished) next = next * unfinished + p.pad * (1 - unfinished);
    ids = at::cat({ids, next.unsqueeze(1)}, 1);

    // Stopping criteria: max length for all rows, EOS per row (+ the optional per-row limits).
    if (!pad_finished) {
      // Only the max length can stop: decided on the host, without reading the device (no per-step sync,
      // so the CPU queues the next step while the GPU runs this one).
      if (ids.size(1) >= max_length) break;
    } else {
      at::Tensor done = hits_eos(next, eos);
      if (ids.size(1) >= max_length) done.fill_(true);
      if (row_limit.defined()) done = done.logical_or(row_limit.le(ids.size(1) - prompt_len));
      unfinished = unfinished.logical_and(done.logical_not()).to(at::kLong);
      if (unfinished.max().item<int64_t>() == 0) break;
    }

    const int64_t last = ids.size(1) - 1;
    logits = model.forward(step_args(ids.narrow(1, last, 1), pos.narrow(1, last, 1), mask, cache));
  }
  out.sequences = ids.to(at::kCPU);
  return out;
}

GenerationOutput beam_search(const GemmaModel& model, Prepared p, const GenerationConfig& gen) {
  const int64_t batch = p.ids.size(0), prompt_len = p.ids.size(1);
  const int64_t num_beams = gen.num_beams, vocab = model.config().vocab_size;
  const int64_t max_length = prompt_len + gen.max_new_tokens;
  const double length_penalty = gen.length_penalty;
  const bool early_true = gen.early_stopping == EarlyStopping::True;
  const at::Tensor eos = long_tensor(p.eos);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  const auto b8 = at::TensorOptions().dtype(at::kBool);

  // _expand_inputs_for_generation: every row repeated num_beams times (adjacent).
  const at::Tensor ids = p.ids.repeat_interleave(num_beams, 0);
  at::Tensor mask = p.mask.repeat_interleave(num_beams, 0);
  at::Tensor pos = positions_from_mask(mask);

  const int64_t n_eos = static_cast<int64_t>(p.eos.size());
  const int64_t beams_to_keep = std::max<int64_t>(2, 1 + n_eos) * num_beams;
  const at::Tensor top_num_beam_mask =
      at::cat({at::ones({num_beams}, b8), at::zeros({beams_to_keep - num_beams}, b8)}, 0);
  // `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`: a pad id of 0 is falsy in Python,
  // so Gemma's finished beams are filled with the first EOS id, not with pad.
  const int64_t fill = n_eos == 0 ? -1 : (p.pad > 0 ? p.pad : p.eos[0]);

  at::Tensor running_sequences = at::full({batch, num_beams, max_length}, fill, i64);
  running_sequences.narrow(2, 0, prompt_len).copy_(ids.view({batch, num_beams, prompt_len}));
  at::Tensor sequences = running_sequences.clone();
  at::Tensor running_beam_scores = at::zeros({batch, num_beams}, f32);
  running_beam_scores.narrow(1, 1, num_beams - 1).fill_(-1e9);
  at::Tensor beam_scores = at::full({batch, num_beams}, -1e9, f32);
  at::Tensor is_sent_finished = at::zeros({batch, num_beams}, b8);
  at::Tensor early_stop_unsatisfied = at::ones({batch, 1}, b8);
  at::Tensor running_beam_indices =
      at::full({batch, num_beams, max_length - prompt_len}, -1, at::TensorOptions().dtype(at::kInt));
  at::Tensor beam_indices = running_beam_indices.clone();

  KVCache cache = KVCache::allocate(model.config(), batch * num_beams, max_length, model.dtype(), model.device());
  int64_t cur_len = prompt_len;
  at::Tensor flat_running = ids;
  at::Tensor logits = model.forward(step_args(ids, pos, mask, cache));
  bool first = true;
  while (true) {
    if (!first) {
      flat_running = running_sequences.narrow(2, 0, cur_len).reshape({batch * num_beams, cur_len});
      logits = model.forward(
          step_args(flat_running.narrow(1, cur_len - 1, 1), pos.narrow(1, pos.size(1) - 1, 1), mask, cache));
    }
    first = false;
    mask = at::cat({mask, at::ones({mask.size(0), 1}, mask.options())}, 1);
    pos = at::cat({pos, pos.narrow(1, pos.size(1) - 1, 1) + 1}, 1);

    const at::Tensor step_logits = logits.select(1, logits.size(1) - 1).to(at::kCPU, at::kFloat, false, true);
    at::Tensor log_probs = at::log_softmax(step_logits, -1);
    log_probs = process_logits(flat_running, log_probs, gen, p.eos, prompt_len);
    log_probs = log_probs.view({batch, num_beams, vocab}) + running_beam_scores.unsqueeze(-1);
    log_probs = log_probs.reshape({batch, num_beams * vocab});

    // _get_top_k_continuations
    const auto [topk_log_probs, topk_indices] = at::topk(log_probs, beams_to_keep);
    const at::Tensor topk_current_beam = topk_indices.div(vocab, "floor");
    at::Tensor topk_running_beam_indices = gather_beams(running_beam_indices, topk_current_beam);
    at::Tensor topk_running_sequences = gather_beams(running_sequences, topk_current_beam);
    const at::Tensor topk_ids = topk_indices.remainder(vocab);
    topk_running_sequences.select(2, cur_len).copy_(topk_ids);
    const at::Tensor batch_offset = at::arange(batch, i64).view({-1, 1}) * num_beams;
    topk_running_beam_indices.select(2, cur_len - prompt_len).copy_(topk_current_beam + batch_offset);

    // Stopping criteria on the candidate sequences of length cur_len + 1.
    at::Tensor hits = hits_eos(topk_ids, eos);  // [B, K]
    if (cur_len + 1 >= max_length) hits.fill_(true);

    // _get_running_beams_for_next_iteration
    const at::Tensor topk_running_log_probs = topk_log_probs + hits.to(at::kFloat) * -1.0e9;
    const at::Tensor next_topk = std::get<1>(at::topk(topk_running_log_probs, num_beams));
    running_sequences = gather_beams(topk_running_sequences, next_topk);
    running_beam_scores = gather_beams(topk_running_log_probs, next_topk);
    running_beam_indices = gather_beams(topk_running_beam_indices, next_topk);

    // _update_finished_beams
    const at::Tensor just_finished = hits.logical_and(top_num_beam_mask.unsqueeze(0));
    at::Tensor finished_scores =
        topk_log_probs / std::pow(static_cast<double>(cur_len + 1 - prompt_len), length_penalty);
    const at::Tensor batch_full = is_sent_finished.all(-1, /*keepdim=*/true).logical_and(at::scalar_tensor(
        early_true, b8));
    finished_scores = finished_scores + batch_full.to(at::kFloat) * -1.0e9;
    finished_scores = finished_scores + early_stop_unsatisfied.logical_not().to(at::kFloat) * -1.0e9;
    finished_scores = finished_scores + just_finished.logical_not().to(at::kFloat) * -1.0e9;
    const at::Tensor merged_sequences = at::cat({sequences, topk_running_sequences}, 1);
    const at::Tensor merged_scores = at::cat({beam_scores, finished_scores}, 1);
    const at::Tensor merged_beam_indices = at::cat({beam_indices, topk_running_beam_indices}, 1);
    const at::Tensor merged_finished = at::cat({is_sent_finished, just_finished}, 1);
    const at::Tensor keep = std::get<1>(at::topk(merged_scores, num_beams));
    sequences = gather_beams(merged_sequences, keep);
    beam_scores = gather_beams(merged_scores, keep);
    beam_indices = gather_beams(merged_beam_indices, keep);
    is_sent_finished = gather_beams(merged_finished, keep);

    // Reorder the cache rows by the parent beam of each running beam.
    cache.reorder(running_beam_indices.select(2, cur_len - prompt_len).reshape({batch * num_beams}));
    cur_len += 1;

    // _check_early_stop_heuristic
    const int64_t best_len = (gen.early_stopping == EarlyStopping::Never && length_penalty > 0.0)
                                 ? max_length - prompt_len
                                 : cur_len - prompt_len;
    const at::Tensor best_running =
        running_beam_scores.narrow(1, 0, 1) / std::pow(static_cast<double>(best_len), length_penalty);
    const at::Tensor worst_finished =
        at::where(is_sent_finished, std::get<0>(beam_scores.min(1, /*keepdim=*/true)), at::full({1}, -1.0e9, f32));
    early_stop_unsatisfied = early_stop_unsatisfied.logical_and(best_running.gt(worst_finished).any(-1, true));

    // _beam_search_has_unfinished_sequences
    const bool improvement_possible = early_stop_unsatisfied.any().item<bool>();
    const bool exists_open_beam = !(is_sent_finished.all().item<bool>() && early_true);
    const bool valid_continuations = !hits.all().item<bool>();
    if (!(improvement_possible && exists_open_beam && valid_continuations)) break;
  }

  const int64_t n_ret = gen.num_return_sequences;
  sequences = sequences.narrow(1, 0, n_ret).reshape({batch * n_ret, max_length});
  beam_scores = beam_scores.narrow(1, 0, n_ret).reshape({batch * n_ret});
  beam_indices = beam_indices.narrow(1, 0, n_ret).reshape({batch * n_ret, max_length - prompt_len});
  const int64_t max_generated = (beam_indices + 1).to(at::kBool).sum(1).max().item<int64_t>();
  GenerationOutput out;
  out.prompt_length = prompt_len;
  out.sequences = sequences.narrow(1, 0, prompt_len + max_generated).contiguous();
  out.sequence_scores = beam_scores;
  return out;
}

}  // namespace

at::Tensor process_logits(const at::Tensor& ids, const at::Tensor& scores, const GenerationConfig& gen,
                          const std::vector<int64_t>& eos, int64_t prompt_length, int64_t min_tokens_to_keep) {
  at::Tensor s = scores;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  // RepetitionPenaltyLogitsProcessor: every token id present in the row (prompt and pads included).
  if (gen.repetition_penalty != 1.0) {
    at::Tensor score = at::gather(s, 1, ids);
    score = at::where(score.lt(0), score * gen.repetition_penalty, score / gen.repetition_penalty);
    s = s.scatter(1, ids, score);
  }
  // MinLengthLogitsProcessor (min_length = prompt + min_new_tokens) and MinNewTokensLengthLogitsProcessor:
  // the same condition, EOS scores -> -inf.
  if (gen.min_new_tokens > 0 && !eos.empty() && ids.size(1) - prompt_length < gen.min_new_tokens) {
    s = s.index_fill(1, long_tensor(eos).to(s.device()), neg_inf);
  }
  if (!gen.do_sample) return s;
  // Warpers, in HF's order: temperature, top-k, top-p.
  if (gen.temperature != 1.0) s = s / gen.temperature;
  if (gen.top_k != 0) {
    const int64_t k = std::min(std::max(gen.top_k, min_tokens_to_keep), s.size(-1));
    const at::Tensor kth = std::get<0>(at::topk(s, k)).narrow(-1, k - 1, 1);
    s = s.masked_fill(s.lt(kth), neg_inf);
  }
  if (gen.top_p < 1.0) {
    const auto [sorted, sorted_idx] = at::sort(s, -1, /*descending=*/false);
    const at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    at::Tensor remove_sorted = cumulative.le(1 - gen.top_p);
    remove_sorted.narrow(-1, remove_sorted.size(-1) - min_tokens_to_keep, min_tokens_to_keep).fill_(false);
    const at::Tensor remove = remove_sorted.scatter(1, sorted_idx, remove_sorted);
    s = s.masked_fill(remove, neg_inf);
  }
  return s;
}

std::pair<at::Tensor, at::Tensor> left_pad(const std::vector<std::vector<int64_t>>& prompts, int64_t pad_token_id) {
  TG_CHECK(!prompts.empty(), "left_pad: no prompts");
  size_t len = 0;
  for (const auto& p : prompts) {
    TG_CHECK(!p.empty(), "left_pad: empty prompt");
    len = std::max(len, p.size());
  }
  const int64_t b = static_cast<int64_t>(prompts.size()), l = static_cast<int64_t>(len);
  at::Tensor ids = at::full({b, l}, pad_token_id, at::TensorOptions().dtype(at::kLong));
  at::Tensor mask = at::zeros({b, l}, at::TensorOptions().dtype(at::kLong));
  for (int64_t i = 0; i < b; ++i) {
    const auto& p = prompts[static_cast<size_t>(i)];
    const int64_t n = static_cast<int64_t>(p.size());
    ids[i].narrow(0, l - n, n).copy_(long_tensor(p));
    mask[i].narrow(0, l - n, n).fill_(1);
  }
  return {ids, mask};
}

GenerationOutput generate(const GemmaModel& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                          const GenerationConfig& gen, bool keep_scores) {
  c10::InferenceMode inference;
  const GemmaConfig& cfg = model.config();
  check_config(gen, cfg.vocab_size);
  TG_CHECK(input_ids.defined() && input_ids.dim() == 2 && input_ids.numel() > 0,
           "generate: input_ids must be a non-empty [B, L] tensor");
  Prepared p;
  p.ids = input_ids.to(at::kCPU, at::kLong).contiguous();
  TG_CHECK(p.ids.min().item<int64_t>() >= 0 && p.ids.max().item<int64_t>() < cfg.vocab_size,
           "generate: input ids outside the vocabulary [0, ", cfg.vocab_size, ")");
  if (!gen.ignore_eos) p.eos = gen.eos_token_ids.empty() ? cfg.eos_token_ids : gen.eos_token_ids;
  p.pad = gen.pad_token_id >= 0 ? gen.pad_token_id : cfg.pad_token_id;
  if (p.pad < 0 && !p.eos.empty()) p.pad = p.eos[0];  // HF: pad := first eos when unset
  if (p.pad < 0) p.pad = 0;                             // only used for rows finished by a per-row limit
  if (attention_mask.defined()) {
    TG_CHECK(attention_mask.sizes() == p.ids.sizes(), "generate: attention_mask must have the shape of input_ids");
    p.mask = attention_mask.to(at::kCPU, at::kLong).contiguous();
  } else {
    // _prepare_attention_mask_for_generation
    const bool pad_in_input = p.pad >= 0 && p.ids.eq(p.pad).any().item<bool>();
    const bool pad_is_eos = std::find(p.eos.begin(), p.eos.end(), p.pad) != p.eos.end();
    p.mask = (pad_in_input && !pad_is_eos) ? p.ids.ne(p.pad).to(at::kLong) : at::ones_like(p.ids);
  }
  if (gen.num_beams > 1) return beam_search(model, std::move(p), gen);
  return sample(model, std::move(p), gen, keep_scores);
}

GenerationOutput generate(const GemmaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationConfig& gen, bool keep_scores) {
  const int64_t pad = gen.pad_token_id >= 0 ? gen.pad_token_id : model.config().pad_token_id;
  TG_CHECK(pad >= 0 || prompts.size() == 1, "generate: batched prompts need a pad token id");
  const auto [ids, mask] = left_pad(prompts, std::max<int64_t>(pad, 0));
  return generate(model, ids, mask, gen, keep_scores);
}

}  // namespace tg::ref
