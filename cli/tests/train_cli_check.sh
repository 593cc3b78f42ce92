#!/bin/bash
# End-to-end checks of `tegemma train` on the CPU (tiny model, fortunes tokens), run by ctest (train_cli_check):
#   1. an uninterrupted impl run (--deterministic) and a run interrupted by SIGINT (exit 130, checkpoint saved)
#      then continued with --resume: the resumed run's training losses equal the uninterrupted run's bit for bit
#      (the JSON log prints doubles with 17 significant digits: the text compares exactly);
#   2. a NaN injected into a gradient at step 3 (TEGEMMA_INJECT_NAN_GRAD_STEP, test-only): the step is logged as
#      skipped, the run goes on;
#   3. with LibTorch: the reference engine on the same init and data, judged by `tegemma parity --loss-curves`
#      (impl BF16 tracks the reference: parity's loss thresholds).
# usage: train_cli_check.sh TEGEMMA_BIN SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
common=(--config tiny --batch 2 --seq 32 --lr 3e-3 --warmup 2 --seed 5 --device cpu --quiet
        --data "$src/assets/fortunes/tokens-512.bin" --deterministic)
losses() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    j = json.loads(l)
    if "loss" in j: print(j["step"], repr(j["loss"]))' "$1"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. uninterrupted vs interrupted + resumed
"$bin" train "${common[@]}" --steps 400 --out "$work/a" > /dev/null
"$bin" train "${common[@]}" --steps 400 --out "$work/b" > /dev/null &
pid=$!
for _ in $(seq 1 600); do
  [ -f "$work/b/train.jsonl" ] && [ "$(wc -l < "$work/b/train.jsonl")" -ge 20 ] && break
  sleep 0.05
done
kill -INT "$pid"
set +e; wait "$pid"; rc=$?; set -e
[ "$rc" -eq 130 ] || fail "interrupted run exited $rc, expected 130"
[ -f "$work/b/checkpoints/latest" ] || fail "no checkpoint after SIGINT"
stopped=$(losses "$work/b/train.jsonl" | wc -l)
[ "$stopped" -lt 400 ] || fail "the run finished before the interrupt (make it longer)"
"$bin" train "${common[@]}" --steps 400 --out "$work/b" --resume > /dev/null
diff <(losses "$work/a/train.jsonl") <(losses "$work/b/train.jsonl") > "$work/diff.txt" ||
  fail "resumed losses differ from the uninterrupted run's (stopped after $stopped steps): $(head -5 "$work/diff.txt")"
echo "ok: interrupted after $stopped steps, resumed, 400 losses equal bit for bit"

# 2. NaN gradient -> skipped step, logged
TEGEMMA_INJECT_NAN_GRAD_STEP=3 "$bin" train "${common[@]}" --steps 6 --out "$work/nan" > /dev/null 2> "$work/nan.err"
python3 - "$work/nan/train.jsonl" <<'PY' || fail "the NaN step was not logged as skipped"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
assert [r["skipped"] for r in recs] == [False, False, False, True, False, False], recs
PY
grep -q "step 3 SKIPPED" "$work/nan.err" || fail "no SKIPPED message on stderr"
echo "ok: NaN gradient at step 3 skipped and logged"

# 3. the reference on the same init and data (needs a LibTorch build)
if "$bin" train --engine reference "${common[@]}" --steps 30 --out "$work/ref" > /dev/null 2> "$work/ref.err"; then
  "$bin" train "${common[@]}" --steps 30 --out "$work/impl30" > /dev/null
  "$bin" parity --suite none --loss-curves "$work/ref/train.jsonl,$work/impl30/train.jsonl" > "$work/parity.txt" 2>&1 ||
    fail "parity: impl bf16 does not track the reference: $(cat "$work/parity.txt")"
  echo "ok: impl bf16 tracks the reference (tegemma parity --loss-curves)"
elif grep -q "no LibTorch" "$work/ref.err"; then
  echo "skip: no LibTorch in this build"
else
  fail "reference run: $(cat "$work/ref.err")"
fi
