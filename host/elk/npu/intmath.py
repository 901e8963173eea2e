"""TFLite int8 quantization arithmetic in numpy: parameter choice, fixed-point multipliers and the
FULLY_CONNECTED int8 reference computation. The C sim backend (firmware/src/npu/sim.c) implements
the same integer steps; tests hold the two and LiteRT to +-1. Not a float model.
"""

from __future__ import annotations

import math

import numpy as np


def activation_params(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric per-tensor int8 (scale, zero_point) covering [lo, hi] (the range always includes 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / 255.0
    zp = int(round(-128 - lo / scale))
    return float(np.float32(scale)), int(min(127, max(-128, zp)))


def weight_params(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8: q in [-127, 127], scale = amax / 127 (rows of w)."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.max(np.abs(w), axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = m * 2^(shift - 31), m an int32 in [2^30, 2^31)."""
    if real <= 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    m = int(round(q * (1 << 31)))
    if m == 1 << 31:
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        shift, m = 30, (1 << 31) - 1
    return m, shift


def channel_multipliers(in_scale: float, w_scales: np.ndarray, out_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) from float32 scales, computed in double as TFLite does."""
    ms, ss = [], []
    for ws in np.asarray(w_scales, dtype=np.float32):
        eff = float(np.float32(in_scale)) * float(ws) / float(np.float32(out_scale))
        m, s = quantize_multiplier(eff)
        ms.append(m)
        ss.append(s)
    return np.array(ms, dtype=np.int32), np.array(ss, dtype=np.int32)


def _srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul on int64 arrays holding int32 values."""
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    s = ab + nudge
    # C integer division truncates toward zero.
    out = np.where(s >= 0, s >> 31, -((-s) >> 31))
    overflow = (a == b) & (a == -(1 << 31))
    return np.where(overflow, (1 << 31) - 1, out)


def _rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def requantize(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """MultiplyByQuantizedMultiplier (double rounding, TFLite's default): acc (..., rows) int32."""
    acc = acc.astype(np.int64)
    mult = mult.astype(np.int64)
    shift = shift.astype(np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = acc * (np.int64(1) << left)
    x = np.clip(x, -(1 << 31), (1 << 31) - 1)
    return _rounding_divide_by_pot(_srdhm(x, mult), right)


def fully_connected_int8(x_q: np.ndarray, w_q: np.ndarray, bias: np.ndarray, in_zp: int,
                         mult: np.ndarray, shift: np.ndarray, out_zp: int) -> np.ndarray:
    """TFLite FULLY_CONNECTED int8 reference: y = clamp(requant(sum (x - zp_in) w + bias) + zp_out)."""
    acc = (x_q.astype(np.int64) - in_zp) @ w_q.astype(np.int64).T + bias.astype(np.int64)
    y = requantize(acc, mult, shift) + out_zp
    return np.clip(y, -128, 127).astype(np.int8)


def quantize(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """float -> int8 as TFLite's QUANTIZE: round half away from zero, saturate."""
    v = np.asarray(x, dtype=np.float32) / np.float32(scale)
    r = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return np.clip(r + zp, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zp: int) -> np.ndarray:
    return (np.float32(scale) * (q.astype(np.float32) - np.float32(zp))).astype(np.float32)
