#!/usr/bin/env bash
# The decode step's fusions measured against each other in one run (issue 7), on the GPU machine:
#   ci/decode_ab.sh BUILD_DIR OUT_DIR [FILTER]
# runs bench_generate's batch-1 decode (default: gemma-2b bf16 / delayed / delayed+fp8head, gemma-7b delayed /
# delayed+fp8head) three times:
#   fused.json       TEGEMMA_DECODE_FUSED=1 TEGEMMA_DECODE_ATTN_MERGE=1 TEGEMMA_GEMV_PREFETCH=1 (every experiment)
#   noprefetch.json  the same without the L2 weight prefetch
#   unfused.json     the default (the separate norm / cast / GeGLU / combine kernels)
# and prints tokens/s per benchmark side by side (summary.txt).
set -uo pipefail
build=$1 out=$2
filter=${3:-'e2e/decode/impl/(bf16/gemma-2b|delayed/gemma-(2b|7b)|delayed\+fp8head/gemma-(2b|7b))/B1/'}
mkdir -p "$out"
run() {  # name env...
  local name=$1; shift
  env "$@" "$build/bench/bench_generate" --benchmark_filter="$filter" --benchmark_out="$out/$name.json" \
    --benchmark_out_format=json --benchmark_min_warmup_time=0 > "$out/$name.log" 2>&1
  echo "== $name rc=$?"
}
run fused TEGEMMA_DECODE_FUSED=1 TEGEMMA_DECODE_ATTN_MERGE=1 TEGEMMA_GEMV_PREFETCH=1
run noprefetch TEGEMMA_DECODE_FUSED=1 TEGEMMA_DECODE_ATTN_MERGE=1 TEGEMMA_GEMV_PREFETCH=0
run unfused TEGEMMA_DECODE_FUSED=0 TEGEMMA_DECODE_ATTN_MERGE=0 TEGEMMA_GEMV_PREFETCH=0
python3 - "$out" <<'PY' | tee "$out/summary.txt"
import json, os, sys
out = sys.argv[1]
runs = ["fused", "noprefetch", "unfused"]
rows = {}
for r in runs:
    p = os.path.join(out, r + ".json")
    if not os.path.exists(p):
        continue
    for b in json.load(open(p)).get("benchmarks", []):
        rows.setdefault(b["name"], {})[r] = b.get("decode_tokens_per_second", b.get("tokens_per_second", 0.0))
print("%-70s %10s %10s %10s" % ("benchmark (decode tok/s)", *runs))
for name, v in rows.items():
    print("%-70s %10s %10s %10s" % (name[:70], *("%.1f" % v[r] if r in v else "-" for r in runs)))
PY
