#!/usr/bin/env bash
# Targeted compute-sanitizer probes for issue 11, each one binary (a gtest filter of it) under one tool and one
# setting, so that a finding can be pinned to a test, a kernel and a sanitizer option. Meant for gpu_session.sh's
# side lane (--side-cmd ci/sanitize_probe.sh), which sets TEGEMMA_BUILD_DIR and SIDE_OUT.
#
#   ci/sanitize_probe.sh [PROBE_NAME_REGEX]        # run the probes whose name matches (bash =~, unanchored)
#   ci/sanitize_probe.sh --list [PROBE_NAME_REGEX] # print them in run order (binary, tool); runs nothing, needs no GPU
#
#   PROBE_TIMEOUT  seconds per probe (default 90); PROBE_BUDGET  seconds for all of them (default 0: no limit): a probe
#                  gets at most what is left, and once less than 15 s is left the remaining ones are recorded as
#                  not_run. Set PROBE_BUDGET a little under the side lane's time so the script ends by itself.
#
# Probes run in the order they are defined below: first the ones not yet run clean, most valuable first, then the
# earlier sessions' probes (kept to re-run a finding). Output in SIDE_OUT: <name>.log (a first line with the
# command, then compute-sanitizer's and gtest's output) and probes.tsv, one row per selected probe:
#   probe  rc  seconds  status  summary  error_kinds  tests  failed_tests
#   status: clean | errors (the tool reported errors, hazards or leaks) | tool_fault ("Internal Sanitizer Error")
#           | timeout | test_failed (tests failed, no tool error) | crashed (no summary line) | not_run (budget)
#           | not_built (the binary is not in this build, e.g. no LibTorch) | stopped (this script got a signal)
#   tests: passed/ran (gtest); failed_tests: the failed tests' names (a test that fails only under the tool is
#   readable there).
# A regex that matches no probe runs nothing: the script lists the probe names and exits 2.
#
# Which kernels each tool checks, as in gpu_sanitize.sh: memcheck and initcheck every kernel; racecheck and synccheck
# only the project's (--kernel-name kns=_ZN2tg, namespace tg). Under racecheck, cuBLASLt's Hopper GEMM kernels
# fault ("Internal Sanitizer Error: The Sanitizer failed to handle a hardware exception", then CUDA error 700 in
# every later call) although that filter leaves them uninstrumented (test_gemm_gpu, session 6; the impl/ generation
# binary, 0bacaa1): any racecheck probe whose tests run a cuBLASLt GEMM ends at the first one. The generation
# path's own shared-memory kernels are therefore racechecked through the kernel test binaries (decode attention,
# GEMV, RMSNorm, sampling, KV cache) and the race_impl_generate_* probes below only try tool settings.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
list=0
if [ "${1:-}" = --list ]; then list=1; shift; fi
want=${1:-.}
[[ "" =~ $want ]]
[ $? -ne 2 ] || { echo "sanitize_probe: '$want' is not a valid regex" >&2; exit 2; }
if [ $list = 1 ]; then
  build=${TEGEMMA_BUILD_DIR:-BUILD}
else
  source "$root/ci/deps.sh"
  build=${TEGEMMA_BUILD_DIR:?set TEGEMMA_BUILD_DIR to the CUDA build}
  out=${SIDE_OUT:-$build/sanitize_probe}
  mkdir -p "$out"
  out=$(cd "$out" && pwd) build=$(cd "$build" && pwd)  # absolute: each probe runs in its binary's folder
  cs=$(tegemma_find_sanitizer) || { echo "sanitize_probe: compute-sanitizer not found" >&2; exit 2; }
  read -ra inj <<< "$(tegemma_sanitizer_injection_args "$cs")"
  printf 'probe\trc\tseconds\tstatus\tsummary\terror_kinds\ttests\tfailed_tests\n' > "$out/probes.tsv"
fi
kt=$build/kernels/tests it=$build/impl/tests
budget=${PROBE_BUDGET:-0} matched=0 all_names=() cur="" curname=""

row() {  # NAME RC SECONDS STATUS [SUMMARY KINDS TESTS FAILED]
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" "${6:-}" "${7:-}" "${8:-}" >> "$out/probes.tsv"
  echo "== $1 $4 rc=$2 ${3}s ${5:-} ${8:+failed: $8}"
}

on_signal() {  # the lane's timeout: stop the running probe too (no compute-sanitizer left behind on the GPU)
  if [ -n "$cur" ]; then
    kill -TERM "$cur" 2>/dev/null
    row "$curname" 143 "$(( SECONDS - t0 ))" stopped "stopped by a signal"
  fi
  exit 143
}
trap on_signal TERM INT

classify() {  # RC LOG -> status
  local rc=$1 log=$2 errors race
  errors=$(sed -nE 's/.*ERROR SUMMARY: ([0-9]+) error.*/\1/p' "$log" | head -1)
  race=$(sed -nE 's/.*RACECHECK SUMMARY: .*\(([0-9]+) errors?, ([0-9]+) warnings?\).*/\1 + \2/p' "$log" | head -1)
  errors=$(( ${errors:-0} + ${race:-0} ))
  if grep -q 'Internal Sanitizer Error' "$log"; then echo tool_fault
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo timeout
  elif [ "$errors" -gt 0 ] || grep -qE '^=+ +(Invalid|Uninitialized|Error: Race|Barrier error|Leaked)' "$log"; then
    echo errors
  elif grep -qE '^\[  FAILED  \]' "$log"; then echo test_failed
  elif [ "$rc" = 0 ] && grep -qE 'ERROR SUMMARY|RACECHECK SUMMARY' "$log"; then echo clean
  else echo crashed
  fi
}

probe() {  # NAME [--env VAR=VALUE]... BINARY GTEST_FILTER SANITIZER_ARGS...
  local name=$1 envs=()
  shift
  while [ "${1:-}" = --env ]; do envs+=("$2"); shift 2; done
  local bin=$1 filter=$2
  shift 2
  all_names+=("$name")
  [[ $name =~ $want ]] || return 0
  matched=$(( matched + 1 ))
  if [ $list = 1 ]; then
    printf '%-30s %-28s %s %s\n' "$name" "$(basename "$bin")" "$*" "${envs[*]}"
    return 0
  fi
  # (ci/tests/test_sanitize_probe.sh runs a stub sanitizer over folders without binaries and without CMakeCache.txt)
  if [ ! -x "$bin" ] && { [ -f "$build/CMakeCache.txt" ] || [ ! -d "$(dirname "$bin")" ]; }; then
    row "$name" - 0 not_built "$bin is not in this build"
    return 0
  fi
  local limit=${PROBE_TIMEOUT:-90} left
  if [ "$budget" -gt 0 ]; then
    left=$(( budget - SECONDS ))
    if [ "$left" -lt 15 ]; then
      row "$name" - 0 not_run "PROBE_BUDGET spent"
      return 0
    fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  local log="$out/$name.log" rc
  t0=$SECONDS
  printf '# %s: %s%s %s --print-limit 200 %s %s --gtest_filter=%s (in %s, limit %ss)\n' "$name" \
    "${envs[*]:+${envs[*]} }" "$cs" "${inj[*]}" "$*" "$bin" "$filter" "$(dirname "$bin")" "$limit" > "$log"
  # in the binary's folder: ctest's working directory for it (gtest_discover_tests), where its fixtures resolve;
  # in the background so that a signal to this script reaches the probe (on_signal)
  (cd "$(dirname "$bin")" && exec env "${envs[@]}" timeout --kill-after=10 "$limit" "$cs" "${inj[@]}" \
     --print-limit 200 "$@" "$bin" --gtest_filter="$filter") >> "$log" 2>&1 &
  cur=$! curname=$name
  wait "$cur"
  rc=$?
  cur=""
  local summary kinds tests failed ran
  summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY|Internal Sanitizer Error' "$log" | sed -E 's/^=+ +//' |
            head -3 | tr '\n' ' ')
  kinds=$(grep -E '^=+ +(Invalid|Uninitialized|Error|Warning|Barrier|Leaked|Program hit|Host API|Race|Potential)' "$log" |
          sed -E 's/^=+ +//; s/ (at|of size) .*//; s/ 0x[0-9a-f]+//g' | cut -d' ' -f1-6 | sort | uniq -c | sort -rn |
          head -4 | sed -E 's/^ +//' | tr '\n' ';')
  tests="$(sed -nE 's/^\[  PASSED  \] ([0-9]+) tests?\./\1/p' "$log" | tail -1)"
  ran=$(sed -nE 's/^\[==========\] ([0-9]+) tests? from .* ran\..*/\1/p' "$log" | tail -1)
  if [ -n "$ran" ]; then tests="${tests:-0}/$ran"; else tests=-; fi
  failed=$(grep -oE '^\[  FAILED  \] [^ ,]+\.[^ ,]+' "$log" | sed -E 's/^\[  FAILED  \] //' | sort -u | tr '\n' ' ')
  row "$name" "$rc" "$(( SECONDS - t0 ))" "$(classify "$rc" "$log")" "$summary" "$kinds" "$tests" "${failed:0:400}"
}

tg=(--kernel-name kns=_ZN2tg)
# Small configurations only: the Gemma-width instances are the same kernels at full size (and take minutes under a
# tool); the kernel tests' own big sizes are left out as in gpu_sanitize.sh's EXCLUDE.
big='*Gemma*:*gemma*:*7b*:*2b*'
# GenerateCuda.NoDeviceAllocationWhileDecodingAndOneCapturePerBatchSize checks that cudaMemGetInfo's free memory does
# not move while decoding. compute-sanitizer allocates device memory of its own while the program runs (memcheck at
# 0bacaa1: free memory changed at 1152 of 1152 token callbacks, 0 errors, 0 leaks), so under a tool that test fails
# whatever our code does: it is left out under every tool (it passes in the plain GPU suite). The other tests still
# run the same decode-graph replays.
noalloc='GenerateCuda.NoDeviceAllocationWhileDecodingAndOneCapturePerBatchSize'
gen_small="*:-$big:$noalloc"

# ---- Not yet run clean (issue 11), most valuable first. Expected seconds on the H200 from the gtest times of the
# ---- native suite and of today's probes (0bacaa1) are in docs/sanitizers.md ("Next probes").
# memcheck + leak check of the model forward (every recipe, cuDNN and flash attention, FP8-only weights,
# deterministic GEMMs) and of training (gradients and steps vs the CPU, exact resume). CudaModel.Deterministic...
# also compares cudaMemGetInfo before and after 8 forwards: if it alone fails here, with 0 errors, read it as the
# generation test above (the tool's own allocations); it is kept for its FP8-only and deterministic paths.
probe mem_impl_model "$it/test_impl_model_gpu" "*:-$big" --tool memcheck --leak-check full
probe mem_impl_train "$it/test_impl_train_gpu" "*:-$big" --tool memcheck --leak-check full
# The decode attention under racecheck (the kernel that had a real hazard, 502e709) through its three merge paths
# (in-cluster, combine kernel, more splits than a cluster), BF16 and E4M3 caches, captured in a graph with PDL: about
# 30 launches. The old '*Decode*' probe took more than 90 s; the decode tests are split over several probes below.
probe race_decode_graph "$kt/test_attention_gpu" 'AttentionGpu.DecodeGraphReplayEqualsEager' --tool racecheck \
  "${tg[@]}" --racecheck-report all
# racecheck of the generation binary: which launch faults (TEGEMMA_SYNC_LAUNCHES=1 synchronises after each project
# launch, so the error surfaces at the first check after the faulting kernel; CUBLASLT_LOG_LEVEL=2 logs each
# cuBLASLt kernel launch with its shapes), then two settings not tried yet: without racecheck's async-copy tracking
# (and the bulk-copy / wgmma checks), and with a precise device error ending only the kernel, not the context.
probe race_impl_generate_pin --env TEGEMMA_SYNC_LAUNCHES=1 --env CUBLASLT_LOG_LEVEL=2 "$it/test_impl_generate_gpu" \
  'GenerateCuda.BatchOfPromptsEqualsEachPromptAlone' --tool racecheck "${tg[@]}"
probe race_impl_generate_noasync "$it/test_impl_generate_gpu" "$gen_small" --tool racecheck "${tg[@]}" \
  --racecheck-memcpy-async no --check-bulk-copy no --check-warpgroup-mma no
probe race_impl_generate_kernelerr "$it/test_impl_generate_gpu" "$gen_small" --tool racecheck "${tg[@]}" \
  --destroy-on-device-error kernel
# initcheck of the generation path (prefill arena, KV cache, decode state). initcheck does not record cuBLASLt's TMA
# output stores as writes (session 6, test_gemm_gpu): a report of a read by one of our kernels of a buffer that only a
# cuBLASLt GEMM wrote is that blind spot, not a finding. The GEMM wrapper now marks its outputs initialized through the
# NVTX Memory API (nvtx::mark_initialized, common/nvtx.h); the tool honours that only with NVTX support on, which is
# compute-sanitizer's default (`--nvtx arg (=yes)` in 2025.3.1's --help, the H200's version), so no option here.
probe init_impl_generate "$it/test_impl_generate_gpu" "$gen_small" --tool initcheck
# The decode step's other shared-memory kernels, never under racecheck: KV-cache write / reorder / row amax (and
# token selection, race_sampling below).
probe race_kv_cache "$kt/test_generation_kernels_gpu" 'KvCacheGpu.*' --tool racecheck "${tg[@]}" --racecheck-report all
probe sync_impl_generate "$it/test_impl_generate_gpu" "$gen_small" --tool synccheck "${tg[@]}"
# Allocation failure paths (the 1 PiB request is on purpose: API errors not reported) with the leak check, and the
# impl's delayed-scaling state on the device.
probe mem_common_alloc "$build/common/tests/test_common_gpu" 'GpuAllocation.*' --tool memcheck --leak-check full \
  --report-api-errors no
probe mem_impl_scaling "$it/test_impl_gpu" '*' --tool memcheck --leak-check full
# Token selection: 128 launches, radix selects with shared-memory histogram atomics over up to 256000 logits per row
# (the Gemma-vocabulary case is inside the test): the least certain time of these probes, hence late.
probe race_sampling "$kt/test_generation_kernels_gpu" 'SamplingGpu.*' --tool racecheck "${tg[@]}" \
  --racecheck-report all
# The LibTorch reference on CUDA (LibTorch's and cuBLAS / cuDNN's kernels; reference/ has no CUDA code of its own).
# PyTorch's caching allocator hands out pieces of large cudaMalloc blocks, so memcheck would not see a tensor's own
# bounds or a use after free: PYTORCH_NO_CUDA_MEMORY_CACHING=1 makes every tensor its own cudaMalloc. No leak check:
# LibTorch keeps its cuBLAS / cuDNN handles and workspaces for the process, so a report would be about LibTorch.
probe mem_reference --env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$build/reference/tests/test_reference_gpu" 'Gpu.*' \
  --tool memcheck

# ---- Also open, for later calls (no estimate yet, or long) --------------------------------------------------------
probe mem_reference_fixtures --env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$build/reference/tests/test_reference_gpu" \
  'Fixtures/*' --tool memcheck
# test_impl_parity_gpu holds only gemma-2b / gemma-7b at full width and vocabulary (2 layers; 64 s and 74 s natively):
# run alone with a long PROBE_TIMEOUT (minutes under memcheck).
probe mem_parity_2b --env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$build/parity/tests/test_impl_parity_gpu" '*gemma_2b*' \
  --tool memcheck
# Every heads_per_block x split count: 336 decode launches at head_dim 256 (the cluster-merge test's 36 smaller ones
# took 20 s under racecheck): minutes, a lane of its own with PROBE_TIMEOUT=300.
# The split paths, one (geometry, heads per block) instance per probe (race_decode_split_0..19; instance i is
# geometry i / 5 and heads_per_block {0,1,2,4,8}[i % 5], the MHA ones skip hpb > 1): each its own lane (all in one
# process ran past 340 s in session 10; one MQA geometry past 320 s in session 11), and the argument checks.
for g in $(seq 0 19); do
  probe race_decode_split_$g "$kt/test_attention_gpu" "AttentionGpu/DecodeSplitPaths.MatchCpuTwinAndEachOther/$g" \
    --tool racecheck "${tg[@]}" --racecheck-report all
done
probe race_decode_reject "$kt/test_attention_gpu" 'AttentionGpu.DecodeRejectsBadArguments' --tool racecheck "${tg[@]}" \
  --racecheck-report all
probe race_decode_batch64 "$kt/test_attention_gpu" 'AttentionGpu.DecodeBatch64MatchesCpuTwin' --tool racecheck \
  "${tg[@]}" --racecheck-report all
# These three passed under racecheck at 0bacaa1 with no hazard printed before the 90 s limit, which cut the run before
# the summary line (DecodeMatchesCpuTwinBf16Cache alone took 64 s).
probe race_decode_bf16 "$kt/test_attention_gpu" 'AttentionGpu.DecodeMatchesCpuTwinBf16Cache' --tool racecheck \
  "${tg[@]}" --racecheck-report all
probe race_decode_fp8 "$kt/test_attention_gpu" 'AttentionGpu.DecodeMatchesCpuTwinFp8Cache:AttentionGpu.DecodeEqualsLastRowOfPrefill' \
  --tool racecheck "${tg[@]}" --racecheck-report all
# Training kernels under racecheck: cross-entropy (the Gemma-vocabulary case /4 left out) and AdamW / accumulate;
# GemmTransposeGpu is left out (cuBLASLt: faults under racecheck).
probe race_train_kernels "$kt/test_train_kernels_gpu" 'Shapes/LossGpu.*:OptimGpu.*:-Shapes/LossGpu.MatchesTheTwin/4' \
  --tool racecheck "${tg[@]}" --racecheck-report all
# The elementwise binary never finished under racecheck (406 s) or memcheck (55 s of budget): by op.
ew_big='*TrainingShape*:*AtGemmaShape*:*SpotCheck*:*Gemma7b*'
probe race_norm_rest "$kt/test_elementwise_gpu" "NormGpu.*:-NormGpu.ForwardBitExactAllShapesAndDtypes:NormGpu.Fp8ForwardBitExact:NormGpu.ForwardPersistentBlocksLoopOverRowGroups:$ew_big" \
  --tool racecheck "${tg[@]}" --racecheck-report all
probe race_norm_persistent "$kt/test_elementwise_gpu" 'NormGpu.ForwardPersistentBlocksLoopOverRowGroups' \
  --tool racecheck "${tg[@]}" --racecheck-report all
probe race_activation "$kt/test_elementwise_gpu" "ActivationGpu.*:-ActivationGpu.TablePath*:$ew_big" \
  --tool racecheck "${tg[@]}" --racecheck-report all
probe race_activation_table "$kt/test_elementwise_gpu" 'ActivationGpu.TablePathShapes' --tool racecheck "${tg[@]}" \
  --racecheck-report all
probe race_embedding "$kt/test_elementwise_gpu" "EmbeddingGpu.*:-$ew_big" --tool racecheck "${tg[@]}" \
  --racecheck-report all
probe mem_elementwise "$kt/test_elementwise_gpu" "*:-$ew_big:NormGpu.ForwardPersistentBlocksLoopOverRowGroups" \
  --tool memcheck --leak-check full
probe init_gen_kernels "$kt/test_generation_kernels_gpu" '*' --tool initcheck
probe init_train_kernels "$kt/test_train_kernels_gpu" '*:-Shapes/LossGpu.MatchesTheTwin/4' --tool initcheck
probe init_library_state "$kt/test_library_state_gpu" '*' --tool initcheck
# Session 10: the cells of docs/sanitizers.md's coverage table still "not run" (or a finding left open), for
# ci/sanitize_lanes.sh lanes on one GPU (test_common_gpu asks for 1 PiB on purpose: API errors not reported). initcheck of cuDNN's backward: at 3843edc it reported reads of never-written
# memory in fmha_reduce_head_ragged (which reads O and dO); O is cuDNN's forward output, a TMA store that initcheck
# does not record, now marked initialized (d92fb2d). The decode tests added since the attention binary's memcheck.
probe init_attention_bwd "$kt/test_attention_gpu" \
  'AttentionGpu.CudnnBackwardMatchesCpuTwin:AttentionGpu.CudnnDeterministicBackwardMatchesCpuTwinAndRepeats:AttentionGpu.FlashBackwardMatchesCpuTwinAndRepeats' \
  --tool initcheck
# The poisoned-workspace test (73a797b) under initcheck: its caller workspace is memset, so a report left there is a
# read of something other than the workspace.
probe init_attention_bwd_poisoned "$kt/test_attention_gpu" 'AttentionGpu.CudnnBackwardPoisonedWorkspace' \
  --tool initcheck
probe init_attention_rest "$kt/test_attention_gpu" '*:-*Backward*:*Poisoned*' --tool initcheck
probe mem_attention_decode "$kt/test_attention_gpu" '*Decode*' --tool memcheck --leak-check full
probe init_impl_model "$it/test_impl_model_gpu" "*:-$big" --tool initcheck
probe init_impl_train "$it/test_impl_train_gpu" "*:-$big" --tool initcheck
probe sync_impl_model "$it/test_impl_model_gpu" "*:-$big" --tool synccheck "${tg[@]}"
probe sync_impl_train "$it/test_impl_train_gpu" "*:-$big" --tool synccheck "${tg[@]}"
probe init_impl_scaling "$it/test_impl_gpu" '*' --tool initcheck
probe race_impl_scaling "$it/test_impl_gpu" '*' --tool racecheck "${tg[@]}" --racecheck-report all
probe sync_impl_scaling "$it/test_impl_gpu" '*' --tool synccheck "${tg[@]}"
probe init_common "$build/common/tests/test_common_gpu" '*' --tool initcheck --report-api-errors no
probe race_common "$build/common/tests/test_common_gpu" '*' --tool racecheck "${tg[@]}" --racecheck-report all \
  --report-api-errors no
probe sync_common "$build/common/tests/test_common_gpu" '*' --tool synccheck "${tg[@]}" --report-api-errors no
probe init_reference --env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$build/reference/tests/test_reference_gpu" 'Gpu.*' \
  --tool initcheck
# Re-runs of today's (0bacaa1) generation-binary probes: memcheck was clean apart from the allocation test, now left
# out; racecheck faults at the first prefill GEMM.
probe mem_impl_generate "$it/test_impl_generate_gpu" "$gen_small" --tool memcheck --leak-check full
probe race_impl_generate "$it/test_impl_generate_gpu" "$gen_small" --tool racecheck "${tg[@]}"

# ---- Earlier sessions' probes (session 6: the GEMM racecheck fault, GEMM initcheck, decode cluster, GEMV split-K) --
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
probe race_gemv "$kt/test_gemv_gpu" '*:-*GemmaDecodeShapes*:*256000*' --tool racecheck "${tg[@]}" --racecheck-report all
probe race_gemm_bf16 "$kt/test_gemm_gpu" 'Shapes/GemmGpuBf16.*' --tool racecheck "${tg[@]}"

if [ "$matched" = 0 ]; then
  echo "sanitize_probe: no probe name matches '$want'; the probes, in run order:" >&2
  printf '  %s\n' "${all_names[@]}" >&2
  exit 2
fi
[ $list = 1 ] || cat "$out/probes.tsv"
