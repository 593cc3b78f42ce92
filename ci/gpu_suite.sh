#!/usr/bin/env bash
# The GPU suite, run on the H200 (the way every issue proves GPU work):
# configure with torch's CMake prefix, build on all cores, run ctest -L gpu (and cpu), run the
# benchmarks, and write JSON results.
#
#   ci/gpu_suite.sh [--src DIR] [--out DIR] [--bench quick|full|none] [--tests REGEX] [--exclude REGEX]
#                   [--benches bench_a,bench_b] [--bench-filter REGEX] [--no-cpu]
#
# --src: the source tree (default: this repository; the device calls build a `git archive` snapshot of a
#        commit so the results name exactly what ran). Results: OUT/ctest_gpu.xml (JUnit), OUT/summary.json,
#        OUT/bench_*.json (Google Benchmark JSON), OUT/build.log.
# --tests / --exclude: ctest -R / -E regexes. --benches: only these benchmark binaries (default all);
# --bench-filter: passed to each as --benchmark_filter.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root out=${OUT:-$root/out/gpu} bench=quick tests="" exclude="" benches="" bfilter="" cpu=1
while [ $# -gt 0 ]; do
  case $1 in
    --src) src=$(cd "$2" && pwd); shift 2;;
    --out) out=$2; shift 2;;
    --bench) bench=$2; shift 2;;
    --tests) tests=$2; shift 2;;
    --exclude) exclude=$2; shift 2;;
    --benches) benches=$2; shift 2;;
    --bench-filter) bfilter=$2; shift 2;;
    --no-cpu) cpu=0; shift;;
    *) echo "gpu_suite: unknown argument $1" >&2; exit 2;;
  esac
done
mkdir -p "$out"
source "$root/ci/deps.sh"
build=${TEGEMMA_BUILD_DIR:-/tmp/tegemma-gpu-build}
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used --format=csv | tee "$out/gpu.csv"
if ! tegemma_build "$build" "$src" -DTEGEMMA_CUDA=ON > "$out/build.log" 2>&1; then
  tail -60 "$out/build.log"
  echo '{"build": "failed"}' > "$out/summary.json"
  exit 1
fi
t_build=$(( $(date +%s) - t0 ))
echo "== build ok in ${t_build}s"
rc=0
labels=gpu; [ $cpu = 1 ] && labels="gpu|cpu"
targs=(--test-dir "$build" -L "$labels" --output-on-failure --timeout 900 --output-junit "$out/ctest.xml")
[ -n "$tests" ] && targs+=(-R "$tests")
[ -n "$exclude" ] && targs+=(-E "$exclude")
ctest "${targs[@]}" > "$out/ctest.log" 2>&1 || rc=1
grep -E "tests passed|tests failed|\*\*\*Failed|Skipped|Not Run" "$out/ctest.log" | tail -30
t_test=$(( $(date +%s) - t0 - t_build ))
if [ "$bench" != none ] && [ -z "$benches" ] && [ -z "$bfilter" ]; then
  # The suites as ci/bench_sets.sh defines them (quick: the headline workloads, < 2 min; full: everything).
  source "$src/ci/bench_sets.sh"
  tegemma_bench_suite "$bench" "$build" "$out" || rc=1
elif [ "$bench" != none ]; then
  for b in "$build"/bench/bench_*; do
    [ -x "$b" ] || continue
    name=$(basename "$b")
    [ -n "$benches" ] && [[ ",$benches," != *",$name,"* ]] && continue
    args=(--benchmark_out="$out/$name.json" --benchmark_out_format=json --benchmark_min_warmup_time=0.05)
    [ -n "$bfilter" ] && args+=(--benchmark_filter="$bfilter")
    [ "$bench" = quick ] && args+=(--benchmark_min_time=0.05s --benchmark_repetitions=1)
    [ "$bench" = full ] && args+=(--benchmark_min_time=0.2s --benchmark_repetitions=3 --benchmark_report_aggregates_only=true)
    echo "== $name"
    "$b" "${args[@]}" 2>&1 | tail -n +1 > "$out/$name.log" || rc=1
    tail -40 "$out/$name.log"
  done
fi
# A ci/snapshot.sh export names its commit in .commit; it wins over git, which would answer the enclosing checkout.
commit=$(cd "$src" && (cat .commit 2>/dev/null || git rev-parse --short=12 HEAD 2>/dev/null || echo unknown))
cat > "$out/summary.json" <<JSON
{"commit": "$commit", "ctest_rc": $rc, "build_seconds": $t_build, "test_seconds": $t_test,
 "total_seconds": $(( $(date +%s) - t0 )), "labels": "$labels", "bench": "$bench"}
JSON
cat "$out/summary.json"
exit $rc
