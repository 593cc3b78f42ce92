#include "parity/engines.h"

#include <algorithm>

#include "common/check.h"
#include "impl/batch.h"
#if TEGEMMA_HAVE_TORCH
#include <torch/version.h>  // TORCH_VERSION only (macros): the adapter itself needs only the facade

#include "reference/engine.h"
#endif

namespace tg::parity {

namespace {

std::vector<std::vector<int64_t>> widen(const std::vector<TokenIds>& prompts) {
  std::vector<std::vector<int64_t>> out;
  out.reserve(prompts.size());
  for (const auto& p : prompts) out.emplace_back(p.begin(), p.end());
  return out;
}

// Rows [begin, end) of a host F32 [rows, cols] tensor as a new [end - begin, cols] tensor.
Tensor take_rows(const Tensor& t, int64_t begin, int64_t end) {
  const int64_t cols = t.shape()[1];
  Tensor out = Tensor::empty(DType::F32, {end - begin, cols});
  std::copy(t.ptr<float>() + begin * cols, t.ptr<float>() + end * cols, out.ptr<float>());
  return out;
}

// argmax with ties to the lower index (torch.argmax, and parity's top_k).
int32_t argmax(const float* row, int64_t n) { return static_cast<int32_t>(std::max_element(row, row + n) - row); }

bool is_eos(const GenerateOptions& g, int32_t t) {
  return std::find(g.eos_token_ids.begin(), g.eos_token_ids.end(), t) != g.eos_token_ids.end();
}

const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

}  // namespace

// ---- impl ----------------------------------------------------------------------------------------------

ImplEngine::ImplEngine(const impl::ModelWeights& master, const ImplEngineOptions& opts) : opts_(opts) {
  impl::ModelOptions mo;
  mo.recipe = impl::Recipe::parse(opts.recipe);
  mo.device = opts.device;
  mo.storage = opts.storage;
  mo.fp8_lm_head = opts.fp8_lm_head;
  mo.fault = opts.fault;
  TG_CHECK(opts.storage == impl::WeightStorage::kMaster || mo.recipe.is_fp8(), opts.name,
           ": FP8-only weight storage needs an FP8 recipe, got '", opts.recipe, "'");
  impl::check_model_shapes(master.config, mo.recipe, mo.fp8_lm_head);
  impl::WeightOptions wo;
  wo.device = mo.device;
  wo.recipe = mo.recipe;
  wo.storage = mo.storage;
  wo.fp8_lm_head = mo.fp8_lm_head;
  model_ = std::make_unique<impl::GemmaForCausalLM>(impl::copy_weights(master, wo), mo);
  if (mo.recipe.kind == impl::RecipeKind::kDelayed) {
    TG_CHECK(!opts.calibration.empty(), opts.name, "[delayed]: delayed scaling needs calibration prompts");
    model_->calibrate({impl::Batch::from_prompts(widen(opts.calibration))});
  }
}

ImplEngine::~ImplEngine() = default;

std::string ImplEngine::precision() const { return model_->options().recipe.to_string(); }

Provenance ImplEngine::provenance() const {
  const impl::ModelOptions& o = model_->options();
  Provenance p{{"device", device_name(o.device)},
               {"storage", impl::weight_storage_name(o.storage)},
               {"fp8_lm_head", o.fp8_lm_head ? "true" : "false"},
               {"generation", "greedy by full recompute (no KV cache)"}};
  if (o.recipe.kind == impl::RecipeKind::kDelayed)
    p["calibration"] = std::to_string(opts_.calibration.size()) + " prompts, one batch";
  if (o.fault.active()) p["fault_injection"] = o.fault.to_string() + " (TEST-ONLY planted bug)";
  return p;
}

ForwardResult ImplEngine::forward(const std::vector<TokenIds>& prompts, const ForwardOptions& opts) {
  TG_CHECK(!prompts.empty(), opts_.name, ": no prompts");
  const impl::Batch batch = impl::Batch::from_prompts(widen(prompts));  // every prompt in one packed batch
  impl::ForwardOptions fo;
  fo.logits = opts.last_position_only ? impl::LogitsMode::kLastPerSequence : impl::LogitsMode::kAll;
  fo.taps = opts.want_taps;
  const impl::ForwardOutput out = model_->run(batch, fo);
  ForwardResult r;
  for (std::size_t p = 0; p < prompts.size(); ++p) {
    const int64_t b = batch.cu_seqlens[p], e = batch.cu_seqlens[p + 1];
    PromptForward pf;
    const auto row = static_cast<int64_t>(p);
    pf.logits = opts.last_position_only ? take_rows(out.logits, row, row + 1) : take_rows(out.logits, b, e);
    for (const Tensor& tap : out.taps) pf.taps.push_back(take_rows(tap, b, e));
    r.prompts.push_back(std::move(pf));
  }
  return r;
}

std::vector<TokenIds> ImplEngine::generate_greedy(const std::vector<TokenIds>& prompts, const GenerateOptions& g) {
  std::vector<TokenIds> seqs = prompts, out(prompts.size());
  std::vector<std::size_t> live(prompts.size());  // indices of the unfinished sequences
  for (std::size_t i = 0; i < live.size(); ++i) live[i] = i;
  ForwardOptions fo;
  fo.want_taps = false;
  fo.last_position_only = true;
  for (int step = 0; step < g.max_new_tokens && !live.empty(); ++step) {
    std::vector<TokenIds> batch;
    for (std::size_t i : live) batch.push_back(seqs[i]);
    const ForwardResult r = forward(batch, fo);  // full recompute: see the header comment
    std::vector<std::size_t> next;
    for (std::size_t j = 0; j < live.size(); ++j) {
      const Tensor& lg = r.prompts[j].logits;
      const int32_t tok = argmax(lg.ptr<float>(), lg.shape()[1]);
      out[live[j]].push_back(tok);
      seqs[live[j]].push_back(tok);
      if (!is_eos(g, tok)) next.push_back(live[j]);
    }
    live = std::move(next);
  }
  return out;
}

// ---- reference ---------------------------------------------------------------------------------------

#if TEGEMMA_HAVE_TORCH

bool reference_available() { return true; }

struct ReferenceEngine::Impl {
  ref::Engine engine;
};

ReferenceEngine::ReferenceEngine(const std::filesystem::path& dir, const ReferenceEngineOptions& opts) : opts_(opts) {
  TG_CHECK(opts.dtype == DType::BF16 || opts.dtype == DType::F32, opts.name, ": the reference runs BF16 or F32, got ",
           opts.dtype);
  ref::EngineOptions eo;
  eo.dtype = opts.dtype;
  eo.device = opts.device;
  impl_ = std::make_unique<Impl>(Impl{ref::Engine::load(dir, eo)});
}

ReferenceEngine::~ReferenceEngine() = default;

std::string ReferenceEngine::name() const { return opts_.dtype == DType::F32 ? opts_.name + "-f32" : opts_.name; }

const GemmaConfig& ReferenceEngine::config() const { return impl_->engine.config(); }

Provenance ReferenceEngine::provenance() const {
  return {{"libtorch", TORCH_VERSION},
          {"dtype", opts_.dtype == DType::F32 ? "f32" : "bf16"},
          {"device", device_name(opts_.device)},
          {"attention", "explicit (HF eager)"},
          {"generation", "HF generate() greedy with KV cache, one prompt at a time"}};
}

ForwardResult ReferenceEngine::forward(const std::vector<TokenIds>& prompts, const ForwardOptions& opts) {
  ForwardResult r;
  for (const TokenIds& p : prompts) {
    std::vector<int64_t> ids(p.begin(), p.end());
    const auto s = static_cast<int64_t>(ids.size());
    ref::ForwardRequest req;
    req.input_ids = TensorView(ids.data(), DType::I64, Shape{1, s}, Device::CPU);
    req.last_position_only = opts.last_position_only;
    req.want_taps = opts.want_taps;
    ref::ForwardResult fr = impl_->engine.forward(req);
    PromptForward pf;
    const int64_t v = fr.logits.shape()[-1];
    pf.logits = std::move(fr.logits.reshape_({fr.logits.numel() / v, v}));  // [1, S or 1, V] -> [S or 1, V]
    for (Tensor& tap : fr.layer_outputs) pf.taps.push_back(std::move(tap.reshape_({s, tap.shape()[-1]})));
    r.prompts.push_back(std::move(pf));
  }
  return r;
}

std::vector<TokenIds> ReferenceEngine::generate_greedy(const std::vector<TokenIds>& prompts, const GenerateOptions& g) {
  ref::GenerationConfig gc;
  gc.max_new_tokens = g.max_new_tokens;
  gc.do_sample = false;
  gc.eos_token_ids.assign(g.eos_token_ids.begin(), g.eos_token_ids.end());
  gc.ignore_eos = g.eos_token_ids.empty();
  std::vector<TokenIds> out;
  for (const TokenIds& p : prompts) {  // one at a time: no left padding (see the header comment)
    const ref::GenerateResult gr = impl_->engine.generate({std::vector<int64_t>(p.begin(), p.end())}, gc);
    TG_CHECK(gr.new_tokens.size() == 1, name(), ": generate returned ", gr.new_tokens.size(), " rows for 1 prompt");
    out.emplace_back(gr.new_tokens[0].begin(), gr.new_tokens[0].end());
  }
  return out;
}

#else

bool reference_available() { return false; }

struct ReferenceEngine::Impl {};

ReferenceEngine::ReferenceEngine(const std::filesystem::path&, const ReferenceEngineOptions& opts) : opts_(opts) {
  TG_FAIL("the LibTorch reference is not in this build (configure with TEGEMMA_TORCH=ON and LibTorch installed)");
}
ReferenceEngine::~ReferenceEngine() = default;
std::string ReferenceEngine::name() const { return opts_.name; }
const GemmaConfig& ReferenceEngine::config() const { TG_FAIL("no LibTorch reference in this build"); }
Provenance ReferenceEngine::provenance() const { return {}; }
ForwardResult ReferenceEngine::forward(const std::vector<TokenIds>&, const ForwardOptions&) {
  TG_FAIL("no LibTorch reference in this build");
}
std::vector<TokenIds> ReferenceEngine::generate_greedy(const std::vector<TokenIds>&, const GenerateOptions&) {
  TG_FAIL("no LibTorch reference in this build");
}

#endif

}  // namespace tg::parity
