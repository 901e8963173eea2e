"""Byte-level pieces of image format v1 (docs/image-format.md): the header codec (fields and CRC),
the METADATA section codec, tensor table entries, alignment and row sizes, with names and numbers
from elk.spec. Not here: writing or checking a whole image (elk.image)."""

from __future__ import annotations

import struct
import zlib

from elk import spec
from elk.convert import Config
from elk.errors import FormatError

HDR = {name: (off, ctype) for name, off, ctype in spec.HEADER_FIELDS}
KIND_NAMES = {v: k for k, v in spec.SECTION_KINDS.items()}
ROLE_NAMES = {v: k for k, v in spec.TENSOR_ROLES.items()}
TYPES = {tid: (name, be, bb) for name, (tid, be, bb) in spec.TENSOR_TYPES.items()}
TYPE_IDS = {name: tid for name, (tid, _, _) in spec.TENSOR_TYPES.items()}
CONFIG_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len",
                 "rope_theta", "norm_eps", "head_dim")
IMAGE_TYPES = ("F32", "F16", "Q4_0", "Q8_0")  # types an image may hold (BF16 is import-only)
_FMT = {"u8": "B", "u16": "<H", "u32": "<I", "u64": "<Q", "f32": "<f"}


class ImageError(FormatError):
    """A malformed image; the message names the file and the part that is wrong."""


def align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def row_bytes(type_id: int, cols: int) -> int:
    if type_id not in TYPES or cols <= 0:
        return 0
    _, be, bb = TYPES[type_id]
    return 0 if cols % be else cols // be * bb


# ---------------------------------------------------------------------------------------------
# Header


def pack_header(fields: dict, header_size: int = spec.IMAGE_HEADER_SIZE) -> bytes:
    """256 header bytes from a dict of field values; the CRC is computed last."""
    buf = bytearray(header_size)
    for name, (off, ctype) in HDR.items():
        if name == "header_crc32" or name not in fields:
            continue
        value = fields[name]
        if ctype == "u8[32]":
            buf[off:off + 32] = bytes(value).ljust(32, b"\0")[:32]
        elif ctype.startswith("char["):
            n = int(ctype[5:-1])
            raw = value.encode("utf-8")[: n - 1] if isinstance(value, str) else bytes(value)[: n - 1]
            raw = raw.decode("utf-8", "ignore").encode("utf-8")  # never cut a character in half
            buf[off:off + n] = raw.ljust(n, b"\0")
        else:
            struct.pack_into(_FMT[ctype], buf, off, value)
    struct.pack_into("<I", buf, header_size - 4, zlib.crc32(bytes(buf[: header_size - 4])))
    return bytes(buf)


def unpack_header(buf: bytes) -> dict:
    out = {}
    for name, (off, ctype) in HDR.items():
        if ctype == "u8[32]":
            out[name] = bytes(buf[off:off + 32])
        elif ctype.startswith("char["):
            n = int(ctype[5:-1])
            out[name] = bytes(buf[off:off + n]).split(b"\0", 1)[0].decode("utf-8", "replace")
        else:
            out[name] = struct.unpack_from(_FMT[ctype], buf, off)[0]
    return out


def config_fields(cfg: Config) -> dict:
    f = {k: getattr(cfg, k) for k in CONFIG_FIELDS}
    f["arch"] = spec.ARCH_LLAMA
    f["model_flags"] = spec.MODEL_FLAG_TIED_OUTPUT if cfg.tied_output else 0
    return f


# ---------------------------------------------------------------------------------------------
# Small sections


def encode_metadata(meta: dict) -> bytes:
    out = [struct.pack("<I", len(meta))]
    for k, v in meta.items():
        kb, vb = str(k).encode("utf-8"), str(v).encode("utf-8")
        out += [struct.pack("<I", len(kb)), kb, struct.pack("<I", len(vb)), vb]
    return b"".join(out)


def decode_metadata(buf: bytes, where: str = "METADATA") -> dict:
    def take(pos, n):
        if pos + n > len(buf):
            raise ImageError(f"{where}: entry runs past the end of the section")
        return buf[pos:pos + n], pos + n

    raw, pos = take(0, 4)
    count = struct.unpack("<I", raw)[0]
    if count > len(buf) // 8:
        raise ImageError(f"{where}: count {count} does not fit in {len(buf)} bytes")
    meta = {}
    for _ in range(count):
        raw, pos = take(pos, 4)
        k, pos = take(pos, struct.unpack("<I", raw)[0])
        raw, pos = take(pos, 4)
        v, pos = take(pos, struct.unpack("<I", raw)[0])
        try:
            meta[k.decode("utf-8")] = v.decode("utf-8")
        except UnicodeDecodeError:
            raise ImageError(f"{where}: key or value is not UTF-8") from None
    return meta


def tensor_entry(name, type_id, role, layer, rows, cols, offset, size) -> bytes:
    nb = name.encode("utf-8")
    if len(nb) >= spec.TENSOR_NAME_MAX:
        raise FormatError(f"tensor name '{name}' is longer than {spec.TENSOR_NAME_MAX - 1} bytes")
    e = nb.ljust(spec.TENSOR_NAME_MAX, b"\0") + struct.pack("<IHHIIQQ", type_id, role, layer, rows, cols, offset, size)
    return e.ljust(spec.TENSOR_ENTRY_SIZE, b"\0")
