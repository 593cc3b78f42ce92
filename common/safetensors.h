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
//
// Checksums: files that write_checkpoint writes carry, per tensor, the XXH64 of its bytes in __metadata__
// under the key "xxh64:<tensor name>" (16 hex digits; common/checksum.h). The parser checks that each such
// key names a tensor of the file and holds 16 hex digits; SafetensorsFile::load verifies the tensor's bytes
// against it before returning them, so flipped bytes on disk are an error naming the file and the tensor,
// never silently wrong weights. Files without these keys (HF's, other tools') load as before.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/file_io.h"
#include "common/tensor.h"

namespace tg {

struct SafetensorsEntry {
  std::string name;
  std::string dtype_name;         // as written in the header: "BF16", "F32", "F8_E4M3", "BOOL", ...
  std::optional<DType> dtype;     // the project's DType; none for BOOL, I8, I16, U16, U32, U64 (parsed, not loadable)
  std::size_t element_size = 0;   // bytes per element
  std::vector<int64_t> shape;     // any rank; {} is a 0-rank scalar
  uint64_t begin = 0;             // byte offsets relative to the data buffer, end one past
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> tensors;       // in header order
  std::map<std::string, std::string> metadata;  // "__metadata__"
  uint64_t data_offset = 0;                     // 8 + header length
};

inline constexpr uint64_t kSafetensorsMaxHeader = 100'000'000;
inline constexpr std::string_view kSafetensorsChecksumPrefix = "xxh64:";  // __metadata__ key prefix

// Parses and validates a whole safetensors file held in memory. `source` names it in errors.
// Every dtype of the format parses (BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64,
// F8_E4M3, F8_E5M2, F8_E8M0); only loading needs a DType.
SafetensorsHeader parse_safetensors(std::span<const uint8_t> file_bytes, std::string_view source);

// The safetensors dtype strings this parser accepts, in the format's own order (BOOL ... U64).
std::vector<std::string> safetensors_dtype_names();

// One memory-mapped safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);
  const SafetensorsHeader& header() const { return header_; }
  const std::filesystem::path& path() const { return map_.path(); }
  const SafetensorsEntry* find(std::string_view name) const;  // nullptr if absent
  // Raw bytes of a tensor inside the map.
  std::span<const uint8_t> bytes(const SafetensorsEntry& e) const;
  // Loads a tensor as a new contiguous `dtype` tensor on `device`. The same dtype is a plain copy (any
  // dtype with a DType); BF16/F16/F32 convert among each other on the host (exact widening, or
  // round-to-nearest-even as common/numeric.h). Throws naming the file and tensor if it is absent,
  // has no DType ("unsupported dtype for loading"), cannot convert, or has more than 6 dimensions, or
  // if its bytes do not match the checksum the header records for it.
  Tensor load(std::string_view name, DType dtype, Device device = Device::CPU) const;

  // Checksums (see the top of this file). has_checksum: the header records one for `name`.
  // verify(name): throws naming the file and tensor if the bytes do not match (no-op without a checksum).
  // verify_all(): verifies every tensor that has one; returns how many were checked.
  bool has_checksum(std::string_view name) const { return checksums_.find(name) != checksums_.end(); }
  void verify(std::string_view name) const;
  std::size_t verify_all() const;

 private:
  MappedFile map_;
  SafetensorsHeader header_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::map<std::string, uint64_t, std::less<>> checksums_;  // tensor name -> XXH64 recorded in the header
};

// An HF checkpoint directory: model.safetensors (preferred when both exist, as HF does), or shards
// listed by model.safetensors.index.json (every name resolved through weight_map; a name mapped to a
// missing shard or missing from the shard it is mapped to is an error naming both; metadata.total_size,
// when present, must equal the byte count of the mapped tensors; extra tensors in a shard are ignored).
// Shard names must be plain file names inside `dir`.
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::filesystem::path& dir);
  bool contains(std::string_view name) const;
  std::vector<std::string> names() const;  // sorted
  const SafetensorsEntry& entry(std::string_view name) const;
  Tensor load(std::string_view name, DType dtype, Device device = Device::CPU) const;
  const std::filesystem::path& dir() const { return dir_; }
  // Verifies every tensor with a recorded checksum, in every file (reads the whole checkpoint once);
  // throws at the first mismatch. Returns how many tensors were checked (0 for an HF checkpoint).
  std::size_t verify_checksums() const;

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
  SafetensorsWriter();  // metadata starts as {"format": "pt"}, as HF writes it
  // Keeps a view (not a copy): the data must stay alive until write(). Names must be unique, valid
  // UTF-8 and not "__metadata__"; the view must be contiguous.
  void add(std::string name, const TensorView& t);
  void add_metadata(std::string key, std::string value);  // replaces an existing key
  // Also record each tensor's XXH64 as "xxh64:<name>" metadata (off by default, so the bytes match HF's
  // writer exactly; write_checkpoint turns it on). Computed from the bytes as they are written.
  void set_checksums(bool on) { checksums_ = on; }
  void write(const std::filesystem::path& path) const;
  uint64_t total_bytes() const;

 private:
  std::vector<std::pair<std::string, TensorView>> tensors_;
  std::set<std::string, std::less<>> names_;
  std::map<std::string, std::string> metadata_;
  bool checksums_ = false;
};

// Writes an HF-style checkpoint directory: one model.safetensors, or, when the tensors exceed
// `max_shard_bytes`, model-0000i-of-0000N.safetensors shards plus model.safetensors.index.json
// (tensors packed in the given order as huggingface_hub does: a new shard starts when the next tensor
// would overflow the current one; a tensor larger than the limit gets a shard of its own). Every file
// is written atomically and the index last; afterwards a stale model.safetensors (when sharded) or a
// stale index (when single-file) is removed so the reader cannot pick up the previous checkpoint.
// Every tensor's XXH64 is recorded in its file's header (see the top of this file) and verified on load.
void write_checkpoint(const std::filesystem::path& dir, const std::vector<std::pair<std::string, TensorView>>& tensors,
                      uint64_t max_shard_bytes = 5ull << 30);

}  // namespace tg
