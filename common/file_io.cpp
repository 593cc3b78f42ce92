#include "common/file_io.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <utility>

#include "common/check.h"

namespace tg {

namespace {
std::string os_error() { return std::strerror(errno); }

std::filesystem::path temp_path_for(const std::filesystem::path& path) {
  std::random_device rd;
  return path.string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd() % 1000000);
}
}  // namespace

std::string read_file(const std::filesystem::path& path) {
  MappedFile m(path);
  return std::string(reinterpret_cast<const char*>(m.bytes().data()), m.size());
}

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)), tmp_(temp_path_for(path_)) {
  if (path_.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(path_.parent_path(), ec);
  }
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TG_CHECK(fd_ >= 0, "cannot create '", tmp_.string(), "' (for '", path_.string(), "'): ", os_error());
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, std::size_t n) {
  TG_CHECK(fd_ >= 0 && !committed_, "AtomicFile: write to '", path_.string(), "' after commit");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    TG_CHECK(w > 0, "cannot write '", tmp_.string(), "': ", os_error());
    p += w;
    n -= static_cast<std::size_t>(w);
    written_ += static_cast<uint64_t>(w);
  }
}

void AtomicFile::write_at(uint64_t offset, const void* data, std::size_t n) {
  TG_CHECK(fd_ >= 0 && !committed_, "AtomicFile: write to '", path_.string(), "' after commit");
  TG_CHECK(offset <= written_ && n <= written_ - offset, "AtomicFile::write_at: [", offset, ", ", offset + n,
           ") of '", path_.string(), "' is past the ", written_, " bytes written");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    TG_CHECK(w > 0, "cannot write '", tmp_.string(), "': ", os_error());
    p += w;
    n -= static_cast<std::size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

void AtomicFile::commit() {
  TG_CHECK(fd_ >= 0 && !committed_, "AtomicFile: double commit of '", path_.string(), "'");
  TG_CHECK(::fsync(fd_) == 0, "cannot flush '", tmp_.string(), "': ", os_error());
  TG_CHECK(::close(fd_) == 0, "cannot close '", tmp_.string(), "': ", os_error());
  fd_ = -1;
  TG_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, "cannot rename '", tmp_.string(), "' to '",
           path_.string(), "': ", os_error());
  committed_ = true;
}

MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TG_CHECK(fd >= 0, "cannot open '", path.string(), "': ", os_error());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string err = os_error();
    ::close(fd);
    TG_FAIL("cannot stat '", path.string(), "': ", err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    TG_FAIL("'", path.string(), "' is not a regular file");
  }
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string err = os_error();
      ::close(fd);
      TG_FAIL("cannot map '", path.string(), "': ", err);
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    path_ = std::move(o.path_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

namespace {
thread_local std::string t_remove_failed;  // the entry nftw could not remove (remove_tree's message)
}  // namespace

void remove_tree(const std::filesystem::path& path, std::error_code& ec) noexcept {
  ec.clear();
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) ec = std::error_code(errno, std::generic_category());
    return;
  }
  t_remove_failed.clear();
  const auto remove_one = [](const char* entry, const struct stat*, int, struct FTW*) -> int {
    if (std::remove(entry) == 0 || errno == ENOENT) return 0;
    t_remove_failed = entry;
    return errno != 0 ? errno : EIO;
  };
  // FTW_DEPTH: children before their directory; FTW_PHYS: a symlink is removed, never followed.
  const int rc = ::nftw(path.c_str(), remove_one, 16, FTW_DEPTH | FTW_PHYS);
  if (rc != 0) ec = std::error_code(rc > 0 ? rc : errno, std::generic_category());
}

void remove_tree(const std::filesystem::path& path) {
  std::error_code ec;
  remove_tree(path, ec);
  if (ec) {
    TG_FAIL("cannot remove ", t_remove_failed.empty() ? path.string() : t_remove_failed, " (removing ",
            path.string(), "): ", ec.message());
  }
}

}  // namespace tg
