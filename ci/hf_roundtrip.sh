#!/usr/bin/env bash
# The HF transformers round trip (issue 5) on a machine with python3 + torch + transformers (the H200):
# tegemma writes a random-weight model as an HF checkpoint and its logits, HF loads the checkpoint and compares
# (reference/scripts/hf_roundtrip.py says how it judges). Presets: gemma-2b and gemma-7b shapes at 2 layers.
#   ci/hf_roundtrip.sh TEGEMMA_BIN OUT_DIR [DEVICE]        -> OUT_DIR/roundtrip_<preset>.json, exit 0/1/2
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tg=${1:?usage: ci/hf_roundtrip.sh TEGEMMA_BIN OUT_DIR [DEVICE]}
out=${2:?usage: ci/hf_roundtrip.sh TEGEMMA_BIN OUT_DIR [DEVICE]}
device=${3:-cuda}
mkdir -p "$out"
tokens="2,651,9,4,17;2,300,7,1000,255999,42,8,8,8,3;2"
rc=0
for preset in gemma-2b gemma-7b; do
  dir=$(mktemp -d)
  if ! "$tg" forward --config "$preset" --layers 2 --seed 3 --precision bf16 --device "$device" --tokens "$tokens" \
       --logits all --dump-logits "$dir/ours.npy" --save "$dir/model" > "$out/forward_$preset.log" 2>&1; then
    echo "hf_roundtrip: tegemma forward failed for $preset (see $out/forward_$preset.log)"; rc=2; rm -rf "$dir"; continue
  fi
  python3 "$root/reference/scripts/hf_roundtrip.py" --model "$dir/model" --tokens "$tokens" --ours "$dir/ours.npy" \
    --out "$out/roundtrip_$preset.json" > "$out/roundtrip_$preset.log" 2>&1
  r=$?
  tail -1 "$out/roundtrip_$preset.log"
  [ $r -gt $rc ] && rc=$r
  rm -rf "$dir"
done
exit $rc
