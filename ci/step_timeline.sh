#!/usr/bin/env bash
# Where the replayed decode step's time goes, kernel by kernel inside the chain (issue 7), on the GPU machine:
#   ci/step_timeline.sh SRC OUT [--configs "gemma-2b gemma-7b"] [--new-tokens 64] [--env VAR=VALUE]...
# Configures a profiling tree from SRC with -DTEGEMMA_STEP_TIMELINE=ON (kernels/launch/step_timeline.h; ~90 s on
# 16 cores, in $STEP_TIMELINE_BUILD or /tmp/tegemma_step_timeline), builds only `tegemma` there, then for each
# config runs `tegemma generate` (random weights, delayed + FP8 lm_head, batch 1, a 128-token prompt, --new-tokens
# greedy tokens, EOS ignored) with --step-timeline OUT/<config>.json and prints ci/step_timeline.py's table into
# OUT/<config>.txt. --env runs everything with that environment (a decoder switch), repeatable. Since session 21 the
# generator replays 4 steps per graph: the steps inside a replay and the replay boundaries are averaged alike
# (--env TEGEMMA_DECODE_STEPS_PER_GRAPH=1 for one step per replay).
# The profiling build adds a load, a branch and (block 0) one atomic per kernel: compare its step time with a
# normal build's before reading small differences.
set -uo pipefail
[ $# -ge 2 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
src=$1 out=$2
shift 2
configs="gemma-2b gemma-7b" ntok=64 envs=()
while [ $# -gt 0 ]; do
  case $1 in
    --configs) configs=$2; shift 2;;
    --new-tokens) ntok=$2; shift 2;;
    --env) envs+=("$2"); shift 2;;
    *) echo "step_timeline: unknown argument $1" >&2; exit 2;;
  esac
done
build=${STEP_TIMELINE_BUILD:-/tmp/tegemma_step_timeline}
mkdir -p "$out"
source "$src/ci/deps.sh"
if ! { tegemma_configure "$build" "$src" -DTEGEMMA_CUDA=ON -DTEGEMMA_TESTS=OFF -DTEGEMMA_STEP_TIMELINE=ON &&
       cmake --build "$build" -j "$(nproc)" --target tegemma; } > "$out/build.log" 2>&1; then
  tail -30 "$out/build.log"; exit 1
fi
echo "== step timeline build done"
prompt=$(seq -s, 2 129)
rc=0
for cfg in $configs; do
  if ! env "${envs[@]}" "$build/cli/tegemma" generate --config "$cfg" --precision delayed --fp8-lm-head \
        --tokens "$prompt" --max-new-tokens "$ntok" --ignore-eos --device cuda --quiet \
        --step-timeline "$out/$cfg.json" > "$out/$cfg.log" 2>&1; then
    echo "step_timeline: $cfg: generate failed (see $out/$cfg.log)"; tail -5 "$out/$cfg.log"; rc=1; continue
  fi
  python3 "$src/ci/step_timeline.py" "$out/$cfg.json" --json "$out/$cfg.summary.json" | tee "$out/$cfg.txt" || rc=1
  tail -1 "$out/$cfg.log"
done
exit $rc
