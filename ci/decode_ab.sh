#!/usr/bin/env bash
# The decode step's opt-in experiments measured against the default in one run (issue 7), on the GPU machine:
#   ci/decode_ab.sh BUILD_DIR OUT_DIR [FILTER]      (FILTER also from DECODE_AB_FILTER, for gpu_session.sh's --decode-ab)
# runs bench_generate's batch-1 decode (default filter: gemma-2b bf16 / delayed / delayed+fp8head, gemma-7b delayed /
# delayed+fp8head) once per configuration, <config>.json / .log, and prints decode tokens/s side by side
# (summary.txt). Configurations (environment of impl/generate/decoder.cpp and kernels/gemm/gemv.cu):
#   default       none set (E4M3 GEMVs: the tensor cores for M >= 2, the CUDA-core loop at M = 1; gemv.h's rule;
#                 the 2-4-row GEMMs with N > 16384, fc1 and lm_head, on cuBLASLt: decoder.cpp; at B1 fc1 + GeGLU and
#                 QKV + RoPE + KV write fused, every GEMV triggering its dependents at its blocks' ends: session 18,
#                 except the residual GEMVs before a one-block RMSNorm, right after their wait: session 23;
#                 the input RMSNorm inside that QKV kernel where its grid is one wave: session 19)
#   cudacore      TEGEMMA_GEMV_MMA=never: every E4M3 GEMV on the CUDA-core loop (before session 14)
#   mma           TEGEMMA_GEMV_MMA=always: every E4M3 GEMV on the tensor cores (mma.sync m16n8k16)
#   rows8, rows16 TEGEMMA_DECODE_GEMV_MAX_ROWS=8 / 16: decode GEMMs up to 8 / 16 rows as GEMVs (default 4, then
#                 cuBLASLt)
#   ksplit1       TEGEMMA_GEMV_KSPLIT=1: never split (the default splits the 7b fc2, K >= 24576, over 2 warps)
#   ksplit2, ksplit4  TEGEMMA_GEMV_KSPLIT=2 / 4: the one-column GEMVs (QKV, O, fc2) with K split over 2 / 4 warps
#   ksplit16k     TEGEMMA_GEMV_KSPLIT_FROM_K=16384: the default rule's split of 2 from K >= 16384 (adds the 2b fc2)
#   attn_fp8      TEGEMMA_DECODE_ATTN_FP8=1: decode attention writes the O projection's E4M3 input (delayed scaling;
#                 the default since session 9)
#   attn_cast     TEGEMMA_DECODE_ATTN_FP8=0: the O projection's input cast by its own quantize kernel
#   geglu_off     TEGEMMA_DECODE_GEGLU_EPILOGUE=0: the batch-1 step's fc1 GEMV and GeGLU -> E4M3 as two kernels (by
#                 default one, kernels::gemv_geglu, the same bits)
#   qkv_off       TEGEMMA_DECODE_QKV_ROPE=0: the batch-1 step's QKV GEMV and RoPE + KV-cache write as two kernels (by
#                 default one, kernels::gemv_qkv_rope, the same bytes)
#   qkv_pairs1, qkv_pairs2  TEGEMMA_GEMV_QKV_PAIRS=1 / 2: the QKV + RoPE kernel with one / two RoPE pairs per warp
#                 (by default two where one would take more than one resident wave: gemma-7b, session 24)
#   early         TEGEMMA_GEMV_LATE_TRIGGER_BLOCKS=0: every GEMV triggers its programmatic dependents right after its
#                 wait (by default at the end of each block, gemv.cu, but for the residual GEMVs before a norm)
#   late2048      TEGEMMA_GEMV_LATE_TRIGGER_BLOCKS=2048: only GEMVs of >= 2048 blocks (fc1, lm_head) trigger late
#   unfused       geglu_off + qkv_off + early: the chain before session 18
#   unfused_late  geglu_off + qkv_off with the late trigger
#   norm_qkv      TEGEMMA_DECODE_NORM_QKV=1: the batch-1 step's input RMSNorm inside the fused QKV + RoPE kernel
#                 (kernels::GemvNorm: each block computes the E4M3 row; one kernel boundary less per layer) always;
#                 by default only where that grid is one resident wave (gemma-2b, not 7b: session 19; past one wave
#                 every block computes the norm)
#   norm_qkv_off  TEGEMMA_DECODE_NORM_QKV=0: the input RMSNorm always its own kernel (the default before session 19)
#                 (norm_fc1 / norm_both, the post-attention RMSNorm inside the fc1 + GeGLU kernel, and the persistent
#                 norm kernels past one wave: measured slower in sessions 19 / 20 and removed)
#   sample_one    TEGEMMA_DECODE_SAMPLE_SPLIT=0: greedy sampling in one block per row (the default splits a row over
#                 kernels::kGreedySplit blocks)
#                 (the greedy argmax reduced in the lm_head GEMV's epilogue instead, session 22: slower, removed)
#   norm_late     TEGEMMA_DECODE_NORM_EARLY_TRIGGER=0: the residual GEMVs before a one-block RMSNorm trigger at the end
#                 of each block like the other GEMVs (the early trigger is the default since session 23; the same
#                 before decode attention or the sampler, session 23's early_attn / early_sampler: slower / no
#                 different, removed)
#   gemv_untimed  TEGEMMA_DECODE_GEMV_TIMED=0: decode GEMMs past 4 rows always on cuBLASLt (the rule before session 22;
#                 by default each eligible shape takes the faster of gemv and cuBLASLt, timed once)
#   single, multi8  TEGEMMA_DECODE_STEPS_PER_GRAPH=1 / 8: that many decode steps per CUDA graph replay (default 4
#                 since session 21; impl/generate/generator.h)
#   gemm_first    TEGEMMA_GEMM_AUTOTUNE=0: every cuBLASLt GEMM (the decode GEMMs past 4 rows, fc1 / lm_head at 2-4 rows)
#                 takes cuBLASLt's first heuristic result instead of the timed choice among its first four (session 20)
#   alt           no environment, but bench_generate from $DECODE_AB_ALT_BUILD: a build-time A/B (ci/decode_ab_build.sh
#                 builds that tree with extra CMake options, e.g. -DTEGEMMA_STEP_TIMELINE=ON)
#   NAME_rN       (any configuration with a suffix _r2, _r3, ...) the same configuration again, a repeat in the same run
# CONFIGS="default ksplit4" limits the list.
set -uo pipefail
build=$1 out=$2
filter=${3:-${DECODE_AB_FILTER:-'e2e/decode/impl/(bf16/gemma-2b|delayed/gemma-(2b|7b)|delayed\+fp8head/gemma-(2b|7b))/B1/'}}
configs=${CONFIGS:-default cudacore}
mkdir -p "$out"
for cfg in $configs; do
  envs=()
  bin=$build/bench/bench_generate
  case ${cfg%_r[0-9]*} in
    alt)
      [ -x "${DECODE_AB_ALT_BUILD:-}/bench/bench_generate" ] ||
        { echo "decode_ab: alt needs DECODE_AB_ALT_BUILD with bench/bench_generate built" >&2; exit 2; }
      bin=$DECODE_AB_ALT_BUILD/bench/bench_generate ;;
    default) ;;
    cudacore) envs=(TEGEMMA_GEMV_MMA=never) ;;
    single) envs=(TEGEMMA_DECODE_STEPS_PER_GRAPH=1) ;;
    multi8) envs=(TEGEMMA_DECODE_STEPS_PER_GRAPH=8) ;;
    mma) envs=(TEGEMMA_GEMV_MMA=always) ;;
    rows8) envs=(TEGEMMA_DECODE_GEMV_MAX_ROWS=8) ;;
    rows16) envs=(TEGEMMA_DECODE_GEMV_MAX_ROWS=16) ;;
    ksplit1) envs=(TEGEMMA_GEMV_KSPLIT=1) ;;
    ksplit2) envs=(TEGEMMA_GEMV_KSPLIT=2) ;;
    ksplit4) envs=(TEGEMMA_GEMV_KSPLIT=4) ;;
    ksplit16k) envs=(TEGEMMA_GEMV_KSPLIT_FROM_K=16384) ;;
    attn_fp8) envs=(TEGEMMA_DECODE_ATTN_FP8=1) ;;
    attn_cast) envs=(TEGEMMA_DECODE_ATTN_FP8=0) ;;
    geglu_off) envs=(TEGEMMA_DECODE_GEGLU_EPILOGUE=0) ;;
    qkv_off) envs=(TEGEMMA_DECODE_QKV_ROPE=0) ;;
    qkv_pairs1) envs=(TEGEMMA_GEMV_QKV_PAIRS=1) ;;
    qkv_pairs2) envs=(TEGEMMA_GEMV_QKV_PAIRS=2) ;;
    early) envs=(TEGEMMA_GEMV_LATE_TRIGGER_BLOCKS=0) ;;
    late2048) envs=(TEGEMMA_GEMV_LATE_TRIGGER_BLOCKS=2048) ;;
    unfused) envs=(TEGEMMA_DECODE_GEGLU_EPILOGUE=0 TEGEMMA_DECODE_QKV_ROPE=0 TEGEMMA_GEMV_LATE_TRIGGER_BLOCKS=0) ;;
    unfused_late) envs=(TEGEMMA_DECODE_GEGLU_EPILOGUE=0 TEGEMMA_DECODE_QKV_ROPE=0) ;;
    sample_one) envs=(TEGEMMA_DECODE_SAMPLE_SPLIT=0) ;;
    gemv_untimed) envs=(TEGEMMA_DECODE_GEMV_TIMED=0) ;;
    gemm_first) envs=(TEGEMMA_GEMM_AUTOTUNE=0) ;;
    norm_qkv) envs=(TEGEMMA_DECODE_NORM_QKV=1) ;;
    norm_qkv_off) envs=(TEGEMMA_DECODE_NORM_QKV=0) ;;
    norm_late) envs=(TEGEMMA_DECODE_NORM_EARLY_TRIGGER=0) ;;
    *) echo "decode_ab: unknown configuration $cfg" >&2; exit 2 ;;
  esac
  env "${envs[@]}" "$bin" --benchmark_filter="$filter" --benchmark_out="$out/$cfg.json" \
    --benchmark_out_format=json --benchmark_min_warmup_time=0 > "$out/$cfg.log" 2>&1
  echo "== $cfg rc=$?"
done
python3 - "$out" $configs <<'PY' | tee "$out/summary.txt"
import json, os, sys
out, runs = sys.argv[1], sys.argv[2:]
rows = {}
for r in runs:
    p = os.path.join(out, r + ".json")
    if not os.path.exists(p):
        continue
    for b in json.load(open(p)).get("benchmarks", []):
        rows.setdefault(b["name"].split("/iterations")[0], {})[r] = b.get("decode_tokens_per_second", 0.0)
print("decode tokens/s" + "".join("%14s" % r for r in runs))
for name, v in rows.items():
    print(name)
    print(" " * 15 + "".join("%14s" % ("%.1f" % v[r] if r in v else "-") for r in runs))
# Where each configuration's minute goes (bench_generate's setup_*_s counters, summed over its benchmarks).
keys = ("setup_weights_s", "setup_model_s", "setup_calibrate_s", "setup_warm_s")
for r in runs:
    p = os.path.join(out, r + ".json")
    if os.path.exists(p):
        bs = json.load(open(p)).get("benchmarks", [])
        print("setup s %-14s" % r + "  ".join("%s %.1f" % (k[6:-2], sum(b.get(k, 0.0) for b in bs)) for k in keys))
PY
