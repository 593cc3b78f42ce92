#!/usr/bin/env bash
# The loss-curve runs of issue 6: the same initial weights and the same batches for the reference BF16, impl
# BF16 and impl under each FP8 recipe, plus a noise run (the reference BF16 again from another init seed, with
# the same data order); one `tegemma train` run each into OUT/<run>/ (train.jsonl, run.json), then
# `tegemma parity --loss-curves` judges the pairs into OUT/parity_loss.json (+ parity.txt): reference vs impl
# bf16 relative to the measured reference-vs-noise-run distance (parity/compare.h), impl bf16 vs each FP8
# recipe and reference vs each FP8 recipe by the fixed FP8 gates (final validation loss within 2%).
#   ci/train_curves.sh TEGEMMA_BIN OUT_DIR [RUN...]      RUN: reference | reference_seed2 | bf16 | delayed |
#                                                        current | block (default: all, in that order)
# Environment (defaults in brackets):
#   DATA [build/docs-data/tokens-8192.bin: the Python-docs corpus, ci/prepare_data.sh --corpus docs; 2.98M
#   training tokens]  STEPS [2000]  BATCH [8]  SEQ [256]: 2000 x 8 x 256 = 4.1M tokens = 1.38 epochs of it (the
#   fortunes file, 725k training tokens, would be 5.6 epochs: the last ~400 steps memorise and every pair of
#   runs drifts 1-2.3% apart, 2026-11-30 H200 run; to use it, keep <= 2.5 epochs: BATCH=4 SEQ=224).
#   CONFIG [small: 188M parameters in Gemma's shape]  LR [6e-4]  WARMUP [100]  VAL_EVERY [100]  DEVICE [cuda]
#   NOISE_SEED [2: the noise run's init seed; the others use seed 1]  EXTRA [more train flags]
#   PARALLEL [0; 1: the runs side by side on one device, each logging to OUT/<run>.log]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tg=${1:?usage: ci/train_curves.sh TEGEMMA_BIN OUT_DIR [RUN...]}
out=${2:?usage: ci/train_curves.sh TEGEMMA_BIN OUT_DIR [RUN...]}
shift 2
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(reference reference_seed2 bf16 delayed current block)
data=${DATA:-$root/build/docs-data/tokens-8192.bin}
if [ ! -f "$data" ]; then
  echo "train_curves: $data missing: run ci/prepare_data.sh --corpus docs (and carry build/docs-data to the" \
       "GPU machine), or set DATA (assets/fortunes/tokens-8192.bin with BATCH=4 SEQ=224 stays at 2.5 epochs)" >&2
  exit 2
fi
noise_seed=${NOISE_SEED:-2}
common=(--config "${CONFIG:-small}" --data "$data" --steps "${STEPS:-2000}"
        --batch "${BATCH:-8}" --seq "${SEQ:-256}" --lr "${LR:-6e-4}" --warmup "${WARMUP:-100}" --min-lr-ratio 0.1
        --weight-decay 0.1 --val-every "${VAL_EVERY:-100}" --val-batches 16 --seed 1 --device "${DEVICE:-cuda}"
        --quiet ${EXTRA:-})
mkdir -p "$out"
pids=() names=()
for run in "${runs[@]}"; do
  case "$run" in
    reference) dir=reference_bf16; cmd=(train --engine reference) ;;
    # The run-to-run noise baseline: another init, the same data order (--seed 1), so per-step differences
    # compare models on the same batches, as reference vs impl do.
    reference_seed2) dir=reference_seed$noise_seed; cmd=(train --engine reference --init-seed "$noise_seed") ;;
    bf16|delayed|current|block) dir=impl_$run; cmd=(train --engine impl --precision "$run") ;;
    *) echo "train_curves: unknown run '$run' (reference | reference_seed2 | bf16 | delayed | current | block)" >&2
       exit 2 ;;
  esac
  echo "== $run -> $out/$dir"
  if [ "${PARALLEL:-0}" = 1 ]; then
    "$tg" "${cmd[@]}" "${common[@]}" --out "$out/$dir" >"$out/$dir.log" 2>&1 &
    pids+=($!) names+=("$dir")
  else
    "$tg" "${cmd[@]}" "${common[@]}" --out "$out/$dir"
  fi
done
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "train_curves: ${names[$i]} failed: $(tail -3 "$out/${names[$i]}.log")" >&2
    failed=1
  fi
done
logs=()
for d in "$out"/*/train.jsonl; do [ -f "$d" ] && logs+=("$d"); done
if [ ${#logs[@]} -ge 2 ]; then
  (IFS=,; "$tg" parity --suite none --loss-curves "${logs[*]}" --out "$out/parity_loss.json") 2>&1 |
    tee "$out/parity.txt" || true
fi
exit $failed
