#include "common/gemma_config.h"

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/json_util.h"
#include "common/file_io.h"

namespace tg {

namespace {

using json = nlohmann::json;

// Sanity ceilings, far above every released Gemma (Gemma 3: vocab 262208, D 5376, F 21504, 62 layers,
// 32 heads, max_pos 131072). They keep every size product (num_params, q_dim, ...) inside int64.
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxHidden = int64_t{1} << 17;
constexpr int64_t kMaxIntermediate = int64_t{1} << 20;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxHeadDim = 4096;
constexpr int64_t kMaxPositions = int64_t{1} << 24;

constexpr const char* kTanhGelu = "gelu_pytorch_tanh";

// Fields that only Gemma 2 / 3 configs carry.
constexpr const char* kGemma23Fields[] = {
    "query_pre_attn_scalar", "sliding_window",        "attn_logit_softcapping", "final_logit_softcapping",
    "layer_types",           "sliding_window_pattern", "rope_local_base_freq",  "cache_implementation",
    "text_config",           "vision_config",          "use_bidirectional_attention",
};


// The config as read: checks each field's JSON type and names the field on a mismatch.
struct Reader {
  const json& obj;
  std::string_view source;

  const json* find(const char* key) const {
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &*it;
  }
  [[noreturn]] void type_error(const char* key, const char* expected, const json& v) const {
    TG_FAIL(source, ": field '", key, "': expected ", expected, ", got ", json_describe(v));
  }
  int64_t as_int(const char* key, const json& v) const {
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) type_error(key, "an integer within int64", v);
      return static_cast<int64_t>(v.get<uint64_t>());
    }
    if (v.is_number_integer()) return v.get<int64_t>();
    type_error(key, "an integer", v);
  }
  void get(const char* key, int64_t& out) const {
    if (const json* v = find(key)) out = as_int(key, *v);
  }
  void get(const char* key, double& out) const {
    if (const json* v = find(key)) {
      if (!v->is_number()) type_error(key, "a number", *v);
      out = v->get<double>();
    }
  }
  void get(const char* key, bool& out) const {
    if (const json* v = find(key)) {
      if (!v->is_boolean()) type_error(key, "true or false", *v);
      out = v->get<bool>();
    }
  }
  // Strings may be null ("unset"); returns whether a string was read.
  bool get_optional(const char* key, std::string& out) const {
    const json* v = find(key);
    if (!v || v->is_null()) return false;
    if (!v->is_string()) type_error(key, "a string or null", *v);
    out = v->get<std::string>();
    return true;
  }
};

int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r = 0;
  TG_CHECK(!__builtin_mul_overflow(a, b, &r), "GemmaConfig: parameter count overflows (", a, " x ", b,
           "); validate() the config first");
  return r;
}
int64_t checked_add(int64_t a, int64_t b) {
  int64_t r = 0;
  TG_CHECK(!__builtin_add_overflow(a, b, &r), "GemmaConfig: parameter count overflows; validate() the config first");
  return r;
}

void check_range(std::string_view source, const char* field, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) TG_FAIL(source, ": ", field, " must be in [", lo, ", ", hi, "], got ", v);
}

}  // namespace

// ---- parameter counts ----------------------------------------------------------------------------
int64_t GemmaConfig::params_per_layer() const {
  const int64_t d = hidden_size;
  const int64_t attn = checked_add(checked_mul(2 * d, q_dim()), checked_mul(2 * d, kv_dim()));  // q, o; k, v
  const int64_t mlp = checked_mul(checked_mul(3, d), intermediate_size);                         // gate, up, down
  return checked_add(checked_add(attn, mlp), 2 * d);  // input_layernorm, post_attention_layernorm
}

int64_t GemmaConfig::num_params() const {
  const int64_t embed = checked_mul(vocab_size, hidden_size);
  int64_t n = checked_add(embed, checked_mul(num_hidden_layers, params_per_layer()));
  n = checked_add(n, hidden_size);  // final norm
  return tie_word_embeddings ? n : checked_add(n, embed);
}

// ---- validation ----------------------------------------------------------------------------------
void GemmaConfig::validate(std::string_view source) const {
  if (model_type != "gemma") TG_FAIL(source, ": model_type must be 'gemma', got '", model_type, "'");
  check_range(source, "vocab_size", vocab_size, 1, kMaxVocab);
  check_range(source, "hidden_size", hidden_size, 1, kMaxHidden);
  check_range(source, "intermediate_size", intermediate_size, 1, kMaxIntermediate);
  check_range(source, "num_hidden_layers", num_hidden_layers, 1, kMaxLayers);
  check_range(source, "num_attention_heads", num_attention_heads, 1, kMaxHeads);
  check_range(source, "num_key_value_heads", num_key_value_heads, 1, num_attention_heads);
  check_range(source, "head_dim", head_dim, 2, kMaxHeadDim);
  check_range(source, "max_position_embeddings", max_position_embeddings, 1, kMaxPositions);
  if (num_attention_heads % num_key_value_heads != 0) {
    TG_FAIL(source, ": num_attention_heads (", num_attention_heads, ") must be a multiple of num_key_value_heads (",
            num_key_value_heads, ")");
  }
  if (head_dim % 2 != 0) {
    TG_FAIL(source, ": head_dim must be even (RoPE rotates the two halves of each head), got ", head_dim);
  }
  if (!(std::isfinite(rms_norm_eps) && rms_norm_eps > 0 && rms_norm_eps < 1)) {
    TG_FAIL(source, ": rms_norm_eps must be a finite number in (0, 1), got ", rms_norm_eps);
  }
  if (!(std::isfinite(rope_theta) && rope_theta > 1)) {
    TG_FAIL(source, ": rope_theta must be a finite number > 1, got ", rope_theta);
  }
  check_range(source, "pad_token_id", pad_token_id, 0, vocab_size - 1);
  check_range(source, "bos_token_id", bos_token_id, 0, vocab_size - 1);
  if (eos_token_ids.empty()) TG_FAIL(source, ": eos_token_id must list at least one token");
  for (int64_t id : eos_token_ids) check_range(source, "eos_token_id", id, 0, vocab_size - 1);
  if (hidden_activation != kTanhGelu) {
    TG_FAIL(source, ": hidden_activation must be '", kTanhGelu, "' (the only supported activation), got '",
            hidden_activation, "'");
  }
  if (torch_dtype != "bfloat16" && torch_dtype != "float16" && torch_dtype != "float32") {
    TG_FAIL(source, ": torch_dtype must be bfloat16, float16 or float32, got '", torch_dtype, "'");
  }
}

// ---- parsing -------------------------------------------------------------------------------------
GemmaConfig GemmaConfig::from_json_text(std::string_view text, std::string_view source) {
  const json root = parse_json_strict(text, source, "config", /*max_depth=*/16).root;
  const Reader r{root, source};

  GemmaConfig c;
  if (const json* mt = r.find("model_type")) {
    if (!mt->is_string()) r.type_error("model_type", "a string", *mt);
    const std::string& m = mt->get_ref<const std::string&>();
    if (m == "gemma2" || m == "gemma3" || m == "gemma3_text") {
      TG_FAIL(source, ": Gemma 2/3 ('", m, "') is not supported yet");
    }
    if (m != "gemma") TG_FAIL(source, ": model_type '", m, "' is not a Gemma config (expected 'gemma')");
  }
  for (const char* f : kGemma23Fields) {
    const json* v = r.find(f);
    if (v && !v->is_null()) TG_FAIL(source, ": Gemma 2/3 ('gemma' with the Gemma 2/3 field '", f, "') is not supported yet");
  }
  if (const json* arch = r.find("architectures"); arch && arch->is_array()) {
    for (const json& a : *arch) {
      if (a.is_string() && (a.get<std::string>().rfind("Gemma2", 0) == 0 || a.get<std::string>().rfind("Gemma3", 0) == 0)) {
        TG_FAIL(source, ": Gemma 2/3 ('", a.get<std::string>(), "') is not supported yet");
      }
    }
  }

  r.get("vocab_size", c.vocab_size);
  r.get("hidden_size", c.hidden_size);
  r.get("intermediate_size", c.intermediate_size);
  r.get("num_hidden_layers", c.num_hidden_layers);
  r.get("num_attention_heads", c.num_attention_heads);
  r.get("num_key_value_heads", c.num_key_value_heads);
  r.get("head_dim", c.head_dim);
  r.get("max_position_embeddings", c.max_position_embeddings);
  r.get("rms_norm_eps", c.rms_norm_eps);
  r.get("rope_theta", c.rope_theta);
  // transformers >= 5 writes the RoPE base as rope_parameters = {"rope_type": "default", "rope_theta": ...}
  // instead of a top-level rope_theta (the reference fixtures do); a top-level rope_theta wins.
  if (const json* rp = r.find("rope_parameters"); rp && rp->is_object() && !r.find("rope_theta")) {
    const auto ty = rp->find("rope_type");
    const std::string type = ty != rp->end() && ty->is_string() ? ty->get<std::string>() : "default";
    if (type != "default") {
      TG_FAIL(source, ": rope_parameters.rope_type '", type, "' is not supported (Gemma 1 uses 'default')");
    }
    if (const auto th = rp->find("rope_theta"); th != rp->end()) {
      if (!th->is_number()) r.type_error("rope_parameters.rope_theta", "a number", *th);
      c.rope_theta = th->get<double>();
    }
  }
  r.get("pad_token_id", c.pad_token_id);
  r.get("bos_token_id", c.bos_token_id);
  r.get("tie_word_embeddings", c.tie_word_embeddings);
  if (const json* eos = r.find("eos_token_id")) {
    c.eos_token_ids.clear();
    if (eos->is_array()) {
      for (const json& id : *eos) c.eos_token_ids.push_back(r.as_int("eos_token_id", id));
      if (c.eos_token_ids.empty()) r.type_error("eos_token_id", "an integer or a non-empty list of integers", *eos);
    } else {
      if (!eos->is_number_integer()) r.type_error("eos_token_id", "an integer or a list of integers", *eos);
      c.eos_token_ids.push_back(r.as_int("eos_token_id", *eos));
    }
  }

  // Activation (gemma.md 2.6 / trap 11): Gemma 1 was trained with the tanh GELU. hidden_activation
  // wins when set; a legacy hidden_act of "gelu" is what Gemma 1 Hub configs carry and means the tanh
  // GELU in HF's Gemma code, so it is read as such. An explicit exact GELU is refused, not guessed.
  std::string act;
  if (r.get_optional("hidden_activation", act)) {
    if (act == "gelu") {
      TG_FAIL(source, ": hidden_activation 'gelu' (exact erf GELU) is not supported yet; Gemma uses '", kTanhGelu,
              "'");
    }
    if (act != kTanhGelu && act != "gelu_tanh") {
      TG_FAIL(source, ": field 'hidden_activation': expected '", kTanhGelu, "' or 'gelu_tanh', got '", act, "'");
    }
  } else if (r.get_optional("hidden_act", act)) {
    if (act != "gelu" && act != kTanhGelu && act != "gelu_tanh") {
      TG_FAIL(source, ": field 'hidden_act': expected 'gelu', '", kTanhGelu, "' or 'gelu_tanh', got '", act, "'");
    }
  }
  c.hidden_activation = kTanhGelu;

  std::string dtype;
  if (r.get_optional("dtype", dtype) || r.get_optional("torch_dtype", dtype)) c.torch_dtype = dtype;

  // Features Gemma 1 never used: refuse rather than silently ignore.
  bool attention_bias = false;
  r.get("attention_bias", attention_bias);
  if (attention_bias) TG_FAIL(source, ": attention_bias true is not supported (Gemma has bias-free projections)");
  double dropout = 0.0;
  r.get("attention_dropout", dropout);
  if (dropout != 0.0) TG_FAIL(source, ": attention_dropout ", dropout, " is not supported (only 0)");
  if (const json* rs = r.find("rope_scaling"); rs && !rs->is_null()) {
    TG_FAIL(source, ": rope_scaling is not supported yet (Gemma 1 uses none), got ", json_describe(*rs));
  }

  c.validate(source);
  return c;
}

GemmaConfig GemmaConfig::from_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  TG_CHECK(ec || size <= (16u << 20), path.string(), ": ", size, " bytes is far too large for a config.json");
  return from_json_text(read_file(path), path.string());
}

std::string GemmaConfig::to_json_text() const {
  json j = {
      {"architectures", {"GemmaForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", bos_token_id},
      {"head_dim", head_dim},
      {"hidden_act", hidden_activation},
      {"hidden_activation", hidden_activation},
      {"hidden_size", hidden_size},
      {"initializer_range", 0.02},
      {"intermediate_size", intermediate_size},
      {"max_position_embeddings", max_position_embeddings},
      {"model_type", model_type},
      {"num_attention_heads", num_attention_heads},
      {"num_hidden_layers", num_hidden_layers},
      {"num_key_value_heads", num_key_value_heads},
      {"pad_token_id", pad_token_id},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_scaling", nullptr},
      {"rope_theta", rope_theta},
      {"tie_word_embeddings", tie_word_embeddings},
      {"torch_dtype", torch_dtype},
      {"use_cache", true},
      {"vocab_size", vocab_size},
  };
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  else j["eos_token_id"] = eos_token_ids;
  return j.dump(2) + "\n";
}

// ---- presets -------------------------------------------------------------------------------------
GemmaConfig GemmaConfig::preset(std::string_view name) {
  GemmaConfig c;  // HF defaults: gemma-7b
  if (name == "tiny") {
    // CI-sized, CPU-fast; MQA and q width (4 x 32 = 128) != hidden (64), like gemma-7b's 4096 != 3072.
    c.vocab_size = 512;
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 1;
    c.head_dim = 32;
    c.max_position_embeddings = 512;
  } else if (name == "small") {
    // The loss-curve model in Gemma's shape (MQA, head_dim 128): 187,720,704 parameters
    // = 8192 x 1024 embedding (8,388,608) + 12 layers x 14,944,256 + 1024 final norm.
    c.vocab_size = 8192;
    c.hidden_size = 1024;
    c.intermediate_size = 4096;
    c.num_hidden_layers = 12;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 1;
    c.head_dim = 128;
    c.max_position_embeddings = 2048;
  } else if (name == "gemma-2b") {
    // 2,506,172,416 parameters (gemma.md 1.2).
    c.vocab_size = 256000;
    c.hidden_size = 2048;
    c.intermediate_size = 16384;
    c.num_hidden_layers = 18;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 1;
    c.head_dim = 256;
    c.max_position_embeddings = 8192;
  } else if (name == "gemma-7b") {
    // 8,537,680,896 parameters (gemma.md 1.2); q width 4096 != hidden 3072.
    c.vocab_size = 256000;
    c.hidden_size = 3072;
    c.intermediate_size = 24576;
    c.num_hidden_layers = 28;
    c.num_attention_heads = 16;
    c.num_key_value_heads = 16;
    c.head_dim = 256;
    c.max_position_embeddings = 8192;
  } else {
    std::string all;
    for (const auto& n : preset_names()) all += (all.empty() ? "" : ", ") + n;
    TG_FAIL("unknown Gemma preset '", name, "' (expected one of ", all, ")");
  }
  return c;
}

std::vector<std::string> GemmaConfig::preset_names() { return {"tiny", "small", "gemma-2b", "gemma-7b"}; }

}  // namespace tg
