#include "common/tensor.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>

#if TEGEMMA_HAVE_CUDA
#include "common/cuda_check.h"
#endif

namespace tg {

std::ostream& operator<<(std::ostream& os, Device d) { return os << (d == Device::CPU ? "CPU" : "CUDA"); }

bool cuda_available() {
#if TEGEMMA_HAVE_CUDA
  static const bool available = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky "no device" error
      return false;
    }
    return n > 0;
  }();
  return available;
#else
  return false;
#endif
}

// ---- Shape --------------------------------------------------------------------------------------
Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::span<const int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const int64_t> dims) {
  TG_CHECK(dims.size() <= static_cast<std::size_t>(kMaxDims), "Shape: at most ", kMaxDims, " dimensions, got ",
           dims.size());
  for (std::size_t i = 0; i < dims.size(); ++i) {
    TG_CHECK(dims[i] >= 0, "Shape: dimension ", i, " is negative (", dims[i], ")");
    d_[i] = dims[i];
  }
  n_ = static_cast<int>(dims.size());
}

int64_t Shape::operator[](int i) const {
  const int j = i < 0 ? i + n_ : i;
  TG_CHECK(j >= 0 && j < n_, "Shape: index ", i, " out of range for ", str());
  return d_[j];
}

int64_t& Shape::operator[](int i) {
  const int j = i < 0 ? i + n_ : i;
  TG_CHECK(j >= 0 && j < n_, "Shape: index ", i, " out of range for ", str());
  return d_[j];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < n_; ++i) n *= d_[i];
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < n_; ++i) {
    if (i) s += ", ";
    s += std::to_string(d_[i]);
  }
  return s + "]";
}

bool Shape::operator==(const Shape& o) const {
  if (n_ != o.n_) return false;
  for (int i = 0; i < n_; ++i) {
    if (d_[i] != o.d_[i]) return false;
  }
  return true;
}

Shape Shape::contiguous_strides(const Shape& shape) {
  std::array<int64_t, kMaxDims> st{};
  int64_t acc = 1;
  for (int i = shape.ndim() - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= shape[i];
  }
  return Shape(std::span<const int64_t>(st.data(), shape.ndim()));
}

std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

// ---- TensorView ---------------------------------------------------------------------------------
TensorView::TensorView(void* data_, DType dtype_, Shape shape_, Device device_)
    : data(data_), dtype(dtype_), shape(shape_), strides(Shape::contiguous_strides(shape_)), device(device_) {}

TensorView::TensorView(void* data_, DType dtype_, Shape shape_, Shape strides_, Device device_)
    : data(data_), dtype(dtype_), shape(shape_), strides(strides_), device(device_) {
  TG_CHECK(shape.ndim() == strides.ndim(), "TensorView: shape ", shape, " and strides ", strides,
           " differ in rank");
}

bool TensorView::is_contiguous() const { return strides == Shape::contiguous_strides(shape); }

std::size_t TensorView::nbytes() const {
  TG_CHECK(is_contiguous(), "nbytes: view ", describe(), " is not contiguous (strides ", strides, ")");
  return static_cast<std::size_t>(numel()) * dtype_size(dtype);
}

TensorView TensorView::reshape(Shape new_shape) const {
  TG_CHECK(is_contiguous(), "reshape: view ", describe(), " is not contiguous");
  TG_CHECK(new_shape.numel() == numel(), "reshape: cannot view ", describe(), " as ", new_shape,
           " (element counts differ)");
  return TensorView(data, dtype, new_shape, device);
}

TensorView TensorView::slice_rows(int64_t begin, int64_t end) const {
  TG_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape[0], "slice_rows: [", begin, ", ", end,
           ") out of range for ", describe());
  TensorView v = *this;
  v.data = static_cast<char*>(data) + begin * strides[0] * static_cast<int64_t>(dtype_size(dtype));
  v.shape[0] = end - begin;
  return v;
}

TensorView TensorView::slice_cols(int64_t begin, int64_t end) const {
  TG_CHECK(ndim() == 2 && begin >= 0 && begin <= end && end <= shape[1], "slice_cols: [", begin, ", ", end,
           ") out of range for ", describe());
  TensorView v = *this;
  v.data = static_cast<char*>(data) + begin * strides[1] * static_cast<int64_t>(dtype_size(dtype));
  v.shape[1] = end - begin;
  return v;
}

std::string TensorView::describe() const {
  std::ostringstream os;
  os << dtype << shape << " on " << device;
  return os.str();
}

void check_shape(const TensorView& t, const Shape& expected, const char* what) {
  TG_CHECK(t.shape == expected, what, ": expected shape ", expected, ", got ", t.shape);
}
void check_dtype(const TensorView& t, DType expected, const char* what) {
  TG_CHECK(t.dtype == expected, what, ": expected dtype ", expected, ", got ", t.dtype);
}
void check_device(const TensorView& t, Device expected, const char* what) {
  TG_CHECK(t.device == expected, what, ": expected a tensor on ", expected, ", got one on ", t.device);
}
void check_contiguous(const TensorView& t, const char* what) {
  TG_CHECK(t.is_contiguous(), what, ": expected a contiguous tensor, got ", t.describe(), " with strides ",
           t.strides);
}

// ---- Buffer -------------------------------------------------------------------------------------
namespace {
std::atomic<std::size_t>& live_device_bytes() {
  static std::atomic<std::size_t> bytes{0};
  return bytes;
}
}  // namespace

std::size_t device_bytes_in_use() { return live_device_bytes().load(); }

void Buffer::Deleter::operator()(void* p) const {
  if (!p) return;
  if (device == Device::CPU) {
    ::operator delete(p, std::align_val_t{64});
    return;
  }
#if TEGEMMA_HAVE_CUDA
  (void)cudaFree(p);  // never throw from a destructor
  live_device_bytes() -= bytes;
#endif
}

Buffer::Buffer(std::size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  void* p = nullptr;
  const std::size_t n = nbytes == 0 ? 1 : nbytes;  // keep a valid pointer for empty tensors
  if (device == Device::CPU) {
    p = ::operator new(n, std::align_val_t{64});
  } else {
#if TEGEMMA_HAVE_CUDA
    const cudaError_t err = cudaMalloc(&p, n);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      std::size_t free_b = 0, total_b = 0;
      (void)cudaMemGetInfo(&free_b, &total_b);
      constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
      TG_FAIL("CUDA allocation of ", n, " bytes (", n / kGiB, " GiB) failed: ", cudaGetErrorString(err), "; ",
              free_b / kGiB, " GiB free of ", total_b / kGiB, " GiB");
    }
#else
    TG_FAIL("cannot allocate ", nbytes, " bytes on CUDA: this build has no CUDA backend (TEGEMMA_CUDA=OFF)");
#endif
  }
  if (device != Device::CPU) live_device_bytes() += n;
  ptr_ = std::unique_ptr<void, Deleter>(p, Deleter{device, n});
}

// ---- Tensor -------------------------------------------------------------------------------------
Tensor Tensor::empty(DType dtype, Shape shape, Device device) {
  Tensor t;
  t.buf_ = Buffer(static_cast<std::size_t>(shape.numel()) * dtype_size(dtype), device);
  t.view_ = TensorView(t.buf_.data(), dtype, shape, device);
  return t;
}

Tensor Tensor::zeros(DType dtype, Shape shape, Device device, Stream stream) {
  Tensor t = empty(dtype, shape, device);
  zero_bytes(t.view_, stream);
  return t;
}

Tensor Tensor::copy_of(const TensorView& src, Device device) {
  check_contiguous(src, "Tensor::copy_of");
  Tensor t = empty(src.dtype, src.shape, device);
  copy_bytes(t.view_, src);
  return t;
}

Tensor& Tensor::reshape_(Shape shape) {
  view_ = view_.reshape(shape);
  return *this;
}

void copy_bytes(const TensorView& dst, const TensorView& src, Stream stream) {
  check_contiguous(dst, "copy_bytes(dst)");
  check_contiguous(src, "copy_bytes(src)");
  TG_CHECK(dst.nbytes() == src.nbytes(), "copy_bytes: ", dst.describe(), " and ", src.describe(),
           " differ in size");
  if (dst.nbytes() == 0) return;
  if (dst.device == Device::CPU && src.device == Device::CPU) {
    std::memcpy(dst.data, src.data, dst.nbytes());
    return;
  }
#if TEGEMMA_HAVE_CUDA
  auto s = static_cast<cudaStream_t>(stream.handle);
  if (s) {
    TG_CHECK_CUDA(cudaMemcpyAsync(dst.data, src.data, dst.nbytes(), cudaMemcpyDefault, s));
  } else {
    TG_CHECK_CUDA(cudaMemcpy(dst.data, src.data, dst.nbytes(), cudaMemcpyDefault));
  }
#else
  TG_FAIL("copy_bytes: a CUDA tensor in a build without CUDA");
#endif
}

void zero_bytes(const TensorView& t, Stream stream) {
  check_contiguous(t, "zero_bytes");
  if (t.device == Device::CPU) {
    std::memset(t.data, 0, t.nbytes());
    return;
  }
#if TEGEMMA_HAVE_CUDA
  TG_CHECK_CUDA(cudaMemsetAsync(t.data, 0, t.nbytes(), static_cast<cudaStream_t>(stream.handle)));
  if (!stream.handle) TG_CHECK_CUDA(cudaStreamSynchronize(nullptr));
#else
  TG_FAIL("zero_bytes: a CUDA tensor in a build without CUDA");
#endif
}

// ---- Arena --------------------------------------------------------------------------------------
Arena::Arena(std::size_t capacity, Device device) : buf_(capacity, device) {}

void* Arena::alloc_bytes(std::size_t nbytes) {
  const std::size_t begin = (used_ + kAlign - 1) / kAlign * kAlign;
  TG_CHECK(begin + nbytes <= buf_.nbytes(), "Arena: out of space: asked ", nbytes, " bytes with ", used_,
           " of ", buf_.nbytes(), " in use; size the arena larger");
  used_ = begin + nbytes;
  peak_ = used_ > peak_ ? used_ : peak_;
  return static_cast<char*>(buf_.data()) + begin;
}

TensorView Arena::alloc(DType dtype, Shape shape) {
  void* p = alloc_bytes(static_cast<std::size_t>(shape.numel()) * dtype_size(dtype));
  return TensorView(p, dtype, shape, buf_.device());
}

void Arena::release(std::size_t mark) {
  TG_CHECK(mark <= used_, "Arena::release: mark ", mark, " is past the top ", used_);
  used_ = mark;
}

}  // namespace tg
