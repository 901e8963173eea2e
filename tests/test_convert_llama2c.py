"""llama2.c checkpoints: the legacy v0 file, export.py's version 1 (float32) and version 2 (int8 groups)
files, written here from the stories260K weights in each layout, all read into the same model."""

import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import fixture_path
from elk.convert import llama2c
from elk.errors import FormatError

ROLES = ("WQ", "WK", "WV", "WO", "W1", "W2", "W3")


@pytest.fixture(scope="module")
def v0():
    return llama2c.read(fixture_path("stories260K.bin"))


def params(m, vocab_sign=1):
    c = m.config
    return (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, vocab_sign * c.vocab_size, c.seq_len)


def f32(a):
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def layers(m, role):
    return [m.get(role, i) for i in range(m.config.n_layers)]


def write_v1(path, m, output=None):
    head = struct.pack("<Ii7iB", 0x616B3432, 1, *params(m), int(output is None))
    parts = [head.ljust(256, b"\0")]
    parts += [f32(w) for w in layers(m, "ATTN_NORM") + layers(m, "FFN_NORM")]
    parts += [f32(m.get("OUTPUT_NORM")), f32(m.get("TOK_EMBD"))]
    for role in ROLES:
        parts += [f32(w) for w in layers(m, role)]
    if output is not None:
        parts.append(f32(output))
    path.write_bytes(b"".join(parts))


def q80(w, group):
    """export.py's quantize_q80: per group scale = max|w| / 127, q = round(w / scale)."""
    g = w.reshape(-1, group).astype(np.float32)
    scale = np.abs(g).max(axis=1) / 127.0
    q = np.round(g / scale[:, None]).astype(np.int8)
    return q.tobytes() + f32(scale), (q.astype(np.float32) * scale[:, None]).reshape(w.shape)


def write_v2(path, m, group):
    head = struct.pack("<Ii7iBi", 0x616B3432, 2, *params(m), 1, group)
    parts = [head.ljust(256, b"\0")]
    parts += [f32(w) for w in layers(m, "ATTN_NORM") + layers(m, "FFN_NORM")]
    parts.append(f32(m.get("OUTPUT_NORM")))
    expect = {}
    raw, expect[("TOK_EMBD", 0)] = q80(m.get("TOK_EMBD"), group)
    parts.append(raw)
    for role in ROLES:
        for i, w in enumerate(layers(m, role)):
            raw, expect[(role, i)] = q80(w, group)
            parts.append(raw)
    path.write_bytes(b"".join(parts))
    return expect


def test_v0_reads_stories260k_config_and_tied_output(v0):
    c = v0.config
    assert (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len) == \
        (64, 172, 5, 8, 4, 512, 512)
    assert c.tied_output and c.rope_theta == 10000.0 and c.norm_eps == 1e-5 and c.head_dim == 8
    assert ("OUTPUT", 0) not in v0.tensors
    raw = fixture_path("stories260K.bin").read_bytes()
    # token_embedding starts right after the 28-byte header; rms_att right after it
    first = np.frombuffer(raw, "<f4", count=64, offset=28)
    assert np.array_equal(v0.get("TOK_EMBD")[0], first)
    assert np.array_equal(v0.get("ATTN_NORM", 0), np.frombuffer(raw, "<f4", 64, 28 + 4 * 512 * 64))
    assert v0.get("WK", 4).shape == (32, 64) and v0.get("W2", 0).shape == (64, 172)


def test_v0_unshared_classifier_is_read_after_freq_cis(v0, tmp_path):
    raw = bytearray(fixture_path("stories260K.bin").read_bytes())
    struct.pack_into("<i", raw, 20, -512)
    wcls = np.arange(512 * 64, dtype=np.float32).reshape(512, 64) / 1000
    p = tmp_path / "unshared.bin"
    p.write_bytes(bytes(raw) + f32(wcls))
    m = llama2c.read(p)
    assert not m.config.tied_output and np.array_equal(m.get("OUTPUT"), wcls)


def test_v1_float32_gives_the_same_tensors(v0, tmp_path):
    p = tmp_path / "v1.bin"
    write_v1(p, v0)
    m = llama2c.read(p)
    assert m.config == v0.config and m.source.startswith("llama2.c v1")
    for key in v0.config.tensor_keys():
        assert np.array_equal(m.get(*key), v0.get(*key)), key


def test_v1_separate_classifier(v0, tmp_path):
    p = tmp_path / "v1u.bin"
    out = v0.get("TOK_EMBD")[::-1]
    write_v1(p, v0, output=out)
    m = llama2c.read(p)
    assert not m.config.tied_output and np.array_equal(m.get("OUTPUT"), out)


def test_v2_int8_groups_dequantize_to_q_times_scale(v0, tmp_path):
    p = tmp_path / "v2.bin"
    expect = write_v2(p, v0, group=32)
    m = llama2c.read(p)
    assert "int8, group 32" in m.source and m.config.tied_output
    for key, want in expect.items():
        np.testing.assert_allclose(m.get(*key), want, rtol=1e-6, atol=1e-9)
    assert np.array_equal(m.get("FFN_NORM", 2), v0.get("FFN_NORM", 2))
    np.testing.assert_allclose(m.get("WQ", 1), v0.get("WQ", 1), atol=np.abs(v0.get("WQ", 1)).max() / 127)


@pytest.mark.parametrize("cut", [-4, -1000, 1000])
def test_size_mismatch_is_a_clear_format_error(tmp_path, cut):
    raw = fixture_path("stories260K.bin").read_bytes()
    p = tmp_path / "bad.bin"
    p.write_bytes(raw[:cut] if cut < 0 else raw + bytes(cut))
    with pytest.raises(FormatError, match=r"file is \d+ bytes, but its config \(legacy v0, shared classifier\) "
                                          r"needs 1056540 bytes"):
        llama2c.read(p)


@pytest.mark.parametrize("ints, msg", [
    ((64, 172, 5, 8, 3, 512, 512), "not a multiple of n_kv_heads"),
    ((64, 172, 0, 8, 4, 512, 512), "n_layers = 0"),
    ((1 << 30, 172, 5, 8, 4, 512, 512), "dim = 1073741824"),
    ((64, 172, 5, 7, 7, 512, 512), "not a multiple of n_heads"),
])
def test_absurd_header_is_rejected(tmp_path, ints, msg):
    p = tmp_path / "h.bin"
    p.write_bytes(struct.pack("<7i", *ints) + bytes(4096))
    with pytest.raises(FormatError, match=msg):
        llama2c.read(p)


def test_unknown_version_and_tiny_file(tmp_path):
    p = tmp_path / "v9.bin"
    p.write_bytes(struct.pack("<Ii", 0x616B3432, 9).ljust(300, b"\0"))
    with pytest.raises(FormatError, match="version 9 is not supported"):
        llama2c.read(p)
    p.write_bytes(b"abc")
    with pytest.raises(FormatError, match="too short"):
        llama2c.read(p)


def test_cli_pack_without_tokenizer_says_so(tmp_path):
    r = subprocess.run([sys.executable, "-m", "elk", "pack", str(fixture_path("stories260K.bin")), "-o",
                        str(tmp_path / "x.elk")], capture_output=True, text=True)
    assert r.returncode == 2 and "pass --tokenizer" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.elk").exists()
