// The Gemma model configuration, parsed from an HF config.json (model_type "gemma": Gemma 1).
// Gemma 2 / 3 configs are recognised and rejected with a clear "not supported yet" error.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace tg {

struct GemmaConfig {
  std::string model_type = "gemma";
  int64_t vocab_size = 256000;
  int64_t hidden_size = 3072;          // D
  int64_t intermediate_size = 24576;   // F
  int64_t num_hidden_layers = 28;      // L
  int64_t num_attention_heads = 16;    // H
  int64_t num_key_value_heads = 16;    // Hkv
  int64_t head_dim = 256;              // Dh (explicit: never hidden / heads)
  int64_t max_position_embeddings = 8192;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t pad_token_id = 0;
  int64_t bos_token_id = 2;
  std::vector<int64_t> eos_token_ids{1};
  bool tie_word_embeddings = true;
  std::string hidden_activation = "gelu_pytorch_tanh";  // the tanh-approximate GELU (the only one supported)
  std::string torch_dtype = "bfloat16";  // bfloat16 | float16 | float32

  int64_t q_dim() const { return num_attention_heads * head_dim; }     // width of q (may differ from D)
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  int64_t group_size() const { return num_attention_heads / num_key_value_heads; }
  int64_t params_per_layer() const;  // q, k, v, o, gate, up, down + the two norms
  int64_t num_params() const;        // including the embedding once (twice if untied) and the final norm

  // Throws tg::Error "<source>: <field> ... expected ..., got ..." for any value the model cannot use:
  // non-positive or absurd sizes, heads % kv_heads != 0, odd head_dim (RoPE rotates halves),
  // token ids outside the vocabulary, non-finite or non-positive eps/theta, unknown activation/dtype.
  void validate(std::string_view source = "GemmaConfig") const;

  // Parses config.json text and validates it; `source` names the file in errors. Missing fields take
  // HF GemmaConfig's class defaults. Gemma 2/3 configs (model_type gemma2/gemma3/gemma3_text, or any
  // of their fields) are rejected as "not supported yet"; so are features Gemma 1 never used
  // (attention_bias, rope_scaling, dropout) and the exact-erf GELU in hidden_activation.
  static GemmaConfig from_json_text(std::string_view text, std::string_view source);
  static GemmaConfig from_file(const std::filesystem::path& path);
  // HF-compatible config.json text (model_type gemma, architectures GemmaForCausalLM, sorted keys).
  std::string to_json_text() const;

  bool operator==(const GemmaConfig&) const = default;

  // Named shapes: "tiny" (CI), "small" (187.7M params, loss curves), "gemma-2b", "gemma-7b".
  static GemmaConfig preset(std::string_view name);
  static std::vector<std::string> preset_names();
};

}  // namespace tg
