#!/bin/sh
# corrupt_checkpoint.sh TEGEMMA DIR: saves the tiny model as a checkpoint, flips one byte in the middle of
# model.safetensors' data (disk damage after the write), and expects `tegemma forward --model DIR` to refuse
# it (exit 2) naming the file, the tensor and the checksum; then truncates the file and expects the same.
set -u
tg=$1
dir=$2
here=$(dirname "$0")
rm -rf "$dir"
"$tg" forward --config tiny --tokens 2,3 --device cpu --save "$dir" > /dev/null || { echo "could not save"; exit 1; }
f="$dir/model.safetensors"
size=$(wc -c < "$f")
pos=$((size - size / 3))  # inside the data buffer: the header is a few KB of a ~1 MB file
byte=$(dd if="$f" bs=1 skip="$pos" count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
printf "$(printf '\\%03o' $(( (byte + 1) % 256 )))" | dd of="$f" bs=1 seek="$pos" count=1 conv=notrunc 2>/dev/null
"$here/expect.sh" 2 "model.safetensors: tensor '[^']+' is corrupted: .*xxh64" \
  "$tg" forward --model "$dir" --tokens 2,3 --device cpu || exit 1
head -c $((size - 100)) "$f" > "$f.cut" && mv "$f.cut" "$f"
"$here/expect.sh" 2 "model.safetensors.*truncated" "$tg" forward --model "$dir" --tokens 2,3 --device cpu || exit 1
rm -rf "$dir"
