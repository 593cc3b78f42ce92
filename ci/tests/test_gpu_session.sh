#!/usr/bin/env bash
# ctest `ci_gpu_session` (cpu): ci/gpu_session.sh's stage order with every tool stubbed (no GPU, no build). A
# device call is scarce, so the harness is checked here:
#   - two GPUs: the sanitizers start on GPU 1 right after the build, the tests run on GPU 0 beside them, and no
#     timing stage (bench suites, HF anchors) starts before the sanitizers have ended (session 5: host-bound
#     benchmarks measured beside compute-sanitizer were 3x slow); the sanitizers run once;
#   - one GPU: the sanitizers run once, after the benchmarks, on GPU 0;
#   - --side-cmd runs once, in the side lane after the sanitizers (GPU 1 of 2), before any timing stage;
#   - results.tgz holds the stages' logs.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ci" "$work/bin" "$work/bench"
cp "$src/ci/gpu_session.sh" "$work/ci/"
log="$work/events"
stamp() { echo "echo \"$1 \$(date +%s%N) gpu=\${CUDA_VISIBLE_DEVICES:-unset} \$*\" >> $log"; }
cat > "$work/ci/deps.sh" <<EOF
tegemma_build() { mkdir -p "\$1/cli" "\$1/bench"; }
EOF
printf '#!/usr/bin/env bash\n%s\nsleep 1\n%s\n' "$(stamp sanitize_start)" "$(stamp sanitize_end)" > "$work/ci/gpu_sanitize.sh"
printf '#!/usr/bin/env bash\n%s\nsleep 0.2\n' "$(stamp bench)" > "$work/ci/bench_sets.sh"
printf '#!/usr/bin/env bash\n%s\nsleep 0.5\necho "100%% tests passed"\n' "$(stamp ctest)" > "$work/bin/ctest"
printf 'import os, time\nopen("%s", "a").write("hf %%d gpu=%%s\\n" %% (time.time_ns(), os.environ.get("CUDA_VISIBLE_DEVICES", "unset")))\n' \
  "$log" > "$work/bench/hf_anchors.py"
printf '#!/usr/bin/env bash\n%s\n[ -d "$SIDE_OUT" ] && [ -n "$TEGEMMA_BUILD_DIR" ] || exit 3\n' "$(stamp side_cmd)" \
  > "$work/ci/probe.sh"
chmod +x "$work"/ci/*.sh "$work/bin/ctest"

fail() { echo "FAIL: $*"; echo "--- events"; cat "$log"; exit 1; }
# first TIME of event NAME (nanoseconds)
at() { awk -v n="$1" '$1 == n { print $2; exit }' "$log"; }
count() { awk -v n="$1" '$1 == n' "$log" | wc -l; }

run() {  # NGPU, then gpu_session arguments
  local ngpu=$1
  shift
  printf '#!/usr/bin/env bash\nif [ "$1" = -L ]; then for i in $(seq 0 %d); do echo "GPU $i: H200"; done; fi\n' \
    $((ngpu - 1)) > "$work/bin/nvidia-smi"
  chmod +x "$work/bin/nvidia-smi"
  : > "$log"
  rm -rf "$work/out" && mkdir -p "$work/out"
  (cd "$work" && PATH="$work/bin:$PATH" OUT="$work/out" TEGEMMA_BUILD_DIR="$work/build" \
     ci/gpu_session.sh --src "$work" --deadline 300 "$@" > "$work/session.log" 2>&1) ||
    fail "gpu_session exited $? ($(tail -3 "$work/session.log"))"
}

# Two GPUs: sanitizers beside the tests, timing stages after them.
run 2 --tests . --sanitize racecheck,synccheck --bench-suite quick,full --hf-anchors
[ "$(count sanitize_start)" = 1 ] || fail "2 GPUs: the sanitizers ran $(count sanitize_start) times"
grep -q '^sanitize_start .* gpu=unset .*--gpus 1' "$log" || fail "2 GPUs: sanitizers not on GPU 1"
grep -q '^ctest .* gpu=0' "$log" || fail "2 GPUs: tests not on GPU 0"
[ "$(at ctest)" -lt "$(at sanitize_end)" ] || fail "2 GPUs: the tests did not run beside the sanitizers"
[ "$(at bench)" -gt "$(at sanitize_end)" ] || fail "2 GPUs: a bench suite started before the sanitizers ended"
[ "$(at hf)" -gt "$(at sanitize_end)" ] || fail "2 GPUs: the HF anchors started before the sanitizers ended"
[ "$(count bench)" = 2 ] || fail "2 GPUs: expected the quick and the full suite, got $(count bench) runs"
# (listed to a file first: with pipefail, grep -q leaving early can kill tar with SIGPIPE and fail the pipeline)
tar tzf "$work/out/results.tgz" > "$work/listing"
grep -q 'side_lane.log' "$work/listing" || fail "results.tgz lacks side_lane.log"

# Two GPUs, a side command: after the sanitizers, on GPU 1, before the benchmarks, with its environment.
run 2 --tests . --sanitize racecheck --side-cmd ci/probe.sh --bench-suite quick
[ "$(count side_cmd)" = 1 ] || fail "side command ran $(count side_cmd) times"
grep -q '^side_cmd .* gpu=1' "$log" || fail "side command not on GPU 1"
[ "$(at side_cmd)" -gt "$(at sanitize_end)" ] || fail "side command started before the sanitizers ended"
[ "$(at bench)" -gt "$(at side_cmd)" ] || fail "a bench suite started before the side command"
grep -q 'side command rc=0' "$work/session.log" || fail "side command failed ($(tail -5 "$work/session.log"))"

# One GPU: the sanitizers once, last, on GPU 0.
run 1 --tests . --sanitize racecheck --bench-suite quick
[ "$(count sanitize_start)" = 1 ] || fail "1 GPU: the sanitizers ran $(count sanitize_start) times"
grep -q '^sanitize_start .*--gpus 0' "$log" || fail "1 GPU: sanitizers not on GPU 0"
[ "$(at sanitize_start)" -gt "$(at bench)" ] || fail "1 GPU: the sanitizers ran before the benchmarks"
echo "ci_gpu_session: OK"
