"""Quantization: F32, F16, Q8_0, Q4_0 with ggml's reference numerics (bit-identical blocks to GGUF),
the matching dequantizers, per-tensor recipes and the quality report numbers.

Not here: the image layout (elk.image) or the decoder numerics (elk.reference).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import pathlib

import numpy as np

from elk import spec
from elk.errors import ElkError

QK = spec.QK
TYPE_IDS = {name: tid for name, (tid, _, _) in spec.TENSOR_TYPES.items()}
TYPE_NAMES = {tid: name for name, tid in TYPE_IDS.items()}
PACK_TYPES = ("F32", "F16", "Q8_0", "Q4_0")  # types the packer writes (BF16 is import-only)
CHUNK = 1 << 22  # elements per slice when quantizing or measuring big tensors
FALLBACK_TYPE = "F16"  # for tensors whose cols are not a multiple of 32 under a quantized recipe


class QuantError(ElkError):
    pass


def type_name(t) -> str:
    """Normalize 'q8_0' / 'Q8_0' / 8 to 'Q8_0'."""
    if isinstance(t, (int, np.integer)):
        if int(t) not in TYPE_NAMES:
            raise QuantError(f"unknown tensor type id {int(t)}")
        return TYPE_NAMES[int(t)]
    name = str(t).strip().upper()
    if name not in TYPE_IDS:
        raise QuantError(f"unknown tensor type '{t}' (known: {', '.join(n.lower() for n in PACK_TYPES)})")
    return name


def row_bytes(type_, cols: int) -> int:
    """Bytes of one row of `cols` elements, or 0 when cols does not fit the block size."""
    _, be, bb = spec.TENSOR_TYPES[type_name(type_)]
    if cols <= 0 or cols % be:
        return 0
    return cols // be * bb


# ---------------------------------------------------------------------------------------------
# Quantizers: float32 (rows, cols) -> uint8 (rows, row_bytes)


def _roundf(v: np.ndarray) -> np.ndarray:
    """C roundf (half away from zero), exact in float32: floor(a) + floor(2 * frac(a))."""
    a = np.abs(v)
    fl = np.floor(a)
    return np.sign(v) * (fl + np.floor(2 * (a - fl)))


def _blocks(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[-1] % QK:
        raise QuantError(f"cols {x.shape[-1]} is not a multiple of {QK}")
    return x.reshape(-1, QK)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """d = amax / 127 (float32, stored fp16), q = roundf(x * (1/d))."""
    b = _blocks(x)
    d = np.abs(b).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = _roundf(b * inv).astype(np.int8)
    out = np.concatenate([d.astype(np.float16).view(np.uint8), q.view(np.uint8)], axis=1)
    return out.reshape(x.shape[0] if x.ndim == 2 else 1, -1)


def quantize_q4_0(x: np.ndarray) -> np.ndarray:
    """max = signed value of largest magnitude, d = max / -8, q = min(15, trunc(x/d + 8.5));
    byte j holds element j (low nibble) and element j + 16 (high nibble)."""
    b = _blocks(x)
    imax = np.abs(b).argmax(axis=1)[:, None]
    m = np.take_along_axis(b, imax, axis=1)
    d = m / np.float32(-8)
    with np.errstate(divide="ignore", over="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = np.minimum(np.trunc(b * inv + np.float32(8.5)), 15).astype(np.uint8)
    packed = q[:, : QK // 2] | (q[:, QK // 2:] << np.uint8(4))
    with np.errstate(over="ignore"):  # a scale beyond fp16 becomes inf, as in ggml
        d16 = d.astype(np.float16)
    out = np.concatenate([d16.view(np.uint8), packed], axis=1)
    return out.reshape(x.shape[0] if x.ndim == 2 else 1, -1)


def quantize(x: np.ndarray, type_) -> np.ndarray:
    """float32 (rows, cols) -> uint8 (rows, row_bytes(type, cols))."""
    t = type_name(type_)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    rows, cols = x.shape
    if t == "F32":
        return np.ascontiguousarray(x).view(np.uint8).reshape(rows, -1)
    if t == "F16":
        with np.errstate(over="ignore"):  # |x| > 65504 becomes inf, as in ggml; the report shows it
            return np.ascontiguousarray(x.astype(np.float16)).view(np.uint8).reshape(rows, -1)
    if t == "BF16":
        raise QuantError("BF16 is an import-only type; pack to f32, f16, q8_0 or q4_0")
    fn = quantize_q8_0 if t == "Q8_0" else quantize_q4_0
    out = np.empty((rows, row_bytes(t, cols)), dtype=np.uint8)
    step = max(1, CHUNK // max(cols, 1))  # bounded temporaries for 32000 x 2048 embeddings
    for r in range(0, rows, step):
        out[r:r + step] = fn(x[r:r + step]).reshape(-1, out.shape[1])
    return out


def dequantize(raw, type_, shape) -> np.ndarray:
    """uint8 bytes of a (rows, cols) tensor of `type_` -> float32 (rows, cols)."""
    t = type_name(type_)
    rows, cols = shape
    raw = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.reshape(-1).view(np.uint8)
    need = rows * row_bytes(t, cols)
    if raw.size != need or need == 0:
        raise QuantError(f"{t} tensor {rows}x{cols} needs {need} bytes, got {raw.size}")
    if t == "F32":
        return raw.view(np.float32).reshape(rows, cols).copy()
    if t == "F16":
        return raw.view(np.float16).astype(np.float32).reshape(rows, cols)
    if t == "BF16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(rows, cols)
    if t == "Q8_0":
        blk = raw.reshape(-1, 34)
        d = blk[:, :2].copy().view(np.float16).astype(np.float32)
        q = blk[:, 2:].view(np.int8).astype(np.float32)
        return (d * q).reshape(rows, cols)
    blk = raw.reshape(-1, 18)
    d = blk[:, :2].copy().view(np.float16).astype(np.float32)
    qs = blk[:, 2:]
    q = np.concatenate([qs & 15, qs >> 4], axis=1).astype(np.int8) - 8
    return (d * q.astype(np.float32)).reshape(rows, cols)


# ---------------------------------------------------------------------------------------------
# Recipes: which type each tensor gets


@dataclasses.dataclass
class Recipe:
    """`default` type plus ordered (glob, type) rules matched against tensor names
    (with or without the `.weight` suffix); the first matching rule wins."""

    default: str = "F32"
    rules: list = dataclasses.field(default_factory=list)
    matched: set = dataclasses.field(default_factory=set)  # indexes of rules choose() has used

    def unused_rules(self) -> list:
        """(glob, type) rules that no tensor matched so far: usually a typo in the recipe."""
        return [r for i, r in enumerate(self.rules) if i not in self.matched]

    def text(self) -> str:
        parts = [f"{g}={t.lower()}" for g, t in self.rules]
        return ",".join(parts + [f"*={self.default.lower()}"]) if parts else self.default.lower()

    def choose(self, name: str, role: str, cols: int) -> tuple:
        """(type, note) for one tensor; note explains a forced type ('' when none)."""
        if role in ("ATTN_NORM", "FFN_NORM", "OUTPUT_NORM", "ROPE_FREQS"):
            return "F32", ""
        want = self.default
        short = name[: -len(".weight")] if name.endswith(".weight") else name
        for i, (glob, t) in enumerate(self.rules):
            if fnmatch.fnmatchcase(name, glob) or fnmatch.fnmatchcase(short, glob):
                want = t
                self.matched.add(i)
                break
        if want in ("Q8_0", "Q4_0") and cols % QK:
            return FALLBACK_TYPE, f"cols {cols} not a multiple of {QK}: {want.lower()} -> {FALLBACK_TYPE.lower()}"
        return want, ""


def parse_recipe(default="f32", recipe=None) -> Recipe:
    """`recipe` is inline text (`token_embd=q8_0,output=q8_0,*=q4_0`) or a file of such rules,
    one per line or comma-separated, `#` comments allowed. `*=T` overrides the default."""
    r = Recipe(default=_pack_type(default))
    if not recipe:
        return r
    text = str(recipe)
    p = pathlib.Path(text)
    if "=" not in text or p.is_file():
        try:
            text = p.read_text()
        except OSError as e:
            raise QuantError(f"recipe {recipe}: cannot read ({e.strerror})") from None
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for item in line.split(","):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                raise QuantError(f"recipe item '{item}' is not GLOB=TYPE")
            glob, t = (s.strip() for s in item.split("=", 1))
            if glob == "*":
                r.default = _pack_type(t)
            else:
                r.rules.append((glob, _pack_type(t)))
    return r


def _pack_type(t) -> str:
    name = type_name(t)
    if name not in PACK_TYPES:
        raise QuantError(f"cannot pack to {name}; use one of {', '.join(n.lower() for n in PACK_TYPES)}")
    return name


def error_stats(ref: np.ndarray, raw: np.ndarray, type_) -> tuple:
    """(rmse, max_abs_err) of the dequantized tensor against the float32 original."""
    rows, cols = ref.shape
    raw = np.asarray(raw, dtype=np.uint8).reshape(rows, -1)
    step = max(1, CHUNK // max(cols, 1))
    ss, mx = 0.0, 0.0
    for r in range(0, rows, step):
        part = ref[r:r + step]
        diff = (dequantize(raw[r:r + step], type_, part.shape) - part).astype(np.float64)
        ss += float(np.sum(diff * diff))
        mx = max(mx, float(np.max(np.abs(diff))))
    return (ss / ref.size) ** 0.5 if ref.size else 0.0, mx
