// Tensors: non-owning views (TensorView), owning buffers (Buffer, Tensor) and a bump arena for
// activations and workspaces (Arena). Shapes are row-major; strides are in elements.
//
// Dimension letters used in shape comments across the project:
//   B batch, S sequence, T tokens (B*S or a packed varlen batch), D hidden, H query heads, Hkv kv heads,
//   Dh head dim, F intermediate (FFN), V vocab, L layers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/dtype.h"

namespace tg {

enum class Device : uint8_t { CPU, CUDA };
std::ostream& operator<<(std::ostream& os, Device d);

// An execution stream: cudaStream_t on the CUDA backend (nullptr = the legacy default stream),
// ignored by CPU code. Kept opaque so that common/ and CPU code need no CUDA headers.
struct Stream {
  void* handle = nullptr;
};

// True if this build has the CUDA backend and a CUDA device is visible at run time.
bool cuda_available();

class Shape {
 public:
  static constexpr int kMaxDims = 6;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::span<const int64_t> dims);

  int ndim() const { return n_; }
  // Negative indices count from the back (shape[-1] is the last dimension).
  int64_t operator[](int i) const;
  int64_t& operator[](int i);
  int64_t numel() const;
  const int64_t* begin() const { return d_.data(); }
  const int64_t* end() const { return d_.data() + n_; }
  std::vector<int64_t> vec() const { return {begin(), end()}; }
  std::string str() const;
  bool operator==(const Shape& o) const;

  static Shape contiguous_strides(const Shape& shape);

 private:
  std::array<int64_t, kMaxDims> d_{};
  int n_ = 0;
};
std::ostream& operator<<(std::ostream& os, const Shape& s);

// Non-owning view: a pointer, a dtype, a shape, element strides and the device it lives on.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::F32;
  Shape shape;
  Shape strides;
  Device device = Device::CPU;

  TensorView() = default;
  TensorView(void* data, DType dtype, Shape shape, Device device = Device::CPU);  // contiguous
  TensorView(void* data, DType dtype, Shape shape, Shape strides, Device device);

  bool empty() const { return data == nullptr; }
  int ndim() const { return shape.ndim(); }
  int64_t size(int i) const { return shape[i]; }
  int64_t numel() const { return shape.numel(); }
  bool is_contiguous() const;
  // Bytes spanned by a contiguous view (throws for non-contiguous views).
  std::size_t nbytes() const;

  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
  // Contiguous reshape with the same element count.
  TensorView reshape(Shape new_shape) const;
  // Rows [begin, end) of the first dimension.
  TensorView slice_rows(int64_t begin, int64_t end) const;
  // Columns [begin, end) of the last dimension of a 2-D view (a strided view).
  TensorView slice_cols(int64_t begin, int64_t end) const;
  std::string describe() const;  // "BF16[8, 2048] on CUDA"
};

// Checks used by every launcher; messages name the argument and what was expected.
void check_shape(const TensorView& t, const Shape& expected, const char* what);
void check_dtype(const TensorView& t, DType expected, const char* what);
void check_device(const TensorView& t, Device expected, const char* what);
void check_contiguous(const TensorView& t, const char* what);

// Owning, move-only byte buffer on the host (64-byte aligned) or the device (cudaMalloc).
// A failed device allocation throws tg::Error saying how much was asked and how much is free.
// Bytes of this process's live device Buffers (what cudaMalloc gave them and cudaFree has not taken back). Exact,
// unlike the device-wide free memory, which other processes move: the leak checks of the fault tests use it.
std::size_t device_bytes_in_use();

class Buffer {
 public:
  Buffer() = default;
  Buffer(std::size_t nbytes, Device device);
  void* data() const { return ptr_.get(); }
  std::size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  explicit operator bool() const { return ptr_ != nullptr; }

 private:
  struct Deleter {
    Device device = Device::CPU;
    std::size_t bytes = 0;  // what was allocated (device_bytes_in_use() accounting)
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Deleter> ptr_{nullptr, Deleter{}};
  std::size_t nbytes_ = 0;
  Device device_ = Device::CPU;
};

// An owning contiguous tensor: a Buffer plus its view.
class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(DType dtype, Shape shape, Device device = Device::CPU);
  static Tensor zeros(DType dtype, Shape shape, Device device = Device::CPU, Stream stream = {});
  // A contiguous copy of `src` on `device` (synchronous).
  static Tensor copy_of(const TensorView& src, Device device);

  const TensorView& view() const { return view_; }
  operator const TensorView&() const { return view_; }  // NOLINT: views are the currency
  void* data() const { return view_.data; }
  DType dtype() const { return view_.dtype; }
  const Shape& shape() const { return view_.shape; }
  Device device() const { return view_.device; }
  int64_t numel() const { return view_.numel(); }
  std::size_t nbytes() const { return view_.nbytes(); }
  template <typename T>
  T* ptr() const {
    return view_.ptr<T>();
  }
  Tensor to(Device device) const { return copy_of(view_, device); }
  // Reinterprets the buffer with a new shape (same element count, same dtype).
  Tensor& reshape_(Shape shape);

 private:
  Buffer buf_;
  TensorView view_;
};

// Copies between any two contiguous views of equal byte size (host<->device as needed).
// With a non-null stream the copy is asynchronous on it; otherwise synchronous.
void copy_bytes(const TensorView& dst, const TensorView& src, Stream stream = {});
// Fills a view with zero bytes.
void zero_bytes(const TensorView& t, Stream stream = {});

// Bump allocator over one Buffer, for activations and workspaces that live for one step.
// alloc() never calls the device allocator; reset() frees everything at once.
class Arena {
 public:
  static constexpr std::size_t kAlign = 256;
  Arena() = default;
  Arena(std::size_t capacity, Device device);
  TensorView alloc(DType dtype, Shape shape);
  void* alloc_bytes(std::size_t nbytes);
  std::size_t mark() const { return used_; }
  void release(std::size_t mark);  // frees everything allocated after `mark`
  void reset() { used_ = 0; }
  std::size_t used() const { return used_; }
  std::size_t peak() const { return peak_; }
  std::size_t capacity() const { return buf_.nbytes(); }
  Device device() const { return buf_.device(); }

 private:
  Buffer buf_;
  std::size_t used_ = 0;
  std::size_t peak_ = 0;
};

}  // namespace tg
