// The KV cache of generation (TE's InferenceParams, non-paged, bshd): per layer K and V
// [max_batch, max_seq, Hkv, Dh] in BF16 or FP8 E4M3, allocated once. Row (b, j) holds the post-RoPE key /
// value of sequence slot b's token at position j (prefill writes positions 0..n-1 of each prompt, every decode
// step one position per sequence), so a sequence's cache length is its own token count: no padding is ever
// stored or attended (HF's static cache keeps left-pad slots and masks them).
//
// FP8 E4M3: value = code * scale with one F32 dequantisation scale per layer and per K / V, per kv head (default)
// or per tensor. The scale is headroom * amax / 448 (kernels::current_scaling_scale with fp8_max = 448 /
// headroom), amax being the largest |K| (|V|) of
//   - the calibration prompts (Generator::calibrate; frozen afterwards), or
//   - without calibration, each prefill's own prompt tokens (computed on the device before the prompt is
//     written; decode tokens beyond headroom x that amax saturate to +-448 * scale).
// The per-sequence lengths and positions live with the decode state (impl/generate/generator.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/gemma_config.h"
#include "common/tensor.h"
#include "kernels/attention/attention.h"
#include "kernels/recipe/scale_math.h"

namespace tg::impl {

struct KvCacheOptions {
  int64_t max_batch = 1;       // sequence slots (prompts x beams)
  int64_t max_seq = 0;         // positions per slot (prompt + new tokens); 0 = config.max_position_embeddings
  DType dtype = DType::BF16;   // BF16 or E4M3
  bool per_head_scale = true;  // E4M3: one scale per kv head (false: per tensor)
  float headroom = 2.0f;       // E4M3: scale = headroom * amax / 448 (>= 1)
};

// "bf16" | "fp8" (E4M3, per-head scale) -> the dtype; throws tg::Error naming the value otherwise.
DType parse_kv_cache_dtype(const std::string& s);

class KvCacheSet {
 public:
  KvCacheSet() = default;
  KvCacheSet(const GemmaConfig& cfg, const KvCacheOptions& opts, Device device);

  const KvCacheOptions& options() const { return opts_; }
  int64_t layers() const { return static_cast<int64_t>(k_.size()); }
  int64_t max_batch() const { return opts_.max_batch; }
  int64_t max_seq() const { return opts_.max_seq; }
  bool fp8() const { return opts_.dtype == DType::E4M3; }
  int64_t scale_slots() const { return scale_slots_; }  // 1 or Hkv (E4M3), 0 (BF16)
  std::size_t bytes() const;

  // Layer l's cache over the first `batch` slots (a contiguous prefix of the allocation).
  kernels::KvCache layer(int64_t l, int64_t batch) const;
  // E4M3: layer l's amax F32 [2, S] (K row, V row) and dequantisation scales F32 [2, S] (= the cache's k_scale /
  // v_scale), and a scratch F32 [2, S] for the quantisation scales current_scaling_scale also writes.
  TensorView amax(int64_t l) const;
  TensorView scales(int64_t l) const;
  TensorView scale_scratch(int64_t l) const;

  // scales(l) from amax(l) (one launch): headroom * amax / 448 per slot; an amax of 0 gives scale 1.
  void update_scales(int64_t l, Stream stream) const;
  // Calibration: zero every amax; prefills then max-reduce into them; finish computes every scale (one launch)
  // and freezes them (calibrated() == true: prefills no longer touch the scales).
  void begin_calibration(Stream stream);
  void finish_calibration(Stream stream);
  bool calibrated() const { return calibrated_; }

  // Bytes of a scratch buffer for kernels::kv_cache_reorder of `batch` slots over `length` positions.
  std::size_t reorder_scratch_bytes(int64_t batch, int64_t length) const;

 private:
  kernels::ScaleRule rule() const;

  KvCacheOptions opts_;
  Device device_ = Device::CPU;
  int64_t kv_heads_ = 0, head_dim_ = 0, scale_slots_ = 0;
  std::vector<Tensor> k_, v_;
  Tensor amax_, scales_, scratch_;  // F32 [L, 2, S] each (E4M3)
  bool calibrated_ = false;
};

}  // namespace tg::impl
