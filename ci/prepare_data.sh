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
# A second, larger corpus for the H200 loss-curve runs (ci/train_curves.sh's default DATA):
#   ci/prepare_data.sh --corpus docs [--check | --update]
# Text: the reStructuredText sources of the Python 3.11 documentation from Debian 12's `python3.11-doc`
# (/usr/share/doc/python3.11/html/_sources/**/*.txt, 497 files, 11.0 MB; one document per file, in path
# order), an 8192-token tokenizer trained on it with the same options, and the token file (5% of the
# documents held out). Measured with python3.11-doc 3.11.2-6+deb12u9: 2,978,324 training tokens (472
# documents) and 93,786 validation tokens (25), 3.6 bytes a token. The token file (6.1 MB) is NOT committed:
# it is written to $TEGEMMA_DOCS_OUT (default build/docs-data/, git-ignored) with the tokenizer and a
# MANIFEST; assets/python-docs/ holds the committed MANIFEST (sha256 of both) and the tokenizer, which
# --check compares against and --update replaces. The GPU machine has no apt: carry build/docs-data there
# (the device copy takes ignored paths named in carry; 6.3 MB of the 64 MiB).
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
corpus=fortunes
usage() { echo "usage: ci/prepare_data.sh [--corpus fortunes|docs] [--check | --update]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --check) mode=check ;;
    --update) mode=update ;;
    --corpus) [ $# -ge 2 ] || usage; corpus=$2; shift ;;
    *) usage ;;
  esac
  shift
done
case "$corpus" in fortunes|docs) ;; *) usage ;; esac

source "$root/ci/deps.sh"
docs_pkg=python3.11-doc
docs_src=/usr/share/doc/python3.11/html/_sources
if [ -z "${TEGEMMA_SKIP_DEPS:-}" ]; then
  if [ "$corpus" = docs ]; then tegemma_ensure_deps "$docs_pkg" jq; else tegemma_ensure_deps; fi
fi
fortunes=/usr/share/games/fortunes
# Exit 77 (ctest's "skipped") where the tools are missing, as on the GPU machine.
command -v spm_train >/dev/null || { echo "prepare_data: spm_train missing (Debian package sentencepiece)" >&2; exit 77; }
if [ "$corpus" = docs ]; then
  command -v jq >/dev/null || { echo "prepare_data: jq missing (Debian package jq)" >&2; exit 77; }
  [ -d "$docs_src" ] || { echo "prepare_data: $docs_src missing (Debian package $docs_pkg)" >&2; exit 77; }
else
  [ -d "$fortunes" ] || { echo "prepare_data: $fortunes missing (Debian package fortunes)" >&2; exit 77; }
fi

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

# spm_train in directory $1 on $1/spm_lines.txt into $1/tokenizer-$2.model. Gemma's tokenizer options
# (../shared/docs/gemma.md 5): BPE, byte fallback, split digits, identity normaliser, no dummy prefix,
# whitespace-only pieces; Gemma's special ids (pad 0, eos 1, bos 2, unk 3, <mask> 4); "\n" is a
# user-defined piece so line breaks are one token and never merged.
train_tokenizer() {
  local dir=$1 vocab=$2
  (cd "$dir" && spm_train --input=spm_lines.txt --model_prefix="tokenizer-$vocab" --model_type=bpe \
     --vocab_size="$vocab" --byte_fallback=true --split_digits=true --normalization_rule_name=identity \
     --add_dummy_prefix=false --remove_extra_whitespaces=false --allow_whitespace_only_pieces=true \
     --pad_id=0 --eos_id=1 --bos_id=2 --unk_id=3 --pad_piece='<pad>' --eos_piece='<eos>' --bos_piece='<bos>' \
     --control_symbols='<mask>,<start_of_turn>,<end_of_turn>' --user_defined_symbols=$'\n' \
     --num_threads=1 >"train-$vocab.log" 2>&1) || { tail -20 "$dir/train-$vocab.log" >&2; exit 1; }
  rm -f "$dir/tokenizer-$vocab.vocab"
}

if [ "$corpus" = docs ]; then
  dwork=$work/docs
  out=${TEGEMMA_DOCS_OUT:-$root/build/docs-data}
  dassets=$root/assets/python-docs
  mkdir -p "$dwork" "$out"
  pkg_version=$(dpkg-query -W -f='${Version}' "$docs_pkg" 2>/dev/null || echo unknown)
  echo "== corpus from $docs_src ($docs_pkg $pkg_version)"
  # One document per reStructuredText source, in byte order of the path; spm_train gets the non-blank lines.
  (cd "$docs_src" && find . -name '*.txt' -type f | LC_ALL=C sort) >"$dwork/files.txt"
  : >"$dwork/corpus.jsonl"
  : >"$dwork/spm_lines.txt"
  while IFS= read -r f; do
    jq -Rsc '{text: .}' "$docs_src/$f" >>"$dwork/corpus.jsonl"
    grep -v '^[[:space:]]*$' "$docs_src/$f" >>"$dwork/spm_lines.txt" || true
  done <"$dwork/files.txt"
  echo "   $(wc -l <"$dwork/files.txt") documents, $(wc -c <"$dwork/spm_lines.txt") bytes of non-blank lines"
  echo "== tokenizer-8192.model ($spm_version)"
  train_tokenizer "$dwork" 8192
  echo "== tokens-8192.bin"
  "$bin" prepare-data tokenize --corpus "$dwork/corpus.jsonl" --tokenizer "$dwork/tokenizer-8192.model" \
    --out "$dwork/tokens-8192.bin" --val-fraction "$val_fraction" --seed "$seed" | tee "$dwork/tokenize.json"
  cp "$dwork/tokenizer-8192.model" "$dwork/tokens-8192.bin" "$out/"
  train_tokens=$(jq .train_tokens "$dwork/tokenize.json")
  {
    echo "# python-docs corpus: made by ci/prepare_data.sh --corpus docs (do not edit by hand)"
    echo "spm_train: $spm_version"
    echo "$docs_pkg: $pkg_version"
    echo "seed: $seed  val_fraction: $val_fraction"
    echo "train_tokens: $train_tokens  val_tokens: $(jq .val_tokens "$dwork/tokenize.json")"
    (cd "$out" && sha256sum tokenizer-8192.model tokens-8192.bin)
  } >"$out/MANIFEST"
  # ci/train_curves.sh's defaults: 2000 steps x 8 x 256 tokens.
  awk -v n="$train_tokens" 'BEGIN { printf "prepare_data: %d training tokens; 2000 steps x 8 x 256 = %.2f epochs\n", n, 2000 * 8 * 256 / n }'
  echo "prepare_data: wrote $out (tokenizer-8192.model, tokens-8192.bin, MANIFEST)"
  if [ "$mode" = update ]; then
    mkdir -p "$dassets"
    cp "$out/MANIFEST" "$out/tokenizer-8192.model" "$dassets/"
    echo "prepare_data: updated $dassets (commit it; the token file stays out of git)"
    exit 0
  fi
  status=0
  for f in tokenizer-8192.model tokens-8192.bin; do
    want=$(awk -v f="$f" '$2 == f { print $1 }' "$dassets/MANIFEST" 2>/dev/null || true)
    got=$(cd "$out" && sha256sum "$f" | cut -d' ' -f1)
    if [ "$want" = "$got" ]; then echo "same      $f"; else echo "DIFFERS   $f (MANIFEST ${want:-missing})"; status=1; fi
  done
  committed_pkg=$(sed -n "s/^$docs_pkg: //p" "$dassets/MANIFEST" 2>/dev/null || true)
  [ "$committed_pkg" = "$pkg_version" ] ||
    echo "prepare_data: warning: $docs_pkg is $pkg_version here, the MANIFEST's came from '$committed_pkg'"
  if [ "$mode" = check ]; then exit $status; fi
  exit 0
fi

echo "== corpus from $fortunes"
"$bin" prepare-data corpus --fortunes "$fortunes" --out "$work/corpus.jsonl" --spm-lines "$work/spm_lines.txt"

for vocab in 512 8192; do
  echo "== tokenizer-$vocab.model ($spm_version)"
  train_tokenizer "$work" "$vocab"
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
