#!/usr/bin/env bash
# ctest `ci_sanitize_probe` (cpu): ci/sanitize_probe.sh with a stub compute-sanitizer and a stub build tree: the
# probe selection by regex, each probe run in its binary's folder with the tool's arguments, and probes.tsv.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
mkdir -p "$work/build/kernels/tests" "$work/build/impl/tests" "$work/bin"
cat > "$work/bin/compute-sanitizer" <<'STUB'
#!/usr/bin/env bash
echo "========= ERROR SUMMARY: 0 errors"
echo "cwd=$PWD args=$*"
STUB
chmod +x "$work/bin/compute-sanitizer"
COMPUTE_SANITIZER="$work/bin/compute-sanitizer" TEGEMMA_BUILD_DIR="$work/build" SIDE_OUT="$work/out" \
  bash "$src/ci/sanitize_probe.sh" 'race_gemm_default|mem_impl_model' > "$work/log" 2>&1 || fail "exit $? ($(tail -3 "$work/log"))"
[ "$(tail -n +2 "$work/out/probes.tsv" | wc -l)" = 2 ] || fail "expected 2 probes, got: $(cat "$work/out/probes.tsv")"
grep -q "cwd=$work/build/kernels/tests args=.*--tool racecheck --kernel-name kns=_ZN2tg .*test_gemm_gpu" \
  "$work/out/race_gemm_default.log" || fail "race_gemm_default: $(cat "$work/out/race_gemm_default.log")"
grep -q "cwd=$work/build/impl/tests args=.*--tool memcheck --leak-check full .*test_impl_model_gpu --gtest_filter=" \
  "$work/out/mem_impl_model.log" || fail "mem_impl_model: $(cat "$work/out/mem_impl_model.log")"
grep -q $'^mem_impl_model\t0\t' "$work/out/probes.tsv" || fail "probes.tsv row: $(cat "$work/out/probes.tsv")"
# ci/sanitize_lanes.sh: one lane per regex, side by side; SIDE_OUT/probes.tsv holds every lane's rows under one header.
COMPUTE_SANITIZER="$work/bin/compute-sanitizer" TEGEMMA_BUILD_DIR="$work/build" SIDE_OUT="$work/lanes" \
  bash "$src/ci/sanitize_lanes.sh" '^race_gemm_default$' '^mem_impl_model$' > "$work/lanes.log" 2>&1 ||
  fail "lanes exit $? ($(tail -3 "$work/lanes.log"))"
[ "$(grep -c '^probe' "$work/lanes/probes.tsv")" = 1 ] || fail "lanes: one header expected: $(cat "$work/lanes/probes.tsv")"
[ "$(tail -n +2 "$work/lanes/probes.tsv" | cut -f1 | sort | tr '\n' ' ')" = "mem_impl_model race_gemm_default " ] ||
  fail "lanes rows: $(cat "$work/lanes/probes.tsv")"
[ -f "$work/lanes/lane0/race_gemm_default.log" ] && [ -f "$work/lanes/lane1/mem_impl_model.log" ] ||
  fail "lane folders: $(ls -R "$work/lanes")"
echo "ci_sanitize_probe: OK"
