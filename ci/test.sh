#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the tests, then the sanitizer job.
# Without a GPU it runs the `cpu` label; with one it runs `cpu` and `gpu`.
#   ci/test.sh [extra ctest args...]        (TEGEMMA_BUILD_DIR overrides the build dir, default ./build)
# Then ci/sanitize.sh --scope ci: the cpu tests again under ASan + UBSan + LeakSanitizer in ./build-asan
# (docs/sanitizers.md: what the ci scope covers and why; about 13 of CI's 30 minutes on 2 cores; the whole clean-clone run took 27.1 min in session 10).
# TEGEMMA_TEST_SANITIZE=0 skips it (e.g. a quick local run). The exit status is non-zero when either failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/ci/deps.sh"
tegemma_ensure_deps
build=${TEGEMMA_BUILD_DIR:-$root/build}
tegemma_build "$build" "$root"
labels="cpu"
tegemma_have_gpu && labels="cpu|gpu"
echo "== ctest -L '$labels' (GPU present: $(tegemma_have_gpu && echo yes || echo no))"
rc=0
ctest --test-dir "$build" -L "$labels" --output-on-failure -j "$(nproc)" --timeout 900 "$@" || rc=$?
if [ "${TEGEMMA_TEST_SANITIZE:-1}" != 0 ]; then
  src=0
  "$root/ci/sanitize.sh" --scope ci || src=$?
  echo "== tests: exit $rc; sanitizer job: exit $src"
  [ "$rc" -ne 0 ] || rc=$src
fi
exit $rc
