#!/bin/bash
# Fault test of `tegemma train` (issue 11), run by ctest (train_kill_check, label cpu): a run SIGKILLed in the
# middle of a checkpoint write leaves the previous checkpoint complete and loadable, and --resume from it repeats
# the uninterrupted run bit for bit.
#   TEGEMMA_TEST_HANG_IN_CHECKPOINT=K (test-only, impl/trainer.h) makes the save at step count K stop after
#   model.safetensors and optimizer.safetensors are written into its temporary directory (trainer_state.json
#   not yet) and wait; the script sees the message on stderr and sends SIGKILL there. Then:
#   1. checkpoints/latest still names the previous checkpoint; that directory is complete; the killed save
#      left only its temporary directory (step-K.tmp-PID, never a step-K directory or a file under a final name);
#   2. --resume loads the previous checkpoint (every tensor's checksum verified), and the losses of the
#      resumed run equal an uninterrupted run's (text of 17-digit doubles: exact); the temporary directory is
#      cleaned up and the newest two checkpoints are kept;
#   3. a run killed inside its FIRST checkpoint write has nothing to resume: --resume fails with a message that
#      says so (exit 2, as every error), and a fresh run in the same directory works.
#   4. --resume refuses, naming the problem (exit 2): other data arguments than the checkpoint's, and a checkpoint
#      whose model.safetensors lost a bit after it was written (the per-tensor checksum in trainer_state.json).
# usage: train_kill_check.sh TEGEMMA_BIN SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
common=(--config tiny --batch 2 --seq 32 --lr 3e-3 --warmup 2 --seed 7 --device cpu --quiet
        --data "$src/assets/fortunes/tokens-512.bin" --deterministic --steps 20 --ckpt-every 5)
losses() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    j = json.loads(l)
    if "loss" in j: print(j["step"], repr(j["loss"]))' "$1"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# Starts a run that hangs inside the checkpoint write at step count $2 (output dir $1), SIGKILLs it there.
run_and_kill() {
  local out=$1 k=$2
  TEGEMMA_TEST_HANG_IN_CHECKPOINT=$k "$bin" train "${common[@]}" --out "$out" > /dev/null 2> "$out.err" &
  local pid=$!
  for _ in $(seq 1 2400); do   # up to 120 s (a sanitizer build is slow)
    grep -q "hanging inside the checkpoint write of step $k " "$out.err" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || fail "the run exited before reaching the checkpoint of step $k: $(cat "$out.err")"
    sleep 0.05
  done
  grep -q "hanging inside the checkpoint write of step $k " "$out.err" || { kill -9 "$pid"; fail "no hang at step $k"; }
  kill -9 "$pid"
  set +e; wait "$pid"; local rc=$?; set -e
  [ "$rc" -eq 137 ] || fail "the killed run exited $rc, expected 137 (SIGKILL)"
}

# The reference: the same run, uninterrupted.
"$bin" train "${common[@]}" --out "$work/a" > /dev/null

# 1. killed inside the save of step 10: step-5 must be intact.
b=$work/b
run_and_kill "$b" 10
ck=$b/checkpoints
[ "$(cat "$ck/latest")" = "step-00000005" ] || fail "checkpoints/latest is '$(cat "$ck/latest")', expected step-00000005"
for f in config.json model.safetensors optimizer.safetensors trainer_state.json; do
  [ -s "$ck/step-00000005/$f" ] || fail "the previous checkpoint lost $f"
done
[ ! -e "$ck/step-00000010" ] || fail "a step-00000010 directory exists although its save was killed"
tmpdirs=("$ck"/step-00000010.tmp-*)
[ -d "${tmpdirs[0]}" ] || fail "no temporary directory of the killed save (was it killed inside the write?)"
[ -s "${tmpdirs[0]}/model.safetensors" ] && [ ! -e "${tmpdirs[0]}/trainer_state.json" ] ||
  fail "the killed save's temporary directory is not half written: $(ls "${tmpdirs[0]}")"
# No file was left under a final name by a killed atomic write (they write NAME.tmp.* and rename).
leftover=$(find "$ck/step-00000005" "$ck/latest" -name '*.tmp.*' | head -1)
[ -z "$leftover" ] || fail "a temporary file inside the previous checkpoint: $leftover"
echo "ok: SIGKILL inside the step-10 checkpoint write left step-5 complete and latest pointing at it"

# 2. resume from step 5.
"$bin" train "${common[@]}" --out "$b" --resume > /dev/null 2> "$b.resume.err" ||
  fail "--resume after SIGKILL failed: $(cat "$b.resume.err")"
grep -q "resumed from .*step-00000005 at step 5" "$b.resume.err" || fail "did not resume from step 5: $(cat "$b.resume.err")"
diff <(losses "$work/a/train.jsonl") <(losses "$b/train.jsonl") > "$work/diff.txt" ||
  fail "resumed losses differ from the uninterrupted run's: $(head -5 "$work/diff.txt")"
[ "$(losses "$b/train.jsonl" | wc -l)" -eq 20 ] || fail "the resumed log does not have 20 losses"
[ "$(cat "$ck/latest")" = "step-00000020" ] || fail "after the resumed run, latest is '$(cat "$ck/latest")'"
left=$(cd "$ck" && ls | tr '\n' ' ')
[ "$left" = "latest step-00000015 step-00000020 " ] || fail "checkpoints/ holds '$left', expected latest + the newest two"
echo "ok: resumed from step 5; 20 losses equal the uninterrupted run's bit for bit; stale temporary directory removed"

# 3. killed inside the first checkpoint write: nothing to resume, and it says so.
c=$work/c
run_and_kill "$c" 5
[ ! -e "$c/checkpoints/latest" ] || fail "latest exists although the first save was killed"
set +e; "$bin" train "${common[@]}" --out "$c" --resume > /dev/null 2> "$c.resume.err"; rc=$?; set -e
[ "$rc" -eq 2 ] || fail "--resume with no complete checkpoint exited $rc, expected 2 (an error)"
grep -q "has no checkpoint" "$c.resume.err" || fail "unclear --resume error: $(cat "$c.resume.err")"
"$bin" train "${common[@]}" --out "$c" > /dev/null 2> "$c.fresh.err" || fail "fresh run after the kill: $(cat "$c.fresh.err")"
diff <(losses "$work/a/train.jsonl") <(losses "$c/train.jsonl") > /dev/null ||
  fail "a fresh run over a killed run's directory does not equal the uninterrupted run"
echo "ok: killed inside the first save: --resume says there is no checkpoint; a fresh run in the same directory works"

# 4. bad resumes: other data arguments; a damaged checkpoint.
other_seed=()
for a in "${common[@]}"; do [ "$a" = 7 ] && other_seed+=(8) || other_seed+=("$a"); done   # --seed 7 -> 8
set +e; "$bin" train "${other_seed[@]}" --out "$b" --resume > /dev/null 2> "$b.seed.err"; rc=$?; set -e
[ "$rc" -eq 2 ] && grep -q "was written with other data arguments" "$b.seed.err" ||
  fail "--resume with another --seed: exit $rc, $(cat "$b.seed.err")"
python3 - "$ck/step-00000020/model.safetensors" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[-5] ^= 0x04                      # one bit of the last tensor's data
open(p, "wb").write(bytes(b))
PY
set +e; "$bin" train "${common[@]}" --out "$b" --resume > /dev/null 2> "$b.corrupt.err"; rc=$?; set -e
[ "$rc" -eq 2 ] && grep -q "is corrupt (checksum" "$b.corrupt.err" ||
  fail "--resume from a damaged checkpoint: exit $rc, $(cat "$b.corrupt.err")"
echo "ok: --resume with other data arguments or from a damaged checkpoint is refused with the reason"
