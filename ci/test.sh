#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the tests, then the sanitizer job.
# Without a GPU it runs the `cpu` label; with one it runs `cpu` and `gpu`.
#   ci/test.sh [extra ctest args...]        (TEGEMMA_BUILD_DIR overrides the build dir, default ./build)
# Then ci/sanitize.sh --scope ci: the cpu tests again under ASan + UBSan + LeakSanitizer in ./build-asan
# (docs/sanitizers.md: what the ci scope covers and why).
# TEGEMMA_TEST_SANITIZE=0 skips it (e.g. a quick local run). The exit status is non-zero when either failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/ci/deps.sh"
tegemma_ensure_deps
build=${TEGEMMA_BUILD_DIR:-$root/build}
rc=0
t0=$SECONDS
if tegemma_have_gpu; then
  labels="cpu|gpu"
  tegemma_build "$build" "$root" -DTEGEMMA_GPU_TESTS=ON -DTEGEMMA_BENCH=ON -DTEGEMMA_TEST_CXX_FLAGS= \
    -UCMAKE_CUDA_ARCHITECTURES
  t_build=$(( SECONDS - t0 )); t_check=0
else
  # Without a GPU (CI: 2 cores, 30 minutes) only the cpu label runs, and nothing runs device code. So:
  # - the gpu-labelled suites and bench/ (about 2 of CI's minutes to build) are not built, only compile-checked
  #   with -fsyntax-only (about 1 minute; tegemma_gpu_syntax_check in deps.sh); ci/gpu_session.sh builds and runs
  #   them on the device. TEGEMMA_TEST_GPU_SYNTAX=0 skips the check;
  # - the CUDA kernels are compiled to PTX only (CMAKE_CUDA_ARCHITECTURES=90a-virtual: nvcc's front end and
  #   optimiser, not ptxas; about a third of their compile time): the same sources and host code, no sm_90a SASS
  #   (ptxas's resource checks run in every device build);
  # - the test executables' own sources are compiled at -O1 (TEGEMMA_TEST_CXX_FLAGS in CMakeLists.txt: about 40%
  #   less compile time than -O3); the libraries and the tegemma executable stay at -O3.
  labels="cpu"
  tegemma_build "$build" "$root" -DTEGEMMA_GPU_TESTS=OFF -DTEGEMMA_BENCH=OFF -DTEGEMMA_TEST_CXX_FLAGS=-O1 \
    -DCMAKE_CUDA_ARCHITECTURES=90a-virtual
  t_build=$(( SECONDS - t0 )); t1=$SECONDS
  if [ "${TEGEMMA_TEST_GPU_SYNTAX:-1}" != 0 ]; then
    tegemma_gpu_syntax_check "$build" "$root" || { rc=1; echo "== gpu syntax check FAILED (errors above)"; }
  fi
  t_check=$(( SECONDS - t1 ))
fi
echo "== ctest -L '$labels' (GPU present: $(tegemma_have_gpu && echo yes || echo no))"
t1=$SECONDS
ctest --test-dir "$build" -L "$labels" --output-on-failure -j "$(nproc)" --timeout 900 "$@" || rc=$?
t_test=$(( SECONDS - t1 ))
echo "== build ${t_build}s, gpu syntax check ${t_check}s, ctest ${t_test}s"
if [ "${TEGEMMA_TEST_SANITIZE:-1}" != 0 ]; then
  src=0
  "$root/ci/sanitize.sh" --scope ci || src=$?
  echo "== tests: exit $rc; sanitizer job: exit $src"
  [ "$rc" -ne 0 ] || rc=$src
fi
echo "== ci/test.sh: ${SECONDS}s in all"
exit $rc
