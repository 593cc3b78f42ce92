// kernels/gemm's BF16 transpose_a / transpose_b (the backward's dgrad and wgrad layouts, no copies): the CPU
// twin with a transposed-stored operand equals the twin on an explicitly transposed copy bit for bit (both are
// the exact product rounded once), on odd shapes and strided views; FP8 GEMMs refuse the flags.
#include <gtest/gtest.h>

#include <cstring>

#include "common/numeric.h"
#include "kernels/gemm/gemm.h"
#include "kernels/tests/gemm_test_util.h"

namespace tg::kernels {
namespace {

using testing::random_matrix;

// A contiguous transposed copy of a 2-D BF16 view.
Tensor transpose_copy(const TensorView& t) {
  Tensor out = Tensor::empty(t.dtype, {t.shape[1], t.shape[0]});
  for (int64_t i = 0; i < t.shape[0]; ++i)
    for (int64_t j = 0; j < t.shape[1]; ++j)
      out.ptr<uint16_t>()[j * t.shape[0] + i] = t.ptr<uint16_t>()[i * t.strides[0] + j];
  return out;
}

TEST(GemmTransposeCpu, EqualsExplicitTransposes) {
  struct Case {
    int64_t m, n, k;
  };
  for (const Case c : {Case{1, 1, 1}, Case{3, 5, 7}, Case{17, 9, 33}, Case{64, 48, 129}}) {
    for (const bool ta : {false, true}) {
      for (const bool tb : {false, true}) {
        for (DType out_t : {DType::BF16, DType::F32}) {
          // Stored operands, as column slices of wider buffers (row stride > row length).
          const int64_t ar = ta ? c.k : c.m, ac = ta ? c.m : c.k, br = tb ? c.k : c.n, bc = tb ? c.n : c.k;
          Tensor a_wide = random_matrix(DType::BF16, ar, ac + 2, 10 + c.m + ta);
          Tensor b_wide = random_matrix(DType::BF16, br, bc + 3, 20 + c.n + tb);
          const TensorView a = a_wide.view().slice_cols(1, 1 + ac), b = b_wide.view().slice_cols(2, 2 + bc);
          const Tensor a_n = ta ? transpose_copy(a) : transpose_copy(transpose_copy(a));  // contiguous copies
          const Tensor b_n = tb ? transpose_copy(b) : transpose_copy(transpose_copy(b));
          const GemmOptions opt{.alpha = 0.5f, .beta = 1.0f, .transpose_a = ta, .transpose_b = tb};
          Tensor got = random_matrix(out_t, c.m, c.n, 30), want = Tensor::copy_of(got, Device::CPU);
          gemm(a, b, got, opt);
          gemm(a_n, b_n, want, GemmOptions{.alpha = 0.5f, .beta = 1.0f});
          ASSERT_EQ(std::memcmp(got.data(), want.data(), got.nbytes()), 0)
              << "[M, N, K] = [" << c.m << ", " << c.n << ", " << c.k << "] transpose_a " << ta << " transpose_b "
              << tb << " out " << out_t;
        }
      }
    }
  }
}

TEST(GemmTransposeCpu, ShapeErrorsNameTheLayout) {
  Tensor a = random_matrix(DType::BF16, 4, 6, 1), b = random_matrix(DType::BF16, 5, 6, 2);
  Tensor out = Tensor::empty(DType::F32, {6, 6});
  // transpose_a: A stored [K, M] = [4, 6] -> M = 6, K = 4; B [N, K] = [5, 6] has K = 6: mismatch.
  TG_EXPECT_THROW_MSG(gemm(a, b, out, GemmOptions{.transpose_a = true}), "[K, M] (transpose_a)");
  Fp8Tensor f = Fp8Tensor::per_tensor(DType::E4M3, 16, 16, true, false, Device::CPU);
  Tensor o16 = Tensor::empty(DType::F32, {16, 16});
  TG_EXPECT_THROW_MSG(gemm_fp8(f.view(), f.view(), o16, GemmOptions{.transpose_b = true}), "TN only");
}

}  // namespace
}  // namespace tg::kernels
