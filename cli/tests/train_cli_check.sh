#!/bin/bash
# End-to-end checks of `tegemma train` on the CPU (tiny model, fortunes tokens), run by ctest (train_cli_check):
#   1. an uninterrupted impl run (--deterministic) and a run interrupted by SIGINT (exit 130, checkpoint saved)
#      then continued with --resume: the resumed run's training losses equal the uninterrupted run's bit for bit
#      (the JSON log prints doubles with 17 significant digits: the text compares exactly);
#   2. a NaN injected into a gradient at step 3 (TEGEMMA_INJECT_NAN_GRAD_STEP, test-only): the step is logged as
#      skipped, the run goes on;
#   3. with LibTorch: the reference engine on the same init and data, judged by `tegemma parity --loss-curves`
#      (impl BF16 tracks the reference: parity's loss thresholds);
#   4. with LibTorch: the noise run (the reference from --init-seed 6, the same data order): its log carries
#      "init_seed", it starts from another loss, and parity judges impl BF16 relative to it (noise-relative
#      verdicts with a "limit" in the JSON).
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
  # 4. the noise run of ci/train_curves.sh: the reference again with another init seed, same data order. Its
  #    log says its init seed; parity judges impl bf16 against the reference relative to it (exit 0: within).
  "$bin" train --engine reference "${common[@]}" --init-seed 6 --steps 30 --out "$work/ref_seed6" > /dev/null
  grep -q '"init_seed":6' "$work/ref_seed6/train.jsonl" || fail "the noise run's log has no \"init_seed\":6"
  grep -q '"init_seed":5' "$work/ref/train.jsonl" || fail "the reference's log has no \"init_seed\":5"
  cmp -s <(losses "$work/ref/train.jsonl" | head -1) <(losses "$work/ref_seed6/train.jsonl" | head -1) &&
    fail "--init-seed 6 starts from the same loss as --seed 5's init"
  "$bin" parity --suite none --loss-curves "$work/ref/train.jsonl,$work/impl30/train.jsonl,$work/ref_seed6/train.jsonl" \
    --out "$work/parity_noise.json" > "$work/parity_noise.txt" 2>&1 ||
    fail "parity with a noise run: $(cat "$work/parity_noise.txt")"
  python3 - "$work/parity_noise.json" <<'PY' || fail "parity_noise.json: no noise-relative verdicts"
import json, sys
r = json.load(open(sys.argv[1]))
roles = {f["role"] for f in r["run"]["loss_curves"]["files"]}
assert roles == {"run", "noise"}, roles
c = [c for c in r["comparisons"] if c["title"] == "reference[bf16] vs impl[bf16]: loss_curve"][0]
judged = [ch for ch in c["checks"] if "limit" in ch]
assert any(ch["metric"] == "loss.tail_mean_rel_diff" for ch in judged), c["checks"]
assert any(ch["metric"] == "loss.window_mean_abs_rel_diff" for ch in judged), c["checks"]
print("ok: noise-relative:", "; ".join(f'{ch["metric"]} {ch["value"]:.4g} <= {ch["limit"]:.4g}' for ch in judged[:3]))
PY
elif grep -q "no LibTorch" "$work/ref.err"; then
  echo "skip: no LibTorch in this build"
else
  fail "reference run: $(cat "$work/ref.err")"
fi
