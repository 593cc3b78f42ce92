#!/usr/bin/env python3
"""Makes the HF fixtures of the reference tests (reference/fixtures/): small random-weight Gemma 1 checkpoints
written by HF transformers, and HF's answers on them, which tests/test_hf_fixtures.cpp checks the LibTorch
reference against on the CPU.

Run (CPU is enough; about a minute):
    python3 -m venv /opt/hfenv && /opt/hfenv/bin/pip install torch transformers==5.17.0 safetensors numpy
    /opt/hfenv/bin/python reference/scripts/make_hf_fixtures.py            # writes reference/fixtures/
On the GPU machine (transformers 5.17 in the system python3), to check that another torch reproduces the
committed fixtures:
    python3 reference/scripts/make_hf_fixtures.py --out /tmp/fx --compare reference/fixtures

Every model directory holds config.json + safetensors as HF's save_pretrained writes them, expected.json (token
ids, scalars, the parameters of every case) and expected.safetensors (float arrays, F32). manifest.json lists
the models, the cases and the package versions that made them.

All HF runs use attn_implementation="eager" (the reference's explicit attention mirrors it), the CPU, one thread
and fixed seeds. The weights are drawn here (not HF's init, whose tiny
random models only repeat their last token): std 1.5/sqrt(fan_in) projections, a 0.5/sqrt(hidden) embedding, and
non-zero RMSNorm weights (HF initialises them to 0, which would hide a missing "1 +"), see init_weights.
"""
import argparse
import json
import math
import os
import platform
import shutil
import sys

import numpy
import safetensors
import safetensors.torch
import torch
import transformers
from transformers import GemmaConfig, GemmaForCausalLM

SEED = 20240521
N_GREEDY = 12
N_BATCH = 10
PAD = 0
BOS = 2

MODELS = [
    # MQA (one kv head) like gemma-2b; F32 file; q width = hidden.
    dict(name="mqa_f32", file_dtype="float32", max_shard_size=None, vocab_size=384, hidden_size=64,
         intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
         rope_theta=10000.0, rms_norm_eps=1e-6),
    # GQA (2 groups) with heads * head_dim = 96 != hidden 48; BF16 file in several shards; non-default rope
    # theta and eps so that neither can be hard-coded.
    dict(name="gqa_bf16_sharded", file_dtype="bfloat16", max_shard_size="40KB", vocab_size=320, hidden_size=48,
         intermediate_size=80, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
         rope_theta=5000.0, rms_norm_eps=1e-5),
    # head_dim 256 (as every released Gemma), MHA like gemma-7b, q width 512 != hidden 64; BF16 file.
    dict(name="hd256_bf16", file_dtype="bfloat16", max_shard_size=None, vocab_size=256, hidden_size=64,
         intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=256,
         rope_theta=10000.0, rms_norm_eps=1e-6),
]


def make_config(spec):
    return GemmaConfig(
        vocab_size=spec["vocab_size"], hidden_size=spec["hidden_size"], intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"], num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"], head_dim=spec["head_dim"],
        hidden_act="gelu_pytorch_tanh", max_position_embeddings=512, rms_norm_eps=spec["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": spec["rope_theta"]},
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=1, tie_word_embeddings=True)


def init_weights(model, seed):
    # Scales chosen so that the tiny models do not just repeat their last input token (which a plain N(0, 0.02)
    # or a dominant embedding gives): the layers' outputs outweigh the embedding in the residual stream, and a
    # final norm of ~(1 + 2) brings the tied lm_head's logits to std ~1.5.
    g = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "lm_head.weight":
                continue  # tied
            if name == "model.norm.weight":
                p.copy_(2.0 + torch.randn(p.shape, generator=g) * 0.3)
            elif "norm" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 / math.sqrt(hidden)))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(p.shape[1])))


def load(path, dtype):
    m = GemmaForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    m.eval()
    act = type(m.model.layers[0].mlp.act_fn).__name__
    assert act in ("GELUTanh", "PytorchGELUTanh"), f"HF picked activation {act}, not the tanh GELU"
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr(), "lm_head is not tied"
    return m


def prompts_for(spec, gen):
    v = spec["vocab_size"]
    lengths = [1, 5, 9, 16]
    return [[BOS] + torch.randint(3, v, (n - 1,), generator=gen).tolist() for n in lengths]


def left_pad(prompts):
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), PAD, dtype=torch.long)
    mask = torch.zeros((len(prompts), L), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.tensor(p)
        mask[i, L - len(p):] = 1
    return ids, mask


def positions(mask):
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


def top2_margins(step_logits):
    # step_logits: tuple over steps of [B, V] fp32 -> [B, steps]
    out = []
    for s in step_logits:
        top = torch.topk(s.float(), 2, dim=-1).values
        out.append((top[:, 0] - top[:, 1]))
    return torch.stack(out, dim=1)


class Recorder:
    def __init__(self):
        self.arrays = {}
        self.json = {}

    def arr(self, key, t):
        self.arrays[key] = t.detach().to(torch.float32).cpu().clone().contiguous()

    def js(self, key, value):
        self.json[key] = value


def taps(model, ids):
    """HF's per-layer inputs/outputs (forward hooks) and final hidden for one forward."""
    rec = {"in": [], "out": []}

    def layer_hook(mod, args, kwargs, out):  # must return None (a value would replace the output)
        rec["in"].append(args[0] if args else kwargs["hidden_states"])
        rec["out"].append(out[0] if isinstance(out, tuple) else out)

    def norm_hook(mod, args, out):
        rec["final"] = out

    hooks = [layer.register_forward_hook(layer_hook, with_kwargs=True) for layer in model.model.layers]
    hooks.append(model.model.norm.register_forward_hook(norm_hook))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    for h in hooks:
        h.remove()
    return rec, logits


def generate(model, ids, mask, **kw):
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, pad_token_id=PAD, return_dict_in_generate=True,
                              **kw)


def make_model(spec, out_dir, index):
    print(f"== {spec['name']}", flush=True)
    path = os.path.join(out_dir, spec["name"])
    if os.path.exists(path):
        shutil.rmtree(path)
    torch.manual_seed(SEED + index)
    cfg = make_config(spec)
    model = GemmaForCausalLM(cfg)
    init_weights(model, SEED + 100 * index)
    save_dtype = torch.float32 if spec["file_dtype"] == "float32" else torch.bfloat16
    model = model.to(save_dtype)
    kw = {"max_shard_size": spec["max_shard_size"]} if spec["max_shard_size"] else {}
    model.save_pretrained(path, **kw)
    # Keep only what a checkpoint needs (config + weights), not generation_config.json.
    for f in os.listdir(path):
        if not (f == "config.json" or f.endswith(".safetensors") or f == "model.safetensors.index.json"):
            os.remove(os.path.join(path, f))

    f32 = load(path, torch.float32)
    bf16 = load(path, torch.bfloat16)
    r = Recorder()
    gen = torch.Generator().manual_seed(SEED + 7 * index)
    prompts = prompts_for(spec, gen)
    r.js("prompts", prompts)

    # 1. Logits of each prompt, FP32 and BF16 (no padding, default position ids).
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = torch.tensor([p])
            r.arr(f"logits_f32/{i}", f32(input_ids=ids).logits[0])
            r.arr(f"logits_bf16/{i}", bf16(input_ids=ids).logits[0])

    # 2. Per-layer taps on the longest prompt.
    ids = torch.tensor([prompts[-1]])
    for tag, m in (("f32", f32), ("bf16", bf16)):
        rec, _ = taps(m, ids)
        for l, (a, b) in enumerate(zip(rec["in"], rec["out"])):
            r.arr(f"taps_{tag}/layer_in/{l}", a[0])
            r.arr(f"taps_{tag}/layer_out/{l}", b[0])
        r.arr(f"taps_{tag}/final_hidden", rec["final"][0])

    # 3. Greedy continuations of each prompt (default EOS 1), with HF's top-2 margin per step.
    for tag, m in (("f32", f32), ("bf16", bf16)):
        rows = []
        for i, p in enumerate(prompts):
            ids = torch.tensor([p])
            out = generate(m, ids, torch.ones_like(ids), do_sample=False, max_new_tokens=N_GREEDY,
                           output_logits=True)
            rows.append({"new_tokens": out.sequences[0, len(p):].tolist(),
                         "margins": top2_margins(out.logits)[0].tolist()})
        r.js(f"greedy_{tag}", rows)

    # 4. A left-padded batch of all prompts: forward with generate()'s position ids, and greedy generation.
    ids, mask = left_pad(prompts)
    r.js("batch/input_ids", ids.tolist())
    r.js("batch/attention_mask", mask.tolist())
    with torch.no_grad():
        r.arr("batch/logits_f32", f32(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits)
        r.arr("batch/logits_bf16", bf16(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits)
    for tag, m in (("f32", f32), ("bf16", bf16)):
        out = generate(m, ids, mask, do_sample=False, max_new_tokens=N_BATCH, output_logits=True)
        r.js(f"batch/greedy_{tag}", {"sequences": out.sequences.tolist(), "margins": top2_margins(out.logits).tolist()})

    # An EOS that the batch actually produces: row 0's 4th new token of the FP32 batch greedy run.
    greedy = r.json["batch/greedy_f32"]["sequences"]
    eos = int(greedy[0][ids.shape[1] + 3])
    r.js("chosen_eos", eos)
    cases = {
        "batch/eos": dict(do_sample=False, max_new_tokens=N_BATCH, eos_token_id=eos),
        "batch/eos_min_rep": dict(do_sample=False, max_new_tokens=N_BATCH, eos_token_id=eos, min_new_tokens=6,
                                  repetition_penalty=1.3),
    }
    for key, kw in cases.items():
        out = generate(f32, ids, mask, output_logits=True, **kw)
        r.js(key, {"params": kw, "sequences": out.sequences.tolist(),
                   "margins": top2_margins(out.logits).tolist()})

    # 5. Seeded sampling on the CPU (torch.multinomial on the default generator): one row, and two padded rows.
    sample_kw = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=N_GREEDY)
    for key, sel in (("sample/single", [2]), ("sample/batch", [1, 3])):
        sids, smask = left_pad([prompts[i] for i in sel])
        torch.manual_seed(1234)
        out = generate(f32, sids, smask, output_scores=True, **sample_kw)
        r.js(key, {"params": dict(sample_kw, seed=1234), "input_ids": sids.tolist(),
                   "attention_mask": smask.tolist(), "sequences": out.sequences.tolist()})
        r.arr(f"{key}/scores0", out.scores[0])  # processed (warped) scores of the first step, -inf filtered

    # 6. Beam search (FP32) on two padded rows.
    bids, bmask = left_pad([prompts[1], prompts[2]])
    r.js("beam/input_ids", bids.tolist())
    r.js("beam/attention_mask", bmask.tolist())
    beam_cases = {
        "beam/a": dict(num_beams=3, length_penalty=0.8, early_stopping=True, num_return_sequences=2,
                       eos_token_id=eos, max_new_tokens=8),
        "beam/b": dict(num_beams=4, length_penalty=1.5, early_stopping="never", num_return_sequences=3,
                       eos_token_id=eos, max_new_tokens=8),
        "beam/c": dict(num_beams=2, length_penalty=1.0, early_stopping=False, num_return_sequences=1,
                       repetition_penalty=1.2, max_new_tokens=8),
    }
    for key, kw in beam_cases.items():
        out = generate(f32, bids, bmask, do_sample=False, output_scores=True, **kw)
        r.js(key, {"params": kw, "sequences": out.sequences.tolist(),
                   "sequences_scores": out.sequences_scores.tolist()})

    # 7. Training: three AdamW steps, two micro-batches each (FP32), and one BF16 step's loss and grad norm.
    train_gen = torch.Generator().manual_seed(SEED + 11 * index)
    micro = []
    for step in range(3):
        step_mbs = []
        for _ in range(2):
            tids = torch.randint(0, spec["vocab_size"], (2, 12), generator=train_gen)
            tids[0, 3] = PAD  # the padding_idx row of the embedding gets no gradient from the lookup
            labels = tids.clone()
            labels[1, 5:8] = -100
            step_mbs.append((tids, labels))
        micro.append(step_mbs)
    tcfg = dict(lr=2e-2, warmup_steps=1, total_steps=6, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1,
                max_grad_norm=1.0, grad_accum_steps=2)
    r.js("train/config", tcfg)
    r.js("train/batches", [[{"input_ids": a.tolist(), "labels": b.tolist()} for a, b in s] for s in micro])

    tm = load(path, torch.float32)
    tm.train()
    decay = [p for n, p in tm.named_parameters() if "norm" not in n]
    no_decay = [p for n, p in tm.named_parameters() if "norm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tcfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=tcfg["lr"], betas=(tcfg["beta1"], tcfg["beta2"]), eps=tcfg["eps"], foreach=False)
    sched = transformers.get_cosine_schedule_with_warmup(opt, tcfg["warmup_steps"], tcfg["total_steps"])
    losses, norms, lrs = [], [], []
    for step_mbs in micro:
        n_items = sum(int((lab[:, 1:] != -100).sum()) for _, lab in step_mbs)
        total = 0.0
        lrs.append(opt.param_groups[0]["lr"])
        for tids, labels in step_mbs:
            loss = tm(input_ids=tids, labels=labels, num_items_in_batch=n_items).loss
            loss.backward()
            total += float(loss.detach())
        norm = torch.nn.utils.clip_grad_norm_(tm.parameters(), tcfg["max_grad_norm"])
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(total)
        norms.append(float(norm))
    tm.eval()
    with torch.no_grad():
        tids, labels = micro[0][0]
        final = float(tm(input_ids=tids, labels=labels).loss)
    r.js("train/f32", {"losses": losses, "grad_norms": norms, "lrs": lrs, "eval_loss_after": final})

    # BF16 model (bf16 weights, activations and gradients, as the reference's BF16 compute copies): first step.
    bm = load(path, torch.bfloat16)
    bm.train()
    step_mbs = micro[0]
    n_items = sum(int((lab[:, 1:] != -100).sum()) for _, lab in step_mbs)
    total = 0.0
    for tids, labels in step_mbs:
        loss = bm(input_ids=tids, labels=labels, num_items_in_batch=n_items).loss
        loss.backward()
        total += float(loss.detach())
    gnorm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in bm.parameters()]))
    r.js("train/bf16", {"loss": total, "grad_norm": float(gnorm)})

    # Write the expectations.
    safetensors.torch.save_file(r.arrays, os.path.join(path, "expected.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(r.json, f, indent=None, separators=(",", ":"))
        f.write("\n")
    files = sorted(os.listdir(path))
    return {
        "spec": spec,
        "files": files,
        "bytes": sum(os.path.getsize(os.path.join(path, f)) for f in files),
        "chosen_eos": eos,
    }


def compare(new_dir, old_dir):
    """Compares freshly made fixtures with committed ones: same weights, FP32 arrays within 1e-4 of the scale,
    BF16 arrays within 5e-2, token lists equal (reported, since a near-tie may flip with another torch).
    Returns the number of hard failures (weights or FP32 arrays)."""
    failures = 0
    for name in sorted(d for d in os.listdir(new_dir) if os.path.isdir(os.path.join(new_dir, d))):
        a_dir, b_dir = os.path.join(new_dir, name), os.path.join(old_dir, name)
        if not os.path.isdir(b_dir):
            print(f"{name}: not in {old_dir}")
            failures += 1
            continue
        for f in sorted(os.listdir(a_dir)):
            if f.startswith("model") and f.endswith(".safetensors"):
                same = open(os.path.join(a_dir, f), "rb").read() == open(os.path.join(b_dir, f), "rb").read()
                if not same:
                    print(f"{name}/{f}: weights differ")
                    failures += 1
        a = safetensors.torch.load_file(os.path.join(a_dir, "expected.safetensors"))
        b = safetensors.torch.load_file(os.path.join(b_dir, "expected.safetensors"))
        for key in sorted(a):
            x, y = a[key], b[key]
            finite = torch.isfinite(y)
            if x.shape != y.shape or not torch.equal(torch.isfinite(x), finite):
                print(f"{name}/{key}: shape or -inf pattern differs")
                failures += 1
                continue
            err = float((x[finite] - y[finite]).abs().max() / y[finite].abs().max().clamp_min(1e-30))
            tol = 5e-2 if "bf16" in key else 1e-4
            if err > tol:
                print(f"{name}/{key}: relative error {err:.2e} > {tol:.0e}")
                failures += "bf16" not in key
        ja = json.load(open(os.path.join(a_dir, "expected.json")))
        jb = json.load(open(os.path.join(b_dir, "expected.json")))
        for key in sorted(ja):
            if "train" in key or "margins" in str(key):
                continue
            va, vb = ja[key], jb[key]
            strip = lambda v: {k: w for k, w in v.items() if k != "margins"} if isinstance(v, dict) else v
            if isinstance(va, list) and va and isinstance(va[0], dict):
                va, vb = [strip(v) for v in va], [strip(v) for v in vb]
            else:
                va, vb = strip(va), strip(vb)
            if va != vb:
                print(f"{name}/{key}: tokens differ (check the margins: a near-tie may flip)")
        for key in ("train/f32",):
            for field in ("losses", "grad_norms"):
                for u, v in zip(ja[key][field], jb[key][field]):
                    if abs(u - v) > 1e-4 * abs(v):
                        print(f"{name}/{key}/{field}: {u} vs {v}")
                        failures += 1
    print(f"compare: {failures} hard failure(s)")
    return failures


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures"), help="output folder")
    ap.add_argument("--compare", metavar="DIR", help="after writing, compare with the fixtures in DIR "
                    "(e.g. reference/fixtures) and exit 1 on a hard difference")
    args = ap.parse_args()
    if transformers.__version__ != "5.17.0":
        print(f"warning: transformers {transformers.__version__}; the committed fixtures were made with 5.17.0",
              file=sys.stderr)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    models = {}
    for i, spec in enumerate(MODELS):
        models[spec["name"]] = make_model(spec, args.out, i)
    manifest = {
        "generator": "reference/scripts/make_hf_fixtures.py",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "safetensors": safetensors.__version__, "numpy": numpy.__version__,
                     "python": platform.python_version()},
        "attn_implementation": "eager",
        "device": "cpu (1 thread)",
        "seed": SEED,
        "cases": {
            "logits_f32/i, logits_bf16/i": "HF logits [T, V] of prompt i (expected.json prompts), FP32 and BF16 model",
            "taps_{f32,bf16}/...": "inputs/outputs of every decoder layer and the final norm output, longest prompt",
            "greedy_{f32,bf16}": f"greedy continuation ({N_GREEDY} new tokens, EOS 1) of each prompt + HF top-2 margins",
            "batch/*": "the prompts left-padded into one batch: logits with position ids cumsum(mask)-1, greedy "
                       "generation, and with a chosen EOS (+ min_new_tokens, repetition penalty)",
            "sample/*": "seeded CPU sampling (temperature 0.7, top-k 20, top-p 0.9) and the first step's warped scores",
            "beam/*": "beam search (num_beams, length_penalty, early_stopping True/never/False, num_return_sequences)",
            "train/*": "three AdamW steps (2 micro-batches each, warmup+cosine, clipping, weight decay off for norms): "
                       "loss, grad norm, lr per step; one BF16 step's loss and grad norm",
        },
        "models": models,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    total = sum(m["bytes"] for m in models.values())
    print(f"wrote {len(models)} models, {total / 1e6:.2f} MB, to {os.path.abspath(args.out)}")
    if args.compare and compare(args.out, args.compare):
        sys.exit(1)


if __name__ == "__main__":
    main()
