// The impl model's weights in the fused layout the modules run on, and their HF checkpoint I/O.
//
// Fused layout per layer (row-major, every linear weight [out, in] for y = x W^T, as HF stores them):
//   input_norm           [D]                     HF input_layernorm.weight (the norm multiplies by 1 + w)
//   qkv                  [(H + 2 Hkv) Dh, D]     [q rows; k rows; v rows] = HF q_proj, k_proj, v_proj stacked.
//                                                A block layout, NOT TE's per-head [q_h; k_h; v_h] interleave,
//                                                which assumes H == Hkv: this one is right for MQA, GQA and MHA,
//                                                and the q / k / v outputs are column slices of one GEMM output.
//   o                    [D, H Dh]               HF o_proj
//   post_attention_norm  [D]                     HF post_attention_layernorm.weight
//   fc1                  [2F, D]                 [gate rows; up rows] = HF gate_proj, up_proj stacked (GeGLU
//                                                applies the GELU to the FIRST half, as TE and HF do)
//   fc2                  [D, F]                  HF down_proj
// Model: embed [V, D] (also the tied lm_head), final_norm [D]. Norms and the embedding are always BF16.
//
// Precision of the linear weights (qkv, o, fc1, fc2, and the lm_head's optional FP8 copy):
//   WeightStorage::kMaster  BF16 master copy, plus an FP8 copy under an FP8 recipe (re-quantized from the
//                           master by quantize_weights() whenever the master changes: training).
//   WeightStorage::kFp8Only FP8 copy only, row-wise only: no BF16 copy and no transposes (inference; TE's
//                           quantized_model_init under no_grad). Loading quantizes one layer at a time, so
//                           the peak memory is the FP8 model plus one layer in BF16.
// FP8 copies per recipe: delayed / current -> per-tensor E4M3 whose scale comes from the weight's own amax
// at quantization time (current: scale_from_amax with the recipe's epsilon and power-of-two rule; delayed:
// fp8_max * 2^-margin / amax -- what TE's delayed scaling converges to after one update of an unchanged
// weight, without TE's first step at scale 1); block -> 128x128 blocks (E4M3, the recipe's pow2 rule).
//
// Checkpoints: HF Gemma 1 directories (config.json + model.safetensors or shards + index), BF16 or F32
// tensors, converted to BF16 on the target device (kernels::convert on the GPU). Every expected tensor's
// presence and shape is checked and every problem is named with its HF tensor name; unexpected tensors
// are errors; an lm_head.weight is accepted only if it equals embed_tokens (tied).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "common/fp8_tensor.h"
#include "common/gemma_config.h"
#include "common/tensor.h"
#include "impl/recipe.h"

namespace tg::impl {

enum class WeightStorage : uint8_t { kMaster, kFp8Only };
const char* weight_storage_name(WeightStorage s);  // "master", "fp8-only"

// One linear layer's weight W [N, K] (y = x W^T).
struct LinearWeight {
  std::string name;          // "layers.3.qkv", "lm_head"
  int64_t out_features = 0;  // N
  int64_t in_features = 0;   // K
  Tensor master;             // BF16 [N, K]; empty under kFp8Only
  TensorView master_view;    // the BF16 weight the BF16 GEMM reads (master, or an alias: the tied lm_head)
  Fp8Tensor fp8;             // FP8 copy (valid when has_fp8)
  bool has_fp8 = false;

  bool has_master() const { return !master_view.empty(); }
  const Fp8View& fp8_view() const { return fp8.view(); }
};

struct LayerWeights {
  Tensor input_norm;           // BF16 [D]
  LinearWeight qkv;            // [(H + 2 Hkv) Dh, D]
  LinearWeight o;              // [D, H Dh]
  Tensor post_attention_norm;  // BF16 [D]
  LinearWeight fc1;            // [2F, D]
  LinearWeight fc2;            // [D, F]
};

struct ModelWeights {
  GemmaConfig config;
  Device device = Device::CPU;
  WeightStorage storage = WeightStorage::kMaster;
  Recipe recipe;  // the recipe the FP8 copies were made for (bf16: none)
  Tensor embed;   // BF16 [V, D]; the gather table and the tied BF16 lm_head
  std::vector<LayerWeights> layers;
  Tensor final_norm;     // BF16 [D]
  LinearWeight lm_head;  // [V, D]: master_view aliases embed; an FP8 copy when fp8_lm_head

  // Bytes of device memory the weights hold (BF16 and FP8 copies and their scales).
  std::size_t bytes() const;
};

// What weights to build and where.
struct WeightOptions {
  Device device = Device::CPU;
  Recipe recipe;  // FP8 copies are made for this recipe (none for bf16)
  WeightStorage storage = WeightStorage::kMaster;
  bool fp8_lm_head = false;  // also an FP8 copy of the tied lm_head (per-tensor recipes only)
  bool columnwise = false;   // FP8 copies with the transposed copy too (training: dgrad)
  Stream stream;
};

// HF-style random initialisation (HF _init_weights): linear and embedding weights ~ N(0, std), the
// pad_token_id row of the embedding zeroed, norm weights N(0, norm_std) (HF: 0; tests use > 0 so that a
// missing "1 +" cannot hide behind w = 0). The values are a pure function of (seed, tensor, element):
// counter-based, generated in parallel on the host, identical for every device and thread count.
struct RandomInit {
  double std = 0.02;
  double norm_std = 0.0;
  bool zero_pad_row = true;
};

// HF tensor names and shapes a Gemma 1 checkpoint of this config holds (no lm_head: tied).
std::vector<std::pair<std::string, std::vector<int64_t>>> hf_tensor_shapes(const GemmaConfig& cfg);

// Reads and validates dir/config.json.
GemmaConfig load_config(const std::filesystem::path& dir);
// Loads an HF checkpoint directory into the fused layout (see the header comment for the checks).
ModelWeights load_weights(const std::filesystem::path& dir, const WeightOptions& opts);
ModelWeights random_weights(const GemmaConfig& cfg, uint64_t seed, const WeightOptions& opts,
                            const RandomInit& init = {});

// A copy of master-storage weights built for `opts` (device, recipe, storage, FP8 lm_head): e.g. the same random
// weights on another device or under another recipe, without generating or loading them again.
ModelWeights copy_weights(const ModelWeights& src, const WeightOptions& opts);

// Writes an HF checkpoint directory (config.json + model.safetensors, or shards + index above
// max_shard_bytes): q/k/v and gate/up un-fused under their HF names, tensors stored as file_dtype (BF16 or
// F32), no lm_head (tied). Needs the BF16 masters (kFp8Only weights cannot be saved: tg::Error).
void save_checkpoint(const std::filesystem::path& dir, const ModelWeights& w, DType file_dtype = DType::BF16,
                     uint64_t max_shard_bytes = 5ull << 30);

// (Re-)makes the FP8 copies of every linear weight from its BF16 master for `recipe` (no-op for bf16):
// after loading, after an optimizer step, or to switch recipes. Needs kMaster storage.
void quantize_weights(ModelWeights& w, const Recipe& recipe, bool fp8_lm_head, bool columnwise, Stream stream = {});

// The FP8 copy of one weight from a BF16 [N, K] source (see the header comment for the scale rules).
Fp8Tensor quantize_weight(const TensorView& master, const Recipe& recipe, bool columnwise, Stream stream = {});
// The same into an existing copy made by quantize_weight for this recipe and shape (its row-wise and, if it
// has one, column-wise data rewritten): no allocation, no host sync (training, after every optimizer step).
void requantize_weight(const TensorView& master, const Fp8View& out, const Recipe& recipe, Stream stream = {});
// requantize_weight for every linear weight that has an FP8 copy (the FP8 lm_head's too).
void refresh_fp8_weights(ModelWeights& w, Stream stream = {});

}  // namespace tg::impl
