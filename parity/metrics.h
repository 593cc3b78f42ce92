// Parity metrics: pure functions over host float arrays, token sequences and loss curves. All sums run in
// double. The harness (parity/compare.h) turns these numbers into checks against parity/thresholds.json.
//
// Conventions
// - "ref" is the reference side of a comparison, "test" the side under test; errors are test - ref.
// - Non-finite values never compare as small: a position where the two values differ and either is NaN or
//   infinite counts in `nonfinite`, and makes max_abs_err / max_rel_err / rmse infinite and cosine NaN, so
//   every threshold on them fails (NaN never passes a threshold). Equal infinities count as equal.
// - Relative error uses a floor for near-zero references: |t - r| / max(|r|, rel_floor) with
//   rel_floor = kRelFloorFraction * max_j |r_j| (and at least FLT_MIN). Elements 1000x smaller than the
//   array's largest magnitude would otherwise dominate max_rel_err through cancellation noise alone.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tg::parity {

inline constexpr double kRelFloorFraction = 1e-3;

// ---- Elementwise comparison of two equal-length arrays ---------------------------------------------

struct ArrayStats {
  int64_t count = 0;
  int64_t nonfinite = 0;        // positions where the values differ and either is NaN/inf
  int64_t first_nonfinite_index = -1;
  double max_abs_err = 0.0;     // max |t - r|
  int64_t max_abs_index = -1;   // flat index of max_abs_err (-1 when every error is 0)
  double max_rel_err = 0.0;     // max |t - r| / max(|r|, rel_floor)
  int64_t max_rel_index = -1;
  double rel_floor = 0.0;       // the floor used (see the header comment)
  double rmse = 0.0;            // sqrt(mean((t - r)^2))
  double ref_range = 0.0;       // max(r) - min(r) over finite r
  double rmse_over_range = 0.0; // rmse / ref_range: TE's FP8 attention check (0 if both are 0, inf if only range is)
  double cosine = 1.0;          // <r, t> / (|r| |t|); 1 when both are all-zero, 0 when exactly one is
};

// Throws tg::Error when the sizes differ or the arrays are empty.
ArrayStats compare_arrays(std::span<const float> ref, std::span<const float> test);

// torch.allclose's element rule (TE's assert_allclose): an element mismatches when
// |t - r| > atol + rtol * |r|, or when either is NaN, or when exactly one is infinite / the infinities differ.
int64_t count_mismatches(std::span<const float> ref, std::span<const float> test, double rtol, double atol);

// ---- Next-token distributions (one row of logits each) -----------------------------------------------

// KL(softmax(ref) || softmax(test)) in nats, computed with log-softmax in double (stable for logits of any
// magnitude). 0 for identical rows; tiny negative rounding results are clamped to 0. NaN when either row
// holds a non-finite value.
double kl_divergence(std::span<const float> ref_logits, std::span<const float> test_logits);

// Indices of the k largest values, largest first; ties go to the lower index; NaN ranks below everything.
std::vector<int32_t> top_k(std::span<const float> logits, int k);

struct RowStats {
  double kl = 0.0;
  int32_t ref_top1 = -1, test_top1 = -1;
  double ref_margin = 0.0;  // ref's top-2 margin r[top1] - r[top2] (+inf when V == 1)
  // How much the reference prefers its own choice over the test's: r[ref_top1] - r[test_top1] (0 when they
  // agree). Equals ref_margin when the test picked the reference's runner-up.
  double ref_gap_to_test_top1 = 0.0;
  int top5_overlap = 0;  // |top5(r) ∩ top5(t)|, k = min(5, V)
};
RowStats compare_logit_row(std::span<const float> ref, std::span<const float> test);

// Rows [S, V] of logits, aggregated over positions.
struct LogitsStats {
  int64_t rows = 0;
  double kl_max = 0.0;
  int64_t kl_max_row = 0;
  double kl_mean = 0.0;
  double top1_agreement = 1.0;        // fraction of rows whose argmax agrees
  int64_t top1_disagreements = 0;
  // Disagreements where the reference preferred its choice by at least near_tie_margin
  // (ref_gap_to_test_top1 >= margin): real errors, not near-ties.
  int64_t top1_hard_disagreements = 0;
  int64_t first_hard_row = -1;        // first row of a hard disagreement
  int64_t first_near_tie_row = -1;    // first row of a near-tie disagreement
  double max_disagreement_gap = 0.0;  // the largest ref[ref_top1] - ref[test_top1] over the disagreements
  int64_t max_gap_row = -1;           // its row (-1: no disagreement)
  double top5_overlap = 1.0;          // mean over rows of |top5(r) ∩ top5(t)| / k
  std::vector<double> ref_margins;    // the reference's top-2 margin at each row
};
// `ref` and `test` are row-major [rows, vocab]. Throws tg::Error on size mismatches.
LogitsStats compare_logits(std::span<const float> ref, std::span<const float> test, int64_t vocab,
                           double near_tie_margin);

// ---- Greedy generations ----------------------------------------------------------------------------

struct GenerationStats {
  int64_t ref_length = 0, test_length = 0;
  int64_t common_prefix = 0;      // tokens equal from the start
  double token_agreement = 1.0;   // common_prefix / max(ref_length, test_length) (1 when both are empty)
  int64_t first_divergence = -1;  // first step where they differ (or where one ended); -1: identical
  int32_t ref_token = -1, test_token = -1;  // tokens at first_divergence (-1: that sequence had ended)
};
GenerationStats compare_generations(std::span<const int32_t> ref, std::span<const int32_t> test);

// ---- Loss curves (JSON lines from `tegemma train`) -------------------------------------------------

struct LossPoint {
  int64_t step = 0;
  std::optional<double> loss;      // NaN/inf are kept (that is what divergence detection looks for)
  std::optional<double> val_loss;
};

struct LossCurve {
  std::string source;              // file name or label
  std::vector<LossPoint> points;   // sorted by step, one per step
};

// One JSON object per line; blank lines are skipped. Each object needs an integer "step" >= 0 and at least
// one of "loss" / "val_loss": a number, null (what JSON writers emit for NaN) or one of the strings "nan",
// "inf", "-inf". Other keys (grad_norm, lr, ...) are ignored. Records of the same step are merged (a
// validation record may follow the step's training record); a key given twice for one step is an error.
// Errors name the source and line.
LossCurve parse_loss_curve(std::string_view jsonl, std::string_view source);
LossCurve read_loss_curve(const std::filesystem::path& path);

struct LossComparison {
  int64_t common_steps = 0;              // steps where both curves have a training loss
  std::vector<int64_t> steps;            // those steps
  std::vector<double> step_diffs;        // test - ref at each
  double max_abs_step_diff = 0.0;
  int64_t max_abs_step_diff_step = -1;
  double mean_abs_step_diff = 0.0;
  int64_t tail_steps = 0;                // the last 10% of common steps (at least 1)
  double tail_mean_ref = 0.0, tail_mean_test = 0.0;
  double tail_mean_rel_diff = 0.0;       // |tail_mean_test - tail_mean_ref| / |tail_mean_ref|
  std::optional<int64_t> final_val_step; // last step where both have a validation loss
  double final_val_ref = 0.0, final_val_test = 0.0;
  double final_val_ratio = 0.0;          // final_val_test / final_val_ref
  double final_val_rel_diff = 0.0;       // |final_val_test - final_val_ref| / |final_val_ref|
  int64_t val_steps = 0;                 // steps where both have a validation loss
  double min_val_ref = 0.0, min_val_test = 0.0;  // each curve's minimum over those steps
  double min_val_rel_diff = 0.0;         // |min_val_test - min_val_ref| / |min_val_ref|
  // The common steps cut into `windows` contiguous windows of (nearly) equal length, in order: where along
  // the run two curves part (a per-step difference is too noisy to read, a whole-run mean hides the when).
  struct Window {
    int64_t first_step = 0, last_step = 0, steps = 0;
    double mean_abs_rel_diff = 0.0;      // mean over its steps of |test - ref| / |ref|
  };
  std::vector<Window> windows;
};
// `windows` >= 1 (fewer when there are fewer common steps). Throws tg::Error when the curves share no step
// with a training loss.
LossComparison compare_loss_curves(const LossCurve& ref, const LossCurve& test, int64_t windows = 5);

struct CurveHealth {
  int64_t steps = 0;                     // steps with a training loss
  int64_t nonfinite = 0;
  int64_t first_nonfinite_step = -1;
  // A spike: a finite loss > spike_factor x the median of the previous `window` finite losses (checked
  // once `window` finite losses precede it).
  int64_t spikes = 0;
  int64_t first_spike_step = -1;
  double first_spike_loss = 0.0, first_spike_median = 0.0;
};
CurveHealth check_curve_health(const LossCurve& curve, double spike_factor, int64_t window);

}  // namespace tg::parity
