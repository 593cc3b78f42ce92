#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, then runs the main job on the embedded
# default and prints where its outputs are:
#   1. provenance (tegemma version)
#   2. parity: impl vs the LibTorch reference and every FP8 recipe vs BF16
#        without a GPU: `tegemma parity --suite ci` (CPU backend: tiny models + the HF fixtures)
#        with a GPU:    `tegemma parity --suite full` (CUDA: gemma-2b/7b-shaped models at reduced depth)
#   3. with a GPU: the quick benchmark suite (Google Benchmark JSON)
#   4. the report: one HTML file (inline SVG) + a Markdown summary of everything above
# Exit code: parity's (0 pass, 1 a threshold violated, 2 could not run); the report is written either way.
#   ci/main.sh [OUT_DIR]          (default ./out)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/ci/deps.sh"
tegemma_ensure_deps
build=${TEGEMMA_BUILD_DIR:-$root/build}
out=${1:-$root/out}
mkdir -p "$out"
tegemma_build "$build" "$root"
tg="$build/cli/tegemma"

echo "== provenance"
"$tg" version > "$out/provenance.json"
suite=ci
tegemma_have_gpu && suite=full
echo "== tegemma parity --suite $suite"
set +e
"$tg" parity --suite "$suite" --out "$out/parity.json"
parity_rc=$?
set -e
if tegemma_have_gpu; then
  echo "== quick benchmarks"
  for b in "$build"/bench/bench_*; do
    [ -x "$b" ] || continue
    "$b" --benchmark_out="$out/$(basename "$b").json" --benchmark_out_format=json \
         --benchmark_min_time=0.05s > "$out/$(basename "$b").log" 2>&1 || echo "   $(basename "$b") failed (see its log)"
  done
fi
echo "== report"
"$tg" report "$out" --out-html "$out/report.html" --out-md "$out/report.md"
echo
echo "main job done (parity exit code $parity_rc). Outputs in $out:"
ls -1 "$out"
echo "report: $out/report.html"
exit $parity_rc
