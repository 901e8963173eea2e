"""llama2.c checkpoints as its export.py writes them, from seeded random GQA weights: legacy v0 (a
negative vocab_size means a separate classifier after freq_cis), version 1 (float32, 256-byte header)
and version 2 (int8 groups + float32 scales, Q80), tied and untied. `elk pack` + the C runtime must give
the float64 numpy logits of the values the file holds (Q/K rows in llama2.c's interleaved pairs are
HF's rotate-half rows permuted, so the numpy model runs on the HF layout)."""

import struct

import numpy as np
import pytest

from convert_variants_ref import IDS, assert_logits, base_config, hf_logits, llama2c_header, pack, random_weights, \
    refusal, rel_err

MATS = [("self_attn.q_proj", "q"), ("self_attn.k_proj", "k"), ("self_attn.v_proj", None),
        ("self_attn.o_proj", None), ("mlp.gate_proj", None), ("mlp.down_proj", None), ("mlp.up_proj", None)]


def interleave(w, heads):
    """HF rotate-half rows -> Meta/llama2.c interleaved pairs (the inverse of HF's conversion permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def meta(w, c, name, layer):
    a = w[f"model.layers.{layer}.{name}.weight"]
    if name == "self_attn.q_proj":
        return interleave(a, c["num_attention_heads"])
    if name == "self_attn.k_proj":
        return interleave(a, c["num_key_value_heads"])
    return a


def q80(a, group):
    """export.py quantize_q80: per group of `group` values, scale = max|w| / 127, q = round(w / scale)."""
    g = a.astype(np.float32).reshape(-1, group)
    scale = np.abs(g).max(1) / 127.0
    q = np.round(g / scale[:, None]).astype(np.int8)
    return q, scale.astype(np.float32), (q.astype(np.float32) * scale[:, None]).reshape(a.shape)


def write_v0(path, c, w, shared):
    """llama2.c's legacy_export: 7 int32 (vocab negative when the classifier is separate), then every
    weight in float32: embedding, per-kind per-layer tensors, final norm, freq_cis real/imag, [output]."""
    L, hd, seq = c["num_hidden_layers"], 64 // c["num_attention_heads"], c["max_position_embeddings"]
    ints = (64, c["intermediate_size"], L, c["num_attention_heads"], c["num_key_value_heads"],
            c["vocab_size"] if shared else -c["vocab_size"], seq)
    parts = [struct.pack("<7i", *ints), w["model.embed_tokens.weight"]]
    parts += [w[f"model.layers.{i}.input_layernorm.weight"] for i in range(L)]
    for name, _ in MATS[:4]:
        parts += [meta(w, c, name, i) for i in range(L)]
    parts += [w[f"model.layers.{i}.post_attention_layernorm.weight"] for i in range(L)]
    for name, _ in MATS[4:]:
        parts += [meta(w, c, name, i) for i in range(L)]
    parts.append(w["model.norm.weight"])
    ang = np.outer(np.arange(seq), 1.0 / 10000.0 ** (np.arange(0, hd, 2) / hd))
    parts += [np.cos(ang), np.sin(ang)]
    if not shared:
        parts.append(w["lm_head.weight"])
    write(path, parts)


def write_versioned(path, c, w, version, shared, group=64):
    """export.py version 1 (float32) / version 2 (Q80): header, norms in float32, then embedding and the
    per-kind per-layer matrices [+ output]; returns name -> the values the file holds."""
    L = c["num_hidden_layers"]
    held = dict(w)
    parts = [llama2c_header(c, version, shared, group)]
    parts += [w[f"model.layers.{i}.input_layernorm.weight"] for i in range(L)]
    parts += [w[f"model.layers.{i}.post_attention_layernorm.weight"] for i in range(L)]
    parts.append(w["model.norm.weight"])
    mats = [("model.embed_tokens.weight", w["model.embed_tokens.weight"])]
    for name, _ in MATS:
        mats += [(f"model.layers.{i}.{name}.weight", meta(w, c, name, i)) for i in range(L)]
    if not shared:
        mats.append(("lm_head.weight", w["lm_head.weight"]))
    for hf_name, a in mats:
        if version == 1:
            parts.append(a)
            continue
        q, scale, values = q80(a, group)
        parts += [q, scale]
        if ".q_proj." in hf_name or ".k_proj." in hf_name:  # back to HF rows for the numpy model
            heads = c["num_attention_heads"] if ".q_proj." in hf_name else c["num_key_value_heads"]
            values = values.reshape(heads, -1, 2, 64).swapaxes(1, 2).reshape(a.shape)
        held[hf_name] = values
    write(path, parts)
    return held


def write(path, parts):
    with open(path, "wb") as f:
        for p in parts:
            f.write(p if isinstance(p, bytes) else np.ascontiguousarray(p).astype(
                np.int8 if p.dtype == np.int8 else "<f4").tobytes())


@pytest.mark.parametrize("shared", [True, False])
def test_llama2c_v0_tied_and_negative_vocab_untied(host_build, tmp_path, shared):
    c = base_config(tie_word_embeddings=shared)
    w = random_weights(c, seed=30 + shared)
    write_v0(tmp_path / "m.bin", c, w, shared)
    got = assert_logits(pack(tmp_path / "m.bin", tmp_path / "m.elk"), hf_logits(w, c, IDS))
    if not shared:  # the classifier after freq_cis is what the image uses, not the embedding
        assert rel_err(got, hf_logits(w, dict(c, tie_word_embeddings=True), IDS)) > 0.1


@pytest.mark.parametrize("shared", [True, False])
def test_llama2c_v1_float32(host_build, tmp_path, shared):
    c = base_config(tie_word_embeddings=shared)
    w = random_weights(c, seed=40 + shared)
    held = write_versioned(tmp_path / "m.bin", c, w, 1, shared)
    assert_logits(pack(tmp_path / "m.bin", tmp_path / "m.elk"), hf_logits(held, c, IDS))


@pytest.mark.parametrize("shared,group", [(True, 64), (False, 64), (False, 32)])
def test_llama2c_v2_int8_q80(host_build, tmp_path, shared, group):
    """export.py halves the group from 64 until it divides dim (stories15M, dim 288: 32)."""
    c = base_config(tie_word_embeddings=shared)
    w = random_weights(c, seed=50 + shared)
    held = write_versioned(tmp_path / "m.bin", c, w, 2, shared, group=group)
    want = hf_logits(held, c, IDS)
    assert rel_err(hf_logits(w, c, IDS), want) > 1e-3  # the int8 rounding is visible at this tolerance
    assert_logits(pack(tmp_path / "m.bin", tmp_path / "m.elk"), want)


def test_llama2c_v0_with_the_wrong_classifier_sign_is_one_line(tmp_path):
    """An untied file whose header says shared (vocab positive) is one classifier too long."""
    c = base_config()
    w = random_weights(c)
    write_v0(tmp_path / "m.bin", c, w, shared=False)
    raw = bytearray((tmp_path / "m.bin").read_bytes())
    raw[20:24] = struct.pack("<i", 512)
    (tmp_path / "m.bin").write_bytes(bytes(raw))
    line = refusal(tmp_path / "m.bin", tmp_path)
    assert "legacy v0, shared classifier" in line and "truncated or not this format" in line, line


def test_llama2c_version_3_is_one_line(tmp_path):
    c = base_config()
    (tmp_path / "m.bin").write_bytes(llama2c_header(c, 3, True) + b"\0" * 4096)
    line = refusal(tmp_path / "m.bin", tmp_path)
    assert "version 3 is not supported (0, 1, 2 are)" in line, line
