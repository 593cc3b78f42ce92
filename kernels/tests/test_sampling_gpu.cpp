// kernels/sampling on CUDA against the CPU twin: every state array bit for bit after several decode steps, for
// greedy and sampling configurations (temperature, top-k, top-p, repetition penalty, min new tokens, EOS,
// budgets, finished rows), BF16 and F32 logits, Gemma's vocabulary and awkward ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/numeric.h"
#include "gpu_test_util.h"
#include "kernels/sampling/sampling.h"

namespace tg::kernels {
namespace {

struct State {
  Tensor ints;  // I32 [7, B]: tokens, positions, seqlens, generated, max_new, finished, last
  Tensor out, seen;
  Tensor workspace;  // empty, or I32 [B, kSampleWorkspaceWords] of zeros: the split greedy path
  Tensor flags;      // empty, or I32 [2, B]: DecodeState::flags (the copy of last | finished)
  DecodeState view() const {
    const int64_t b = ints.shape()[1];
    auto row = [&](int64_t r) { return TensorView(ints.ptr<int32_t>() + r * b, DType::I32, Shape{b}, ints.device()); };
    DecodeState st;
    st.tokens = row(0);
    st.positions = row(1);
    st.seqlens = row(2);
    st.generated = row(3);
    st.max_new = row(4);
    st.finished = row(5);
    st.last = row(6);
    st.out_tokens = out.view();
    st.seen = seen.view();
    if (workspace.data() != nullptr) st.workspace = workspace.view();
    if (flags.data() != nullptr) st.flags = flags.view();
    return st;
  }
  State to(Device d) const {
    const auto opt = [&](const Tensor& t) { return t.data() == nullptr ? Tensor{} : t.to(d); };
    return State{ints.to(d), out.to(d), seen.to(d), opt(workspace), opt(flags)};
  }
};

State initial_state(int64_t b, int64_t v, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  State s{Tensor::zeros(DType::I32, {7, b}), Tensor::zeros(DType::I32, {b, n}),
          Tensor::zeros(DType::I32, {b, seen_words(v)}), Tensor{}, Tensor{}};
  int32_t* x = s.ints.ptr<int32_t>();
  for (int64_t r = 0; r < b; ++r) {
    x[1 * b + r] = static_cast<int32_t>(rng() % 100);    // positions
    x[2 * b + r] = x[1 * b + r] + 1;                     // seqlens
    x[4 * b + r] = 2 + static_cast<int32_t>(rng() % 6);  // budgets
    x[5 * b + r] = r == 1 ? 1 : 0;                       // row 1 finished before the first step
  }
  auto* seen = reinterpret_cast<uint32_t*>(s.seen.data());
  for (int64_t i = 0; i < s.seen.numel(); ++i) seen[i] = rng() & rng();  // about a quarter of the tokens seen
  return s;
}

void expect_same(const State& gpu, const State& cpu, const std::string& what) {
  const State g = gpu.to(Device::CPU);
  EXPECT_EQ(0, std::memcmp(g.ints.data(), cpu.ints.data(), cpu.ints.nbytes())) << what << ": state";
  EXPECT_EQ(0, std::memcmp(g.out.data(), cpu.out.data(), cpu.out.nbytes())) << what << ": out_tokens";
  EXPECT_EQ(0, std::memcmp(g.seen.data(), cpu.seen.data(), cpu.seen.nbytes())) << what << ": seen";
  if (cpu.flags.data() != nullptr) {
    EXPECT_EQ(0, std::memcmp(g.flags.data(), cpu.flags.data(), cpu.flags.nbytes())) << what << ": flags";
    // The copy holds what the call left in last | finished (rows 6 and 5 of ints).
    const int64_t b = cpu.ints.shape()[1];
    const int32_t* x = cpu.ints.ptr<int32_t>();
    const int32_t* f = cpu.flags.ptr<int32_t>();
    for (int64_t r = 0; r < b; ++r) {
      EXPECT_EQ(f[r], x[6 * b + r]) << what << ": flags last, row " << r;
      EXPECT_EQ(f[b + r], x[5 * b + r]) << what << ": flags finished, row " << r;
    }
  }
}

// Every configuration twice on the GPU: one block per row, and with DecodeState::workspace (greedy rows split over
// kGreedySplit blocks; sampling rows ignore it) and DecodeState::flags. The four steps per configuration also check
// that the split leaves its workspace zeroed for the next call (a ticket left behind would stop every later greedy
// step from deciding).
TEST(SamplingGpu, MatchesCpuTwinBitForBit) {
  TG_REQUIRE_CUDA();
  struct Case {
    int64_t b, v;
    DType dtype;
  };
  for (const Case& c : {Case{5, 1001, DType::BF16}, Case{3, 256000, DType::BF16}, Case{4, 32000, DType::F32},
                        Case{1, 7, DType::BF16}}) {
    std::vector<SamplingParams> configs;
    SamplingParams greedy;
    greedy.mode = SamplingMode::kGreedy;
    configs.push_back(greedy);
    SamplingParams pen = greedy;
    pen.repetition_penalty = 1.3f;
    pen.min_new_tokens = 2;
    pen.num_eos = 2;
    pen.eos[0] = 1;
    pen.eos[1] = static_cast<int32_t>(c.v - 1);
    configs.push_back(pen);
    for (auto [t, k, p] : {std::tuple{1.0f, 0, 1.0},
                           {0.7f, 50, 0.9},
                           {1.3f, 0, 0.95},
                           {0.5f, 1, 1.0},
                           {1.0f, 20, 0.0},
                           {0.9f, static_cast<int>(c.v) - 1, 0.5}}) {
      SamplingParams s;
      s.mode = SamplingMode::kSample;
      s.temperature = t;
      s.top_k = k;
      s.set_top_p(p);
      s.repetition_penalty = 1.1f;
      s.num_eos = 1;
      s.eos[0] = 2;
      s.set_seed(1234 + static_cast<uint64_t>(k));
      configs.push_back(s);
    }
    for (std::size_t run = 0; run < 2 * configs.size(); ++run) {
      const std::size_t ci = run / 2;
      const bool split = run % 2 == 1;
      const std::string what = "B=" + std::to_string(c.b) + " V=" + std::to_string(c.v) + " config " +
                               std::to_string(ci) + (split ? " split" : "");
      State cpu = initial_state(c.b, c.v, 8, static_cast<uint32_t>(ci));
      if (split) {  // every entry must be overwritten
        cpu.flags = Tensor::empty(DType::I32, {2, c.b});
        std::fill_n(cpu.flags.ptr<int32_t>(), 2 * c.b, 77);
      }
      State gpu = cpu.to(Device::CUDA);
      if (split) gpu.workspace = Tensor::zeros(DType::I32, {c.b, kSampleWorkspaceWords}, Device::CUDA);
      Tensor params = Tensor::empty(DType::U8, {int64_t{sizeof(SamplingParams)}});
      std::memcpy(params.data(), &configs[ci], sizeof(SamplingParams));
      const Tensor params_gpu = params.to(Device::CUDA);
      for (int step = 0; step < 4; ++step) {
        // Fresh logits per step (BF16 ties included); a strong token 1 (an EOS in one config) now and then.
        Tensor logits = testing::random_host(c.dtype, {c.b, c.v}, static_cast<uint32_t>(31 * ci + step), 2.5f);
        const Tensor logits_gpu = logits.to(Device::CUDA);
        cpu::sample_tokens(logits.view(), params.view(), cpu.view());
        sample_tokens(logits_gpu.view(), params_gpu.view(), gpu.view());
        expect_same(gpu, cpu, what + " step " + std::to_string(step));
      }
      if (split) {
        const Tensor ws = gpu.workspace.to(Device::CPU);
        for (int64_t r = 0; r < c.b; ++r) {
          EXPECT_EQ(ws.ptr<int32_t>()[r * kSampleWorkspaceWords], 0) << what << ": row " << r << "'s ticket";
        }
      }
    }
  }
}

// NaN logits (a broken model's): the greedy choice skips them on both sides -- a NaN at index 0, a NaN between two
// tied maxima, a row of NaNs only (token 0) -- with and without the split (the CPU twin's greedy is the key maximum
// of sampling_math.h, the kernel's comparisons skip NaN).
TEST(SamplingGpu, NanLogitsMatchTheCpuTwin) {
  TG_REQUIRE_CUDA();
  const int64_t b = 4, v = 3000;
  Tensor logits = testing::random_host(DType::F32, {b, v}, 21, 2.0f);
  float* x = logits.ptr<float>();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  x[0] = nan;                                   // row 0: NaN first
  x[v + 5] = 50.0f;                             // row 1: a tie around a NaN
  x[v + 6] = nan;
  x[v + 7] = 50.0f;
  for (int64_t i = 0; i < v; ++i) x[2 * v + i] = nan;  // row 2: all NaN
  x[3 * v + v - 1] = nan;                       // row 3: NaN last
  SamplingParams greedy;
  greedy.mode = SamplingMode::kGreedy;
  for (const bool split : {false, true}) {
    State cpu = initial_state(b, v, 4, 3);
    cpu.ints.ptr<int32_t>()[5 * b + 1] = 0;  // every row running
    State gpu = cpu.to(Device::CUDA);
    if (split) gpu.workspace = Tensor::zeros(DType::I32, {b, kSampleWorkspaceWords}, Device::CUDA);
    Tensor params = Tensor::empty(DType::U8, {int64_t{sizeof(SamplingParams)}});
    std::memcpy(params.data(), &greedy, sizeof(SamplingParams));
    cpu::sample_tokens(logits.view(), params.view(), cpu.view());
    sample_tokens(logits.to(Device::CUDA).view(), params.to(Device::CUDA).view(), gpu.view());
    expect_same(gpu, cpu, split ? "split" : "one block");
    const int32_t* last = cpu.ints.ptr<int32_t>() + 6 * b;
    EXPECT_EQ(last[1], 5) << "the tie's lower index, past the NaN";
    EXPECT_EQ(last[2], 0) << "an all-NaN row";
  }
}

TEST(SamplingGpu, StridedLogitsRows) {
  TG_REQUIRE_CUDA();
  const int64_t b = 3, v = 5000, stride = 5056;
  Tensor wide = testing::random_host(DType::BF16, {b, stride}, 77, 2.0f);
  const TensorView logits(wide.data(), DType::BF16, Shape{b, v}, Shape{stride, 1}, Device::CPU);
  SamplingParams s;
  s.mode = SamplingMode::kSample;
  s.top_k = 100;
  s.set_top_p(0.8);
  Tensor params = Tensor::empty(DType::U8, {int64_t{sizeof(SamplingParams)}});
  std::memcpy(params.data(), &s, sizeof(s));
  State cpu = initial_state(b, v, 4, 9);
  State gpu = cpu.to(Device::CUDA);
  const Tensor wide_gpu = wide.to(Device::CUDA);
  const TensorView logits_gpu(wide_gpu.data(), DType::BF16, Shape{b, v}, Shape{stride, 1}, Device::CUDA);
  cpu::sample_tokens(logits, params.view(), cpu.view());
  const Tensor params_gpu = params.to(Device::CUDA);
  sample_tokens(logits_gpu, params_gpu.view(), gpu.view());
  expect_same(gpu, cpu, "strided");
}

}  // namespace
}  // namespace tg::kernels
