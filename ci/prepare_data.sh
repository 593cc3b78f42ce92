#!/usr/bin/env bash
# The training data, from scratch: corpus text from Debian's `fortunes`, SentencePiece BPE tokenizers trained
# with spm_train (vocab 512 for the "tiny" preset, 8192 for "small"), and the corpus tokenized by OUR C++
# tokenizer into token files with a train/validation split by document. Every step is deterministic.
# The results are committed under assets/fortunes/ (the GPU machine has neither apt nor spm_train).
#
#   ci/prepare_data.sh            regenerate into $TEGEMMA_DATA_DIR (default build/data) and compare with assets/
#   ci/prepare_data.sh --check    the same; exit 1 if a file differs from the committed one
#   ci/prepare_data.sh --update   regenerate and copy into assets/fortunes/ (then commit them)
#
# Environment: TEGEMMA_BIN (an already built tegemma), else it is built in $TEGEMMA_BUILD_DIR (default ./build);
# TEGEMMA_SKIP_DEPS=1 skips the apt install step (the ctest `prepare_data_check` sets it).
# Exit codes: 0 ok, 1 --check found a difference, 2 usage, 77 spm_train or the fortunes are missing.
#
# Determinism: the corpus and the token files depend only on the fortune files and our code. spm_train 0.1.97
# (Debian 12) gives byte-identical models on every run and thread count once the input path and model prefix
# (both recorded in the model) are the same, which this script fixes by running in the work directory. Another
# spm_train version may train different merges: --check then reports the models as differing (a warning when
# the version differs from MANIFEST's), but also tokenizes with the COMMITTED models, which must reproduce the
# committed token files exactly.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=compare
case "${1:-}" in
  --check) mode=check ;;
  --update) mode=update ;;
  "") ;;
  *) echo "usage: ci/prepare_data.sh [--check | --update]" >&2; exit 2 ;;
esac

source "$root/ci/deps.sh"
[ -n "${TEGEMMA_SKIP_DEPS:-}" ] || tegemma_ensure_deps
fortunes=/usr/share/games/fortunes
# Exit 77 (ctest's "skipped") where the tools are missing, as on the GPU machine.
command -v spm_train >/dev/null || { echo "prepare_data: spm_train missing (Debian package sentencepiece)" >&2; exit 77; }
[ -d "$fortunes" ] || { echo "prepare_data: $fortunes missing (Debian package fortunes)" >&2; exit 77; }

bin=${TEGEMMA_BIN:-}
if [ -z "$bin" ]; then
  build=${TEGEMMA_BUILD_DIR:-$root/build}
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  fi
  cmake --build "$build" --target tegemma -j "$(nproc)" >/dev/null
  bin=$build/cli/tegemma
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

assets=$root/assets/fortunes
work=${TEGEMMA_DATA_DIR:-$root/build/data}
mkdir -p "$work"
work=$(cd "$work" && pwd)
seed=20240601
val_fraction=0.05
spm_version=$(spm_train --version 2>&1 | head -1)

echo "== corpus from $fortunes"
"$bin" prepare-data corpus --fortunes "$fortunes" --out "$work/corpus.jsonl" --spm-lines "$work/spm_lines.txt"

for vocab in 512 8192; do
  echo "== tokenizer-$vocab.model ($spm_version)"
  # Gemma's tokenizer options (../shared/docs/gemma.md 5): BPE, byte fallback, split digits, identity
  # normaliser, no dummy prefix, whitespace-only pieces; Gemma's special ids (pad 0, eos 1, bos 2, unk 3,
  # <mask> 4); "\n" is a user-defined piece so line breaks are one token and never merged.
  (cd "$work" && spm_train --input=spm_lines.txt --model_prefix="tokenizer-$vocab" --model_type=bpe \
     --vocab_size="$vocab" --byte_fallback=true --split_digits=true --normalization_rule_name=identity \
     --add_dummy_prefix=false --remove_extra_whitespaces=false --allow_whitespace_only_pieces=true \
     --pad_id=0 --eos_id=1 --bos_id=2 --unk_id=3 --pad_piece='<pad>' --eos_piece='<eos>' --bos_piece='<bos>' \
     --control_symbols='<mask>,<start_of_turn>,<end_of_turn>' --user_defined_symbols=$'\n' \
     --num_threads=1 >"train-$vocab.log" 2>&1) || { tail -20 "$work/train-$vocab.log" >&2; exit 1; }
  rm -f "$work/tokenizer-$vocab.vocab"
  echo "== tokens-$vocab.bin"
  "$bin" prepare-data tokenize --corpus "$work/corpus.jsonl" --tokenizer "$work/tokenizer-$vocab.model" \
    --out "$work/tokens-$vocab.bin" --val-fraction "$val_fraction" --seed "$seed"
done

files=(tokenizer-512.model tokenizer-8192.model tokens-512.bin tokens-8192.bin)
if [ "$mode" = update ]; then
  mkdir -p "$assets"
  for f in "${files[@]}"; do cp "$work/$f" "$assets/$f"; done
  {
    echo "# assets/fortunes: made by ci/prepare_data.sh --update (do not edit by hand)"
    echo "spm_train: $spm_version"
    echo "fortunes: $(dpkg-query -W -f='${Version}' fortunes 2>/dev/null || echo unknown)"
    echo "seed: $seed  val_fraction: $val_fraction"
    (cd "$assets" && sha256sum "${files[@]}")
  } >"$assets/MANIFEST"
  echo "prepare_data: updated $assets (commit it)"
  exit 0
fi

status=0
committed_spm=$(sed -n 's/^spm_train: //p' "$assets/MANIFEST" 2>/dev/null || true)
for f in "${files[@]}"; do
  if cmp -s "$work/$f" "$assets/$f"; then
    echo "same      $f"
  elif [[ $f == *.model && "$committed_spm" != "$spm_version" ]]; then
    echo "differs   $f (warning: spm_train is '$spm_version', the committed models came from '$committed_spm')"
  else
    echo "DIFFERS   $f"
    status=1
  fi
done
# Our tokenization of the committed models must reproduce the committed token files whatever spm_train did.
for vocab in 512 8192; do
  "$bin" prepare-data tokenize --corpus "$work/corpus.jsonl" --tokenizer "$assets/tokenizer-$vocab.model" \
    --out "$work/tokens-$vocab.committed-model.bin" --val-fraction "$val_fraction" --seed "$seed" >/dev/null
  if cmp -s "$work/tokens-$vocab.committed-model.bin" "$assets/tokens-$vocab.bin"; then
    echo "same      tokens-$vocab.bin (tokenized with the committed tokenizer-$vocab.model)"
  else
    echo "DIFFERS   tokens-$vocab.bin (tokenized with the committed tokenizer-$vocab.model)"
    status=1
  fi
done
if [ "$mode" = check ]; then exit $status; fi
[ $status -eq 0 ] || echo "prepare_data: outputs differ from assets/fortunes (ci/prepare_data.sh --update to replace them)"
exit 0
