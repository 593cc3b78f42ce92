// safetensors reading and writing, single files and sharded HF checkpoints.
//
// Format (huggingface/safetensors): 8-byte little-endian header length N, N bytes of UTF-8 JSON
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}},
// then the data buffer; offsets are relative to its start (byte 8 + N).
//
// The parser validates everything before any tensor is touched and never reads out of bounds:
// truncated files, a header longer than the file or over 100 MB, invalid JSON or UTF-8, unknown dtypes,
// negative/overflowing shapes, offsets out of bounds, overlapping or not tiling the buffer, byte counts
// that disagree with shape x dtype, duplicate names. Every error names the file and the tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/file_io.h"
#include "common/tensor.h"

namespace tg {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets relative to the data buffer
  uint64_t end = 0;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;       // in header order
  std::map<std::string, std::string> metadata;  // "__metadata__"
  uint64_t data_offset = 0;                     // 8 + header length
};

inline constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;

// Parses and validates a whole safetensors file held in memory. `source` names it in errors.
SafetensorsHeader parse_safetensors(std::span<const uint8_t> file_bytes, std::string_view source);

// One memory-mapped safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);
  const SafetensorsHeader& header() const { return header_; }
  const std::filesystem::path& path() const { return map_.path(); }
  const SafetensorsEntry* find(std::string_view name) const;  // nullptr if absent
  // Raw bytes of a tensor inside the map.
  std::span<const uint8_t> bytes(const SafetensorsEntry& e) const;
  // Loads a tensor converted to `dtype` (BF16/F16/F32 sources; exact or round-to-nearest-even)
  // into a new contiguous tensor on `device`. Throws naming the file and tensor if absent.
  Tensor load(std::string_view name, DType dtype, Device device = Device::CPU) const;

 private:
  MappedFile map_;
  SafetensorsHeader header_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

// An HF checkpoint directory: model.safetensors, or shards listed by model.safetensors.index.json
// (every name resolved through weight_map; a name mapped to a missing shard or missing from the
// shard it is mapped to is an error naming both).
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::filesystem::path& dir);
  bool contains(std::string_view name) const;
  std::vector<std::string> names() const;  // sorted
  const SafetensorsEntry& entry(std::string_view name) const;
  Tensor load(std::string_view name, DType dtype, Device device = Device::CPU) const;
  const std::filesystem::path& dir() const { return dir_; }

 private:
  const SafetensorsFile& file_of(std::string_view name) const;
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::size_t, std::less<>> where_;  // tensor name -> files_ index
};

// Collects tensors and writes one safetensors file atomically. Tensors may live on any device
// (device tensors are copied to the host at write time). Order on disk follows the HF writer
// (dtype alignment descending, then name); the header is padded with spaces to a multiple of 8.
class SafetensorsWriter {
 public:
  void add(std::string name, const TensorView& t);
  void add_metadata(std::string key, std::string value);
  void write(const std::filesystem::path& path) const;
  uint64_t total_bytes() const;

 private:
  std::vector<std::pair<std::string, TensorView>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes an HF-style checkpoint directory: one model.safetensors, or, when the tensors exceed
// `max_shard_bytes`, model-0000i-of-0000N.safetensors shards plus model.safetensors.index.json.
void write_checkpoint(const std::filesystem::path& dir, const std::vector<std::pair<std::string, TensorView>>& tensors,
                      uint64_t max_shard_bytes = 5ull << 30);

}  // namespace tg
