// The scaling state objects (impl/scaling.h) on the CPU: registration and the buffer layout, Fp8View
// wiring, forward/backward updates touching only their rows, calibration accumulating the max, and the
// current/block scaling rules as built from a Recipe. The kernels' arithmetic itself is covered by
// kernels/tests/test_recipe_cpu.cpp; here the expectations are written out by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cfloat>
#include <initializer_list>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/fp8_tensor.h"
#include "impl/scaling.h"

namespace tg::impl {
namespace {

float at(const TensorView& v, int64_t i = 0) { return v.ptr<float>()[i]; }
// A quantizer's amax reduction into the staging slot (atomic max on the device).
void record_amax(const TensorView& amax, float a) { amax.ptr<float>()[0] = std::max(amax.ptr<float>()[0], a); }

TEST(DelayedScalingState, LayoutAndInitialValues) {
  DelayedScalingState st(Recipe::parse("delayed:len=16"), Device::CPU);
  const GemmScalingRefs qkv = st.add_gemm("qkv");
  const GemmScalingRefs out = st.add_gemm("out");
  const ScalingRef extra = st.add_forward("extra");
  st.allocate();
  EXPECT_EQ(st.num_forward(), 7);
  EXPECT_EQ(st.num_backward(), 4);
  // Forward rows first in registration order, then backward rows.
  EXPECT_EQ(st.row(qkv.input), 0);
  EXPECT_EQ(st.row(qkv.output), 2);
  EXPECT_EQ(st.row(out.weight), 4);
  EXPECT_EQ(st.row(extra), 6);
  EXPECT_EQ(st.row(qkv.grad_output), 7);
  EXPECT_EQ(st.row(out.grad_input), 10);
  EXPECT_EQ(st.name(out.grad_output), "out.grad_output");
  EXPECT_EQ(st.amax_histories().shape(), Shape({11, 16}));
  // Views point into the buffers: amax is the staging slot [row, 0].
  EXPECT_EQ(st.amax(out.weight).data, st.amax_histories().ptr<float>() + 4 * 16);
  EXPECT_EQ(st.amax(out.weight).shape, Shape({1}));
  EXPECT_EQ(st.history(out.weight).shape, Shape({16}));
  EXPECT_EQ(st.scale(out.grad_input).data, st.scales().ptr<float>() + 10);
  EXPECT_EQ(st.scale_inv(qkv.output).data, st.scale_invs().ptr<float>() + 2);
  // HYBRID: E4M3 forward (448), E5M2 backward (57344).
  EXPECT_EQ(st.dtype(qkv.weight), DType::E4M3);
  EXPECT_EQ(st.dtype(qkv.grad_output), DType::E5M2);
  for (int64_t r = 0; r < 11; ++r) {
    EXPECT_EQ(at(st.fp8_maxes(), r), r < 7 ? 448.0f : 57344.0f) << r;
    EXPECT_EQ(at(st.scales(), r), 1.0f);
    EXPECT_EQ(at(st.scale_invs(), r), 1.0f);
  }
  EXPECT_TRUE(std::all_of(st.amax_histories().ptr<float>(), st.amax_histories().ptr<float>() + 11 * 16,
                          [](float v) { return v == 0.0f; }));

  DelayedScalingState e4m3(Recipe::parse("delayed:format=e4m3"), Device::CPU);
  const GemmScalingRefs g = e4m3.add_gemm("g");
  e4m3.allocate();
  EXPECT_EQ(e4m3.dtype(g.grad_input), DType::E4M3);
  EXPECT_EQ(at(e4m3.fp8_maxes(), e4m3.row(g.grad_input)), 448.0f);
  EXPECT_EQ(e4m3.history_len(), 1024);
}

TEST(DelayedScalingState, ForwardAndBackwardUpdatesTouchOnlyTheirRows) {
  DelayedScalingState st(Recipe::parse("delayed:len=4,margin=1"), Device::CPU);
  const GemmScalingRefs g = st.add_gemm("fc1");
  st.allocate();
  record_amax(st.amax(g.input), 2.0f);
  record_amax(st.amax(g.weight), 7.0f);  // g.output did not run this step
  record_amax(st.amax(g.grad_output), 16.0f);
  st.update_forward();
  EXPECT_EQ(at(st.scale(g.input)), 448.0f / 2.0f / 2.0f);  // margin 1
  EXPECT_EQ(at(st.scale(g.weight)), 448.0f / 2.0f / 7.0f);
  EXPECT_EQ(at(st.scale_inv(g.weight)), 1.0f / (448.0f / 2.0f / 7.0f));
  EXPECT_EQ(at(st.scale(g.output)), 1.0f);
  const std::vector<float> hist(st.history(g.input).ptr<float>(), st.history(g.input).ptr<float>() + 4);
  EXPECT_EQ(hist, (std::vector<float>{0.0f, 0.0f, 0.0f, 2.0f}));
  // The backward tensor is untouched by the forward update: still staged, scale still 1.
  EXPECT_EQ(at(st.amax(g.grad_output)), 16.0f);
  EXPECT_EQ(at(st.scale(g.grad_output)), 1.0f);
  st.update_backward();
  EXPECT_EQ(at(st.scale(g.grad_output)), 57344.0f / 2.0f / 16.0f);
  EXPECT_EQ(at(st.amax(g.grad_output)), 0.0f);
  EXPECT_EQ(at(st.scale(g.grad_input)), 1.0f);
  // Second step: max over the window keeps 7 for the weight although it now sees 3.
  record_amax(st.amax(g.weight), 3.0f);
  st.update_forward();
  EXPECT_EQ(at(st.scale(g.weight)), 448.0f / 2.0f / 7.0f);
  EXPECT_EQ(at(st.scale(g.input)), 448.0f / 2.0f / 2.0f);  // did not run: kept, not rolled
  EXPECT_EQ(at(st.history(g.input), 3), 2.0f);
}

TEST(DelayedScalingState, AttachWiresTheQuantizerViews) {
  DelayedScalingState st(Recipe::delayed(), Device::CPU);
  const GemmScalingRefs g = st.add_gemm("proj");
  st.allocate();
  Fp8Tensor x = Fp8Tensor::per_tensor(DType::E4M3, 4, 16, true, true, Device::CPU);
  const void* own_scale_inv = x.view().scale_inv.data;
  st.attach(x.view(), g.input);
  EXPECT_EQ(x.view().scale.data, st.scale(g.input).data);
  EXPECT_EQ(x.view().amax.data, st.amax(g.input).data);
  EXPECT_EQ(x.view().scale_inv.data, own_scale_inv);  // the tensor keeps its own scale_inv
  record_amax(x.view().amax, 3.5f);  // what the quantizer does
  st.update_forward();
  EXPECT_EQ(at(x.view().scale), 128.0f);  // the quantizer's next scale

  Fp8Tensor dy = Fp8Tensor::per_tensor(DType::E4M3, 4, 16, true, false, Device::CPU);
  EXPECT_THROW(st.attach(dy.view(), g.grad_output), Error);  // backward tensors are E5M2 under HYBRID
  Fp8Tensor dy5 = Fp8Tensor::per_tensor(DType::E5M2, 4, 16, true, false, Device::CPU);
  EXPECT_NO_THROW(st.attach(dy5.view(), g.grad_output));
}

// Calibration: the slot accumulates the max over batches (not the last batch, as TE's calibrate()).
TEST(DelayedScalingState, CalibrationAccumulatesTheMax) {
  for (const char* algo : {"max", "most_recent"}) {
    DelayedScalingState st(Recipe::parse(std::string("delayed:len=8,algo=") + algo), Device::CPU);
    const GemmScalingRefs g = st.add_gemm("fc2");
    st.allocate();
    // A previous training step left something in the history and a scale.
    record_amax(st.amax(g.input), 100.0f);
    st.update_forward();
    ASSERT_EQ(at(st.scale(g.input)), 4.48f);
    st.begin_calibration();
    EXPECT_TRUE(st.calibrating());
    const float batches[] = {3.0f, 7.0f, 2.0f, 5.0f, 1.0f};  // max 7, last 1
    for (float a : batches) {
      record_amax(st.amax(g.input), a);
      record_amax(st.amax(g.weight), a / 2);
      st.update_forward();  // no-ops while calibrating
      st.update_backward();
    }
    EXPECT_EQ(at(st.scale(g.input)), 4.48f) << "scales frozen while calibrating";
    EXPECT_EQ(at(st.amax(g.input)), 7.0f);
    st.finish_calibration();
    EXPECT_FALSE(st.calibrating());
    EXPECT_EQ(at(st.scale(g.input)), 64.0f) << algo;  // 448 / 7, not 448 / 1 (TE) nor 448 / 100 (old history)
    EXPECT_EQ(at(st.scale(g.weight)), 128.0f) << algo;
    EXPECT_EQ(at(st.scale_inv(g.input)), 1.0f / 64.0f);
    EXPECT_EQ(at(st.scale(g.output)), 1.0f) << "never seen: kept";
    EXPECT_EQ(at(st.scale(g.grad_output)), 1.0f);
    const TensorView h = st.history(g.input);
    EXPECT_EQ(at(h, 7), 7.0f);
    for (int i = 0; i < 7; ++i) EXPECT_EQ(at(h, i), 0.0f) << "calibration starts from a clean window";
    // Training resumes normally.
    record_amax(st.amax(g.input), 14.0f);
    st.update_forward();
    EXPECT_EQ(at(st.scale(g.input)), 32.0f);
  }
}

TEST(DelayedScalingState, Errors) {
  EXPECT_THROW(DelayedScalingState(Recipe::current(), Device::CPU), Error);
  EXPECT_THROW(DelayedScalingState(Recipe::bf16(), Device::CPU), Error);
  DelayedScalingState st(Recipe::delayed(), Device::CPU);
  const ScalingRef a = st.add_forward("a");
  EXPECT_THROW(st.scale(a), Error);  // before allocate()
  EXPECT_THROW(st.update_forward(), Error);
  st.allocate();
  EXPECT_THROW(st.add_forward("late"), Error);
  EXPECT_THROW(st.allocate(), Error);
  EXPECT_THROW(st.scale(ScalingRef{ScalingDir::kBackward, 0}), Error);  // no backward tensors
  EXPECT_THROW(st.scale(ScalingRef{}), Error);
  EXPECT_THROW(st.finish_calibration(), Error);
  st.begin_calibration();
  EXPECT_THROW(st.begin_calibration(), Error);
  try {
    st.row(ScalingRef{ScalingDir::kForward, 5});
    ADD_FAILURE() << "expected tg::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no forward tensor 5 (1 registered)"), std::string::npos) << e.what();
  }
  // An empty state is fine: updates are no-ops.
  DelayedScalingState none(Recipe::delayed(), Device::CPU);
  none.allocate();
  EXPECT_NO_THROW(none.update_forward());
  EXPECT_NO_THROW(none.update_backward());
}

TEST(CurrentScalingState, RulesFromTheRecipe) {
  const CurrentScalingState plain(Recipe::current());
  EXPECT_EQ(plain.rule(ScalingDir::kForward).fp8_max, 448.0f);
  EXPECT_EQ(plain.rule(ScalingDir::kBackward).fp8_max, 57344.0f);
  EXPECT_EQ(plain.rule(ScalingDir::kForward).value_for_inf, FLT_MAX);
  const CurrentScalingState tuned(Recipe::parse("current:eps=0.5,pow2=1"));
  EXPECT_EQ(tuned.rule(ScalingDir::kForward).amax_epsilon, 0.5f);
  EXPECT_TRUE(tuned.rule(ScalingDir::kForward).power_2_scale);
  EXPECT_THROW(CurrentScalingState(Recipe::delayed()), Error);

  Fp8Tensor x = Fp8Tensor::per_tensor(DType::E4M3, 2, 16, true, false, Device::CPU);
  x.view().amax.ptr<float>()[0] = 3.0f;
  plain.compute_scale(x.view(), ScalingDir::kForward);
  EXPECT_EQ(at(x.view().scale), 448.0f / 3.0f);
  tuned.compute_scale(x.view(), ScalingDir::kForward);
  EXPECT_EQ(at(x.view().scale), 128.0f);  // 149.3 rounded down to a power of two
  x.view().amax.ptr<float>()[0] = 0.0f;
  tuned.compute_scale(x.view(), ScalingDir::kForward);
  EXPECT_EQ(at(x.view().scale), 512.0f);  // amax floored at eps 0.5: 896 -> 512
  plain.compute_scale(x.view(), ScalingDir::kForward);
  EXPECT_EQ(at(x.view().scale), 1.0f);    // amax 0 -> 1

  // Batch form: scale_inv too.
  std::vector<float> amax = {1.0f, 2.0f, 0.0f}, scale(3), scale_inv(3);
  plain.compute_scales(TensorView(amax.data(), DType::F32, {3}), TensorView(scale.data(), DType::F32, {3}),
                       TensorView(scale_inv.data(), DType::F32, {3}), ScalingDir::kBackward);
  EXPECT_EQ(scale, (std::vector<float>{57344.0f, 28672.0f, 1.0f}));
  EXPECT_EQ(scale_inv, (std::vector<float>{1.0f / 57344.0f, 1.0f / 28672.0f, 1.0f}));
}

TEST(BlockScalingState, RulesFromTheRecipe) {
  const BlockScalingState b(Recipe::block());
  EXPECT_TRUE(b.power_2_scale());
  EXPECT_EQ(b.dtype(ScalingDir::kBackward), DType::E4M3);  // block's default format is E4M3
  const kernels::ScaleRule r = b.rule(ScalingDir::kForward, DType::BF16);
  EXPECT_EQ(r.fp8_max, 448.0f);
  EXPECT_EQ(r.amax_epsilon, 0.0f);
  EXPECT_EQ(std::bit_cast<uint32_t>(r.value_for_inf), 0x7F7F0000u);  // BF16's largest finite value
  EXPECT_EQ(b.rule(ScalingDir::kForward, DType::F32).value_for_inf, FLT_MAX);
  EXPECT_EQ(kernels::scale_from_amax(3.0f, r), 128.0f);
  const BlockScalingState hybrid(Recipe::parse("block:format=hybrid,pow2=0"));
  EXPECT_EQ(hybrid.rule(ScalingDir::kBackward, DType::BF16).fp8_max, 57344.0f);
  EXPECT_EQ(kernels::scale_from_amax(3.0f, hybrid.rule(ScalingDir::kForward, DType::BF16)), 448.0f / 3.0f);
  EXPECT_THROW(b.rule(ScalingDir::kForward, DType::E4M3), Error);
  EXPECT_THROW(BlockScalingState(Recipe::current()), Error);
}

}  // namespace
}  // namespace tg::impl
