// CUDA attention (cuDNN fused SDPA, our flash kernels, decode, KV append) against the CPU twins.
//
// Tolerances (data, with their reasons):
//  * prefill / training outputs (out, dq, dk, dv; BF16): the GPU kernels round P (and dS) to BF16 before the
//    second matmul and sum in FP32 in a different order than the twin; the twin keeps P in FP32. That is the
//    error class of TE's fused-attention tests; TE's DotProductAttention BF16 tolerance is atol 1e-2 (relative
//    to values of size ~1), its gradient tolerance rtol 1e-2 / atol 5e-2 (docs/transformer-engine.md 3).
//    We use kOut = {atol 1e-2 * max|ref|, rtol 1e-2} per element AND a mean-error bound of 2e-3 * max|ref|, so
//    that a systematic error (wrong mask, wrong head, missing scale) fails even where the per-element bound
//    would let it through.
//  * lse (FP32 on both sides, differences only from summation order): atol 2e-3.
//  * decode (no BF16 P anywhere; FP32 sums in another order, BF16 output on both sides): two BF16 ulps,
//    {atol 2e-3, rtol 2^-7}.
//  * KV append: bit-exact (same RNE / SATFINITE rounding as common/numeric.h).
//  * decode's FP8 output (DecodeOptions::fp8_out): bit-exact against kernels::quantize of the BF16 output.
//  * determinism: the same call twice gives the same bits.
// Kernel faults surface as tg::Error from the next device-to-host copy (Tensor::to), which fails the test.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/cuda_check.h"
#include "common/fp8_tensor.h"
#include "common/numeric.h"
#include "kernels/attention/attention.h"
#include "kernels/quantize/quantize.h"
#include "kernels/launch/programmatic_launch.h"
#include "kernels/tests/attention_test_util.h"
#include "kernels/tests/elementwise_test_util.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg {
namespace {

using kernels::AttentionBackend;
using kernels::AttentionOptions;
using kernels::DecodeOptions;
using kernels::KvCache;
using testing::compare;
using testing::describe;
using testing::host_tensor;
using testing::random_values;
using testing::same_bits;
using testing::to_double;

struct Problem {
  std::vector<int32_t> lens;  // packed lengths; dense when `dense_S` > 0
  int64_t H, Hkv, Dh;
  int64_t dense_S = 0;
  bool dense() const { return dense_S > 0; }
  int64_t B() const { return static_cast<int64_t>(lens.size()); }
  int64_t T() const {
    int64_t t = 0;
    for (int32_t l : lens) t += l;
    return t;
  }
  int64_t max_len() const {
    int64_t m = 1;
    for (int32_t l : lens) m = std::max<int64_t>(m, l);
    return m;
  }
  Shape q_shape() const { return dense() ? Shape{B(), dense_S, H, Dh} : Shape{T(), H, Dh}; }
  Shape kv_shape() const { return dense() ? Shape{B(), dense_S, Hkv, Dh} : Shape{T(), Hkv, Dh}; }
  Shape lse_shape() const { return dense() ? Shape{B(), H, dense_S} : Shape{T(), H}; }
};
Problem packed(std::vector<int32_t> lens, int64_t H, int64_t Hkv, int64_t Dh) { return {std::move(lens), H, Hkv, Dh}; }
Problem dense(int64_t B, int64_t S, int64_t H, int64_t Hkv, int64_t Dh) {
  return {std::vector<int32_t>(static_cast<size_t>(B), static_cast<int32_t>(S)), H, Hkv, Dh, S};
}
std::string name(const Problem& p, bool causal, const char* backend) {
  std::string lens;
  for (int32_t l : p.lens) lens += std::to_string(l) + ",";
  return std::string(backend) + (p.dense() ? " dense" : " packed") + " lens {" + lens + "} H " + std::to_string(p.H) +
         " Hkv " + std::to_string(p.Hkv) + " Dh " + std::to_string(p.Dh) + (causal ? " causal" : " non-causal");
}

// Host (CPU) and device copies of one problem's tensors.
struct Case {
  Problem p;
  Tensor q, k, v, cu;          // host
  Tensor q_d, k_d, v_d, cu_d;  // device
  int64_t max_seqlen() const { return p.dense() ? 0 : p.max_len(); }
  TensorView cu_view() const { return p.dense() ? TensorView{} : cu.view(); }
  TensorView cu_d_view() const { return p.dense() ? TensorView{} : cu_d.view(); }
};
Case make_case(const Problem& p, uint32_t seed) {
  Case c;
  c.p = p;
  c.q = host_tensor(DType::BF16, p.q_shape(), random_values(p.q_shape().numel(), seed));
  c.k = host_tensor(DType::BF16, p.kv_shape(), random_values(p.kv_shape().numel(), seed + 1));
  c.v = host_tensor(DType::BF16, p.kv_shape(), random_values(p.kv_shape().numel(), seed + 2));
  c.cu = testing::cu_seqlens_of(p.lens);
  c.q_d = c.q.to(Device::CUDA);
  c.k_d = c.k.to(Device::CUDA);
  c.v_d = c.v.to(Device::CUDA);
  c.cu_d = c.cu.to(Device::CUDA);
  return c;
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}
double mean_abs_err(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += std::fabs(a[i] - b[i]);
  return a.empty() ? 0.0 : s / static_cast<double>(a.size());
}
// The bf16 tensor-core tolerance described at the top of the file.
void expect_close_bf16(const Tensor& got_d, const Tensor& want_h, const std::string& what) {
  const std::vector<double> got = to_double(got_d.to(Device::CPU)), want = to_double(want_h);
  const double scale = std::max(max_abs(want), 1e-6);
  const auto c = compare(got, want, 1e-2 * scale, 1e-2);
  EXPECT_TRUE(c.ok()) << what << ": " << describe(c);
  EXPECT_LE(mean_abs_err(got, want), 2e-3 * scale) << what << ": mean |err| too large (systematic error?)";
}
void expect_close_lse(const Tensor& got_d, const Tensor& want_h, const std::string& what) {
  const auto c = compare(to_double(got_d.to(Device::CPU)), to_double(want_h), 2e-3, 0.0);
  EXPECT_TRUE(c.ok()) << what << " lse: " << describe(c);
}

AttentionOptions options(AttentionBackend backend, bool causal) {
  AttentionOptions o;
  o.backend = backend;
  o.causal = causal;
  return o;
}

struct Fwd {
  Tensor out, lse;
};
Fwd cpu_fwd(const Case& c, bool causal) {
  Fwd f{Tensor::empty(DType::BF16, c.p.q_shape()), Tensor::empty(DType::F32, c.p.lse_shape())};
  kernels::attention_fwd(c.q, c.k, c.v, c.cu_view(), c.max_seqlen(), options(AttentionBackend::kCudnn, causal), f.out,
                         f.lse);
  return f;
}
Fwd gpu_fwd(const Case& c, AttentionBackend backend, bool causal) {
  Fwd f{Tensor::zeros(DType::BF16, c.p.q_shape(), Device::CUDA),
        Tensor::zeros(DType::F32, c.p.lse_shape(), Device::CUDA)};
  kernels::attention_fwd(c.q_d, c.k_d, c.v_d, c.cu_d_view(), c.max_seqlen(), options(backend, causal), f.out, f.lse);
  return f;
}

const std::vector<Problem>& forward_problems() {
  static const std::vector<Problem> problems = {
      packed({1}, 8, 1, 16),           packed({7}, 8, 2, 16),       packed({33, 1, 7}, 8, 1, 256),
      packed({130, 0, 65}, 8, 2, 256), packed({129, 3}, 8, 8, 256), packed({200, 77}, 16, 16, 64),
      packed({5, 66}, 4, 2, 128),      dense(2, 77, 8, 1, 256),     dense(3, 64, 4, 4, 16),
      dense(1, 512, 8, 1, 256),    // a gemma-2b-like shape (MQA, Dh 256)
      dense(1, 256, 16, 16, 256),  // a gemma-7b-like shape (MHA, Dh 256)
  };
  return problems;
}

void run_forward_suite(AttentionBackend backend) {
  uint32_t seed = 1000;
  for (const Problem& p : forward_problems()) {
    if (backend == AttentionBackend::kFlash && p.Dh % 16 != 0) continue;
    const Case c = make_case(p, seed += 10);
    for (bool causal : {true, false}) {
      const std::string what = name(p, causal, kernels::attention_backend_name(backend));
      SCOPED_TRACE(what);
      const Fwd want = cpu_fwd(c, causal);
      try {  // one unsupported configuration must not hide the others
        const Fwd got = gpu_fwd(c, backend, causal);
        expect_close_bf16(got.out, want.out, what + " out");
        expect_close_lse(got.lse, want.lse, what);
      } catch (const Error& e) {
        ADD_FAILURE() << what << ": " << e.what();
      }
    }
  }
}

TEST(AttentionGpu, CudnnForwardMatchesCpuTwin) {
  TG_REQUIRE_CUDA();
  run_forward_suite(AttentionBackend::kCudnn);
}
TEST(AttentionGpu, FlashForwardMatchesCpuTwin) {
  TG_REQUIRE_CUDA();
  run_forward_suite(AttentionBackend::kFlash);
}

// Backward: the GPU and the twin get identical inputs (the twin's forward out / lse), so only the backward's
// own arithmetic is compared.
void run_backward_suite(AttentionBackend backend, bool deterministic) {
  const std::vector<Problem> problems = {packed({7, 1, 33}, 8, 1, 16), packed({130, 65}, 8, 2, 256),
                                         packed({100, 0, 3}, 4, 4, 64), dense(2, 77, 8, 1, 256),
                                         dense(1, 256, 16, 16, 256)};
  uint32_t seed = 2000;
  for (const Problem& p : problems) {
    const Case c = make_case(p, seed += 10);
    for (bool causal : {true, false}) {
      const std::string what =
          name(p, causal, kernels::attention_backend_name(backend)) + (deterministic ? " deterministic" : "");
      SCOPED_TRACE(what);
      const Fwd f = cpu_fwd(c, causal);
      const Tensor dout = host_tensor(DType::BF16, p.q_shape(), random_values(p.q_shape().numel(), seed + 5));
      Tensor dq = Tensor::empty(DType::BF16, p.q_shape()), dk = Tensor::empty(DType::BF16, p.kv_shape()),
             dv = Tensor::empty(DType::BF16, p.kv_shape());
      AttentionOptions opt = options(backend, causal);
      opt.deterministic = deterministic;
      kernels::attention_bwd(c.q, c.k, c.v, f.out, f.lse, dout, c.cu_view(), c.max_seqlen(), opt, dq, dk, dv);
      const Tensor out_d = f.out.to(Device::CUDA), lse_d = f.lse.to(Device::CUDA), dout_d = dout.to(Device::CUDA);
      try {  // one unsupported configuration must not hide the others
        Tensor dq_d = Tensor::zeros(DType::BF16, p.q_shape(), Device::CUDA);
        Tensor dk_d = Tensor::zeros(DType::BF16, p.kv_shape(), Device::CUDA);
        Tensor dv_d = Tensor::zeros(DType::BF16, p.kv_shape(), Device::CUDA);
        kernels::attention_bwd(c.q_d, c.k_d, c.v_d, out_d, lse_d, dout_d, c.cu_d_view(), c.max_seqlen(), opt, dq_d,
                               dk_d, dv_d);
        expect_close_bf16(dq_d, dq, what + " dq");
        expect_close_bf16(dk_d, dk, what + " dk");
        expect_close_bf16(dv_d, dv, what + " dv");
        if (deterministic || backend == AttentionBackend::kFlash) {
          Tensor dq2 = Tensor::zeros(DType::BF16, p.q_shape(), Device::CUDA);
          Tensor dk2 = Tensor::zeros(DType::BF16, p.kv_shape(), Device::CUDA);
          Tensor dv2 = Tensor::zeros(DType::BF16, p.kv_shape(), Device::CUDA);
          kernels::attention_bwd(c.q_d, c.k_d, c.v_d, out_d, lse_d, dout_d, c.cu_d_view(), c.max_seqlen(), opt, dq2,
                                 dk2, dv2);
          EXPECT_TRUE(same_bits(dq_d, dq2) && same_bits(dk_d, dk2) && same_bits(dv_d, dv2))
              << "backward not deterministic";
        }
      } catch (const Error& e) {
        ADD_FAILURE() << what << ": " << e.what();
      }
    }
  }
}

TEST(AttentionGpu, CudnnBackwardMatchesCpuTwin) {
  TG_REQUIRE_CUDA();
  run_backward_suite(AttentionBackend::kCudnn, false);
}
TEST(AttentionGpu, CudnnDeterministicBackwardMatchesCpuTwinAndRepeats) {
  TG_REQUIRE_CUDA();
  run_backward_suite(AttentionBackend::kCudnn, true);
}
TEST(AttentionGpu, FlashBackwardMatchesCpuTwinAndRepeats) {
  TG_REQUIRE_CUDA();
  run_backward_suite(AttentionBackend::kFlash, false);
}

TEST(AttentionGpu, ForwardIsDeterministic) {
  TG_REQUIRE_CUDA();
  const Case c = make_case(packed({300, 17, 129}, 8, 2, 256), 77);
  for (AttentionBackend backend : {AttentionBackend::kCudnn, AttentionBackend::kFlash}) {
    const Fwd a = gpu_fwd(c, backend, true), b = gpu_fwd(c, backend, true);
    EXPECT_TRUE(same_bits(a.out, b.out) && same_bits(a.lse, b.lse)) << kernels::attention_backend_name(backend);
  }
}

// q / k / v as column slices of one fused QKV buffer give the same bits as contiguous copies.
TEST(AttentionGpu, StridedFusedQkvMatchesContiguous) {
  TG_REQUIRE_CUDA();
  const Problem p = packed({70, 9}, 8, 2, 256);
  const Case c = make_case(p, 88);
  const int64_t T = p.T(), wq = p.H * p.Dh, wkv = p.Hkv * p.Dh, w = wq + 2 * wkv;
  Tensor qkv = Tensor::empty(DType::BF16, {T, w});
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(qkv.ptr<uint16_t>() + t * w, c.q.ptr<uint16_t>() + t * wq, wq * 2);
    std::memcpy(qkv.ptr<uint16_t>() + t * w + wq, c.k.ptr<uint16_t>() + t * wkv, wkv * 2);
    std::memcpy(qkv.ptr<uint16_t>() + t * w + wq + wkv, c.v.ptr<uint16_t>() + t * wkv, wkv * 2);
  }
  const Tensor qkv_d = qkv.to(Device::CUDA);
  auto view = [&](int64_t col, int64_t heads) {
    return TensorView(qkv_d.ptr<uint16_t>() + col, DType::BF16, Shape{T, heads, p.Dh}, Shape{w, p.Dh, 1}, Device::CUDA);
  };
  for (AttentionBackend backend : {AttentionBackend::kCudnn, AttentionBackend::kFlash}) {
    const Fwd want = gpu_fwd(c, backend, true);
    Fwd got{Tensor::zeros(DType::BF16, p.q_shape(), Device::CUDA),
            Tensor::zeros(DType::F32, p.lse_shape(), Device::CUDA)};
    kernels::attention_fwd(view(0, p.H), view(wq, p.Hkv), view(wq + wkv, p.Hkv), c.cu_d, p.max_len(),
                           options(backend, true), got.out, got.lse);
    EXPECT_TRUE(same_bits(got.out, want.out)) << kernels::attention_backend_name(backend);
  }
}

// A caller workspace gives the same bits as the internal one; a too-small one is refused.
TEST(AttentionGpu, CallerWorkspace) {
  TG_REQUIRE_CUDA();
  const Case c = make_case(packed({90, 40}, 8, 1, 256), 99);
  const Fwd want = gpu_fwd(c, AttentionBackend::kCudnn, true);
  Fwd got{Tensor::zeros(DType::BF16, c.p.q_shape(), Device::CUDA),
          Tensor::zeros(DType::F32, c.p.lse_shape(), Device::CUDA)};
  AttentionOptions opt = options(AttentionBackend::kCudnn, true);
  const std::size_t bytes =
      kernels::attention_fwd_workspace_bytes(c.q_d, c.k_d, c.v_d, c.cu_d, c.max_seqlen(), opt, got.out, got.lse);
  Buffer ws(std::max<std::size_t>(bytes, 256), Device::CUDA);
  opt.workspace = {ws.data(), ws.nbytes()};
  kernels::attention_fwd(c.q_d, c.k_d, c.v_d, c.cu_d, c.max_seqlen(), opt, got.out, got.lse);
  EXPECT_TRUE(same_bits(got.out, want.out));
  if (bytes > 0) {
    opt.workspace = {ws.data(), bytes - 1};
    EXPECT_THROW(kernels::attention_fwd(c.q_d, c.k_d, c.v_d, c.cu_d, c.max_seqlen(), opt, got.out, got.lse), Error);
  }
}

// The backward's caller workspace filled with 0xFF bytes (NaN as FP32) before each call: nothing in it may be read
// before cuDNN or we write it. The non-deterministic backward accumulates dQ in FP32 in the workspace, which must be
// zeroed before every execution (session 10: it was not; initcheck reported the reads); a NaN left in it would reach
// dQ. Packed and dense, MQA at head dim 256, causal.
TEST(AttentionGpu, CudnnBackwardPoisonedWorkspace) {
  TG_REQUIRE_CUDA();
  for (const Problem& p : {packed({130, 65}, 8, 1, 256), dense(2, 77, 8, 1, 256)}) {
    const Case c = make_case(p, 77);
    const std::string what = name(p, true, "cudnn poisoned workspace");
    SCOPED_TRACE(what);
    const Fwd f = cpu_fwd(c, true);
    const Tensor dout = host_tensor(DType::BF16, p.q_shape(), random_values(p.q_shape().numel(), 78));
    Tensor dq = Tensor::empty(DType::BF16, p.q_shape()), dk = Tensor::empty(DType::BF16, p.kv_shape()),
           dv = Tensor::empty(DType::BF16, p.kv_shape());
    const AttentionOptions cpu_opt = options(AttentionBackend::kCudnn, true);
    kernels::attention_bwd(c.q, c.k, c.v, f.out, f.lse, dout, c.cu_view(), c.max_seqlen(), cpu_opt, dq, dk, dv);
    const Tensor out_d = f.out.to(Device::CUDA), lse_d = f.lse.to(Device::CUDA), dout_d = dout.to(Device::CUDA);
    Tensor dq_d = Tensor::zeros(DType::BF16, p.q_shape(), Device::CUDA);
    Tensor dk_d = Tensor::zeros(DType::BF16, p.kv_shape(), Device::CUDA);
    Tensor dv_d = Tensor::zeros(DType::BF16, p.kv_shape(), Device::CUDA);
    AttentionOptions opt = options(AttentionBackend::kCudnn, true);
    const std::size_t bytes = kernels::attention_bwd_workspace_bytes(c.q_d, c.k_d, c.v_d, out_d, lse_d, dout_d,
                                                                     c.cu_d_view(), c.max_seqlen(), opt, dq_d, dk_d,
                                                                     dv_d);
    ASSERT_GT(bytes, 0u) << "the cuDNN backward has a workspace (dQ accumulator, softmax sums)";
    Buffer ws(bytes, Device::CUDA);
    opt.workspace = {ws.data(), ws.nbytes()};
    for (int call = 0; call < 2; ++call) {  // the second call finds the first one's leftovers, poisoned again
      TG_CHECK_CUDA(cudaMemset(ws.data(), 0xFF, ws.nbytes()));
      kernels::attention_bwd(c.q_d, c.k_d, c.v_d, out_d, lse_d, dout_d, c.cu_d_view(), c.max_seqlen(), opt, dq_d,
                             dk_d, dv_d);
      expect_close_bf16(dq_d, dq, what + " dq");
      expect_close_bf16(dk_d, dk, what + " dk");
      expect_close_bf16(dv_d, dv, what + " dv");
    }
  }
}

TEST(AttentionGpu, RejectsBadArguments) {
  TG_REQUIRE_CUDA();
  const Case c = make_case(packed({9}, 4, 2, 16), 5);
  Tensor out = Tensor::empty(DType::BF16, c.p.q_shape(), Device::CUDA);
  // a host tensor mixed with device tensors
  EXPECT_THROW(kernels::attention_fwd(c.q_d, c.k, c.v_d, c.cu_d, 9, AttentionOptions{}, out, TensorView{}), Error);
  // head dim 24: not a flash head dim
  Tensor q24 = Tensor::zeros(DType::BF16, {9, 4, 24}, Device::CUDA),
         k24 = Tensor::zeros(DType::BF16, {9, 2, 24}, Device::CUDA);
  Tensor o24 = Tensor::empty(DType::BF16, {9, 4, 24}, Device::CUDA);
  EXPECT_THROW(
      kernels::attention_fwd(q24, k24, k24, c.cu_d, 9, options(AttentionBackend::kFlash, true), o24, TensorView{}),
      Error);
  // a misaligned view (token stride not a multiple of 8 elements)
  Tensor raw = Tensor::zeros(DType::BF16, {9 * 68}, Device::CUDA);
  const TensorView odd(raw.data(), DType::BF16, Shape{9, 4, 16}, Shape{68, 16, 1}, Device::CUDA);
  for (AttentionBackend backend : {AttentionBackend::kCudnn, AttentionBackend::kFlash}) {
    EXPECT_THROW(kernels::attention_fwd(odd, c.k_d, c.v_d, c.cu_d, 9, options(backend, true), out, TensorView{}),
                 Error);
  }
}

// ---- decode ----------------------------------------------------------------------------------------------------

struct Cache {
  Tensor k, v, k_scale, v_scale;
  KvCache view() const { return KvCache{k, v, k_scale, v_scale}; }
};
Cache make_cache(int64_t B, int64_t max_seq, int64_t Hkv, int64_t Dh, DType dtype, int64_t n_scales, Device device) {
  Cache c{
      Tensor::zeros(dtype, {B, max_seq, Hkv, Dh}, device), Tensor::zeros(dtype, {B, max_seq, Hkv, Dh}, device), {}, {}};
  if (dtype == DType::E4M3) {
    Tensor ks = Tensor::empty(DType::F32, {n_scales}), vs = Tensor::empty(DType::F32, {n_scales});
    for (int64_t i = 0; i < n_scales; ++i) {
      ks.ptr<float>()[i] = 0.02f * static_cast<float>(i + 1);
      vs.ptr<float>()[i] = 0.015f * static_cast<float>(i + 2);
    }
    c.k_scale = ks.to(device);
    c.v_scale = vs.to(device);
  }
  return c;
}
Tensor i32(const std::vector<int32_t>& v, Device device) {
  Tensor t = Tensor::empty(DType::I32, {static_cast<int64_t>(v.size())});
  std::memcpy(t.data(), v.data(), v.size() * sizeof(int32_t));
  return t.to(device);
}

// Appends the same random rows to a CPU cache and a GPU cache (positions per step; -1 = finished) and checks the
// GPU cache equals the CPU cache bit for bit after every step.
void fill_both(const Cache& cpu, const Cache& gpu, const std::vector<int32_t>& lens, uint32_t seed) {
  const int64_t B = cpu.k.shape()[0], Hkv = cpu.k.shape()[2], Dh = cpu.k.shape()[3];
  int32_t longest = 0;
  for (int32_t l : lens) longest = std::max(longest, l);
  for (int32_t pos = 0; pos < longest; ++pos) {
    std::vector<int32_t> positions(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) positions[b] = pos < lens[b] ? pos : -1;
    const Tensor kn = host_tensor(DType::BF16, {B, Hkv, Dh}, random_values(B * Hkv * Dh, seed + 2 * pos));
    const Tensor vn = host_tensor(DType::BF16, {B, Hkv, Dh}, random_values(B * Hkv * Dh, seed + 2 * pos + 1));
    kernels::kv_cache_append(kn, vn, i32(positions, Device::CPU), cpu.view());
    kernels::kv_cache_append(kn.to(Device::CUDA), vn.to(Device::CUDA), i32(positions, Device::CUDA), gpu.view());
  }
  ASSERT_TRUE(same_bits(gpu.k, cpu.k)) << "K cache after GPU append differs from the CPU twin";
  ASSERT_TRUE(same_bits(gpu.v, cpu.v)) << "V cache after GPU append differs from the CPU twin";
}

void check_decode(DType dtype, int64_t n_scales, int64_t H, int64_t Hkv, int64_t Dh, int num_splits,
                  int heads_per_block = 0) {
  const std::vector<int32_t> lens = {1, 0, 300, 64, 129};
  const int64_t B = static_cast<int64_t>(lens.size()), max_seq = 301;
  const Cache cpu = make_cache(B, max_seq, Hkv, Dh, dtype, n_scales, Device::CPU);
  const Cache gpu = make_cache(B, max_seq, Hkv, Dh, dtype, n_scales, Device::CUDA);
  fill_both(cpu, gpu, lens, 500);
  const Tensor q = host_tensor(DType::BF16, {B, H, Dh}, random_values(B * H * Dh, 600));
  Tensor want = Tensor::empty(DType::BF16, {B, H, Dh});
  DecodeOptions opt;
  opt.num_splits = num_splits;
  opt.heads_per_block = heads_per_block;
  kernels::decode_attention(q, cpu.view(), i32(lens, Device::CPU), opt, want);
  Tensor got = Tensor::zeros(DType::BF16, {B, H, Dh}, Device::CUDA);
  const Tensor q_d = q.to(Device::CUDA), lens_d = i32(lens, Device::CUDA);
  kernels::decode_attention(q_d, gpu.view(), lens_d, opt, got);
  const auto c = compare(to_double(got.to(Device::CPU)), to_double(want), 2e-3, 1.0 / 128);
  EXPECT_TRUE(c.ok()) << dtype << " scales " << n_scales << " H " << H << " Hkv " << Hkv << " Dh " << Dh << " splits "
                      << num_splits << " heads/block " << heads_per_block << ": " << describe(c);
  Tensor again = Tensor::zeros(DType::BF16, {B, H, Dh}, Device::CUDA);
  kernels::decode_attention(q_d, gpu.view(), lens_d, opt, again);
  EXPECT_TRUE(same_bits(got, again)) << "decode not deterministic";
}

TEST(AttentionGpu, DecodeMatchesCpuTwinBf16Cache) {
  TG_REQUIRE_CUDA();
  for (int64_t dh : {16, 256})
    for (int64_t hkv : {1, 2, 8})
      for (int splits : {1, 3, 0}) check_decode(DType::BF16, 0, 8, hkv, dh, splits);
  check_decode(DType::BF16, 0, 16, 16, 128, 0);
  check_decode(DType::BF16, 0, 8, 4, 64, 2);
  // Fewer query heads per block than the group (gemma-2b's MQA group of 8 at batch 1): same tolerance.
  for (int hpb : {1, 2, 4})
    for (int splits : {1, 3, 0}) check_decode(DType::BF16, 0, 8, 1, 256, splits, hpb);
}

TEST(AttentionGpu, DecodeMatchesCpuTwinFp8Cache) {
  TG_REQUIRE_CUDA();
  for (int64_t n_scales : {1, 2})
    for (int splits : {1, 0}) check_decode(DType::E4M3, n_scales, 8, 2, 256, splits);
  check_decode(DType::E4M3, 1, 8, 1, 16, 3);
  // gemma-2b's geometry (MQA, 8 heads per block, head dim 256): static plus dynamic shared memory passes 48 KB only
  // here, which once failed to launch.
  check_decode(DType::E4M3, 1, 8, 1, 256, 0);
  check_decode(DType::E4M3, 1, 8, 1, 256, 0, 1);
}

// KV-cached decode == the last row of the full-sequence forward (both backends), within the tensor-core
// tolerance (the prefill rounds P to BF16, the decode does not).
TEST(AttentionGpu, DecodeEqualsLastRowOfPrefill) {
  TG_REQUIRE_CUDA();
  for (int64_t hkv : {1, 8}) {
    const int64_t L = 333, H = 8, Dh = 256;
    const Case c = make_case(packed({static_cast<int32_t>(L)}, H, hkv, Dh), 700);
    const Cache gpu = make_cache(1, L + 7, hkv, Dh, DType::BF16, 0, Device::CUDA);
    for (int64_t t = 0; t < L; ++t) {
      const TensorView kn(c.k_d.ptr<uint16_t>() + t * hkv * Dh, DType::BF16, Shape{1, hkv, Dh}, Device::CUDA);
      const TensorView vn(c.v_d.ptr<uint16_t>() + t * hkv * Dh, DType::BF16, Shape{1, hkv, Dh}, Device::CUDA);
      kernels::kv_cache_append(kn, vn, i32({static_cast<int32_t>(t)}, Device::CUDA), gpu.view());
    }
    const TensorView q_last(c.q_d.ptr<uint16_t>() + (L - 1) * H * Dh, DType::BF16, Shape{1, H, Dh}, Device::CUDA);
    Tensor dec = Tensor::zeros(DType::BF16, {1, H, Dh}, Device::CUDA);
    kernels::decode_attention(q_last, gpu.view(), i32({static_cast<int32_t>(L)}, Device::CUDA), DecodeOptions{}, dec);
    const std::vector<double> got = to_double(dec.to(Device::CPU));
    for (AttentionBackend backend : {AttentionBackend::kCudnn, AttentionBackend::kFlash}) {
      const Fwd f = gpu_fwd(c, backend, true);
      const Tensor full = f.out.to(Device::CPU);
      std::vector<double> want(static_cast<size_t>(H * Dh));
      for (int64_t i = 0; i < H * Dh; ++i) want[i] = bf16_bits_to_float(full.ptr<uint16_t>()[(L - 1) * H * Dh + i]);
      const double scale = std::max(max_abs(want), 1e-6);
      const auto cmp = compare(got, want, 1e-2 * scale, 1e-2);
      EXPECT_TRUE(cmp.ok()) << "Hkv " << hkv << " vs " << kernels::attention_backend_name(backend) << ": "
                            << describe(cmp);
    }
  }
}

// ---- decode: the planner's paths ----------------------------------------------------------------------------------
// One K / V cache pair (CPU twin and GPU copy) with random contents; the rows at and beyond each sequence's length
// hold a poison value (K and V = +max finite of the cache type / 8) so that a kernel reading keys it must not read
// fails the comparison by a wide margin, not by a rounding.
struct DecodeCase {
  Cache cpu, gpu;
  std::vector<int32_t> lens;
  int64_t H = 0;
  Tensor q, q_d, lens_d, want;
};
DecodeCase make_decode_case(DType dtype, int64_t n_scales, int64_t H, int64_t Hkv, int64_t Dh,
                            const std::vector<int32_t>& lens, int64_t max_seq, uint32_t seed) {
  const int64_t B = static_cast<int64_t>(lens.size());
  DecodeCase c;
  c.lens = lens;
  c.H = H;
  c.cpu = make_cache(B, max_seq, Hkv, Dh, dtype, n_scales, Device::CPU);
  c.cpu.k = testing::random_host(dtype, {B, max_seq, Hkv, Dh}, seed);
  c.cpu.v = testing::random_host(dtype, {B, max_seq, Hkv, Dh}, seed + 1);
  const int64_t row = Hkv * Dh;
  for (Tensor* t : {&c.cpu.k, &c.cpu.v}) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = lens[static_cast<size_t>(b)]; j < max_seq; ++j) {
        for (int64_t i = 0; i < row; ++i) {
          const int64_t at = (b * max_seq + j) * row + i;
          if (dtype == DType::BF16)
            t->ptr<uint16_t>()[at] = float_to_bf16_bits(4096.0f);
          else
            t->ptr<uint8_t>()[at] = static_cast<uint8_t>(encode(DType::E4M3, 56.0f));
        }
      }
    }
  }
  c.gpu = Cache{c.cpu.k.to(Device::CUDA), c.cpu.v.to(Device::CUDA), {}, {}};
  if (dtype == DType::E4M3) {
    c.gpu.k_scale = c.cpu.k_scale.to(Device::CUDA);
    c.gpu.v_scale = c.cpu.v_scale.to(Device::CUDA);
  }
  c.q = host_tensor(DType::BF16, {B, H, Dh}, random_values(B * H * Dh, seed + 2));
  c.q_d = c.q.to(Device::CUDA);
  c.lens_d = i32(lens, Device::CUDA);
  c.want = Tensor::empty(DType::BF16, {B, H, Dh});
  kernels::decode_attention(c.q, c.cpu.view(), i32(lens, Device::CPU), DecodeOptions{}, c.want);
  return c;
}
Tensor run_decode(const DecodeCase& c, const DecodeOptions& opt, Stream stream = {}) {
  Tensor out = Tensor::zeros(DType::BF16, c.q_d.shape(), Device::CUDA);
  kernels::decode_attention(c.q_d, c.gpu.view(), c.lens_d, opt, out, stream);
  return out;
}
std::string label(const DecodeCase& c, const DecodeOptions& o) {
  return std::string(dtype_name(c.cpu.k.dtype())) + " H " + std::to_string(c.H) + " Hkv " +
         std::to_string(c.cpu.k.shape()[2]) + " B " + std::to_string(c.lens.size()) + " splits " +
         std::to_string(o.num_splits) + " heads/block " + std::to_string(o.heads_per_block) + " max_cluster " +
         std::to_string(o.max_cluster);
}
// The decode tolerance of the file header (FP32 sums in another order than the twin, BF16 output on both sides:
// two BF16 ulps, {atol 2e-3, rtol 2^-7}). The poisoned rows would be off by O(1) or more.
void expect_matches_twin(const DecodeCase& c, const Tensor& got, const std::string& what) {
  const auto cmp = compare(to_double(got.to(Device::CPU)), to_double(c.want), 2e-3, 1.0 / 128);
  EXPECT_TRUE(cmp.ok()) << what << ": " << describe(cmp);
}

// Every (heads per block, split count) the planner can choose for gemma-2b's MQA group and an MHA cache, with the
// splits merged in the thread-block cluster (max_cluster 0) and through the workspace and the combine kernel
// (max_cluster 1): both within the twin's tolerance, and bit for bit equal to each other (the same partials merged
// by the same arithmetic in the same split order), and the same bits on a repeated launch. Lengths 0, 1, tile edges
// and the full cache in one batch; 16 splits of 32 keys is the largest cluster, 17 and 32 go through the workspace.
// One (geometry, heads per block) pair per instance -- MQA / MHA, BF16 / E4M3 with per-tensor / per-head scales;
// heads_per_block 0 (the planner's) to 8 -- so that compute-sanitizer can take them in parallel lanes (racecheck of
// the whole set in one process ran past 340 s in session 10, one MQA geometry past 320 s in session 11).
struct DecodeGeo {
  int64_t H, Hkv;
  DType dtype;
  int64_t n_scales;
};
class DecodeSplitPaths : public ::testing::TestWithParam<std::tuple<DecodeGeo, int>> {};

TEST_P(DecodeSplitPaths, MatchCpuTwinAndEachOther) {
  TG_REQUIRE_CUDA();
  const std::vector<int32_t> lens = {0, 1, 2, 31, 32, 33, 200, 511, 512};
  const auto [g, hpb] = GetParam();
  if (hpb > g.H / g.Hkv) GTEST_SKIP() << "heads_per_block " << hpb << " > the group size " << g.H / g.Hkv;
  const DecodeCase c = make_decode_case(g.dtype, g.n_scales, g.H, g.Hkv, 256, lens, 512, 900);
  for (int splits : {0, 1, 2, 5, 8, 16, 17, 32}) {
    DecodeOptions in_cluster;
    in_cluster.num_splits = splits;
    in_cluster.heads_per_block = hpb;
    DecodeOptions combine = in_cluster;
    combine.max_cluster = 1;
    const Tensor a = run_decode(c, in_cluster), b = run_decode(c, combine);
    expect_matches_twin(c, a, label(c, in_cluster));
    expect_matches_twin(c, b, label(c, combine));
    EXPECT_TRUE(same_bits(a, b)) << "cluster merge != combine kernel: " << label(c, in_cluster);
    EXPECT_TRUE(same_bits(a, run_decode(c, in_cluster))) << "not deterministic: " << label(c, in_cluster);
  }
}
// Instance i: geometry i / 5, heads_per_block {0, 1, 2, 4, 8}[i % 5] (the MHA geometries skip hpb > 1).
INSTANTIATE_TEST_SUITE_P(AttentionGpu, DecodeSplitPaths,
                         ::testing::Combine(::testing::Values(DecodeGeo{8, 1, DType::BF16, 0},
                                                              DecodeGeo{8, 1, DType::E4M3, 1},
                                                              DecodeGeo{4, 4, DType::BF16, 0},
                                                              DecodeGeo{4, 4, DType::E4M3, 4}),
                                            ::testing::Values(0, 1, 2, 4, 8)));

// Head dims below 256 (other tile heights: 128 keys at Dh 16, 64 at Dh 32) through the cluster merge.
TEST(AttentionGpu, DecodeClusterMergeSmallHeadDims) {
  TG_REQUIRE_CUDA();
  for (int64_t dh : {16, 32, 64, 128}) {
    const DecodeCase c = make_decode_case(DType::BF16, 0, 8, 2, dh, {0, 1, 77, 300, 1000}, 1000, 950);
    for (int splits : {0, 3, 8}) {
      for (int hpb : {0, 1, 4}) {
        DecodeOptions o;
        o.num_splits = splits;
        o.heads_per_block = hpb;
        expect_matches_twin(c, run_decode(c, o), label(c, o) + " Dh " + std::to_string(dh));
      }
    }
  }
}

// Batch 64 (the TE tutorial's decode batch; 4 MHA heads instead of 16 and E4M3 with per-head scales beside BF16 to
// keep the twin's time reasonable), ragged lengths 0..512 in one batch: the planner's own choice.
TEST(AttentionGpu, DecodeBatch64MatchesCpuTwin) {
  TG_REQUIRE_CUDA();
  std::vector<int32_t> lens(64);
  for (int b = 0; b < 64; ++b) lens[static_cast<size_t>(b)] = (b * 37) % 513;  // 0, 37, ..., 512 among them
  lens[5] = 1;
  for (DType dtype : {DType::BF16, DType::E4M3}) {
    const DecodeCase mha = make_decode_case(dtype, dtype == DType::E4M3 ? 4 : 0, 4, 4, 256, lens, 512, 1000);
    const DecodeCase mqa = make_decode_case(dtype, dtype == DType::E4M3 ? 1 : 0, 8, 1, 256, lens, 512, 1100);
    for (const DecodeCase* c : {&mha, &mqa}) {
      const DecodeOptions o;
      const Tensor a = run_decode(*c, o);
      expect_matches_twin(*c, a, label(*c, o));
      EXPECT_TRUE(same_bits(a, run_decode(*c, o))) << "not deterministic: " << label(*c, o);
    }
  }
}

// The decode captured once in a CUDA graph (with programmatic dependent launch on, as the decoder's step) and
// replayed: every replay equals the eager call bit for bit, including after the lengths changed on the device
// between replays (a graph captured for max_seq serves any shorter context), and nothing depends on the workspace's
// previous contents (it is filled with 0xff bytes first: the cluster merge needs none, the combine kernel's partials
// are all written before they are read).
TEST(AttentionGpu, DecodeGraphReplayEqualsEager) {
  TG_REQUIRE_CUDA();
  cudaStream_t raw = nullptr;
  TG_CHECK_CUDA(cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking));
  const Stream stream{raw};
  const std::vector<int32_t> lens = {384, 0, 130, 1}, lens2 = {5, 384, 0, 257};
  for (DType dtype : {DType::BF16, DType::E4M3}) {
    const DecodeCase c = make_decode_case(dtype, dtype == DType::E4M3 ? 1 : 0, 8, 1, 256, lens, 384, 1200);
    const DecodeCase c2 = make_decode_case(dtype, dtype == DType::E4M3 ? 1 : 0, 8, 1, 256, lens2, 384, 1200);
    for (int variant = 0; variant < 3; ++variant) {
      DecodeOptions opt;  // 0: the planner's choice (in-cluster merge); 1: combine kernel; 2: more splits than a cluster
      if (variant == 1) opt.max_cluster = 1;
      if (variant == 2) opt.num_splits = 12, opt.max_cluster = 4;
      const std::size_t bytes = kernels::decode_attention_workspace_bytes(c.q_d, c.gpu.view(), opt);
      Tensor ws = Tensor::empty(DType::U8, {static_cast<int64_t>(std::max<std::size_t>(bytes, 256))}, Device::CUDA);
      TG_CHECK_CUDA(cudaMemsetAsync(ws.data(), 0xff, ws.nbytes(), raw));
      opt.workspace = kernels::Workspace{ws.data(), ws.nbytes()};
      Tensor lens_d = i32(lens, Device::CUDA);
      Tensor out = Tensor::zeros(DType::BF16, c.q_d.shape(), Device::CUDA);
      auto body = [&] {
        const kernels::ProgrammaticLaunchScope pdl(true);
        kernels::decode_attention(c.q_d, c.gpu.view(), lens_d, opt, out, stream);
      };
      body();
      TG_CHECK_CUDA(cudaStreamSynchronize(raw));
      const Tensor eager = out.to(Device::CPU);
      expect_matches_twin(c, eager, label(c, opt) + " eager");
      const testing::CapturedGraph graph(raw, cudaStreamCaptureModeGlobal, body);
      for (int replay = 0; replay < 3; ++replay) {
        TG_CHECK_CUDA(cudaMemsetAsync(out.data(), 0, out.nbytes(), raw));
        graph.launch(raw);
        TG_CHECK_CUDA(cudaStreamSynchronize(raw));
        EXPECT_TRUE(same_bits(out, eager)) << "graph replay " << replay << " != eager: " << label(c, opt);
      }
      // Other lengths in the same device buffer; the same cache contents and q (c2 was made from the same seed, so
      // only the poisoned rows differ: the rows below every length of both cases hold the same values).
      const Tensor host_lens2 = i32(lens2, Device::CPU);
      TG_CHECK_CUDA(cudaMemcpyAsync(lens_d.data(), host_lens2.data(), host_lens2.nbytes(), cudaMemcpyHostToDevice, raw));
      TG_CHECK_CUDA(cudaMemcpyAsync(c.gpu.k.data(), c2.gpu.k.data(), c2.gpu.k.nbytes(), cudaMemcpyDeviceToDevice, raw));
      TG_CHECK_CUDA(cudaMemcpyAsync(c.gpu.v.data(), c2.gpu.v.data(), c2.gpu.v.nbytes(), cudaMemcpyDeviceToDevice, raw));
      graph.launch(raw);
      TG_CHECK_CUDA(cudaStreamSynchronize(raw));
      expect_matches_twin(c2, out, label(c2, opt) + " replay with new lengths");
      // restore the first case's cache for the next variant
      TG_CHECK_CUDA(cudaMemcpy(c.gpu.k.data(), c.cpu.k.data(), c.cpu.k.nbytes(), cudaMemcpyHostToDevice));
      TG_CHECK_CUDA(cudaMemcpy(c.gpu.v.data(), c.cpu.v.data(), c.cpu.v.nbytes(), cudaMemcpyHostToDevice));
    }
  }
  TG_CHECK_CUDA(cudaStreamDestroy(raw));
}

// ---- decode's optional FP8 output (DecodeOptions::fp8_out) --------------------------------------------------------
// fp8_out == kernels::quantize(the BF16 output of the same call without it) bit for bit: codes, scale_inv, and amax
// max-reduced into an old value below and above the output's max, for gemma-2b-like (H 8, Hkv 1) and gemma-7b-like
// (H 16, Hkv 16) heads at head dim 256, BF16 and E4M3 caches, each way the output is written: one split, the
// in-cluster merge, the combine kernel (max_cluster 1; and 12 splits over clusters of at most 4). A scale that keeps
// most codes finite and one that saturates many (derived from the output's max); out empty (FP8 only) or given
// (then it equals the plain output).
TEST(AttentionGpu, DecodeFp8OutEqualsQuantizeOfOutput) {
  TG_REQUIRE_CUDA();
  const std::vector<int32_t> lens = {0, 1, 33, 200, 511};
  const int64_t B = static_cast<int64_t>(lens.size()), Dh = 256;
  struct Geo {
    int64_t H, Hkv;
  };
  struct Path {
    int splits, max_cluster;
  };
  for (const Geo& g : {Geo{8, 1}, Geo{16, 16}}) {
    // testing::fp8_output's per-tensor E4M3 [B, H * Dh] device bundle, data zeroed and scale_inv -1 (the call must
    // write it).
    const auto fp8_out = [&](float scale, float old_amax) {
      Fp8Tensor f = testing::fp8_output(DType::E4M3, B, g.H * Dh, true, false, scale, old_amax, Device::CUDA);
      zero_bytes(f.view().data);
      copy_bytes(f.view().scale_inv, testing::scalar_f32(-1.0f, Device::CPU));
      return f;
    };
    for (DType dtype : {DType::BF16, DType::E4M3}) {
      const DecodeCase c =
          make_decode_case(dtype, dtype == DType::E4M3 ? g.Hkv : 0, g.H, g.Hkv, Dh, lens, 512, 1300);
      for (const Path& path : {Path{1, 0}, Path{4, 0}, Path{4, 1}, Path{12, 4}}) {
        DecodeOptions o;
        o.num_splits = path.splits;
        o.max_cluster = path.max_cluster;
        const std::string base = label(c, o);
        const Tensor plain = run_decode(c, o);
        expect_matches_twin(c, plain, base);
        const Tensor plain_h = plain.to(Device::CPU);
        float out_max = 0.0f;
        for (int64_t i = 0; i < plain_h.numel(); ++i) {
          out_max = std::max(out_max, std::fabs(bf16_bits_to_float(plain_h.ptr<uint16_t>()[i])));
        }
        ASSERT_GT(out_max, 0.0f) << base;
        // Saturating: every |y| above a quarter of the output's max maps past E4M3's 448 (a fixed scale did not:
        // the H8 Hkv1 outputs stay below 0.1, so 1000 saturated nothing on the H200, session 9).
        const float saturating = 4.0f * 448.0f / out_max;
        for (float scale : {37.5f, saturating}) {
          for (float old_amax : {0.5f * out_max, 4.0f * out_max}) {
            const std::string what = base + " scale " + std::to_string(scale) + " old amax " + std::to_string(old_amax);
            const Fp8Tensor want = fp8_out(scale, old_amax);
            kernels::quantize(plain.view().reshape({B, g.H * Dh}), want.view());
            const testing::E4m3Codes codes = testing::count_e4m3_codes(want.view().data);
            ASSERT_GT(codes.nonzero, 0) << what;
            if (scale == saturating) {
              ASSERT_GT(codes.saturated, 0) << what << ": the saturating scale saturates nothing";
            }
            ASSERT_EQ(testing::read_scalar(want.view().amax), std::max(old_amax, out_max)) << what;
            for (bool with_out : {false, true}) {
              const Fp8Tensor got = fp8_out(scale, old_amax);
              DecodeOptions fo = o;
              fo.fp8_out = got.view();
              if (with_out) fo.fp8_out.data = fo.fp8_out.data.reshape({B, g.H, Dh});  // the [B, H, Dh] form
              Tensor out = Tensor::zeros(DType::BF16, c.q_d.shape(), Device::CUDA);
              kernels::decode_attention(c.q_d, c.gpu.view(), c.lens_d, fo, with_out ? out.view() : TensorView{});
              EXPECT_TRUE(testing::bits_equal(got.view().data, want.view().data))
                  << what << (with_out ? " with out" : " fp8 only");
              EXPECT_TRUE(testing::bits_equal(got.view().scale_inv, want.view().scale_inv)) << what;
              EXPECT_TRUE(testing::bits_equal(got.view().amax, want.view().amax)) << what;
              if (with_out) {
                EXPECT_TRUE(same_bits(out, plain)) << what << ": the BF16 out beside fp8_out";
              }
            }
          }
        }
      }
    }
  }
}

TEST(AttentionGpu, DecodeRejectsBadArguments) {
  TG_REQUIRE_CUDA();
  const Cache gpu = make_cache(2, 16, 2, 24, DType::BF16, 0, Device::CUDA);
  Tensor q = Tensor::zeros(DType::BF16, {2, 4, 24}, Device::CUDA),
         out = Tensor::zeros(DType::BF16, {2, 4, 24}, Device::CUDA);
  EXPECT_THROW(kernels::decode_attention(q, gpu.view(), i32({1, 1}, Device::CUDA), DecodeOptions{}, out), Error);
  const Cache ok = make_cache(2, 16, 2, 16, DType::BF16, 0, Device::CUDA);
  Tensor q16 = Tensor::zeros(DType::BF16, {2, 4, 16}, Device::CUDA),
         o16 = Tensor::zeros(DType::BF16, {2, 4, 16}, Device::CUDA);
  DecodeOptions bad;
  bad.max_seqlen_hint = 17;
  EXPECT_THROW(kernels::decode_attention(q16, ok.view(), i32({1, 1}, Device::CUDA), bad, o16), Error);
  EXPECT_THROW(kernels::decode_attention(q16, ok.view(), i32({1, 1}, Device::CPU), DecodeOptions{}, o16), Error);
  for (int mc : {-1, 17}) {  // max_cluster outside [0, 16]
    DecodeOptions wrong;
    wrong.max_cluster = mc;
    EXPECT_THROW(kernels::decode_attention(q16, ok.view(), i32({1, 1}, Device::CUDA), wrong, o16), Error) << mc;
  }
  for (int hpb : {3, 4, -1}) {  // not 0 / 1 / 2 / 4 / 8, or not dividing the group of H / Hkv = 2
    DecodeOptions wrong;
    wrong.heads_per_block = hpb;
    EXPECT_THROW(kernels::decode_attention(q16, ok.view(), i32({1, 1}, Device::CUDA), wrong, o16), Error) << hpb;
  }
  // fp8_out: valid (no BF16 out), then a host FP8 buffer, a wrong dtype, a wrong shape
  const Fp8Tensor f = testing::fp8_output(DType::E4M3, 2, 4 * 16, true, false, 1.0f, 0.0f, Device::CUDA);
  DecodeOptions fp8;
  fp8.fp8_out = f.view();
  EXPECT_NO_THROW(kernels::decode_attention(q16, ok.view(), i32({1, 1}, Device::CUDA), fp8, TensorView{}));
  const Tensor host_data = Tensor::zeros(DType::E4M3, {2, 4 * 16});
  const Tensor e5 = Tensor::zeros(DType::E5M2, {2, 4 * 16}, Device::CUDA);
  const Tensor wide = Tensor::zeros(DType::E4M3, {2, 4 * 16 + 1}, Device::CUDA);
  for (const Tensor* data : {&host_data, &e5, &wide}) {
    DecodeOptions wrong = fp8;
    wrong.fp8_out.data = *data;
    EXPECT_THROW(kernels::decode_attention(q16, ok.view(), i32({1, 1}, Device::CUDA), wrong, TensorView{}), Error)
        << data->dtype() << " " << data->shape() << " on " << data->device();
  }
}

}  // namespace
}  // namespace tg
