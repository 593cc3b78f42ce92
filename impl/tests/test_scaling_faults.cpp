// Faults (issue 11): an FP8 amax of inf or NaN, end to end through DelayedScalingState on the CPU. A real
// quantizer (kernels::quantize, the CPU twin) casts an input holding inf / NaN with the state's attached scale,
// records the amax, the state updates, and:
//   - the scale the next step quantizes with is the previous one (inf: for as long as it stays in the window;
//     NaN: skipped by algo=max, previous scale under algo=most_recent), never 0, inf or NaN;
//   - the other tensors of the same update move on normally;
//   - nonfinite_amaxes() reports the tensor by name, with the value and where it sits, until it leaves the window.
// The recipe kernel's scalar rules themselves are tested in kernels/tests/test_recipe_cpu.cpp.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/fp8_tensor.h"
#include "common/numeric.h"
#include "impl/scaling.h"
#include "kernels/quantize/quantize.h"

namespace tg::impl {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

float at(const TensorView& v, int64_t i = 0) { return v.ptr<float>()[i]; }

// A BF16 activation [4, 32] of values in [-m, m] (m reached), with `poison` at one element if given.
Tensor activation(float m, float poison = 0.0f, bool poisoned = false) {
  Tensor x = Tensor::empty(DType::BF16, {4, 32});
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = m * static_cast<float>((i * 37) % 65 - 32) / 32.0f;  // i = 32 gives -m... +m
    x.ptr<uint16_t>()[i] = float_to_bf16_bits(v);
  }
  if (poisoned) x.ptr<uint16_t>()[77] = float_to_bf16_bits(poison);
  return x;
}

// One forward "step" of two GEMM inputs through the state: quantize each with its attached view, update.
struct Step {
  DelayedScalingState& st;
  ScalingRef a, b;
  Fp8Tensor qa = Fp8Tensor::per_tensor(DType::E4M3, 4, 32, true, false, Device::CPU);
  Fp8Tensor qb = Fp8Tensor::per_tensor(DType::E4M3, 4, 32, true, false, Device::CPU);
  Step(DelayedScalingState& s, ScalingRef ra, ScalingRef rb) : st(s), a(ra), b(rb) {
    st.attach(qa.view(), a);
    st.attach(qb.view(), b);
  }
  void run(const Tensor& xa, const Tensor& xb) {
    kernels::quantize(xa.view(), qa.view());
    kernels::quantize(xb.view(), qb.view());
    st.update_forward();
  }
};

TEST(AmaxFaults, InfKeepsThePreviousScaleWhileInTheWindowAndIsReported) {
  for (const char* algo : {"max", "most_recent"}) {
    SCOPED_TRACE(algo);
    DelayedScalingState st(Recipe::parse(std::string("delayed:len=3,algo=") + algo), Device::CPU);
    const ScalingRef a = st.add_forward("layer0.qkv.input"), b = st.add_forward("layer0.o.input");
    st.allocate();
    Step step(st, a, b);

    step.run(activation(2.0f), activation(4.0f));
    ASSERT_EQ(at(st.scale(a)), 224.0f);  // 448 / 2
    ASSERT_EQ(at(st.scale(b)), 112.0f);
    EXPECT_TRUE(st.nonfinite_amaxes().empty());

    // Step 2: an inf reaches a's quantizer (an overflowed activation). The cast saturates; the amax is inf.
    kernels::quantize(activation(2.0f, kInf, true).view(), step.qa.view());
    EXPECT_EQ(at(st.amax(a)), kInf) << "the quantizer records the inf";
    {
      const auto pending = st.nonfinite_amaxes();  // before the update: the staging slot
      ASSERT_EQ(pending.size(), 1u);
      EXPECT_EQ(pending[0].name, "layer0.qkv.input");
      EXPECT_EQ(pending[0].slot, 0);
      EXPECT_EQ(pending[0].value, kInf);
    }
    kernels::quantize(activation(8.0f).view(), step.qb.view());
    st.update_forward();
    EXPECT_EQ(at(st.scale(a)), 224.0f) << "inf amax: previous scale kept";
    EXPECT_EQ(at(st.scale_inv(a)), 1.0f / 224.0f);
    EXPECT_EQ(at(st.scale(b)), 56.0f) << "the other tensor of the same launch moves on (448 / 8)";
    const auto after = st.nonfinite_amaxes();
    ASSERT_EQ(after.size(), 1u);
    EXPECT_EQ(after[0].name, "layer0.qkv.input");
    EXPECT_EQ(after[0].dir, ScalingDir::kForward);
    EXPECT_EQ(after[0].slot, 2) << "the newest applied amax sits at L-1";
    EXPECT_EQ(describe(after), "1 FP8 tensor with a non-finite amax (scale kept): layer0.qkv.input (inf, slot 2)");

    // Step 3: finite again (1.0). max: inf is still in the window -> kept; most_recent: 448 / 1.
    step.run(activation(1.0f), activation(8.0f));
    EXPECT_EQ(at(st.scale(a)), std::string(algo) == "max" ? 224.0f : 448.0f);
    EXPECT_EQ(st.nonfinite_amaxes().size(), 1u) << "still in the window (slot 1)";
    EXPECT_EQ(st.nonfinite_amaxes()[0].slot, 1);
    // Step 4: slot 1 is the oldest slot of the window, so max sees the inf one last time, then it rolls out.
    step.run(activation(1.0f), activation(8.0f));
    EXPECT_EQ(at(st.scale(a)), std::string(algo) == "max" ? 224.0f : 448.0f);
    EXPECT_TRUE(st.nonfinite_amaxes().empty());
    // Step 5: only finite amaxes left: the scale follows them.
    step.run(activation(1.0f), activation(8.0f));
    EXPECT_EQ(at(st.scale(a)), 448.0f);
    // A quantizer fed by the kept scale never saw a non-finite scale.
    EXPECT_TRUE(std::isfinite(at(step.qa.view().scale_inv)));
  }
}

TEST(AmaxFaults, NaNNeverBecomesAScale) {
  for (const char* algo : {"max", "most_recent"}) {
    SCOPED_TRACE(algo);
    DelayedScalingState st(Recipe::parse(std::string("delayed:len=4,algo=") + algo), Device::CPU);
    const ScalingRef a = st.add_forward("fc1.input"), b = st.add_forward("fc2.input");
    st.allocate();
    Step step(st, a, b);
    step.run(activation(2.0f), activation(4.0f));
    step.run(activation(1.0f), activation(4.0f));
    const float before = at(st.scale(a));  // max: 448/2; most_recent: 448/1
    EXPECT_EQ(before, std::string(algo) == "max" ? 224.0f : 448.0f);

    step.run(activation(1.0f, kNaN, true), activation(4.0f));
    EXPECT_TRUE(std::isnan(at(st.history(a), 3))) << "the quantizer's amax propagates NaN (differs from TE)";
    // max: NaN skipped, the window {2, 1} still gives 448/2; most_recent: the NaN keeps the previous scale.
    EXPECT_EQ(at(st.scale(a)), before);
    EXPECT_EQ(at(st.scale_inv(a)), 1.0f / before);
    EXPECT_EQ(at(st.scale(b)), 112.0f);
    const auto found = st.nonfinite_amaxes();
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].name, "fc1.input");
    EXPECT_TRUE(std::isnan(found[0].value));
    EXPECT_EQ(describe(found), "1 FP8 tensor with a non-finite amax (scale kept): fc1.input (nan, slot 3)");
  }
}

TEST(AmaxFaults, BackwardTensorsAndSeveralAtOnce) {
  DelayedScalingState st(Recipe::parse("delayed:len=2"), Device::CPU);
  const GemmScalingRefs g = st.add_gemm("down");
  st.allocate();
  st.amax(g.input).ptr<float>()[0] = 3.0f;
  st.amax(g.grad_output).ptr<float>()[0] = 8.0f;
  st.update_forward();
  st.update_backward();
  const float fwd = at(st.scale(g.input)), bwd = at(st.scale(g.grad_output));
  st.amax(g.input).ptr<float>()[0] = kNaN;
  st.amax(g.grad_output).ptr<float>()[0] = kInf;  // a diverging loss: the gradient overflowed
  st.amax(g.grad_input).ptr<float>()[0] = -kInf;  // never produced by an amax, still non-finite
  st.update_forward();
  st.update_backward();
  EXPECT_EQ(at(st.scale(g.input)), fwd);
  EXPECT_EQ(at(st.scale(g.grad_output)), bwd);
  EXPECT_EQ(at(st.scale(g.grad_input)), 1.0f);
  const auto found = st.nonfinite_amaxes();
  ASSERT_EQ(found.size(), 3u);
  EXPECT_EQ(found[0].name, "down.input");
  EXPECT_EQ(found[1].name, "down.grad_output");
  EXPECT_EQ(found[1].dir, ScalingDir::kBackward);
  EXPECT_EQ(found[2].name, "down.grad_input");
  EXPECT_EQ(describe(found),
            "3 FP8 tensors with a non-finite amax (scale kept): down.input (nan, slot 1), "
            "down.grad_output (inf, slot 1), down.grad_input (-inf, slot 1)");
  EXPECT_THROW(DelayedScalingState(Recipe::delayed(), Device::CPU).nonfinite_amaxes(), Error) << "not allocated";
}

}  // namespace
}  // namespace tg::impl
