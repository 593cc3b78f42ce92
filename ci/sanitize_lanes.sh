#!/usr/bin/env bash
# ci/sanitize_probe.sh in several lanes at once on one GPU: each REGEX is one lane (its probes in order), all lanes
# side by side. For a one-GPU machine, where the probes otherwise run one after another after the timing stages
# (session 10: 11 probes took 545 s in one lane while the GPU sat mostly idle and 15 of 16 host cores waited).
# compute-sanitizer is host-bound; give each lane a few cores (16-core device: up to 4 lanes).
#
#   ci/sanitize_lanes.sh REGEX [REGEX ...]      (gpu_session.sh --side-cmd; TEGEMMA_BUILD_DIR and SIDE_OUT set)
#
# Lane i writes SIDE_OUT/lane<i>/ (the probe logs and probes.tsv); SIDE_OUT/probes.tsv is every lane's rows
# (one header). PROBE_TIMEOUT and PROBE_BUDGET apply to each lane. A TERM or INT stops every lane (each records its
# running probe as stopped). Exit status: the highest of the lanes'.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: sanitize_lanes.sh REGEX [REGEX ...]" >&2; exit 2; }
out=${SIDE_OUT:?set SIDE_OUT to the results folder}
mkdir -p "$out"
pids=()
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait
  merge
  exit 143
}
merge() {
  local first=1 f
  : > "$out/probes.tsv.tmp"
  for ((i = 0; i < ${#pids[@]}; ++i)); do
    f=$out/lane$i/probes.tsv
    [ -f "$f" ] || continue
    if [ $first = 1 ]; then cat "$f"; first=0; else tail -n +2 "$f"; fi >> "$out/probes.tsv.tmp"
  done
  mv "$out/probes.tsv.tmp" "$out/probes.tsv"
}
trap stop TERM INT
i=0
for re in "$@"; do
  SIDE_OUT=$out/lane$i "$root/ci/sanitize_probe.sh" "$re" > "$out/lane$i.log" 2>&1 &
  pids+=($!)
  i=$(( i + 1 ))
done
rc=0
for p in "${pids[@]}"; do
  wait "$p"
  r=$?
  [ $r -gt $rc ] && rc=$r
done
merge
cat "$out"/lane*.log
exit $rc
