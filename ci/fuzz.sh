#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input with libFuzzer + ASan + UBSan, for a bounded time each.
#
#   ci/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      default: 60 s; fuzz_safetensors fuzz_config fuzz_args
#
# For each target: runs on tests/fuzz/corpus/<t>/ (new inputs go to a scratch dir), then merges
# corpus + scratch with -merge=1 into a fresh dir that replaces the committed corpus (so it stays
# minimal), and copies any crash/leak/timeout/oom input into tests/fuzz/crashers/<t>/, where
# fuzz_replay (a cpu ctest) keeps it as a regression test. Prints a summary (execs, time, corpus,
# crashes) and exits non-zero if any target found a crash.
#
# Environment: TEGEMMA_FUZZ_BUILD (build dir, default build-fuzz), TEGEMMA_FUZZ_MAX_LEN (default 4096),
# TEGEMMA_FUZZ_JOBS (build parallelism, default nproc).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(fuzz_safetensors fuzz_config fuzz_args)
BUILD="${TEGEMMA_FUZZ_BUILD:-$ROOT/build-fuzz}"
MAX_LEN="${TEGEMMA_FUZZ_MAX_LEN:-4096}"
JOBS="${TEGEMMA_FUZZ_JOBS:-$(nproc)}"
[[ "$SECS" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS_PER_TARGET must be a whole number, got '$SECS'" >&2; exit 2; }

# ---- toolchain: clang with libFuzzer and the sanitizer runtimes ----------------------------------
have_libfuzzer() {
  command -v clang++ >/dev/null 2>&1 || return 1
  local tmp; tmp="$(mktemp -d)"
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$tmp/t.cpp"
  clang++ -fsanitize=fuzzer,address,undefined "$tmp/t.cpp" -o "$tmp/t" >/dev/null 2>&1
  local rc=$?
  rm -rf "$tmp"
  return $rc
}
apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "fuzz.sh: installing $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}
if ! have_libfuzzer; then
  apt_install clang libclang-rt-dev || apt_install clang "libclang-rt-$(clang --version 2>/dev/null | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)-dev"
  have_libfuzzer || { echo "fuzz.sh: clang cannot link -fsanitize=fuzzer (libFuzzer runtime missing)" >&2; exit 1; }
fi
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
[ -f /usr/include/nlohmann/json.hpp ] || missing+=(nlohmann-json3-dev)
[ ${#missing[@]} -gt 0 ] && apt_install "${missing[@]}"

# ---- build ----------------------------------------------------------------------------------------
# -O1 -g without NDEBUG: library assertions (nlohmann's included) stay on while fuzzing.
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD" -G Ninja -DTEGEMMA_FUZZ=ON -DTEGEMMA_CUDA=OFF \
  -DTEGEMMA_TORCH=OFF -DTEGEMMA_BENCH=OFF -DTEGEMMA_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" >"$BUILD.configure.log" 2>&1 ||
  { cat "$BUILD.configure.log" >&2; exit 1; }
ninja -C "$BUILD" -j "$JOBS" "${TARGETS[@]}"

# ---- run ------------------------------------------------------------------------------------------
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
stat_of() { sed -n "s/^stat::$1: *\([0-9]*\).*/\1/p" "$2" | tail -1; }
summary=()
total_crashes=0
for target in "${TARGETS[@]}"; do
  t="${target#fuzz_}"
  bin="$BUILD/tests/fuzz/fuzz_$t"
  corpus="$ROOT/tests/fuzz/corpus/$t"
  crashers="$ROOT/tests/fuzz/crashers/$t"
  dict="$ROOT/tests/fuzz/dict/$t.dict"
  work="$BUILD/fuzz-work/$t"
  rm -rf "$work"
  mkdir -p "$work/new" "$work/artifacts" "$work/merged" "$corpus" "$crashers"
  before_files=$(find "$corpus" -type f ! -name '.*' | wc -l)
  dict_arg=()
  [ -f "$dict" ] && dict_arg=(-dict="$dict")

  echo "=== fuzz_$t: ${SECS}s on $corpus ($before_files inputs)"
  start=$(date +%s)
  set +e
  "$bin" -max_total_time="$SECS" -max_len="$MAX_LEN" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${dict_arg[@]}" -artifact_prefix="$work/artifacts/" "$work/new" "$corpus" >"$work/fuzz.log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - start ))
  tail -n 25 "$work/fuzz.log"

  crashes=0
  for f in "$work"/artifacts/*; do
    [ -f "$f" ] || continue
    cp "$f" "$crashers/"
    crashes=$((crashes + 1))
    echo "fuzz_$t: FINDING saved as tests/fuzz/crashers/$t/$(basename "$f")  (reproduce: $bin $crashers/$(basename "$f"))"
  done
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    echo "fuzz_$t: libFuzzer exited with $rc but left no artifact; see $work/fuzz.log" >&2
    crashes=1
  fi
  total_crashes=$((total_crashes + crashes))

  # Minimise: keep only the inputs that add coverage over the whole set (old corpus + new).
  if "$bin" -merge=1 -max_len="$MAX_LEN" -timeout=10 -rss_limit_mb=2048 "$work/merged" "$corpus" "$work/new" \
       >"$work/merge.log" 2>&1 && [ -n "$(ls -A "$work/merged")" ]; then
    find "$corpus" -type f ! -name '.*' -delete
    cp "$work"/merged/* "$corpus/"
  else
    echo "fuzz_$t: merge failed or empty (see $work/merge.log); committed corpus left unchanged" >&2
  fi
  execs=$(stat_of number_of_executed_units "$work/fuzz.log")
  rss=$(stat_of peak_rss_mb "$work/fuzz.log")
  files=$(find "$corpus" -type f ! -name '.*' | wc -l)
  bytes=$(find "$corpus" -type f ! -name '.*' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  summary+=("$(printf '%-18s %12s %7ss %8s/s %6s -> %-6s %9s %6s MB %4s' "fuzz_$t" "${execs:-?}" "$secs" \
    "$(( ${execs:-0} / (secs > 0 ? secs : 1) ))" "$before_files" "$files" "$bytes" "${rss:-?}" "$crashes")")
done

echo
printf '%-18s %12s %8s %10s %16s %9s %9s %4s\n' target execs time rate "corpus files" "bytes" "peak RSS" crashes
for line in "${summary[@]}"; do echo "$line"; done | tee "$BUILD/fuzz-summary.txt"
if [ "$total_crashes" -gt 0 ]; then
  echo "fuzz.sh: $total_crashes finding(s); inputs saved under tests/fuzz/crashers/ (fix the parser, keep the file)" >&2
  exit 1
fi
echo "fuzz.sh: no findings"
