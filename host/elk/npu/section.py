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
    def n_outliers(self) -> int:
        return len(self.outliers)

    @property
    def tflite_size(self) -> int:
        return len(self.tflite)

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


class SectionWriter:
    """Writes the same bytes as pack_section, one layer at a time, into an open file at `base` (the
    section's absolute offset): each layer's blobs go out as it arrives, then `finish` writes the head
    and entry table in the space reserved for them. Holds only the entry table (80 bytes a layer).
    pack_section is kept as the whole-section builder for callers that want bytes (and tests)."""

    def __init__(self, f, base: int, n_layers: int, chunk: int, outlier_k: float, calib_tokens: int):
        if not 0 < n_layers <= 1024:
            raise NpuSectionError(f"NPU section needs 1..1024 layers, got {n_layers}")
        self.f, self.base, self.n = f, base, n_layers
        self.chunk, self.outlier_k, self.calib_tokens = chunk, outlier_k, calib_tokens
        self.entries, self.flags = [], 0
        self.pos = _align(spec.NPU_HEAD_SIZE + n_layers * spec.NPU_ENTRY_SIZE)  # relative to base
        f.seek(base)
        f.write(bytes(self.pos))

    def _put(self, blob: bytes) -> int:
        """Write blob at the current (aligned) position, zero-pad to the next alignment; its offset."""
        off = self.pos
        self.f.write(blob)
        end = _align(off + len(blob))
        self.f.write(bytes(end - off - len(blob)))
        self.pos = end
        return off

    def add(self, L: NpuLayer) -> None:
        if len(self.entries) >= self.n:
            raise NpuSectionError(f"NPU section: more than the {self.n} layers announced")
        tfl_off = self._put(L.tflite)
        q_off = self._put(np.asarray(L.multiplier, "<i4").tobytes() + np.asarray(L.shift, "<i4").tobytes())
        n_out = len(L.outliers)
        o_off = 0
        if n_out:
            o_off = self._put(np.asarray(L.outliers, "<u4").tobytes() + np.asarray(L.outlier_w, "<f4").tobytes())
            self.flags = spec.NPU_FLAG_SHADOW_OUTLIERS
        self.entries.append(ENTRY.pack(ROLE_IDS[L.role], L.layer, L.rows, L.cols, n_out, L.in_scale, L.in_zp,
                                       L.out_scale, L.out_zp, tfl_off, len(L.tflite), L.weights_offset,
                                       L.bias_offset, 0, q_off, o_off, 0))

    def finish(self) -> int:
        """Write head + entry table; returns the section's size in bytes (the file ends at base + size)."""
        if len(self.entries) != self.n:
            raise NpuSectionError(f"NPU section: {len(self.entries)} of {self.n} layers written")
        table = b"".join(self.entries)
        head = HEAD.pack(spec.NPU_MAGIC, spec.NPU_VERSION, spec.NPU_HEAD_SIZE, self.chunk, self.n,
                         spec.NPU_ENTRY_SIZE, self.flags, self.outlier_k, self.calib_tokens, b"", 0)
        crc = zlib.crc32(table, zlib.crc32(head[:60]))
        self.head_and_table = head[:60] + struct.pack("<I", crc) + table
        self.f.seek(self.base)
        self.f.write(self.head_and_table)
        self.f.seek(self.base + self.pos)
        return self.pos


@dataclasses.dataclass
class NpuEntry:
    """One entry of the table as stored, without its blobs (parse_table)."""

    role: str
    layer: int
    rows: int
    cols: int
    in_scale: float
    in_zp: int
    out_scale: float
    out_zp: int
    n_outliers: int
    tflite_size: int


def parse_table(data: bytes) -> NpuSection:
    """The head and entry table alone (the section's first bytes, its CRC checked): an NpuSection whose
    layers are NpuEntry, for describing a section without holding its blobs. parse_section checks more."""
    if len(data) < spec.NPU_HEAD_SIZE:
        raise NpuSectionError("NPU section: shorter than its head")
    magic, ver, hs, chunk, n, es, flags, k, calib, _, crc = HEAD.unpack_from(data)
    if magic != spec.NPU_MAGIC or ver != spec.NPU_VERSION or hs != spec.NPU_HEAD_SIZE or \
            es != spec.NPU_ENTRY_SIZE or not 0 < n <= 1024 or len(data) < hs + n * es:
        raise NpuSectionError("NPU section: bad head or short entry table")
    table = bytes(data[hs: hs + n * es])
    if zlib.crc32(table, zlib.crc32(bytes(data[:60]))) != crc:
        raise NpuSectionError("NPU section: CRC of head and entry table mismatch")
    layers = []
    for i in range(n):
        (role, layer, rows, cols, n_out, s_in, z_in, s_out, z_out, _, tfl_size, *_rest) = \
            ENTRY.unpack_from(table, i * es)
        if role not in ROLE_NAMES:
            raise NpuSectionError(f"NPU section: unknown role (entry {i})")
        layers.append(NpuEntry(ROLE_NAMES[role], layer, rows, cols, s_in, z_in, s_out, z_out, n_out, tfl_size))
    return NpuSection(chunk, flags, k, calib, layers)


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


def tflite_disagreements(sec: NpuSection) -> list:
    """What each layer's .tflite says against its entry, read with LiteRT's own schema reader: the sim
    (and elk's runner) use the entry's scales, zero points and requantization table, LiteRT and vendor
    converters use the .tflite, so the two must describe one function. [] when they agree. Not part of
    parse_section (the C parser cannot read flatbuffers): `elk verify` and `elk npu check` run it."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return ["not checked: ai-edge-litert (its TFLite schema reader) is not installed"]
    from elk.npu import intmath

    out = []
    for L in sec.layers:
        name = f"blk.{L.layer}.{L.role.lower()}"
        try:
            why = _tflite_vs_entry(schema, intmath, L, sec.chunk)
        except Exception as e:  # a damaged flatbuffer makes the generated reader raise anything
            why = f"unreadable ({type(e).__name__})"
        if why:
            out.append(f"{name}: .tflite {why}")
    return out


def _tflite_vs_entry(schema, intmath, L: NpuLayer, chunk: int) -> str:
    m = schema.Model.GetRootAs(L.tflite, 0)
    if m.SubgraphsLength() != 1 or m.Subgraphs(0).OperatorsLength() != 1 or m.OperatorCodesLength() != 1:
        return "is not a single operator"
    if m.OperatorCodes(0).BuiltinCode() != schema.BuiltinOperator.FULLY_CONNECTED:
        return "is not FULLY_CONNECTED"
    sg, op = m.Subgraphs(0), m.Subgraphs(0).Operators(0)
    if op.InputsLength() != 3 or op.OutputsLength() != 1:
        return "does not have inputs x, weight, bias and one output"
    x, w, b = (sg.Tensors(op.Inputs(i)) for i in range(3))
    y = sg.Tensors(op.Outputs(0))
    T = schema.TensorType
    if [x.Type(), w.Type(), b.Type(), y.Type()] != [T.INT8, T.INT8, T.INT32, T.INT8]:
        return "tensor types are not int8 x, w, y and int32 bias"
    if x.ShapeAsNumpy().tolist() != [chunk, L.cols] or y.ShapeAsNumpy().tolist() != [chunk, L.rows] or \
            w.ShapeAsNumpy().tolist() != [L.rows, L.cols]:
        return "shapes differ from the entry's chunk, rows and cols"
    for t, scale, zp, what in ((x, L.in_scale, L.in_zp, "input"), (y, L.out_scale, L.out_zp, "output")):
        q = t.Quantization()
        if q is None or q.ScaleAsNumpy().tolist() != [np.float32(scale)] or q.ZeroPointAsNumpy().tolist() != [zp]:
            return f"{what} scale or zero point differs from the entry's"
    wbuf = m.Buffers(w.Buffer()).DataAsNumpy()
    bbuf = m.Buffers(b.Buffer()).DataAsNumpy()
    if isinstance(wbuf, int) or wbuf.tobytes() != L.weights.tobytes():
        return "weights are not the bytes the entry points at"
    if isinstance(bbuf, int) or bbuf.tobytes() != L.bias.tobytes():
        return "bias is not the bytes the entry points at"
    ws = w.Quantization().ScaleAsNumpy() if w.Quantization() else np.zeros(0)
    if isinstance(ws, int) or ws.shape != (L.rows,):
        return "weights are not quantized per output channel"
    mult, shift = intmath.channel_multipliers(L.in_scale, ws, L.out_scale)
    if not (np.array_equal(mult, L.multiplier) and np.array_equal(shift, L.shift)):
        return "scales give other requantization multipliers than the entry's table"
    return ""
