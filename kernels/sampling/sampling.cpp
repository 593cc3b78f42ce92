#include "kernels/sampling/sampling.h"

#include <cmath>

namespace tg::kernels {

void check_sampling_params(const SamplingParams& p, int64_t vocab) {
  constexpr const char* what = "sampling params";
  TG_CHECK(p.mode == SamplingMode::kOff || p.mode == SamplingMode::kGreedy || p.mode == SamplingMode::kSample, what,
           ": mode must be off, greedy or sample, got ", static_cast<int>(p.mode));
  TG_CHECK(std::isfinite(p.temperature) && p.temperature > 0.0f, what, ": temperature must be finite and > 0, got ",
           p.temperature);
  TG_CHECK(p.top_k >= 0, what, ": top_k must be >= 0 (0 = off), got ", p.top_k);
  TG_CHECK(p.top_p >= 0.0f && p.top_p <= 1.0f, what, ": top_p must be in [0, 1], got ", p.top_p);
  TG_CHECK(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f, what,
           ": repetition_penalty must be finite and > 0, got ", p.repetition_penalty);
  TG_CHECK(p.min_new_tokens >= 0, what, ": min_new_tokens must be >= 0, got ", p.min_new_tokens);
  TG_CHECK(p.num_eos >= 0 && p.num_eos <= kMaxEosTokens, what, ": at most ", kMaxEosTokens, " EOS ids, got ",
           p.num_eos);
  for (int i = 0; i < p.num_eos; ++i) {
    TG_CHECK(p.eos[i] >= 0 && p.eos[i] < vocab, what, ": EOS id ", p.eos[i], " is outside the vocabulary [0, ", vocab,
             ")");
  }
  TG_CHECK(p.pad_token_id >= 0 && p.pad_token_id < vocab, what, ": pad_token_id ", p.pad_token_id,
           " is outside the vocabulary [0, ", vocab, ")");
}

namespace sampling_detail {

namespace {
void check_vec(const TensorView& t, int64_t n, Device device, const char* what, const char* name) {
  TG_CHECK(!t.empty(), what, ": state.", name, " is missing");
  TG_CHECK(t.dtype == DType::I32, what, ": state.", name, " must be I32, got ", t.dtype);
  TG_CHECK(t.shape == Shape{n}, what, ": state.", name, " must be [B = ", n, "], got ", t.shape);
  check_contiguous(t, what);
  check_device(t, device, what);
}
}  // namespace

Dims check_args(const TensorView& logits, const TensorView& params, const DecodeState& state, Device device,
                const char* what) {
  Dims d;
  TG_CHECK(!logits.empty() && logits.ndim() == 2, what, ": logits must be a 2-D [B, V] view, got ", logits.describe());
  TG_CHECK(logits.dtype == DType::BF16 || logits.dtype == DType::F32, what, ": logits must be BF16 or F32, got ",
           logits.dtype);
  TG_CHECK(logits.strides[1] == 1 && logits.strides[0] >= logits.shape[1], what,
           ": logits must have a unit column stride and a row stride >= V, got strides ", logits.strides);
  check_device(logits, device, what);
  d.batch = logits.shape[0];
  d.vocab = logits.shape[1];
  TG_CHECK(d.batch >= 1 && d.vocab >= 1 && d.vocab <= (int64_t{1} << 23), what,
           ": expected B >= 1 and 1 <= V <= 2^23, got logits ", logits.shape);
  TG_CHECK(!params.empty() && params.dtype == DType::U8 && params.shape == Shape{int64_t{sizeof(SamplingParams)}}, what,
           ": params must be U8 [", sizeof(SamplingParams), "] (a SamplingParams in device memory), got ",
           params.describe());
  check_device(params, device, what);
  check_contiguous(params, what);
  check_vec(state.tokens, d.batch, device, what, "tokens");
  check_vec(state.positions, d.batch, device, what, "positions");
  check_vec(state.seqlens, d.batch, device, what, "seqlens");
  check_vec(state.generated, d.batch, device, what, "generated");
  check_vec(state.max_new, d.batch, device, what, "max_new");
  check_vec(state.finished, d.batch, device, what, "finished");
  check_vec(state.last, d.batch, device, what, "last");
  TG_CHECK(!state.out_tokens.empty() && state.out_tokens.dtype == DType::I32 && state.out_tokens.ndim() == 2 &&
               state.out_tokens.shape[0] == d.batch && state.out_tokens.shape[1] >= 1,
           what, ": state.out_tokens must be I32 [B = ", d.batch, ", N >= 1], got ", state.out_tokens.describe());
  check_contiguous(state.out_tokens, what);
  check_device(state.out_tokens, device, what);
  d.max_tokens = state.out_tokens.shape[1];
  TG_CHECK(!state.seen.empty() && state.seen.dtype == DType::I32 &&
               state.seen.shape == (Shape{d.batch, seen_words(d.vocab)}),
           what, ": state.seen must be I32 [B = ", d.batch, ", ceil(V / 32) = ", seen_words(d.vocab), "], got ",
           state.seen.describe());
  check_contiguous(state.seen, what);
  check_device(state.seen, device, what);
  if (!state.workspace.empty()) {
    TG_CHECK(state.workspace.dtype == DType::I32 && state.workspace.shape == (Shape{d.batch, kSampleWorkspaceWords}),
             what, ": state.workspace (optional) must be I32 [B = ", d.batch, ", ", kSampleWorkspaceWords, "], got ",
             state.workspace.describe());
    check_contiguous(state.workspace, what);
    check_device(state.workspace, device, what);
  }
  if (!state.flags.empty()) {
    TG_CHECK(state.flags.dtype == DType::I32 && state.flags.shape == (Shape{2, d.batch}), what,
             ": state.flags (optional) must be I32 [2, B = ", d.batch, "], got ", state.flags.describe());
    check_contiguous(state.flags, what);
    check_device(state.flags, device, what);
  }
  return d;
}

}  // namespace sampling_detail

void sample_tokens(const TensorView& logits, const TensorView& params, const DecodeState& state, Stream stream) {
  if (logits.device == Device::CPU) return cpu::sample_tokens(logits, params, state);
#if TEGEMMA_HAVE_CUDA
  cuda::sample_tokens(logits, params, state, stream);
#else
  (void)stream;
  TG_FAIL("sample_tokens: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
