#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the tests.
# Without a GPU it runs the `cpu` label; with one it runs `cpu` and `gpu`.
#   ci/test.sh [extra ctest args...]        (TEGEMMA_BUILD_DIR overrides the build dir, default ./build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/ci/deps.sh"
tegemma_ensure_deps
build=${TEGEMMA_BUILD_DIR:-$root/build}
tegemma_build "$build" "$root"
labels="cpu"
tegemma_have_gpu && labels="cpu|gpu"
echo "== ctest -L '$labels' (GPU present: $(tegemma_have_gpu && echo yes || echo no))"
ctest --test-dir "$build" -L "$labels" --output-on-failure -j "$(nproc)" --timeout 900 "$@"
