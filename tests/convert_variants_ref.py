"""Helpers for tests/test_convert_variants_*.py: seeded random Llama weights in Hugging Face naming, a
float64 numpy Llama forward pass written from the model's definition (not from elk's converter or
elk.reference), writers for HF folders / GGUF files / llama2.c checkpoints laid out the way
transformers, llama.cpp's convert_hf_to_gguf.py and llama2.c's export.py lay them out, and `elk pack`
plus the C runtime's logits for the result. Not here: tokenizers (tok512.bin is borrowed as is)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np

from conftest import ROOT, fixture_path

TOK = fixture_path("tok512.bin")
VOCAB = 512
IDS = [1, 403, 407, 261, 378, 9, 30, 100, 7, 311, 2, 45]
REL_TOL = 1e-4  # max |elk f32 image - numpy float64| over max |logit|; measured ~1e-6


def base_config(**changes) -> dict:
    """config.json of a small GQA Llama as transformers 4.4x writes it (float32 weights)."""
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
         "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": VOCAB, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
         "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32", "attention_bias": False,
         "mlp_bias": False, "bos_token_id": 1, "eos_token_id": 2}
    for k, v in changes.items():
        if v is KeyError:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def head_dim(c: dict) -> int:
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def random_weights(c: dict, seed: int = 0, std: float = 0.25) -> dict:
    """HF name -> float32 array, q/k rows in HF's rotate-half order (what a trained HF model holds)."""
    rng = np.random.default_rng(seed)
    d, f, hd = c["hidden_size"], c["intermediate_size"], head_dim(c)
    nh, nkv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    w = {"model.embed_tokens.weight": rng.normal(0, 1.0, (c["vocab_size"], d)),
         "model.norm.weight": 1 + rng.normal(0, 0.1, d)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + rng.normal(0, 0.1, d)
        w[p + "post_attention_layernorm.weight"] = 1 + rng.normal(0, 0.1, d)
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, std, (nh * hd, d))
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, std, (nkv * hd, d))
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, std, (nkv * hd, d))
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, std, (d, nh * hd))
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, std, (f, d))
        w[p + "mlp.up_proj.weight"] = rng.normal(0, std, (f, d))
        w[p + "mlp.down_proj.weight"] = rng.normal(0, std, (d, f))
    if not c.get("tie_word_embeddings"):
        w["lm_head.weight"] = rng.normal(0, std, (c["vocab_size"], d))
    return {k: v.astype(np.float32) for k, v in w.items()}


def inv_freq(c: dict) -> np.ndarray:
    """RoPE inverse frequencies as transformers computes them for rope_scaling (4.x) or rope_parameters (5.x)
    None/default/linear/llama3."""
    hd = head_dim(c)
    rs = c.get("rope_parameters") or c.get("rope_scaling") or {}  # transformers 5 / 4 spelling
    theta = rs.get("rope_theta", c.get("rope_theta", 10000.0))
    base = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "default":
        return base
    if kind == "linear":
        return base / rs["factor"]
    assert kind == "llama3", kind
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    wavelen = 2 * np.pi / base
    scaled = np.where(wavelen > old / low, base / factor, base)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return np.where(medium, smoothed, scaled)


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def hf_logits(w: dict, c: dict, ids) -> np.ndarray:
    """LlamaForCausalLM's forward pass in float64 on HF-named weights: (len(ids), vocab) logits."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    T, hd, eps = len(ids), head_dim(c), c["rms_norm_eps"]
    nh = c["num_attention_heads"]
    nkv = c.get("num_key_value_heads") or nh
    ang = np.arange(T)[:, None] * inv_freq(c)[None, :]  # (T, hd/2)
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))
    x = w["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd).transpose(1, 0, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = np.repeat(k, nh // nkv, 0), np.repeat(v, nh // nkv, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v  # (nh, T, hd)
        x = x + a.transpose(1, 0, 2).reshape(T, nh * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = _rms(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def bf16_bits(a) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (torch's conversion), as uint16."""
    b = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_values(a) -> np.ndarray:
    return (bf16_bits(a).astype(np.uint32) << 16).view(np.float32)


def save_safetensors(path, tensors: dict, dtype: str = "F32") -> None:
    """A .safetensors file as torch's save_file writes it (header JSON padded with spaces to 8 bytes,
    tensors in name order); dtype F32, F16 or BF16 for every tensor."""
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    header, blobs, at = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        a = tensors[name]
        raw = {"F32": lambda: a.astype("<f4"), "F16": lambda: a.astype("<f2"),
               "BF16": lambda: bf16_bits(a)}[dtype]().tobytes()
        assert len(raw) == a.size * size
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def write_hf_folder(folder, c: dict, w: dict, dtype: str = "F32", shards: int = 1) -> None:
    """config.json + model.safetensors, or model-0000i-of-0000n.safetensors + index (weight_map)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(c, indent=2))
    if shards == 1:
        save_safetensors(folder / "model.safetensors", w, dtype)
        return
    names, wmap = sorted(w), {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: w[n] for n in names[s::shards]}
        save_safetensors(folder / fname, part, dtype)
        wmap.update({n: fname for n in part})
    index = {"metadata": {"total_size": sum(a.nbytes for a in w.values())}, "weight_map": wmap}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def elk_cli(*args):
    return subprocess.run([sys.executable, "-m", "elk", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def pack(src, out, *extra, tokenizer=True):
    """`elk pack src -o out --quant f32 [--tokenizer tok512.bin]`; asserts success."""
    args = ["pack", src, "-o", out, "--quant", "f32", "--quiet", *extra]
    if tokenizer:
        args += ["--tokenizer", TOK]
    r = elk_cli(*args)
    assert r.returncode == 0, r.stderr
    return out


def refusal(src, tmp_path, *extra, tokenizer=True) -> str:
    """stderr of an `elk pack` that must fail with one `elk: error:` line and exit 2."""
    args = ["pack", src, "-o", tmp_path / "refused.elk", "--quiet", *extra]
    if tokenizer:
        args += ["--tokenizer", TOK]
    r = elk_cli(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("elk: error: "), r.stderr
    assert not (tmp_path / "refused.elk").exists()
    return lines[0]


def runtime_logits(image, ids=IDS) -> np.ndarray:
    import elk

    with elk.load(image) as m:
        return np.asarray(m.logits(ids), dtype=np.float64)


def rel_err(got, want) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def assert_logits(image, want, ids=IDS, tol=REL_TOL) -> np.ndarray:
    got = runtime_logits(image, ids)
    assert got.shape == want.shape
    err = rel_err(got, want)
    assert err < tol, f"max |elk - numpy| = {err:.2e} x max|logit|"
    assert np.array_equal(got.argmax(1), want.argmax(1))
    return got


def llama2c_header(c: dict, version: int, shared: bool, group: int = 0) -> bytes:
    """export.py's 256-byte header: magic "ak42", version, 7 ints, shared flag (+ group size, v2)."""
    ints = (c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["num_attention_heads"],
            c.get("num_key_value_heads") or c["num_attention_heads"], c["vocab_size"],
            c["max_position_embeddings"])
    head = struct.pack("<Ii7iB", 0x616B3432, version, *ints, int(shared))
    if version == 2:
        head += struct.pack("<i", group)
    return head + b"\0" * (256 - len(head))
