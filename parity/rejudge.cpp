#include "parity/rejudge.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "common/check.h"

namespace tg::parity {

Report rejudge(const Report& recorded, const Thresholds& thresholds) {
  Report out = recorded;
  int64_t changed = 0;
  for (Comparison& c : out.comparisons) {
    // Parameters shape the measured values: a changed one cannot be applied after the fact.
    for (const auto& [metric, old] : c.thresholds) {
      if (old.bound != Bound::kParam) continue;
      const Threshold now = thresholds.get(metric, c.precision, c.size_class);
      TG_CHECK(now.value == old.value, "rejudge: ", c.title(), ": parameter ", metric, " was ", old.value,
               " in the recorded run and is ", now.value, " in the new thresholds; the measured values depend on "
               "it, so only a re-run can apply it");
    }
    for (Check& k : c.checks) {
      if (k.verdict != Verdict::kPass && k.verdict != Verdict::kFail) continue;
      if (!std::isnan(k.limit)) continue;  // judged against a bound computed from measured data
      const auto it = c.thresholds.find(k.judged_by());
      if (it == c.thresholds.end() || it->second.bound == Bound::kParam) continue;  // decided by the comparison
      const Threshold now = thresholds.get(k.judged_by(), c.precision, c.size_class);
      TG_CHECK(now.bound == it->second.bound, "rejudge: ", c.title(), ": ", k.judged_by(), " changed from a ",
               to_string(it->second.bound), " to a ", to_string(now.bound), " bound");
      const Verdict v = now.passes(k.value) ? Verdict::kPass : Verdict::kFail;
      if (v != k.verdict) ++changed;
      k.verdict = v;
    }
    for (auto& [metric, th] : c.thresholds) th = thresholds.get(metric, c.precision, c.size_class);
  }
  out.run["rejudged"] = {{"from", recorded.thresholds}, {"changed_checks", changed}};
  out.set_thresholds(thresholds);
  out.run["rejudged"]["to"] = out.thresholds;
  return out;
}

}  // namespace tg::parity
