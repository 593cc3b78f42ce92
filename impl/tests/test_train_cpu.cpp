// The impl trainer on the CPU backend: the learning-rate schedule, the optimizer's NaN skip through the
// trainer, loss curves on the fortunes tokens (every recipe learns, FP8 within a stated distance of BF16),
// exact resume from a checkpoint, and checkpoint integrity checks.
//
// Loss-curve tolerance (FP8 vs BF16, CPU, tiny128 model with the 512-token vocabulary, batch 4 x 32, 40 steps,
// BF16 falls from 6.25 = ln 512 to ~5.1): each FP8 recipe's final training loss (mean of the last 5 steps)
// within 3% of BF16's. Measured: |FP8 - BF16| / BF16 <= 0.3% for delayed, current and block. Reason for the
// margin: the per-step FP8 gradient error is ~15% (test_backward_cpu.cpp), but it is noise around the right
// direction that Adam averages over steps; TE's own accuracy gates for full FP8 training allow +1-2% on the
// final loss of long runs, and a 40-step CPU run averages less. A broken FP8 backward (a wrong copy or scale)
// does not learn at all (the loss stays near ln V or diverges), far outside 3%.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "common/data.h"
#include "common/file_io.h"
#include "impl/optimizer.h"
#include "impl/trainer.h"
#include "model_test_util.h"

namespace tg::impl {
namespace {

namespace fs = std::filesystem;

fs::path tokens_path() { return fs::path(TEGEMMA_SOURCE_DIR) / "assets" / "fortunes" / "tokens-512.bin"; }

// tiny128 with the fortunes vocabulary (512), so block scaling (every GEMM width % 128) can train on it.
GemmaConfig tiny128_512() {
  GemmaConfig c = testing::tiny128_config();
  c.vocab_size = 512;
  return c;
}

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("tegemma_train_" + name + "_" + std::to_string(::getpid()));
  tg::remove_tree(d);
  fs::create_directories(d);
  return d;
}

std::unique_ptr<Trainer> make_trainer(const GemmaConfig& cfg, const std::string& recipe, TrainOptions to = {}) {
  ModelOptions o;
  o.recipe = Recipe::parse(recipe);
  to.lr = to.lr == TrainOptions{}.lr ? 3e-3 : to.lr;
  return std::make_unique<Trainer>(GemmaForCausalLM::random(cfg, 11, o), to);
}

std::vector<TrainBatch> batch_at(const BatchSampler& s, int64_t step) {
  return {TrainBatch::from_windows(s.batch(step))};
}

TEST(TrainCpu, LearningRateScheduleIsHfCosineWithWarmup) {
  TrainOptions o;
  o.lr = 1e-3;
  o.warmup_steps = 10;
  o.total_steps = 110;
  EXPECT_EQ(learning_rate(o, 0), 0.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 5), 5e-4);
  EXPECT_DOUBLE_EQ(learning_rate(o, 10), 1e-3);
  EXPECT_NEAR(learning_rate(o, 60), 5e-4, 1e-15);  // half way through the cosine
  EXPECT_NEAR(learning_rate(o, 110), 0.0, 1e-18);
  o.min_lr_ratio = 0.1;
  EXPECT_NEAR(learning_rate(o, 110), 1e-4, 1e-15);
  EXPECT_NEAR(learning_rate(o, 60), 1e-3 * (0.5 * 0.9 + 0.1), 1e-15);
}

TEST(TrainCpu, NanGradientSkipsTheStepAndLeavesWeightsAlone) {
  const TokenDataset data(tokens_path());
  const BatchSampler sampler(data, 1, 2, 16);
  TrainOptions to;
  to.inject_nan_grad_at_step = 2;
  auto t = make_trainer(testing::tiny_config(), "bf16", to);
  for (int64_t s = 0; s < 2; ++s) EXPECT_FALSE(t->step(batch_at(sampler, s)).skipped);
  const Tensor masters = t->optimizer().masters().to(Device::CPU);
  const Tensor m = t->optimizer().exp_avg().to(Device::CPU);
  const Tensor embed = t->model().weights().embed.to(Device::CPU);
  const StepResult r = t->step(batch_at(sampler, 2));
  EXPECT_TRUE(r.skipped);
  EXPECT_TRUE(std::isnan(r.grad_norm));
  EXPECT_TRUE(std::isfinite(r.loss)) << "the loss is computed before the poisoned gradient";
  EXPECT_TRUE(testing::bitwise_equal(masters, t->optimizer().masters().to(Device::CPU)));
  EXPECT_TRUE(testing::bitwise_equal(m, t->optimizer().exp_avg().to(Device::CPU)));
  EXPECT_TRUE(testing::bitwise_equal(embed, t->model().weights().embed.to(Device::CPU)));
  EXPECT_EQ(t->optimizer().adam_state().to(Device::CPU).ptr<double>()[0], 2.0) << "skipped steps are not counted";
  const StepResult next = t->step(batch_at(sampler, 3));
  EXPECT_FALSE(next.skipped);
  EXPECT_EQ(t->optimizer().adam_state().to(Device::CPU).ptr<double>()[0], 3.0);
}

// Gradient accumulation: two micro-batches accumulated equal one batch holding both (the same per-token math;
// only the FP32 order of the weight-gradient sums differs: <= 1e-5 relative; an overwrite instead of an add in
// any wgrad, norm or embedding gradient would lose half of it).
TEST(TrainCpu, AccumulatedMicroBatchesEqualOneBatch) {
  const TokenDataset data(tokens_path());
  const TokenBatch a = BatchSampler(data, 1, 2, 24).batch(0), b = BatchSampler(data, 1, 2, 24).batch(1);
  TokenBatch both = a;
  both.rows = 4;
  both.tokens.insert(both.tokens.end(), b.tokens.begin(), b.tokens.end());
  auto grads_of = [&](const std::vector<TokenBatch>& mbs, const std::string& recipe) {
    ModelOptions o;
    o.recipe = Recipe::parse(recipe);
    GemmaForCausalLM model = GemmaForCausalLM::random(testing::tiny_config(), 3, o);
    model.precision().set_training(true);
    if (o.recipe.is_fp8()) quantize_weights(model.weights(), o.recipe, false, true);
    Optimizer opt(model, {});
    opt.zero_grads();
    Tensor loss = Tensor::zeros(DType::F32, {1});
    int64_t n = 0;
    for (const TokenBatch& w : mbs) n += TrainBatch::from_windows(w).num_targets();
    for (const TokenBatch& w : mbs) {
      const TrainBatch t = TrainBatch::from_windows(w);
      model.forward_backward(t.batch, t.targets, 1.0f / static_cast<float>(n), opt.grads(), loss.view());
    }
    std::vector<Tensor> out;
    for (const Parameter& p : opt.parameters()) out.push_back(Tensor::copy_of(p.grad, Device::CPU));
    out.push_back(std::move(loss));
    return out;
  };
  // BF16, and current scaling (its per-tensor amax is per micro-batch, so only BF16 is exact per token).
  const auto acc = grads_of({a, b}, "bf16"), one = grads_of({both}, "bf16");
  for (std::size_t i = 0; i < acc.size(); ++i) {
    double se = 0, sr = 0;
    for (int64_t j = 0; j < acc[i].numel(); ++j) {
      const double d = acc[i].ptr<float>()[j] - one[i].ptr<float>()[j];
      se += d * d;
      sr += static_cast<double>(one[i].ptr<float>()[j]) * one[i].ptr<float>()[j];
    }
    EXPECT_LE(std::sqrt(se / sr), 1e-5) << (i + 1 == acc.size() ? std::string("loss") : "parameter " + std::to_string(i));
  }
}

// Loss curves of every recipe on the same data and init; FP8 within 3% of BF16 (see the header).
TEST(TrainCpu, EveryRecipeLearnsAndFp8TracksBf16) {
  const TokenDataset data(tokens_path());
  const BatchSampler sampler(data, 7, 4, 32);
  const int64_t steps = 40;
  std::map<std::string, double> tail;
  for (const std::string recipe : {"bf16", "delayed", "current", "block"}) {
    TrainOptions to;
    to.lr = 3e-3;
    to.warmup_steps = 5;
    to.total_steps = steps;
    auto t = make_trainer(tiny128_512(), recipe, to);
    double first = 0, last5 = 0;
    for (int64_t s = 0; s < steps; ++s) {
      const StepResult r = t->step(batch_at(sampler, s));
      ASSERT_TRUE(std::isfinite(r.loss)) << recipe << " step " << s;
      ASSERT_FALSE(r.skipped) << recipe << " step " << s;
      if (s == 0) first = r.loss;
      if (s >= steps - 5) last5 += r.loss / 5;
    }
    tail[recipe] = last5;
    std::cout << "[ loss curve ] " << recipe << ": step 0 " << first << ", last 5 steps " << last5 << "\n";
    EXPECT_NEAR(first, std::log(512.0), 0.05) << recipe << ": a fresh model predicts ~uniformly";
    EXPECT_LT(last5, first - 1.0) << recipe << " did not learn";
  }
  for (const std::string recipe : {"delayed", "current", "block"}) {
    EXPECT_LE(std::fabs(tail[recipe] - tail["bf16"]) / tail["bf16"], 0.03) << recipe;
  }
}

// Run A: 6 steps. Run B: 3 steps, checkpoint, a NEW trainer loads it, 3 more. Losses and final weights equal A's
// bit for bit (the CPU backend is deterministic).
class ResumeCpu : public ::testing::TestWithParam<std::string> {};

TEST_P(ResumeCpu, ResumedRunEqualsUninterruptedBitForBit) {
  const std::string recipe = GetParam();
  const GemmaConfig cfg = recipe == "block" ? tiny128_512() : testing::tiny_config();
  const TokenDataset data(tokens_path());
  const BatchSampler sampler(data, 3, 2, 32);
  TrainOptions to;
  to.warmup_steps = 2;
  to.total_steps = 6;
  to.adamw.weight_decay = 0.1;
  std::vector<double> losses_a;
  auto a = make_trainer(cfg, recipe, to);
  for (int64_t s = 0; s < 6; ++s) losses_a.push_back(a->step(batch_at(sampler, s)).loss);

  const fs::path dir = temp_dir("resume_" + recipe);
  {
    auto b = make_trainer(cfg, recipe, to);
    for (int64_t s = 0; s < 3; ++s) ASSERT_EQ(b->step(batch_at(sampler, s)).loss, losses_a[s]) << "step " << s;
    save_run_checkpoint(*b, dir, {{"next_step", b->steps_done()}});
  }
  auto c = make_trainer(cfg, recipe, to);
  const nlohmann::json meta = c->load_checkpoint(latest_checkpoint(dir));
  EXPECT_EQ(meta["next_step"], 3);
  EXPECT_EQ(c->steps_done(), 3);
  for (int64_t s = 3; s < 6; ++s) {
    const double loss = c->step(batch_at(sampler, s)).loss;
    EXPECT_EQ(loss, losses_a[s]) << recipe << " step " << s << " after resume";
  }
  EXPECT_TRUE(testing::bitwise_equal(a->optimizer().masters().to(Device::CPU), c->optimizer().masters().to(Device::CPU)));
  EXPECT_TRUE(
      testing::bitwise_equal(a->optimizer().exp_avg_sq().to(Device::CPU), c->optimizer().exp_avg_sq().to(Device::CPU)));
  tg::remove_tree(dir);
}

INSTANTIATE_TEST_SUITE_P(Recipes, ResumeCpu, ::testing::Values("bf16", "delayed", "current", "block"));

// A second save of the same step swaps the new directory in (out/checkpoints/latest names it throughout), and a
// save removes the temporary directories that a killed save left behind (cli/tests/train_kill_check.sh kills one).
TEST(TrainCpu, ASecondSaveOfAStepReplacesItAndStaleTempDirsGo) {
  const TokenDataset data(tokens_path());
  const BatchSampler sampler(data, 3, 2, 16);
  auto t = make_trainer(testing::tiny_config(), "bf16");
  t->step(batch_at(sampler, 0));
  const fs::path out = temp_dir("resave");
  const fs::path dir = save_run_checkpoint(*t, out, {{"save", 1}});
  fs::create_directories(out / "checkpoints" / "step-00000001.tmp-999999");  // as a SIGKILLed save leaves it
  write_file_atomic(out / "checkpoints" / "step-00000001.tmp-999999" / "model.safetensors", "partial");
  EXPECT_EQ(save_run_checkpoint(*t, out, {{"save", 2}}), dir);
  EXPECT_EQ(latest_checkpoint(out), dir);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out / "checkpoints")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step-00000001"}));
  auto u = make_trainer(testing::tiny_config(), "bf16");
  EXPECT_EQ(u->load_checkpoint(dir), (nlohmann::json{{"save", 2}}));  // the second save's, complete
  EXPECT_EQ(u->steps_done(), 1);
  tg::remove_tree(out);
}

TEST(TrainCpu, CheckpointIsAnHfCheckpointAndCorruptionIsNamed) {
  const TokenDataset data(tokens_path());
  const BatchSampler sampler(data, 3, 2, 16);
  auto t = make_trainer(testing::tiny_config(), "delayed");
  t->step(batch_at(sampler, 0));
  const fs::path out = temp_dir("ckpt");
  const fs::path dir = save_run_checkpoint(*t, out, {});
  EXPECT_EQ(dir.filename(), "step-00000001");
  EXPECT_TRUE(fs::exists(dir / "scaling.safetensors"));
  // The weights are an HF checkpoint of the FP32 masters: the impl loader reads it back as BF16 = the model's.
  const ModelWeights w = load_weights(dir, {});
  EXPECT_TRUE(testing::bitwise_equal(w.embed.to(Device::CPU), t->model().weights().embed.to(Device::CPU)));

  // One flipped byte in a moment tensor: the load names the tensor.
  {
    std::string bytes = read_file(dir / "optimizer.safetensors");
    bytes[bytes.size() - 3] ^= 0x10;
    write_file_atomic(dir / "optimizer.safetensors", bytes);
  }
  auto u = make_trainer(testing::tiny_config(), "delayed");
  try {
    u->load_checkpoint(dir);
    ADD_FAILURE() << "a corrupt checkpoint loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is corrupt"), std::string::npos) << e.what();
  }
  // Another recipe or another model: refused.
  auto v = make_trainer(testing::tiny_config(), "current");
  try {
    v->load_checkpoint(dir);
    ADD_FAILURE() << "a delayed checkpoint loaded into a current-scaling run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("written under 'delayed"), std::string::npos) << e.what();
  }
  tg::remove_tree(out);
}

}  // namespace
}  // namespace tg::impl
