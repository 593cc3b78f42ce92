#include "common/npy.h"

#include <cstring>
#include <string>

#include "common/args.h"
#include "common/file_io.h"

namespace tg {

void write_npy_f32(const std::filesystem::path& path, std::span<const float> data, const Shape& shape) {
  TG_CHECK(static_cast<int64_t>(data.size()) == shape.numel(), "write_npy_f32('", path.string(), "'): ",
           data.size(), " values for shape ", shape);
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int i = 0; i < shape.ndim(); ++i) dict += std::to_string(shape[i]) + (shape.ndim() == 1 ? ",)" : (i + 1 < shape.ndim() ? ", " : ")"));
  if (shape.ndim() == 0) dict += ")";
  dict += ", }";
  // magic(6) + version(2) + header_len(2) + dict + padding + '\n' is a multiple of 64.
  std::size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::string header = "\x93NUMPY";
  header += '\x01';
  header += '\x00';
  const uint16_t len = static_cast<uint16_t>(dict.size());
  header += static_cast<char>(len & 0xFF);
  header += static_cast<char>(len >> 8);
  header += dict;
  AtomicFile f(path);
  f.write(header);
  f.write(data.data(), data.size_bytes());
  f.commit();
}

NpyArray read_npy_f32(const std::filesystem::path& path) {
  MappedFile m(path);
  auto b = m.bytes();
  std::string where = "'";  // built by appends (GCC 12 -O3 -Wrestrict false positive on "'" + s + "'")
  where += path.string();
  where += '\'';
  TG_CHECK(b.size() >= 10 && std::memcmp(b.data(), "\x93NUMPY", 6) == 0, where, " is not a .npy file");
  TG_CHECK(b[6] == 1, where, ": only .npy version 1.x is supported, got ", int(b[6]));
  const std::size_t hlen = b[8] | (b[9] << 8);
  TG_CHECK(10 + hlen <= b.size(), where, ": header length ", hlen, " runs past the end of the file");
  const std::string dict(reinterpret_cast<const char*>(b.data() + 10), hlen);
  TG_CHECK(dict.find("'descr': '<f4'") != std::string::npos, where, ": expected dtype '<f4', header ", dict);
  TG_CHECK(dict.find("'fortran_order': False") != std::string::npos, where, ": expected C order");
  const auto open = dict.find("'shape': (");
  const auto close = dict.find(')', open);
  TG_CHECK(open != std::string::npos && close != std::string::npos, where, ": no shape in header ", dict);
  std::vector<int64_t> dims;
  std::string inner = dict.substr(open + 10, close - open - 10);
  std::size_t pos = 0;
  while (pos < inner.size()) {
    auto comma = inner.find(',', pos);
    std::string item = inner.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (!item.empty()) {
      auto n = parse_int(item);
      TG_CHECK(n && *n >= 0, where, ": bad shape entry '", item, "'");
      dims.push_back(*n);
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  NpyArray a;
  a.shape = Shape(std::span<const int64_t>(dims));
  const std::size_t nbytes = static_cast<std::size_t>(a.shape.numel()) * 4;
  TG_CHECK(10 + hlen + nbytes == b.size(), where, ": expected ", nbytes, " data bytes for shape ", a.shape, ", got ",
           b.size() - 10 - hlen);
  a.data.resize(static_cast<std::size_t>(a.shape.numel()));
  std::memcpy(a.data.data(), b.data() + 10 + hlen, nbytes);
  return a;
}

}  // namespace tg
