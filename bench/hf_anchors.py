#!/usr/bin/env python3
"""HF transformers anchors for the end-to-end benchmarks: runs HF's GemmaForCausalLM (BF16, SDPA attention,
static cache for generation) on the workloads and shapes of bench/bench_reference.cpp and writes Google
Benchmark JSON with the same names (`hf` in place of `reference`) and the same counters, so that reports show
impl / reference / HF side by side.

Random weights from a config (no download, no network): HF's own init, run on the device. Workloads:
  e2e/ceiling/hf/bf16/8192x8192x8192            torch.mm BF16 (the gemm_roofline_frac ceiling of this run)
  e2e/train_step/hf/bf16/gemma-2b/B4xS2048       FP32 master weights, autocast BF16 forward + loss, backward,
                                                 clip_grad_norm_(1.0), fused AdamW (lr 3e-4, no weight decay)
  e2e/prefill/hf/bf16/<p>/B<b>xS<s>               BF16 model, inference_mode, use_cache=False, logits_to_keep=1
  e2e/decode/hf/bf16/<p>/B<b>/P<p>+N<n>           generate(): greedy, cache_implementation="static",
                                                 min_new_tokens = max_new_tokens = N (no early EOS)
With a static cache, HF's generate() compiles the decode step with torch.compile on CUDA unless
--compile off (counter torch_compile). Compilation happens in the untimed warm-up.

FLOP and byte formulas: the header of bench/bench_reference.cpp (the same functions are below).

Usage (the H200's python3 has torch 2.11 + transformers 5.17):
  python3 bench/hf_anchors.py --out OUT/hf_anchors.json [--quick] [--filter REGEX] [--compile auto|off]
CPU smoke test of this script (tiny shapes, any machine with torch + transformers):
  python3 bench/hf_anchors.py --tiny --device cpu --out /tmp/hf_tiny.json
"""

import argparse
import datetime
import gc
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import time
import traceback

import torch
import transformers
from transformers import GemmaConfig, GemmaForCausalLM

HBM_BYTES_PER_SECOND = 4.1e12  # bench/common/bench_util.h kHbmBytesPerSecond
DOC_BF16_GEMM_FLOPS = 804e12   # bench/common/bench_util.h kDocBf16GemmFlops (used if the ceiling is filtered out)
GIB = 1024.0 ** 3

PRESETS = {  # common/gemma_config.cpp GemmaConfig::preset
    "gemma-2b": dict(vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                     num_attention_heads=8, num_key_value_heads=1, head_dim=256, max_position_embeddings=8192),
    "gemma-7b": dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                     num_attention_heads=16, num_key_value_heads=16, head_dim=256, max_position_embeddings=8192),
    # --tiny: the project's "tiny" preset (CPU smoke test of this script)
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=1, head_dim=32, max_position_embeddings=512),
}

# (kind, preset, batch, seqlen or prompt, new tokens, iterations, quick iterations or 0 = not in --quick)
# The same list, order and iteration counts as bench_reference.cpp.
WORKLOADS = [
    ("train", "gemma-2b", 4, 2048, 0, 6, 3),
    ("prefill", "gemma-2b", 8, 2048, 0, 12, 5),
    ("decode", "gemma-2b", 1, 128, 256, 2, 1),
    ("decode", "gemma-2b", 64, 128, 256, 2, 0),
    ("prefill", "gemma-7b", 4, 2048, 0, 6, 3),
    ("decode", "gemma-7b", 1, 128, 256, 1, 0),
    ("decode", "gemma-7b", 64, 20, 492, 1, 0),  # the TE tutorial's generation benchmark
]
TINY_WORKLOADS = [
    ("train", "tiny", 2, 32, 0, 3, 3),
    ("prefill", "tiny", 2, 32, 0, 3, 3),
    ("decode", "tiny", 1, 8, 8, 2, 2),
    ("decode", "tiny", 3, 5, 7, 1, 1),
]


def workload_name(kind, preset, b, s, n):
    if kind == "train":
        return f"e2e/train_step/hf/bf16/{preset}/B{b}xS{s}"
    if kind == "prefill":
        return f"e2e/prefill/hf/bf16/{preset}/B{b}xS{s}"
    return f"e2e/decode/hf/bf16/{preset}/B{b}/P{s}+N{n}"


# ---- FLOP and byte model (bench_reference.cpp's header) -------------------------------------------------------
def n_lin(c):
    d, f = c["hidden_size"], c["intermediate_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    return c["num_hidden_layers"] * (d * (q + 2 * kv) + q * d + 3 * d * f)


def n_head(c):
    return c["vocab_size"] * c["hidden_size"]


def attention_flops(c, batch, pairs):
    return c["num_hidden_layers"] * 4.0 * batch * c["num_attention_heads"] * c["head_dim"] * pairs


def causal_pairs(s):
    return s * (s + 1) / 2


def model_flops(c, kind, b, s, n):
    if kind == "train":
        return 6.0 * (n_lin(c) + n_head(c)) * b * s + 3.0 * attention_flops(c, b, causal_pairs(s))
    if kind == "prefill":
        return 2.0 * n_lin(c) * b * s + 2.0 * n_head(c) * b + attention_flops(c, b, causal_pairs(s))
    decode_pairs = (n - 1) * s + n * (n - 1) / 2
    return (2.0 * n_lin(c) * b * (s + n - 1) + 2.0 * n_head(c) * b * n +
            attention_flops(c, b, causal_pairs(s) + decode_pairs))


def decode_bytes(c, b, s, n):
    norms = (2 * c["num_hidden_layers"] + 1) * c["hidden_size"]
    weights = 2.0 * (n_lin(c) + n_head(c) + norms)
    kv_per_slot = c["num_hidden_layers"] * 2.0 * b * c["num_key_value_heads"] * c["head_dim"] * 2.0
    return n * weights + kv_per_slot * ((n - 1) * s + n * (n - 1) / 2)


# ---- Helpers -----------------------------------------------------------------------------------------------------
def random_ids(vocab, rows, cols, device):
    """Token ids in [3, V): the same LCG stream as bench_reference.cpp's random_ids."""
    out, x, mask = [], 1, (1 << 64) - 1
    for _ in range(rows * cols):
        x = (x * 6364136223846793005 + 1442695040888963407) & mask
        out.append(3 + (x >> 33) % (vocab - 3))
    return torch.tensor(out, dtype=torch.long).view(rows, cols).to(device)


def make_model(preset, dtype, device):
    cfg = GemmaConfig(**PRESETS[preset], hidden_activation="gelu_pytorch_tanh", pad_token_id=0, bos_token_id=2,
                      eos_token_id=1)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(7)
    with torch.device(device):  # HF's _init_weights runs on the device (seconds for 7B, not minutes)
        model = GemmaForCausalLM._from_config(cfg, dtype=dtype)
    assert model.config._attn_implementation == "sdpa" and next(model.parameters()).dtype == dtype
    return model, PRESETS[preset]


class Timer:
    """Per-iteration wall time: CUDA events on the current stream (as CudaEventTimer), or perf_counter on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.seconds = []

    def __enter__(self):
        if self.cuda:
            self.start, self.stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.stop.record()
            self.stop.synchronize()
            self.seconds.append(self.start.elapsed_time(self.stop) / 1e3)
        else:
            self.seconds.append(time.perf_counter() - self.t0)
        return False


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory_counters(device):
    if device.type != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info(device)
    return {"peak_allocated_gib": torch.cuda.max_memory_allocated(device) / GIB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / GIB,
            "device_used_gib": (total - free) / GIB}


def release(device):
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()  # compiled decode steps of the previous model (and their CUDA graph pools)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


# ---- Workloads: each returns (list of per-iteration seconds, extra counters) ---------------------------------------
def run_train(preset, b, s, iters, device):
    dtype = torch.float32  # FP32 master weights; autocast computes in BF16
    model, c = make_model(preset, dtype, device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0, fused=device.type == "cuda")
    ids = random_ids(c["vocab_size"], b, s, device)
    last_loss = []

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        last_loss[:] = [loss.detach()]

    for _ in range(2):
        step()
    sync(device)
    reset_peak(device)
    timer = Timer(device)
    for _ in range(iters):
        with timer:
            step()
    extra = {"loss": float(last_loss[0]), "fused_adamw": 1 if device.type == "cuda" else 0}
    extra.update(memory_counters(device))
    del model, opt
    return timer.seconds, extra


def run_prefill(preset, b, s, iters, device):
    model, c = make_model(preset, torch.bfloat16, device)
    model.eval()
    ids = random_ids(c["vocab_size"], b, s, device)
    timer = Timer(device)
    with torch.inference_mode():
        for _ in range(2):
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
        sync(device)
        reset_peak(device)
        for _ in range(iters):
            with timer:
                model(input_ids=ids, use_cache=False, logits_to_keep=1)
    extra = memory_counters(device)
    del model
    return timer.seconds, extra


def run_decode(preset, b, s, n, iters, device, compile_mode):
    model, c = make_model(preset, torch.bfloat16, device)
    model.eval()
    ids = random_ids(c["vocab_size"], b, s, device)
    mask = torch.ones_like(ids)
    kwargs = dict(attention_mask=mask, do_sample=False, cache_implementation="static", pad_token_id=0,
                  disable_compile=compile_mode == "off")
    timer = Timer(device)
    with torch.inference_mode():
        # Warm-up at the full length: the static cache's shape is part of what torch.compile specialises on.
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kwargs)
        assert out.shape == (b, s + n), f"generate returned {tuple(out.shape)}, expected {(b, s + n)}"
        sync(device)
        reset_peak(device)
        for _ in range(iters):
            with timer:
                model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kwargs)
    extra = {"torch_compile": 0 if compile_mode == "off" or device.type != "cuda" else 1}
    extra.update(memory_counters(device))
    del model
    return timer.seconds, extra


def run_ceiling(n, iters, device):
    dtype = torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    bm = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    repeats = 10
    for _ in range(3):
        torch.mm(a, bm, out=out)
    timer = Timer(device)
    for _ in range(iters):
        with timer:
            for _ in range(repeats):
                torch.mm(a, bm, out=out)
    return [t / repeats for t in timer.seconds], {}


# ---- Google Benchmark JSON ----------------------------------------------------------------------------------------
def entry(name, iters, seconds, cpu_seconds, family_index, counters):
    per_iter = sum(seconds) / len(seconds)
    e = {"name": name, "family_index": family_index, "per_family_instance_index": 0, "run_name": name,
         "run_type": "iteration", "repetitions": 1, "repetition_index": 0, "threads": 1, "iterations": iters,
         "real_time": per_iter * 1e3, "cpu_time": cpu_seconds / iters * 1e3, "time_unit": "ms"}
    e.update(counters)
    return e


def error_entry(name, family_index, message):
    return {"name": name, "family_index": family_index, "per_family_instance_index": 0, "run_name": name,
            "run_type": "iteration", "repetitions": 1, "repetition_index": 0, "threads": 1,
            "error_occurred": True, "error_message": message}


def rates(per_iter_seconds, flops, bytes_, tokens, ceiling):
    """The counters bench_util's set_tokens/set_roofline produce (Google Benchmark writes rates per second)."""
    c = {"tokens_per_second": tokens / per_iter_seconds}
    if bytes_ > 0:
        c["bytes_per_second"] = bytes_ / per_iter_seconds
        c["hbm_roofline_frac"] = bytes_ / per_iter_seconds / HBM_BYTES_PER_SECOND
    if flops > 0:
        c["flops"] = flops / per_iter_seconds
        c["gemm_roofline_frac"] = flops / per_iter_seconds / ceiling
    return c


def sm_clock_mhz():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else "-1"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "-1"


def commit():
    """TEGEMMA_COMMIT, else the .commit of a ci/snapshot.sh tree (inside another checkout, git would name the
    outer one), else git."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.environ.get("TEGEMMA_COMMIT"):
        return os.environ["TEGEMMA_COMMIT"]
    try:
        with open(os.path.join(root, ".commit")) as f:
            return f.read().strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def context(device):
    ctx = {
        "date": datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "host_name": socket.gethostname(),
        "executable": os.path.abspath(__file__),
        "num_cpus": os.cpu_count() or 0,
        "mhz_per_cpu": 0,
        "cpu_scaling_enabled": False,
        "caches": [],
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else [],
        "library_build_type": "release",
        "json_schema_version": 1,
        "anchor": "hf_transformers",
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "torch_cuda": str(torch.version.cuda),
        "tegemma_commit": commit(),
        "hbm_roofline_bytes_per_second": "%f" % HBM_BYTES_PER_SECOND,
        "device": device.type,
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        ctx.update({"gpu": p.name, "tegemma_gpu": p.name, "gpu_cc": "%d.%d" % (p.major, p.minor),
                    "gpu_sm_count": str(p.multi_processor_count), "cudnn": str(torch.backends.cudnn.version()),
                    "sm_clock_mhz_before": sm_clock_mhz()})
    return ctx


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="Google Benchmark JSON output (default: stdout)")
    ap.add_argument("--quick", action="store_true", help="gemma-2b train/prefill/decode B1 and gemma-7b prefill, "
                    "fewer iterations (names and counters unchanged)")
    ap.add_argument("--filter", default="", help="regex on the benchmark names (as --benchmark_filter)")
    ap.add_argument("--compile", choices=["auto", "off"], default="auto",
                    help="auto: HF's default (torch.compile of the static-cache decode step on CUDA); off: eager")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (a CPU smoke test of this script)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("hf_anchors: no CUDA device visible to torch", file=sys.stderr)
        return 2
    flt = re.compile(args.filter) if args.filter else None
    ctx = context(device)
    benchmarks = []
    ceiling = DOC_BF16_GEMM_FLOPS
    plan = []
    n = 256 if args.tiny else 8192
    plan.append(("ceiling", None, n, n, n, 3 if args.tiny else 20, 3 if args.tiny else 10))
    for w in TINY_WORKLOADS if args.tiny else WORKLOADS:
        if args.quick and w[6] == 0:
            continue
        plan.append(w)

    for family, (kind, preset, b, s, n_new, iters, quick_iters) in enumerate(plan):
        iters = quick_iters if args.quick else iters
        base = (f"e2e/ceiling/hf/bf16/{b}x{s}x{n_new}" if kind == "ceiling" else workload_name(kind, preset, b, s, n_new))
        name = f"{base}/iterations:{iters}/manual_time"
        if flt and not flt.search(name):
            continue
        print(f"hf_anchors: {name}", file=sys.stderr, flush=True)
        cpu0 = time.process_time()
        try:
            if kind == "ceiling":
                secs, extra = run_ceiling(b, iters, device)
            elif kind == "train":
                secs, extra = run_train(preset, b, s, iters, device)
            elif kind == "prefill":
                secs, extra = run_prefill(preset, b, s, iters, device)
            else:
                try:
                    secs, extra = run_decode(preset, b, s, n_new, iters, device, args.compile)
                except Exception as e:  # noqa: BLE001 -- torch.compile unusable here: measure HF eager instead
                    if args.compile == "off" or device.type != "cuda":
                        raise
                    traceback.print_exc()
                    print("hf_anchors: torch.compile failed; measuring with --compile off", file=sys.stderr)
                    release(device)
                    secs, extra = run_decode(preset, b, s, n_new, iters, device, "off")
                    extra["label"] = f"torch.compile failed ({type(e).__name__}); eager static cache"
        except Exception as e:  # noqa: BLE001 -- reported like a benchmark's SkipWithError, the run goes on
            traceback.print_exc()
            benchmarks.append(error_entry(name, family, f"{type(e).__name__}: {e}"[:500]))
            release(device)
            continue
        cpu_seconds = time.process_time() - cpu0
        per_iter = sum(secs) / len(secs)
        if kind == "ceiling":
            flops = 2.0 * b * s * n_new
            ceiling = flops / per_iter
            counters = rates(per_iter, flops, 0.0, 0.0, ceiling)
            del counters["tokens_per_second"]
        else:
            c = PRESETS[preset]
            flops = model_flops(c, kind, b, s, n_new)
            bytes_ = decode_bytes(c, b, s, n_new) if kind == "decode" else 0.0
            tokens = b * (n_new if kind == "decode" else s)
            counters = rates(per_iter, flops, bytes_, tokens, ceiling)
            counters["sdpa"] = 1
        counters.update(extra)
        benchmarks.append(entry(name, iters, secs, cpu_seconds, family, counters))
        release(device)
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in counters.items()}
        print(f"  {per_iter * 1e3:.2f} ms/iter  {shown}", file=sys.stderr, flush=True)

    if device.type == "cuda":
        ctx["sm_clock_mhz_after"] = sm_clock_mhz()
    ctx["bf16_gemm_ceiling_flops"] = "%f" % ceiling
    text = json.dumps({"context": ctx, "benchmarks": benchmarks}, indent=2)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, args.out)
    else:
        print(text)
    return 1 if any(b.get("error_occurred") for b in benchmarks) else 0


if __name__ == "__main__":
    sys.exit(main())
