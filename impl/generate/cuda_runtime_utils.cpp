#include "impl/generate/cuda_runtime_utils.h"

#include <utility>

#include "common/check.h"
#if TEGEMMA_HAVE_CUDA
#include "common/cuda_check.h"
#endif

namespace tg::impl {

#if !TEGEMMA_HAVE_CUDA
namespace {
[[noreturn]] void no_cuda(const char* what) { TG_FAIL(what, ": this build has no CUDA backend"); }
}  // namespace
#endif

// ---- OwnedStream ----
OwnedStream OwnedStream::create() {
  OwnedStream s;
#if TEGEMMA_HAVE_CUDA
  cudaStream_t h = nullptr;
  TG_CHECK_CUDA(cudaStreamCreateWithFlags(&h, cudaStreamNonBlocking));
  s.handle_ = h;
#else
  no_cuda("OwnedStream");
#endif
  return s;
}
OwnedStream::OwnedStream(OwnedStream&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}
OwnedStream& OwnedStream::operator=(OwnedStream&& o) noexcept {
  std::swap(handle_, o.handle_);
  return *this;
}
OwnedStream::~OwnedStream() {
#if TEGEMMA_HAVE_CUDA
  if (handle_ != nullptr) {
    cudaStreamSynchronize(static_cast<cudaStream_t>(handle_));
    cudaStreamDestroy(static_cast<cudaStream_t>(handle_));
  }
#endif
}

// ---- CudaGraph ----
CudaGraph::CudaGraph(CudaGraph&& o) noexcept
    : graph_(std::exchange(o.graph_, nullptr)), exec_(std::exchange(o.exec_, nullptr)) {}
CudaGraph& CudaGraph::operator=(CudaGraph&& o) noexcept {
  std::swap(graph_, o.graph_);
  std::swap(exec_, o.exec_);
  return *this;
}
CudaGraph::~CudaGraph() { reset(); }

void CudaGraph::reset() {
#if TEGEMMA_HAVE_CUDA
  if (exec_ != nullptr) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  if (graph_ != nullptr) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
#endif
  exec_ = graph_ = nullptr;
}

void CudaGraph::capture(Stream stream, const std::function<void()>& body) {
#if TEGEMMA_HAVE_CUDA
  reset();
  const cudaStream_t s = cuda_stream(stream);
  TG_CHECK(s != nullptr, "CudaGraph: the legacy default stream cannot be captured; use an OwnedStream");
  TG_CHECK_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  try {
    body();
  } catch (...) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(s, &partial);  // leave the stream usable
    if (partial != nullptr) cudaGraphDestroy(partial);
    cudaGetLastError();
    throw;
  }
  cudaGraph_t g = nullptr;
  TG_CHECK_CUDA(cudaStreamEndCapture(s, &g));
  graph_ = g;
  cudaGraphExec_t e = nullptr;
  TG_CHECK_CUDA(cudaGraphInstantiate(&e, g, 0));
  exec_ = e;
#else
  (void)stream;
  (void)body;
  no_cuda("CudaGraph::capture");
#endif
}

void CudaGraph::replay(Stream stream) const {
  TG_CHECK(exec_ != nullptr, "CudaGraph::replay: nothing captured");
#if TEGEMMA_HAVE_CUDA
  TG_CHECK_CUDA(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), cuda_stream(stream)));
#else
  (void)stream;
#endif
}

// ---- CudaEvent ----
bool stream_capturing(Stream stream) {
#if TEGEMMA_HAVE_CUDA
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  TG_CHECK_CUDA(cudaStreamIsCapturing(cuda_stream(stream), &status));
  return status != cudaStreamCaptureStatusNone;
#else
  (void)stream;
  return false;
#endif
}

CudaEvent::CudaEvent() {
#if TEGEMMA_HAVE_CUDA
  cudaEvent_t e = nullptr;
  TG_CHECK_CUDA(cudaEventCreate(&e));
  handle_ = e;
#else
  no_cuda("CudaEvent");
#endif
}
CudaEvent::CudaEvent(CudaEvent&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}
CudaEvent& CudaEvent::operator=(CudaEvent&& o) noexcept {
  std::swap(handle_, o.handle_);
  return *this;
}
CudaEvent::~CudaEvent() {
#if TEGEMMA_HAVE_CUDA
  if (handle_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(handle_));
#endif
}
void CudaEvent::record(Stream stream) {
#if TEGEMMA_HAVE_CUDA
  TG_CHECK_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(handle_), cuda_stream(stream)));
#else
  (void)stream;
#endif
}
bool CudaEvent::ready() const {
#if TEGEMMA_HAVE_CUDA
  const cudaError_t e = cudaEventQuery(static_cast<cudaEvent_t>(handle_));
  if (e == cudaErrorNotReady) return false;
  TG_CHECK_CUDA(e);
#endif
  return true;
}
void CudaEvent::wait() const {
#if TEGEMMA_HAVE_CUDA
  TG_CHECK_CUDA(cudaEventSynchronize(static_cast<cudaEvent_t>(handle_)));
#endif
}
double CudaEvent::since(const CudaEvent& start) const {
#if TEGEMMA_HAVE_CUDA
  float ms = 0.0f;
  TG_CHECK_CUDA(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.handle_), static_cast<cudaEvent_t>(handle_)));
  return ms;
#else
  (void)start;
  return 0.0;
#endif
}

// ---- PinnedBuffer ----
PinnedBuffer::PinnedBuffer(std::size_t bytes) : bytes_(bytes) {
#if TEGEMMA_HAVE_CUDA
  TG_CHECK_CUDA(cudaMallocHost(&data_, bytes));
#else
  no_cuda("PinnedBuffer");
#endif
}
PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  std::swap(data_, o.data_);
  std::swap(bytes_, o.bytes_);
  return *this;
}
PinnedBuffer::~PinnedBuffer() {
#if TEGEMMA_HAVE_CUDA
  if (data_ != nullptr) cudaFreeHost(data_);
#endif
}
TensorView PinnedBuffer::view(DType dtype, Shape shape) const {
  TG_CHECK(static_cast<std::size_t>(shape.numel()) * dtype_size(dtype) <= bytes_, "PinnedBuffer: a view of ", shape,
           " ", dtype, " does not fit ", bytes_, " bytes");
  return TensorView(data_, dtype, shape, Device::CPU);
}

}  // namespace tg::impl
