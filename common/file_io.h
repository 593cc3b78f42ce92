// File helpers: whole-file reads with clear errors, atomic writes (temp file + fsync + rename, so no
// output is ever left half-written), and read-only memory maps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

namespace tg {

// Reads a whole file; throws tg::Error naming the path and the OS error.
std::string read_file(const std::filesystem::path& path);

// Removes `path` and everything under it (like std::filesystem::remove_all, which the project does not call:
// in a process that also loads PyTorch's pip LibTorch, the std::filesystem symbols bind to libtorch.so's own
// copies, and its remove_all jumps to address 0 -- seen on the H200, 2026-11-30). POSIX nftw + remove, links not
// followed. A missing path is not an error. Throws tg::Error naming the entry that could not be removed; the
// error_code overload reports it there instead and never throws.
void remove_tree(const std::filesystem::path& path);
void remove_tree(const std::filesystem::path& path, std::error_code& ec) noexcept;

// Writes `bytes` to `path` atomically: a temp file in the same directory is written, flushed and
// renamed over `path`. On any failure the temp file is removed and `path` is left untouched.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// Streams into a temp file next to `path`; commit() renames it into place. Destroying an
// uncommitted AtomicFile removes the temp file (so an exception never leaves a partial output).
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, std::size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Overwrites n bytes at `offset` of what was already written (a header whose values are known only
  // after the data, e.g. checksums); offset + n must not pass the end of what was written.
  void write_at(uint64_t offset, const void* data, std::size_t n);
  void commit();
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t written_ = 0;
};

// A read-only memory map of a whole file (empty files map to an empty span).
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  std::size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace tg
