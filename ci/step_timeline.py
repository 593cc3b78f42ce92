#!/usr/bin/env python3
"""Reads `tegemma generate --step-timeline FILE` (a -DTEGEMMA_STEP_TIMELINE=ON build; kernels/launch/step_timeline.h)
and prints where the replayed decode step's time goes, kernel by kernel, inside the chain:

  in-chain us  = the kernel's block 0 passing its programmatic wait -> the next kernel's block 0 passing its wait
                 (the next kernel waits for this one's completion, so this is what the kernel costs in the step,
                 its launch and ramp overlapped with the predecessor as PDL allows)
  resident us  = how long before its wait returned block 0 was already resident (the programmatic launch's lead)

Usage: step_timeline.py TIMELINE.json [--skip N] [--json OUT]   (--skip: replays ignored at the start, default 2)
The captured launches (the decode step's graph) are matched to the replays' records by grid and block shape; the
mean over the matched consecutive replays is reported (the timer's granularity is printed: it may be 1 us or 32 ns,
and a mean over many replays resolves below it)."""
import json
import statistics
import sys


def short(name):
    return name if len(name) <= 70 else name[:67] + "..."


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    path, skip, out = argv[1], 2, None
    i = 2
    while i < len(argv):
        if argv[i] == "--skip":
            skip, i = int(argv[i + 1]), i + 2
        elif argv[i] == "--json":
            out, i = argv[i + 1], i + 2
        else:
            sys.exit(f"step_timeline: unknown argument {argv[i]}")
    d = json.load(open(path))
    cap = [l for l in d["launches"] if l["captured"]]
    if not cap:
        sys.exit(f"step_timeline: {path}: no captured launches (was the step replayed from a CUDA graph?)")
    sig = [tuple(l["grid"]) + (l["block"],) for l in cap]
    # The captured launches are one step's graph, then (GeneratorOptions::steps_per_graph > 1) the S-step graph: the
    # same signature repeated. The step is the shortest period of the whole sequence.
    period = next(p for p in range(1, len(sig) + 1) if len(sig) % p == 0 and sig == sig[:p] * (len(sig) // p))
    if period < len(sig):
        print(f"step_timeline: {len(sig)} captured launches = {len(sig) // period} x one {period}-kernel step "
              f"(steps from every graph are matched alike)", file=sys.stderr)
    sig = sig[:period]
    recs = d["records"]
    rsig = [tuple(r[2:6]) for r in recs]
    k = len(sig)
    starts, i = [], 0
    while i + k <= len(recs):
        if rsig[i:i + k] == sig:
            starts.append(i)
            i += k
        else:
            i += 1
    if d.get("dropped"):
        print(f"step_timeline: {d['dropped']} records dropped (capacity)", file=sys.stderr)
    # consecutive replays only: the step's last kernel ends where the next replay's first one passes its wait
    pairs = [s for s in starts if s + k in starts][skip:]
    if len(pairs) < 3:
        sys.exit(f"step_timeline: {len(starts)} replays of the {k}-kernel step found, {len(pairs)} usable after "
                 f"--skip {skip}: not enough")
    waits = [r[1] for r in recs]
    deltas = sorted({abs(waits[j + 1] - waits[j]) for j in range(len(waits) - 1)} - {0})
    per = [[(waits[s + j + 1] - waits[s + j]) / 1e3 for s in pairs] for j in range(k)]
    lead = [[(recs[s + j][1] - recs[s + j][0]) / 1e3 for s in pairs] for j in range(k)]
    steps = [(waits[s + k] - waits[s]) / 1e3 for s in pairs]
    step = statistics.mean(steps)
    print(f"{path}: {k} kernels per step, {len(starts)} replays found, {len(pairs)} used; step mean {step:.1f} us "
          f"(median {statistics.median(steps):.1f}, min {min(steps):.1f}, max {max(steps):.1f}); timer: smallest "
          f"non-zero delta {deltas[0] if deltas else 0} ns")
    rows = []
    for j in range(k):
        rows.append({"index": j, "kernel": cap[j]["kernel"], "grid": cap[j]["grid"], "block": cap[j]["block"],
                     "in_chain_us": statistics.mean(per[j]), "in_chain_median_us": statistics.median(per[j]),
                     "resident_us": statistics.mean(lead[j])})
    # by kernel and grid, as ci/profile_decode.sh's summary
    groups = {}
    for r in rows:
        key = (r["kernel"], tuple(r["grid"]))
        g = groups.setdefault(key, [0, 0.0, 0.0])
        g[0] += 1
        g[1] += r["in_chain_us"]
        g[2] += r["resident_us"]
    print(" per step  share    n  in-chain  resident  kernel  grid")
    for (name, grid), (n, t, res) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"{t:8.1f}us {100 * t / step:5.1f}% {n:4d} {t / n:7.2f}us {res / n:7.2f}us  {short(name)}  {grid}")
    # the step's first kernels in launch order (the embedding, then the first layers)
    print(" first 24 kernels in order: index  in-chain us  resident us  kernel  grid")
    for r in rows[:24]:
        print(f"{r['index']:5d} {r['in_chain_us']:8.2f} {r['resident_us']:8.2f}  {short(r['kernel'])}  {r['grid']}")
    if out:
        json.dump({"step_us_mean": step, "steps_used": len(pairs), "kernels": rows}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv)
