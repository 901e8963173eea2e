"""The NPU image section (kind 5, docs/npu.md): pack per-layer int8 FULLY_CONNECTED subgraphs and
their calibration data into bytes, and parse/check them back. Byte layout only; the numbers it
stores are chosen in elk.npu.calibrate and elk.npu.intmath.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from elk import spec
from elk.errors import FormatError

HEAD = struct.Struct("<IHHIIIIfI28sI")  # magic, version, head_size, chunk, n_entries, entry_size,
# flags, outlier_k, calib_tokens, reserved, crc32
ENTRY = struct.Struct("<HHIIIfifiQIIIIQQQ")  # see docs/npu.md "Entry"
assert HEAD.size == spec.NPU_HEAD_SIZE and ENTRY.size == spec.NPU_ENTRY_SIZE
BLOB_ALIGN = 64
ROLE_IDS = {name: spec.TENSOR_ROLES[name] for name in spec.NPU_ROLES}
ROLE_NAMES = {v: k for k, v in ROLE_IDS.items()}
SCALE_MAX = float(np.float32(1e30))  # scales must be in (0, SCALE_MAX), as section.c's sane_scale


class NpuSectionError(FormatError):
    pass


@dataclasses.dataclass
class NpuLayer:
    """One exported linear layer as packed (arrays are numpy, tflite is the .tflite bytes)."""

    role: str
    layer: int
    rows: int
    cols: int
    in_scale: float
    in_zp: int
    out_scale: float
    out_zp: int
    tflite: bytes
    weights_offset: int  # inside tflite
    bias_offset: int
    multiplier: np.ndarray  # int32 (rows,)
    shift: np.ndarray  # int32 (rows,)
    outliers: np.ndarray  # uint32 (n,) ascending input channels computed on the CPU
    outlier_w: np.ndarray  # float32 (n, rows): W[:, outliers].T

    @property
    def weights(self) -> np.ndarray:
        return np.frombuffer(self.tflite, np.int8, self.rows * self.cols, self.weights_offset).reshape(self.rows, self.cols)

    @property
    def bias(self) -> np.ndarray:
        return np.frombuffer(self.tflite, "<i4", self.rows, self.bias_offset)


@dataclasses.dataclass
class NpuSection:
    chunk: int
    flags: int
    outlier_k: float
    calib_tokens: int
    layers: list

    def find(self, role: str, layer: int) -> NpuLayer:
        for L in self.layers:
            if L.role == role and L.layer == layer:
                return L
        raise KeyError((role, layer))


def _align(n: int, a: int = BLOB_ALIGN) -> int:
    return (n + a - 1) // a * a


def pack_section(sec: NpuSection) -> bytes:
    """Bytes of the section: head, entry table, then per entry its tflite blob, requantization table
    and outlier table, each 64-byte aligned relative to the section start."""
    n = len(sec.layers)
    if not 0 < n <= 1024:
        raise NpuSectionError(f"NPU section needs 1..1024 layers, got {n}")
    pos = _align(spec.NPU_HEAD_SIZE + n * spec.NPU_ENTRY_SIZE)
    blobs, entries = [], []
    for L in sec.layers:
        tfl_off = pos
        pos = _align(pos + len(L.tflite))
        q_off = pos
        qtab = np.asarray(L.multiplier, "<i4").tobytes() + np.asarray(L.shift, "<i4").tobytes()
        pos = _align(pos + len(qtab))
        n_out = len(L.outliers)
        o_off = pos if n_out else 0
        otab = np.asarray(L.outliers, "<u4").tobytes() + np.asarray(L.outlier_w, "<f4").tobytes() if n_out else b""
        pos = _align(pos + len(otab)) if n_out else pos
        blobs += [(tfl_off, L.tflite), (q_off, qtab), (o_off, otab)]
        entries.append(ENTRY.pack(ROLE_IDS[L.role], L.layer, L.rows, L.cols, n_out, L.in_scale, L.in_zp,
                                  L.out_scale, L.out_zp, tfl_off, len(L.tflite), L.weights_offset,
                                  L.bias_offset, 0, q_off, o_off, 0))
    table = b"".join(entries)
    head = HEAD.pack(spec.NPU_MAGIC, spec.NPU_VERSION, spec.NPU_HEAD_SIZE, sec.chunk, n, spec.NPU_ENTRY_SIZE,
                     sec.flags, sec.outlier_k, sec.calib_tokens, b"", 0)
    crc = zlib.crc32(table, zlib.crc32(head[:60]))
    out = bytearray(pos)
    out[: spec.NPU_HEAD_SIZE] = head[:60] + struct.pack("<I", crc)
    out[spec.NPU_HEAD_SIZE: spec.NPU_HEAD_SIZE + len(table)] = table
    for off, blob in blobs:
        out[off: off + len(blob)] = blob
    return bytes(out)


def _inside(off: int, size: int, lo: int, hi: int) -> bool:
    return lo <= off <= hi and size <= hi - off


def parse_section(data: bytes) -> NpuSection:
    """Parse and check an NPU section (the same checks as firmware/src/npu/section.c)."""
    data = bytes(data)
    if len(data) < spec.NPU_HEAD_SIZE:
        raise NpuSectionError("NPU section: shorter than its head")
    magic, ver, hs, chunk, n, es, flags, k, calib, _, crc = HEAD.unpack_from(data)
    if magic != spec.NPU_MAGIC:
        raise NpuSectionError("NPU section: bad magic")
    if ver != spec.NPU_VERSION:
        raise NpuSectionError(f"NPU section: unsupported version {ver}")
    if hs != spec.NPU_HEAD_SIZE or es != spec.NPU_ENTRY_SIZE:
        raise NpuSectionError("NPU section: unknown head or entry size")
    if not 0 < n <= 1024 or not _inside(hs, n * es, 0, len(data)):
        raise NpuSectionError("NPU section: entry table outside the section")
    table = data[hs: hs + n * es]
    if zlib.crc32(table, zlib.crc32(data[:60])) != crc:
        raise NpuSectionError("NPU section: CRC of head and entry table mismatch")
    if not 0 < chunk <= 4096:
        raise NpuSectionError(f"NPU section: bad chunk size {chunk}")
    layers = [_parse_entry(data, i, table[i * es:(i + 1) * es]) for i in range(n)]
    return NpuSection(chunk, flags, k, calib, layers)


def _parse_entry(data: bytes, i: int, raw: bytes) -> NpuLayer:
    (role, layer, rows, cols, n_out, s_in, z_in, s_out, z_out, tfl_off, tfl_size, w_off, b_off, _,
     q_off, o_off, _) = ENTRY.unpack(raw)

    def bad(what):
        return NpuSectionError(f"NPU section: {what} (entry {i})")

    if role not in ROLE_NAMES:
        raise bad("unknown role")
    if not (0 < rows <= 1 << 20 and 0 < cols <= 65535 and n_out <= cols):  # int32 accumulator bound
        raise bad("bad shape")
    if not (0 < s_in < SCALE_MAX and 0 < s_out < SCALE_MAX) or \
            not (-128 <= z_in <= 127 and -128 <= z_out <= 127):
        raise bad("bad quantization parameters")
    if not _inside(tfl_off, tfl_size, spec.NPU_HEAD_SIZE, len(data)) or tfl_size < 8:
        raise bad("tflite blob outside the section")
    tfl = data[tfl_off: tfl_off + tfl_size]
    if tfl[4:8] != b"TFL3":
        raise bad("tflite blob lacks the TFL3 identifier")
    if not _inside(w_off, rows * cols, 0, tfl_size) or not _inside(b_off, 4 * rows, 0, tfl_size):
        raise bad("weights or bias outside the tflite blob")
    if not _inside(q_off, 8 * rows, spec.NPU_HEAD_SIZE, len(data)):
        raise bad("requantization table outside the section")
    mult = np.frombuffer(data, "<i4", rows, q_off).copy()
    shift = np.frombuffer(data, "<i4", rows, q_off + 4 * rows).copy()
    idx = np.zeros(0, np.uint32)
    ow = np.zeros((0, rows), np.float32)
    if n_out:
        if not _inside(o_off, 4 * n_out * (1 + rows), spec.NPU_HEAD_SIZE, len(data)):
            raise bad("outlier table outside the section")
        idx = np.frombuffer(data, "<u4", n_out, o_off).copy()
        if np.any(idx >= cols) or np.any(np.diff(idx.astype(np.int64)) <= 0):
            raise bad("outlier channels not ascending or out of range")
        ow = np.frombuffer(data, "<f4", n_out * rows, o_off + 4 * n_out).reshape(n_out, rows).copy()
    return NpuLayer(ROLE_NAMES[role], layer, rows, cols, s_in, z_in, s_out, z_out, tfl, w_off, b_off,
                    mult, shift, idx, ow)
