// CUDA Gemma RMSNorm vs its CPU twin, bit for bit: the row reductions use the contract's LANE ORDER and
// the dw reduction its fixed two-level order (kernels/norm/norm.h), so every output - y, rstd, the updated
// residual, FP8 data, the transposed copy, scale_inv, amax, dx, dw - must be identical.
// Shapes: 1 and 7 tokens, D not a multiple of 8 (element path), D beyond the register cache (re-read
// path), strided rows, partial 32-row tiles, the Gemma-2B/7B hidden sizes, and more rows than the
// persistent forward grid holds at once. Forward kernels by shape: up to one row per SM without a residual or a
// transposed copy (1 .. 70 rows here) take the one-row-per-block kernel (rmsnorm_spread_row), 256 / 1000 rows and
// the residual / transposed variants the warp-per-row kernels, 13001 rows the persistent cp.async ones.
#include <gtest/gtest.h>

#include "kernels/norm/norm.h"
#include "kernels/tests/elementwise_test_util.h"
#include "kernels/tuning_scope.h"

namespace tg {
namespace {

struct Shape2 {
  int64_t t, d;
};
const Shape2 kShapes[] = {{1, 2048}, {7, 3072}, {7, 37},    {33, 256},  {70, 3072},  {5, 4608},   {64, 2048},
                          {3, 8},    {1, 1},    {40, 2304}, {19, 3584}, {256, 3072}, {1000, 3072}};

// rmsnorm_forward on the CPU twin and on CUDA from the same host inputs (the amax starting at amax0, the residual
// stream updated in place when with_res): y, rstd, amax and the residual equal bit for bit.
void expect_forward_matches_twin(const Tensor& x, const Tensor& w, const Tensor& res, bool with_res, float amax0) {
  const DType a = x.dtype();
  const int64_t t = x.shape()[0], d = x.shape()[1];
  Tensor y_c = Tensor::empty(a, {t, d}), r_c = Tensor::empty(DType::F32, {t});
  Tensor res_c = Tensor::copy_of(res, Device::CPU), amax_c = testing::scalar_f32(amax0, Device::CPU);
  kernels::rmsnorm_forward(x, w, 1e-6f, y_c, r_c, with_res ? res_c.view() : TensorView{}, amax_c);
  Tensor xd = x.to(Device::CUDA), wd = w.to(Device::CUDA), res_d = res.to(Device::CUDA);
  Tensor y_d = Tensor::empty(a, {t, d}, Device::CUDA), r_d = Tensor::empty(DType::F32, {t}, Device::CUDA);
  Tensor amax_d = testing::scalar_f32(amax0, Device::CUDA);
  kernels::rmsnorm_forward(xd, wd, 1e-6f, y_d, r_d, with_res ? res_d.view() : TensorView{}, amax_d);
  ASSERT_TRUE(testing::bits_equal(y_d, y_c));
  ASSERT_TRUE(testing::bits_equal(r_d, r_c));
  ASSERT_TRUE(testing::bits_equal(amax_d, amax_c));
  if (with_res) {
    ASSERT_TRUE(testing::bits_equal(res_d, res_c));
  }
}

TEST(NormGpu, ForwardBitExactAllShapesAndDtypes) {
  TG_REQUIRE_CUDA();
  for (const Shape2 s : kShapes) {
    for (DType a : {DType::BF16, DType::F32}) {
      for (DType wt : {DType::BF16, DType::F32}) {
        for (const bool with_res : {false, true}) {
          SCOPED_TRACE(::testing::Message()
                       << "T=" << s.t << " D=" << s.d << " x=" << a << " w=" << wt << " residual=" << with_res);
          Tensor x = testing::random_host(a, {s.t, s.d}, 1, 1.7f);
          Tensor w = testing::random_host(wt, {s.d}, 2, 0.5f);
          Tensor res = testing::random_host(a, {s.t, s.d}, 3, 3.0f);
          ASSERT_NO_FATAL_FAILURE(expect_forward_matches_twin(x, w, res, with_res, 0.25f));
        }
      }
    }
  }
}

TEST(NormGpu, ForwardStridedRows) {
  TG_REQUIRE_CUDA();
  // Row strides that keep (ld % 8 == 0) and break (ld odd) the vector path.
  for (const int64_t ld : {int64_t{3080}, int64_t{3077}}) {
    const int64_t t_count = 9, d = 3072;
    Tensor x = testing::random_host(DType::BF16, {t_count, d}, 5);
    Tensor w = testing::random_host(DType::BF16, {d}, 6, 0.5f);
    Tensor y_c = Tensor::empty(DType::BF16, {t_count, d}), r_c = Tensor::empty(DType::F32, {t_count});
    kernels::rmsnorm_forward(x, w, 1e-6f, y_c, r_c);
    testing::Strided xs = testing::strided_copy(x, ld, Device::CUDA);
    testing::Strided ys = testing::strided_copy(Tensor::zeros(DType::BF16, {t_count, d}), ld, Device::CUDA);
    Tensor wd = w.to(Device::CUDA), r_d = Tensor::empty(DType::F32, {t_count}, Device::CUDA);
    kernels::rmsnorm_forward(xs.view, wd, 1e-6f, ys.view, r_d);
    EXPECT_TRUE(testing::bits_equal(ys.view, y_c)) << "ld=" << ld;
    EXPECT_TRUE(testing::bits_equal(r_d, r_c)) << "ld=" << ld;
  }
}

TEST(NormGpu, Fp8ForwardBitExact) {
  TG_REQUIRE_CUDA();
  for (const Shape2 s : kShapes) {
    for (DType fp8 : {DType::E4M3, DType::E5M2}) {
      for (int layout = 0; layout < 3; ++layout) {  // rowwise, columnwise, both
        const bool rowwise = layout != 1, columnwise = layout != 0;
        for (const bool with_res : {false, true}) {
          SCOPED_TRACE(::testing::Message() << "T=" << s.t << " D=" << s.d << " " << fp8 << " rowwise=" << rowwise
                                            << " columnwise=" << columnwise << " residual=" << with_res);
          Tensor x = testing::random_host(DType::BF16, {s.t, s.d}, 7, 2.0f);
          Tensor w = testing::random_host(DType::BF16, {s.d}, 8, 0.5f);
          Tensor res = testing::random_host(DType::BF16, {s.t, s.d}, 9);
          const float scale = fp8 == DType::E4M3 ? 96.0f : 3000.0f;  // some values saturate
          Fp8Tensor q_c = testing::fp8_output(fp8, s.t, s.d, rowwise, columnwise, scale, 0.125f, Device::CPU);
          Fp8Tensor q_d = testing::fp8_output(fp8, s.t, s.d, rowwise, columnwise, scale, 0.125f, Device::CUDA);
          Tensor r_c = Tensor::empty(DType::F32, {s.t}), r_d = Tensor::empty(DType::F32, {s.t}, Device::CUDA);
          Tensor res_c = Tensor::copy_of(res, Device::CPU), res_d = res.to(Device::CUDA);
          kernels::rmsnorm_forward_fp8(x, w, 1e-6f, q_c.view(), r_c, with_res ? res_c.view() : TensorView{});
          kernels::rmsnorm_forward_fp8(x.to(Device::CUDA), w.to(Device::CUDA), 1e-6f, q_d.view(), r_d,
                                       with_res ? res_d.view() : TensorView{});
          if (rowwise) {
            ASSERT_TRUE(testing::bits_equal(q_d.view().data, q_c.view().data));
          }
          if (columnwise) {
            ASSERT_TRUE(testing::bits_equal(q_d.view().columnwise_data, q_c.view().columnwise_data));
          }
          // A column-wise-only bundle has only columnwise_scale_inv.
          ASSERT_TRUE(testing::bits_equal(rowwise ? q_d.view().scale_inv : q_d.view().columnwise_scale_inv,
                                          rowwise ? q_c.view().scale_inv : q_c.view().columnwise_scale_inv));
          ASSERT_TRUE(testing::bits_equal(q_d.view().amax, q_c.view().amax));
          ASSERT_TRUE(testing::bits_equal(r_d, r_c));
          if (with_res) {
            ASSERT_TRUE(testing::bits_equal(res_d, res_c));
          }
        }
      }
    }
  }
}

// The forward's grid is persistent (as many blocks as are resident on the device, each looping over row
// groups, g = 1 + w staged once in shared memory). T = 13001 is more rows than an H200 holds at once in
// every variant (BF16: at most 4 blocks x 8 rows x 132 SMs = 4224; transposed FP8: 3 x 32 x 132 = 12672),
// so blocks take several groups and the last group is partial; at the Gemma widths (2048 and 3072 are whole
// 32 x N chunk rows: the kFull specialisation without per-chunk bounds checks), 2304 (9 chunks per lane: the
// 12-chunk cache only partly used, the general cp.async kernel), and 3077 (the element path). w is F32 here (master weights).
TEST(NormGpu, ForwardPersistentBlocksLoopOverRowGroups) {
  TG_REQUIRE_CUDA();
  const int64_t t_count = 13001;
  for (const int64_t d : {int64_t{2048}, int64_t{3072}, int64_t{2304}, int64_t{3077}}) {
    Tensor x = testing::random_host(DType::BF16, {t_count, d}, 21, 1.9f);
    Tensor w = testing::random_host(DType::F32, {d}, 22, 0.5f);
    Tensor res = testing::random_host(DType::BF16, {t_count, d}, 23);
    Tensor xd = x.to(Device::CUDA), wd = w.to(Device::CUDA);
    for (const bool with_res : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "D=" << d << " residual=" << with_res);
      ASSERT_NO_FATAL_FAILURE(expect_forward_matches_twin(x, w, res, with_res, 0.0f));
    }
    for (int layout = 0; layout < 2; ++layout) {  // rowwise only; rowwise + transposed copy
      const bool columnwise = layout == 1;
      SCOPED_TRACE(::testing::Message() << "D=" << d << " fp8 columnwise=" << columnwise);
      Fp8Tensor q_c = testing::fp8_output(DType::E4M3, t_count, d, true, columnwise, 96.0f, 0.125f, Device::CPU);
      Fp8Tensor q_d = testing::fp8_output(DType::E4M3, t_count, d, true, columnwise, 96.0f, 0.125f, Device::CUDA);
      Tensor r_c = Tensor::empty(DType::F32, {t_count}), r_d = Tensor::empty(DType::F32, {t_count}, Device::CUDA);
      kernels::rmsnorm_forward_fp8(x, w, 1e-6f, q_c.view(), r_c);
      kernels::rmsnorm_forward_fp8(xd, wd, 1e-6f, q_d.view(), r_d);
      ASSERT_TRUE(testing::bits_equal(q_d.view().data, q_c.view().data));
      if (columnwise) {
        ASSERT_TRUE(testing::bits_equal(q_d.view().columnwise_data, q_c.view().columnwise_data));
      }
      ASSERT_TRUE(testing::bits_equal(q_d.view().amax, q_c.view().amax));
      ASSERT_TRUE(testing::bits_equal(q_d.view().scale_inv, q_c.view().scale_inv));
      ASSERT_TRUE(testing::bits_equal(r_d, r_c));
    }
  }
}

#if TEGEMMA_HAVE_CUDA
// kernels::cuda::tuning::set_rmsnorm_schedule (a speed knob: 0 = by width, 1 = the "occupancy" schedule, 1-row
// ring, more resident blocks; 2 = the "ring" schedule, 2-row ring) must not change a bit of y / the FP8 data, rstd,
// amax or scale_inv. At the Gemma widths each schedule is its own kernel (E4M3 and BF16 output); 9001 rows leave a
// partial last group and blocks that loop over groups, 1000 rows (one row per warp: the register path) ignore it.
TEST(NormGpu, ForwardScheduleKnobBitIdentical) {
  TG_REQUIRE_CUDA();
  using Schedule = kernels::cuda::tuning::Scoped<kernels::cuda::tuning::set_rmsnorm_schedule, 0>;
  const Shape2 shapes[] = {{8192, 2048}, {8192, 3072}, {9001, 2048}, {9001, 3072}, {1000, 2048}};
  for (const Shape2 s : shapes) {
    Tensor x = testing::random_host(DType::BF16, {s.t, s.d}, 41, 1.8f).to(Device::CUDA);
    Tensor w = testing::random_host(DType::BF16, {s.d}, 42, 0.5f).to(Device::CUDA);
    struct Outputs {  // one forward of each output type under the current setting
      Tensor y, r_y, amax_y, r_q;
      Fp8Tensor q;
    };
    auto run = [&] {
      Outputs o;
      o.y = Tensor::empty(DType::BF16, {s.t, s.d}, Device::CUDA);
      o.r_y = Tensor::empty(DType::F32, {s.t}, Device::CUDA);
      o.amax_y = testing::scalar_f32(0.25f, Device::CUDA);
      kernels::rmsnorm_forward(x, w, 1e-6f, o.y, o.r_y, {}, o.amax_y);
      o.q = testing::fp8_output(DType::E4M3, s.t, s.d, true, false, 96.0f, 0.125f, Device::CUDA);
      o.r_q = Tensor::empty(DType::F32, {s.t}, Device::CUDA);
      kernels::rmsnorm_forward_fp8(x, w, 1e-6f, o.q.view(), o.r_q);
      return o;
    };
    const Outputs ref = run();
    for (const int sched : {1, 2}) {
      SCOPED_TRACE(::testing::Message() << "T=" << s.t << " D=" << s.d << " schedule=" << sched);
      const Schedule scope(sched);
      const Outputs o = run();
      ASSERT_TRUE(testing::bits_equal(o.y, ref.y));
      ASSERT_TRUE(testing::bits_equal(o.r_y, ref.r_y));
      ASSERT_TRUE(testing::bits_equal(o.amax_y, ref.amax_y));
      ASSERT_TRUE(testing::bits_equal(o.q.view().data, ref.q.view().data));
      ASSERT_TRUE(testing::bits_equal(o.q.view().amax, ref.q.view().amax));
      ASSERT_TRUE(testing::bits_equal(o.q.view().scale_inv, ref.q.view().scale_inv));
      ASSERT_TRUE(testing::bits_equal(o.r_q, ref.r_q));
    }
  }
  EXPECT_THROW(kernels::cuda::tuning::set_rmsnorm_schedule(3), Error);
  EXPECT_EQ(kernels::cuda::tuning::rmsnorm_schedule(), 0);
}
#endif

// The forward's amax is max |y| in FP32 rounded to A once per thread (RN is monotonic), with max.NaN on
// the device, and padding chunks are not masked: rows with a NaN, an inf (rstd = 0, y = inf * 0 = NaN)
// and huge values (y rounds to inf in BF16) must still give the CPU twin's amax bits (the canonical NaN
// when any row has one), also at D = 37 (partial chunks) and at the Gemma width (the cp.async path).
TEST(NormGpu, ForwardAmaxSpecialValues) {
  TG_REQUIRE_CUDA();
  for (const int64_t d : {int64_t{37}, int64_t{2048}}) {
    for (int special = 0; special < 3; ++special) {  // NaN, inf, overflow to inf
      SCOPED_TRACE(::testing::Message() << "D=" << d << " special=" << special);
      const int64_t t_count = 300;
      Tensor x = testing::random_host(DType::BF16, {t_count, d}, 31, 1.5f);
      auto* xp = static_cast<uint16_t*>(x.data());
      const uint16_t bits = special == 0 ? 0x7FC0 : special == 1 ? 0xFF80 : 0x7F7F;  // NaN, -inf, max finite
      xp[123 * d + d / 2] = bits;
      Tensor w = testing::random_host(DType::BF16, {d}, 32, 0.5f);
      if (special == 2) static_cast<uint16_t*>(w.data())[d / 2] = 0x4300;  // 1 + w = 129: y overflows BF16
      Tensor y_c = Tensor::empty(DType::BF16, {t_count, d}), r_c = Tensor::empty(DType::F32, {t_count});
      Tensor amax_c = testing::scalar_f32(0.0f, Device::CPU);
      kernels::rmsnorm_forward(x, w, 1e-6f, y_c, r_c, {}, amax_c);
      Tensor xd = x.to(Device::CUDA), wd = w.to(Device::CUDA);
      Tensor y_d = Tensor::empty(DType::BF16, {t_count, d}, Device::CUDA);
      Tensor r_d = Tensor::empty(DType::F32, {t_count}, Device::CUDA), amax_d = testing::scalar_f32(0.0f, Device::CUDA);
      kernels::rmsnorm_forward(xd, wd, 1e-6f, y_d, r_d, {}, amax_d);
      ASSERT_TRUE(testing::bits_equal(y_d, y_c));
      ASSERT_TRUE(testing::bits_equal(amax_d, amax_c));
      Fp8Tensor q_c = testing::fp8_output(DType::E4M3, t_count, d, true, true, 96.0f, 0.0f, Device::CPU);
      Fp8Tensor q_d = testing::fp8_output(DType::E4M3, t_count, d, true, true, 96.0f, 0.0f, Device::CUDA);
      kernels::rmsnorm_forward_fp8(x, w, 1e-6f, q_c.view(), r_c);
      kernels::rmsnorm_forward_fp8(xd, wd, 1e-6f, q_d.view(), r_d);
      ASSERT_TRUE(testing::bits_equal(q_d.view().data, q_c.view().data));
      ASSERT_TRUE(testing::bits_equal(q_d.view().columnwise_data, q_c.view().columnwise_data));
      ASSERT_TRUE(testing::bits_equal(q_d.view().amax, q_c.view().amax));
    }
  }
}

TEST(NormGpu, Fp8FromF32Input) {
  TG_REQUIRE_CUDA();
  const int64_t t_count = 45, d = 200;
  Tensor x = testing::random_host(DType::F32, {t_count, d}, 10);
  Tensor w = testing::random_host(DType::F32, {d}, 11, 0.5f);
  Fp8Tensor q_c = testing::fp8_output(DType::E4M3, t_count, d, true, true, 200.0f, 0.0f, Device::CPU);
  Fp8Tensor q_d = testing::fp8_output(DType::E4M3, t_count, d, true, true, 200.0f, 0.0f, Device::CUDA);
  Tensor r_c = Tensor::empty(DType::F32, {t_count}), r_d = Tensor::empty(DType::F32, {t_count}, Device::CUDA);
  kernels::rmsnorm_forward_fp8(x, w, 1e-6f, q_c.view(), r_c);
  kernels::rmsnorm_forward_fp8(x.to(Device::CUDA), w.to(Device::CUDA), 1e-6f, q_d.view(), r_d);
  EXPECT_TRUE(testing::bits_equal(q_d.view().data, q_c.view().data));
  EXPECT_TRUE(testing::bits_equal(q_d.view().columnwise_data, q_c.view().columnwise_data));
  EXPECT_TRUE(testing::bits_equal(q_d.view().amax, q_c.view().amax));
}

TEST(NormGpu, BackwardBitExact) {
  TG_REQUIRE_CUDA();
  for (const Shape2 s : kShapes) {
    for (DType a : {DType::BF16, DType::F32}) {
      for (const bool with_dres : {false, true}) {
        for (DType dwt : {DType::F32, DType::BF16}) {
          SCOPED_TRACE(::testing::Message()
                       << "T=" << s.t << " D=" << s.d << " " << a << " dres=" << with_dres << " dw=" << dwt);
          Tensor x = testing::random_host(a, {s.t, s.d}, 12, 1.3f);
          Tensor dy = testing::random_host(a, {s.t, s.d}, 13);
          Tensor dres = testing::random_host(a, {s.t, s.d}, 14);
          Tensor w = testing::random_host(DType::BF16, {s.d}, 15, 0.4f);
          Tensor y = Tensor::empty(a, {s.t, s.d}), rstd = Tensor::empty(DType::F32, {s.t});
          kernels::rmsnorm_forward(x, w, 1e-6f, y, rstd);
          const Shape ws_shape{kernels::rmsnorm_backward_workspace_rows(s.t), s.d};
          Tensor dx_c = Tensor::empty(a, {s.t, s.d}), dw_c = Tensor::empty(dwt, {s.d});
          Tensor ws_c = Tensor::empty(DType::F32, ws_shape);
          kernels::rmsnorm_backward(dy, x, w, rstd, dx_c, dw_c, ws_c, with_dres ? dres.view() : TensorView{});
          Tensor dres_d = dres.to(Device::CUDA);
          Tensor dx_d = Tensor::empty(a, {s.t, s.d}, Device::CUDA), dw_d = Tensor::empty(dwt, {s.d}, Device::CUDA);
          Tensor ws_d = Tensor::empty(DType::F32, ws_shape, Device::CUDA);
          kernels::rmsnorm_backward(dy.to(Device::CUDA), x.to(Device::CUDA), w.to(Device::CUDA), rstd.to(Device::CUDA),
                                    dx_d, dw_d, ws_d, with_dres ? dres_d.view() : TensorView{});
          ASSERT_TRUE(testing::bits_equal(dx_d, dx_c));
          ASSERT_TRUE(testing::bits_equal(dw_d, dw_c));
          const int64_t groups = kernels::rmsnorm_backward_groups(s.t);
          ASSERT_TRUE(testing::bits_equal(ws_d.view().slice_rows(0, groups), ws_c.view().slice_rows(0, groups)));
        }
      }
    }
  }
}

TEST(NormGpu, BackwardIsDeterministicAtGemmaShape) {
  TG_REQUIRE_CUDA();
  const int64_t t_count = 8192, d = 2048;
  Tensor x = testing::random_host(DType::BF16, {t_count, d}, 16).to(Device::CUDA);
  Tensor dy = testing::random_host(DType::BF16, {t_count, d}, 17).to(Device::CUDA);
  Tensor w = testing::random_host(DType::F32, {d}, 18, 0.4f).to(Device::CUDA);
  Tensor y = Tensor::empty(DType::BF16, {t_count, d}, Device::CUDA);
  Tensor rstd = Tensor::empty(DType::F32, {t_count}, Device::CUDA);
  kernels::rmsnorm_forward(x, w, 1e-6f, y, rstd);
  Tensor ws = Tensor::empty(DType::F32, {kernels::rmsnorm_backward_workspace_rows(t_count), d}, Device::CUDA);
  Tensor dx1 = Tensor::empty(DType::BF16, {t_count, d}, Device::CUDA),
         dw1 = Tensor::empty(DType::F32, {d}, Device::CUDA);
  Tensor dx2 = Tensor::empty(DType::BF16, {t_count, d}, Device::CUDA),
         dw2 = Tensor::empty(DType::F32, {d}, Device::CUDA);
  kernels::rmsnorm_backward(dy, x, w, rstd, dx1, dw1, ws);
  kernels::rmsnorm_backward(dy, x, w, rstd, dx2, dw2, ws);
  EXPECT_TRUE(testing::bits_equal(dx1, dx2));
  EXPECT_TRUE(testing::bits_equal(dw1, dw2));
  // The full Gemma-2B shape against the CPU twin as well.
  Tensor dx_c = Tensor::empty(DType::BF16, {t_count, d}), dw_c = Tensor::empty(DType::F32, {d});
  Tensor ws_c = Tensor::empty(DType::F32, {kernels::rmsnorm_backward_workspace_rows(t_count), d});
  kernels::rmsnorm_backward(dy.to(Device::CPU), x.to(Device::CPU), w.to(Device::CPU), rstd.to(Device::CPU), dx_c, dw_c,
                            ws_c);
  EXPECT_TRUE(testing::bits_equal(dw1, dw_c));
  EXPECT_TRUE(testing::bits_equal(dx1, dx_c));
}

TEST(NormGpu, RejectsHostTensorsAndBadShapes) {
  TG_REQUIRE_CUDA();
  Tensor x = Tensor::zeros(DType::BF16, {4, 8}, Device::CUDA);
  Tensor w_host = Tensor::zeros(DType::BF16, {8});
  Tensor y = Tensor::empty(DType::BF16, {4, 8}, Device::CUDA), r = Tensor::empty(DType::F32, {4}, Device::CUDA);
  EXPECT_THROW(kernels::rmsnorm_forward(x, w_host, 1e-6f, y, r), Error);
  EXPECT_THROW(kernels::rmsnorm_forward(x, Tensor::zeros(DType::BF16, {8}, Device::CUDA), 1e-6f,
                                        Tensor::empty(DType::BF16, {4, 9}, Device::CUDA), r),
               Error);
}

}  // namespace
}  // namespace tg
