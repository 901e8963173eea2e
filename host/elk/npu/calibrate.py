"""Calibration for NPU export: run the float model (elk.reference) over a small text set, record each
linear layer's input range and outlier channels, and build the NPU section's layers (int8 weights,
activation scales, requantization tables, .tflite bytes). Not here: byte layout (section.py).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from elk import spec
from elk.errors import ElkError
from elk.npu import intmath, tflite
from elk.npu.section import NpuLayer, NpuSection

# A small built-in text set: short stories and plain prose, the register small Llama models see.
BUILTIN_TEXTS = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
    "friends. One day, she saw a big red ball under a tree and ran to get it.",
    "Tom had a small dog called Max. Every morning they walked to the river and watched the boats. "
    "Max liked to bark at the ducks, and Tom laughed and threw sticks into the water.",
    "The sun was warm and the sky was blue. A bird sang in the garden while the cat slept on the step. "
    "Mom made soup for lunch, and everyone sat at the table to eat together.",
    "In the morning the baker opened his shop, and the smell of fresh bread filled the street. People "
    "stopped to buy cakes, and the children asked for cookies with sugar on top.",
    "The train left the station at nine o'clock. Anna looked out of the window at the fields, the "
    "cows and the old farm house, and she wondered what the big city would be like.",
)


MAX_SAMPLE_CHARS = 4096  # a sample keeps 128 tokens; no tokenizer packs 128 tokens into > 32 chars each


class CalibrationError(ElkError):
    pass


@dataclasses.dataclass
class LayerStats:
    lo: np.ndarray  # per input channel min (cols,)
    hi: np.ndarray  # per input channel max
    out_lo: float = np.inf  # NPU-part output range (outlier channels zeroed), second pass
    out_hi: float = -np.inf


def calibration_tokens(vocab, text_file=None, max_tokens: int = 256) -> list:
    """Token id lists (each with BOS) from a user text file (one sample per paragraph) or the built-in set."""
    from elk import tokenizer as tok

    if text_file:
        try:
            raw = pathlib.Path(text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CalibrationError(f"{text_file}: cannot read calibration text ({e})") from None
        if "\x00" in raw:
            raise CalibrationError(f"{text_file}: binary data (NUL bytes), not a calibration text")
        texts = [p.strip() for p in raw.split("\n\n") if p.strip()]
        if not texts:
            raise CalibrationError(f"{text_file}: no text in the calibration file")
    else:
        texts = list(BUILTIN_TEXTS)
    out, total = [], 0
    for t in texts:
        ids = tok.encode(vocab, t[:MAX_SAMPLE_CHARS], bos=True)[:128]  # a huge paragraph: only its start
        if total + len(ids) > max_tokens:
            ids = ids[: max(0, max_tokens - total)]
        if len(ids) >= 2:
            out.append(ids)
            total += len(ids)
        if total >= max_tokens:
            break
    return out


def _source_parts(source):
    """(Reference, weight getter, vocab) for an elk.convert.Model or an elk.image.Image."""
    from elk.reference import Reference

    ref = Reference(source)
    if hasattr(source, "get"):
        return ref, lambda role, layer: np.asarray(source.get(role, layer), np.float32), source.vocab
    return ref, lambda role, layer: source.tensor(role, layer).array(), source.vocab()


def _wrap(ref, key, fn):
    inner = ref.lin[key]

    def call(x):
        x = np.asarray(x, dtype=np.float32).reshape(-1, inner.shape[1])
        fn(x)
        return inner(x)

    call.shape = inner.shape
    ref.lin[key] = call


def pick_outliers(lo: np.ndarray, hi: np.ndarray, k: float, max_n: int) -> np.ndarray:
    """Input channels whose |x| max exceeds k x the median channel max (largest first, at most max_n),
    returned ascending."""
    amax = np.maximum(np.abs(lo), np.abs(hi))
    med = float(np.median(amax))
    if max_n <= 0 or med <= 0:
        return np.zeros(0, np.uint32)
    cand = np.nonzero(amax > k * med)[0]
    cand = cand[np.argsort(-amax[cand], kind="stable")][:max_n]
    return np.sort(cand).astype(np.uint32)


def collect_stats(ref, token_lists, k: float, max_outliers) -> tuple[dict, dict]:
    """Two passes over the texts: per-channel ranges (-> outliers), then the NPU-part output range."""
    stats, outliers = {}, {}
    keys = [key for key in ref.lin if key[0] in spec.NPU_ROLES]
    orig = {key: ref.lin[key] for key in keys}
    for key in keys:
        cols = ref.lin[key].shape[1]
        stats[key] = LayerStats(np.full(cols, np.inf, np.float32), np.full(cols, -np.inf, np.float32))

        def first(x, s=stats[key]):
            s.lo = np.minimum(s.lo, x.min(axis=0))
            s.hi = np.maximum(s.hi, x.max(axis=0))
        _wrap(ref, key, first)
    for ids in token_lists:
        ref.logits(ids)
    for key in keys:
        ref.lin[key] = orig[key]
        s = stats[key]
        outliers[key] = pick_outliers(s.lo, s.hi, k, max_outliers(s.lo.size))
    for key in keys:
        keep = np.ones(stats[key].lo.size, bool)
        keep[outliers[key]] = False
        w = ref.lin[key]

        def second(x, s=stats[key], keep=keep, w=w):
            y = w(np.where(keep[None, :], x, 0).astype(np.float32))
            s.out_lo = min(s.out_lo, float(y.min()))
            s.out_hi = max(s.out_hi, float(y.max()))
        _wrap(ref, key, second)
    for ids in token_lists:
        ref.logits(ids)
    ref.lin.update(orig)
    return stats, outliers


def build_layer(role: str, layer: int, w: np.ndarray, s: LayerStats, outl: np.ndarray, chunk: int,
                margin: float = 1.0) -> NpuLayer:
    """Quantize one linear layer for the NPU: weights with outlier columns moved to the CPU table."""
    rows, cols = w.shape
    keep = np.ones(cols, bool)
    keep[outl] = False
    w_npu = np.where(keep[None, :], w, 0).astype(np.float32)
    lo = float(s.lo[keep].min()) if keep.any() else 0.0
    hi = float(s.hi[keep].max()) if keep.any() else 0.0
    in_scale, in_zp = intmath.activation_params(lo * margin, hi * margin)
    out_scale, out_zp = intmath.activation_params(s.out_lo * margin, s.out_hi * margin)
    wq, ws = intmath.weight_params(w_npu)
    mult, shift = intmath.channel_multipliers(in_scale, ws, out_scale)
    bias = np.zeros(rows, np.int32)  # Llama linears have no bias; kept so the op stays FC v4
    fc = tflite.fully_connected_int8(wq, ws, bias, chunk, in_scale, in_zp, out_scale, out_zp,
                                     name=f"blk.{layer}.{role.lower()}")
    return NpuLayer(role, layer, rows, cols, in_scale, in_zp, out_scale, out_zp, fc.data, fc.weights_offset,
                    fc.bias_offset, mult, shift, outl.astype(np.uint32),
                    np.ascontiguousarray(w[:, outl].T, dtype=np.float32))


def calibration_inputs(vocab, chunk, text_file=None, max_outliers=None, max_tokens: int = 256,
                       token_lists=None) -> tuple:
    """Check the options and encode the calibration text: (token_lists, cap), cap(cols) = the most
    outlier channels a layer of `cols` inputs keeps on the CPU. Raises CalibrationError."""
    if not 1 <= int(chunk) <= 4096:
        raise CalibrationError(f"NPU chunk must be 1..4096 tokens, got {chunk}")
    if max_outliers is not None and not callable(max_outliers) and int(max_outliers) < 0:
        raise CalibrationError(f"NPU outlier channels per layer must be >= 0, got {max_outliers}")
    if token_lists is None:
        if vocab is None:
            raise CalibrationError("the model has no tokenizer to encode calibration text")
        token_lists = calibration_tokens(vocab, text_file, max_tokens)
    if not token_lists:
        raise CalibrationError("no calibration tokens")
    cap = max_outliers if callable(max_outliers) else (
        (lambda cols: max(1, cols // 64)) if max_outliers is None else (lambda cols: int(max_outliers)))
    return token_lists, cap


def build_section(source, chunk: int = spec.NPU_DEFAULT_CHUNK, text_file=None, outlier_k: float = 4.0,
                  max_outliers=None, max_tokens: int = 256, token_lists=None, margin: float = 1.0) -> NpuSection:
    """Calibrate `source` (elk.convert.Model or elk.image.Image) and build every layer's NPU export,
    all in memory: the whole float model (elk.reference) and every layer's int8 export at once. `elk
    pack` streams instead (elk.npu.stream: one block at a time, the same bytes)."""
    ref, weight, vocab = _source_parts(source)
    token_lists, cap = calibration_inputs(vocab, chunk, text_file, max_outliers, max_tokens, token_lists)
    stats, outliers = collect_stats(ref, token_lists, outlier_k, cap)
    layers = []
    for layer in range(ref.config.n_layers):
        for role in spec.NPU_ROLES:
            key = (role, layer)
            layers.append(build_layer(role, layer, weight(role, layer), stats[key], outliers[key], int(chunk),
                                      margin))
    flags = spec.NPU_FLAG_SHADOW_OUTLIERS if any(len(L.outliers) for L in layers) else 0
    return NpuSection(int(chunk), flags, float(outlier_k), sum(len(t) for t in token_lists), layers)
