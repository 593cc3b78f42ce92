#!/usr/bin/env bash
# A decode A/B across two builds (a build-time switch), on the GPU machine, e.g. as gpu_session.sh's --side-cmd:
#   ci/decode_ab_build.sh SRC BUILD_A OUT [CMAKE_ARG...]
# configures a second tree from SRC with the extra CMake arguments (ci/deps.sh's tegemma_configure, as gpu_session.sh
# builds BUILD_A), builds only bench_generate there, then runs ci/decode_ab.sh with CONFIGS="default alt default_r2
# alt_r2" (BUILD_A and the variant alternating, twice each) into OUT; DECODE_AB_FILTER as for decode_ab.sh.
# Example (session 17, the since-removed trigger-first option): --side-cmd '$S/ci/decode_ab_build.sh $S
#   $TEGEMMA_BUILD_DIR $SIDE_OUT/pdl_first -DTEGEMMA_PDL_TRIGGER_FIRST=ON'
set -uo pipefail
[ $# -ge 3 ] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
src=$1 build_a=$2 out=$3
shift 3
build_b=${DECODE_AB_BUILD_B:-/tmp/tegemma_decode_ab_b}
mkdir -p "$out"
source "$src/ci/deps.sh"
if ! { tegemma_configure "$build_b" "$src" -DTEGEMMA_CUDA=ON -DTEGEMMA_TESTS=OFF "$@" &&
       cmake --build "$build_b" -j "$(nproc)" --target bench_generate; } > "$out/build_b.log" 2>&1; then
  tail -30 "$out/build_b.log"; exit 1
fi
echo "== variant built ($*)"
DECODE_AB_ALT_BUILD=$build_b CONFIGS="default alt default_r2 alt_r2" "$src/ci/decode_ab.sh" "$build_a" "$out"
