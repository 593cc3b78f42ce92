// The comparisons the harness runs. Each adds one Comparison to the report and returns it (the reference
// is valid until the next comparison is added); an engine that throws, or returns results of the wrong
// shape, makes the comparison "error" (exit code 2) instead of escaping, so the other comparisons still run.
//
//   compare_forward     per prompt: every layer's tap [S, D] (elementwise metrics) and the final logits
//                       [S, V] (elementwise + next-token distributions: KL, top-1, top-5)
//   compare_generation  per prompt: greedy tokens, first divergence, the reference's margin there
//   compare_loss        two loss curves: per-step difference, tail mean, final and minimum validation loss,
//                       per-window distance, and the health (NaN/inf, spikes) of both; with a noise run, the
//                       distances are judged relative to the run-to-run noise
//   check_loss_health   one loss curve on its own
#pragma once

#include <string>
#include <string_view>

#include "parity/engine.h"
#include "parity/metrics.h"
#include "parity/prompts.h"
#include "parity/report.h"
#include "parity/thresholds.h"

namespace tg::parity {

struct CompareContext {
  const Thresholds& thresholds;
  std::string size_class;  // tiny | small | 2b | 7b (size_class_of)
};

// `prompts` must be runnable (PromptSet::runnable) and should be validated for the model
// (PromptSet::validate_for); an engine that rejects a token id makes the comparison "error".
Comparison& compare_forward(Report& report, Engine& ref, Engine& test, const PromptSet& prompts,
                            const CompareContext& ctx);

// A divergence is a near-tie (not a failure) when the reference preferred its own token over the test's by
// less than logits.near_tie_margin, read from the reference's logits at the divergence (one extra forward
// of the reference on prompt + its tokens so far). Both the gap to the test's token and the reference's
// top-2 margin are reported; the gap decides (it equals the margin when the test picked the runner-up).
Comparison& compare_generation(Report& report, Engine& ref, Engine& test, const PromptSet& prompts,
                               const GenerateOptions& gen, const CompareContext& ctx);

// A second run of the reference that differs from it by noise only: another init seed, the same data order
// (so the batch-to-batch variation of the loss cancels in a per-step difference, as it does between the
// reference and impl). The distance between the reference and it measures run-to-run noise.
struct NoiseRun {
  const LossCurve* curve = nullptr;  // nullptr: no noise run
  std::string label;                 // "reference_seed2[bf16]"
};

// `*_recipe` are recipe strings (the precision of the run that wrote each curve); `*_label` name them.
//
// Without a noise run the fixed thresholds judge: loss.tail_mean_rel_diff, loss.final_val_ratio (and any
// threshold an override file gives the other loss.* distances). With one, the distances of the pair
//   loss.tail_mean_rel_diff, loss.final_val_rel_diff, loss.min_val_rel_diff, and
//   loss.window_mean_abs_rel_diff per window (subject part "loss.window.<i>")
// are each judged noise-relative: distance(ref, test) <= loss.noise_k x distance(ref, noise) +
// loss.noise_floor (Check::limit holds that bound; the noise distance is an info check "loss.noise.<metric>"),
// and loss.final_val_ratio is info. The noise run must cover the pair's common steps; otherwise a note says
// so and the fixed thresholds judge. The health of the noise curve is not judged here.
Comparison& compare_loss(Report& report, const LossCurve& ref, std::string_view ref_label,
                         std::string_view ref_recipe, const LossCurve& test, std::string_view test_label,
                         std::string_view test_recipe, const CompareContext& ctx, const NoiseRun& noise = {});
Comparison& check_loss_health(Report& report, const LossCurve& curve, std::string_view label,
                              std::string_view recipe, const CompareContext& ctx);

}  // namespace tg::parity
