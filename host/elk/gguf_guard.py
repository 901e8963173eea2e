"""A bounded pre-scan of a GGUF file's header and key/value section, run before the gguf package reads it.

The gguf package trusts the counts in the file: a crafted array length of 2^40 keeps its reader looping
for hours (found by fuzz/fuzz_checkpoint.py, regression in tests/fuzz-corpus/regressions/checkpoint/).
This scan walks the same structure with every count checked against the bytes that remain, so its work
is bounded by the file size, then checks every tensor's data (offset and size from its info and ggml type)
lies inside the file; it raises FormatError with one line naming what is missing, where, and the file's
size (`x.gguf: truncated: tensor blk.3.attn_q.weight needs 2048 bytes at offset 41024, file has 40000`),
where the gguf package would report a numpy reshape. It does not decode values (except general.alignment).
"""

from __future__ import annotations

import pathlib
import struct

from elk.errors import FormatError

# GGUF value types (gguf spec): id -> byte size of one scalar; 8 = string, 9 = array
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9
U32 = 4
MIN_TENSOR_INFO = 8 + 4 + 4 + 8  # name length, n_dims, type, offset (name and dims may add more)
MAX_DEPTH = 4
MAX_DIMS = 4  # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32  # tensor data alignment when general.alignment is absent (gguf spec)


class _Scan:
    def __init__(self, buf: bytes, path):
        self.buf, self.path, self.pos = buf, path, 0

    def fail(self, what: str):
        raise FormatError(f"{self.path}: damaged GGUF file: {what} (at byte {self.pos})")

    def short(self, what: str, need: int, at: int, kind: str = "truncated", needs: str = "needs"):
        """The one-line message for bytes the file does not have: what, how many, where, file size."""
        raise FormatError(f"{self.path}: {kind}: {what} {needs} {need} bytes at offset {at}, "
                          f"file has {len(self.buf)}")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > len(self.buf) - self.pos:
            self.short(what, n, self.pos)
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def u32(self, what):
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what):
        return struct.unpack("<Q", self.take(8, what))[0]

    def string(self, what) -> bytes:
        return self.take(self.u64(f"{what} length"), what)

    def value(self, vtype: int, depth: int, what: str):
        if vtype in SCALAR:
            self.take(SCALAR[vtype], what)
        elif vtype == STRING:
            self.string(what)
        elif vtype == ARRAY:
            if depth >= MAX_DEPTH:
                self.fail(f"{what}: arrays nested deeper than {MAX_DEPTH}")
            itype, n = self.u32(f"{what} item type"), self.u64(f"{what} length")
            left = len(self.buf) - self.pos
            if itype in SCALAR:
                if n * SCALAR[itype] > left:  # a cut file, or a count no file could hold (fuzz finding)
                    self.short(f"{what}: {n} items of {SCALAR[itype]} bytes do not fit:", n * SCALAR[itype],
                               self.pos, "truncated or damaged", "they need")
                self.pos += n * SCALAR[itype]
            elif itype in (STRING, ARRAY):
                if n * 8 > left:  # every string or array item is at least 8 bytes long
                    self.short(f"{what}: {n} items do not fit:", n * 8, self.pos, "truncated or damaged",
                               "they need at least")
                for _ in range(n):
                    self.value(itype, depth + 1, what)
            else:
                self.fail(f"{what}: unknown array item type {itype}")
        else:
            self.fail(f"{what}: unknown value type {vtype}")


def check(path) -> None:
    """FormatError unless the header, every key/value, every tensor info and every tensor's data fit
    the file: one line saying what is missing, where, and how long the file is."""
    import mmap

    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size < 24:
                raise FormatError(f"{path}: truncated: the GGUF header needs 24 bytes at offset 0, file has {size}")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # a 600 MB model is not read in
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror})") from None
    s = _Scan(buf, path)
    if s.take(4, "magic") != b"GGUF":
        s.fail("bad magic")
    version = s.u32("version")
    if version not in (2, 3):
        s.fail(f"version {version} (elk reads GGUF v2 and v3)")
    n_tensors, n_kv = s.u64("tensor count"), s.u64("key/value count")
    if n_kv * (8 + 4) > len(buf) - s.pos:
        s.short(f"{n_kv} key/value pairs do not fit:", n_kv * 12, s.pos, "truncated or damaged", "they need at least")
    alignment = DEFAULT_ALIGNMENT
    for i in range(n_kv):
        key = _printable(s.string(f"key {i} name"))
        vtype = s.u32(f"key {i} ({key}) type")
        at = s.pos
        s.value(vtype, 0, f"key {i} ({key}) value")
        if key == "general.alignment" and vtype == U32:
            alignment = struct.unpack_from("<I", buf, at)[0]
            if alignment == 0 or alignment & (alignment - 1):
                s.fail(f"general.alignment {alignment} is not a power of two")
    if n_tensors * MIN_TENSOR_INFO > len(buf) - s.pos:
        s.short(f"{n_tensors} tensor infos do not fit:", n_tensors * MIN_TENSOR_INFO, s.pos,
                "truncated or damaged", "they need at least")
    infos = [_tensor_info(s, i) for i in range(n_tensors)]
    data_start = -(-s.pos // alignment) * alignment
    for name, ggml_type, n_el, ne0, offset in infos:
        nbytes = _tensor_bytes(s, name, ggml_type, n_el, ne0)
        if data_start + offset + nbytes > len(buf):
            s.short(f"tensor {name}", nbytes, data_start + offset)


def printable_name(name: str, limit: int = 96) -> str:
    """A tensor or key name from a GGUF for a one-line message (control characters escaped, cut)."""
    return _printable(name.encode("utf-8", "surrogateescape"), limit)


def _printable(raw: bytes, limit: int = 96) -> str:
    """A key or tensor name for a one-line message: control characters escaped, long names cut."""
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in raw.decode("utf-8", "replace"))
    return text if len(text) <= limit else text[:limit] + "..."


def _tensor_info(s: _Scan, i: int):
    """(name, ggml type, elements, ne[0], data offset) of tensor info i."""
    name = _printable(s.string(f"tensor info {i} name"))
    n_dims = s.u32(f"tensor {name} dimension count")
    if not 1 <= n_dims <= MAX_DIMS:
        s.fail(f"tensor {name}: {n_dims} dimensions (GGUF allows 1..{MAX_DIMS})")
    dims = [s.u64(f"tensor {name} dimensions") for _ in range(n_dims)]
    ggml_type = s.u32(f"tensor {name} type")
    offset = s.u64(f"tensor {name} data offset")
    n_el = 1
    for d in dims:
        n_el *= d
    return name, ggml_type, n_el, dims[0], offset


def _tensor_bytes(s: _Scan, name: str, ggml_type: int, n_el: int, ne0: int) -> int:
    """Bytes of a tensor's data from its ggml type's block size (the gguf package's table)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        s.fail(f"tensor {name}: unknown ggml type {ggml_type}")
    if ne0 % block:
        s.fail(f"tensor {name}: row of {ne0} values is not a whole number of {block}-value blocks")
    return n_el // block * block_bytes
