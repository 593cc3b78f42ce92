#include "parity/suite.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "common/check.h"
#include "common/file_io.h"
#include "common/tokenizer.h"
#include "impl/recipe.h"
#include "parity/compare.h"
#include "parity/engines.h"
#include "parity/metrics.h"
#include "parity/prompts.h"
#include "parity/thresholds.h"
#if TEGEMMA_HAVE_TORCH
#include <torch/version.h>
#endif

namespace tg::parity {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string fmt_s(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

// A temporary HF checkpoint directory for the reference (random weights), removed when done.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(std::filesystem::temp_directory_path() / ("tegemma_parity_" + std::to_string(::getpid()) + "_" + name)) {
    tg::remove_tree(path_);
    std::filesystem::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    tg::remove_tree(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// An engine that could not be built: every call throws the reason, so the comparisons that need it become
// "could not run" errors under the right labels.
class BrokenEngine : public Engine {
 public:
  BrokenEngine(std::string name, std::string recipe, std::string error)
      : name_(std::move(name)), recipe_(std::move(recipe)), error_(std::move(error)) {}
  std::string name() const override { return name_; }
  std::string precision() const override { return recipe_; }
  ForwardResult forward(const std::vector<TokenIds>&, const ForwardOptions&) override { fail(); }
  std::vector<TokenIds> generate_greedy(const std::vector<TokenIds>&, const GenerateOptions&) override { fail(); }

 private:
  [[noreturn]] void fail() const { throw Error(name_ + "[" + recipe_ + "] could not be built: " + error_); }
  std::string name_, recipe_, error_;
};

// A tg::Error's message without the source location and the failed-condition text TG_CHECK adds
// ("impl/model.cpp:55: <message> [check `...` failed]" -> "<message>"): for lines a user reads.
std::string plain(const std::string& what) {
  std::string m = what;
  const std::size_t colon = m.find(": ");
  if (colon != std::string::npos && colon > 0 && m.find(".cpp:") < colon) m = m.substr(colon + 2);
  const std::size_t check = m.rfind(" [check `");
  if (check != std::string::npos && m.ends_with("failed]")) m.resize(check);
  return m;
}

Tensor clone(const Tensor& t) { return t.data() ? Tensor::copy_of(t.view(), Device::CPU) : Tensor(); }

ForwardResult clone(const ForwardResult& r) {
  ForwardResult out;
  for (const auto& p : r.prompts) {
    PromptForward q;
    q.logits = clone(p.logits);
    for (const auto& t : p.taps) q.taps.push_back(clone(t));
    out.prompts.push_back(std::move(q));
  }
  return out;
}

// The reference and impl BF16 take part in several comparisons on the same prompts: their last answer to the
// same question is replayed instead of recomputed (each kind of question keeps one answer).
class CachingEngine : public Engine {
 public:
  explicit CachingEngine(std::unique_ptr<Engine> e) : e_(std::move(e)) {}
  std::string name() const override { return e_->name(); }
  std::string precision() const override { return e_->precision(); }
  Provenance provenance() const override { return e_->provenance(); }
  ForwardResult forward(const std::vector<TokenIds>& prompts, const ForwardOptions& opts) override {
    Slot& s = forward_[{opts.want_taps, opts.last_position_only}];
    if (!s.valid || s.prompts != prompts) {
      s.result = e_->forward(prompts, opts);
      s.prompts = prompts;
      s.valid = true;
    }
    return clone(s.result);
  }
  std::vector<TokenIds> generate_greedy(const std::vector<TokenIds>& prompts, const GenerateOptions& g) override {
    if (!gen_valid_ || gen_prompts_ != prompts || gen_max_ != g.max_new_tokens || gen_eos_ != g.eos_token_ids) {
      gen_ = e_->generate_greedy(prompts, g);
      gen_prompts_ = prompts;
      gen_max_ = g.max_new_tokens;
      gen_eos_ = g.eos_token_ids;
      gen_valid_ = true;
    }
    return gen_;
  }

 private:
  struct Slot {
    bool valid = false;
    std::vector<TokenIds> prompts;
    ForwardResult result;
  };
  std::unique_ptr<Engine> e_;
  std::map<std::pair<bool, bool>, Slot> forward_;
  bool gen_valid_ = false;
  std::vector<TokenIds> gen_prompts_, gen_;
  int gen_max_ = 0;
  std::vector<int32_t> gen_eos_;
};

std::filesystem::path default_fixtures_dir() {
  return std::filesystem::path(TEGEMMA_SOURCE_DIR) / "reference" / "fixtures";
}

// Seeded random token prompts (BOS first) for delayed scaling's calibration.
std::vector<TokenIds> calibration_prompts(int64_t vocab, uint64_t seed) {
  std::vector<TokenIds> out;
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  for (int n : {64, 48, 32, 17}) {
    TokenIds p{2};
    while (static_cast<int>(p.size()) < n) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      p.push_back(static_cast<int32_t>(3 + (x >> 33) % static_cast<uint64_t>(std::max<int64_t>(vocab - 3, 1))));
    }
    for (auto& t : p) t = static_cast<int32_t>(t % vocab);
    out.push_back(std::move(p));
  }
  return out;
}

// The tiny presets' init: std 0.8 / sqrt(hidden) (a gain of 0.8 per projection) instead of HF's 0.02. At width 64
// HF's init gives near-uniform attention, where a RoPE bug changes nothing measurable (seen: a planted pair swap
// moved no tap beyond BF16 noise at std 0.05; at 0.1 it moves layer 1 by 20x the noise), and near-uniform logits,
// where every argmax is a near-tie. The HF fixtures use a gain of 1.5.
impl::RandomInit tiny_init(const GemmaConfig& cfg) {
  impl::RandomInit init;
  init.std = 0.8 / std::sqrt(static_cast<double>(cfg.hidden_size));
  return init;
}

std::vector<std::string> all_recipes() { return {"bf16", "delayed", "current", "block"}; }

nlohmann::json case_json(const ModelCase& c, const GemmaConfig& cfg) {
  nlohmann::json j{{"name", c.name},
                   {"source", c.source},
                   {"size_class", c.size_class},
                   {"num_params", cfg.num_params()},
                   {"config", nlohmann::json::parse(cfg.to_json_text())}};
  if (c.config) {
    j["seed"] = c.seed;
    j["init"] = {{"std", c.init.std}, {"norm_std", c.init.norm_std}, {"zero_pad_row", c.init.zero_pad_row}};
  }
  return j;
}

// ---- loss curves ---------------------------------------------------------------------------------------

struct Curve {
  std::filesystem::path path;
  LossCurve curve;
  std::string engine, recipe, size_class;
  std::optional<int64_t> init_seed;  // the random init's seed, where the log says it
};

// engine / recipe / size class from the records' keys (the first record that has them), else from the file
// name's tokens (reports/ reads training logs the same way).
Curve read_curve(const std::filesystem::path& path) {
  Curve c;
  c.path = path;
  c.curve = read_loss_curve(path);
  const std::string text = read_file(path);
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = std::min(text.find('\n', pos), text.size());
    const auto j = nlohmann::json::parse(text.substr(pos, end - pos), nullptr, /*allow_exceptions=*/false);
    pos = end + 1;
    if (!j.is_object()) continue;
    auto take = [&](const char* key, std::string& into) {
      if (into.empty() && j.contains(key) && j[key].is_string()) into = j[key].get<std::string>();
    };
    take("engine", c.engine);
    take("recipe", c.recipe);
    take("size_class", c.size_class);
    if (!c.init_seed && j.contains("init_seed") && j["init_seed"].is_number_integer())
      c.init_seed = j["init_seed"].get<int64_t>();
    if (c.size_class.empty() && j.contains("num_params") && j["num_params"].is_number_integer()) {
      const int64_t n = j["num_params"].get<int64_t>();  // size_class_of's rule (thresholds.h), by count
      c.size_class = n < 50'000'000 ? "tiny" : n < 1'000'000'000 ? "small" : n < 5'000'000'000 ? "2b" : "7b";
    }
  }
  std::string tok, stem = path.stem().string();
  auto take_token = [&] {
    std::string t;
    for (char ch : tok) t += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (c.engine.empty() && (t == "reference" || t == "ref")) c.engine = "reference";
    if (c.engine.empty() && t == "impl") c.engine = "impl";
    if (c.recipe.empty() && (t == "bf16" || t == "delayed" || t == "current" || t == "block")) c.recipe = t;
    if (!c.init_seed && t.size() > 4 && t.rfind("seed", 0) == 0 &&
        t.find_first_not_of("0123456789", 4) == std::string::npos && t.size() <= 4 + 18)
      c.init_seed = std::stoll(t.substr(4));  // reference_bf16_seed2.jsonl
    tok.clear();
  };
  for (char ch : stem + "_") {
    if (ch == '_' || ch == '-' || ch == '.' || ch == ' ') {
      take_token();
    } else {
      tok += ch;
    }
  }
  TG_CHECK(c.engine == "reference" || c.engine == "impl", path.string(),
           ": cannot tell which engine wrote this loss curve (an \"engine\": \"reference\"|\"impl\" key in its ",
           "records, or a file name like reference_bf16.jsonl / impl_delayed.jsonl)");
  TG_CHECK(!c.recipe.empty(), path.string(),
           ": cannot tell the recipe of this loss curve (a \"recipe\" key in its records, or a file name token ",
           "bf16 / delayed / current / block)");
  c.recipe = canonical_recipe(c.recipe);  // throws naming a bad recipe string
  return c;
}

std::vector<std::filesystem::path> expand_curve_paths(const std::vector<std::filesystem::path>& in) {
  std::vector<std::filesystem::path> out;
  for (const auto& p : in) {
    TG_CHECK(std::filesystem::exists(p), "--loss-curves: ", p.string(), " does not exist");
    if (!std::filesystem::is_directory(p)) {
      out.push_back(p);
      continue;
    }
    std::vector<std::filesystem::path> found;
    for (const auto& e : std::filesystem::directory_iterator(p))
      if (e.is_regular_file() && e.path().extension() == ".jsonl") found.push_back(e.path());
    TG_CHECK(!found.empty(), "--loss-curves: ", p.string(), " holds no *.jsonl training log");
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

std::string seed_text(const std::optional<int64_t>& seed) {
  return seed ? std::to_string(*seed) : std::string("unknown");
}

// The reference[bf16] logs: the reference, and at most one noise run (the reference again with another init
// seed; compare.h). The reference is the one whose init seed is the impl runs' (that of impl[bf16], else of
// any impl log; "unknown" matches "unknown"); with no impl log, the one with the smallest known seed.
std::pair<const Curve*, const Curve*> reference_and_noise(const std::vector<Curve>& curves) {
  std::vector<const Curve*> refs;
  const Curve* impl_any = nullptr;
  const Curve* impl_bf16 = nullptr;
  for (const auto& c : curves) {
    if (c.engine == "reference" && precision_of(c.recipe) == "bf16") refs.push_back(&c);
    if (c.engine == "impl" && !impl_any) impl_any = &c;
    if (c.engine == "impl" && precision_of(c.recipe) == "bf16") impl_bf16 = &c;
  }
  if (refs.empty()) return {nullptr, nullptr};
  if (refs.size() == 1) return {refs[0], nullptr};
  std::string listing;
  for (const Curve* r : refs) listing += "\n  " + r->path.string() + " (init seed " + seed_text(r->init_seed) + ")";
  TG_CHECK(refs.size() == 2, "--loss-curves: ", refs.size(), " logs of reference[bf16]; at most two (the ",
           "reference and one noise run with another init seed):", listing);
  TG_CHECK(refs[0]->init_seed != refs[1]->init_seed, "--loss-curves: two logs of reference[bf16] with the same ",
           "init seed (", seed_text(refs[0]->init_seed), "); a noise run needs another (an \"init_seed\" key in ",
           "its records, or a file name token seed<N>):", listing);
  const Curve* main = impl_bf16 ? impl_bf16 : impl_any;
  std::optional<int64_t> want;
  if (main) {
    want = main->init_seed;
  } else {
    TG_CHECK(refs[0]->init_seed && refs[1]->init_seed, "--loss-curves: two logs of reference[bf16] and no impl ",
             "log: cannot tell which is the reference:", listing);
    want = std::min(*refs[0]->init_seed, *refs[1]->init_seed);
  }
  for (int i = 0; i < 2; ++i)
    if (refs[i]->init_seed == want) return {refs[i], refs[1 - i]};
  TG_FAIL("--loss-curves: two logs of reference[bf16], and neither has the init seed of ", main->path.string(),
          " (", seed_text(want), "): cannot tell the reference from the noise run:", listing);
}

void run_loss_curves(const SuiteOptions& o, const Thresholds& th, Report& report) {
  std::vector<Curve> curves;
  for (const auto& p : expand_curve_paths(o.loss_curves)) curves.push_back(read_curve(p));
  const auto [ref, noise] = reference_and_noise(curves);
  std::map<std::pair<std::string, std::string>, const Curve*> by_run;  // (engine, precision)
  for (const auto& c : curves) {
    if (&c == noise) continue;
    const auto key = std::make_pair(c.engine, precision_of(c.recipe));
    TG_CHECK(!by_run.count(key), "--loss-curves: two logs of ", key.first, "[", key.second,
             "]: ", by_run[key]->path.string(), " and ", c.path.string());
    by_run[key] = &c;
  }
  std::string size = o.loss_size;
  for (const auto& c : curves)
    if (size.empty() && !c.size_class.empty()) size = c.size_class;
  nlohmann::json notes = nlohmann::json::array();
  if (size.empty()) {
    size = "small";
    notes.push_back(
        "the loss logs do not say their model's size (a \"size_class\" or \"num_params\" key) and "
        "--loss-size was not given: judged with the small (= general) loss thresholds");
  }
  const CompareContext ctx{th, size};
  const std::string noise_label = noise ? "reference_seed" + seed_text(noise->init_seed) + "[bf16]" : "";
  std::set<const Curve*> paired;
  auto pair = [&](const Curve* r, const Curve* test, const NoiseRun& nr) {
    if (!r || !test || r == test) return;
    compare_loss(report, r->curve, r->engine, r->recipe, test->curve, test->engine, test->recipe, ctx, nr);
    paired.insert(r);
    paired.insert(test);
    if (o.log) o.log("  " + report.comparisons.back().status() + ": " + report.comparisons.back().title());
  };
  auto find = [&](const std::string& e, const std::string& p) -> const Curve* {
    auto it = by_run.find({e, p});
    return it == by_run.end() ? nullptr : it->second;
  };
  const Curve* impl_bf16 = find("impl", "bf16");
  for (const auto& c : curves) {
    if (c.engine != "impl") continue;
    const bool bf16 = precision_of(c.recipe) == "bf16";
    // The noise run judges "impl BF16 tracks the reference within noise"; the FP8 rows keep their fixed gates.
    pair(ref, &c, bf16 && noise ? NoiseRun{&noise->curve, noise_label} : NoiseRun{});
    if (!bf16) pair(impl_bf16, &c, {});
  }
  if (noise && !impl_bf16)
    notes.push_back("a noise run (" + noise->path.string() + ") but no impl[bf16] log: the noise run judges nothing");
  for (const auto& c : curves) {
    if (paired.count(&c)) continue;
    // The noise run's own health (NaN, spikes) is judged here: a diverged noise run must not pass silently.
    check_loss_health(report, c.curve, &c == noise ? "reference_seed" + seed_text(c.init_seed) : c.engine, c.recipe,
                      ctx);
    if (o.log) o.log("  " + report.comparisons.back().status() + ": " + report.comparisons.back().title());
  }
  nlohmann::json files = nlohmann::json::array();
  for (const auto& c : curves) {
    nlohmann::json f = {{"path", c.path.string()}, {"engine", c.engine}, {"recipe", c.recipe},
                        {"role", &c == noise ? "noise" : "run"}};
    if (c.init_seed) f["init_seed"] = *c.init_seed;
    files.push_back(std::move(f));
  }
  report.run["loss_curves"] = {{"files", files}, {"size_class", size}, {"notes", notes}};
}

// ---- one model -----------------------------------------------------------------------------------------

struct Model {
  impl::ModelWeights master;
  std::unique_ptr<TempDir> temp;  // the random weights as an HF checkpoint for the reference
  std::filesystem::path ref_dir;
  PromptSet prompts;
};

Model prepare_model(const ModelCase& c, const SuiteOptions& o, const PromptSet& base, bool builtin_prompts,
                    Report& report) {
  Model m;
  impl::WeightOptions wo;
  wo.device = o.device;
  if (c.config) {
    m.master = impl::random_weights(*c.config, c.seed, wo, c.init);
    m.temp = std::make_unique<TempDir>(c.name.empty() ? "model" : c.name);
    impl::save_checkpoint(m.temp->path(), m.master);  // BF16: exactly the impl's weights
    m.ref_dir = m.temp->path();
  } else {
    m.master = impl::load_weights(c.dir, wo);
    m.ref_dir = c.dir;
  }
  const GemmaConfig& cfg = m.master.config;
  PromptSet::Encoder enc;
  if (!c.dir.empty() && std::filesystem::exists(c.dir / "tokenizer.model")) {
    auto tok = std::make_shared<Tokenizer>(Tokenizer::from_file(c.dir / "tokenizer.model"));
    enc = [tok](std::string_view text, bool add_bos) {
      EncodeOptions eo;
      eo.add_bos = add_bos;
      return tok->encode(text, eo);
    };
  }
  m.prompts = base.runnable(enc);
  int32_t max_id = 0;
  for (const auto& p : m.prompts.prompts)
    for (int32_t t : p.tokens) max_id = std::max(max_id, t);
  if (builtin_prompts && max_id >= cfg.vocab_size) {
    for (auto& p : m.prompts.prompts)
      for (auto& t : p.tokens) t = static_cast<int32_t>(t % cfg.vocab_size);
    report.run["prompt_folding"][c.name] =
        "default prompt ids reduced modulo the vocabulary size " + std::to_string(cfg.vocab_size);
  }
  m.prompts.validate_for(cfg.vocab_size, cfg.max_position_embeddings - o.generate);
  return m;
}

}  // namespace

std::string libtorch_version() {
#if TEGEMMA_HAVE_TORCH
  return TORCH_VERSION;
#else
  return "";
#endif
}

ModelCase preset_case(const std::string& preset, int64_t layers, uint64_t seed) {
  ModelCase c;
  GemmaConfig cfg = GemmaConfig::preset(preset);
  c.size_class = size_class_of(cfg);  // of the full-depth shape
  const bool reduced = layers > 0 && layers != cfg.num_hidden_layers;
  if (reduced) cfg.num_hidden_layers = layers;
  c.name = preset + (reduced ? "-L" + std::to_string(layers) : "");
  c.source = "preset:" + preset + ":layers=" + std::to_string(cfg.num_hidden_layers) + ":seed=" + std::to_string(seed);
  c.config = cfg;
  c.seed = seed;
  c.init = preset == "tiny" ? tiny_init(cfg) : impl::RandomInit{};
  c.init.norm_std = 0.3;  // non-zero norm weights (HF: 0), so that a missing "1 +" cannot hide
  return c;
}

ModelCase checkpoint_case(const std::filesystem::path& dir) {
  ModelCase c;
  c.dir = dir;
  std::filesystem::path d = dir;
  if (d.filename().empty()) d = d.parent_path();
  c.name = d.filename().string();
  c.source = dir.string();
  c.size_class = size_class_of(impl::load_config(dir));
  return c;
}

std::vector<ModelCase> suite_models(const std::string& suite, const std::filesystem::path& fixtures_dir, uint64_t seed,
                                    int64_t layers) {
  std::vector<ModelCase> out;
  if (suite == "ci") {
    out.push_back(preset_case("tiny", 0, seed));
    ModelCase w = preset_case("tiny", 0, seed);
    w.config->hidden_size = 128;  // every GEMM's K a multiple of 128: block scaling runs
    w.config->intermediate_size = 256;
    w.init.std = tiny_init(*w.config).std;
    w.name = "tiny-w128";
    w.source = "preset:tiny:hidden_size=128:intermediate_size=256:seed=" + std::to_string(seed);
    out.push_back(w);
    const std::filesystem::path dir = fixtures_dir.empty() ? default_fixtures_dir() : fixtures_dir;
    for (const char* f : {"mqa_f32", "gqa_bf16_sharded", "hd256_bf16"}) {
      TG_CHECK(std::filesystem::exists(dir / f / "config.json"), "--suite ci: the HF fixture ", (dir / f).string(),
               " is missing (give the fixtures directory with --fixtures DIR)");
      ModelCase c = checkpoint_case(dir / f);
      c.source = "fixture:" + (dir / f).string();
      out.push_back(c);
    }
  } else if (suite == "full") {
    for (const char* p : {"gemma-2b", "gemma-7b"})
      out.push_back(preset_case(p, layers > 0 ? layers : kFullSuiteLayers, seed));
  } else {
    TG_CHECK(suite == "none", "--suite: expected ci, full or none, got '", suite, "'");
  }
  return out;
}

Report run_suite(const SuiteOptions& o) {
  const auto t_all = Clock::now();
  Report report = Report::create();
  const std::string lt = libtorch_version();
  if (!lt.empty()) report.provenance["libtorch"] = lt;
  auto log = [&](const std::string& s) {
    if (o.log) o.log(s);
  };
  report.run["suite"] = o.suite;
  report.run["device"] = o.device == Device::CUDA ? "cuda" : "cpu";
  report.run["storage"] = impl::weight_storage_name(o.storage);
  report.run["fp8_lm_head"] = o.fp8_lm_head;
  report.run["generate"] = o.generate;
  report.run["fault_injection"] = o.fault.active() ? o.fault.to_string() + " (TEST-ONLY planted bug)" : "none";
  report.run["skipped"] = nlohmann::json::array();
  report.run["timing_s"] = nlohmann::json::object();

  Thresholds th;
  PromptSet base;
  std::vector<std::string> recipes;  // canonical; bf16 first
  const bool auto_recipes = o.precisions.empty();
  try {
    th = Thresholds::resolve(o.thresholds_file);
    report.set_thresholds(th);
    base = o.prompts_file.empty() ? PromptSet::builtin() : PromptSet::load(o.prompts_file);
    recipes.push_back(canonical_recipe("bf16"));
    for (const auto& r : auto_recipes ? all_recipes() : o.precisions) {
      const std::string c = canonical_recipe(r);  // throws naming a bad recipe string
      if (std::find(recipes.begin(), recipes.end(), c) == recipes.end()) recipes.push_back(c);
    }
    TG_CHECK(o.generate >= 0, "--generate must be >= 0, got ", o.generate);
    TG_CHECK(!o.models.empty() || !o.loss_curves.empty(), "nothing to compare: no models (--suite none) and no ",
             "--loss-curves");
  } catch (const std::exception& e) {
    report.errors.push_back(plain(e.what()));
    return report;
  }
  report.run["precisions"] = recipes;

  const bool multi = o.models.size() > 1;
  nlohmann::json cases = nlohmann::json::array();
  std::set<std::string> size_classes;
  bool prompts_set = false, any_delayed = false;
  for (const ModelCase& mc : o.models) {
    const auto t_model = Clock::now();
    const std::string prefix = multi ? mc.name + "/" : "";
    log("model " + mc.name + " (" + mc.source + ", size class " + mc.size_class + ")");
    Model m;
    try {
      m = prepare_model(mc, o, base, o.prompts_file.empty(), report);
    } catch (const std::exception& e) {
      report.errors.push_back(mc.name + ": could not prepare the model: " + plain(e.what()));
      log("  ERROR: " + std::string(e.what()));
      continue;
    }
    const GemmaConfig& cfg = m.master.config;
    cases.push_back(case_json(mc, cfg));
    size_classes.insert(mc.size_class);
    if (!prompts_set) {
      report.set_prompts(m.prompts);
      prompts_set = true;
    }
    const CompareContext ctx{th, mc.size_class};
    GenerateOptions gen;
    gen.max_new_tokens = o.generate;
    for (int64_t e : cfg.eos_token_ids) gen.eos_token_ids.push_back(static_cast<int32_t>(e));
    const std::vector<TokenIds> calibration = calibration_prompts(cfg.vocab_size, o.calibration_seed);

    auto run_pair = [&](Engine& ref, Engine& test) {
      for (bool generation : {false, true}) {
        if (generation && o.generate == 0) continue;
        const auto t0 = Clock::now();
        const Comparison& c = generation ? compare_generation(report, ref, test, m.prompts, gen, ctx)
                                         : compare_forward(report, ref, test, m.prompts, ctx);
        log("  " + c.status() + ": " + c.title() + " (" + fmt_s(seconds_since(t0)) + ")");
      }
    };
    auto impl_engine = [&](const std::string& recipe) -> std::unique_ptr<Engine> {
      ImplEngineOptions io;
      io.name = prefix + "impl";
      io.recipe = recipe;
      io.device = o.device;
      const bool fp8 = impl::Recipe::parse(recipe).is_fp8();
      io.storage = fp8 ? o.storage : impl::WeightStorage::kMaster;
      io.fp8_lm_head = fp8 && o.fp8_lm_head;
      io.calibration = calibration;
      io.fault = o.fault;
      try {
        return std::make_unique<CachingEngine>(std::make_unique<ImplEngine>(m.master, io));
      } catch (const std::exception& e) {
        return std::make_unique<BrokenEngine>(io.name, recipe, plain(e.what()));
      }
    };

    std::unique_ptr<Engine> ref_raw;
    try {
      ReferenceEngineOptions ro;
      ro.name = prefix + "reference";
      ro.device = o.device;
      ref_raw = std::make_unique<ReferenceEngine>(m.ref_dir, ro);
    } catch (const std::exception& e) {
      ref_raw = std::make_unique<BrokenEngine>(prefix + "reference", "bf16", plain(e.what()));
    }
    CachingEngine ref(std::move(ref_raw));
    const std::unique_ptr<Engine> impl_bf16 = impl_engine(recipes[0]);
    run_pair(ref, *impl_bf16);
    for (std::size_t i = 1; i < recipes.size(); ++i) {
      const impl::Recipe r = impl::Recipe::parse(recipes[i]);
      if (!r.is_fp8()) continue;
      if (auto_recipes) {
        try {
          impl::check_model_shapes(cfg, r, o.fp8_lm_head);
        } catch (const std::exception& e) {
          report.run["skipped"].push_back(
              {{"model", mc.name}, {"precision", std::string(r.name())}, {"reason", plain(e.what())}});
          log("  skipped " + std::string(r.name()) + ": " + plain(e.what()));
          continue;
        }
      }
      any_delayed = any_delayed || r.kind == impl::RecipeKind::kDelayed;
      std::unique_ptr<Engine> test = impl_engine(recipes[i]);
      run_pair(ref, *test);
      run_pair(*impl_bf16, *test);
    }
    const double secs = seconds_since(t_model);
    report.run["timing_s"][mc.name] = secs;
    log("  " + mc.name + " done in " + fmt_s(secs));
  }

  if (!o.loss_curves.empty()) {
    log("loss curves");
    try {
      run_loss_curves(o, th, report);
    } catch (const std::exception& e) {
      report.errors.push_back("loss curves: " + plain(e.what()));
    }
  }

  if (cases.size() == 1) {
    report.model = cases[0];
  } else {
    report.model = {{"source", "suite:" + o.suite},
                    {"size_class", size_classes.size() == 1 ? *size_classes.begin() : std::string("mixed")},
                    {"cases", cases}};
  }
  for (const ModelCase& mc : o.models) {
    if (mc.config && !report.seeds.count("weights")) report.seeds["weights"] = mc.seed;
  }
  if (any_delayed) report.seeds["calibration"] = o.calibration_seed;
  report.run["timing_s"]["total"] = seconds_since(t_all);
  return report;
}

}  // namespace tg::parity
