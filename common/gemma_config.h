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
  std::string hidden_activation = "gelu_pytorch_tanh";
  std::string torch_dtype = "bfloat16";

  int64_t q_dim() const { return num_attention_heads * head_dim; }     // width of q (may differ from D)
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  int64_t group_size() const { return num_attention_heads / num_key_value_heads; }
  int64_t params_per_layer() const;
  int64_t num_params() const;  // including the (tied) embedding once

  // Throws tg::Error naming the field and the expected range.
  void validate() const;

  // Parses config.json text; `source` names the file in errors.
  static GemmaConfig from_json_text(std::string_view text, std::string_view source);
  static GemmaConfig from_file(const std::filesystem::path& path);
  // HF-compatible config.json text (model_type gemma, architectures GemmaForCausalLM).
  std::string to_json_text() const;

  // Named shapes: "tiny" (CI), "small" (~150M, loss curves), "gemma-2b", "gemma-7b".
  static GemmaConfig preset(std::string_view name);
  static std::vector<std::string> preset_names();
};

}  // namespace tg
