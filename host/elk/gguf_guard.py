"""A bounded pre-scan of a GGUF file's header and key/value section, run before the gguf package reads it.

The gguf package trusts the counts in the file: a crafted array length of 2^40 keeps its reader looping
for hours (found by fuzz/fuzz_checkpoint.py, regression in tests/fuzz-corpus/regressions/checkpoint/).
This scan walks the same structure with every count checked against the bytes that remain, so its work
is bounded by the file size, and raises FormatError naming what is wrong. It does not decode values.
"""

from __future__ import annotations

import pathlib
import struct

from elk.errors import FormatError

# GGUF value types (gguf spec): id -> byte size of one scalar; 8 = string, 9 = array
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9
MIN_TENSOR_INFO = 8 + 4 + 4 + 8  # name length, n_dims, type, offset (name and dims may add more)
MAX_DEPTH = 4


class _Scan:
    def __init__(self, buf: bytes, path):
        self.buf, self.path, self.pos = buf, path, 0

    def fail(self, what: str):
        raise FormatError(f"{self.path}: damaged GGUF file: {what} (at byte {self.pos})")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > len(self.buf) - self.pos:
            self.fail(f"{what} needs {n} bytes, {len(self.buf) - self.pos} left")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def u32(self, what):
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what):
        return struct.unpack("<Q", self.take(8, what))[0]

    def string(self, what):
        self.take(self.u64(f"{what} length"), what)

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
                if n * SCALAR[itype] > left:
                    self.fail(f"{what}: {n} items of {SCALAR[itype]} bytes do not fit in {left} bytes")
                self.pos += n * SCALAR[itype]
            elif itype in (STRING, ARRAY):
                if n * 8 > left:  # every string or array item is at least 8 bytes long
                    self.fail(f"{what}: {n} items do not fit in {left} bytes")
                for _ in range(n):
                    self.value(itype, depth + 1, what)
            else:
                self.fail(f"{what}: unknown array item type {itype}")
        else:
            self.fail(f"{what}: unknown value type {vtype}")


def check(path) -> None:
    """FormatError unless the header and every key/value fit the file; tensor infos are count-checked."""
    import mmap

    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            if f.seek(0, 2) < 24:
                raise FormatError(f"{path}: damaged GGUF file: shorter than its 24-byte header")
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
        s.fail(f"{n_kv} key/value pairs do not fit in the file")
    for i in range(n_kv):
        s.string(f"key {i}")
        s.value(s.u32(f"key {i} type"), 0, f"value {i}")
    if n_tensors * MIN_TENSOR_INFO > len(buf) - s.pos:
        s.fail(f"{n_tensors} tensor infos do not fit in the file")
