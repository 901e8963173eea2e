"""Bounded-memory NPU export for `elk pack --npu`: calibrate and quantize one transformer block at a
time and write each layer into the image as soon as it is built. The numbers are elk.npu.calibrate's
(same statistics, same float32 reference numerics, same build_layer), so the section's bytes equal
build_section + pack_section's; only the order of work differs: every calibration sample goes through
block L before block L + 1 is loaded, and the output layer, which calibration never needs, is never run.

Memory: one block's float32 weights and their int8 exports, the token embedding while the samples'
first rows are read from it, and the calibration activations (samples x tokens x width), whatever the
number of layers. Not here: the whole-model builder (calibrate.build_section), byte layout (section).
"""

from __future__ import annotations

import numpy as np

from elk import spec
from elk.npu.calibrate import LayerStats, build_layer, calibration_inputs, pick_outliers
from elk.npu.section import SectionWriter


class _Block:
    """elk.reference.Reference's forward pass for one block, over samples that each start at position
    0 (as Reference.logits does). Uses Reference's own norm, RoPE and attention methods, so activations
    are bit for bit those of the whole-model reference."""

    def __init__(self, model):
        from elk.reference import Reference, _rope_divisors

        self.ref = Reference.__new__(Reference)  # its methods only: no weights loaded
        c = self.ref.config = model.config
        half = c.head_dim // 2
        self.ref.inv_freq = (c.rope_theta ** (-2.0 * np.arange(half) / c.head_dim)).astype(np.float32)
        freqs = _rope_divisors(model)  # Llama 3 RoPE scaling, as Reference applies it
        if freqs is not None:
            self.ref.inv_freq = (self.ref.inv_freq / freqs).astype(np.float32)

    def run(self, lin: dict, norms: dict, x: np.ndarray) -> tuple:
        """(x after the block, {role: that linear's input}) for one sample's hidden states x (T, dim)."""
        from elk.reference import _exp

        ref = self.ref
        positions = np.arange(x.shape[0])
        h = ref._rmsnorm(x, norms["ATTN_NORM"])
        q = ref._rope(lin["WQ"](h), positions)
        ref.k_cache = ref._rope(lin["WK"](h), positions)[None]  # (1, T, kv): the cache of one layer
        ref.v_cache = lin["WV"](h)[None]
        ref.pos = 0
        a = ref._attention(0, q, positions)
        x = x + lin["WO"](a)
        h2 = ref._rmsnorm(x, norms["FFN_NORM"])
        g = lin["W1"](h2)
        u = lin["W3"](h2)
        act = g / (np.float32(1) + _exp(-g)) * u
        x = x + lin["W2"](act)
        return x, {"WQ": h, "WK": h, "WV": h, "WO": a, "W1": h2, "W3": h2, "W2": act}


def _load(model, role: str, layer: int):
    """A weight as elk.reference.Reference holds it for a Model: float32 through the F32 codec."""
    from elk import quant
    from elk.reference import Linear

    shape = model.config.tensor_shape(role)
    raw = quant.quantize(model.get(role, layer), "F32")
    if role in ("ATTN_NORM", "FFN_NORM"):
        return quant.dequantize(raw, "F32", shape).reshape(-1)
    return Linear("F32", raw, shape)


def _f32_rows(x: np.ndarray, cols: int) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).reshape(-1, cols)


def stream_layers(model, token_lists: list, chunk: int, outlier_k: float, cap, margin: float = 1.0):
    """Yield the NPU layers of `model` (elk.convert.Model) in section order (per block, spec.NPU_ROLES),
    calibrated on `token_lists` exactly as calibrate.build_section does."""
    embd = _load(model, "TOK_EMBD", 0)
    xs = [np.stack([embd.row(i) for i in ids]).astype(np.float32) for ids in token_lists]
    del embd
    block = _Block(model)
    for layer in range(model.config.n_layers):
        lin = {role: _load(model, role, layer) for role in spec.NPU_ROLES}
        norms = {role: _load(model, role, layer) for role in ("ATTN_NORM", "FFN_NORM")}
        inputs = []  # per sample {role: input rows}
        for i, x in enumerate(xs):
            xs[i], ins = block.run(lin, norms, x)
            inputs.append({role: _f32_rows(v, lin[role].shape[1]) for role, v in ins.items()})
        for role in spec.NPU_ROLES:
            cols = lin[role].shape[1]
            s = LayerStats(np.full(cols, np.inf, np.float32), np.full(cols, -np.inf, np.float32))
            for ins in inputs:  # first pass: per-channel input range
                s.lo = np.minimum(s.lo, ins[role].min(axis=0))
                s.hi = np.maximum(s.hi, ins[role].max(axis=0))
            outl = pick_outliers(s.lo, s.hi, outlier_k, cap(cols))
            keep = np.ones(cols, bool)
            keep[outl] = False
            for ins in inputs:  # second pass: output range of the NPU part (outlier inputs zeroed)
                y = lin[role](np.where(keep[None, :], ins[role], 0).astype(np.float32))
                s.out_lo = min(s.out_lo, float(y.min()))
                s.out_hi = max(s.out_hi, float(y.max()))
            yield build_layer(role, layer, lin[role].w, s, outl, int(chunk), margin)
        del lin, inputs


def section_writer(model, chunk: int, text_file=None, outlier_k: float = 4.0, max_outliers=None,
                   max_tokens: int = 256, token_lists=None, margin: float = 1.0, done=None, progress=None):
    """A function (file, offset) -> size for elk.image.write_image(npu=...) that calibrates and writes
    the NPU section layer by layer. The options are checked and the calibration text encoded here,
    before any file is opened (CalibrationError). `done(head_and_table_bytes)` receives the section's
    head and entry table once written (elk.npu.section.parse_table reads them); `progress(done, total,
    name)` is called after each layer, counting int8 weights (elk pack's progress bar)."""
    token_lists, cap = calibration_inputs(model.vocab, chunk, text_file, max_outliers, max_tokens, token_lists)
    n = model.config.n_layers * len(spec.NPU_ROLES)

    def write(f, offset: int) -> int:
        w = SectionWriter(f, offset, n, int(chunk), float(outlier_k), sum(len(t) for t in token_lists))
        total = model.config.n_layers * sum(np.prod(model.config.tensor_shape(r)) for r in spec.NPU_ROLES)
        weights = 0
        for L in stream_layers(model, token_lists, chunk, outlier_k, cap, margin):
            w.add(L)
            weights += L.rows * L.cols
            if progress:
                progress(weights, int(total), f"npu blk.{L.layer}.{L.role.lower()}")
        size = w.finish()
        if done:
            done(w.head_and_table)
        return size
    return write
