#!/usr/bin/env python3
"""The round trip through HF transformers (issue 5): a model that tegemma saved as an HF checkpoint
(`tegemma forward --save DIR`) must load in transformers and give the logits that tegemma computed.

    tegemma forward --config gemma-2b --layers 2 --seed 3 --precision bf16 --tokens "2,651,9;2,17,300,4" \
        --logits all --dump-logits ours.npy --save DIR
    python3 reference/scripts/hf_roundtrip.py --model DIR --tokens "2,651,9;2,17,300,4" --ours ours.npy \
        --out roundtrip.json

ci/hf_roundtrip.sh runs both steps. The verdict follows the project's rule for BF16 logits (parity, the HF
fixture tests): HF's own F32 forward is the truth and HF's own BF16 forward measures the BF16 noise, per prompt:
  rrmse(ours, hf_f32) <= 2 x rrmse(hf_bf16, hf_f32) + 1e-3      (relative RMS error of the logits)
  top-1(ours) == top-1(hf_f32) wherever hf_f32's top-1 / top-2 gap exceeds 4 x max |hf_bf16 - hf_f32| of that row
Loading itself is the first check: transformers must read config.json and the safetensors without a missing or an
unexpected tensor (both are reported by from_pretrained's loading info).
Exit code: 0 pass, 1 a check failed, 2 could not run (bad input, transformers missing).
"""
import argparse
import json
import sys


def parse_tokens(s):
    prompts = [[int(t) for t in p.split(",") if t.strip()] for p in s.split(";")]
    if not prompts or any(not p for p in prompts):
        raise ValueError(f"--tokens: expected ids like 2,651,9;2,5,7 with no empty prompt, got '{s}'")
    return prompts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory written by tegemma (config.json + safetensors)")
    ap.add_argument("--tokens", required=True, help="the prompts given to tegemma forward: 2,651,9;2,5,7")
    ap.add_argument("--ours", required=True, help="tegemma forward --logits all --dump-logits (float32 [T, V], packed)")
    ap.add_argument("--out", help="write the result JSON here")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    a = ap.parse_args()
    try:
        import numpy as np
        import torch
        import transformers
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        print(f"hf_roundtrip: could not run: {e} (needs torch, transformers, numpy)", file=sys.stderr)
        return 2
    try:
        prompts = parse_tokens(a.tokens)
        ours = np.load(a.ours)
    except (ValueError, OSError) as e:
        print(f"hf_roundtrip: could not run: {e}", file=sys.stderr)
        return 2
    total = sum(len(p) for p in prompts)
    if ours.ndim != 2 or ours.shape[0] != total or ours.dtype != np.float32:
        print(f"hf_roundtrip: could not run: {a.ours}: expected float32 [{total}, vocab] (--logits all), got "
              f"{ours.dtype} {list(ours.shape)}", file=sys.stderr)
        return 2
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device

    result = {"model": a.model, "transformers": transformers.__version__, "torch": torch.__version__,
              "device": device, "prompts": [], "checks": []}
    models = {}
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        m, info = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype, attn_implementation="eager",
                                                       output_loading_info=True)
        missing, unexpected = list(info.get("missing_keys", [])), list(info.get("unexpected_keys", []))
        # The tied lm_head is not stored (tie_word_embeddings): HF may list it as missing and tie it.
        missing = [k for k in missing if k != "lm_head.weight"]
        ok = not missing and not unexpected
        result["checks"].append({"check": f"load_{name}", "pass": ok, "missing": missing, "unexpected": unexpected})
        models[name] = m.to(device).eval()
    if ours.shape[1] != models["f32"].config.vocab_size:
        print(f"hf_roundtrip: could not run: {a.ours} has {ours.shape[1]} columns, the model's vocabulary is "
              f"{models['f32'].config.vocab_size}", file=sys.stderr)
        return 2

    row = 0
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = torch.tensor([p], device=device)
            f32 = models["f32"](ids).logits[0].float().cpu().numpy().astype(np.float64)
            b16 = models["bf16"](ids).logits[0].float().cpu().numpy().astype(np.float64)
            mine = ours[row:row + len(p)].astype(np.float64)
            row += len(p)

            def rrmse(x, ref):
                return float(np.sqrt(np.mean((x - ref) ** 2)) / max(np.sqrt(np.mean(ref ** 2)), 1e-30))

            noise, err = rrmse(b16, f32), rrmse(mine, f32)
            limit = 2.0 * noise + 1e-3
            # Top-1 where the F32 margin clears the BF16 noise of that row.
            top2 = np.sort(f32, axis=1)[:, -2:]
            margin = top2[:, 1] - top2[:, 0]
            row_noise = np.max(np.abs(b16 - f32), axis=1)
            clear = margin > 4.0 * row_noise
            agree = np.argmax(mine, axis=1) == np.argmax(f32, axis=1)
            wrong = int(np.sum(clear & ~agree))
            result["prompts"].append({"prompt": i, "tokens": len(p), "rrmse_ours_vs_hf_f32": err,
                                      "rrmse_hf_bf16_vs_hf_f32": noise, "limit": limit,
                                      "max_abs_ours_vs_hf_f32": float(np.max(np.abs(mine - f32))),
                                      "top1_checked": int(np.sum(clear)), "top1_wrong": wrong})
            result["checks"].append({"check": f"prompt{i}_rrmse", "pass": err <= limit, "value": err, "limit": limit})
            result["checks"].append({"check": f"prompt{i}_top1", "pass": wrong == 0, "value": wrong,
                                     "checked": int(np.sum(clear))})
    passed = all(c["pass"] for c in result["checks"])
    result["status"] = "pass" if passed else "fail"
    for c in result["checks"]:
        print(("PASS  " if c["pass"] else "FAIL  ") + json.dumps(c))
    print(f"hf_roundtrip: {result['status'].upper()} ({len(prompts)} prompts, transformers {transformers.__version__})")
    if a.out:
        with open(a.out + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        import os
        os.replace(a.out + ".tmp", a.out)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
