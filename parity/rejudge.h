// Re-judging a recorded parity report with other thresholds, without re-running anything: every check that a
// bound (max / min) judged is judged again by the (metric, precision, size class) entry of the new set, and the
// comparisons', the totals' and the report's verdicts follow. What a re-judge cannot change is refused:
//   - a parameter of a metric (rtol, atol, the near-tie margin, ...) that differs between the recorded and the new
//     set: the measured values themselves depend on it, so only a re-run can apply it (tg::Error naming it);
//   - checks judged against a bound computed from measured data (the noise-relative loss verdicts, Check::limit)
//     and checks whose verdict the comparison decided itself (generation divergences, near-ties): kept as they are.
// The result records run.rejudged = {from (the recorded thresholds block), to, changed (number of checks whose
// verdict changed)} and the new thresholds block. `tegemma parity --rejudge REPORT.json [--thresholds FILE]
// [--out NEW.json]` is the command.
#pragma once

#include "parity/report.h"
#include "parity/thresholds.h"

namespace tg::parity {

Report rejudge(const Report& recorded, const Thresholds& thresholds);

}  // namespace tg::parity
