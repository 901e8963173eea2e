"""The numpy reference decoder: the oracle the C runtime is tested against.

Llama forward pass (RMSNorm, RoPE on interleaved pairs, GQA attention with a KV cache, SwiGLU, tied or
separate output) over an elk image or an in-memory elk.convert.Model. For Q8_0/Q4_0 weights it follows
the runtime's numerics (firmware/src/kernels/ref.c): each activation row is quantized to Q8_0 and every
block contributes float(int32 dot) * (fp16 d_w * fp16 d_x), accumulated block by block in float32.
F16 weights are widened to float32. Float sums run in ref.c's order; exp is float64 rounded to float32.
With the C "ref" kernel table quantized images match the runtime bit for bit. Float32 images differ by
~1e-5 (measured, stories260K): glibc's expf is not correctly rounded, and GCC 12 -O3 -march=native
vectorizes model.c's rope_apply into vfmaddsub (x0*c fused, x1*s rounded) despite -std=c11; emulating
both makes f32 logits equal too, so those two are the whole difference. Not fast, not a sampler beyond
greedy.
"""

from __future__ import annotations

import pathlib

import numpy as np

from elk import quant
from elk.convert import NORM_ROLES

QK = quant.QK


class Linear:
    """y = W x for a weight stored as an image type; x is (T, cols) float32, y is (T, rows)."""

    def __init__(self, type_: str, raw, shape):
        self.type, self.shape = type_, tuple(shape)
        rows, cols = shape
        if type_ in ("Q8_0", "Q4_0"):
            nb = cols // QK
            blk = np.asarray(raw, dtype=np.uint8).reshape(rows, nb, -1)
            self.d = blk[:, :, :2].copy().view(np.float16).astype(np.float32).reshape(rows, nb)
            if type_ == "Q8_0":
                q = blk[:, :, 2:].view(np.int8)
            else:
                qs = blk[:, :, 2:]
                q = np.concatenate([qs & 15, qs >> 4], axis=2).astype(np.int8) - np.int8(8)
            self.q = np.ascontiguousarray(q, dtype=np.int8)  # (rows, nb, 32)
        else:
            self.w = quant.dequantize(raw, type_, shape)  # F32/F16/BF16 -> float32 (rows, cols)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(-1, self.shape[1])
        if not hasattr(self, "q"):
            return _float_dots(self.w, x)
        rows, nb = self.d.shape
        T = x.shape[0]
        xb = quant.quantize_q8_0(x).reshape(T, nb, QK + 2)  # each activation row -> Q8_0
        dx = xb[:, :, :2].copy().view(np.float16).astype(np.float32).reshape(T, nb)
        qx = xb[:, :, 2:].view(np.int8).astype(np.int32)  # (T, nb, 32)
        isum = np.empty((T, rows, nb), dtype=np.float32)
        step = max(1, (1 << 22) // (nb * QK))  # rows per slice: bounded int32 temporaries
        for r in range(0, rows, step):  # exact int32 block sums
            qw = self.q[r:r + step].astype(np.int32)
            isum[:, r:r + step] = np.einsum("rbj,tbj->trb", qw, qx)
        scale = self.d[None, :, :] * dx[:, None, :]  # float32 fp16(d_w) * fp16(d_x), (T, rows, nb)
        acc = np.zeros((T, rows), dtype=np.float32)
        for b in range(nb):  # block by block, as the C reference accumulates
            acc += isum[:, :, b] * scale[:, :, b]
        return acc

    def row(self, i: int) -> np.ndarray:
        """Dequantized row i (embedding lookup)."""
        if hasattr(self, "q"):
            return (self.d[i][:, None] * self.q[i].astype(np.float32)).reshape(-1)
        return self.w[i].copy()


def _float_dots(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x (T, cols) . w (rows, cols)^T summed left to right in float32, as ref.c's dot_f32 does."""
    acc = np.zeros((x.shape[0], w.shape[0]), dtype=np.float32)
    wt = np.ascontiguousarray(w.T)
    for i in range(w.shape[1]):
        acc += x[:, i:i + 1] * wt[i][None, :]
    return acc


def _exp(x: np.ndarray) -> np.ndarray:
    """float32 exp rounded from float64 (like C's expf, not numpy's float32 SIMD approximation)."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


class Reference:
    """A decoder over an image path, an elk.image.Image, or an elk.convert.Model (float32)."""

    def __init__(self, source):
        from elk import image as im
        from elk.convert import Model

        if isinstance(source, (str, pathlib.Path)):
            source = im.read_image(source)
        if isinstance(source, Model):
            self.config = source.config
            get = lambda role, layer: ("F32", quant.quantize(source.get(role, layer), "F32"),  # noqa: E731
                                       source.config.tensor_shape(role))
        else:
            self.config = source.config

            def get(role, layer):
                t = source.tensor(role, layer)
                return t.type, t.data, (t.rows, t.cols)

        c = self.config
        self.norms = {}
        self.lin = {}
        for role, layer in c.tensor_keys():
            t, raw, shape = get(role, layer)
            if role in NORM_ROLES:
                self.norms[(role, layer)] = quant.dequantize(raw, t, shape).reshape(-1)
            else:
                self.lin[(role, layer)] = Linear(t, raw, shape)
        self.embd = self.lin[("TOK_EMBD", 0)]
        self.out = self.lin[("OUTPUT", 0)] if not c.tied_output else self.embd
        half = c.head_dim // 2
        self.inv_freq = (c.rope_theta ** (-2.0 * np.arange(half) / c.head_dim)).astype(np.float32)
        freqs = _rope_divisors(source)
        if freqs is not None:  # Llama 3 RoPE scaling: each frequency divided, in float32 as model.c does
            self.inv_freq = (self.inv_freq / freqs).astype(np.float32)
        self.reset()

    def reset(self) -> None:
        c = self.config
        kv = c.n_kv_heads * c.head_dim
        self.k_cache = np.zeros((c.n_layers, c.seq_len, kv), dtype=np.float32)
        self.v_cache = np.zeros((c.n_layers, c.seq_len, kv), dtype=np.float32)
        self.pos = 0

    # -----------------------------------------------------------------------------------------
    # The forward pass, T tokens at a time

    def _rmsnorm(self, x, w):
        """Sum of float32 squares in float64, then float32: x / sqrt(ss / dim + eps) * w."""
        ss = np.sum((x * x).astype(np.float64), axis=-1, keepdims=True).astype(np.float32)
        rms = np.sqrt(ss / np.float32(x.shape[-1]) + np.float32(self.config.norm_eps))
        return (x / rms) * w

    def _rope(self, x, positions):
        """x: (T, n_heads * head_dim); rotates pairs (x[2i], x[2i+1]) within each head. The angle
        pos * freq is a float32; cos/sin are evaluated in float64 and rounded."""
        c = self.config
        T = x.shape[0]
        ang = positions[:, None].astype(np.float32) * self.inv_freq[None, :]  # (T, half) float32
        cos = np.cos(ang.astype(np.float64)).astype(np.float32)[:, None, :]
        sin = np.sin(ang.astype(np.float64)).astype(np.float32)[:, None, :]
        v = x.reshape(T, -1, c.head_dim // 2, 2)
        a, b = v[..., 0], v[..., 1]
        out = np.stack([a * cos - b * sin, a * sin + b * cos], axis=-1)
        return out.reshape(T, -1).astype(np.float32)

    def _attention(self, layer, q, positions):
        """Causal GQA; sums run left to right in float32 as the runtime's attention does."""
        c = self.config
        T, hd = q.shape[0], c.head_dim
        end = self.pos + T
        group = c.n_heads // c.n_kv_heads
        keys = np.repeat(self.k_cache[layer, :end].reshape(end, c.n_kv_heads, hd), group, axis=1)
        vals = np.repeat(self.v_cache[layer, :end].reshape(end, c.n_kv_heads, hd), group, axis=1)
        qh = q.reshape(T, c.n_heads, hd)
        scores = np.zeros((c.n_heads, T, end), dtype=np.float32)
        for i in range(hd):  # q . k, element by element
            scores += qh[:, :, i].T[:, :, None] * keys[:, :, i].T[:, None, :]
        scores *= np.float32(1) / np.sqrt(np.float32(hd))
        mask = np.arange(end)[None, :] > positions[:, None]  # (T, end): future positions
        scores = np.where(mask[None], -np.inf, scores).astype(np.float32)
        p = _exp(scores - scores.max(axis=-1, keepdims=True))
        total = np.cumsum(p, axis=-1, dtype=np.float32)[..., -1:]  # sequential float32 sum
        p = p / total
        out = np.zeros((T, c.n_heads, hd), dtype=np.float32)
        for s in range(end):  # sum_s p[s] * v[s], in position order
            out += p[:, :, s].T[:, :, None] * vals[s][None, :, :]
        return out.reshape(T, -1)

    def forward(self, ids) -> np.ndarray:
        """Feed tokens at the current position; returns float32 logits (T, vocab)."""
        c = self.config
        ids = [int(i) for i in ids]
        T = len(ids)
        if self.pos + T > c.seq_len:
            raise ValueError(f"context full: {self.pos} + {T} > seq_len {c.seq_len}")
        if any(not 0 <= i < c.vocab_size for i in ids):
            raise ValueError("token id outside the vocabulary")
        positions = np.arange(self.pos, self.pos + T)
        x = np.stack([self.embd.row(i) for i in ids]).astype(np.float32)
        for L in range(c.n_layers):
            h = self._rmsnorm(x, self.norms[("ATTN_NORM", L)])
            q = self._rope(self.lin[("WQ", L)](h), positions)
            k = self._rope(self.lin[("WK", L)](h), positions)
            v = self.lin[("WV", L)](h)
            self.k_cache[L, self.pos:self.pos + T] = k
            self.v_cache[L, self.pos:self.pos + T] = v
            x = x + self.lin[("WO", L)](self._attention(L, q, positions))
            h = self._rmsnorm(x, self.norms[("FFN_NORM", L)])
            g = self.lin[("W1", L)](h)
            u = self.lin[("W3", L)](h)
            act = g / (np.float32(1) + _exp(-g)) * u  # SiLU(gate) * up
            x = x + self.lin[("W2", L)](act)
        self.pos += T
        return self.out(self._rmsnorm(x, self.norms[("OUTPUT_NORM", 0)]))

    def logits(self, ids) -> np.ndarray:
        """Logits for every position of `ids` from an empty context: float32 (n, vocab)."""
        self.reset()
        return self.forward(ids)

    def greedy(self, ids, n_new: int, stop=None) -> list:
        """Greedy continuation of `ids` (from an empty context); returns the new token ids."""
        self.reset()
        logits = self.forward(ids)[-1]
        out = []
        for _ in range(n_new):
            nxt = int(np.argmax(logits))
            if stop is not None and nxt in stop:
                break
            out.append(nxt)
            if self.pos >= self.config.seq_len:
                break
            logits = self.forward([nxt])[0]
        return out


def logits(source, ids) -> np.ndarray:
    """Shorthand: Reference(source).logits(ids)."""
    return Reference(source).logits(ids)


def _rope_divisors(source):
    """The image's or model's RoPE frequency divisors (float32, head_dim / 2), or None."""
    from elk.convert import Model

    if isinstance(source, Model):
        if ("ROPE_FREQS", 0) in source.tensors:
            return np.asarray(source.get("ROPE_FREQS"), dtype=np.float32).reshape(-1)
        return None
    t = source.tensors.get("rope_freqs.weight")
    return None if t is None else quant.dequantize(t.data, t.type, (t.rows, t.cols)).reshape(-1)
