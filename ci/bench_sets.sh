#!/usr/bin/env bash
# The benchmark suites (issue 9), as data: which benchmarks of each binary a suite runs, and with which Google
# Benchmark settings. Sourced by ci/gpu_suite.sh (--bench quick|full) and runnable alone on a GPU machine:
#   ci/bench_sets.sh quick|full BUILD_DIR OUT_DIR        -> OUT_DIR/bench_<binary>.json + .log, OUT_DIR/bench_suite.json
#
# quick  the headline workloads, one shape each, single runs (min time 0.05 s, no Google Benchmark warm-up: every
#        benchmark warms itself up, see below): the quantize kernels at the Gemma-7B MLP input 8192x3072 (the shape
#        closest to their 80% target), the GEMM ceilings and one training GEMM per type, the decode GEMVs, the
#        FP8-output RMSNorm and GeGLU, prefill and decode attention, one gemma-2b layer's forward + backward under
#        delayed scaling (bench_layer, with its FP8 ceiling), and per workload impl bf16 vs impl FP8
#        (delayed) vs the LibTorch reference on gemma-2b: prefill 8x2048 (bench_model for impl, bench_reference
#        for the reference), train step 4x2048, decode B1 P128+N256. Budget (issue 9): under 2 minutes on the H200
#        (binaries load, draw random weights and warm up; bench_suite.json records each binary's wall time).
#  full  every benchmark of every binary. Kernel-level binaries (kernels, gemm, elementwise, train_kernels,
#        attention): 3 repetitions of min time 0.01 s, aggregates only (the median is what the report reads).
#        End-to-end binaries (layer, model, train, reference, generate): their own fixed iteration counts (2-20 timed
#        runs of a layer, a whole step, prefill or generation, each run timed alone), one repetition: three would
#        triple bench_generate's ~90 s of timed generations (the TE tutorial shape alone is 4-5 s per run, 8
#        variants) and break the 10-minute budget.
#        Budget: under 10 minutes. Session 5 (3843edc) with min time 0.1 s: bench_kernels alone took 259 s (64
#        benchmarks; the rotating-buffer benchmarks report the time per launch, so 0.1 s of manual time is up to 17x
#        that of GPU work, and random_device redrew its host pattern for every buffer set) and bench_gemm did not
#        finish in the next 256 s (~1.2 s per benchmark, ~230 of them). Hence 0.01 s (the quantize and GEMM
#        repetitions' cv was 0.0-0.3% at 0.1 s) and the pattern drawn once per dtype. Estimate, to be measured:
#        kernel level ~200 s, end to end ~300 s. Measured at 7e47475 (session 6): 351 s in all. Added after it,
#        estimated (to be measured): bench_train_kernels ~5-10 s (6 benchmarks; each call of a benchmark allocates and
#        fills its buffers: 4.2 GB of logits, 45 GB of AdamW state for gemma-2b, ~0.1 s; 3 repetitions, 1-2 calls
#        each; timed launches of 0.3-25 ms) and bench_layer ~15-25 s (2 ceilings of 50 GEMMs; per preset one layer's
#        weights drawn on the host, ~0.2 s / 0.4 s; per recipe a copy + quantize, two warm-up steps and 20 fwd + 10
#        fwd_bwd timed, ~3-10 ms / 10-30 ms each; first cuDNN plans per shape): ~380 s in all.
# bench/hf_anchors.py writes HF transformers' figures for the same workloads in the same format (run it beside).
set -uo pipefail

# Why the quick suite looks as it does (issue 9's 2 minutes). The H200 run at 75e9664 (reports/runs/
# 2026-11-30-h200-75e9664/bench_quick/bench_suite.json) took 164 s with the previous quick set: kernels 12, gemm 9,
# elementwise 17, attention 5, model 42, train 25, reference 40, generate 14. Where that time went, from the logs
# (iterations x time) and the sources (the set measured 85 s at 7e47475, session 6):
#  - Google Benchmark's warm-up (--benchmark_min_warmup_time) runs a benchmark with a fixed Iterations(n) n times
#    before the n timed ones: 10 + 10 train steps, 2 + 2 reference decodes of 2 s each, 3 + 3 impl decodes. Every
#    benchmark warms itself up untimed (train: 1-2 steps; prefill: 1-2 forwards; decode: a short generation and
#    the graph capture; kernels: every buffer set once, and the iteration-count growth runs before the reported
#    one), so quick runs none (the full suite keeps 0.05 s). Also halves the calls of the elementwise benchmarks,
#    which redraw their buffers on every call (random_device per set, ~10 calls per benchmark before).
#  - bench_model's model/gemma-2b/reference draws its 2.5B weights in FP32 on the CPU (ref::Engine::random
#    without RandomInit::on_device; reference/options.h: "minutes for gemma-7b"): ~27 s of bench_model's 42 s
#    (42 s minus the rest: process and ceiling ~3 s, impl master weights drawn on 16 host threads ~4 s, two impl
#    setups ~3 s, 3.7 s timed). Quick takes the reference prefill from bench_reference instead, the same workload
#    (8 x 2048, last-position logits, SDPA; 144 ms there vs 147 ms in bench_model at 75e9664) with weights drawn on
#    the device. Since session 4 bench_model's bm_reference draws on the device too (a few seconds), so quick runs
#    model/gemma-2b/reference again and its impl rows carry speedup_vs_reference (+~4 s: ~100 s in all, unmeasured).
#  - bench_reference: gemma-7b prefill (its own 17 GB model: draw, 2 warm-ups, 6 + 6 iterations of 264 ms) out.
#  - elementwise: the FP8-output RMSNorm and GeGLU only (the BF16 ones and the embedding are in the full suite);
#    quantize: the 8192x3072 shape only (8192x8192 sits at ~90% of the roofline, far from the 80% target).
# Estimate of the new quick suite on the H200 (seconds, from the figures above; to be re-measured): kernels 6
# (6 of 12 benchmarks at ~0.6 s + start and inputs ~2.5), gemm 8 (warm-ups off), elementwise 5 (2 benchmarks,
# 4-5 calls each instead of ~10), attention 5, model 14 (42 - ~27 reference - ~1 warm-ups), train 21 (25 - 4.5 s of
# warm-up steps), reference 26 (40 - ~6.5 gemma-7b prefill - 7.7 s of warm-up iterations), generate 11.5 (14 - 2.7
# s of warm-up generations): ~96 s; the least certain part is the reference's CPU draw (if it were only 15 s, ~108 s).
# Measured 85 s at 7e47475. Since then bench_layer's layer/fwd_bwd/impl_delayed/gemma-2b/B4xS2048 with its FP8
# ceiling (estimate ~6 s: start ~2 s, ceiling 50 GEMMs + quantize < 0.5 s, one layer's weights drawn ~0.2 s, setup and
# two warm-up steps with the first cuDNN plans ~2 s, 10 timed of ~10 ms): ~91 s, to be measured.

# tegemma_bench_filter SUITE BINARY: the --benchmark_filter of BINARY in SUITE ("" = all; "-" = skip the binary).
tegemma_bench_filter() {
  local suite=$1 bin=$2
  if [ "$suite" = full ]; then echo ""; return; fi
  case $bin in
    bench_kernels) echo 'quantize/(cast|cast_transpose|block1x128|block128x128|amax|d2d_copy)/[^/]+/8192x3072/';;
    bench_gemm) echo 'gemm/(ceiling_bf16|ceiling_fp8)/|gemm/(bf16|fp8_tensor_fast|fp8_block|torch_scaled_mm_fast)/[^/]+/8192x32768x2048/|gemv/gemv/e4m3xe4m3->bf16/1x(32768x2048|2048x16384|256000x2048)/';;
    bench_elementwise) echo '(rmsnorm|geglu)/bf16->e4m3/8192x(2048|16384)/';;
    bench_attention) echo 'attention/(prefill_fwd|train_bwd)/gemma-2b/cudnn/packed/|attention/decode(_g1|_g2)?/gemma-2b/bf16/B1/ctx(512|1024)';;
    bench_layer) echo 'layer/(ceiling_fp8|fwd_bwd/impl_delayed/gemma-2b)/';;
    bench_model) echo 'model/(ceiling_bf16|gemma-2b/(reference|impl_bf16|impl_delayed))/';;
    bench_train) echo 'e2e/(ceiling/impl|train_step/impl/(bf16|delayed))/';;
    bench_reference) echo 'e2e/(train_step|prefill|decode)/reference/bf16/gemma-2b/(B4xS2048|B8xS2048|B1)/';;
    bench_generate) echo 'e2e/decode/impl/(bf16|delayed\+fp8head)/gemma-2b/B1/';;
    *) echo "-";;
  esac
}

# tegemma_bench_args SUITE BINARY: the Google Benchmark settings of BINARY in SUITE.
tegemma_bench_args() {
  if [ "$1" = full ]; then
    case $2 in
      bench_layer|bench_model|bench_train|bench_reference|bench_generate) echo "--benchmark_repetitions=1 --benchmark_min_warmup_time=0";;
      *) echo "--benchmark_min_time=0.01s --benchmark_repetitions=3 --benchmark_report_aggregates_only=true --benchmark_min_warmup_time=0";;
    esac
  else
    echo "--benchmark_min_time=0.05s --benchmark_repetitions=1 --benchmark_min_warmup_time=0"
  fi
}

# tegemma_bench_suite SUITE BUILD_DIR OUT_DIR: runs the suite's binaries in a fixed order; returns 1 if any failed.
tegemma_bench_suite() {
  local suite=$1 build=$2 out=$3 rc=0 t0 t1 first=1
  mkdir -p "$out"
  local summary="$out/bench_suite.json.tmp"
  t0=$(date +%s)
  printf '{"suite": "%s", "binaries": [' "$suite" > "$summary"
  for name in bench_kernels bench_gemm bench_elementwise bench_train_kernels bench_attention bench_layer bench_model \
              bench_train bench_reference bench_generate; do
    local b="$build/bench/$name" f
    f=$(tegemma_bench_filter "$suite" "$name")
    [ -x "$b" ] && [ "$f" != "-" ] || continue
    local args; read -ra args <<< "$(tegemma_bench_args "$suite" "$name")"
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
  [ $# -eq 3 ] && { [ "$1" = quick ] || [ "$1" = full ]; } || { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
  tegemma_bench_suite "$1" "$2" "$3"
fi
