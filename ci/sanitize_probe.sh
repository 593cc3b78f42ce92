#!/usr/bin/env bash
# Targeted compute-sanitizer probes for the open issue-11 findings, each one test (or a few) under one tool and one
# setting, so a finding can be pinned to a test, a kernel and a sanitizer option. Meant for gpu_session.sh's side
# lane (--side-cmd ci/sanitize_probe.sh), which sets TEGEMMA_BUILD_DIR and SIDE_OUT; each probe gets at most
# PROBE_TIMEOUT seconds (default 90) and writes SIDE_OUT/<name>.log; SIDE_OUT/probes.tsv lists
# name, rc, seconds, the sanitizer's summary line and the distinct error kinds.
#
#   ci/sanitize_probe.sh [PROBE_NAME_REGEX]
#
# Probes (session 6):
#   race_gemm_*      racecheck of the first FP8 GEMM test, where session 5 saw "Internal Sanitizer Error: failed to
#                    handle a hardware exception": default options, then without the wgmma and bulk-copy
#                    instrumentation (cuBLASLt's Hopper kernels use both), then a BF16-only test
#   init_gemm_*      initcheck of the graph-capture GEMM test (cudaMemcpy of a cuBLASLt output reported as
#                    uninitialised), and of an output zeroed before the GEMM, to tell a tool blind spot (writes it does
#                    not track) from a real read of never-written memory
#   race_norm_rows   the RMSNorm forward at 1..1000 rows (the one-row-per-block kernel of session 6 included)
#   init_gemm_all    initcheck of test_gemm_gpu with outputs poisoned before each GEMM (d3f3a7f)
#   mem_impl_*, race_impl_generate, init_impl_generate, sync_impl_generate   the impl/ GPU binaries at their small
#                    configurations (ci/sanitize_probe.sh 'impl'; PROBE_TIMEOUT=300 for these)
#   race_decode*, init_decode, race_gemv*, init_gemv_split   the decode attention (cluster merge) and GEMV (streamed,
#                    split-K with an arrival counter) kernels of session 6
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/ci/deps.sh"
build=${TEGEMMA_BUILD_DIR:?set TEGEMMA_BUILD_DIR to the CUDA build}
out=${SIDE_OUT:-$build/sanitize_probe}
mkdir -p "$out"
out=$(cd "$out" && pwd) build=$(cd "$build" && pwd)  # absolute: each probe runs in its binary's folder
want=${1:-.}
cs=$(tegemma_find_sanitizer) || { echo "sanitize_probe: compute-sanitizer not found" >&2; exit 2; }
read -ra inj <<< "$(tegemma_sanitizer_injection_args "$cs")"
kt=$build/kernels/tests
printf 'probe\trc\tseconds\tsummary\terror_kinds\n' > "$out/probes.tsv"

probe() {  # NAME BINARY GTEST_FILTER SANITIZER_ARGS...
  local name=$1 bin=$2 filter=$3
  shift 3
  [[ $name =~ $want ]] || return 0
  local t0=$SECONDS rc
  # in the binary's folder: ctest's working directory for it (gtest_discover_tests), where its fixtures resolve
  (cd "$(dirname "$bin")" && timeout "${PROBE_TIMEOUT:-90}" "$cs" "${inj[@]}" --print-limit 200 "$@" "$bin" \
     --gtest_filter="$filter" > "$out/$name.log" 2>&1)
  rc=$?
  local summary kinds
  summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|Internal Sanitizer Error' "$out/$name.log" | head -2 | tr '\n' ' ')
  kinds=$(grep -oE '(Uninitialized|Invalid|Race|hazard|Hazard)[^0-9]*' "$out/$name.log" | sed 's/ at .*//' |
          sort | uniq -c | sort -rn | head -4 | tr -s ' ' | tr '\n' ';')
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( SECONDS - t0 ))" "$summary" "$kinds" >> "$out/probes.tsv"
  echo "== $name rc=$rc $(( SECONDS - t0 ))s $summary"
}

tg=(--kernel-name kns=_ZN2tg)
# Fast ones first (the GEMM ones end in seconds when the tool faults), then the new kernels' shared-memory and
# cluster (DSMEM) traffic at small shapes, then the broader runs.
probe race_norm_rows "$kt/test_elementwise_gpu" 'NormGpu.ForwardBitExactAllShapesAndDtypes:NormGpu.Fp8ForwardBitExact' \
  --tool racecheck "${tg[@]}" --racecheck-report all
probe init_gemm_all "$kt/test_gemm_gpu" '*:-*GemmaShape*:*8192x*:*x8192*:*49152*:*256000*:*7b*' --tool initcheck
probe race_gemm_default "$kt/test_gemm_gpu" 'GemmGpu.Fp8PerTensorAccumulatesIntoOut' --tool racecheck "${tg[@]}"
probe race_gemm_nowgmma "$kt/test_gemm_gpu" 'GemmGpu.Fp8PerTensorAccumulatesIntoOut' --tool racecheck "${tg[@]}" \
  --check-warpgroup-mma no
probe race_gemm_nobulk "$kt/test_gemm_gpu" 'GemmGpu.Fp8PerTensorAccumulatesIntoOut' --tool racecheck "${tg[@]}" \
  --check-warpgroup-mma no --check-bulk-copy no
probe init_gemm_graph "$kt/test_gemm_gpu" 'GemmGpu.CapturedInACudaGraphWithoutAllocation' --tool initcheck
probe race_decode_cluster "$kt/test_attention_gpu" 'AttentionGpu.DecodeClusterMergeSmallHeadDims' --tool racecheck \
  "${tg[@]}" --racecheck-report all
probe race_gemv_split "$kt/test_gemv_gpu" 'GemvGpu.Split*:GemvGpu.Streamed*' --tool racecheck "${tg[@]}" \
  --racecheck-report all
probe init_decode "$kt/test_attention_gpu" 'AttentionGpu.DecodeGraphReplayEqualsEager' --tool initcheck
probe init_gemv_split "$kt/test_gemv_gpu" 'GemvGpu.Split*' --tool initcheck
probe init_gemm_accumulate "$kt/test_gemm_gpu" 'GemmGpu.Fp8PerTensorAccumulatesIntoOut' --tool initcheck
probe race_decode "$kt/test_attention_gpu" '*Decode*' --tool racecheck "${tg[@]}" --racecheck-report all
probe race_gemv "$kt/test_gemv_gpu" '*:-*GemmaDecodeShapes*:*256000*' --tool racecheck "${tg[@]}" --racecheck-report all
probe race_gemm_bf16 "$kt/test_gemm_gpu" 'Shapes/GemmGpuBf16.*' --tool racecheck "${tg[@]}"
# The impl/ binaries (issue 11: not yet under any tool): the model, training and generation paths at their small
# test configurations; the Gemma-width instances are left out (the same kernels at full size).
it=$build/impl/tests
big='*Gemma*:*gemma*:*7b*:*2b*'
probe mem_impl_model "$it/test_impl_model_gpu" "*:-$big" --tool memcheck --leak-check full
probe mem_impl_generate "$it/test_impl_generate_gpu" "*:-$big" --tool memcheck --leak-check full
probe mem_impl_train "$it/test_impl_train_gpu" "*:-$big" --tool memcheck --leak-check full
probe race_impl_generate "$it/test_impl_generate_gpu" "*:-$big" --tool racecheck "${tg[@]}"
probe init_impl_generate "$it/test_impl_generate_gpu" "*:-$big" --tool initcheck
probe sync_impl_generate "$it/test_impl_generate_gpu" "*:-$big" --tool synccheck "${tg[@]}"
cat "$out/probes.tsv"
