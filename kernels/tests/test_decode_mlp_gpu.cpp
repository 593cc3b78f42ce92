// kernels::decode_mlp (kernels/gemm/decode_mlp.h): the persistent B1 MLP against the unfused CUDA kernels it
// replaces (bit for bit) and the CPU twin.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "common/cuda_check.h"
#include "kernels/activation/activation.h"
#include "kernels/gemm/decode_mlp.h"
#include "kernels/gemm/gemv.h"
#include "kernels/launch/programmatic_launch.h"
#include "kernels/norm/norm.h"
#include "kernels/tests/gemm_test_util.h"
#include "kernels/tests/gpu_test_util.h"
#include "kernels/tuning_scope.h"

namespace tg::kernels {
namespace {

using testing::random_matrix;
using testing::same_bits;
using testing::scalar_f32;
using KSplitScope = cuda::tuning::Scoped<cuda::tuning::set_gemv_k_split, 0>;
using MmaScope = cuda::tuning::Scoped<cuda::tuning::set_gemv_mma, cuda::tuning::GemvMma::kRule>;

// decode_mlp == the unfused CUDA kernels it replaces (rmsnorm_forward_fp8 -> gemv -> geglu_forward_fp8 -> gemv with h
// as the residual) bit for bit, in h and in the act codes / scale_inv; twice in a row (the grid barrier's state
// carries over) and as a CUDA graph replayed under PDL; and the act codes against the CPU twin's chain (which sums
// in double: a code may sit one E4M3 step away where its BF16 input was at a rounding boundary; at most 1% of them).
struct MlpCase {
  int64_t d, f;
};
struct MlpRun {
  Tensor h, act, act_scale_inv;
};
MlpRun run_mlp(const MlpCase& c, const Tensor& h0, const Tensor& nw, const Tensor& w1, const Tensor& w2,
               const Tensor& w_si, float ln_scale, float act_scale, Device device, bool persistent, int calls = 1,
               bool graph = false) {
  const Tensor nwg = nw.to(device), w1g = w1.to(device), w2g = w2.to(device), wsi = w_si.to(device);
  const Tensor ls = scalar_f32(ln_scale, device), as = scalar_f32(act_scale, device);
  Tensor h = h0.to(device);
  Fp8Tensor act = Fp8Tensor::per_tensor(DType::E4M3, 1, c.f, true, false, device);
  Fp8View av = act.view();
  av.scale = as.view();
  av.amax = TensorView{};
  const Tensor barrier = Tensor::zeros(DType::I32, {2}, device);
  const TensorView nw1 = nwg.view().reshape({c.d});
  const GemvOperand fc1{w1g.view(), wsi.view()}, fc2{w2g.view(), wsi.view()};
  cudaStream_t raw = nullptr;
  if (device == Device::CUDA) {
    TG_CHECK_CUDA(cudaDeviceSynchronize());  // the copies and zero fills above
    TG_CHECK_CUDA(cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking));
  }
  const Stream stream{raw};
  auto body = [&] {
    const ProgrammaticLaunchScope pdl(device == Device::CUDA);
    if (persistent) {
      DecodeMlpArgs a;
      a.h = h.view();
      a.norm_weight = nw1;
      a.eps = 1e-6f;
      a.ln_scale = ls.view();
      a.fc1 = fc1;
      a.act = av;
      a.fc2 = fc2;
      a.barrier = barrier.view();
      decode_mlp(a, stream);
      return;
    }
    Fp8Tensor xq = Fp8Tensor::per_tensor(DType::E4M3, 1, c.d, true, false, device);
    Fp8View xv = xq.view();
    xv.scale = ls.view();
    xv.amax = TensorView{};
    const Tensor rstd = Tensor::empty(DType::F32, {1}, device);
    const Tensor y = Tensor::empty(DType::BF16, {1, 2 * c.f}, device);
    rmsnorm_forward_fp8(h.view(), nw1, 1e-6f, xv, rstd.view(), TensorView{}, stream);
    gemv(GemvOperand{xv.data, xv.scale_inv}, fc1, y.view(), {}, TensorView{}, stream);
    geglu_forward_fp8(y.view(), av, stream);
    gemv(GemvOperand{av.data, av.scale_inv}, fc2, h.view(), {}, h.view(), stream);
    if (device == Device::CUDA) TG_CHECK_CUDA(cudaStreamSynchronize(raw));  // xq, rstd, y live until here
  };
  if (graph) {
    cudaGraph_t g = nullptr;
    TG_CHECK_CUDA(cudaStreamBeginCapture(raw, cudaStreamCaptureModeGlobal));
    body();
    TG_CHECK_CUDA(cudaStreamEndCapture(raw, &g));
    cudaGraphExec_t exec = nullptr;
    TG_CHECK_CUDA(cudaGraphInstantiate(&exec, g, 0));
    for (int i = 0; i < calls; ++i) TG_CHECK_CUDA(cudaGraphLaunch(exec, raw));
    TG_CHECK_CUDA(cudaStreamSynchronize(raw));
    TG_CHECK_CUDA(cudaGraphExecDestroy(exec));
    TG_CHECK_CUDA(cudaGraphDestroy(g));
  } else {
    for (int i = 0; i < calls; ++i) body();
  }
  if (device == Device::CUDA) {
    TG_CHECK_CUDA(cudaStreamSynchronize(raw));
    TG_CHECK_CUDA(cudaStreamDestroy(raw));
    const Tensor b = barrier.to(Device::CPU);
    EXPECT_EQ(b.ptr<int32_t>()[0], 0) << "the barrier's arrival count is left at zero";
  }
  return {h.to(Device::CPU), Tensor::copy_of(av.data, Device::CPU), Tensor::copy_of(av.scale_inv, Device::CPU)};
}

void check_mlp(const MlpCase& c, uint64_t seed) {
  SCOPED_TRACE("decode_mlp D " + std::to_string(c.d) + " F " + std::to_string(c.f));
  const Tensor h0 = random_matrix(DType::BF16, 1, c.d, seed, 2.0f);
  const Tensor nw = random_matrix(DType::BF16, 1, c.d, seed + 1, 0.3f);
  const Tensor w1 = random_matrix(DType::E4M3, 2 * c.f, c.d, seed + 2);
  const Tensor w2 = random_matrix(DType::E4M3, c.d, c.f, seed + 3);
  const Tensor w_si = scalar_f32(0.021f, Device::CPU);
  // Scales that put the codes across E4M3's range (the norm output is ~N(0, 1)).
  const float ln_scale = 37.0f, act_scale = 13.0f;
  const MlpRun want = run_mlp(c, h0, nw, w1, w2, w_si, ln_scale, act_scale, Device::CUDA, false);
  const MlpRun got = run_mlp(c, h0, nw, w1, w2, w_si, ln_scale, act_scale, Device::CUDA, true);
  EXPECT_TRUE(same_bits(got.h, want.h)) << "h != the unfused CUDA kernels, bit for bit";
  EXPECT_TRUE(same_bits(got.act, want.act)) << "act codes != the unfused CUDA kernels, bit for bit";
  EXPECT_TRUE(same_bits(got.act_scale_inv, want.act_scale_inv)) << "act.scale_inv != 1 / scale";
  // Two calls in a row (h updated twice) and a graph replayed twice: the unfused chain run twice.
  const MlpRun want2 = run_mlp(c, h0, nw, w1, w2, w_si, ln_scale, act_scale, Device::CUDA, false, 2);
  const MlpRun twice = run_mlp(c, h0, nw, w1, w2, w_si, ln_scale, act_scale, Device::CUDA, true, 2);
  const MlpRun graph = run_mlp(c, h0, nw, w1, w2, w_si, ln_scale, act_scale, Device::CUDA, true, 2, true);
  EXPECT_TRUE(same_bits(twice.h, want2.h)) << "two calls in a row";
  EXPECT_TRUE(same_bits(graph.h, want2.h)) << "a graph replayed twice";
  // The CPU twin.
  const MlpRun cpu = run_mlp(c, h0, nw, w1, w2, w_si, ln_scale, act_scale, Device::CPU, true);
  int64_t off = 0, far = 0;
  for (int64_t i = 0; i < c.f; ++i) {
    const int a = got.act.ptr<uint8_t>()[i], b = cpu.act.ptr<uint8_t>()[i];
    if (a != b) ++off;
    if (a != b && ((a ^ b) & 0x80 || std::abs(a - b) > 1)) ++far;  // codes of one sign are ordered
  }
  EXPECT_EQ(far, 0) << far << " of " << c.f << " act codes more than one E4M3 step from the CPU twin";
  EXPECT_LE(off, c.f / 100 + 1) << off << " of " << c.f << " act codes differ from the CPU twin";
}

TEST(DecodeMlpGpu, EqualsTheUnfusedKernelsBitForBit) {
  TG_REQUIRE_CUDA();
  const MmaScope loop(cuda::tuning::GemvMma::kNever);  // the unfused M = 1 GEMVs' path, whatever the environment
  uint64_t seed = 2100;
  check_mlp({64, 48}, seed += 5);       // F rows past one per warp of a small grid; K tails in both GEMVs
  check_mlp({2048, 16384}, seed += 5);  // gemma-2b
  check_mlp({3072, 24576}, seed += 5);  // gemma-7b (fc2 K split 2, as the unfused GEMV)
  for (int v : {1, 4}) {                // fc2's split forced: the persistent kernel follows gemv's rule
    const KSplitScope scope(v);
    check_mlp({2048, 16384}, seed += 5);
  }
}

TEST(DecodeMlpGpu, BadArgumentsAreRejected) {
  TG_REQUIRE_CUDA();
  const Tensor h = Tensor::zeros(DType::BF16, {2, 64}, Device::CUDA);
  DecodeMlpArgs a;
  a.h = h.view();
  TG_EXPECT_THROW_MSG(decode_mlp(a), "h must be a contiguous BF16 [1, D]");
}

}  // namespace
}  // namespace tg::kernels
