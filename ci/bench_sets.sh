#!/usr/bin/env bash
# The benchmark suites (issue 9), as data: which benchmarks of each binary a suite runs, and with which Google
# Benchmark settings. Sourced by ci/gpu_suite.sh (--bench quick|full) and runnable alone on a GPU machine:
#   ci/bench_sets.sh quick|full BUILD_DIR OUT_DIR        -> OUT_DIR/bench_<binary>.json + .log, OUT_DIR/bench_suite.json
#
# quick  the headline workloads, one shape each, single runs (min time 0.05 s): the kernels at 8192x8192 and the
#        Gemma-7B MLP input 8192x3072, the GEMM ceilings and one training GEMM per type, the decode GEMVs, RMSNorm /
#        GeGLU / embedding, prefill and decode attention, the gemma-2b prefill, train step and batch-1 decode of impl
#        (bf16 and delayed) beside the LibTorch reference. Budget: under 2 minutes on the H200 (binaries load, draw
#        random weights and warm up; bench_suite.json records each binary's wall time).
#  full  every benchmark of every binary, 3 repetitions (min time 0.2 s), aggregates only. Budget: under 10 minutes.
# bench/hf_anchors.py writes HF transformers' figures for the same workloads in the same format (run it beside).
set -uo pipefail

# tegemma_bench_filter SUITE BINARY: the --benchmark_filter of BINARY in SUITE ("" = all; "-" = skip the binary).
tegemma_bench_filter() {
  local suite=$1 bin=$2
  if [ "$suite" = full ]; then echo ""; return; fi
  case $bin in
    bench_kernels) echo 'quantize/(cast|cast_transpose|block1x128|block128x128|amax|d2d_copy)/[^/]+/(8192x8192|8192x3072)/';;
    bench_gemm) echo 'gemm/(ceiling_bf16|ceiling_fp8)/|gemm/(bf16|fp8_tensor_fast|fp8_block|torch_scaled_mm_fast)/[^/]+/8192x32768x2048/|gemv/gemv/e4m3xe4m3->bf16/1x(32768x2048|2048x16384|256000x2048)/';;
    bench_elementwise) echo '(rmsnorm|geglu|embedding)/bf16->(bf16|e4m3)/8192x(2048|16384)/';;
    bench_attention) echo 'attention/(prefill_fwd|train_bwd)/gemma-2b/cudnn/packed/|attention/decode/gemma-2b/bf16/B1/ctx1024';;
    bench_model) echo 'model/(ceiling_bf16|gemma-2b/(reference|impl_bf16|impl_delayed))/';;
    bench_train) echo 'e2e/(ceiling/impl|train_step/impl/(bf16|delayed))/';;
    bench_reference) echo 'e2e/(train_step|prefill|decode/reference/bf16/gemma-2b/B1)/';;
    bench_generate) echo 'e2e/decode/impl/(bf16|delayed\+fp8head)/gemma-2b/B1/';;
    *) echo "-";;
  esac
}

# tegemma_bench_args SUITE: the Google Benchmark settings of SUITE.
tegemma_bench_args() {
  if [ "$1" = full ]; then
    echo "--benchmark_min_time=0.2s --benchmark_repetitions=3 --benchmark_report_aggregates_only=true --benchmark_min_warmup_time=0.05"
  else
    echo "--benchmark_min_time=0.05s --benchmark_repetitions=1 --benchmark_min_warmup_time=0.05"
  fi
}

# tegemma_bench_suite SUITE BUILD_DIR OUT_DIR: runs the suite's binaries in a fixed order; returns 1 if any failed.
tegemma_bench_suite() {
  local suite=$1 build=$2 out=$3 rc=0 t0 t1 first=1
  mkdir -p "$out"
  local summary="$out/bench_suite.json.tmp"
  t0=$(date +%s)
  printf '{"suite": "%s", "binaries": [' "$suite" > "$summary"
  for name in bench_kernels bench_gemm bench_elementwise bench_attention bench_model bench_train bench_reference \
              bench_generate; do
    local b="$build/bench/$name" f
    f=$(tegemma_bench_filter "$suite" "$name")
    [ -x "$b" ] && [ "$f" != "-" ] || continue
    local args; read -ra args <<< "$(tegemma_bench_args "$suite")"
    [ -n "$f" ] && args+=(--benchmark_filter="$f")
    t1=$(date +%s)
    "$b" --benchmark_out="$out/$name.json" --benchmark_out_format=json "${args[@]}" > "$out/$name.log" 2>&1
    local r=$?
    [ $r -ne 0 ] && rc=1
    [ $first = 1 ] || printf ', ' >> "$summary"
    first=0
    printf '{"binary": "%s", "filter": "%s", "rc": %d, "seconds": %d}' "$name" "${f//\\/\\\\}" "$r" \
      "$(( $(date +%s) - t1 ))" >> "$summary"
    echo "== $name rc=$r $(( $(date +%s) - t1 ))s"
  done
  printf '], "seconds": %d}\n' "$(( $(date +%s) - t0 ))" >> "$summary"
  mv "$summary" "$out/bench_suite.json"
  return $rc
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  [ $# -eq 3 ] && { [ "$1" = quick ] || [ "$1" = full ]; } || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
  tegemma_bench_suite "$1" "$2" "$3"
fi
