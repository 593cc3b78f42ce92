#!/usr/bin/env python3
"""Writes the small hand-made seed inputs of the fuzz corpora (stdlib only).

    python3 tests/fuzz/make_seeds.py [tests/fuzz/corpus]

ci/fuzz.sh merges new inputs into the corpus and minimises it, so after a fuzz run the seeds may be
replaced by inputs that cover the same code; rerun this to add them back.
"""
import json
import os
import struct
import sys


def st_file(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape, data bytes), laid out in the given order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    f32 = struct.pack("<3f", 1.0, -2.5, 0.125)
    bf16 = struct.pack("<4H", 0x3F80, 0xC020, 0x7F80, 0x7FC1)
    sizes = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
             "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
    every = sorted(((f"t.{d}", d, [2], bytes(range(2 * s))) for d, s in sizes.items()),
                   key=lambda t: -sizes[t[1]])
    return {
        "empty": st_file([]),
        "metadata_only": st_file([], {"format": "pt"}),
        "one_f32": st_file([("w", "F32", [3], f32)], {"format": "pt"}),
        "bf16_matrix": st_file([("model.layers.0.mlp.up_proj.weight", "BF16", [2, 2], bf16)], {"format": "pt"}),
        "mixed": st_file([("a.f32", "F32", [3, 1], f32), ("b.bf16", "BF16", [4], bf16),
                          ("c.e4m3", "F8_E4M3", [1, 1, 3], b"\x38\x40\x7f")]),
        "zero_and_scalar": st_file([("s", "F32", [], f32[:4]), ("z", "BF16", [0, 7], b""),
                                    ("z2", "F16", [5, 0], b"")]),
        "every_dtype": st_file(every),
        "unpadded_unaligned": st_file([("p", "U8", [1], b"\x01"), ("x", "F32", [2], f32[:8])], pad=False),
    }


def config_seeds():
    base = {
        "architectures": ["GemmaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu", "hidden_size": 2048,
        "initializer_range": 0.02, "intermediate_size": 16384, "max_position_embeddings": 8192,
        "model_type": "gemma", "num_attention_heads": 8, "num_hidden_layers": 18, "num_key_value_heads": 1,
        "pad_token_id": 0, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0,
        "torch_dtype": "bfloat16", "transformers_version": "4.38.0.dev0", "use_cache": True, "vocab_size": 256000,
    }
    g7 = dict(base, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28, num_attention_heads=16,
              num_key_value_heads=16, hidden_activation="gelu_pytorch_tanh", eos_token_id=[1, 107])
    tiny = {"model_type": "gemma", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32,
            "max_position_embeddings": 512, "dtype": "float32", "hidden_activation": None}
    g2 = dict(base, model_type="gemma2", query_pre_attn_scalar=256, sliding_window=4096,
              attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    dump = lambda d: (json.dumps(d, indent=2, sort_keys=True) + "\n").encode()
    return {"gemma_2b.json": dump(base), "gemma_7b_it.json": dump(g7), "tiny.json": dump(tiny),
            "empty.json": b"{}", "gemma2.json": dump(g2)}


def args_seeds():
    return {
        "out_only": b"--out\0model.bin",
        "all": b"--model\0/ckpt\0--steps\0100\0--lr=0.5\0--ids\x001,2,3\0--out\0o\0--quiet",
        "help": b"--help",
        "bad_flag_value": b"--quiet=1\0--out=x",
        "ids_bad": b"--ids=1,,2\0--out=x\0--steps\0-3",
    }


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    for target, seeds in (("safetensors", safetensors_seeds()), ("config", config_seeds()), ("args", args_seeds())):
        d = os.path.join(root, target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, "seed_" + name), "wb") as f:
                f.write(data)
    print(f"seeds written under {root}")


if __name__ == "__main__":
    main()
