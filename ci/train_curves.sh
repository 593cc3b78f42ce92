#!/usr/bin/env bash
# The loss-curve runs of issue 6: the same initial weights and the same batches for the reference BF16, impl
# BF16 and impl under each FP8 recipe; one `tegemma train` run each into OUT/<engine>_<recipe>/ (train.jsonl,
# run.json), then `tegemma parity --loss-curves` judges the pairs (reference vs impl bf16, impl bf16 vs each FP8
# recipe) into OUT/parity_loss.json.
#   ci/train_curves.sh TEGEMMA_BIN OUT_DIR [RUN...]      RUN: reference | bf16 | delayed | current | block (default:
#                                                        all, in that order; give one to run them one at a time)
# Environment: STEPS (2000), CONFIG (small: 188M parameters in Gemma's shape), DATA (the 8192-token fortunes
# file), BATCH (16), SEQ (512), LR (6e-4), WARMUP (100), VAL_EVERY (100), DEVICE (cuda), EXTRA (more flags).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tg=${1:?usage: ci/train_curves.sh TEGEMMA_BIN OUT_DIR [RUN...]}
out=${2:?usage: ci/train_curves.sh TEGEMMA_BIN OUT_DIR [RUN...]}
shift 2
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(reference bf16 delayed current block)
common=(--config "${CONFIG:-small}" --data "${DATA:-$root/assets/fortunes/tokens-8192.bin}" --steps "${STEPS:-2000}"
        --batch "${BATCH:-16}" --seq "${SEQ:-512}" --lr "${LR:-6e-4}" --warmup "${WARMUP:-100}" --min-lr-ratio 0.1
        --weight-decay 0.1 --val-every "${VAL_EVERY:-100}" --val-batches 16 --seed 1 --device "${DEVICE:-cuda}"
        --quiet ${EXTRA:-})
mkdir -p "$out"
for run in "${runs[@]}"; do
  if [ "$run" = reference ]; then
    dir="$out/reference_bf16"
    echo "== reference bf16 -> $dir"
    "$tg" train --engine reference "${common[@]}" --out "$dir"
  else
    dir="$out/impl_$run"
    echo "== impl $run -> $dir"
    "$tg" train --engine impl --precision "$run" "${common[@]}" --out "$dir"
  fi
done
logs=()
for d in "$out"/*/train.jsonl; do [ -f "$d" ] && logs+=("$d"); done
if [ ${#logs[@]} -ge 2 ]; then
  (IFS=,; "$tg" parity --suite none --loss-curves "${logs[*]}" --out "$out/parity_loss.json") || true
fi
