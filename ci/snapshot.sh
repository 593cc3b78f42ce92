#!/usr/bin/env bash
# Exports a commit (default HEAD) into .gpu_src/ (git-ignored) with its id in .gpu_src/.commit, so a
# device run builds exactly that commit, whatever else is in the working tree:
#   ci/snapshot.sh [COMMIT]  then  device run, carry [".gpu_src"]:  .gpu_src/ci/gpu_suite.sh --src .gpu_src --out $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-HEAD}
rm -rf .gpu_src && mkdir .gpu_src
# reports/runs (committed results, megabytes of logs) is not needed to build or test: left out, so that the
# working tree plus the snapshot stay under the device call's 64 MiB.
git archive "$rev" -- . ':(exclude)reports/runs' | tar -x -C .gpu_src
git rev-parse --short=12 "$rev" > .gpu_src/.commit
echo "snapshot of $(cat .gpu_src/.commit) in .gpu_src ($(du -sh .gpu_src | cut -f1))"
