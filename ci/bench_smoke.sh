#!/usr/bin/env bash
# A benchmark binary's smoke test (ctest, label gpu): runs BIN on FILTER for a moment and fails when no benchmark
# ran or any reported an error (Google Benchmark exits 0 after SkipWithError). Exit 77 (ctest: skipped) without a
# GPU. Session 8 learned why: a bench-only change (the L2 flusher's 1-D buffer, which compute_amax rejects) failed
# every decode GEMM / GEMV / attention benchmark of a device call, and the timing batches of bench_elementwise ran
# 224 s on two decode shapes; neither is visible to the GPU tests.
#
#   ci/bench_smoke.sh BIN FILTER
set -uo pipefail
bin=$1 filter=$2
if ! nvidia-smi -L > /dev/null 2>&1; then
  echo "bench_smoke: no GPU (nvidia-smi -L failed): skipped"
  exit 77
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
"$bin" --benchmark_filter="$filter" --benchmark_min_time=0.01s --benchmark_out="$tmp/out.json" \
  --benchmark_out_format=json || { echo "bench_smoke: $bin exited $?"; exit 1; }
python3 - "$tmp/out.json" "$bin" "$filter" <<'PY'
import json, sys
path, binary, flt = sys.argv[1:]
runs = json.load(open(path)).get("benchmarks", [])
bad = [(b["name"], b.get("error_message", "")) for b in runs if b.get("error_occurred")]
for name, msg in bad:
    print(f"bench_smoke: {name}: {msg}")
if not runs:
    print(f"bench_smoke: {binary}: no benchmark matched {flt!r}")
sys.exit(1 if bad or not runs else 0)
PY
