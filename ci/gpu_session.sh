#!/usr/bin/env bash
# One device call of at most 10 minutes that always returns its results: builds the snapshot, then runs the
# stages asked for, each cut by a timeout computed from one deadline, and packs only small result files into
# $OUT/results.tgz before the deadline (checkpoints and build trees never go into $OUT: a device call whose
# $OUT is too large returns nothing).
#
#   ci/gpu_session.sh [--deadline S] [--tests REGEX] [--exclude REGEX] [--curves RUNS] [--benches LIST]
#                     [--bench-filter REGEX] [--sanitize TOOL] [--src DIR]
#
#   --deadline S      seconds from the start by which results.tgz must be written (default 560)
#   --tests REGEX     ctest -L gpu -R REGEX (none: no tests); --exclude REGEX: ctest -E
#   --curves RUNS     comma list for ci/train_curves.sh (e.g. reference,reference_seed2,bf16), run in the
#                     background beside the tests (not beside benchmarks); DATA/STEPS/... from the environment
#   --benches LIST    comma list of bench binaries, run alone after tests and curves (quick settings); an item
#                     BIN:REGEX runs BIN with that --benchmark_filter (overrides --bench-filter for BIN); more
#                     arguments for these binaries only from BENCH_ARGS (e.g. '--benchmark_repetitions=5
#                     --benchmark_enable_random_interleaving=true')
#   --sanitize TOOLS  ci/gpu_sanitize.sh --tools TOOLS (side by side) over the gpu test binaries with what time is left
#                     (--sanitize-binaries REGEX: only the binaries whose path matches, e.g. 'kernels/tests';
#                     --sanitize-until S: on 2 GPUs, stop by S seconds from the start so the timing stages can run)
#   --side-cmd CMD    after the sanitizers, in the same lane and under the same --sanitize-until bound: bash -c CMD
#                     with TEGEMMA_BUILD_DIR (the build) and SIDE_OUT (a results folder, side/) set; for targeted
#                     probes such as ci/sanitize_probe.sh (output in side_cmd.log and side/)
#   --parity SUITE    `tegemma parity --suite SUITE --device cuda` in the background beside the tests (parity_SUITE.json
#                     and .log in the results); with --curves it runs after the curves instead, with the trained
#                     small model (the impl bf16 run's last checkpoint) added (--add-model)
#   --hf-roundtrip    ci/hf_roundtrip.sh (HF transformers loads a tegemma-saved checkpoint) after the benchmarks
#   --bench-suite S   ci/bench_sets.sh's suites after the tests, in order (quick, full or quick,full)
#   --hf-anchors      bench/hf_anchors.py after the bench suites (HF transformers on the end-to-end workloads,
#                     --compile off: eager decode, no torch.compile minutes inside a device call) -> hf_anchors.json
#   --decode-ab CFGS  ci/decode_ab.sh with CONFIGS=CFGS (comma list) after the benchmarks -> decode_ab/
#   --profile-decode  ci/profile_decode.sh: ncu per-kernel times of gemma-2b (delayed, FP8 head) decode steps inside
#                     the CUDA graph, summed per kernel -> profile_decode/ (--profile-detail REGEX: also
#                     `ncu --set full` of the decode-step kernels matching REGEX; --profile-args 'ARGS': more
#                     profile_decode.sh arguments, e.g. '--config gemma-7b --batch 64 --prompt-len 20 --new-tokens 3')
# Two GPUs or more: --sanitize runs on the last GPU (the "side lane", in the background from the end of the build,
# until --sanitize-until S seconds from the start, default the deadline) beside the tests, curves and parity on
# GPU 0. Every timing stage (bench suites, benches, HF anchors, decode A/B, profile) first waits for the side lane:
# compute-sanitizer keeps host cores busy, and host-bound workloads measured beside it are wrong (session 5: the
# LibTorch reference's eager decode took 6.7 s instead of 2.05 s beside three sanitizer processes). One GPU: the
# sanitizers run last, on it.
# ctest runs CTEST_PARALLEL (default 8) tests at once: the GPU tests' CPU twins dominate their time.
#
# Device command, from a committed working tree (echo the commit into .commit first: the tree travels without .git):
#   S=$PWD; $S/ci/gpu_session.sh --src $S --tests 'Gemv|Norm' --benches bench_gemm,bench_elementwise
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root deadline=560 tests="" exclude="" curves="" benches="" bfilter="" sanitize="" parity="" hfrt=0 bsuite=""
hfa=0 dab="" prof=0 sbins="" suntil="" pdetail="" sidecmd="" pargs=""
while [ $# -gt 0 ]; do
  case $1 in
    --src) src=$(cd "$2" && pwd); shift 2;;
    --deadline) deadline=$2; shift 2;;
    --tests) tests=$2; shift 2;;
    --exclude) exclude=$2; shift 2;;
    --curves) curves=$2; shift 2;;
    --benches) benches=$2; shift 2;;
    --bench-filter) bfilter=$2; shift 2;;
    --sanitize) sanitize=$2; shift 2;;
    --parity) parity=$2; shift 2;;
    --hf-roundtrip) hfrt=1; shift;;
    --bench-suite) bsuite=$2; shift 2;;
    --hf-anchors) hfa=1; shift;;
    --decode-ab) dab=$2; shift 2;;
    --profile-decode) prof=1; shift;;
    --profile-detail) prof=1; pdetail=$2; shift 2;;
    --profile-args) prof=1; pargs=$2; shift 2;;
    --sanitize-binaries) sbins=$2; shift 2;;
    --sanitize-until) suntil=$2; shift 2;;
    --side-cmd) sidecmd=$2; shift 2;;
    *) echo "gpu_session: unknown argument $1" >&2; exit 2;;
  esac
done
t0=$(date +%s)
left() { echo $(( deadline - ($(date +%s) - t0) )); }
out=$(mktemp -d /tmp/gpu_session_out.XXXXXX)  # its own: two sessions on one machine must not share it
build=${TEGEMMA_BUILD_DIR:-$PWD/.gpu_build}
pack() {
  echo "== packing at $(( $(date +%s) - t0 ))s"
  tar czf "${OUT:-/tmp}/results.tgz" -C "$out" . && ls -la "${OUT:-/tmp}/results.tgz"
  rm -rf "$out"
}
trap pack EXIT
source "$src/ci/deps.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$out/gpu.csv" 2>&1
if ! timeout "$(( $(left) - 30 ))" bash -c "source '$src/ci/deps.sh'; tegemma_build '$build' '$src' -DTEGEMMA_CUDA=ON" \
     > "$out/build.log" 2>&1; then
  tail -40 "$out/build.log"; exit 1
fi
echo "== build done at $(( $(date +%s) - t0 ))s"
bin=$build/cli/tegemma
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU') || ngpu=1
side_lane() {  # GPU $1: the sanitizers, until --sanitize-until (or the deadline)
  local until=${suntil:-$deadline} budget
  budget=$(( until - ($(date +%s) - t0) - 45 ))
  if [ -n "$sanitize" ] && [ "$budget" -gt 45 ]; then
    TEGEMMA_BUILD_DIR=$build timeout "$(( budget + 30 ))" "$src/ci/gpu_sanitize.sh" --src "$src" --out "$out/sanitize" \
      --tools "$sanitize" --gpus "$1" --budget "$budget" --no-build ${sbins:+--binaries "$sbins"} \
      > "$out/sanitize.log" 2>&1
    tail -6 "$out/sanitize.log"
  fi
  budget=$(( until - ($(date +%s) - t0) - 15 ))
  if [ -n "$sidecmd" ] && [ "$budget" -gt 20 ]; then
    mkdir -p "$out/side"
    CUDA_VISIBLE_DEVICES=$1 TEGEMMA_BUILD_DIR=$build SIDE_OUT=$out/side timeout "$budget" bash -c "$sidecmd" \
      > "$out/side_cmd.log" 2>&1
    echo "== side command rc=$? at $(( $(date +%s) - t0 ))s"
  fi
}
wait_side() {  # before any timing stage: nothing else may load the host
  [ -n "$spid" ] || return 0
  wait "$spid"
  cat "$out/side_lane.log"
  echo "== side lane done at $(( $(date +%s) - t0 ))s"
  spid=""
}
spid=""
if [ "$ngpu" -ge 2 ] && [ -n "$sanitize$sidecmd" ]; then
  side_lane $(( ngpu - 1 )) > "$out/side_lane.log" 2>&1 &
  spid=$!
  export CUDA_VISIBLE_DEVICES=0
fi
cpid=""
if [ -n "$curves" ]; then
  cdir=$build/curves; rm -rf "$cdir"
  ( PARALLEL=1 timeout "$(( $(left) - 40 ))" "$src/ci/train_curves.sh" "$bin" "$cdir" ${curves//,/ } > "$out/curves.log" 2>&1 ) &
  cpid=$!
fi
ppid_=""
run_parity() {  # [extra parity flags...]
  ( timeout "$(( $(left) - 60 ))" "$bin" parity --suite "$parity" --device cuda --out "$out/parity_$parity.json" "$@" \
      > "$out/parity_$parity.log" 2>&1; echo "parity rc=$?" >> "$out/parity_$parity.log" ) &
  ppid_=$!
}
if [ -n "$parity" ] && [ -z "$curves" ]; then
  run_parity
fi
if [ -n "$tests" ]; then
  targs=(--test-dir "$build" -L gpu -R "$tests" --output-on-failure --timeout 300 --output-junit "$out/ctest.xml"
         -j "${CTEST_PARALLEL:-8}")
  [ -n "$exclude" ] && targs+=(-E "$exclude")
  timeout "$(( $(left) - 60 ))" ctest "${targs[@]}" > "$out/ctest.log" 2>&1
  grep -E "tests passed|\*\*\*|SEGFAULT" "$out/ctest.log" | tail -20
  echo "== tests done at $(( $(date +%s) - t0 ))s"
fi
if [ -n "$cpid" ]; then
  wait "$cpid"
  mkdir -p "$out/curves"
  (cd "$build/curves" && cp --parents */train.jsonl */run.json "$out/curves/" 2>/dev/null; cp *.log parity_loss.json parity.txt "$out/curves/" 2>/dev/null)
  tail -12 "$out/curves/parity.txt" 2>/dev/null
  echo "== curves done at $(( $(date +%s) - t0 ))s"
  if [ -n "$parity" ]; then
    trained=""
    latest="$build/curves/impl_bf16/checkpoints/latest"
    [ -f "$latest" ] && trained="$build/curves/impl_bf16/checkpoints/$(tr -d '[:space:]' < "$latest")"
    if [ -n "$trained" ] && [ -d "$trained" ]; then run_parity --add-model "$trained"; else run_parity; fi
  fi
fi
IFS=, read -ra bench_items <<< "$benches"
if [ -n "$ppid_" ]; then
  wait "$ppid_"
  tail -3 "$out/parity_$parity.log"
  echo "== parity done at $(( $(date +%s) - t0 ))s"
fi
[ -n "$bsuite$benches$dab" ] || [ "$hfa" = 1 ] || [ "$prof" = 1 ] && wait_side
IFS=, read -ra suites <<< "$bsuite"
for su in "${suites[@]}"; do
  [ "$(left)" -gt 60 ] || { echo "== no time left for bench suite $su"; break; }
  timeout "$(( $(left) - 30 ))" "$src/ci/bench_sets.sh" "$su" "$build" "$out/bench_$su" > "$out/bench_suite_$su.log" 2>&1
  echo "== bench suite $su rc=$? at $(( $(date +%s) - t0 ))s"
done
for item in "${bench_items[@]}"; do
  b=${item%%:*} f=$bfilter
  [ "$item" != "$b" ] && f=${item#*:}
  [ "$(left)" -gt 45 ] || { echo "== no time left for $b"; break; }
  args=(--benchmark_out="$out/$b.json" --benchmark_out_format=json --benchmark_min_time=0.05s
        --benchmark_min_warmup_time=0.05)
  [ -n "$f" ] && args+=(--benchmark_filter="$f")
  [ -n "${BENCH_ARGS:-}" ] && read -ra extra <<< "$BENCH_ARGS" && args+=("${extra[@]}")
  timeout "$(( $(left) - 30 ))" "$build/bench/$b" "${args[@]}" > "$out/$b.log" 2>&1
  echo "== $b rc=$? at $(( $(date +%s) - t0 ))s"
done
if [ "$hfrt" = 1 ] && [ "$(left)" -gt 60 ]; then
  timeout "$(( $(left) - 30 ))" "$src/ci/hf_roundtrip.sh" "$bin" "$out/hf_roundtrip" cuda > "$out/hf_roundtrip.log" 2>&1
  echo "== hf roundtrip rc=$? at $(( $(date +%s) - t0 ))s"; tail -3 "$out/hf_roundtrip.log"
fi
if [ "$hfa" = 1 ] && [ "$(left)" -gt 90 ]; then
  ( export PYTHONUNBUFFERED=1
    timeout "$(( $(left) - 40 ))" python3 "$src/bench/hf_anchors.py" --compile off --out "$out/hf_anchors.json" ) \
    > "$out/hf_anchors.log" 2>&1
  echo "== hf anchors rc=$? at $(( $(date +%s) - t0 ))s"; tail -3 "$out/hf_anchors.log"
fi
if [ -n "$dab" ] && [ "$(left)" -gt 60 ]; then
  CONFIGS=${dab//,/ } timeout "$(( $(left) - 30 ))" "$src/ci/decode_ab.sh" "$build" "$out/decode_ab" > "$out/decode_ab.log" 2>&1
  echo "== decode A/B rc=$? at $(( $(date +%s) - t0 ))s"; cat "$out/decode_ab/summary.txt" 2>/dev/null
fi
if [ "$prof" = 1 ] && [ "$(left)" -gt 60 ]; then
  timeout "$(( $(left) - 30 ))" "$src/ci/profile_decode.sh" "$bin" "$out/profile_decode" --fp8-lm-head \
    ${pdetail:+--detail "$pdetail"} $pargs > "$out/profile_decode.log" 2>&1
  echo "== decode profile rc=$? at $(( $(date +%s) - t0 ))s"; head -14 "$out/profile_decode/summary.txt" 2>/dev/null
fi
if [ "$ngpu" -ge 2 ]; then
  wait_side  # the side lane, unless a timing stage already waited for it (or none was started)
elif [ -n "$sanitize$sidecmd" ]; then
  side_lane 0
fi
