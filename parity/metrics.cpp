#include "parity/metrics.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/file_io.h"

namespace tg::parity {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Equal values (including equal infinities) are "the same"; any other pair involving NaN/inf is not.
bool same_nonfinite(double r, double t) { return !std::isnan(r) && !std::isnan(t) && r == t; }

void check_pair(std::span<const float> ref, std::span<const float> test, const char* what) {
  TG_CHECK(ref.size() == test.size(), what, ": reference and test sizes differ: ", ref.size(), " vs ",
           test.size());
  TG_CHECK(!ref.empty(), what, ": empty arrays");
}

// Ranking key: NaN ranks below every number (including -inf).
bool ranks_above(float a, int32_t ia, float b, int32_t ib) {
  const bool na = std::isnan(a), nb = std::isnan(b);
  if (na != nb) return nb;
  if (!na && a != b) return a > b;
  return ia < ib;
}

}  // namespace

ArrayStats compare_arrays(std::span<const float> ref, std::span<const float> test) {
  check_pair(ref, test, "compare_arrays");
  ArrayStats s;
  s.count = static_cast<int64_t>(ref.size());

  double max_abs_ref = 0.0, rmin = kInf, rmax = -kInf;
  for (float r : ref) {
    if (!std::isfinite(r)) continue;
    max_abs_ref = std::max(max_abs_ref, std::fabs(double(r)));
    rmin = std::min(rmin, double(r));
    rmax = std::max(rmax, double(r));
  }
  s.ref_range = rmax >= rmin ? rmax - rmin : 0.0;
  s.rel_floor = std::max(kRelFloorFraction * max_abs_ref, double(FLT_MIN));

  double sum_sq = 0.0, dot = 0.0, nr = 0.0, nt = 0.0;
  for (int64_t i = 0; i < s.count; ++i) {
    const double r = ref[i], t = test[i];
    if (!std::isfinite(r) || !std::isfinite(t)) {
      if (same_nonfinite(r, t)) continue;
      if (s.nonfinite++ == 0) s.first_nonfinite_index = i;
      continue;
    }
    const double e = std::fabs(t - r);
    if (e > s.max_abs_err) {
      s.max_abs_err = e;
      s.max_abs_index = i;
    }
    const double rel = e / std::max(std::fabs(r), s.rel_floor);
    if (rel > s.max_rel_err) {
      s.max_rel_err = rel;
      s.max_rel_index = i;
    }
    sum_sq += e * e;
    dot += r * t;
    nr += r * r;
    nt += t * t;
  }
  if (s.nonfinite > 0) {
    s.max_abs_err = s.max_rel_err = s.rmse = s.rmse_over_range = kInf;
    s.cosine = kNaN;
    return s;
  }
  s.rmse = std::sqrt(sum_sq / double(s.count));
  if (s.ref_range > 0.0) {
    s.rmse_over_range = s.rmse / s.ref_range;
  } else {
    s.rmse_over_range = s.rmse == 0.0 ? 0.0 : kInf;
  }
  if (nr == 0.0 && nt == 0.0) {
    s.cosine = 1.0;
  } else if (nr == 0.0 || nt == 0.0) {
    s.cosine = 0.0;
  } else {
    s.cosine = dot / (std::sqrt(nr) * std::sqrt(nt));
  }
  return s;
}

int64_t count_mismatches(std::span<const float> ref, std::span<const float> test, double rtol, double atol) {
  check_pair(ref, test, "count_mismatches");
  TG_CHECK(rtol >= 0.0 && atol >= 0.0, "count_mismatches: rtol and atol must be >= 0, got ", rtol, ", ", atol);
  int64_t n = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double r = ref[i], t = test[i];
    if (!std::isfinite(r) || !std::isfinite(t)) {
      n += same_nonfinite(r, t) ? 0 : 1;
      continue;
    }
    n += std::fabs(t - r) > atol + rtol * std::fabs(r) ? 1 : 0;
  }
  return n;
}

double kl_divergence(std::span<const float> ref_logits, std::span<const float> test_logits) {
  check_pair(ref_logits, test_logits, "kl_divergence");
  double mr = -kInf, mt = -kInf;
  for (std::size_t i = 0; i < ref_logits.size(); ++i) {
    if (!std::isfinite(ref_logits[i]) || !std::isfinite(test_logits[i])) return kNaN;
    mr = std::max(mr, double(ref_logits[i]));
    mt = std::max(mt, double(test_logits[i]));
  }
  // log p_i = (r_i - mr) - log sum_j exp(r_j - mr): every exponent is <= 0, so nothing overflows.
  double sr = 0.0, st = 0.0;
  for (std::size_t i = 0; i < ref_logits.size(); ++i) {
    sr += std::exp(double(ref_logits[i]) - mr);
    st += std::exp(double(test_logits[i]) - mt);
  }
  // (x - max) is exact in double for float x; subtracting the max first keeps 1e4-sized logits from
  // costing digits in log p.
  const double log_sr = std::log(sr), log_st = std::log(st);
  double kl = 0.0;
  for (std::size_t i = 0; i < ref_logits.size(); ++i) {
    const double logp = (double(ref_logits[i]) - mr) - log_sr;
    const double logq = (double(test_logits[i]) - mt) - log_st;
    const double p = std::exp(logp);
    if (p > 0.0) kl += p * (logp - logq);
  }
  return std::max(kl, 0.0);
}

std::vector<int32_t> top_k(std::span<const float> logits, int k) {
  TG_CHECK(k >= 1, "top_k: k must be >= 1, got ", k);
  k = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(k), logits.size()));
  std::vector<int32_t> idx(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return ranks_above(logits[a], a, logits[b], b);
  });
  idx.resize(static_cast<std::size_t>(k));
  return idx;
}

RowStats compare_logit_row(std::span<const float> ref, std::span<const float> test) {
  check_pair(ref, test, "compare_logit_row");
  RowStats s;
  s.kl = kl_divergence(ref, test);
  const std::vector<int32_t> r5 = top_k(ref, 5), t5 = top_k(test, 5);
  s.ref_top1 = r5[0];
  s.test_top1 = t5[0];
  s.ref_margin = r5.size() > 1 ? double(ref[r5[0]]) - double(ref[r5[1]]) : kInf;
  s.ref_gap_to_test_top1 = double(ref[s.ref_top1]) - double(ref[s.test_top1]);
  for (int32_t a : r5) s.top5_overlap += std::count(t5.begin(), t5.end(), a) > 0 ? 1 : 0;
  return s;
}

LogitsStats compare_logits(std::span<const float> ref, std::span<const float> test, int64_t vocab,
                           double near_tie_margin) {
  TG_CHECK(vocab >= 1, "compare_logits: vocab must be >= 1, got ", vocab);
  check_pair(ref, test, "compare_logits");
  TG_CHECK(ref.size() % static_cast<std::size_t>(vocab) == 0, "compare_logits: ", ref.size(),
           " values are not whole rows of vocab ", vocab);
  LogitsStats s;
  s.rows = static_cast<int64_t>(ref.size()) / vocab;
  const double k = double(std::min<int64_t>(5, vocab));
  double kl_sum = 0.0, overlap_sum = 0.0;
  int64_t agree = 0;
  for (int64_t row = 0; row < s.rows; ++row) {
    const auto r = ref.subspan(static_cast<std::size_t>(row * vocab), static_cast<std::size_t>(vocab));
    const auto t = test.subspan(static_cast<std::size_t>(row * vocab), static_cast<std::size_t>(vocab));
    const RowStats rs = compare_logit_row(r, t);
    kl_sum += rs.kl;
    // NaN must win the max so that it reaches the threshold check.
    if (row == 0 || rs.kl > s.kl_max || (std::isnan(rs.kl) && !std::isnan(s.kl_max))) {
      s.kl_max = rs.kl;
      s.kl_max_row = row;
    }
    s.ref_margins.push_back(rs.ref_margin);
    overlap_sum += rs.top5_overlap / k;
    if (rs.ref_top1 == rs.test_top1) {
      ++agree;
      continue;
    }
    ++s.top1_disagreements;
    if (s.max_gap_row < 0 || rs.ref_gap_to_test_top1 > s.max_disagreement_gap || std::isnan(rs.ref_gap_to_test_top1)) {
      s.max_disagreement_gap = rs.ref_gap_to_test_top1;
      s.max_gap_row = row;
    }
    // A NaN gap (non-finite logits) is a hard disagreement: `!(gap < margin)`.
    if (!(rs.ref_gap_to_test_top1 < near_tie_margin)) {
      ++s.top1_hard_disagreements;
      if (s.first_hard_row < 0) s.first_hard_row = row;
    } else if (s.first_near_tie_row < 0) {
      s.first_near_tie_row = row;
    }
  }
  s.kl_mean = kl_sum / double(s.rows);
  s.top1_agreement = double(agree) / double(s.rows);
  s.top5_overlap = overlap_sum / double(s.rows);
  return s;
}

GenerationStats compare_generations(std::span<const int32_t> ref, std::span<const int32_t> test) {
  GenerationStats s;
  s.ref_length = static_cast<int64_t>(ref.size());
  s.test_length = static_cast<int64_t>(test.size());
  const int64_t n = std::min(s.ref_length, s.test_length);
  while (s.common_prefix < n && ref[s.common_prefix] == test[s.common_prefix]) ++s.common_prefix;
  const int64_t longest = std::max(s.ref_length, s.test_length);
  s.token_agreement = longest == 0 ? 1.0 : double(s.common_prefix) / double(longest);
  if (s.common_prefix < longest) {
    s.first_divergence = s.common_prefix;
    s.ref_token = s.common_prefix < s.ref_length ? ref[s.common_prefix] : -1;
    s.test_token = s.common_prefix < s.test_length ? test[s.common_prefix] : -1;
  }
  return s;
}

// ---- Loss curves -------------------------------------------------------------------------------------

namespace {

double loss_value(const nlohmann::json& v, std::string_view source, int64_t line,
                                 const char* key) {
  if (v.is_null()) return kNaN;  // JSON writers turn NaN/inf into null
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "nan" || s == "NaN") return kNaN;
    if (s == "inf" || s == "Infinity") return kInf;
    if (s == "-inf" || s == "-Infinity") return -kInf;
  }
  TG_FAIL(source, ":", line, ": \"", key, "\" must be a number, null, \"nan\", \"inf\" or \"-inf\", got ",
          v.dump());
}

}  // namespace

LossCurve parse_loss_curve(std::string_view jsonl, std::string_view source) {
  std::map<int64_t, LossPoint> by_step;
  int64_t line_no = 0;
  std::size_t pos = 0;
  while (pos < jsonl.size()) {
    const std::size_t end = std::min(jsonl.find('\n', pos), jsonl.size());
    const std::string_view line = jsonl.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      TG_FAIL(source, ":", line_no, ": not valid JSON (", e.what(), ")");
    }
    TG_CHECK(j.is_object(), source, ":", line_no, ": expected a JSON object, got ", j.type_name());
    TG_CHECK(j.contains("step"), source, ":", line_no, ": missing \"step\"");
    const auto& st = j["step"];
    TG_CHECK(st.is_number_integer() && st.get<int64_t>() >= 0, source, ":", line_no,
             ": \"step\" must be an integer >= 0, got ", st.dump());
    const int64_t step = st.get<int64_t>();
    TG_CHECK(j.contains("loss") || j.contains("val_loss"), source, ":", line_no,
             ": a record needs \"loss\" or \"val_loss\"");
    LossPoint& p = by_step[step];
    p.step = step;
    if (j.contains("loss")) {
      TG_CHECK(!p.loss, source, ":", line_no, ": step ", step, " has a second \"loss\"");
      p.loss = loss_value(j["loss"], source, line_no, "loss");
    }
    if (j.contains("val_loss")) {
      TG_CHECK(!p.val_loss, source, ":", line_no, ": step ", step, " has a second \"val_loss\"");
      p.val_loss = loss_value(j["val_loss"], source, line_no, "val_loss");
    }
  }
  LossCurve c;
  c.source = std::string(source);
  for (auto& [step, p] : by_step) c.points.push_back(p);
  TG_CHECK(!c.points.empty(), source, ": no loss records");
  return c;
}

LossCurve read_loss_curve(const std::filesystem::path& path) {
  return parse_loss_curve(read_file(path), path.string());
}

LossComparison compare_loss_curves(const LossCurve& ref, const LossCurve& test, int64_t windows) {
  TG_CHECK(windows >= 1, "compare_loss_curves: windows must be >= 1, got ", windows);
  LossComparison c;
  std::map<int64_t, double> test_loss, test_val;
  for (const auto& p : test.points) {
    if (p.loss) test_loss[p.step] = *p.loss;
    if (p.val_loss) test_val[p.step] = *p.val_loss;
  }
  for (const auto& p : ref.points) {
    if (p.loss) {
      auto it = test_loss.find(p.step);
      if (it != test_loss.end()) {
        c.steps.push_back(p.step);
        c.step_diffs.push_back(it->second - *p.loss);
      }
    }
    if (p.val_loss) {
      auto it = test_val.find(p.step);
      if (it != test_val.end()) {
        c.final_val_step = p.step;
        c.final_val_ref = *p.val_loss;
        c.final_val_test = it->second;
        // fmin: a NaN on one side does not hide the other's minimum (nonfinite losses are judged elsewhere).
        c.min_val_ref = c.val_steps == 0 ? *p.val_loss : std::fmin(c.min_val_ref, *p.val_loss);
        c.min_val_test = c.val_steps == 0 ? it->second : std::fmin(c.min_val_test, it->second);
        ++c.val_steps;
      }
    }
  }
  c.common_steps = static_cast<int64_t>(c.steps.size());
  TG_CHECK(c.common_steps > 0, "loss curves ", ref.source, " and ", test.source,
           " share no step with a training loss");

  double abs_sum = 0.0;
  for (int64_t i = 0; i < c.common_steps; ++i) {
    const double d = std::fabs(c.step_diffs[i]);
    abs_sum += d;
    // NaN wins the max, so a diverged run shows up here too.
    if (d > c.max_abs_step_diff || (std::isnan(d) && !std::isnan(c.max_abs_step_diff))) {
      c.max_abs_step_diff = d;
      c.max_abs_step_diff_step = c.steps[i];
    }
  }
  c.mean_abs_step_diff = abs_sum / double(c.common_steps);

  // The last 10% of common steps (TE's JAX MNIST gate looks at the tail window to avoid flakiness).
  c.tail_steps = std::max<int64_t>(1, (c.common_steps + 9) / 10);
  std::map<int64_t, double> ref_loss;
  for (const auto& p : ref.points)
    if (p.loss) ref_loss[p.step] = *p.loss;
  double sr = 0.0, stt = 0.0;
  for (int64_t i = c.common_steps - c.tail_steps; i < c.common_steps; ++i) {
    const double r = ref_loss.at(c.steps[i]);
    sr += r;
    stt += r + c.step_diffs[i];
  }
  c.tail_mean_ref = sr / double(c.tail_steps);
  c.tail_mean_test = stt / double(c.tail_steps);
  c.tail_mean_rel_diff = std::fabs(c.tail_mean_test - c.tail_mean_ref) / std::fabs(c.tail_mean_ref);
  if (c.final_val_step) {
    c.final_val_ratio = c.final_val_test / c.final_val_ref;
    c.final_val_rel_diff = std::fabs(c.final_val_test - c.final_val_ref) / std::fabs(c.final_val_ref);
    c.min_val_rel_diff = std::fabs(c.min_val_test - c.min_val_ref) / std::fabs(c.min_val_ref);
  }
  const int64_t nw = std::min(windows, c.common_steps);
  for (int64_t w = 0; w < nw; ++w) {
    const int64_t lo = c.common_steps * w / nw, hi = c.common_steps * (w + 1) / nw;  // [lo, hi), hi > lo
    LossComparison::Window win;
    win.first_step = c.steps[lo];
    win.last_step = c.steps[hi - 1];
    win.steps = hi - lo;
    double sum = 0.0;
    for (int64_t i = lo; i < hi; ++i) sum += std::fabs(c.step_diffs[i]) / std::fabs(ref_loss.at(c.steps[i]));
    win.mean_abs_rel_diff = sum / double(win.steps);
    c.windows.push_back(win);
  }
  return c;
}

CurveHealth check_curve_health(const LossCurve& curve, double spike_factor, int64_t window) {
  TG_CHECK(spike_factor > 1.0, "check_curve_health: spike_factor must be > 1, got ", spike_factor);
  TG_CHECK(window >= 1, "check_curve_health: window must be >= 1, got ", window);
  CurveHealth h;
  std::vector<double> recent;  // the last `window` finite losses
  for (const auto& p : curve.points) {
    if (!p.loss) continue;
    ++h.steps;
    const double l = *p.loss;
    if (!std::isfinite(l)) {
      ++h.nonfinite;
      if (h.first_nonfinite_step < 0) h.first_nonfinite_step = p.step;
      continue;
    }
    if (static_cast<int64_t>(recent.size()) == window) {
      std::vector<double> sorted = recent;
      std::sort(sorted.begin(), sorted.end());
      const std::size_t n = sorted.size();
      const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
      if (l > spike_factor * median) {
        ++h.spikes;
        if (h.first_spike_step < 0) {
          h.first_spike_step = p.step;
          h.first_spike_loss = l;
          h.first_spike_median = median;
        }
      }
      recent.erase(recent.begin());
    }
    recent.push_back(l);
  }
  return h;
}

}  // namespace tg::parity
