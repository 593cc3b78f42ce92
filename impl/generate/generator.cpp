#include "impl/generate/generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <string>
#include <utility>

#include "common/check.h"
#include "common/env.h"
#include "common/nvtx.h"
#include "impl/generate/beam_search.h"
#include "kernels/convert/convert.h"
#include "kernels/kv_cache/kv_cache.h"
#include "kernels/sampling/sampling.h"

namespace tg::impl {

namespace {

using Clock = std::chrono::steady_clock;
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

TensorView host_i32(std::vector<int32_t>& v) {
  return TensorView(v.data(), DType::I32, Shape{static_cast<int64_t>(v.size())}, Device::CPU);
}

// Sequences [begin, end) of a packed batch as a batch of their own.
Batch sub_batch(const Batch& b, int64_t begin, int64_t end) {
  Batch out;
  const int32_t t0 = b.cu_seqlens[static_cast<std::size_t>(begin)];
  const int32_t t1 = b.cu_seqlens[static_cast<std::size_t>(end)];
  out.tokens.assign(b.tokens.begin() + t0, b.tokens.begin() + t1);
  out.positions.assign(b.positions.begin() + t0, b.positions.begin() + t1);
  for (int64_t s = begin; s < end; ++s) {
    out.cu_seqlens.push_back(b.cu_seqlens[static_cast<std::size_t>(s + 1)] - t0);
    out.max_seqlen = std::max<int64_t>(out.max_seqlen, b.seqlen(s));
  }
  return out;
}

std::vector<int32_t> iota_slots(int64_t n, int64_t stride) {
  std::vector<int32_t> s(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) s[static_cast<std::size_t>(i)] = static_cast<int32_t>(i * stride);
  return s;
}

}  // namespace

Generator::Generator(GemmaForCausalLM& model, const GeneratorOptions& opts)
    : model_(&model), opts_(opts), decoder_(model) {
  TG_CHECK(opts.lookahead >= 1 && opts.lookahead <= 64, "Generator: lookahead must be in [1, 64], got ",
           opts.lookahead);
  TG_CHECK(opts.steps_per_graph >= 0 && opts.steps_per_graph <= 64,
           "Generator: steps_per_graph must be in [1, 64] (0: the default), got ", opts.steps_per_graph);
  cuda_ = model.options().device == Device::CUDA;
  sync_stream(model.options().stream);  // the weights were made there
  if (cuda_) {
    owned_stream_ = OwnedStream::create();
    stream_ = owned_stream_.get();
  }
  graphs_ = cuda_ && opts.cuda_graph;
  opts_.steps_per_graph = opts.steps_per_graph != 0
                              ? opts.steps_per_graph
                              : env_int("TEGEMMA_DECODE_STEPS_PER_GRAPH", kDefaultStepsPerGraph, 1, 64);
  multi_steps_ = graphs_ ? opts_.steps_per_graph : 1;
  KvCacheOptions ko;
  ko.max_batch = opts.max_batch;
  ko.max_seq = opts.max_seq;
  ko.dtype = opts.kv_dtype;
  ko.per_head_scale = opts.kv_per_head_scale;
  ko.headroom = opts.kv_headroom;
  cache_ = KvCacheSet(model.config(), ko, model.options().device);
  opts_.max_seq = cache_.max_seq();
}

Generator::~Generator() {
  try {
    sync_stream(stream_);
  } catch (...) {  // a destructor must not throw; the error was (or will be) reported elsewhere
  }
}

KvScaleMode Generator::prefill_scale_mode() const {
  return cache_.fp8() && !cache_.calibrated() ? KvScaleMode::kFromPrompt : KvScaleMode::kFrozen;
}

void Generator::set_params(Plan& p, const kernels::SamplingParams& params) {
  if (std::memcmp(&p.params, &params, sizeof(params)) == 0) return;
  p.params = params;
  // From pageable memory the copy has consumed the source when it returns.
  copy_async(p.sb->params, TensorView(&p.params, DType::U8, p.sb->params.shape, Device::CPU), stream_);
}

Generator::Plan& Generator::plan(int64_t batch) {
  const auto it = plans_.find(batch);
  if (it != plans_.end()) return it->second;
  Plan p;
  // Every row idle: position -1 (no cache write), length 0 (no attention).
  std::vector<int32_t> idle(static_cast<std::size_t>(3 * batch), 0);
  std::fill(idle.begin() + batch, idle.begin() + 2 * batch, -1);
  const auto make = [&](int64_t row_multiple) {
    p.sb = decoder_.make_step_buffers(batch, cache_.max_seq(), cache_, stream_, row_multiple);
    p.params.mode = kernels::SamplingMode::kOff;  // make_step_buffers wrote this
    copy_async(p.sb->ints.slice_rows(0, 3 * batch), host_i32(idle), stream_);
  };
  const bool block = model_->precision().recipe().kind == RecipeKind::kBlock;
  make(block ? Decoder::kCompactBlockRows : 0);
  if (cuda_) {
    p.ring = PinnedBuffer(static_cast<std::size_t>(ring_slots() * multi_steps_ * 2 * batch) * sizeof(int32_t));
    p.ready.resize(static_cast<std::size_t>(ring_slots()));
    p.ev0 = std::make_unique<CudaEvent>();
    p.ev_first = std::make_unique<CudaEvent>();
    p.ev_end = std::make_unique<CudaEvent>();
    // One eager run first: cuBLASLt's heuristics and workspaces, kernel attributes and every other lazy
    // initialisation happen outside any capture. Idle rows make it side-effect free. Block scaling's compact
    // padding falls back to the recipe's 128 rows if cuBLASLt has no algorithm for it (a host-side tg::Error
    // from the GEMM's heuristic, raised before that GEMM is launched).
    try {
      decoder_.step(*p.sb, cache_, stream_);
      sync_stream(stream_);
    } catch (const Error&) {
      if (!block) throw;
      sync_stream(stream_);
      make(0);
      decoder_.step(*p.sb, cache_, stream_);
      sync_stream(stream_);
    }
  }
  if (graphs_) {
    p.graph.capture(stream_, [&] { decoder_.step(*p.sb, cache_, stream_); });
    ++captures_;
  }
  sync_stream(stream_);
  return plans_.emplace(batch, std::move(p)).first->second;
}

int64_t Generator::launches_in_flight() const {
  const int64_t s = multi_steps_;
  return s == 1 ? opts_.lookahead + 1 : std::max<int64_t>(2, (opts_.lookahead + s - 1) / s) + 1;
}
int64_t Generator::ring_slots() const { return std::max(opts_.lookahead + 1, launches_in_flight()); }

void Generator::capture_multi_step(Plan& p, int64_t batch) {
  if (multi_steps_ == 1 || p.multi_flags.data() != nullptr) return;
  p.multi_flags = Tensor::empty(DType::I32, {2 * multi_steps_, batch}, Device::CUDA);
  try {
    p.multi_graph.capture(stream_, [&] {
      for (int64_t j = 0; j < multi_steps_; ++j) {
        p.sb->state.flags = p.multi_flags.view().slice_rows(2 * j, 2 * j + 2);
        decoder_.step(*p.sb, cache_, stream_);
      }
    });
  } catch (...) {
    p.sb->state.flags = TensorView{};
    p.multi_flags = Tensor{};
    throw;
  }
  p.sb->state.flags = TensorView{};  // every other step (single, eager, prefill) leaves no copy
  sync_stream(stream_);
}

void Generator::run_step(Plan& p, int64_t n) {
  if (n > 1) {
    p.multi_graph.replay(stream_);  // n == multi_steps_ (capture_multi_step)
  } else if (graphs_) {
    p.graph.replay(stream_);
  } else {
    decoder_.step(*p.sb, cache_, stream_);
  }
  steps_run_ += n;
}

Tensor Generator::logits_to_host(const TensorView& logits) const {
  sync_stream(stream_);
  const Tensor bf16 = Tensor::copy_of(logits, Device::CPU);
  Tensor out = Tensor::empty(DType::F32, bf16.shape(), Device::CPU);
  kernels::convert(bf16.view(), out.view());
  return out;
}

void Generator::calibrate(const std::vector<Batch>& batches) {
  TG_NVTX_FN();
  model_->calibrate(batches);  // a no-op unless the recipe is delayed
  if (!cache_.fp8()) return;
  cache_.begin_calibration(stream_);
  for (const Batch& b : batches) {
    for (int64_t s = 0; s < b.num_sequences(); s += cache_.max_batch()) {
      const int64_t e = std::min(b.num_sequences(), s + cache_.max_batch());
      decoder_.prefill(sub_batch(b, s, e), iota_slots(e - s, 1), cache_, KvScaleMode::kAccumulate, stream_);
    }
  }
  cache_.finish_calibration(stream_);
  sync_stream(stream_);
}

namespace {

void check_prompts(const std::vector<std::vector<int64_t>>& prompts, int64_t vocab, int64_t max_seq,
                   int64_t max_new, const char* what) {
  TG_CHECK(!prompts.empty(), what, ": no prompts");
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = prompts[i];
    TG_CHECK(!p.empty(), what, ": prompt ", i, " is empty (every prompt needs at least one token, e.g. BOS)");
    for (std::size_t j = 0; j < p.size(); ++j) {
      TG_CHECK(p[j] >= 0 && p[j] < vocab, what, ": prompt ", i, ", token ", j, ": id ", p[j],
               " is outside the vocabulary [0, ", vocab, ")");
    }
    const int64_t n = static_cast<int64_t>(p.size());
    TG_CHECK(n + max_new <= max_seq, what, ": prompt ", i, " has ", n, " tokens; with ", max_new,
             " new tokens it needs ", n + max_new, " positions, but the context holds ", max_seq,
             " (the KV cache's max_seq, at most max_position_embeddings)");
  }
}

void check_config(const GenerationConfig& g, int64_t vocab, int64_t batch) {
  constexpr const char* what = "generate";
  TG_CHECK(g.max_new_tokens >= 1, what, ": max_new_tokens must be >= 1, got ", g.max_new_tokens);
  TG_CHECK(g.min_new_tokens >= 0, what, ": min_new_tokens must be >= 0, got ", g.min_new_tokens);
  TG_CHECK(std::isfinite(g.temperature) && g.temperature > 0, what, ": temperature must be > 0, got ", g.temperature);
  TG_CHECK(g.top_k >= 0, what, ": top_k must be >= 0 (0 disables), got ", g.top_k);
  TG_CHECK(g.top_p >= 0 && g.top_p <= 1, what, ": top_p must be in [0, 1], got ", g.top_p);
  TG_CHECK(std::isfinite(g.repetition_penalty) && g.repetition_penalty > 0, what,
           ": repetition_penalty must be > 0, got ", g.repetition_penalty);
  TG_CHECK(g.num_beams >= 1, what, ": num_beams must be >= 1, got ", g.num_beams);
  TG_CHECK(g.num_return_sequences >= 1 && g.num_return_sequences <= g.num_beams, what,
           ": num_return_sequences must be in [1, num_beams = ", g.num_beams, "], got ", g.num_return_sequences);
  TG_CHECK(!(g.num_beams > 1 && g.do_sample), what, ": beam sampling (num_beams > 1 with sampling) is not supported");
  TG_CHECK(std::isfinite(g.length_penalty), what, ": length_penalty must be finite, got ", g.length_penalty);
  TG_CHECK(g.max_new_tokens_per_row.empty() || g.num_beams == 1, what,
           ": max_new_tokens_per_row applies to greedy / sampling only");
  TG_CHECK(g.max_new_tokens_per_row.empty() || static_cast<int64_t>(g.max_new_tokens_per_row.size()) == batch, what,
           ": max_new_tokens_per_row has ", g.max_new_tokens_per_row.size(), " entries for ", batch, " prompts");
  for (int64_t lim : g.max_new_tokens_per_row) {
    TG_CHECK(lim >= 1 && lim <= g.max_new_tokens, what, ": a per-row budget of ", lim,
             " is outside [1, max_new_tokens = ", g.max_new_tokens, "]");
  }
  TG_CHECK(static_cast<int64_t>(g.eos_token_ids.size()) <= kernels::kMaxEosTokens, what, ": at most ",
           kernels::kMaxEosTokens, " EOS ids, got ", g.eos_token_ids.size());
  for (int64_t e : g.eos_token_ids) {
    TG_CHECK(e >= 0 && e < vocab, what, ": EOS id ", e, " is outside the vocabulary [0, ", vocab, ")");
  }
  TG_CHECK(g.pad_token_id < vocab, what, ": pad_token_id ", g.pad_token_id, " is outside the vocabulary");
}

}  // namespace

GenerationResult Generator::generate(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& cfg,
                                     const TokenCallback& on_token) {
  TG_NVTX_FN();
  const GemmaConfig& c = model_->config();
  const int64_t batch = static_cast<int64_t>(prompts.size());
  check_config(cfg, c.vocab_size, batch);
  check_prompts(prompts, c.vocab_size, cache_.max_seq(), cfg.max_new_tokens, "generate");
  const int64_t rows = batch * cfg.num_beams;
  TG_CHECK(rows <= cache_.max_batch(), "generate: ", batch, " prompts x ", cfg.num_beams, " beams = ", rows,
           " sequences exceed the KV cache's ", cache_.max_batch(), " slots (GeneratorOptions::max_batch)");
  const Precision& prec = model_->precision();
  TG_CHECK(prec.recipe().kind != RecipeKind::kDelayed || prec.calibrated(),
           "generate: the model runs delayed scaling but was never calibrated (every FP8 scale is still 1); call "
           "Generator::calibrate (or GemmaForCausalLM::calibrate) on representative prompts first");
  std::vector<int64_t> eos;
  if (!cfg.ignore_eos) eos = cfg.eos_token_ids.empty() ? c.eos_token_ids : cfg.eos_token_ids;
  TG_CHECK(static_cast<int64_t>(eos.size()) <= kernels::kMaxEosTokens, "generate: at most ", kernels::kMaxEosTokens,
           " EOS ids, the model config has ", eos.size());
  int64_t pad = cfg.pad_token_id >= 0 ? cfg.pad_token_id : c.pad_token_id;
  if (pad < 0) pad = eos.empty() ? 0 : eos[0];  // HF: pad := the first EOS when unset
  if (cfg.num_beams > 1) return beam_loop(prompts, cfg, eos, pad, on_token);
  return sample_loop(prompts, cfg, eos, pad, on_token);
}

GenerationResult Generator::sample_loop(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& cfg,
                                        const std::vector<int64_t>& eos, int64_t pad, const TokenCallback& on_token) {
  const GemmaConfig& c = model_->config();
  const int64_t batch = static_cast<int64_t>(prompts.size()), vocab = c.vocab_size;
  Plan& p = plan(batch);
  if (graphs_) capture_multi_step(p, batch);  // once per batch size, on its first sampling / greedy call
  const Decoder::StepBuffers& sb = *p.sb;

  kernels::SamplingParams sp;
  sp.mode = cfg.do_sample ? kernels::SamplingMode::kSample : kernels::SamplingMode::kGreedy;
  sp.temperature = static_cast<float>(cfg.temperature);
  sp.top_k = static_cast<int32_t>(std::min<int64_t>(cfg.top_k, vocab));
  sp.set_top_p(cfg.top_p);
  sp.repetition_penalty = static_cast<float>(cfg.repetition_penalty);
  sp.min_new_tokens = static_cast<int32_t>(cfg.min_new_tokens);
  sp.num_eos = static_cast<int32_t>(eos.size());
  for (std::size_t i = 0; i < eos.size(); ++i) sp.eos[i] = static_cast<int32_t>(eos[i]);
  sp.pad_token_id = static_cast<int32_t>(pad);
  sp.set_seed(cfg.seed);
  kernels::check_sampling_params(sp, vocab);

  // The initial state: tokens | positions | seqlens | last | finished | generated | max_new (slots stay).
  int64_t max_len = 0, max_new = 0;
  for (const auto& pr : prompts) max_len = std::max<int64_t>(max_len, static_cast<int64_t>(pr.size()));
  std::vector<int32_t> ints(static_cast<std::size_t>(7 * batch), 0);
  for (int64_t b = 0; b < batch; ++b) {
    const auto n = static_cast<int32_t>(prompts[static_cast<std::size_t>(b)].size());
    const int64_t budget =
        cfg.max_new_tokens_per_row.empty() ? cfg.max_new_tokens : cfg.max_new_tokens_per_row[static_cast<std::size_t>(b)];
    max_new = std::max(max_new, budget);
    ints[static_cast<std::size_t>(batch + b)] = n - 1;
    ints[static_cast<std::size_t>(2 * batch + b)] = n;
    ints[static_cast<std::size_t>(3 * batch + b)] = -1;
    ints[static_cast<std::size_t>(6 * batch + b)] = static_cast<int32_t>(budget);
  }
  std::vector<int32_t> seen;
  if (sp.repetition_penalty != 1.0f) {
    const int64_t words = kernels::seen_words(vocab);
    seen.assign(static_cast<std::size_t>(batch * words), 0);
    for (int64_t b = 0; b < batch; ++b) {
      auto* row = reinterpret_cast<uint32_t*>(seen.data() + b * words);
      const auto& pr = prompts[static_cast<std::size_t>(b)];
      for (int64_t id : pr) row[id / 32] |= 1u << (id % 32);
      if (cfg.penalize_padding && static_cast<int64_t>(pr.size()) < max_len) row[pad / 32] |= 1u << (pad % 32);
    }
  }

  GenerationResult res;
  std::vector<int32_t> last(static_cast<std::size_t>(2 * batch));
  const auto consume = [&](const int32_t* v) {  // last [B] | finished [B]; true once every row is finished
    bool all = true;
    for (int64_t b = 0; b < batch; ++b) {
      if (v[b] >= 0 && on_token) on_token(b, v[b]);
      all = all && v[batch + b] != 0;
    }
    return all;
  };
  const TensorView flags = sb.ints.slice_rows(3 * batch, 5 * batch);
  const auto t0 = Clock::now();
  if (cuda_) p.ev0->record(stream_);
  set_params(p, sp);
  copy_async(sb.ints.slice_rows(0, 7 * batch), host_i32(ints), stream_);
  if (!seen.empty()) copy_async(sb.state.seen, TensorView(seen.data(), DType::I32, sb.state.seen.shape, Device::CPU), stream_);
  const TensorView logits = decoder_.prefill(Batch::from_prompts(prompts), iota_slots(batch, 1), cache_,
                                             prefill_scale_mode(), stream_);
  kernels::sample_tokens(logits, sb.params, sb.state, stream_);
  const int64_t max_steps = max_new - 1;  // decode steps after the prefill's token
  int64_t steps = 0;
  Clock::time_point t_first;
  if (!cuda_) {
    t_first = Clock::now();
    std::memcpy(last.data(), flags.data, last.size() * sizeof(int32_t));
    bool done = consume(last.data());
    while (!done && steps < max_steps) {
      run_step(p);
      ++steps;
      std::memcpy(last.data(), flags.data, last.size() * sizeof(int32_t));
      done = consume(last.data());
    }
    res.timing.prefill_ms = ms_between(t0, t_first);
    res.timing.decode_ms = ms_between(t_first, Clock::now());
  } else {
    // Read-backs run behind the launches through a ring of pinned slots (launches_in_flight); a launch is one step
    // or, while S or more steps remain, one replay of the S-step graph (its S flag pairs in one slot).
    p.ev_first->record(stream_);
    const int64_t ring = ring_slots(), in_flight = launches_in_flight();
    const int64_t multi = multi_steps_, slot_ints = multi * 2 * batch;
    std::vector<CudaEvent>& ready = p.ready;
    const auto slot = [&](int64_t k) {
      const int64_t at = (k % ring) * slot_ints;
      return p.ring.view(DType::I32, Shape{ring * slot_ints}).slice_rows(at, at + slot_ints);
    };
    const auto read_back = [&](int64_t k, int64_t n) {  // launch k's n steps
      const TensorView dst = slot(k).slice_rows(0, n * 2 * batch);
      copy_async(dst, n == 1 ? flags : p.multi_flags.view(), stream_);
      ready[static_cast<std::size_t>(k % ring)].record(stream_);
    };
    std::deque<std::pair<int64_t, int64_t>> pending;  // (launch, steps)
    int64_t launches = 0;
    read_back(0, 1);
    pending.emplace_back(0, 1);
    bool done = false;
    while (!pending.empty()) {
      while (!done && steps < max_steps && static_cast<int64_t>(pending.size()) < in_flight) {
        const int64_t n = multi > 1 && max_steps - steps >= multi ? multi : 1;
        run_step(p, n);
        steps += n;
        read_back(++launches, n);
        pending.emplace_back(launches, n);
      }
      const auto [k, n] = pending.front();
      pending.pop_front();
      ready[static_cast<std::size_t>(k % ring)].wait();
      for (int64_t j = 0; j < n; ++j) {
        if (consume(slot(k).ptr<const int32_t>() + j * 2 * batch)) done = true;
      }
    }
    p.ev_end->record(stream_);
    p.ev_end->wait();
    res.timing.prefill_ms = p.ev_first->since(*p.ev0);
    res.timing.decode_ms = p.ev_end->since(*p.ev_first);
  }
  res.timing.decode_steps = steps;

  // The tokens: out_tokens [B, N] and generated [B] (one copy each, at the end).
  std::vector<int32_t> out(static_cast<std::size_t>(sb.state.out_tokens.numel()));
  std::vector<int32_t> generated(static_cast<std::size_t>(batch));
  sync_stream(stream_);
  copy_bytes(TensorView(out.data(), DType::I32, sb.state.out_tokens.shape, Device::CPU), sb.state.out_tokens);
  copy_bytes(host_i32(generated), sb.state.generated);
  const int64_t n_max = sb.state.out_tokens.shape[1];
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t g = std::min<int64_t>(generated[static_cast<std::size_t>(b)], n_max);
    res.tokens.emplace_back(out.begin() + b * n_max, out.begin() + b * n_max + g);
    res.timing.new_tokens += g;
  }
  return res;
}

GenerationResult Generator::beam_loop(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& cfg,
                                      const std::vector<int64_t>& eos, int64_t pad, const TokenCallback& on_token) {
  const GemmaConfig& c = model_->config();
  const int64_t batch = static_cast<int64_t>(prompts.size()), vocab = c.vocab_size;
  const int64_t nb = cfg.num_beams, rows = batch * nb;
  Plan& p = plan(rows);
  kernels::SamplingParams off;
  off.mode = kernels::SamplingMode::kOff;
  set_params(p, off);

  BeamSearch::Options bo;
  bo.batch = batch;
  bo.num_beams = nb;
  bo.vocab = vocab;
  bo.max_new_tokens = cfg.max_new_tokens;
  bo.num_return_sequences = cfg.num_return_sequences;
  bo.length_penalty = cfg.length_penalty;
  bo.early_stopping = cfg.early_stopping;
  bo.eos = eos;
  BeamSearch bs(bo);

  int64_t max_len = 0;
  for (const auto& pr : prompts) max_len = std::max<int64_t>(max_len, static_cast<int64_t>(pr.size()));
  const float penalty = static_cast<float>(cfg.repetition_penalty);
  const Device dev = model_->options().device;
  Tensor src = Tensor::empty(DType::I32, Shape{rows}, dev);
  Tensor scratch = Tensor::empty(
      DType::U8, Shape{static_cast<int64_t>(cache_.reorder_scratch_bytes(rows, max_len + cfg.max_new_tokens))}, dev);
  std::vector<int32_t> src_host(static_cast<std::size_t>(rows));
  const auto reorder = [&](int64_t length) {
    copy_async(src.view(), host_i32(src_host), stream_);
    for (int64_t l = 0; l < cache_.layers(); ++l) {
      kernels::kv_cache_reorder(cache_.layer(l, rows), src.view(), length, scratch.view(), stream_);
    }
  };

  const auto t0 = Clock::now();
  const TensorView prefill = decoder_.prefill(Batch::from_prompts(prompts), iota_slots(batch, nb), cache_,
                                              prefill_scale_mode(), stream_);
  if (nb > 1) {  // each prompt's beams start from its prefill
    for (int64_t r = 0; r < rows; ++r) src_host[static_cast<std::size_t>(r)] = static_cast<int32_t>(r / nb * nb);
    reorder(max_len);
  }
  const Tensor first = logits_to_host(prefill);
  const auto t_first = Clock::now();
  Tensor logits = Tensor::empty(DType::F32, Shape{rows, vocab}, Device::CPU);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(logits.ptr<float>() + r * vocab, first.ptr<float>() + (r / nb) * vocab,
                static_cast<std::size_t>(vocab) * sizeof(float));
  }
  std::vector<float> log_probs(static_cast<std::size_t>(rows * vocab));
  std::vector<int32_t> ints(static_cast<std::size_t>(3 * rows));
  int64_t steps = 0;
  while (true) {
    for (int64_t r = 0; r < rows; ++r) {
      const auto& pr = prompts[static_cast<std::size_t>(r / nb)];
      std::vector<int64_t> seen;
      if (penalty != 1.0f) {
        seen = pr;
        const auto& gen = bs.running(r);
        seen.insert(seen.end(), gen.begin(), gen.end());
        if (cfg.penalize_padding && static_cast<int64_t>(pr.size()) < max_len) seen.push_back(pad);
        std::sort(seen.begin(), seen.end());
        seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
      }
      beam_log_probs(logits.ptr<float>() + r * vocab, vocab, seen, penalty, eos, bs.generated() < cfg.min_new_tokens,
                     log_probs.data() + r * vocab);
    }
    if (!bs.step(log_probs.data())) break;
    const int64_t g = bs.generated();  // tokens per running beam; g - 1 of them are in the cache
    for (int64_t r = 0; r < rows; ++r) src_host[static_cast<std::size_t>(r)] = bs.parents()[static_cast<std::size_t>(r)];
    reorder(max_len + g - 1);
    for (int64_t r = 0; r < rows; ++r) {
      const auto pos = static_cast<int32_t>(static_cast<int64_t>(prompts[static_cast<std::size_t>(r / nb)].size()) + g - 1);
      ints[static_cast<std::size_t>(r)] = bs.next_tokens()[static_cast<std::size_t>(r)];
      ints[static_cast<std::size_t>(rows + r)] = pos;
      ints[static_cast<std::size_t>(2 * rows + r)] = pos + 1;
    }
    copy_async(p.sb->ints.slice_rows(0, 3 * rows), host_i32(ints), stream_);
    run_step(p);
    ++steps;
    logits = logits_to_host(p.sb->acts.logits.slice_rows(0, rows));
  }
  GenerationResult res;
  res.timing.prefill_ms = ms_between(t0, t_first);
  res.timing.decode_ms = ms_between(t_first, Clock::now());
  res.timing.decode_steps = steps;
  res.tokens = bs.results();
  res.scores = bs.scores();
  for (std::size_t i = 0; i < res.tokens.size(); ++i) {
    res.timing.new_tokens += static_cast<int64_t>(res.tokens[i].size());
    if (on_token) {
      for (int64_t t : res.tokens[i]) on_token(static_cast<int64_t>(i), static_cast<int32_t>(t));
    }
  }
  return res;
}

Tensor Generator::prefill_logits(const std::vector<std::vector<int64_t>>& prompts) {
  const GemmaConfig& c = model_->config();
  check_prompts(prompts, c.vocab_size, cache_.max_seq(), 0, "prefill_logits");
  const auto batch = static_cast<int64_t>(prompts.size());
  TG_CHECK(batch <= cache_.max_batch(), "prefill_logits: ", batch, " prompts exceed the KV cache's ",
           cache_.max_batch(), " slots");
  return logits_to_host(
      decoder_.prefill(Batch::from_prompts(prompts), iota_slots(batch, 1), cache_, prefill_scale_mode(), stream_));
}

Tensor Generator::step_logits(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions) {
  const GemmaConfig& c = model_->config();
  const auto batch = static_cast<int64_t>(tokens.size());
  TG_CHECK(batch >= 1 && positions.size() == tokens.size(), "step_logits: expected one position per token, got ",
           tokens.size(), " tokens and ", positions.size(), " positions");
  TG_CHECK(batch <= cache_.max_batch(), "step_logits: ", batch, " sequences exceed the KV cache's ",
           cache_.max_batch(), " slots");
  std::vector<int32_t> ints(static_cast<std::size_t>(3 * batch));
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t t = tokens[static_cast<std::size_t>(b)], pos = positions[static_cast<std::size_t>(b)];
    TG_CHECK(t >= 0 && t < c.vocab_size, "step_logits: token ", b, " = ", t, " is outside the vocabulary [0, ",
             c.vocab_size, ")");
    TG_CHECK(pos >= -1 && pos < cache_.max_seq(), "step_logits: position ", b, " = ", pos, " is outside [-1, ",
             cache_.max_seq(), ")");
    ints[static_cast<std::size_t>(b)] = t;
    ints[static_cast<std::size_t>(batch + b)] = pos;
    ints[static_cast<std::size_t>(2 * batch + b)] = pos < 0 ? 0 : pos + 1;
  }
  Plan& p = plan(batch);
  kernels::SamplingParams off;
  off.mode = kernels::SamplingMode::kOff;
  set_params(p, off);
  copy_async(p.sb->ints.slice_rows(0, 3 * batch), host_i32(ints), stream_);
  run_step(p);
  return logits_to_host(p.sb->acts.logits.slice_rows(0, batch));
}

}  // namespace tg::impl
