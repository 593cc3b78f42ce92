#include "parity/compare.h"

#include <cmath>
#include <cstdio>
#include <exception>
#include <limits>
#include <optional>

#include "common/check.h"

namespace tg::parity {

namespace {

std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// A new comparison in the report, labelled from the two recipes. Valid until the next one is added.
Comparison& begin(Report& report, std::string kind, const CompareContext& ctx) {
  report.comparisons.emplace_back();
  Comparison& c = report.comparisons.back();
  c.kind = std::move(kind);
  c.size_class = ctx.size_class;
  return c;
}

void set_engines(Report& report, Comparison& c, const Engine& ref, const Engine& test) {
  // Raw names first, so that an error below still says which engines were meant.
  c.reference = ref.name();
  c.test = test.name();
  c.reference_recipe = ref.precision();
  c.test_recipe = test.precision();
  c.reference = report.add_engine(ref);  // validates the recipe strings
  c.test = report.add_engine(test);
  c.reference_recipe = canonical_recipe(c.reference_recipe);
  c.test_recipe = canonical_recipe(c.test_recipe);
  c.precision = comparison_precision(c.reference_recipe, c.test_recipe);
}

std::vector<TokenIds> prompt_ids(const PromptSet& prompts) {
  std::vector<TokenIds> ids = prompts.token_ids();
  TG_CHECK(!ids.empty(), prompts.source, ": no prompts to run");
  for (std::size_t i = 0; i < ids.size(); ++i)
    TG_CHECK(!ids[i].empty(), prompts.source, ": prompt ", prompts.prompts[i].id, " has no tokens (a text prompt ",
             "that was not encoded?)");
  return ids;
}

std::span<const float> values(const Tensor& t) { return {t.ptr<float>(), static_cast<std::size_t>(t.numel())}; }

// An engine output must be a host F32 [rows, cols] tensor (cols = -1: any).
void check_output(const Tensor& t, int64_t rows, int64_t cols, const std::string& what) {
  TG_CHECK(t.data() != nullptr, what, ": missing (empty tensor)");
  TG_CHECK(t.dtype() == DType::F32, what, ": expected F32, got ", t.dtype());
  TG_CHECK(t.device() == Device::CPU, what, ": expected a host tensor, got one on ", t.device());
  TG_CHECK(t.shape().ndim() == 2 && t.shape()[0] == rows && (cols < 0 || t.shape()[1] == cols), what,
           ": expected shape [", rows, ", ", cols < 0 ? std::string("*") : std::to_string(cols), "], got ",
           t.shape());
}

// "position 3, channel 17 (ref 1.25, test 1.5)" for flat index i of a row-major [rows, cols] array.
std::string at(int64_t i, int64_t cols, const char* col_name, std::span<const float> r, std::span<const float> t) {
  if (i < 0) return {};
  return "at position " + std::to_string(i / cols) + ", " + col_name + " " + std::to_string(i % cols) + " (ref " +
         fmt(r[i]) + ", test " + fmt(t[i]) + ")";
}

// Mismatches of one part (a layer's taps, or the logits) summed over prompts: the mismatch fraction is judged on
// the pool, because a share of elements is meaningless on one short prompt (a 1-token prompt of the tiny model has
// 64 tap elements, so any threshold under 1/64 would fail on a single element).
struct MismatchPool {
  int64_t mismatches = 0, count = 0, prompts = 0;
  double worst = -1.0;  // the worst single prompt's fraction
  std::string worst_prompt;
};

// The elementwise metrics of one array pair: scope "tap" or "logits". The per-prompt mismatch fraction is
// recorded as info and added to `pool`.
void judge_arrays(Comparison& c, const Thresholds& th, const Subject& s, const std::string& scope,
                  std::span<const float> r, std::span<const float> t, int64_t cols, const char* col_name,
                  MismatchPool& pool) {
  const ArrayStats st = compare_arrays(r, t);
  const double rtol = c.param(th, scope + ".rtol"), atol = c.param(th, scope + ".atol");
  const int64_t mism = count_mismatches(r, t, rtol, atol);
  c.judge(th, s, scope + ".nonfinite", double(st.nonfinite),
          st.nonfinite ? "first " + at(st.first_nonfinite_index, cols, col_name, r, t) : "");
  c.judge(th, s, scope + ".max_abs_err", st.max_abs_err, at(st.max_abs_index, cols, col_name, r, t));
  c.judge(th, s, scope + ".max_rel_err", st.max_rel_err,
          at(st.max_rel_index, cols, col_name, r, t) + (st.max_rel_index >= 0 ? "; " : "") + "rel floor " +
              fmt(st.rel_floor));
  c.judge(th, s, scope + ".rmse_over_range", st.rmse_over_range,
          "rmse " + fmt(st.rmse) + ", reference range " + fmt(st.ref_range));
  c.judge(th, s, scope + ".cosine", st.cosine);
  const double frac = double(mism) / double(st.count);
  c.add({s, scope + ".mismatch_fraction", frac, Verdict::kInfo, "",
         std::to_string(mism) + " of " + std::to_string(st.count) + " elements beyond atol " + fmt(atol) + " + rtol " +
             fmt(rtol) + " x |ref| (judged pooled over prompts)"});
  pool.mismatches += mism;
  pool.count += st.count;
  ++pool.prompts;
  if (frac > pool.worst) {
    pool.worst = frac;
    pool.worst_prompt = s.describe();
  }
}

// The judged mismatch fraction of one part, pooled over the prompts (subject without a prompt).
void judge_pool(Comparison& c, const Thresholds& th, const Subject& s, const std::string& scope,
                const MismatchPool& pool) {
  if (pool.prompts == 0) return;
  c.judge(th, s, scope + ".mismatch_fraction", double(pool.mismatches) / double(pool.count),
          std::to_string(pool.mismatches) + " of " + std::to_string(pool.count) + " elements over " +
              std::to_string(pool.prompts) + " prompts beyond atol " + fmt(c.param(th, scope + ".atol")) + " + rtol " +
              fmt(c.param(th, scope + ".rtol")) + " x |ref|" +
              (pool.mismatches > 0 ? "; worst " + pool.worst_prompt + " with " + fmt(pool.worst) : ""));
}

void judge_logits(Comparison& c, const Thresholds& th, const Subject& s, std::span<const float> r,
                  std::span<const float> t, int64_t vocab, MismatchPool& pool) {
  judge_arrays(c, th, s, "logits", r, t, vocab, "token", pool);
  const double margin = c.param(th, "logits.near_tie_margin");
  const LogitsStats ls = compare_logits(r, t, vocab, margin);
  auto row = [&](int64_t i) {
    return compare_logit_row(r.subspan(static_cast<std::size_t>(i * vocab), static_cast<std::size_t>(vocab)),
                             t.subspan(static_cast<std::size_t>(i * vocab), static_cast<std::size_t>(vocab)));
  };
  auto disagreement = [&](int64_t i) {
    const RowStats rs = row(i);
    return "position " + std::to_string(i) + ": ref token " + std::to_string(rs.ref_top1) + ", test token " +
           std::to_string(rs.test_top1) + ", the reference prefers its token by " + fmt(rs.ref_gap_to_test_top1) +
           " (near-tie margin " + fmt(margin) + ")";
  };
  c.judge(th, s, "logits.kl_max", ls.kl_max, "at position " + std::to_string(ls.kl_max_row));
  c.judge(th, s, "logits.kl_mean", ls.kl_mean, "over " + std::to_string(ls.rows) + " positions");
  c.judge(th, s, "logits.top1_agreement", ls.top1_agreement,
          std::to_string(ls.top1_disagreements) + " of " + std::to_string(ls.rows) + " positions disagree");
  const std::string largest =
      ls.top1_disagreements > 1 ? "; the largest gap is " + fmt(ls.max_disagreement_gap) + " at position " +
                                      std::to_string(ls.max_gap_row)
                                : "";
  c.judge(th, s, "logits.top1_hard_disagreements", double(ls.top1_hard_disagreements),
          ls.first_hard_row >= 0 ? "first at " + disagreement(ls.first_hard_row) + largest : "");
  c.judge(th, s, "logits.top5_overlap", ls.top5_overlap);
  const int64_t ties = ls.top1_disagreements - ls.top1_hard_disagreements;
  c.add({s, "logits.top1_near_tie_disagreements", double(ties), ties > 0 ? Verdict::kNearTie : Verdict::kInfo,
         "logits.near_tie_margin", ties > 0 ? "first at " + disagreement(ls.first_near_tie_row) + largest : ""});
}

void judge_health(Comparison& c, const Thresholds& th, const LossCurve& curve, std::string_view label) {
  const double factor = c.param(th, "loss.spike_factor");
  const auto window = static_cast<int64_t>(c.param(th, "loss.spike_window"));
  const CurveHealth h = check_curve_health(curve, factor, window);
  const Subject s{-1, "", -1, "curve:" + std::string(label)};
  c.judge(th, s, "loss.nonfinite_steps", double(h.nonfinite),
          h.nonfinite ? "first at step " + std::to_string(h.first_nonfinite_step) + " of " + curve.source : "");
  c.judge(th, s, "loss.spikes", double(h.spikes),
          h.spikes ? "first at step " + std::to_string(h.first_spike_step) + ": loss " + fmt(h.first_spike_loss) +
                         " > " + fmt(factor) + " x running median " + fmt(h.first_spike_median)
                   : "");
  if (h.steps <= window)
    c.notes.push_back("curve " + std::string(label) + " has " + std::to_string(h.steps) +
                      " training-loss steps, not more than the spike window " + std::to_string(window) +
                      ": spikes were not looked for");
}

std::string curve_label(std::string_view label, std::string_view recipe) {
  return std::string(label) + "[" + precision_of(recipe) + "]";
}

}  // namespace

Comparison& compare_forward(Report& report, Engine& ref, Engine& test, const PromptSet& prompts,
                            const CompareContext& ctx) {
  Comparison& c = begin(report, "forward", ctx);
  try {
    set_engines(report, c, ref, test);
    const std::vector<TokenIds> ids = prompt_ids(prompts);
    ForwardOptions fo;
    fo.want_taps = true;
    const ForwardResult rr = ref.forward(ids, fo);
    const ForwardResult tr = test.forward(ids, fo);
    TG_CHECK(rr.prompts.size() == ids.size(), c.reference, " returned ", rr.prompts.size(), " results for ",
             ids.size(), " prompts");
    TG_CHECK(tr.prompts.size() == ids.size(), c.test, " returned ", tr.prompts.size(), " results for ", ids.size(),
             " prompts");
    std::vector<MismatchPool> tap_pools;  // per layer
    MismatchPool logits_pool;
    for (std::size_t p = 0; p < ids.size(); ++p) {
      const PromptForward& r = rr.prompts[p];
      const PromptForward& t = tr.prompts[p];
      const auto S = static_cast<int64_t>(ids[p].size());
      const std::string pname = "prompt " + std::to_string(p) + " (" + prompts.prompts[p].id + ")";
      check_output(r.logits, S, -1, c.reference + " logits of " + pname);
      const int64_t V = r.logits.shape()[1];
      check_output(t.logits, S, V, c.test + " logits of " + pname);
      TG_CHECK(r.taps.size() == t.taps.size(), pname, ": ", c.reference, " returned ", r.taps.size(), " taps, ",
               c.test, " ", t.taps.size());
      if (p == 0 && r.taps.empty()) c.notes.push_back("the engines returned no per-layer taps: logits only");
      for (std::size_t l = 0; l < r.taps.size(); ++l) {
        const std::string lname = pname + " layer " + std::to_string(l);
        check_output(r.taps[l], S, -1, c.reference + " tap of " + lname);
        check_output(t.taps[l], S, r.taps[l].shape()[1], c.test + " tap of " + lname);
        const Subject s{static_cast<int>(p), prompts.prompts[p].id, static_cast<int>(l), "layer." + std::to_string(l)};
        if (tap_pools.size() <= l) tap_pools.resize(l + 1);
        judge_arrays(c, ctx.thresholds, s, "tap", values(r.taps[l]), values(t.taps[l]), r.taps[l].shape()[1],
                     "channel", tap_pools[l]);
      }
      const Subject s{static_cast<int>(p), prompts.prompts[p].id, -1, "logits"};
      judge_logits(c, ctx.thresholds, s, values(r.logits), values(t.logits), V, logits_pool);
    }
    for (std::size_t l = 0; l < tap_pools.size(); ++l) {
      judge_pool(c, ctx.thresholds, {-1, "", static_cast<int>(l), "layer." + std::to_string(l)}, "tap", tap_pools[l]);
    }
    judge_pool(c, ctx.thresholds, {-1, "", -1, "logits"}, "logits", logits_pool);
  } catch (const std::exception& e) {
    c.error = e.what();
  }
  return c;
}

Comparison& compare_generation(Report& report, Engine& ref, Engine& test, const PromptSet& prompts,
                               const GenerateOptions& gen, const CompareContext& ctx) {
  Comparison& c = begin(report, "generation", ctx);
  try {
    set_engines(report, c, ref, test);
    TG_CHECK(gen.max_new_tokens >= 1, "generation: max_new_tokens must be >= 1, got ", gen.max_new_tokens);
    const std::vector<TokenIds> ids = prompt_ids(prompts);
    const std::vector<TokenIds> rg = ref.generate_greedy(ids, gen);
    const std::vector<TokenIds> tg = test.generate_greedy(ids, gen);
    TG_CHECK(rg.size() == ids.size(), c.reference, " returned ", rg.size(), " generations for ", ids.size(),
             " prompts");
    TG_CHECK(tg.size() == ids.size(), c.test, " returned ", tg.size(), " generations for ", ids.size(), " prompts");
    const double margin = c.param(ctx.thresholds, "logits.near_tie_margin");
    for (std::size_t p = 0; p < ids.size(); ++p) {
      const Subject s{static_cast<int>(p), prompts.prompts[p].id, -1, "generation"};
      for (const auto* g : {&rg[p], &tg[p]}) {
        TG_CHECK(static_cast<int64_t>(g->size()) <= gen.max_new_tokens, s.describe(), ": ",
                 g == &rg[p] ? c.reference : c.test, " generated ", g->size(), " tokens, max_new_tokens is ",
                 gen.max_new_tokens);
      }
      const GenerationStats gs = compare_generations(rg[p], tg[p]);
      c.judge(ctx.thresholds, s, "generation.token_agreement", gs.token_agreement,
              "common prefix " + std::to_string(gs.common_prefix) + " of " +
                  std::to_string(std::max(gs.ref_length, gs.test_length)) + " tokens");
      if (gs.first_divergence < 0) {
        c.add({s, "generation.first_divergence_step", -1.0, Verdict::kPass, "logits.near_tie_margin",
               "identical (" + std::to_string(gs.ref_length) + " tokens)"});
        continue;
      }
      // The reference's next-token logits where the two diverged: prompt + its own tokens so far.
      TokenIds prefix = ids[p];
      prefix.insert(prefix.end(), rg[p].begin(), rg[p].begin() + gs.first_divergence);
      ForwardOptions fo;
      fo.want_taps = false;
      fo.last_position_only = true;
      const ForwardResult fr = ref.forward({prefix}, fo);
      TG_CHECK(fr.prompts.size() == 1, c.reference, " returned ", fr.prompts.size(), " results for 1 prompt");
      const Tensor& lg = fr.prompts[0].logits;
      check_output(lg, lg.shape().ndim() == 2 ? lg.shape()[0] : 1, -1,
                   c.reference + " logits at the divergence of " + s.describe());
      const int64_t V = lg.shape()[1];
      const std::span<const float> rowv = values(lg).subspan(static_cast<std::size_t>((lg.shape()[0] - 1) * V));
      const std::vector<int32_t> top2 = top_k(rowv, 2);
      const double ref_margin =
          top2.size() > 1 ? double(rowv[top2[0]]) - double(rowv[top2[1]]) : std::numeric_limits<double>::infinity();
      const bool valid = gs.ref_token >= 0 && gs.ref_token < V && gs.test_token >= 0 && gs.test_token < V;
      const double gap =
          valid ? double(rowv[gs.ref_token]) - double(rowv[gs.test_token]) : std::numeric_limits<double>::infinity();
      const bool near_tie = gap < margin;
      std::string detail = "step " + std::to_string(gs.first_divergence) + ": ref token " +
                           std::to_string(gs.ref_token) + ", test token " + std::to_string(gs.test_token);
      if (gs.ref_token < 0 || gs.test_token < 0) detail += " (-1: that sequence had ended)";
      detail += valid ? "; the reference prefers its token by " + fmt(gap) + " (its top-2 margin " + fmt(ref_margin) +
                            ") " + (near_tie ? "< " : ">= ") + "near-tie margin " + fmt(margin)
                      : "; not a near-tie";
      if (top2[0] != gs.ref_token)
        detail += "; note: the reference's forward argmax here is " + std::to_string(top2[0]) +
                  ", not its generated token";
      c.add({s, "generation.first_divergence_step", double(gs.first_divergence),
             near_tie ? Verdict::kNearTie : Verdict::kFail, "logits.near_tie_margin", detail});
      c.add({s, "generation.ref_gap_at_divergence", gap, Verdict::kInfo, "", ""});
      c.add({s, "generation.ref_margin_at_divergence", ref_margin, Verdict::kInfo, "", ""});
    }
  } catch (const std::exception& e) {
    c.error = e.what();
  }
  return c;
}

Comparison& compare_loss(Report& report, const LossCurve& ref, std::string_view ref_label,
                         std::string_view ref_recipe, const LossCurve& test, std::string_view test_label,
                         std::string_view test_recipe, const CompareContext& ctx, const NoiseRun& noise) {
  Comparison& c = begin(report, "loss_curve", ctx);
  c.reference = std::string(ref_label);
  c.test = std::string(test_label);
  c.reference_recipe = std::string(ref_recipe);
  c.test_recipe = std::string(test_recipe);
  try {
    c.reference = curve_label(ref_label, ref_recipe);
    c.test = curve_label(test_label, test_recipe);
    c.reference_recipe = canonical_recipe(ref_recipe);
    c.test_recipe = canonical_recipe(test_recipe);
    c.precision = comparison_precision(ref_recipe, test_recipe);
    const auto nwin = static_cast<int64_t>(c.param(ctx.thresholds, "loss.windows"));
    const LossComparison lc = compare_loss_curves(ref, test, nwin);

    // The noise run's distances to the reference, over the same steps (else the fixed thresholds judge).
    std::optional<LossComparison> nc;
    if (noise.curve) {
      nc = compare_loss_curves(ref, *noise.curve, nwin);
      if (nc->steps != lc.steps) {
        c.notes.push_back("the noise run " + noise.label + " does not have a training loss at exactly the " +
                          std::to_string(lc.common_steps) + " steps the pair shares (it has " +
                          std::to_string(nc->common_steps) + " in common with the reference): judged with the " +
                          "fixed thresholds instead");
        nc.reset();
      } else if (lc.final_val_step && nc->final_val_step != lc.final_val_step) {
        c.notes.push_back("the noise run " + noise.label + " has no validation loss at step " +
                          std::to_string(*lc.final_val_step) + ": judged with the fixed thresholds instead");
        nc.reset();
      }
    }
    double k = 0.0, floor = 0.0;
    if (nc) {
      k = c.param(ctx.thresholds, "loss.noise_k");
      floor = c.param(ctx.thresholds, "loss.noise_floor");
      c.notes.push_back("noise-relative verdicts: each distance must be <= loss.noise_k " + fmt(k) +
                        " x the same distance between " + c.reference + " and the noise run " + noise.label +
                        " + loss.noise_floor " + fmt(floor));
    }
    // A distance of the pair: judged noise-relative when there is a noise run, else by its fixed threshold
    // (info where it has none).
    auto distance = [&](const Subject& s, const std::string& metric, double d, double d_noise, std::string detail) {
      if (!nc) {
        c.judge(ctx.thresholds, s, metric, d, std::move(detail));
        return;
      }
      const double limit = k * d_noise + floor;
      Check ch{s, metric, d, d <= limit ? Verdict::kPass : Verdict::kFail, "loss.noise_k",  // NaN fails
               detail + "; noise (" + c.reference + " vs " + noise.label + ") " + fmt(d_noise) + ": limit " +
                   fmt(k) + " x " + fmt(d_noise) + " + " + fmt(floor) + " = " + fmt(limit)};
      ch.limit = limit;
      c.add(std::move(ch));
      c.add({s, "loss.noise." + metric.substr(metric.find('.') + 1), d_noise, Verdict::kInfo, "",
             noise.label + " vs " + c.reference});
    };

    const Subject s{-1, "", -1, "loss"};
    c.judge(ctx.thresholds, s, "loss.max_abs_step_diff", lc.max_abs_step_diff,
            "at step " + std::to_string(lc.max_abs_step_diff_step));
    c.judge(ctx.thresholds, s, "loss.mean_abs_step_diff", lc.mean_abs_step_diff,
            "over " + std::to_string(lc.common_steps) + " common steps");
    distance(s, "loss.tail_mean_rel_diff", lc.tail_mean_rel_diff, nc ? nc->tail_mean_rel_diff : 0.0,
             "mean of the last " + std::to_string(lc.tail_steps) + " steps: ref " + fmt(lc.tail_mean_ref) +
                 ", test " + fmt(lc.tail_mean_test));
    if (lc.final_val_step) {
      const std::string at = "step " + std::to_string(*lc.final_val_step) + ": ref " + fmt(lc.final_val_ref) +
                             ", test " + fmt(lc.final_val_test);
      if (nc) {
        c.add({s, "loss.final_val_ratio", lc.final_val_ratio, Verdict::kInfo, "", at + " (judged noise-relative)"});
      } else {
        c.judge(ctx.thresholds, s, "loss.final_val_ratio", lc.final_val_ratio, at);
      }
      distance(s, "loss.final_val_rel_diff", lc.final_val_rel_diff, nc ? nc->final_val_rel_diff : 0.0, at);
      distance(s, "loss.min_val_rel_diff", lc.min_val_rel_diff, nc ? nc->min_val_rel_diff : 0.0,
               "over " + std::to_string(lc.val_steps) + " validation steps: ref " + fmt(lc.min_val_ref) +
                   ", test " + fmt(lc.min_val_test));
    } else {
      c.notes.push_back("no step has a validation loss in both curves: loss.final_val_ratio not measured");
    }
    for (std::size_t w = 0; w < lc.windows.size(); ++w) {
      const auto& win = lc.windows[w];
      distance({-1, "", -1, "loss.window." + std::to_string(w)}, "loss.window_mean_abs_rel_diff",
               win.mean_abs_rel_diff, nc ? nc->windows[w].mean_abs_rel_diff : 0.0,
               "steps " + std::to_string(win.first_step) + "-" + std::to_string(win.last_step));
    }
    auto& diff = c.series["loss.step_diff"];
    for (std::size_t i = 0; i < lc.steps.size(); ++i) diff.emplace_back(double(lc.steps[i]), lc.step_diffs[i]);
    for (const auto& [curve, name] : {std::pair{&ref, "loss.reference"}, std::pair{&test, "loss.test"}}) {
      auto& se = c.series[name];
      for (const auto& pt : curve->points)
        if (pt.loss) se.emplace_back(double(pt.step), *pt.loss);
    }
    if (nc) {
      auto& se = c.series["loss.noise"];
      for (const auto& pt : noise.curve->points)
        if (pt.loss) se.emplace_back(double(pt.step), *pt.loss);
    }
    judge_health(c, ctx.thresholds, ref, c.reference);
    judge_health(c, ctx.thresholds, test, c.test);
  } catch (const std::exception& e) {
    c.error = e.what();
  }
  return c;
}

Comparison& check_loss_health(Report& report, const LossCurve& curve, std::string_view label,
                              std::string_view recipe, const CompareContext& ctx) {
  Comparison& c = begin(report, "loss_health", ctx);
  c.test = std::string(label);
  c.test_recipe = std::string(recipe);
  try {
    c.test = curve_label(label, recipe);
    c.test_recipe = canonical_recipe(recipe);
    c.precision = precision_of(recipe);
    judge_health(c, ctx.thresholds, curve, c.test);
    auto& se = c.series["loss.test"];
    for (const auto& pt : curve.points)
      if (pt.loss) se.emplace_back(double(pt.step), *pt.loss);
  } catch (const std::exception& e) {
    c.error = e.what();
  }
  return c;
}

}  // namespace tg::parity
