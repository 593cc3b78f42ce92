// Helpers of the generation tests (impl/generate): models, prompts, metrics, and the HF-fixture comparison rule.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "impl/generate/generator.h"
#include "impl/model.h"
#include "model_test_util.h"

namespace tg::impl::testing {

inline ModelOptions model_options(const std::string& recipe, Device device, bool fp8_only = false,
                                  bool fp8_lm_head = false) {
  ModelOptions o;
  o.recipe = Recipe::parse(recipe);
  o.device = device;
  o.storage = fp8_only ? WeightStorage::kFp8Only : WeightStorage::kMaster;
  o.fp8_lm_head = fp8_lm_head;
  return o;
}

// Logits large enough that greedy choices have margins (the default N(0, 0.02) init gives near-flat logits).
inline RandomInit visible_init() {
  RandomInit init;
  init.std = 0.05;
  init.norm_std = 0.3;
  return init;
}

inline double rel_rmse(std::span<const float> test, std::span<const float> ref) {
  double se = 0, sr = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    se += std::pow(static_cast<double>(test[i]) - ref[i], 2);
    sr += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(se / sr);
}

// Row r of a host F32 [rows, V] tensor.
inline std::span<const float> row(const Tensor& t, int64_t r) { return rows_of(t, r, r + 1); }

// HF-fixture rule (as reference/tests/test_hf_fixtures.cpp): tokens must agree step by step while HF's top-2
// margin at that step exceeds `margin`; the first disagreement below it ends the comparison (the runs have
// legitimately diverged). Returns the agreeing steps.
inline int64_t compare_while_confident(const std::vector<int64_t>& ours, const std::vector<int64_t>& hf,
                                       const std::vector<double>& margins, double margin, const std::string& what) {
  int64_t agreed = 0;
  for (std::size_t t = 0; t < hf.size(); ++t) {
    if (t >= ours.size()) {
      ADD_FAILURE() << what << ": impl stopped after " << ours.size() << " tokens, HF produced " << hf.size();
      return agreed;
    }
    if (ours[t] == hf[t]) {
      ++agreed;
      continue;
    }
    const double m = t < margins.size() ? margins[t] : 0.0;
    EXPECT_LT(m, margin) << what << ": step " << t << ": impl chose " << ours[t] << ", HF " << hf[t]
                         << " with a top-2 margin of " << m;
    return agreed;
  }
  return agreed;
}

// Unpadded prompts of an HF left-padded batch (ids and mask [B, L]).
inline std::vector<std::vector<int64_t>> unpad(const std::vector<std::vector<int64_t>>& ids,
                                               const std::vector<std::vector<int64_t>>& mask) {
  std::vector<std::vector<int64_t>> out;
  for (std::size_t r = 0; r < ids.size(); ++r) {
    std::vector<int64_t> p;
    for (std::size_t j = 0; j < ids[r].size(); ++j) {
      if (mask[r][j] != 0) p.push_back(ids[r][j]);
    }
    out.push_back(p);
  }
  return out;
}

}  // namespace tg::impl::testing
