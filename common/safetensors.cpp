#include "common/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/checksum.h"
#include "common/json_util.h"
#include "common/numeric.h"

namespace tg {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so is this reader");

namespace {

using json = nlohmann::json;

// ---- dtypes ------------------------------------------------------------------------------------
struct StDType {
  std::string_view name;
  std::size_t size;
  std::optional<DType> dtype;
};

// In the order of the Rust crate's Dtype enum: the HF writer sorts by it (descending), so the
// index in this table is the sort key.
constexpr StDType kStDTypes[] = {
    {"BOOL", 1, std::nullopt},       {"U8", 1, DType::U8},           {"I8", 1, std::nullopt},
    {"F8_E5M2", 1, DType::E5M2},     {"F8_E4M3", 1, DType::E4M3},    {"F8_E8M0", 1, DType::E8M0},
    {"I16", 2, std::nullopt},        {"U16", 2, std::nullopt},       {"F16", 2, DType::F16},
    {"BF16", 2, DType::BF16},        {"I32", 4, DType::I32},         {"U32", 4, std::nullopt},
    {"F32", 4, DType::F32},          {"F64", 8, DType::F64},         {"I64", 8, DType::I64},
    {"U64", 8, std::nullopt},
};

const StDType* find_st_dtype(std::string_view name) {
  for (const auto& d : kStDTypes) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

std::size_t st_dtype_rank(DType t) {
  for (std::size_t i = 0; i < std::size(kStDTypes); ++i) {
    if (kStDTypes[i].dtype == t) return i;
  }
  TG_FAIL("safetensors: dtype ", t, " has no safetensors name");
}

std::string all_dtype_names() {
  std::string s;
  for (const auto& d : kStDTypes) {
    if (!s.empty()) s += ", ";
    s += d.name;
  }
  return s;
}

// ---- entry validation --------------------------------------------------------------------------
struct Ctx {
  std::string_view source;
  std::string_view tensor;
};

#define ST_FAIL(ctx, ...) TG_FAIL((ctx).source, ": tensor ", json_quote((ctx).tensor), ": ", __VA_ARGS__)

uint64_t get_u64(const Ctx& ctx, const json& v, std::string_view field) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) ST_FAIL(ctx, field, " must not be negative, got ", v.get<int64_t>());
  ST_FAIL(ctx, field, " must hold non-negative integers, got ", json_describe(v));
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

SafetensorsEntry parse_entry(const Ctx& ctx, const json& v, uint64_t data_size) {
  if (!v.is_object()) ST_FAIL(ctx, "expected an object {dtype, shape, data_offsets}, got ", json_describe(v));
  const json *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (it.key() == "dtype") dtype = &it.value();
    else if (it.key() == "shape") shape = &it.value();
    else if (it.key() == "data_offsets") offsets = &it.value();
    else ST_FAIL(ctx, "unexpected field ", json_quote(it.key()), " (expected only dtype, shape, data_offsets)");
  }
  if (!dtype) ST_FAIL(ctx, "missing field 'dtype'");
  if (!shape) ST_FAIL(ctx, "missing field 'shape'");
  if (!offsets) ST_FAIL(ctx, "missing field 'data_offsets'");

  SafetensorsEntry e;
  e.name = std::string(ctx.tensor);
  if (!dtype->is_string()) ST_FAIL(ctx, "dtype must be a string, got ", json_describe(*dtype));
  const auto& dname = dtype->get_ref<const std::string&>();
  const StDType* st = find_st_dtype(dname);
  if (!st) ST_FAIL(ctx, "unknown dtype ", json_quote(dname), " (expected one of ", all_dtype_names(), ")");
  e.dtype_name = dname;
  e.dtype = st->dtype;
  e.element_size = st->size;

  if (!shape->is_array()) ST_FAIL(ctx, "shape must be an array of integers, got ", json_describe(*shape));
  // The product of the non-zero dimensions must fit in int64 so that no partial product overflows
  // anywhere downstream (Shape::numel multiplies left to right).
  uint64_t nonzero_product = 1;
  bool has_zero = false;
  e.shape.reserve(shape->size());
  for (const json& d : *shape) {
    const uint64_t n = get_u64(ctx, d, "shape");
    if (n > static_cast<uint64_t>(INT64_MAX)) ST_FAIL(ctx, "shape dimension ", n, " is too large");
    if (n == 0) {
      has_zero = true;
    } else if (__builtin_mul_overflow(nonzero_product, n, &nonzero_product) ||
               nonzero_product > static_cast<uint64_t>(INT64_MAX)) {
      ST_FAIL(ctx, "the element count of its shape overflows 64 bits");
    }
    e.shape.push_back(static_cast<int64_t>(n));
  }
  const uint64_t numel = has_zero ? 0 : nonzero_product;
  uint64_t expected_bytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(e.element_size), &expected_bytes)) {
    ST_FAIL(ctx, "its byte count (", numel, " elements of ", e.element_size, " bytes) overflows 64 bits");
  }

  if (!offsets->is_array() || offsets->size() != 2) {
    ST_FAIL(ctx, "data_offsets must be an array of two integers [begin, end], got ", json_describe(*offsets));
  }
  e.begin = get_u64(ctx, (*offsets)[0], "data_offsets");
  e.end = get_u64(ctx, (*offsets)[1], "data_offsets");
  if (e.begin > e.end) ST_FAIL(ctx, "data_offsets begin ", e.begin, " is after end ", e.end);
  if (e.end > data_size) {
    ST_FAIL(ctx, "data_offsets [", e.begin, ", ", e.end, ") reach beyond the data buffer (", data_size,
            " bytes): the file is truncated or the offsets are wrong");
  }
  if (e.end - e.begin != expected_bytes) {
    ST_FAIL(ctx, "data_offsets [", e.begin, ", ", e.end, ") hold ", e.end - e.begin, " bytes, but ", dname,
            " with shape ", shape_str(e.shape), " needs ", expected_bytes, " (", numel, " x ", e.element_size, ")");
  }
  return e;
}

void parse_metadata(std::string_view source, const json& v, std::map<std::string, std::string>& out) {
  if (!v.is_object()) TG_FAIL(source, ": __metadata__ must be an object of strings, got ", json_describe(v));
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it.value().is_string()) {
      TG_FAIL(source, ": __metadata__ ", json_quote(it.key()), " must be a string, got ", json_describe(it.value()));
    }
    out[it.key()] = it.value().get<std::string>();
  }
}

// Tensors sorted by begin must tile the data buffer exactly (the reference validator's rule).
void check_tiling(std::string_view source, const std::vector<SafetensorsEntry>& tensors, uint64_t data_size) {
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return std::pair(tensors[a].begin, tensors[a].end) < std::pair(tensors[b].begin, tensors[b].end);
  });
  uint64_t cursor = 0;
  const SafetensorsEntry* prev = nullptr;
  for (std::size_t i : order) {
    const SafetensorsEntry& e = tensors[i];
    if (e.begin < cursor) {
      TG_FAIL(source, ": tensor ", json_quote(e.name), " [", e.begin, ", ", e.end, ") overlaps tensor ",
              json_quote(prev->name), " [", prev->begin, ", ", prev->end, ")");
    }
    if (e.begin > cursor) {
      if (prev) {
        TG_FAIL(source, ": gap of ", e.begin - cursor, " unused bytes [", cursor, ", ", e.begin, ") between tensor ",
                json_quote(prev->name), " and tensor ", json_quote(e.name), " (tensors must tile the data buffer)");
      }
      TG_FAIL(source, ": the data buffer starts with ", e.begin, " unused bytes before tensor ", json_quote(e.name),
              " (tensors must tile the data buffer)");
    }
    cursor = e.end;
    prev = &e;
  }
  if (cursor != data_size) {
    if (prev) {
      TG_FAIL(source, ": ", data_size - cursor, " unused bytes at the end of the data buffer after tensor ",
              json_quote(prev->name), " (tensors must tile the data buffer up to the end of the file)");
    }
    TG_FAIL(source, ": ", data_size, " bytes of data but no tensors");
  }
}

// Each "xxh64:<name>" metadata key must name a tensor of the file and hold 16 hex digits: a header whose
// checksum entries are damaged is refused here rather than when a tensor is loaded.
void check_checksum_keys(std::string_view source, const SafetensorsHeader& h) {
  const auto first = h.metadata.lower_bound(std::string(kSafetensorsChecksumPrefix));
  for (auto it = first; it != h.metadata.end() && it->first.starts_with(kSafetensorsChecksumPrefix); ++it) {
    const std::string_view tensor = std::string_view(it->first).substr(kSafetensorsChecksumPrefix.size());
    const bool known = std::any_of(h.tensors.begin(), h.tensors.end(),
                                   [&](const SafetensorsEntry& e) { return e.name == tensor; });
    if (!known) {
      TG_FAIL(source, ": __metadata__ records a checksum for tensor ", json_quote(tensor),
              ", which the file does not contain (corrupt header)");
    }
    uint64_t digest = 0;
    if (!parse_xxh64_hex(it->second, digest)) {
      TG_FAIL(source, ": __metadata__ ", json_quote(it->first), " must be 16 hex digits (an XXH64), got ",
              json_quote(it->second), " (corrupt header)");
    }
  }
}

}  // namespace

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // the parser guarantees this fits
  return n;
}

std::vector<std::string> safetensors_dtype_names() {
  std::vector<std::string> out;
  for (const auto& d : kStDTypes) out.emplace_back(d.name);
  return out;
}

SafetensorsHeader parse_safetensors(std::span<const uint8_t> bytes, std::string_view source) {
  if (bytes.size() < 8) {
    TG_FAIL(source, ": not a safetensors file: ", bytes.size(), " bytes, shorter than the 8-byte header length");
  }
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  if (n > kSafetensorsMaxHeader) {
    TG_FAIL(source, ": header length ", n, " exceeds the ", kSafetensorsMaxHeader,
            "-byte limit (not a safetensors file, or corrupt)");
  }
  if (n > bytes.size() - 8) {
    TG_FAIL(source, ": header length ", n, " is longer than the ", bytes.size() - 8,
            " bytes after it (truncated file?)");
  }
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, n);
  if (text.empty() || text[0] != '{') TG_FAIL(source, ": the JSON header does not start with '{'");
  if (const std::size_t bad = invalid_utf8_at(text); bad != std::string_view::npos) {
    TG_FAIL(source, ": the JSON header is not valid UTF-8 (bad byte at header offset ", bad, ")");
  }
  const StrictJson doc = parse_json_strict(text, source, "safetensors header", /*max_depth=*/3);

  SafetensorsHeader h;
  h.data_offset = 8 + n;
  const uint64_t data_size = bytes.size() - h.data_offset;
  h.tensors.reserve(doc.top_keys.size());
  for (const std::string& name : doc.top_keys) {
    const json& v = doc.root.find(name).value();
    if (name == "__metadata__") {
      parse_metadata(source, v, h.metadata);
      continue;
    }
    h.tensors.push_back(parse_entry(Ctx{source, name}, v, data_size));
  }
  check_tiling(source, h.tensors, data_size);
  check_checksum_keys(source, h);
  return h;
}

// ---- SafetensorsFile ----------------------------------------------------------------------------
SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : map_(path) {
  header_ = parse_safetensors(map_.bytes(), path.string());
  for (std::size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
  for (const auto& [key, value] : header_.metadata) {
    uint64_t digest = 0;
    if (key.starts_with(kSafetensorsChecksumPrefix) && parse_xxh64_hex(value, digest)) {
      checksums_.emplace(key.substr(kSafetensorsChecksumPrefix.size()), digest);  // validated by the parser
    }
  }
}

void SafetensorsFile::verify(std::string_view name) const {
  auto it = checksums_.find(name);
  if (it == checksums_.end()) return;
  const SafetensorsEntry* e = find(name);
  TG_CHECK(e, path().string(), ": no tensor named ", json_quote(name));
  const uint64_t actual = xxh64(bytes(*e));
  if (actual != it->second) {
    TG_FAIL(path().string(), ": tensor ", json_quote(name), " is corrupted: its ", e->nbytes(),
            " bytes hash to xxh64 ", xxh64_hex(actual), " but the header records ", xxh64_hex(it->second),
            " (the file was damaged after it was written; restore it from a good copy)");
  }
}

std::size_t SafetensorsFile::verify_all() const {
  for (const auto& [name, digest] : checksums_) verify(name);
  return checksums_.size();
}

const SafetensorsEntry* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

std::span<const uint8_t> SafetensorsFile::bytes(const SafetensorsEntry& e) const {
  return map_.bytes().subspan(header_.data_offset + e.begin, e.nbytes());
}

namespace {

bool is_16_or_32(DType t) { return t == DType::BF16 || t == DType::F16 || t == DType::F32; }

// Reads element i of a BF16/F16/F32 buffer that may be unaligned.
float read_float(const uint8_t* p, DType t, int64_t i) {
  if (t == DType::F32) {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  uint16_t b;
  std::memcpy(&b, p + 2 * i, 2);
  return t == DType::BF16 ? bf16_bits_to_float(b) : f16_bits_to_float(b);
}

void convert_host(const uint8_t* src, DType from, void* dst, DType to, int64_t n) {
  if (to == DType::F32) {
    auto* d = static_cast<float*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = read_float(src, from, i);  // exact widening
    return;
  }
  auto* d = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const float f = read_float(src, from, i);
    d[i] = to == DType::BF16 ? float_to_bf16_bits(f) : float_to_f16_bits(f);  // round to nearest even
  }
}

}  // namespace

Tensor SafetensorsFile::load(std::string_view name, DType dtype, Device device) const {
  const SafetensorsEntry* e = find(name);
  TG_CHECK(e, path().string(), ": no tensor named ", json_quote(name));
  const std::string src = path().string();
  if (!e->dtype) {
    TG_FAIL(src, ": tensor ", json_quote(name), " has dtype ", e->dtype_name,
            ": unsupported dtype for loading (loadable: ", "F32, BF16, F16, F8_E4M3, F8_E5M2, F8_E8M0, F64, I32, I64, U8)");
  }
  if (e->shape.size() > static_cast<std::size_t>(Shape::kMaxDims)) {
    TG_FAIL(src, ": tensor ", json_quote(name), " has ", e->shape.size(), " dimensions; at most ", Shape::kMaxDims,
            " can be loaded");
  }
  verify(name);
  const DType from = *e->dtype;
  const Shape shape{std::span<const int64_t>(e->shape)};
  const auto raw = bytes(*e);
  if (from == dtype) {
    // Straight from the map to the target (a device copy needs no host staging).
    const TensorView v(const_cast<uint8_t*>(raw.data()), dtype, shape, Device::CPU);
    return Tensor::copy_of(v, device);
  }
  if (!is_16_or_32(from) || !is_16_or_32(dtype)) {
    TG_FAIL(src, ": tensor ", json_quote(name), " is ", from, " and cannot be loaded as ", dtype,
            " (conversions exist among BF16, F16 and F32 only)");
  }
  Tensor host = Tensor::empty(dtype, shape, Device::CPU);
  convert_host(raw.data(), from, host.data(), dtype, e->numel());
  return device == Device::CPU ? std::move(host) : host.to(device);
}

// ---- CheckpointReader ---------------------------------------------------------------------------
namespace {
constexpr const char* kSingleName = "model.safetensors";
constexpr const char* kIndexName = "model.safetensors.index.json";
}  // namespace

CheckpointReader::CheckpointReader(const std::filesystem::path& dir) : dir_(dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  TG_CHECK(fs::is_directory(dir, ec), "checkpoint ", json_quote(dir.string()), " is not a directory");
  const fs::path single = dir / kSingleName, index = dir / kIndexName;
  if (fs::exists(single, ec)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& e : files_[0]->header().tensors) where_.emplace(e.name, 0);
    return;
  }
  if (!fs::exists(index, ec)) {
    TG_FAIL("checkpoint directory ", json_quote(dir.string()), " has neither ", kSingleName, " nor ", kIndexName,
            " (looked for ", single.string(), " and ", index.string(), ")");
  }
  const std::string source = index.string();
  const std::string text = read_file(index);
  if (const std::size_t bad = invalid_utf8_at(text); bad != std::string_view::npos) {
    TG_FAIL(source, ": not valid UTF-8 (bad byte at offset ", bad, ")");
  }
  const StrictJson doc = parse_json_strict(text, source, "index", /*max_depth=*/8);
  const json& root = doc.root;
  auto wm = root.find("weight_map");
  if (wm == root.end()) TG_FAIL(source, ": missing \"weight_map\"");
  if (!wm->is_object()) TG_FAIL(source, ": \"weight_map\" must be an object, got ", json_describe(*wm));

  std::map<std::string, std::size_t> shard_index;  // shard file name -> files_ index
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::string& tensor = it.key();
    if (!it.value().is_string()) {
      TG_FAIL(source, ": weight_map[", json_quote(tensor), "] must be a shard file name, got ", json_describe(it.value()));
    }
    const std::string& shard = it.value().get_ref<const std::string&>();
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
        shard.find('\0') != std::string::npos) {
      TG_FAIL(source, ": weight_map[", json_quote(tensor), "] = ", json_quote(shard),
              " is not a plain file name in the checkpoint directory");
    }
    auto [si, inserted] = shard_index.emplace(shard, files_.size());
    if (inserted) {
      const fs::path shard_path = dir / shard;
      if (!fs::exists(shard_path, ec)) {
        TG_FAIL(source, ": tensor ", json_quote(tensor), " is mapped to shard ", json_quote(shard), ", but ",
                shard_path.string(), " does not exist");
      }
      files_.push_back(std::make_unique<SafetensorsFile>(shard_path));
    }
    if (!files_[si->second]->find(tensor)) {
      TG_FAIL(source, ": tensor ", json_quote(tensor), " is mapped to shard ", json_quote(shard), ", but ",
              files_[si->second]->path().string(), " does not contain it");
    }
    where_.emplace(tensor, si->second);
  }
  if (auto md = root.find("metadata"); md != root.end() && !md->is_null()) {
    if (!md->is_object()) TG_FAIL(source, ": \"metadata\" must be an object, got ", json_describe(*md));
    if (auto ts = md->find("total_size"); ts != md->end()) {
      if (!ts->is_number_unsigned()) {
        TG_FAIL(source, ": metadata.total_size must be a non-negative integer, got ", json_describe(*ts));
      }
      uint64_t sum = 0;
      for (const auto& [name, fi] : where_) sum += files_[fi]->find(name)->nbytes();
      if (ts->get<uint64_t>() != sum) {
        TG_FAIL(source, ": metadata.total_size is ", ts->get<uint64_t>(), " but the ", where_.size(),
                " mapped tensors hold ", sum, " bytes (incomplete or mixed-up checkpoint)");
      }
    }
  }
}

bool CheckpointReader::contains(std::string_view name) const { return where_.find(name) != where_.end(); }

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, fi] : where_) out.push_back(name);
  return out;
}

const SafetensorsFile& CheckpointReader::file_of(std::string_view name) const {
  auto it = where_.find(name);
  TG_CHECK(it != where_.end(), "checkpoint ", json_quote(dir_.string()), ": no tensor named ", json_quote(name));
  return *files_[it->second];
}

const SafetensorsEntry& CheckpointReader::entry(std::string_view name) const { return *file_of(name).find(name); }

Tensor CheckpointReader::load(std::string_view name, DType dtype, Device device) const {
  return file_of(name).load(name, dtype, device);
}

std::size_t CheckpointReader::verify_checksums() const {
  std::size_t n = 0;
  for (const auto& [name, fi] : where_) {
    if (!files_[fi]->has_checksum(name)) continue;
    files_[fi]->verify(name);
    ++n;
  }
  return n;
}

// ---- SafetensorsWriter --------------------------------------------------------------------------
SafetensorsWriter::SafetensorsWriter() { metadata_["format"] = "pt"; }

void SafetensorsWriter::add(std::string name, const TensorView& t) {
  TG_CHECK(name != "__metadata__", "SafetensorsWriter: '__metadata__' is reserved and cannot name a tensor");
  TG_CHECK(invalid_utf8_at(name) == std::string_view::npos, "SafetensorsWriter: tensor name ", json_quote(name),
           " is not valid UTF-8");
  TG_CHECK(!names_.count(name), "SafetensorsWriter: tensor ", json_quote(name), " added twice");
  TG_CHECK(t.is_contiguous(), "SafetensorsWriter: tensor ", json_quote(name), " (", t.describe(),
           ") must be contiguous");
  TG_CHECK(t.data != nullptr || t.numel() == 0, "SafetensorsWriter: tensor ", json_quote(name), " has no data");
  st_dtype_rank(t.dtype);  // throws for a dtype without a safetensors name
  names_.insert(name);
  tensors_.emplace_back(std::move(name), t);
}

void SafetensorsWriter::add_metadata(std::string key, std::string value) {
  TG_CHECK(invalid_utf8_at(key) == std::string_view::npos && invalid_utf8_at(value) == std::string_view::npos,
           "SafetensorsWriter: metadata ", json_quote(key), " is not valid UTF-8");
  metadata_[std::move(key)] = std::move(value);
}

uint64_t SafetensorsWriter::total_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, t] : tensors_) n += t.nbytes();
  return n;
}

void SafetensorsWriter::write(const std::filesystem::path& path) const {
  std::vector<std::size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const std::size_t ra = st_dtype_rank(tensors_[a].second.dtype), rb = st_dtype_rank(tensors_[b].second.dtype);
    return ra != rb ? ra > rb : tensors_[a].first < tensors_[b].first;
  });

  // Compact JSON in the Rust writer's layout: __metadata__ first, then tensors in data order, each
  // {"dtype","shape","data_offsets"}. Checksums are known only once the bytes went through the hash, so the
  // header is first written with placeholders of the same length and rewritten at the end.
  auto make_header = [&](const std::vector<uint64_t>& digests) {
    std::map<std::string, std::string> metadata = metadata_;
    if (checksums_) {
      for (std::size_t k = 0; k < order.size(); ++k) {
        metadata[std::string(kSafetensorsChecksumPrefix) + tensors_[order[k]].first] = xxh64_hex(digests[k]);
      }
    }
    std::string header = "{";
    if (!metadata.empty()) header += "\"__metadata__\":" + json(metadata).dump() + ",";
    uint64_t offset = 0;
    for (std::size_t i : order) {
      const auto& [name, t] = tensors_[i];
      const uint64_t nb = t.nbytes();
      header += json(name).dump() + ":{\"dtype\":\"" + std::string(dtype_name(t.dtype)) + "\",\"shape\":" +
                json(t.shape.vec()).dump() + ",\"data_offsets\":[" + std::to_string(offset) + "," +
                std::to_string(offset + nb) + "]},";
      offset += nb;
    }
    if (header.size() > 1) header.pop_back();  // trailing comma
    header += "}";
    header.append((8 - header.size() % 8) % 8, ' ');
    return header;
  };
  std::vector<uint64_t> digests(order.size(), 0);
  const std::string placeholder = make_header(digests);
  TG_CHECK(placeholder.size() <= kSafetensorsMaxHeader, "SafetensorsWriter: header of ", placeholder.size(),
           " bytes for ", path.string(), " exceeds the format's limit");

  AtomicFile f(path);
  const uint64_t n = placeholder.size();
  f.write(&n, 8);
  f.write(placeholder);
  for (std::size_t k = 0; k < order.size(); ++k) {
    const TensorView& t = tensors_[order[k]].second;
    Tensor host;
    const void* data = t.data;
    if (t.device != Device::CPU && t.nbytes() > 0) {
      host = Tensor::copy_of(t, Device::CPU);
      data = host.data();
    }
    const std::span<const uint8_t> bytes(static_cast<const uint8_t*>(data), t.nbytes());
    if (checksums_) digests[k] = xxh64(bytes);
    if (!bytes.empty()) f.write(bytes.data(), bytes.size());
  }
  if (checksums_) {
    const std::string header = make_header(digests);
    TG_CHECK_EQ(header.size(), placeholder.size(), "SafetensorsWriter: checksum header length");
    f.write_at(8, header.data(), header.size());
  }
  f.commit();
}

// ---- write_checkpoint ---------------------------------------------------------------------------
void write_checkpoint(const std::filesystem::path& dir,
                      const std::vector<std::pair<std::string, TensorView>>& tensors, uint64_t max_shard_bytes) {
  namespace fs = std::filesystem;
  TG_CHECK(max_shard_bytes > 0, "write_checkpoint: max_shard_bytes must be positive");
  {
    // Checked up front so that no shard is written for a call that must fail.
    std::set<std::string_view> seen;
    for (const auto& [name, t] : tensors) {
      TG_CHECK(seen.insert(name).second, "write_checkpoint: tensor ", json_quote(name), " given twice");
    }
  }
  std::vector<std::vector<std::size_t>> shards;
  uint64_t current = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t nb = tensors[i].second.nbytes();
    if (shards.empty() || (current + nb > max_shard_bytes && current > 0)) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += nb;
  }
  std::error_code ec;
  if (shards.size() <= 1) {
    SafetensorsWriter w;
    w.set_checksums(true);
    for (const auto& [name, t] : tensors) w.add(name, t);
    w.write(dir / kSingleName);
    fs::remove(dir / kIndexName, ec);
    return;
  }
  const std::size_t total = shards.size();
  TG_CHECK(total <= 99999, "write_checkpoint: ", total, " shards exceed the 5-digit naming scheme");
  auto shard_name = [&](std::size_t k) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k + 1, total);
    return std::string(buf);
  };
  json weight_map = json::object();
  uint64_t total_size = 0;
  for (std::size_t k = 0; k < total; ++k) {
    SafetensorsWriter w;
    w.set_checksums(true);
    for (std::size_t i : shards[k]) {
      w.add(tensors[i].first, tensors[i].second);
      weight_map[tensors[i].first] = shard_name(k);
    }
    total_size += w.total_bytes();
    w.write(dir / shard_name(k));
  }
  const json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  write_file_atomic(dir / kIndexName, index.dump(2) + "\n");
  fs::remove(dir / kSingleName, ec);
}

}  // namespace tg
