"""Reader for llama2.c checkpoints: the legacy (version 0) float32 file, and export.py's versioned
files (magic "ak42": version 1 float32, version 2 int8 with per-group float32 scales).

llama2.c stores linear weights as PyTorch does, (out, in) row-major, and applies RoPE to consecutive
pairs, which is already the image's convention: tensors pass through unchanged.
Not here: tokenizers (a llama2.c checkpoint has none; elk.tokenizer.load reads tok512.bin).
"""

from __future__ import annotations

import pathlib
import struct

import numpy as np

from elk.convert import Config, Model, Tensor
from elk.errors import FormatError

MAGIC = 0x616B3432  # "ak42" read as a little-endian uint32
VERSIONED_HEADER = 256  # bytes, versions 1 and 2
LEGACY_HEADER = 28  # 7 x int32

# Per-layer weights after the norms, in export order (v1/v2 and, interleaved with norms, v0).
_MATS = ("WQ", "WK", "WV", "WO", "W1", "W2", "W3")


def read(path, tokenizer=None) -> Model:
    """Read a llama2.c checkpoint; `tokenizer` is a path for elk.tokenizer.load (or a Vocab)."""
    path = pathlib.Path(path)
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if data.size < LEGACY_HEADER:
        raise FormatError(f"{path}: {data.size} bytes is too short for a llama2.c checkpoint")
    magic, version = struct.unpack_from("<Ii", data[:8].tobytes())
    if magic == MAGIC:
        if data.size < VERSIONED_HEADER:
            raise FormatError(f"{path}: truncated llama2.c v{version} header")
        if version == 1:
            model = _read_v1(path, data)
        elif version == 2:
            model = _read_v2(path, data)
        else:
            raise FormatError(f"{path}: llama2.c checkpoint version {version} is not supported (0, 1, 2 are)")
    else:
        model = _read_v0(path, data)
    model.name = path.stem
    model.vocab = _vocab(tokenizer)
    model.validate()
    return model


def _vocab(tokenizer):
    if tokenizer is None:
        return None
    if isinstance(tokenizer, (str, pathlib.Path)):
        from elk import tokenizer as tok

        return tok.load(tokenizer)
    return tokenizer


def _config(path, ints, shared: bool) -> Config:
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq = ints
    cfg = Config(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                 vocab_size=vocab, seq_len=seq, rope_theta=10000.0, norm_eps=1e-5, tied_output=shared)
    if n_heads > 0 and dim % n_heads:
        raise FormatError(f"{path}: dim {dim} is not a multiple of n_heads {n_heads}")
    try:
        cfg.validate(f"{path}")
    except FormatError as e:
        raise FormatError(f"{e} (is this a llama2.c checkpoint?)") from None
    return cfg


class _Cursor:
    """Hands out consecutive slices of the file as lazy tensors, then checks the total size."""

    def __init__(self, path, data, pos):
        self.path, self.data, self.pos = path, data, pos

    def f32(self, shape):
        n = int(np.prod(shape))
        start, self.pos = self.pos, self.pos + 4 * n
        data = self.data

        def load():
            return np.frombuffer(data, dtype="<f4", count=n, offset=start).reshape(shape)

        return load

    def skip(self, nbytes):
        self.pos += nbytes

    def q8(self, shape, group):
        """int8 values then float32 per-group scales (export.py version 2)."""
        n = int(np.prod(shape))
        qpos, spos = self.pos, self.pos + n
        self.pos = spos + 4 * (n // group)
        data = self.data

        def load():
            q = np.frombuffer(data, dtype=np.int8, count=n, offset=qpos).astype(np.float32)
            s = np.frombuffer(data, dtype="<f4", count=n // group, offset=spos)
            return (q.reshape(-1, group) * s[:, None]).reshape(shape)

        return load

    def finish(self, what: str):
        if self.pos != self.data.size:
            raise FormatError(f"{self.path}: file is {self.data.size} bytes, but its config ({what}) needs "
                              f"{self.pos} bytes: truncated or not this format")


def _per_layer(cur, cfg, role, read_fn):
    return [read_fn(cfg.tensor_shape(role)) for _ in range(cfg.n_layers)]


def _assemble(cfg, loaders: dict) -> dict:
    """loaders: role -> list (per layer) or a single loader -> {(role, layer): Tensor}."""
    tensors = {}
    for role, ld in loaders.items():
        shape = cfg.tensor_shape(role)
        for layer, fn in enumerate(ld if isinstance(ld, list) else [ld]):
            tensors[(role, layer)] = Tensor(shape=shape, loader=fn)
    return tensors


def _read_v0(path, data) -> Model:
    ints = list(struct.unpack_from("<7i", data[:LEGACY_HEADER].tobytes()))
    # A negative vocab_size marks a separate classifier matrix at the end of the file.
    shared = ints[5] > 0
    ints[5] = abs(ints[5])
    cfg = _config(path, ints, shared)
    cur = _Cursor(path, data, LEGACY_HEADER)
    ld = {"TOK_EMBD": cur.f32(cfg.tensor_shape("TOK_EMBD"))}
    ld["ATTN_NORM"] = _per_layer(cur, cfg, "ATTN_NORM", cur.f32)
    for role in ("WQ", "WK", "WV", "WO"):
        ld[role] = _per_layer(cur, cfg, role, cur.f32)
    ld["FFN_NORM"] = _per_layer(cur, cfg, "FFN_NORM", cur.f32)
    for role in ("W1", "W2", "W3"):
        ld[role] = _per_layer(cur, cfg, role, cur.f32)
    ld["OUTPUT_NORM"] = cur.f32(cfg.tensor_shape("OUTPUT_NORM"))
    cur.skip(2 * 4 * cfg.seq_len * (cfg.head_dim // 2))  # freq_cis_real, freq_cis_imag: unused
    if not shared:
        ld["OUTPUT"] = cur.f32(cfg.tensor_shape("OUTPUT"))
    cur.finish(f"legacy v0, {'shared' if shared else 'separate'} classifier")
    return Model(cfg, _assemble(cfg, ld), source=f"llama2.c v0: {path.name}")


def _versioned_header(path, data):
    head = data[:VERSIONED_HEADER].tobytes()
    ints = list(struct.unpack_from("<7i", head, 8))
    shared = head[36]
    if shared not in (0, 1):
        raise FormatError(f"{path}: shared_classifier flag is {shared}, expected 0 or 1")
    return ints, bool(shared), head


def _read_v1(path, data) -> Model:
    ints, shared, _ = _versioned_header(path, data)
    cfg = _config(path, ints, shared)
    cur = _Cursor(path, data, VERSIONED_HEADER)
    ld = {}
    ld["ATTN_NORM"] = _per_layer(cur, cfg, "ATTN_NORM", cur.f32)
    ld["FFN_NORM"] = _per_layer(cur, cfg, "FFN_NORM", cur.f32)
    ld["OUTPUT_NORM"] = cur.f32(cfg.tensor_shape("OUTPUT_NORM"))
    ld["TOK_EMBD"] = cur.f32(cfg.tensor_shape("TOK_EMBD"))
    for role in _MATS:
        ld[role] = _per_layer(cur, cfg, role, cur.f32)
    if not shared:
        ld["OUTPUT"] = cur.f32(cfg.tensor_shape("OUTPUT"))
    cur.finish(f"v1 float32, {'shared' if shared else 'separate'} classifier")
    return Model(cfg, _assemble(cfg, ld), source=f"llama2.c v1: {path.name}")


def _read_v2(path, data) -> Model:
    ints, shared, head = _versioned_header(path, data)
    group = struct.unpack_from("<i", head, 37)[0]
    cfg = _config(path, ints, shared)
    if group <= 0 or group > 1 << 16:
        raise FormatError(f"{path}: group size {group} is invalid")
    for role in ("TOK_EMBD",) + _MATS + (() if shared else ("OUTPUT",)):
        r, c = cfg.tensor_shape(role)
        if (r * c) % group:
            raise FormatError(f"{path}: {role} has {r * c} elements, not a multiple of group size {group}")
    cur = _Cursor(path, data, VERSIONED_HEADER)
    ld = {}
    ld["ATTN_NORM"] = _per_layer(cur, cfg, "ATTN_NORM", cur.f32)
    ld["FFN_NORM"] = _per_layer(cur, cfg, "FFN_NORM", cur.f32)
    ld["OUTPUT_NORM"] = cur.f32(cfg.tensor_shape("OUTPUT_NORM"))
    q8 = lambda shape: cur.q8(shape, group)  # noqa: E731
    ld["TOK_EMBD"] = q8(cfg.tensor_shape("TOK_EMBD"))
    for role in _MATS:
        ld[role] = _per_layer(cur, cfg, role, q8)
    if not shared:
        ld["OUTPUT"] = q8(cfg.tensor_shape("OUTPUT"))
    cur.finish(f"v2 int8 group {group}, {'shared' if shared else 'separate'} classifier")
    return Model(cfg, _assemble(cfg, ld), source=f"llama2.c v2 (int8, group {group}): {path.name}")
