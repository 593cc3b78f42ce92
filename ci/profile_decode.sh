#!/usr/bin/env bash
# Where a decode step's time goes (issue 7), on the GPU machine:
#   ci/profile_decode.sh TEGEMMA_BIN OUT_DIR [--config gemma-2b] [--precision delayed] [--fp8-lm-head]
#                        [--batch 1] [--prompt-len 128] [--new-tokens 8] [--detail REGEX] [--detail-count N]
#                        [--env VAR=VALUE]...
# 1. ncu_nodes.csv: every kernel of `tegemma generate` (random weights of --config, --batch prompts of --prompt-len
#    tokens (default one of 128; the TE tutorial's shape: --config gemma-7b --batch 64 --prompt-len 20), --new-tokens
#    (default 8; at least 3 for one complete step between two sampling kernels)
#    timed by ncu with --graph-profiling node, so the decode step's kernels are measured as the CUDA graph replays
#    them, with caches and clocks left alone (--cache-control none --clock-control none; session 3 flushed caches
#    per kernel, which made every small kernel read cold). Each node is still timed alone: the programmatic-launch
#    overlap between neighbours is not in the figures, so their sum exceeds the replayed step.
# 2. summary.txt: the last complete decode step (the kernels between the last two sampling kernels) per kernel and
#    grid: launches, time per launch, time per step, share of the step.
# 3. --detail REGEX: `ncu --set full` of the first N (--detail-count, default 3) decode-step launches of the kernels
#    matching REGEX (eager steps, --no-cuda-graph, so that the NVTX range of the decoder's step selects them; layer
#    0's GEMVs are QKV, O, fc1, fc2 in that order: 'gemv_kernel' with 4 reaches fc2) -> detail.txt.
# --env VAR=VALUE runs everything with that environment (e.g. TEGEMMA_GEMV_KSPLIT=4), repeatable.
set -uo pipefail
[ $# -ge 2 ] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
bin=$1 out=$2
shift 2
config=gemma-2b precision=delayed head=() detail="" dcount=3 envs=() batch=1 plen=128 ntok=8
while [ $# -gt 0 ]; do
  case $1 in
    --config) config=$2; shift 2;;
    --precision) precision=$2; shift 2;;
    --fp8-lm-head) head=(--fp8-lm-head); shift;;
    --detail) detail=$2; shift 2;;
    --detail-count) dcount=$2; shift 2;;
    --env) envs+=("$2"); shift 2;;
    --batch) batch=$2; shift 2;;
    --prompt-len) plen=$2; shift 2;;
    --new-tokens) ntok=$2; shift 2;;
    *) echo "profile_decode: unknown argument $1" >&2; exit 2;;
  esac
done
command -v ncu > /dev/null || { echo "profile_decode: ncu not found" >&2; exit 2; }
mkdir -p "$out"
prompt=$(seq -s, 2 $(( plen + 1 )))
ids=$prompt
for _ in $(seq 2 "$batch"); do ids+=";$prompt"; done
gen=("$bin" generate --config "$config" --precision "$precision" "${head[@]}" --tokens "$ids" --ignore-eos
     --device cuda --quiet)
env "${envs[@]}" ncu --graph-profiling node --cache-control none --clock-control none \
  --metrics gpu__time_duration.sum --csv --log-file "$out/ncu_nodes.csv" "${gen[@]}" --max-new-tokens "$ntok" \
  > "$out/generate.log" 2>&1 || { echo "profile_decode: ncu failed (see $out/generate.log)" >&2; exit 1; }
python3 - "$out/ncu_nodes.csv" <<'PY' | tee "$out/summary.txt"
import csv, re, sys
rows = []
with open(sys.argv[1]) as f:
    reader = csv.reader(l for l in f if l.startswith('"'))
    header = next(reader)
    name_i, grid_i = header.index("Kernel Name"), header.index("Grid Size")
    for r in reader:
        rows.append((r[name_i], r[grid_i], float(r[-1].replace(",", ""))))
samples = [i for i, r in enumerate(rows) if "sample_tokens" in r[0]]
if len(samples) < 2:
    sys.exit("profile_decode: fewer than two sampling kernels in the profile: no complete decode step")
step = rows[samples[-2] + 1:samples[-1] + 1]
total = sum(r[2] for r in step)
def short(n):
    n = re.sub(r"\(.*", "", n).replace("void ", "")
    return re.sub(r"tg::(<unnamed>::|kernels::cuda::)?", "", n)[:72]
agg = {}
for name, grid, ns in step:
    a = agg.setdefault((short(name), grid), [0, 0.0])
    a[0] += 1
    a[1] += ns
print(f"decode step: {len(step)} kernels, {total / 1000:.1f} us summed (each node timed alone)")
print(f"{'per step':>9} {'share':>6} {'n':>4} {'per launch':>11}  kernel  grid")
for (name, grid), (n, ns) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"{ns / 1000:8.1f}us {100 * ns / total:5.1f}% {n:4d} {ns / n / 1000:9.2f}us  {name}  {grid}")
PY
if [ -n "$detail" ]; then
  env "${envs[@]}" ncu --set full --clock-control none --nvtx --nvtx-include "Decoder::step/" -k "regex:$detail" -c "$dcount" \
    "${gen[@]}" --max-new-tokens 4 --no-cuda-graph > "$out/detail.txt" 2>&1
  echo "== detail rc=$? ($out/detail.txt)"
fi
