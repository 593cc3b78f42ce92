#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, then runs the main job on the embedded
# default and prints where its outputs are. On a GPU machine the same job runs on the GPU.
#   ci/main.sh [OUT_DIR]          (default ./out)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/ci/deps.sh"
tegemma_ensure_deps
build=${TEGEMMA_BUILD_DIR:-$root/build}
out=${1:-$root/out}
mkdir -p "$out"
tegemma_build "$build" "$root"
tg="$build/cli/tegemma"
echo "== tegemma version"
"$tg" version | tee "$out/provenance.json"
echo
echo "main job outputs in $out:"
ls -1 "$out"
