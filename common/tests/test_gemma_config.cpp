// GemmaConfig: HF config.json texts, parameter counts (gemma.md 1.2), presets, Gemma 2/3 rejection,
// type errors naming the field, the activation rules of gemma.md trap 11, and to_json_text round trips.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "common/check.h"
#include "common/file_io.h"
#include "common/gemma_config.h"

namespace tg {
namespace {

// google/gemma-2b config.json as HF wrote it for the first release (legacy hidden_act "gelu", no
// hidden_activation).
constexpr const char* kGemma2bJson = R"({
  "architectures": [
    "GemmaForCausalLM"
  ],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 2,
  "eos_token_id": 1,
  "head_dim": 256,
  "hidden_act": "gelu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 16384,
  "max_position_embeddings": 8192,
  "model_type": "gemma",
  "num_attention_heads": 8,
  "num_hidden_layers": 18,
  "num_key_value_heads": 1,
  "pad_token_id": 0,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.38.0.dev0",
  "use_cache": true,
  "vocab_size": 256000
}
)";

// A Gemma 1.1-style 7B config: explicit hidden_activation, newer transformers fields.
constexpr const char* kGemma7bJson = R"({
  "architectures": ["GemmaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 2,
  "eos_token_id": 1,
  "head_dim": 256,
  "hidden_act": "gelu_pytorch_tanh",
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 3072,
  "initializer_range": 0.02,
  "intermediate_size": 24576,
  "max_position_embeddings": 8192,
  "model_type": "gemma",
  "num_attention_heads": 16,
  "num_hidden_layers": 28,
  "num_key_value_heads": 16,
  "pad_token_id": 0,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.0",
  "use_cache": true,
  "vocab_size": 256000
})";

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << parts.front() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

// A config text: the 2B config with one top-level field replaced (or added) by `field: value`.
std::string with_field(const std::string& field, const std::string& value) {
  std::string text = kGemma2bJson;
  const std::string key = "\"" + field + "\": ";
  const auto at = text.find(key);
  if (at == std::string::npos) return "{\"" + field + "\": " + value + ", " + text.substr(text.find('{') + 1);
  const auto end = text.find_first_of(",\n", at + key.size());
  return text.substr(0, at + key.size()) + value + text.substr(end);
}

void expect_bad(const std::string& text, std::vector<std::string> parts) {
  parts.insert(parts.begin(), "cfg.json");
  expect_error([&] { GemmaConfig::from_json_text(text, "cfg.json"); }, parts);
}

TEST(GemmaConfig, Gemma2bAsHfWritesIt) {
  const GemmaConfig c = GemmaConfig::from_json_text(kGemma2bJson, "gemma-2b/config.json");
  EXPECT_EQ(c.model_type, "gemma");
  EXPECT_EQ(c.vocab_size, 256000);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 16384);
  EXPECT_EQ(c.num_hidden_layers, 18);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 1);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_EQ(c.bos_token_id, 2);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1}));
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.hidden_activation, "gelu_pytorch_tanh") << "legacy hidden_act 'gelu' means the tanh GELU";
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.q_dim(), 2048);
  EXPECT_EQ(c.kv_dim(), 256);
  EXPECT_EQ(c.group_size(), 8);
  EXPECT_EQ(c, GemmaConfig::preset("gemma-2b"));
}

TEST(GemmaConfig, Gemma7bAsHfWritesIt) {
  const GemmaConfig c = GemmaConfig::from_json_text(kGemma7bJson, "gemma-7b/config.json");
  EXPECT_EQ(c.hidden_size, 3072);
  EXPECT_EQ(c.intermediate_size, 24576);
  EXPECT_EQ(c.num_hidden_layers, 28);
  EXPECT_EQ(c.num_attention_heads, 16);
  EXPECT_EQ(c.num_key_value_heads, 16);
  EXPECT_EQ(c.q_dim(), 4096) << "q width differs from hidden for 7B";
  EXPECT_EQ(c.group_size(), 1);
  EXPECT_EQ(c, GemmaConfig::preset("gemma-7b"));
}

TEST(GemmaConfig, MissingFieldsTakeHfClassDefaults) {
  const GemmaConfig c = GemmaConfig::from_json_text("{}", "empty.json");
  EXPECT_EQ(c, GemmaConfig{});
  EXPECT_EQ(c.vocab_size, 256000);  // HF GemmaConfig defaults are the 7B shape
  EXPECT_EQ(c.hidden_size, 3072);
  EXPECT_EQ(c.num_key_value_heads, 16);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1}));
  EXPECT_EQ(c.hidden_activation, "gelu_pytorch_tanh");
}

TEST(GemmaConfig, ParameterCountsMatchReleasedModels) {
  // gemma.md 1.2 / 3.2: 110,104,576 per 2B layer; totals include the tied embedding once.
  EXPECT_EQ(GemmaConfig::preset("gemma-2b").params_per_layer(), 110'104'576);
  EXPECT_EQ(GemmaConfig::preset("gemma-2b").num_params(), 2'506'172'416);
  EXPECT_EQ(GemmaConfig::preset("gemma-7b").num_params(), 8'537'680'896);
  // Hand-computed: tiny = 512*64 + 2 * (2*64*128 + 2*64*32 + 3*64*128 + 2*64) + 64.
  EXPECT_EQ(GemmaConfig::preset("tiny").params_per_layer(), 45'184);
  EXPECT_EQ(GemmaConfig::preset("tiny").num_params(), 123'200);
  EXPECT_EQ(GemmaConfig::preset("small").num_params(), 187'720'704);
  GemmaConfig untied = GemmaConfig::preset("gemma-2b");
  untied.tie_word_embeddings = false;
  EXPECT_EQ(untied.num_params(), 2'506'172'416 + 256'000LL * 2048);
}

TEST(GemmaConfig, PresetsValidateAndHaveTheirShapes) {
  EXPECT_EQ(GemmaConfig::preset_names(), (std::vector<std::string>{"tiny", "small", "gemma-2b", "gemma-7b"}));
  for (const auto& name : GemmaConfig::preset_names()) {
    SCOPED_TRACE(name);
    EXPECT_NO_THROW(GemmaConfig::preset(name).validate(name));
  }
  const GemmaConfig tiny = GemmaConfig::preset("tiny");
  EXPECT_EQ(tiny.vocab_size, 512);
  EXPECT_EQ(tiny.num_key_value_heads, 1);
  EXPECT_EQ(tiny.q_dim(), 128);
  EXPECT_NE(tiny.q_dim(), tiny.hidden_size);
  EXPECT_EQ(tiny.max_position_embeddings, 512);
  const GemmaConfig small = GemmaConfig::preset("small");
  EXPECT_EQ(small.vocab_size, 8192);
  EXPECT_EQ(small.num_hidden_layers, 12);
  EXPECT_EQ(small.head_dim, 128);
  expect_error([] { GemmaConfig::preset("gemma-9b"); }, {"'gemma-9b'", "tiny, small, gemma-2b, gemma-7b"});
}

TEST(GemmaConfig, Gemma2And3AreRejectedAsNotSupportedYet) {
  expect_bad(with_field("model_type", "\"gemma2\""), {"Gemma 2/3 ('gemma2') is not supported yet"});
  expect_bad(with_field("model_type", "\"gemma3\""), {"Gemma 2/3 ('gemma3') is not supported yet"});
  expect_bad(with_field("model_type", "\"gemma3_text\""), {"Gemma 2/3 ('gemma3_text') is not supported yet"});
  for (const char* f : {"query_pre_attn_scalar", "sliding_window", "attn_logit_softcapping", "final_logit_softcapping"}) {
    expect_bad(with_field(f, "50"), {"Gemma 2/3", f, "not supported yet"});
  }
  expect_bad(with_field("layer_types", "[\"sliding_attention\"]"), {"Gemma 2/3", "layer_types", "not supported yet"});
  expect_bad("{\"architectures\": [\"Gemma2ForCausalLM\"]}", {"Gemma 2/3", "not supported yet"});
  expect_bad(with_field("model_type", "\"llama\""), {"'llama'", "not a Gemma config"});
  // A Gemma 2 field explicitly null carries no Gemma 2 semantics.
  EXPECT_NO_THROW(GemmaConfig::from_json_text(with_field("sliding_window", "null"), "cfg.json"));
}

TEST(GemmaConfig, WrongJsonTypesNameTheField) {
  expect_bad(with_field("hidden_size", "\"2048\""), {"'hidden_size'", "expected an integer", "string"});
  expect_bad(with_field("hidden_size", "2048.0"), {"'hidden_size'", "expected an integer"});
  expect_bad(with_field("num_hidden_layers", "null"), {"'num_hidden_layers'", "expected an integer", "null"});
  expect_bad(with_field("vocab_size", "18446744073709551615"), {"'vocab_size'", "int64"});
  expect_bad(with_field("rms_norm_eps", "\"1e-6\""), {"'rms_norm_eps'", "expected a number"});
  expect_bad(with_field("tie_word_embeddings", "1"), {"'tie_word_embeddings'", "true or false"});
  expect_bad(with_field("eos_token_id", "\"1\""), {"'eos_token_id'", "integer"});
  expect_bad(with_field("eos_token_id", "[1, \"x\"]"), {"'eos_token_id'", "integer"});
  expect_bad(with_field("eos_token_id", "[]"), {"'eos_token_id'", "non-empty"});
  expect_bad(with_field("torch_dtype", "16"), {"'torch_dtype'", "a string"});
  expect_bad(with_field("model_type", "1"), {"'model_type'", "a string"});
  expect_bad(with_field("hidden_act", "[\"gelu\"]"), {"'hidden_act'", "a string"});
  expect_bad("[1, 2]", {"JSON object"});
  expect_bad("{\"hidden_size\": ", {"invalid JSON"});
  expect_bad("{\"hidden_size\": 1, \"hidden_size\": 2}", {"duplicate key 'hidden_size'"});
  expect_bad(std::string("{}\0{\"model_type\": \"gemma2\"}", 27), {"NUL byte at offset 2"});
}

TEST(GemmaConfig, EosMayBeAList) {
  const GemmaConfig c = GemmaConfig::from_json_text(with_field("eos_token_id", "[1, 107]"), "cfg.json");
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1, 107}));
  EXPECT_EQ(GemmaConfig::from_json_text(c.to_json_text(), "round"), c);
}

TEST(GemmaConfig, RopeThetaFromTransformers5RopeParameters) {
  // transformers >= 5 writes {"rope_parameters": {"rope_type": "default", "rope_theta": ...}}; a top-level
  // rope_theta wins when both are present.
  const std::string rp = R"({"rope_type": "default", "rope_theta": 5000.0})";
  EXPECT_EQ(GemmaConfig::from_json_text(R"({"rope_parameters": )" + rp + "}", "cfg.json").rope_theta, 5000.0);
  EXPECT_EQ(GemmaConfig::from_json_text(with_field("rope_parameters", rp), "cfg.json").rope_theta, 10000.0);
  expect_bad(R"({"rope_parameters": {"rope_type": "linear", "rope_theta": 5000.0}})", {"rope_type 'linear'"});
  expect_bad(R"({"rope_parameters": {"rope_theta": "big"}})", {"rope_parameters.rope_theta"});
}

TEST(GemmaConfig, ActivationRules) {
  auto act = [](const std::string& text) { return GemmaConfig::from_json_text(text, "cfg.json").hidden_activation; };
  // hidden_activation wins; tanh spellings and null are the tanh GELU.
  EXPECT_EQ(act(with_field("hidden_activation", "\"gelu_pytorch_tanh\"")), "gelu_pytorch_tanh");
  EXPECT_EQ(act(with_field("hidden_activation", "\"gelu_tanh\"")), "gelu_pytorch_tanh");
  EXPECT_EQ(act(with_field("hidden_activation", "null")), "gelu_pytorch_tanh");
  EXPECT_EQ(act("{\"hidden_act\": \"gelu\"}"), "gelu_pytorch_tanh");
  EXPECT_EQ(act("{\"hidden_act\": \"gelu_pytorch_tanh\"}"), "gelu_pytorch_tanh");
  expect_bad(with_field("hidden_activation", "\"gelu\""), {"'gelu'", "exact", "not supported yet"});
  expect_bad(with_field("hidden_activation", "\"silu\""), {"'hidden_activation'", "'silu'"});
  expect_bad(with_field("hidden_act", "\"silu\""), {"'hidden_act'", "'silu'"});
}

TEST(GemmaConfig, UnsupportedGemma1FeaturesAreRefused) {
  expect_bad(with_field("attention_bias", "true"), {"attention_bias"});
  expect_bad(with_field("attention_dropout", "0.1"), {"attention_dropout"});
  expect_bad(with_field("rope_scaling", "{\"type\": \"linear\", \"factor\": 8.0}"), {"rope_scaling"});
  expect_bad(with_field("torch_dtype", "\"int8\""), {"torch_dtype", "int8"});
  const GemmaConfig c = GemmaConfig::from_json_text(with_field("torch_dtype", "\"float32\""), "cfg.json");
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_EQ(GemmaConfig::from_json_text("{\"dtype\": \"float16\"}", "cfg.json").torch_dtype, "float16");
}

TEST(GemmaConfig, ValidateNamesTheBadField) {
  expect_bad(with_field("num_key_value_heads", "3"), {"num_attention_heads (8)", "multiple", "(3)"});
  expect_bad(with_field("num_key_value_heads", "16"), {"num_key_value_heads", "[1, 8]", "16"});
  {
    GemmaConfig c = GemmaConfig::preset("tiny");
    c.num_key_value_heads = 3;
    c.num_attention_heads = 4;
    expect_error([&] { c.validate("tiny"); }, {"tiny", "num_attention_heads (4)", "num_key_value_heads (3)"});
  }
  expect_bad(with_field("head_dim", "255"), {"head_dim", "even", "255"});
  expect_bad(with_field("head_dim", "0"), {"head_dim", "0"});
  expect_bad(with_field("vocab_size", "0"), {"vocab_size", "got 0"});
  expect_bad(with_field("hidden_size", "-5"), {"hidden_size", "-5"});
  expect_bad(with_field("num_hidden_layers", "1000000"), {"num_hidden_layers", "1000000"});
  expect_bad(with_field("bos_token_id", "256000"), {"bos_token_id", "256000"});
  expect_bad(with_field("pad_token_id", "-1"), {"pad_token_id"});
  expect_bad(with_field("eos_token_id", "[1, 300000]"), {"eos_token_id", "300000"});
  expect_bad(with_field("rms_norm_eps", "0"), {"rms_norm_eps"});
  expect_bad(with_field("rope_theta", "-1.0"), {"rope_theta"});
  expect_bad(with_field("max_position_embeddings", "0"), {"max_position_embeddings"});
}

TEST(GemmaConfig, ToJsonTextRoundTrips) {
  for (const auto& name : GemmaConfig::preset_names()) {
    SCOPED_TRACE(name);
    const GemmaConfig c = GemmaConfig::preset(name);
    const std::string text = c.to_json_text();
    EXPECT_NE(text.find("\"model_type\": \"gemma\""), std::string::npos) << text;
    EXPECT_NE(text.find("\"GemmaForCausalLM\""), std::string::npos) << text;
    EXPECT_NE(text.find("\"head_dim\": " + std::to_string(c.head_dim)), std::string::npos) << text;
    EXPECT_EQ(GemmaConfig::from_json_text(text, name), c);
  }
  GemmaConfig odd = GemmaConfig::preset("tiny");
  odd.rms_norm_eps = 1.2345678901234567e-5;  // doubles survive the text
  odd.rope_theta = 500000.5;
  odd.tie_word_embeddings = false;
  odd.torch_dtype = "float32";
  odd.eos_token_ids = {1, 107, 3};
  EXPECT_EQ(GemmaConfig::from_json_text(odd.to_json_text(), "odd"), odd);
}

TEST(GemmaConfig, FromFile) {
  const auto dir = std::filesystem::temp_directory_path() / ("tegemma_cfg_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  write_file_atomic(dir / "config.json", kGemma2bJson);
  EXPECT_EQ(GemmaConfig::from_file(dir / "config.json"), GemmaConfig::preset("gemma-2b"));
  write_file_atomic(dir / "bad.json", with_field("model_type", "\"gemma2\""));
  expect_error([&] { GemmaConfig::from_file(dir / "bad.json"); }, {(dir / "bad.json").string(), "Gemma 2/3"});
  expect_error([&] { GemmaConfig::from_file(dir / "missing.json"); }, {"missing.json"});
  tg::remove_tree(dir);
}

}  // namespace
}  // namespace tg
