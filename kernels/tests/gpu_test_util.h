// Helpers for the gpu-labelled tests: skip cleanly without a device, random test data, and (CUDA builds) a captured
// CUDA graph.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/numeric.h"
#include "common/tensor.h"

#if TEGEMMA_HAVE_CUDA
#include <cuda_runtime.h>

#include "common/cuda_check.h"
#endif

#define TG_REQUIRE_CUDA()                                                        \
  do {                                                                           \
    if (!::tg::cuda_available()) GTEST_SKIP() << "no CUDA device (gpu test)";    \
  } while (0)

namespace tg::testing {

// fn() throws a tg::Error whose message contains `needle` (the bad-input tests).
template <typename Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected a tg::Error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Normal(0, stddev) floats rounded to `dtype`, stored in `dtype` on the host.
inline Tensor random_host(DType dtype, Shape shape, uint32_t seed, float stddev = 1.0f) {
  Tensor t = Tensor::empty(dtype, shape, Device::CPU);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  const int64_t n = shape.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = dist(rng);
    switch (dtype) {
      case DType::F32: t.ptr<float>()[i] = v; break;
      case DType::BF16: t.ptr<uint16_t>()[i] = float_to_bf16_bits(v); break;
      case DType::F16: t.ptr<uint16_t>()[i] = float_to_f16_bits(v); break;
      case DType::E4M3: case DType::E5M2: t.ptr<uint8_t>()[i] = static_cast<uint8_t>(encode(dtype, v)); break;
      default: ADD_FAILURE() << "random_host: unsupported dtype " << dtype;
    }
  }
  return t;
}

// Same dtype, shape and bytes, host or device tensors (compared on the host): "bit for bit" in the GPU tests.
inline bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor ha = a.to(Device::CPU), hb = b.to(Device::CPU);
  return std::memcmp(ha.data(), hb.data(), ha.nbytes()) == 0;
}

#if TEGEMMA_HAVE_CUDA
// A CUDA graph captured once from `body()` on `stream` in capture mode `mode` and instantiated (flags 0); launch()
// replays it. The graph and its executable are destroyed with the object, also when a check throws on the way (a
// failed destroy is a test failure); a body that throws ends the capture first, leaving the stream usable.
class CapturedGraph {
 public:
  template <typename F>
  CapturedGraph(cudaStream_t stream, cudaStreamCaptureMode mode, F&& body) {
    TG_CHECK_CUDA(cudaStreamBeginCapture(stream, mode));
    try {
      body();
    } catch (...) {
      cudaGraph_t partial = nullptr;
      cudaStreamEndCapture(stream, &partial);
      if (partial != nullptr) cudaGraphDestroy(partial);
      cudaGetLastError();
      throw;
    }
    TG_CHECK_CUDA(cudaStreamEndCapture(stream, &graph_));
    try {
      TG_CHECK_CUDA(cudaGraphInstantiate(&exec_, graph_, 0));
    } catch (...) {
      destroy();
      throw;
    }
  }
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;
  ~CapturedGraph() { destroy(); }

  void launch(cudaStream_t stream) const { TG_CHECK_CUDA(cudaGraphLaunch(exec_, stream)); }

 private:
  void destroy() noexcept {
    if (exec_ != nullptr) {
      const cudaError_t e = cudaGraphExecDestroy(exec_);
      EXPECT_EQ(e, cudaSuccess) << "cudaGraphExecDestroy: " << cudaGetErrorString(e);
    }
    if (graph_ != nullptr) {
      const cudaError_t e = cudaGraphDestroy(graph_);
      EXPECT_EQ(e, cudaSuccess) << "cudaGraphDestroy: " << cudaGetErrorString(e);
    }
    exec_ = nullptr;
    graph_ = nullptr;
  }

  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};
#endif

}  // namespace tg::testing
