// Training on the CUDA backend against the CPU backend (the CPU twins are the golden), same weights and batches:
// one forward_backward's gradients, a few optimizer steps, and exact resume on the GPU (deterministic mode).
//
// Tolerances (data, with reasons):
//   gradients, per parameter tensor: rel(cuda, cpu) = ||g_cuda - g_cpu|| / ||g_cpu|| <= 0.04 (BF16), 0.3 (FP8).
//     Both backends compute the same BF16 graph; they differ in FP32 summation order (cuBLASLt GEMMs vs exact
//     twins, the attention kernels additionally round P to BF16: kernels/attention/attention.h), so each BF16
//     activation may round to the neighbouring value. test_backward_cpu.cpp measures ~1% for the CPU's distance
//     to the FP64 gradient; two such evaluations differ by up to ~2x that: 0.04 leaves 2x. FP8: one flipped E4M3
//     / E5M2 rounding is 6-12%, and both sides' FP8 gradients are ~15% from the truth (test_backward_cpu.cpp).
//   losses over 4 steps (lr 3e-3): |cuda - cpu| <= 0.01 * loss (BF16), 0.03 * loss (FP8): the logits differ by the
//     BF16 (FP8) noise above, the loss by much less (it averages over tokens and the vocabulary).
//   resume (deterministic mode: bitwise-reproducible GEMM and cuDNN algorithms): bit for bit, as on the CPU.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "common/file_io.h"
#include "common/data.h"
#include "impl/optimizer.h"
#include "impl/trainer.h"
#include "kernels/tests/gpu_test_util.h"
#include "model_test_util.h"
#include "train_test_util.h"

namespace tg::impl {
namespace {

namespace fs = std::filesystem;
using testing::host_values;

fs::path tokens_path() { return fs::path(TEGEMMA_SOURCE_DIR) / "assets" / "fortunes" / "tokens-512.bin"; }

GemmaConfig config_for(const std::string& recipe) {
  GemmaConfig c = recipe == "block" ? testing::tiny128_config() : testing::tiny_config();
  c.vocab_size = 512;  // the fortunes vocabulary
  return c;
}

double rel(const std::vector<double>& a, const std::vector<double>& b) {
  double se = 0, sr = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    se += (a[i] - b[i]) * (a[i] - b[i]);
    sr += b[i] * b[i];
  }
  return std::sqrt(se / sr);
}

std::unique_ptr<Trainer> make_trainer(const std::string& recipe, Device device, bool deterministic = false) {
  ModelOptions o;
  o.recipe = Recipe::parse(recipe);
  o.device = device;
  o.deterministic = deterministic;
  TrainOptions to;
  to.lr = 3e-3;
  to.warmup_steps = 1;
  to.total_steps = 8;
  to.deterministic = deterministic;
  return std::make_unique<Trainer>(GemmaForCausalLM::random(config_for(recipe), 13, o), to);
}

class TrainGpu : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainGpu, GradientsAndStepsMatchTheCpu) {
  TG_REQUIRE_CUDA();
  const std::string recipe = GetParam();
  const bool fp8 = Recipe::parse(recipe).is_fp8();
  const TokenDataset data(tokens_path());
  const BatchSampler sampler(data, 2, 4, 64);
  auto cpu = make_trainer(recipe, Device::CPU), gpu = make_trainer(recipe, Device::CUDA);

  // One forward_backward: the gradients.
  const TrainBatch b = TrainBatch::from_windows(sampler.batch(0));
  const float scale = 1.0f / static_cast<float>(b.num_targets());
  for (Trainer* t : {cpu.get(), gpu.get()}) {
    t->optimizer().zero_grads();
    Tensor loss = Tensor::zeros(DType::F32, {1}, t->model().options().device);
    t->model().forward_backward(b.batch, b.targets, scale, t->optimizer().grads(), loss.view());
  }
  for (std::size_t p = 0; p < cpu->optimizer().parameters().size(); ++p) {
    const Parameter& pc = cpu->optimizer().parameters()[p];
    const double e = rel(host_values(gpu->optimizer().parameters()[p].grad), host_values(pc.grad));
    std::cout << "[ grad cuda vs cpu " << recipe << " ] " << pc.name << ": " << e << "\n";
    EXPECT_LE(e, fp8 ? 0.3 : 0.04) << pc.name;
  }
  // A few steps (the trainer zeroes the gradients itself).
  for (int64_t s = 0; s < 4; ++s) {
    const std::vector<TrainBatch> mb{TrainBatch::from_windows(sampler.batch(s))};
    const StepResult rc = cpu->step(mb), rg = gpu->step(mb);
    std::cout << "[ step cuda vs cpu " << recipe << " ] " << s << ": loss " << rg.loss << " vs " << rc.loss
              << ", grad norm " << rg.grad_norm << " vs " << rc.grad_norm << "\n";
    EXPECT_NEAR(rg.loss, rc.loss, (fp8 ? 0.03 : 0.01) * rc.loss) << "step " << s;
    EXPECT_FALSE(rg.skipped);
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, TrainGpu, ::testing::Values("bf16", "delayed", "current", "block"));

// Exact resume on the GPU: 4 steps vs 2 steps + checkpoint + a new trainer + 2 steps, deterministic mode.
TEST_P(TrainGpu, DeterministicResumeIsBitExact) {
  TG_REQUIRE_CUDA();
  const std::string recipe = GetParam();
  const TokenDataset data(tokens_path());
  const BatchSampler sampler(data, 3, 4, 64);
  auto batch = [&](int64_t s) { return std::vector<TrainBatch>{TrainBatch::from_windows(sampler.batch(s))}; };
  std::vector<double> a_losses;
  {
    auto a = make_trainer(recipe, Device::CUDA, true);
    for (int64_t s = 0; s < 4; ++s) a_losses.push_back(a->step(batch(s)).loss);
  }
  const fs::path dir = fs::temp_directory_path() / ("tegemma_train_gpu_" + recipe + "_" + std::to_string(::getpid()));
  tg::remove_tree(dir);
  {
    auto b = make_trainer(recipe, Device::CUDA, true);
    for (int64_t s = 0; s < 2; ++s) ASSERT_EQ(b->step(batch(s)).loss, a_losses[s]) << "step " << s << " not repeatable";
    save_run_checkpoint(*b, dir, {});
  }
  auto c = make_trainer(recipe, Device::CUDA, true);
  c->load_checkpoint(latest_checkpoint(dir));
  for (int64_t s = 2; s < 4; ++s) EXPECT_EQ(c->step(batch(s)).loss, a_losses[s]) << recipe << " step " << s;
  tg::remove_tree(dir);
}

}  // namespace
}  // namespace tg::impl
