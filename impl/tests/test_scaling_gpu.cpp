// DelayedScalingState on the device against the same state on the CPU: identical buffers, bit for bit,
// after several training steps (forward and backward updates, tensors that skip steps) and a calibration.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "impl/scaling.h"
#include "kernels/tests/gpu_test_util.h"

namespace tg::impl {
namespace {

void expect_same(const Tensor& cpu, const Tensor& gpu, const std::string& ctx) {
  const Tensor g = gpu.to(Device::CPU);
  ASSERT_EQ(cpu.numel(), g.numel());
  for (int64_t i = 0; i < cpu.numel(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(cpu.ptr<float>()[i]), std::bit_cast<uint32_t>(g.ptr<float>()[i]))
        << ctx << " element " << i << ": CPU " << cpu.ptr<float>()[i] << ", CUDA " << g.ptr<float>()[i];
  }
}

// What a quantizer does on each side (an atomic max on the device; here a read-max-write, fine in a test).
void record(const TensorView& slot, float a) {
  float v = 0.0f;
  copy_bytes(TensorView(&v, DType::F32, {1}), slot);
  v = std::max(v, a);
  copy_bytes(slot, TensorView(&v, DType::F32, {1}));
}

TEST(DelayedScalingStateGpu, MatchesCpuState) {
  TG_REQUIRE_CUDA();
  for (const char* spec : {"delayed:len=31,algo=max,margin=2", "delayed:len=1024,algo=most_recent"}) {
    const Recipe recipe = Recipe::parse(spec);
    DelayedScalingState cpu(recipe, Device::CPU), gpu(recipe, Device::CUDA);
    std::vector<GemmScalingRefs> gemms;
    for (int l = 0; l < 18; ++l) {  // a Gemma-2B-sized stack: 4 GEMMs x 18 layers
      for (const char* g : {"qkv", "o", "gate_up", "down"}) {
        const std::string name = "layer" + std::to_string(l) + "." + g;
        gemms.push_back(cpu.add_gemm(name));
        gpu.add_gemm(name);
      }
    }
    cpu.allocate();
    gpu.allocate();
    std::mt19937 rng(17);
    std::uniform_real_distribution<float> log_amax(-20.0f, 20.0f);
    auto step = [&](bool backward) {
      for (const GemmScalingRefs& g : gemms) {
        for (ScalingRef r : {g.input, g.weight, g.output, g.grad_output, g.grad_input}) {
          if (rng() % 7 == 0) continue;  // this tensor did not run this step
          const float a = std::exp2(log_amax(rng));
          record(cpu.amax(r), a);
          record(gpu.amax(r), a);
        }
      }
      cpu.update_forward();
      gpu.update_forward();
      if (backward) {
        cpu.update_backward();
        gpu.update_backward();
      }
    };
    for (int s = 0; s < 6; ++s) step(s % 3 != 2);
    cpu.begin_calibration();
    gpu.begin_calibration();
    for (int s = 0; s < 4; ++s) step(false);
    cpu.finish_calibration();
    gpu.finish_calibration();
    for (int s = 0; s < 3; ++s) step(true);
    expect_same(cpu.amax_histories(), gpu.amax_histories(), std::string(spec) + " history");
    expect_same(cpu.scales(), gpu.scales(), std::string(spec) + " scale");
    expect_same(cpu.scale_invs(), gpu.scale_invs(), std::string(spec) + " scale_inv");
  }
}

}  // namespace
}  // namespace tg::impl
