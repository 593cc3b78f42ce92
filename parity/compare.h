// The comparisons the harness runs. Each adds one Comparison to the report and returns it (the reference
// is valid until the next comparison is added); an engine that throws, or returns results of the wrong
// shape, makes the comparison "error" (exit code 2) instead of escaping, so the other comparisons still run.
//
//   compare_forward     per prompt: every layer's tap [S, D] (elementwise metrics) and the final logits
//                       [S, V] (elementwise + next-token distributions: KL, top-1, top-5)
//   compare_generation  per prompt: greedy tokens, first divergence, the reference's margin there
//   compare_loss        two loss curves: per-step difference, tail mean, final validation loss, and the
//                       health (NaN/inf, spikes) of both
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

// `*_recipe` are recipe strings (the precision of the run that wrote each curve); `*_label` name them.
Comparison& compare_loss(Report& report, const LossCurve& ref, std::string_view ref_label,
                         std::string_view ref_recipe, const LossCurve& test, std::string_view test_label,
                         std::string_view test_recipe, const CompareContext& ctx);
Comparison& check_loss_health(Report& report, const LossCurve& curve, std::string_view label,
                              std::string_view recipe, const CompareContext& ctx);

}  // namespace tg::parity
