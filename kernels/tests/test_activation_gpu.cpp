// CUDA GeGLU vs its CPU twin, bit for bit (element-wise, the same IEEE operation sequence on both sides):
// forward / backward, BF16 / F32 / FP8 outputs with and without the transposed copy, awkward shapes
// (1 and 7 tokens, F not a multiple of 8, partial tiles, strided rows) and Gemma shapes, both tile heights of
// the direct kernel (16 rows at decode's few rows, 64 otherwise), and the table-driven BF16 kernels used at
// T * F >= 2^22 (every BF16 gate value, partial tiles, looping blocks).
#include <gtest/gtest.h>

#include "kernels/activation/activation.h"
#include "kernels/tests/elementwise_test_util.h"

namespace tg {
namespace {

struct Case {
  int64_t t, f;
};
const Case kCases[] = {{1, 16384}, {7, 24576}, {7, 37}, {65, 130}, {64, 128}, {3, 8}, {1, 1}, {130, 1000}};

TEST(ActivationGpu, ForwardAndBackwardBitExact) {
  TG_REQUIRE_CUDA();
  for (const Case c : kCases) {
    for (DType a : {DType::BF16, DType::F32}) {
      for (DType o : {DType::BF16, DType::F32}) {
        SCOPED_TRACE(::testing::Message() << "T=" << c.t << " F=" << c.f << " in=" << a << " out=" << o);
        Tensor fc1 = testing::random_host(a, {c.t, 2 * c.f}, 1, 2.5f);
        Tensor dout = testing::random_host(a, {c.t, c.f}, 2);
        Tensor out_c = Tensor::empty(o, {c.t, c.f}), amax_c = testing::scalar_f32(0.0f, Device::CPU);
        kernels::geglu_forward(fc1, out_c, amax_c);
        Tensor out_d = Tensor::empty(o, {c.t, c.f}, Device::CUDA), amax_d = testing::scalar_f32(0.0f, Device::CUDA);
        Tensor fc1_d = fc1.to(Device::CUDA), dout_d = dout.to(Device::CUDA);
        kernels::geglu_forward(fc1_d, out_d, amax_d);
        ASSERT_TRUE(testing::bits_equal(out_d, out_c));
        ASSERT_TRUE(testing::bits_equal(amax_d, amax_c));
        Tensor d_c = Tensor::empty(o, {c.t, 2 * c.f}), d_d = Tensor::empty(o, {c.t, 2 * c.f}, Device::CUDA);
        kernels::geglu_backward(dout, fc1, d_c);
        kernels::geglu_backward(dout_d, fc1_d, d_d);
        ASSERT_TRUE(testing::bits_equal(d_d, d_c));
      }
    }
  }
}

TEST(ActivationGpu, Fp8BitExact) {
  TG_REQUIRE_CUDA();
  for (const Case c : kCases) {
    for (DType fp8 : {DType::E4M3, DType::E5M2}) {
      for (int layout = 0; layout < 3; ++layout) {
        const bool rowwise = layout != 1, columnwise = layout != 0;
        SCOPED_TRACE(::testing::Message() << "T=" << c.t << " F=" << c.f << " " << fp8 << " rowwise=" << rowwise
                                          << " columnwise=" << columnwise);
        Tensor fc1 = testing::random_host(DType::BF16, {c.t, 2 * c.f}, 3, 2.5f);
        Tensor dout = testing::random_host(DType::BF16, {c.t, c.f}, 4);
        const float scale = fp8 == DType::E4M3 ? 80.0f : 4096.0f;
        Fp8Tensor f_c = testing::fp8_output(fp8, c.t, c.f, rowwise, columnwise, scale, 0.0f, Device::CPU);
        Fp8Tensor f_d = testing::fp8_output(fp8, c.t, c.f, rowwise, columnwise, scale, 0.0f, Device::CUDA);
        kernels::geglu_forward_fp8(fc1, f_c.view());
        kernels::geglu_forward_fp8(fc1.to(Device::CUDA), f_d.view());
        Fp8Tensor b_c = testing::fp8_output(fp8, c.t, 2 * c.f, rowwise, columnwise, scale, 0.0f, Device::CPU);
        Fp8Tensor b_d = testing::fp8_output(fp8, c.t, 2 * c.f, rowwise, columnwise, scale, 0.0f, Device::CUDA);
        kernels::geglu_backward_fp8(dout, fc1, b_c.view());
        kernels::geglu_backward_fp8(dout.to(Device::CUDA), fc1.to(Device::CUDA), b_d.view());
        for (const auto* pair : {&f_c, &b_c}) {
          const Fp8Tensor& want = *pair;
          const Fp8Tensor& got = pair == &f_c ? f_d : b_d;
          if (rowwise) {
            ASSERT_TRUE(testing::bits_equal(got.view().data, want.view().data));
          }
          if (columnwise) {
            ASSERT_TRUE(testing::bits_equal(got.view().columnwise_data, want.view().columnwise_data));
          }
          ASSERT_TRUE(testing::bits_equal(got.view().amax, want.view().amax));
          ASSERT_TRUE(testing::bits_equal(rowwise ? got.view().scale_inv : got.view().columnwise_scale_inv,
                                          rowwise ? want.view().scale_inv : want.view().columnwise_scale_inv));
        }
      }
    }
  }
}

TEST(ActivationGpu, StridedRows) {
  TG_REQUIRE_CUDA();
  const int64_t t_count = 9, f = 256;
  for (const int64_t pad : {int64_t{8}, int64_t{3}}) {  // keeps / breaks the vector path
    Tensor fc1 = testing::random_host(DType::BF16, {t_count, 2 * f}, 5);
    Tensor out_c = Tensor::empty(DType::BF16, {t_count, f});
    kernels::geglu_forward(fc1, out_c);
    testing::Strided in = testing::strided_copy(fc1, 2 * f + pad, Device::CUDA);
    testing::Strided out = testing::strided_copy(Tensor::zeros(DType::BF16, {t_count, f}), f + pad, Device::CUDA);
    kernels::geglu_forward(in.view, out.view);
    EXPECT_TRUE(testing::bits_equal(out.view, out_c)) << "pad " << pad;
  }
}

TEST(ActivationGpu, GemmaTrainingShapeSpotCheck) {
  TG_REQUIRE_CUDA();
  // Gemma-2B MLP at 1024 tokens (the full 8192 x 16384 CPU twin is slow); T * F >= 2^22, so this is the
  // table-driven kernel (TablePath* below cover its edges).
  const int64_t t_count = 1024, f = 16384;
  Tensor fc1 = testing::random_host(DType::BF16, {t_count, 2 * f}, 6, 2.0f);
  Fp8Tensor q_c = testing::fp8_output(DType::E4M3, t_count, f, true, true, 100.0f, 0.0f, Device::CPU);
  Fp8Tensor q_d = testing::fp8_output(DType::E4M3, t_count, f, true, true, 100.0f, 0.0f, Device::CUDA);
  kernels::geglu_forward_fp8(fc1, q_c.view());
  kernels::geglu_forward_fp8(fc1.to(Device::CUDA), q_d.view());
  EXPECT_TRUE(testing::bits_equal(q_d.view().data, q_c.view().data));
  EXPECT_TRUE(testing::bits_equal(q_d.view().columnwise_data, q_c.view().columnwise_data));
  EXPECT_TRUE(testing::bits_equal(q_d.view().amax, q_c.view().amax));
}

// Decode row counts: the direct kernel with 16-row tiles (T <= 64, or fewer than 2 blocks per SM with 64-row
// tiles; on the H200 T = 65 at F = 24576 is 384 such blocks, so it takes 64-row tiles and the boundary is covered
// both ways). The Gemma widths (2B: 16384, 7B: 24576) and an odd one (1000 = 7 x 128 + 104: a partial column
// tile), forward to E4M3 (row-wise as in decode, and with the transposed copy) and to BF16, each with its amax
// max-reduced into an old value below the data's.
TEST(ActivationGpu, DecodeRowCountsBitExact) {
  TG_REQUIRE_CUDA();
  for (const int64_t f : {int64_t{16384}, int64_t{24576}, int64_t{1000}}) {
    for (const int64_t t : {1, 2, 3, 17, 63, 64, 65}) {
      SCOPED_TRACE(::testing::Message() << "T=" << t << " F=" << f);
      Tensor fc1 = testing::random_host(DType::BF16, {t, 2 * f}, 21, 2.5f);
      Tensor fc1_d = fc1.to(Device::CUDA);
      Tensor out_c = Tensor::empty(DType::BF16, {t, f}), out_d = Tensor::empty(DType::BF16, {t, f}, Device::CUDA);
      Tensor amax_c = testing::scalar_f32(0.5f, Device::CPU), amax_d = testing::scalar_f32(0.5f, Device::CUDA);
      kernels::geglu_forward(fc1, out_c, amax_c);
      kernels::geglu_forward(fc1_d, out_d, amax_d);
      ASSERT_TRUE(testing::bits_equal(out_d, out_c));
      ASSERT_TRUE(testing::bits_equal(amax_d, amax_c));
      for (const bool columnwise : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "e4m3 columnwise=" << columnwise);
        Fp8Tensor q_c = testing::fp8_output(DType::E4M3, t, f, true, columnwise, 100.0f, 0.25f, Device::CPU);
        Fp8Tensor q_d = testing::fp8_output(DType::E4M3, t, f, true, columnwise, 100.0f, 0.25f, Device::CUDA);
        kernels::geglu_forward_fp8(fc1, q_c.view());
        kernels::geglu_forward_fp8(fc1_d, q_d.view());
        ASSERT_TRUE(testing::bits_equal(q_d.view().data, q_c.view().data));
        if (columnwise) {
          ASSERT_TRUE(testing::bits_equal(q_d.view().columnwise_data, q_c.view().columnwise_data));
        }
        ASSERT_TRUE(testing::bits_equal(q_d.view().amax, q_c.view().amax));
        ASSERT_TRUE(testing::bits_equal(q_d.view().scale_inv, q_c.view().scale_inv));
      }
    }
  }
}

// geglu_backward_fp8 (dout, fc1 -> q) when backward, else geglu_forward_fp8 (fc1 -> q), on fc1's backend.
void geglu_fp8(bool backward, const Tensor& dout, const Tensor& fc1, const Fp8View& q) {
  if (backward) {
    kernels::geglu_backward_fp8(dout, fc1, q);
  } else {
    kernels::geglu_forward_fp8(fc1, q);
  }
}

// Every output of one fc1 [T, 2F] (and dout [T, F]) on both backends, bit for bit: BF16 forward with amax, BF16
// backward, and FP8 forward (E4M3) / backward (E5M2) with the transposed copy, amax and scale_inv.
void expect_every_output_bit_exact(const Tensor& fc1, const Tensor& dout) {
  const int64_t t = fc1.shape()[0], f = fc1.shape()[1] / 2;
  const Tensor fc1_d = fc1.to(Device::CUDA), dout_d = dout.to(Device::CUDA);
  Tensor out_c = Tensor::empty(DType::BF16, {t, f}), out_d = Tensor::empty(DType::BF16, {t, f}, Device::CUDA);
  Tensor amax_c = testing::scalar_f32(0.5f, Device::CPU), amax_d = testing::scalar_f32(0.5f, Device::CUDA);
  kernels::geglu_forward(fc1, out_c, amax_c);
  kernels::geglu_forward(fc1_d, out_d, amax_d);
  ASSERT_TRUE(testing::bits_equal(out_d, out_c));
  ASSERT_TRUE(testing::bits_equal(amax_d, amax_c));
  Tensor d_c = Tensor::empty(DType::BF16, {t, 2 * f}), d_d = Tensor::empty(DType::BF16, {t, 2 * f}, Device::CUDA);
  kernels::geglu_backward(dout, fc1, d_c);
  kernels::geglu_backward(dout_d, fc1_d, d_d);
  ASSERT_TRUE(testing::bits_equal(d_d, d_c));
  for (const bool backward : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "fp8 backward=" << backward);
    const int64_t cols = backward ? 2 * f : f;
    const DType fp8 = backward ? DType::E5M2 : DType::E4M3;
    const float scale = backward ? 4096.0f : 100.0f;
    Fp8Tensor q_c = testing::fp8_output(fp8, t, cols, true, true, scale, 0.25f, Device::CPU);
    Fp8Tensor q_d = testing::fp8_output(fp8, t, cols, true, true, scale, 0.25f, Device::CUDA);
    geglu_fp8(backward, dout, fc1, q_c.view());
    geglu_fp8(backward, dout_d, fc1_d, q_d.view());
    ASSERT_TRUE(testing::bits_equal(q_d.view().data, q_c.view().data));
    ASSERT_TRUE(testing::bits_equal(q_d.view().columnwise_data, q_c.view().columnwise_data));
    ASSERT_TRUE(testing::bits_equal(q_d.view().amax, q_c.view().amax));
    ASSERT_TRUE(testing::bits_equal(q_d.view().scale_inv, q_c.view().scale_inv));
  }
}

// The direct kernel with 64-row tiles (more than 64 rows and at least 2 blocks per SM, below the table path's
// T * F >= 2^22 or with an F32 fc1, which never takes it; 408 and 275 such blocks here against 264 on the H200):
// partial tiles in both directions (1030 = 16 x 64 + 6 rows, 3000 = 23 x 128 + 56 columns; 300 = 4 x 64 + 44,
// 7000 = 54 x 128 + 88), forward and backward, BF16 and FP8 outputs with the transposed copy.
TEST(ActivationGpu, DirectKernel64RowTilesBitExact) {
  TG_REQUIRE_CUDA();
  struct Shape2 {
    int64_t t, f;
    DType in;
  };
  for (const Shape2 c : {Shape2{1030, 3000, DType::BF16}, Shape2{300, 7000, DType::F32}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << c.t << " F=" << c.f << " in=" << c.in);
    ASSERT_NO_FATAL_FAILURE(expect_every_output_bit_exact(testing::random_host(c.in, {c.t, 2 * c.f}, 22, 2.5f),
                                                          testing::random_host(c.in, {c.t, c.f}, 23)));
  }
}

// BF16 fc1 with T * F >= 2^22 and vectorisable rows runs geglu_lut_kernel: a per-block table of
// round_BF16(gelu(g)) (and the backward's FP32 gelu'(g)) for |g| in [2^-16, 2^4), direct computation
// outside it. Every BF16 gate pattern (all 65536, 64 times: zeros, denormals, tiny, huge, +inf, both
// signs) except the NaN-producing ones (see below) against the CPU twin, forward and backward, for every
// output type and FP8 layout.
TEST(ActivationGpu, TablePathEveryBf16Gate) {
  TG_REQUIRE_CUDA();
  const int64_t t_count = 256, f = 16384;  // T * F = 2^22: the smallest size that takes the table
  Tensor fc1 = testing::random_host(DType::BF16, {t_count, 2 * f}, 11, 2.0f);
  Tensor dout = testing::random_host(DType::BF16, {t_count, f}, 13);
  for (const bool backward : {false, true}) {
    auto* raw = fc1.ptr<uint16_t>();
    for (int64_t t = 0; t < t_count; ++t) {
      for (int64_t j = 0; j < f; ++j) {
        auto bits = static_cast<uint16_t>((t * f + j) * 40503 & 0xFFFF);  // odd multiplier: a permutation
        // Gates whose result is NaN become finite: an F32 NaN's payload is not part of the contract (x86
        // keeps an operand's or makes a negative default NaN, CUDA returns the canonical NaN), so they would
        // differ for that reason alone. Forward: NaN and -inf gates. Backward: also |g| >= 2^64 (g * g
        // overflows and gelu' is 0 * inf).
        if ((bits & 0x7F80u) == 0x7F80u && (bits & 0x7Fu) != 0) bits ^= 0x0080u;
        if (bits == 0xFF80u) bits = 0xFF7Fu;
        if (backward && (bits & 0x7F80u) > (190u << 7)) bits = static_cast<uint16_t>((bits & 0x807Fu) | (190u << 7));
        raw[t * 2 * f + j] = bits;
        if (raw[t * 2 * f + f + j] == 0) raw[t * 2 * f + f + j] = 0x3F80u;  // up != 0: inf * 0 would be NaN
      }
    }
    Tensor fc1_d = fc1.to(Device::CUDA), dout_d = dout.to(Device::CUDA);
    const int64_t cols = backward ? 2 * f : f;
    for (DType o : {DType::BF16, DType::F32}) {
      SCOPED_TRACE(::testing::Message() << "backward=" << backward << " out=" << o);
      Tensor out_c = Tensor::empty(o, {t_count, cols}), out_d = Tensor::empty(o, {t_count, cols}, Device::CUDA);
      if (backward) {
        kernels::geglu_backward(dout, fc1, out_c);
        kernels::geglu_backward(dout_d, fc1_d, out_d);
      } else {
        Tensor amax_c = testing::scalar_f32(0.0f, Device::CPU), amax_d = testing::scalar_f32(0.0f, Device::CUDA);
        kernels::geglu_forward(fc1, out_c, amax_c);
        kernels::geglu_forward(fc1_d, out_d, amax_d);
        ASSERT_TRUE(testing::bits_equal(amax_d, amax_c));
      }
      ASSERT_TRUE(testing::bits_equal(out_d, out_c));
    }
    for (DType fp8 : {DType::E4M3, DType::E5M2}) {
      for (int layout = 0; layout < 3; ++layout) {
        const bool rowwise = layout != 1, columnwise = layout != 0;
        SCOPED_TRACE(::testing::Message() << "backward=" << backward << " " << fp8 << " rowwise=" << rowwise
                                          << " columnwise=" << columnwise);
        const float scale = fp8 == DType::E4M3 ? 50.0f : 2000.0f;  // some values saturate
        Fp8Tensor q_c = testing::fp8_output(fp8, t_count, cols, rowwise, columnwise, scale, 0.0f, Device::CPU);
        Fp8Tensor q_d = testing::fp8_output(fp8, t_count, cols, rowwise, columnwise, scale, 0.0f, Device::CUDA);
        geglu_fp8(backward, dout, fc1, q_c.view());
        geglu_fp8(backward, dout_d, fc1_d, q_d.view());
        if (rowwise) {
          ASSERT_TRUE(testing::bits_equal(q_d.view().data, q_c.view().data));
        }
        if (columnwise) {
          ASSERT_TRUE(testing::bits_equal(q_d.view().columnwise_data, q_c.view().columnwise_data));
        }
        ASSERT_TRUE(testing::bits_equal(q_d.view().amax, q_c.view().amax));
      }
    }
  }
}

// The table path on finite random data (a meaningful amax) at partial tiles in both directions
// (300 = 4 x 64 + 44 rows, 14000 = 109 x 128 + 48 columns), the Gemma-7B width, and more tiles than
// the persistent grid holds at once (so blocks loop), forward and backward.
TEST(ActivationGpu, TablePathShapes) {
  TG_REQUIRE_CUDA();
  const Case cases[] = {{300, 14000}, {171, 24576}, {2048, 16384}};
  for (const Case c : cases) {
    SCOPED_TRACE(::testing::Message() << "T=" << c.t << " F=" << c.f);
    ASSERT_NO_FATAL_FAILURE(expect_every_output_bit_exact(testing::random_host(DType::BF16, {c.t, 2 * c.f}, 12, 2.5f),
                                                          testing::random_host(DType::BF16, {c.t, c.f}, 14)));
  }
}

}  // namespace
}  // namespace tg
