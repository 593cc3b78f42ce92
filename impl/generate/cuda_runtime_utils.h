// Small RAII wrappers over the CUDA runtime for generation: an owned stream, a captured-once CUDA graph, events
// and page-locked host memory. In builds without CUDA they exist but refuse to be used (the CPU backend never
// needs them).
#pragma once

#include <cstddef>
#include <functional>

#include "common/tensor.h"

namespace tg::impl {

// A non-blocking CUDA stream owned by its holder (capturable: the legacy default stream is not).
class OwnedStream {
 public:
  OwnedStream() = default;
  static OwnedStream create();  // CUDA only
  OwnedStream(OwnedStream&& o) noexcept;
  OwnedStream& operator=(OwnedStream&& o) noexcept;
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  ~OwnedStream();
  Stream get() const { return Stream{handle_}; }

 private:
  void* handle_ = nullptr;
};

// Work captured once from a stream, then replayed as one launch.
class CudaGraph {
 public:
  CudaGraph() = default;
  CudaGraph(CudaGraph&& o) noexcept;
  CudaGraph& operator=(CudaGraph&& o) noexcept;
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  ~CudaGraph();

  // Captures what `body` enqueues on `stream` (thread-local capture mode: other threads may keep using CUDA)
  // and instantiates it. `body` must not synchronise or allocate; an error inside ends the capture first.
  void capture(Stream stream, const std::function<void()>& body);
  void replay(Stream stream) const;
  bool captured() const { return exec_ != nullptr; }

 private:
  void reset();
  void* graph_ = nullptr;
  void* exec_ = nullptr;
};

class CudaEvent {
 public:
  CudaEvent();  // CUDA only (timing enabled)
  CudaEvent(CudaEvent&& o) noexcept;
  CudaEvent& operator=(CudaEvent&& o) noexcept;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  ~CudaEvent();
  void record(Stream stream);
  bool ready() const;  // cudaEventQuery
  void wait() const;   // cudaEventSynchronize
  // Milliseconds between `start` and this event (both recorded and complete).
  double since(const CudaEvent& start) const;

 private:
  void* handle_ = nullptr;
};

// Whether `stream` is capturing a CUDA graph now (false on the CPU backend and in builds without CUDA): work that
// must synchronise (a timing) checks it first.
bool stream_capturing(Stream stream);

// Page-locked host memory (cudaMallocHost): device -> host copies into it are truly asynchronous.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t bytes);  // CUDA only
  PinnedBuffer(PinnedBuffer&& o) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer();
  // A host view of the first numel elements.
  TensorView view(DType dtype, Shape shape) const;
  std::size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace tg::impl
