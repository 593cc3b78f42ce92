#!/usr/bin/env python3
"""Worst measured values in parity reports, per (metric, precision, size class): what thresholds.json's
calibrated entries are set from (the worst value x a factor of about 2, stated in each reason).

  python3 parity/scripts/worst_case.py report.json [more.json ...]

Run it on clean reports (no planted bug). "bound" says which way is worse: for a min-bound metric (cosine,
top-5 overlap) the smallest value is shown. The mismatch fractions are the pooled (judged) checks. For the
near-tie margin, the largest reference gap at a top-1 flip or a generation divergence is shown.
"""
import json
import re
import sys
from collections import defaultdict

MIN_BOUND = {"tap.cosine", "logits.cosine", "logits.top5_overlap", "logits.top1_agreement",
             "generation.token_agreement"}
GAP = re.compile(r"(?:prefers its token by|the largest gap is) ([0-9.eE+-]+)")


def value(v):
    return float(v) if isinstance(v, str) else v


def main(paths):
    worst = {}
    where = {}

    def offer(key, v, at, smaller_is_worse):
        if key not in worst or (v < worst[key] if smaller_is_worse else v > worst[key]):
            worst[key] = v
            where[key] = at

    for path in paths:
        report = json.load(open(path))
        if report.get("run", {}).get("fault_injection", "none") != "none":
            print(f"warning: {path} carries a planted bug ({report['run']['fault_injection']})", file=sys.stderr)
        for c in report["comparisons"]:
            group = c["precision"]
            for ch in c["checks"]:
                m, s = ch["metric"], ch["subject"]
                at = f"{c['title']} {s.get('part', '')}"
                for g in GAP.findall(ch.get("detail", "")):
                    offer(("logits.near_tie_margin (largest gap)", group, c["size_class"]), float(g), at, False)
                if m.endswith("mismatch_fraction") and s.get("prompt", -1) >= 0:
                    continue  # per-prompt values are info; the pooled check is judged
                if m.startswith("generation.") and m != "generation.token_agreement":
                    continue
                offer((m, group, c["size_class"]), value(ch["value"]), at, m in MIN_BOUND)
    rows = defaultdict(list)
    for (m, p, z), v in worst.items():
        rows[m].append((p, z, v, where[(m, p, z)]))
    for m in sorted(rows):
        for p, z, v, at in sorted(rows[m]):
            print(f"{m:42} {p:8} {z:6} {'min' if m in MIN_BOUND else 'max'} {v:<12.4g} {at}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
