// kernels::release_library_state() (kernels/library_state.h): it frees the process-lifetime library state of the
// CUDA ops (cuBLASLt workspaces / handles / heuristic cache, cuDNN plans / handles, the attention scratch) that
// compute-sanitizer --leak-check full reported as leaked at exit, and the next calls create it again, with the
// same results bit for bit. Its own executable: device_bytes_in_use() is process-wide, and no other test's cached
// state may be in the way of the accounting.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>

#include "common/tensor.h"
#include "kernels/attention/attention.h"
#include "kernels/gemm/gemm.h"
#include "kernels/library_state.h"
#include "kernels/tests/attention_test_util.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg::kernels {
namespace {

using testing::same_bits;

// Operands and outputs of one BF16 GEMM and one packed cuDNN attention forward, all allocated up front so that
// the library state is the only thing the calls allocate.
struct Problem {
  Tensor a, b;              // GEMM [M, K], [N, K] BF16
  Tensor q, k, v, cu;       // attention: packed lengths {33, 70}, H 4, Hkv 2, Dh 64 (GQA)
  int64_t max_seqlen = 70;
  Problem() {
    a = testing::random_host(DType::BF16, {128, 256}, 1).to(Device::CUDA);
    b = testing::random_host(DType::BF16, {192, 256}, 2).to(Device::CUDA);
    q = testing::random_host(DType::BF16, {103, 4, 64}, 3).to(Device::CUDA);
    k = testing::random_host(DType::BF16, {103, 2, 64}, 4).to(Device::CUDA);
    v = testing::random_host(DType::BF16, {103, 2, 64}, 5).to(Device::CUDA);
    cu = testing::cu_seqlens_of({33, 70}).to(Device::CUDA);
  }
};
struct Results {
  Tensor gemm_out, attn_out, lse;
  Results()
      : gemm_out(Tensor::zeros(DType::BF16, {128, 192}, Device::CUDA)),
        attn_out(Tensor::zeros(DType::BF16, {103, 4, 64}, Device::CUDA)),
        lse(Tensor::zeros(DType::F32, {103, 4}, Device::CUDA)) {}
};

void run_gemm(const Problem& p, Results& r) { gemm(p.a, p.b, r.gemm_out); }
void run_attention(const Problem& p, Results& r) {
  AttentionOptions opt;
  opt.backend = AttentionBackend::kCudnn;  // the cuDNN handle and plan, and the cached scratch (no Workspace given)
  opt.causal = true;
  attention_fwd(p.q, p.k, p.v, p.cu, p.max_seqlen, opt, r.attn_out, r.lse);
}

TEST(LibraryStateGpu, ReleaseFreesTheCachesAndTheNextCallsRecreateThem) {
  TG_REQUIRE_CUDA();
  release_library_state();  // nothing made yet in this process: a no-op
  const Problem p;
  Results first, second, third;
  const std::size_t base = device_bytes_in_use();

  run_gemm(p, first);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::size_t after_gemm = device_bytes_in_use();
  EXPECT_GE(after_gemm, base + cuda::kWorkspaceBytes) << "the GEMM should have made its 32 MiB workspace";
  run_attention(p, first);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::size_t after_attention = device_bytes_in_use();
  EXPECT_GT(after_attention, after_gemm) << "the cuDNN forward should have made the attention scratch buffer";

  release_library_state();
  EXPECT_EQ(device_bytes_in_use(), base) << "release_library_state left " << device_bytes_in_use() - base
                                         << " bytes of library state (before it: " << after_attention - base << ")";
  release_library_state();  // again, with nothing to release
  EXPECT_EQ(device_bytes_in_use(), base);

  // Everything is created again, and gives the same bits.
  run_gemm(p, second);
  EXPECT_FALSE(cuda::gemm_last_algo().cache_hit) << "the heuristic cache should have been emptied";
  run_attention(p, second);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(device_bytes_in_use(), after_attention) << "the recreated state should be the same size as before";
  EXPECT_TRUE(same_bits(first.gemm_out, second.gemm_out)) << "GEMM after release";
  EXPECT_TRUE(same_bits(first.attn_out, second.attn_out)) << "cuDNN attention out after release";
  EXPECT_TRUE(same_bits(first.lse, second.lse)) << "cuDNN attention lse after release";

  // A second stream has its own GEMM workspace; release frees it too.
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  gemm(p.a, p.b, third.gemm_out, {}, Stream{stream});
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(device_bytes_in_use(), after_attention + cuda::kWorkspaceBytes);
  EXPECT_TRUE(same_bits(first.gemm_out, third.gemm_out)) << "GEMM on a second stream";
  release_library_state();
  EXPECT_EQ(device_bytes_in_use(), base);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

}  // namespace
}  // namespace tg::kernels
