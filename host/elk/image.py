"""Image format v1 (docs/image-format.md) in Python: the writer (`write_image`), the checking reader
(`read_image`) and `verify_image` (header CRC + payload SHA-256), built on the byte-level codecs of
elk.image_format. Constants come only from elk.spec.

Not here: quantization numerics (elk.quant), checkpoint readers (elk.convert), signatures (elk.trust).
"""

from __future__ import annotations

import dataclasses
import hashlib
import mmap
import os
import pathlib
import struct
import zlib

import numpy as np

from elk import spec
from elk.convert import Config, Model, default_system_prompt, detect_chat_template, padded_vocab, tensor_name
from elk.errors import FormatError
from elk.image_format import (CONFIG_FIELDS, IMAGE_TYPES, KIND_NAMES, ROLE_NAMES, TYPE_IDS, TYPES, ImageError,
                              align_up, config_fields, decode_metadata, encode_metadata, pack_header, row_bytes,
                              tensor_entry, unpack_header)


# ---------------------------------------------------------------------------------------------
# Writer


@dataclasses.dataclass
class TensorReport:
    name: str
    type: str
    shape: tuple
    nbytes: int
    rmse: float
    max_err: float
    note: str = ""


@dataclasses.dataclass
class PackResult:
    path: pathlib.Path
    image_size: int
    tensors: list  # TensorReport
    recipe: str
    warnings: list = dataclasses.field(default_factory=list)  # e.g. recipe rules that matched nothing


def _tokenizer_bytes(model: Model, tokenizer) -> bytes:
    if tokenizer is not None:
        return bytes(tokenizer)
    if model.vocab is None:
        raise FormatError(f"{model.source or 'model'}: no tokenizer (pass --tokenizer FILE)")
    from elk import tokenizer as tok

    vocab = model.vocab
    if len(vocab.pieces) > model.config.vocab_size:
        raise FormatError(f"tokenizer has {len(vocab.pieces)} tokens, model vocab_size is {model.config.vocab_size}")
    return tok.encode_section(padded_vocab(vocab, model.config.vocab_size))


def _metadata(model: Model, name, recipe_text: str, extra) -> dict:
    """METADATA keys: name, source, recipe, the chat template when known, then the model's and the
    caller's own keys (later ones win)."""
    meta = {"general.name": name or model.name or "model", "general.source": model.source,
            "quant.recipe": recipe_text}
    chat = model.chat_template or detect_chat_template(getattr(model.vocab, "chat_template", None))
    if chat:
        meta["chat.template"] = chat
    system = default_system_prompt(getattr(model.vocab, "chat_template", None)) if chat == "chatml" else None
    if system:  # the checkpoint's template writes it when a conversation has no system message
        meta["chat.system"] = system
    meta.update(model.metadata or {})
    meta.update(extra or {})
    return meta


def _tensor_plan(model: Model, rec, q) -> list:
    """Per tensor in image order: [name, role, layer, rows, cols, type, recipe note, bytes]; every
    size is known from shapes and chosen types before any tensor is quantized."""
    plan = []
    for role, layer in model.tensor_keys():
        tname = tensor_name(role, layer)
        rows, cols = model.tensors[(role, layer)].shape
        ttype, note = rec.choose(tname, role, cols)
        plan.append([tname, role, layer, rows, cols, ttype, note, rows * q.row_bytes(ttype, cols)])
    return plan


def _layout(plan: list, kinds: list, blobs: dict, alignment: int) -> tuple:
    """({kind: (offset, size)}, end): the section table after the header, then each section aligned
    (the NPU section, last, is placed by the caller once written); appends each tensor's data offset
    to its plan row."""
    pos = align_up(spec.IMAGE_HEADER_SIZE + len(kinds) * spec.SECTION_ENTRY_SIZE, alignment)
    sections = {"TENSOR_TABLE": (pos, spec.TENSOR_TABLE_HEAD_SIZE + len(plan) * spec.TENSOR_ENTRY_SIZE)}
    pos = data_start = align_up(pos + sections["TENSOR_TABLE"][1], alignment)
    for p in plan:
        pos = align_up(pos, alignment)
        p.append(pos)
        pos += p[7]
    sections["TENSOR_DATA"] = (data_start, pos - data_start)
    for kind in ("TOKENIZER", "METADATA"):
        if kind in kinds:
            pos = align_up(pos, alignment)
            sections[kind] = (pos, len(blobs[kind]))
            pos += len(blobs[kind])
    return sections, pos


_WINDOW = 2 << 20  # the PMD size on x86-64 and arm64 with 4 KiB pages
_ZEROS = bytes(_WINDOW)


class _WindowWriter:
    """Writes a file front to back so that the page cache holds it in whole 2 MiB folios: a window
    (2 MiB, 2 MiB-aligned) that a piece covers only in part is first written whole with zeros,
    then the piece goes into the folio that made. Where the page cache keeps large folios (ext4 and
    XFS on Linux 6.x) a write sizes its folios by its own length and alignment, so pieces written as
    they come left the folios around every tensor boundary small, and decode reads small folios
    slower (docs/performance.md, "Huge pages"). No buffer: the file under it is sparse (zeros), so
    priming a window changes no byte, and the pieces are written where they are."""

    def __init__(self, f, size: int):
        f.flush()
        self.fd, self.size = f.fileno(), size
        self.end = 0      # forward only: nothing before `end` may be written again
        self.primed = -1  # windows up to this index hold their folio (primed or written whole)

    def write_at(self, off: int, data) -> None:
        mv = memoryview(data).cast("B")
        assert off >= self.end and off + len(mv) <= self.size, (off, len(mv), self.end, self.size)
        if not len(mv):
            return
        self.end = off + len(mv)
        for w in range(max(off // _WINDOW, self.primed + 1), (self.end - 1) // _WINDOW + 1):
            base = w * _WINDOW
            whole = min(_WINDOW, self.size - base)
            if not (off <= base and base + whole <= self.end):  # covered in part: zeros first
                self._pwrite(memoryview(_ZEROS)[:whole], base)
        self.primed = max(self.primed, (self.end - 1) // _WINDOW)
        self._pwrite(mv, off)

    def _pwrite(self, mv, off: int) -> None:
        while len(mv):
            n = os.pwrite(self.fd, mv, off)
            off, mv = off + n, mv[n:]


def _npu_writer(npu):
    """`npu` as a function (file, offset) -> size that writes the section at offset: bytes are written
    as they are; a callable (elk.npu.offload's streaming builder) is used as it is."""
    if callable(npu):
        return npu

    def write(f, offset):
        f.seek(offset)
        f.write(npu)
        return len(npu)
    return write


def write_image(path, model: Model, *, quant="f32", recipe=None, security_counter: int = 0, name=None,
                tokenizer: bytes = None, npu=None, metadata: dict = None,
                alignment: int = spec.IMAGE_ALIGN, progress=None) -> PackResult:
    """Pack `model` into an image at `path`; tensors are quantized one at a time and streamed to
    the file. `quant` is the default type, `recipe` per-tensor rules (see elk.quant.parse_recipe).
    `npu`: the NPU section as bytes, or a function (file, offset) -> size that writes it at offset
    (streamed after every other section, so it can be built layer by layer). The image goes to
    `<path>.part` and is renamed to `path` only when complete; any failure removes the part file.
    `progress(done_bytes, total_bytes, name)` is called after each tensor."""
    from elk import quant as q

    model.validate()
    if alignment < spec.IMAGE_ALIGN or alignment & (alignment - 1):
        raise FormatError(f"alignment {alignment} must be a power of two >= {spec.IMAGE_ALIGN}")
    if not 0 <= int(security_counter) < 2 ** 32:
        raise FormatError(f"security counter {security_counter} is outside 0..4294967295")
    cfg = model.config
    rec = q.parse_recipe(quant, recipe)
    tok = _tokenizer_bytes(model, tokenizer)
    if len(tok) >= 4 and struct.unpack_from("<I", tok)[0] != cfg.vocab_size:
        raise FormatError(f"tokenizer has {struct.unpack_from('<I', tok)[0]} tokens, model vocab_size is {cfg.vocab_size}")
    meta = _metadata(model, name, rec.text(), metadata)
    meta_bytes = encode_metadata(meta)
    plan = _tensor_plan(model, rec, q)
    if npu is not None and not callable(npu) and not len(npu):
        npu = None  # empty bytes: no NPU section, as before
    kinds = ["TENSOR_TABLE", "TENSOR_DATA", "TOKENIZER", "METADATA"] + (["NPU"] if npu is not None else [])
    hs = spec.IMAGE_HEADER_SIZE
    sections, image_size = _layout(plan, kinds, {"TOKENIZER": tok, "METADATA": meta_bytes}, alignment)

    path = pathlib.Path(path)
    table = struct.pack("<IIQ", len(plan), spec.TENSOR_ENTRY_SIZE, 0) + b"".join(
        tensor_entry(p[0], TYPE_IDS[p[5]], spec.TENSOR_ROLES[p[1]], p[2], p[3], p[4], p[8], p[7]) for p in plan)
    reports, total, done = [], sum(p[7] for p in plan), 0
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "wb") as f:
            f.truncate(image_size)  # gaps between sections and tensors read as zero bytes
            w = _WindowWriter(f, image_size)
            w.write_at(sections["TENSOR_TABLE"][0], table)
            for tname, role, layer, rows, cols, ttype, note, size, off in plan:
                raw, rmse, mx = _encode_tensor(model.tensors[(role, layer)], ttype, tname, q)
                assert raw.size == size, (tname, raw.size, size)
                w.write_at(off, np.ascontiguousarray(raw))  # no bytes copy of the tensor
                del raw
                reports.append(TensorReport(tname, ttype, (rows, cols), size, rmse, mx, note))
                done += size
                if progress:
                    progress(done, total, tname)
            for kind, blob in (("TOKENIZER", tok), ("METADATA", meta_bytes)):
                w.write_at(sections[kind][0], blob)
            if npu is not None:
                off = align_up(image_size, alignment)
                sections["NPU"] = (off, int(_npu_writer(npu)(f, off)))
                image_size = off + sections["NPU"][1]
                f.truncate(image_size)
            f.seek(hs)
            f.write(b"".join(struct.pack("<IIQQQ", spec.SECTION_KINDS[k], spec.SECTION_VERSION, *sections[k], 0)
                             for k in kinds))
        digest = _sha256_range(tmp, hs, image_size - hs)
        fields = dict(config_fields(cfg), magic=spec.IMAGE_MAGIC, version=spec.IMAGE_VERSION, header_size=hs,
                      flags=0, alignment=alignment, image_size=image_size, section_table_offset=hs,
                      section_count=len(kinds), section_entry_size=spec.SECTION_ENTRY_SIZE,
                      payload_offset=hs, payload_size=image_size - hs, payload_sha256=digest,
                      security_counter=int(security_counter), name=meta["general.name"])
        with open(tmp, "r+b") as f:
            f.write(pack_header(fields))
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except OSError as e:
        raise FormatError(f"{path}: cannot write ({e.strerror})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    unused = [f"recipe rule '{g}={t.lower()}' matched no tensor (names look like blk.0.attn_q, token_embd, "
              f"output)" for g, t in rec.unused_rules()]
    return PackResult(path, image_size, reports, rec.text(), unused)


def _encode_tensor(t, ttype, tname, q):
    """(uint8 bytes, rmse, max_abs_err) for one tensor; source bytes are kept when already `ttype`."""
    if t.native is not None and t.native[0] == ttype:
        raw = np.frombuffer(t.native[1], dtype=np.uint8)
        if not _native_finite(raw, ttype):  # copied bytes get the same check as converted floats
            raise FormatError(f"tensor {tname} contains NaN or infinite values (or scales)")
        return raw, 0.0, 0.0
    x = t.load()
    if not np.all(np.isfinite(x)):
        raise FormatError(f"tensor {tname} contains NaN or infinite values")
    raw = q.quantize(x, ttype).reshape(-1)
    rmse, mx = q.error_stats(x, raw, ttype) if ttype != "F32" else (0.0, 0.0)
    return raw, rmse, mx


def _native_finite(raw: np.ndarray, ttype: str) -> bool:
    """True when every float (F32/F16) or every block's fp16 scale (Q8_0/Q4_0) in raw is finite."""
    if ttype == "F32":
        vals = raw.view("<f4")
    elif ttype == "F16":
        vals = raw.view("<f2")
    else:
        block = spec.TENSOR_TYPES[ttype][2]  # bytes per block; the fp16 scale is its first 2
        vals = np.ascontiguousarray(raw.reshape(-1, block)[:, :2]).view("<f2")
    return bool(np.isfinite(vals).all())


def _sha256_range(path, offset: int, size: int) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = size
        while left > 0:
            chunk = f.read(min(left, 1 << 20))  # 1 MiB reads: packing's memory stays small
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.digest()


# ---------------------------------------------------------------------------------------------
# Reader: every check in docs/image-format.md "What a reader checks", each failure one line


@dataclasses.dataclass
class TensorInfo:
    name: str
    type: str  # "F32", "Q4_0", ...
    type_id: int
    role: str
    layer: int
    rows: int
    cols: int
    offset: int
    size: int
    data: np.ndarray  # uint8 view of the stored bytes (read-only)

    def array(self) -> np.ndarray:
        """Dequantized float32 (rows, cols)."""
        from elk import quant

        return quant.dequantize(self.data, self.type, (self.rows, self.cols))


@dataclasses.dataclass
class Image:
    path: pathlib.Path
    header: dict
    config: Config
    sections: dict  # kind name -> (version, offset, size)
    tensors: dict  # name -> TensorInfo, in table order
    tokenizer: bytes  # the TOKENIZER section bytes (elk.tokenizer.decode_section reads them)
    metadata: dict
    npu: bytes = None
    trailer: bytes = None

    def tensor(self, role: str, layer: int = 0) -> TensorInfo:
        return self.tensors[tensor_name(role, layer)]

    def vocab(self):
        from elk import tokenizer as tok

        return tok.decode_section(self.tokenizer)


def read_image(path) -> Image:
    """Open and check an image (everything but the payload hash); raises ImageError."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < spec.IMAGE_HEADER_SIZE:
                raise ImageError(f"{path}: file is {size} bytes, shorter than the {spec.IMAGE_HEADER_SIZE}-byte header")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    return _Reader(path, buf).read()


class _Reader:
    def __init__(self, path, buf):
        self.path, self.buf, self.size = path, buf, len(buf)

    def fail(self, msg):
        raise ImageError(f"{self.path}: {msg}")

    def read(self) -> Image:
        h = self.check_header()
        cfg = self.check_config(h)
        sections = self.check_sections(h)
        tensors = self.check_tensors(h, cfg, sections)
        tok = self.section_bytes(sections["TOKENIZER"])
        self.check_tokenizer(tok, cfg)
        meta = decode_metadata(self.section_bytes(sections["METADATA"]), f"{self.path}: METADATA") \
            if "METADATA" in sections else {}
        npu = self.section_bytes(sections["NPU"]) if "NPU" in sections else None
        return Image(self.path, h, cfg, sections, tensors, tok, meta, npu, self.check_trailer(h))

    def section_bytes(self, sec) -> bytes:
        _, off, size = sec
        return bytes(self.buf[off:off + size])

    def check_header(self) -> dict:
        h = unpack_header(self.buf[: spec.IMAGE_HEADER_SIZE])
        if h["magic"] != spec.IMAGE_MAGIC:
            self.fail(f"bad magic 0x{h['magic']:08X} (not an elk image; expected 0x{spec.IMAGE_MAGIC:08X} 'ELK1')")
        if h["version"] != spec.IMAGE_VERSION:
            self.fail(f"unsupported image version {h['version']} (this reader knows {spec.IMAGE_VERSION})")
        hs = h["header_size"]
        if hs < spec.IMAGE_HEADER_SIZE or hs % 4 or hs > self.size:
            self.fail(f"header_size {hs} is invalid (>= {spec.IMAGE_HEADER_SIZE}, within the file)")
        stored = struct.unpack_from("<I", self.buf, hs - 4)[0]
        crc = zlib.crc32(self.buf[: hs - 4])
        if stored != crc:
            self.fail(f"header CRC mismatch (stored 0x{stored:08X}, computed 0x{crc:08X})")
        a = h["alignment"]
        if a < spec.IMAGE_ALIGN or a & (a - 1) or a > 1 << 20:
            self.fail(f"header alignment {a} is not a power of two >= {spec.IMAGE_ALIGN}")
        if not hs <= h["image_size"] <= self.size:
            self.fail(f"image_size {h['image_size']} is outside the file ({self.size} bytes; truncated?)")
        if h["payload_offset"] != hs or h["payload_size"] != h["image_size"] - hs:
            self.fail(f"payload [{h['payload_offset']}, +{h['payload_size']}) does not span header end to image_size")
        if h["section_table_offset"] != hs or h["section_entry_size"] != spec.SECTION_ENTRY_SIZE:
            self.fail("section table offset or entry size is not what v1 requires")
        if not 1 <= h["section_count"] <= spec.MAX_SECTIONS:
            self.fail(f"section_count {h['section_count']} is outside 1..{spec.MAX_SECTIONS}")
        if h["arch"] != spec.ARCH_LLAMA:
            self.fail(f"unknown arch {h['arch']}")
        if h["model_flags"] & ~spec.MODEL_FLAG_TIED_OUTPUT:
            self.fail(f"unknown model_flags bits 0x{h['model_flags']:X}")
        if h["flags"] & ~spec.IMAGE_FLAG_HAS_TRAILER:  # as the C parser: a future flag may change the layout
            self.fail(f"unknown header flags bits 0x{h['flags']:X}")
        return h

    def check_config(self, h) -> Config:
        cfg = Config(**{k: h[k] for k in CONFIG_FIELDS},
                     tied_output=bool(h["model_flags"] & spec.MODEL_FLAG_TIED_OUTPUT))
        if h["head_dim"] == 0:
            self.fail("header config: head_dim is 0")
        if not 0 < h["norm_eps"] < 1:
            self.fail(f"header config: norm_eps {h['norm_eps']:g} is not in (0, 1)")
        try:
            cfg.validate("header config")
        except FormatError as e:
            self.fail(str(e))
        return cfg

    def check_sections(self, h) -> dict:
        hs, a, end = h["header_size"], h["alignment"], h["image_size"]
        table_end = hs + h["section_count"] * spec.SECTION_ENTRY_SIZE
        if table_end > end:
            self.fail("section table runs past image_size")
        sections, spans = {}, []
        for i in range(h["section_count"]):
            kind, ver, off, size, _ = struct.unpack_from("<IIQQQ", self.buf, hs + i * spec.SECTION_ENTRY_SIZE)
            name = KIND_NAMES.get(kind)
            if name is None:
                self.fail(f"section {i}: unknown kind {kind}")
            if name in sections:
                self.fail(f"section {name} appears twice")
            if ver != spec.SECTION_VERSION:
                self.fail(f"section {name}: unsupported version {ver}")
            if off % a:
                self.fail(f"section {name}: offset {off} is not a multiple of the alignment {a}")
            if off < table_end or off + size > end:
                self.fail(f"section {name} [{off}, +{size}) lies outside the payload [{table_end}, {end})")
            sections[name] = (ver, off, size)
            spans.append((off, off + size, name))
        spans.sort()
        for (s0, e0, n0), (s1, _, n1) in zip(spans, spans[1:]):
            if s1 < e0:
                self.fail(f"sections {n0} and {n1} overlap")
        for need in ("TENSOR_TABLE", "TENSOR_DATA", "TOKENIZER"):
            if need not in sections:
                self.fail(f"required section {need} is missing")
        return sections

    def check_tensors(self, h, cfg, sections) -> dict:
        _, toff, tsize = sections["TENSOR_TABLE"]
        _, doff, dsize = sections["TENSOR_DATA"]
        if tsize < spec.TENSOR_TABLE_HEAD_SIZE:
            self.fail(f"TENSOR_TABLE is {tsize} bytes, shorter than its {spec.TENSOR_TABLE_HEAD_SIZE}-byte head")
        count, esize, _ = struct.unpack_from("<IIQ", self.buf, toff)
        if esize != spec.TENSOR_ENTRY_SIZE:
            self.fail(f"TENSOR_TABLE entry size {esize} (expected {spec.TENSOR_ENTRY_SIZE})")
        if spec.TENSOR_TABLE_HEAD_SIZE + count * esize > tsize:
            self.fail(f"TENSOR_TABLE: {count} entries do not fit in {tsize} bytes (truncated tensor table)")
        tensors, keys, spans = {}, set(), []
        for i in range(count):
            tensors_entry = self.tensor_entry(toff + spec.TENSOR_TABLE_HEAD_SIZE + i * esize, i, cfg, h["alignment"],
                                              doff, dsize)
            t = tensors_entry
            if t.name in tensors or (t.role, t.layer) in keys:
                self.fail(f"tensor '{t.name}' appears twice")
            tensors[t.name] = t
            keys.add((t.role, t.layer))
            spans.append((t.offset, t.offset + t.size, t.name))
        spans.sort()
        for (s0, e0, n0), (s1, _, n1) in zip(spans, spans[1:]):
            if s1 < e0:
                self.fail(f"tensors '{n0}' and '{n1}' overlap")
        for role, layer in cfg.tensor_keys():
            name = tensor_name(role, layer)
            t = tensors.get(name)
            if t is None or (t.role, t.layer) != (role, layer):
                self.fail(f"required tensor {name} is missing")
            want = cfg.tensor_shape(role)
            if (t.rows, t.cols) != want:
                self.fail(f"tensor '{name}' is {t.rows}x{t.cols}, the config needs {want[0]}x{want[1]}")
            if role in ("ATTN_NORM", "FFN_NORM", "OUTPUT_NORM") and t.type != "F32":
                self.fail(f"norm tensor '{name}' is {t.type}; norms must be F32")
        if cfg.tied_output and ("OUTPUT", 0) in keys:
            self.fail("output.weight is present but model_flags says the output is tied")
        t = tensors.get(tensor_name("ROPE_FREQS", 0))
        if t is not None and ((t.rows, t.cols) != cfg.tensor_shape("ROPE_FREQS") or t.type != "F32"):
            self.fail(f"tensor '{t.name}' is {t.type} {t.rows}x{t.cols}; RoPE divisors are F32 "
                      f"1x{cfg.head_dim // 2}")
        return tensors

    def tensor_entry(self, pos, i, cfg, a, doff, dsize) -> TensorInfo:
        raw = bytes(self.buf[pos:pos + spec.TENSOR_NAME_MAX])
        if b"\0" not in raw:
            self.fail(f"tensor {i}: name is not NUL-terminated")
        try:
            name = raw.split(b"\0", 1)[0].decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"tensor {i}: name is not UTF-8")
        tid, role_id, layer, rows, cols, off, size = struct.unpack_from("<IHHIIQQ", self.buf, pos + spec.TENSOR_NAME_MAX)
        if tid not in TYPES or TYPES[tid][0] not in IMAGE_TYPES:
            self.fail(f"tensor '{name}': unknown type {tid}")
        role = ROLE_NAMES.get(role_id)
        if role is None:
            self.fail(f"tensor '{name}': unknown role {role_id}")
        per_layer = role in spec.PER_LAYER_ROLES
        if (per_layer and layer >= cfg.n_layers) or (not per_layer and layer):
            self.fail(f"tensor '{name}': layer {layer} out of range for {role}")
        rb = row_bytes(tid, cols)
        if rows == 0 or rb == 0:
            self.fail(f"tensor '{name}': {rows}x{cols} does not fit type {TYPES[tid][0]}")
        if size != rows * rb:
            self.fail(f"tensor '{name}': size {size} != rows x row_bytes = {rows * rb}")
        if off % a:
            self.fail(f"tensor '{name}': offset {off} is not a multiple of the alignment {a}")
        if off < doff or off + size > doff + dsize:
            self.fail(f"tensor '{name}' [{off}, +{size}) lies outside TENSOR_DATA [{doff}, +{dsize})")
        data = np.frombuffer(self.buf, dtype=np.uint8, count=size, offset=off)
        return TensorInfo(name, TYPES[tid][0], tid, role, layer, rows, cols, off, size, data)

    def check_tokenizer(self, tok: bytes, cfg) -> None:
        if len(tok) < spec.TOKENIZER_HEAD_SIZE:
            self.fail(f"TOKENIZER is {len(tok)} bytes, shorter than its {spec.TOKENIZER_HEAD_SIZE}-byte head")
        n, kind = struct.unpack_from("<II", tok)
        if kind not in (spec.TOKENIZER_KIND_SPM_BPE, spec.TOKENIZER_KIND_BYTE_BPE):
            self.fail(f"TOKENIZER: unknown kind {kind}")
        if n != cfg.vocab_size:
            self.fail(f"TOKENIZER has {n} tokens, header vocab_size is {cfg.vocab_size}")
        blob = spec.TOKENIZER_HEAD_SIZE + n * spec.TOKEN_ENTRY_SIZE
        if blob > len(tok):
            self.fail(f"TOKENIZER: {n} entries do not fit in {len(tok)} bytes")
        ent = np.frombuffer(tok, dtype="<u4", count=n * 4, offset=spec.TOKENIZER_HEAD_SIZE).reshape(n, 4)
        ends = ent[:, 0].astype(np.uint64) + ent[:, 1].astype(np.uint64)
        bad = np.nonzero(ends > len(tok) - blob)[0]
        if bad.size:
            self.fail(f"TOKENIZER: token {int(bad[0])} lies outside the string blob")
        types = ent[:, 3]
        bad = np.nonzero((types < 1) | (types > max(spec.TOKEN_TYPES.values())))[0]
        if bad.size:
            self.fail(f"TOKENIZER: token {int(bad[0])} has unknown type {int(types[bad[0]])}")
        from elk import tokenizer as tk

        try:
            tk.decode_section(tok)
        except FormatError as e:
            self.fail(str(e))

    def check_trailer(self, h):
        if not h["flags"] & spec.IMAGE_FLAG_HAS_TRAILER:
            return None
        end = h["image_size"]
        if end + 8 > self.size:
            self.fail("header says a trailer follows, but the file ends at image_size")
        magic, total = struct.unpack_from("<II", self.buf, end)
        if magic != spec.TRAILER_MAGIC:
            self.fail(f"trailer: bad magic 0x{magic:08X}")
        if total < 8 or end + total > self.size:
            self.fail(f"trailer: length {total} runs past the end of the file")
        return bytes(self.buf[end:end + total])


# ---------------------------------------------------------------------------------------------
# verify


@dataclasses.dataclass
class VerifyReport:
    path: pathlib.Path
    checks: list = dataclasses.field(default_factory=list)  # (part, ok, detail)
    image: Image = None

    def add(self, part: str, ok: bool, detail: str) -> None:
        self.checks.append((part, bool(ok), detail))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def lines(self) -> list:
        return [f"{'ok  ' if ok else 'FAIL'} {part}: {detail}" for part, ok, detail in self.checks]


def verify_image(path) -> VerifyReport:
    """Check header CRC, payload SHA-256 and structure, each reported separately. Never raises
    for a malformed image; ImageError only when the file cannot be read at all."""
    path = pathlib.Path(path)
    rep = VerifyReport(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(spec.IMAGE_HEADER_SIZE)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    if len(head) < spec.IMAGE_HEADER_SIZE:
        rep.add("header", False, f"file is {size} bytes, shorter than the {spec.IMAGE_HEADER_SIZE}-byte header")
        return rep
    h = unpack_header(head)
    if h["magic"] != spec.IMAGE_MAGIC:
        rep.add("header", False, f"bad magic 0x{h['magic']:08X} (not an elk image)")
        return rep
    hs = h["header_size"]
    if hs < spec.IMAGE_HEADER_SIZE or hs % 4 or hs > size:
        rep.add("header CRC-32", False, f"header_size {hs} is invalid")
        return rep
    if hs > len(head):  # a newer writer's longer header: the CRC sits in its last 4 bytes
        with open(path, "rb") as f:
            head = f.read(hs)
    crc, stored = zlib.crc32(head[: hs - 4]), struct.unpack_from("<I", head, hs - 4)[0]
    rep.add("header CRC-32", crc == stored,
            f"0x{stored:08X}" + ("" if crc == stored else f" stored, computed 0x{crc:08X}"))
    po, ps = h["payload_offset"], h["payload_size"]
    if po < spec.IMAGE_HEADER_SIZE or po + ps > size:
        rep.add("payload SHA-256", False, f"payload [{po}, +{ps}) lies outside the {size}-byte file (truncated?)")
    else:
        digest = _sha256_range(path, po, ps)
        good = digest == h["payload_sha256"]
        rep.add("payload SHA-256", good, digest.hex() if good else
                f"stored {h['payload_sha256'].hex()[:16]}…, computed {digest.hex()[:16]}… over {ps} bytes")
    try:
        rep.image = read_image(path)
        img = rep.image
        rep.add("structure", True, f"{len(img.sections)} sections, {len(img.tensors)} tensors, "
                                   f"{img.config.vocab_size} tokens")
    except ImageError as e:
        rep.add("structure", False, str(e).split(": ", 1)[-1])
    if rep.image is not None and rep.image.npu is not None:  # the NPU section's own CRC and bounds
        from elk.npu.section import NpuSectionError, parse_section, tflite_disagreements

        try:
            sec = parse_section(rep.image.npu)
            odd = tflite_disagreements(sec)  # entries vs their .tflite: one function for every backend
            if odd and not odd[0].startswith("not checked"):
                rep.add("NPU section", False, odd[0] + (f" (and {len(odd) - 1} more layers)" if len(odd) > 1 else ""))
            else:
                rep.add("NPU section", True, f"{len(sec.layers)} layers, chunk {sec.chunk} tokens"
                        + (f"; .tflite {odd[0]}" if odd else ""))
        except NpuSectionError as e:
            rep.add("NPU section", False, str(e).removeprefix("NPU section: "))
    return rep
