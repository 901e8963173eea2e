"""Image format v1: the writer produces the bytes docs/image-format.md describes, and the reader and
`elk verify` reject every kind of damaged image with one line naming the bad part."""

import hashlib
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from conftest import ROOT, fixture_path
from elk import image as im
from elk import quant, spec
from elk.convert import llama2c


@pytest.fixture(scope="module")
def model():
    return llama2c.read(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))


@pytest.fixture(scope="module")
def q8_image(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "s_q8.elk"
    im.write_image(path, model, quant="q8_0", security_counter=7)
    return path


def fix_crc(buf: bytearray) -> bytearray:
    struct.pack_into("<I", buf, 252, zlib.crc32(bytes(buf[:252])))
    return buf


def fix_hash(buf: bytearray) -> bytearray:
    size = struct.unpack_from("<Q", buf, 16)[0]
    buf[56:88] = hashlib.sha256(bytes(buf[256:size])).digest()
    return fix_crc(buf)


def sections(buf):
    count = struct.unpack_from("<I", buf, 32)[0]
    return [struct.unpack_from("<IIQQQ", buf, 256 + 32 * i) for i in range(count)]


def write_and_read(tmp_path, buf, name="bad.elk"):
    p = tmp_path / name
    p.write_bytes(bytes(buf))
    return p


def test_image_header_matches_documented_layout(q8_image, model):
    b = q8_image.read_bytes()
    magic, version, hsize, flags, align, size = struct.unpack_from("<IHHIIQ", b, 0)
    assert b[:4] == b"ELK1" and (version, hsize, flags, align) == (1, 256, 0, 64)
    assert size == len(b)
    assert struct.unpack_from("<Q", b, 24)[0] == 256 and struct.unpack_from("<II", b, 32)[1] == 32
    assert struct.unpack_from("<QQ", b, 40) == (256, size - 256)
    assert b[56:88] == hashlib.sha256(b[256:size]).digest()
    assert struct.unpack_from("<I", b, 88)[0] == 7  # security counter
    c = model.config
    assert struct.unpack_from("<8I", b, 96) == (1, 64, 172, 5, 8, 4, 512, 512)
    assert struct.unpack_from("<ff", b, 128) == (np.float32(c.rope_theta), np.float32(c.norm_eps))
    assert struct.unpack_from("<II", b, 136) == (8, spec.MODEL_FLAG_TIED_OUTPUT)
    assert b[160:224].rstrip(b"\0") == b"stories260K"
    assert struct.unpack_from("<I", b, 252)[0] == zlib.crc32(b[:252])


def test_image_sections_and_tensors_are_aligned_and_hold_quantized_bytes(q8_image, model):
    b = q8_image.read_bytes()
    secs = {kind: (off, size) for kind, ver, off, size, _ in sections(b)}
    assert set(secs) == {1, 2, 3, 4}
    assert all(off % 64 == 0 for off, _ in secs.values())
    toff, _ = secs[1]
    count, esize = struct.unpack_from("<II", b, toff)
    assert (count, esize) == (47, 96)  # tied output: 1 + 5 * 9 + 1
    doff, dsize = secs[2]
    for i in range(count):
        e = toff + 16 + 96 * i
        name = b[e:e + 48].split(b"\0")[0].decode()
        tid, role, layer, rows, cols, off, size = struct.unpack_from("<IHHIIQQ", b, e + 48)
        assert off % 64 == 0 and doff <= off and off + size <= doff + dsize
        if name == "blk.2.attn_q.weight":
            assert (tid, role, layer, rows, cols) == (8, spec.TENSOR_ROLES["WQ"], 2, 64, 64)
            want = quant.quantize(model.get("WQ", 2), "Q8_0").tobytes()
            assert b[off:off + size] == want
        if name == "blk.0.ffn_down.weight":  # 172 cols: not a q8_0 row, falls back to F16
            assert tid == 1 and size == 64 * 172 * 2
        if name.endswith("norm.weight"):
            assert tid == 0
    meta = im.decode_metadata(b[secs[4][0]:secs[4][0] + secs[4][1]])
    assert meta["general.name"] == "stories260K" and meta["quant.recipe"] == "q8_0"
    assert meta["general.source"].startswith("llama2.c v0")


def test_image_reader_returns_config_tensors_tokenizer(q8_image, model):
    img = im.read_image(q8_image)
    assert img.config.dim == 64 and img.config.tied_output
    t = img.tensor("W1", 4)
    assert t.type == "Q8_0" and (t.rows, t.cols) == (172, 64)
    np.testing.assert_allclose(t.array(), model.get("W1", 4), atol=0.01)
    assert np.array_equal(img.tensor("OUTPUT_NORM").array().reshape(-1), model.get("OUTPUT_NORM"))
    v = img.vocab()
    assert len(v.pieces) == 512 and v.pieces[1] == "<s>"


def test_verify_accepts_good_image(q8_image):
    rep = im.verify_image(q8_image)
    assert rep.ok, rep.lines()
    assert [p for p, _, _ in rep.checks] == ["header CRC-32", "payload SHA-256", "structure"]


def test_verify_names_payload_hash_on_bit_flip(q8_image, tmp_path):
    b = bytearray(q8_image.read_bytes())
    b[len(b) // 2] ^= 0x10
    rep = im.verify_image(write_and_read(tmp_path, b))
    status = {p: ok for p, ok, _ in rep.checks}
    assert not rep.ok and status == {"header CRC-32": True, "payload SHA-256": False, "structure": True}


def test_verify_names_header_crc_on_header_bit_flip(q8_image, tmp_path):
    b = bytearray(q8_image.read_bytes())
    b[100] ^= 0x01  # dim
    rep = im.verify_image(write_and_read(tmp_path, b))
    status = {p: ok for p, ok, _ in rep.checks}
    assert status["header CRC-32"] is False and status["payload SHA-256"] is True and not rep.ok
    with pytest.raises(im.ImageError, match="header CRC mismatch"):
        im.read_image(tmp_path / "bad.elk")


def corrupt(q8_image, tmp_path, edit):
    b = bytearray(q8_image.read_bytes())
    edit(b)
    return write_and_read(tmp_path, b)


def _set(fmt, off, value):
    def edit(b):
        struct.pack_into(fmt, b, off, value)
        fix_hash(b)
    return edit


def _section_field(kind, field, value):
    def edit(b):
        for i, (k, *_rest) in enumerate(sections(b)):
            if k == kind:
                struct.pack_into("<Q", b, 256 + 32 * i + {"offset": 8, "size": 16}[field], value)
        fix_hash(b)
    return edit


def _tensor_field(index, off_in_entry, fmt, value):
    def edit(b):
        toff = [s for s in sections(b) if s[0] == 1][0][2]
        values = value if isinstance(value, tuple) else (value,)
        struct.pack_into(fmt, b, toff + 16 + 96 * index + off_in_entry, *values)
        fix_hash(b)
    return edit


DAMAGE = [
    ("wrong magic", lambda b: (b.__setitem__(slice(0, 4), b"GGUF"), fix_crc(b)), "bad magic"),
    ("future version", _set("<H", 4, 2), "unsupported image version 2"),
    ("absurd dim", _set("<I", 100, 1 << 30), "dim = 1073741824 is outside"),
    ("zero layers", _set("<I", 108, 0), "n_layers = 0"),
    ("bad gqa", _set("<I", 116, 3), "not a multiple of n_kv_heads"),
    ("image_size past eof", _set("<Q", 16, 1 << 40), "image_size"),
    ("too many sections", _set("<I", 32, 99), "section_count 99"),
    ("section outside payload", _section_field(3, "offset", 1 << 33), "section TOKENIZER"),
    ("overlapping sections", _section_field(3, "size", 10600), "sections TOKENIZER and METADATA overlap"),
    ("unaligned section", _section_field(4, "offset", 345601), "not a multiple of the alignment"),
    ("truncated tensor table", _section_field(1, "size", 16 + 96 * 10), "truncated tensor table"),
    ("unknown tensor type", _tensor_field(0, 48, "<I", 13), "unknown type 13"),
    ("bf16 is import-only", _tensor_field(0, 48, "<I", 30), "unknown type 30"),
    ("norm_eps above 1", _set("<f", 132, 2.0), "norm_eps 2 is not in (0, 1)"),
    ("unknown role", _tensor_field(0, 52, "<H", 99), "unknown role 99"),
    ("tensor size lies", _tensor_field(0, 72, "<Q", 100), "size 100 != rows x row_bytes"),
    ("tensor outside data", _tensor_field(3, 64, "<Q", 64 * 100000), "outside TENSOR_DATA"),
    ("overlapping tensors", _tensor_field(3, 64, "<Q", 4928), "overlap"),
    ("wrong shape", _tensor_field(2, 56, "<II", (128, 32)), "is 128x32, the config needs 64x64"),
    ("vocab mismatch", _set("<I", 120, 500), "token_embd.weight' is 512x64, the config needs 500x64"),
]


@pytest.mark.parametrize("what, edit, message", DAMAGE)
def test_image_reader_rejects_damage_with_one_line(q8_image, tmp_path, what, edit, message):
    path = corrupt(q8_image, tmp_path, edit)
    with pytest.raises(im.ImageError) as e:
        im.read_image(path)
    text = str(e.value)
    assert message in text and "\n" not in text and str(path) in text
    assert not im.verify_image(path).ok


@pytest.mark.parametrize("what, edit, message", [d for d in DAMAGE if d[0] != "overlapping tensors"])
def test_c_runtime_rejects_the_same_damage(q8_image, tmp_path, host_build, what, edit, message):
    import elk

    path = corrupt(q8_image, tmp_path, edit)
    with pytest.raises(elk.ElkError):
        elk.load(path).close()


def test_image_reader_rejects_duplicate_section(q8_image, tmp_path):
    def edit(b):
        struct.pack_into("<I", b, 256 + 32 * 3, 3)  # METADATA entry relabelled TOKENIZER
        fix_hash(b)
    with pytest.raises(im.ImageError, match="TOKENIZER appears twice"):
        im.read_image(corrupt(q8_image, tmp_path, edit))


def test_image_reader_rejects_missing_required_tensor(model, tmp_path):
    p = tmp_path / "m.elk"
    im.write_image(p, model)
    b = bytearray(p.read_bytes())
    toff = [s for s in sections(b) if s[0] == 1][0][2]
    struct.pack_into("<I", b, toff, 46)  # drop output_norm (the last entry)
    fix_hash(b)
    with pytest.raises(im.ImageError, match="required tensor output_norm.weight is missing"):
        im.read_image(write_and_read(tmp_path, b))


@pytest.mark.parametrize("cut", [10, 255, 300, 4000, -1])
def test_image_reader_rejects_truncated_file(q8_image, tmp_path, cut):
    b = q8_image.read_bytes()
    path = write_and_read(tmp_path, b[:cut])
    with pytest.raises(im.ImageError) as e:
        im.read_image(path)
    assert "\n" not in str(e.value)
    assert not im.verify_image(path).ok


def test_cli_verify_and_info_exit_codes(q8_image, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "elk", "verify", str(q8_image)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    b = bytearray(q8_image.read_bytes())
    b[-200] ^= 1
    bad = write_and_read(tmp_path, b)
    r = subprocess.run([sys.executable, "-m", "elk", "verify", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "FAIL payload SHA-256" in r.stdout
    r = subprocess.run([sys.executable, "-m", "elk", "info", str(write_and_read(tmp_path, b[:1000], "t.elk"))],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("elk: error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
    info = subprocess.run([sys.executable, "-m", "elk", "info", str(q8_image)], capture_output=True, text=True)
    assert info.returncode == 0 and "blk.4.ffn_up.weight" in info.stdout and "security counter 7" in info.stdout
    raw = q8_image.read_bytes()
    assert f"header crc32 0x{zlib.crc32(raw[:252]):08X}" in info.stdout
    assert f"payload sha256 {hashlib.sha256(raw[256:]).hexdigest()}" in info.stdout


def test_writer_keeps_security_counter_and_alignment(model, tmp_path):
    p = tmp_path / "a.elk"
    im.write_image(p, model, alignment=256, security_counter=3)
    img = im.read_image(p)
    assert img.header["alignment"] == 256 and img.header["security_counter"] == 3
    assert all(t.offset % 256 == 0 for t in img.tensors.values())
    with pytest.raises(im.FormatError, match="alignment"):
        im.write_image(p, model, alignment=96)


def test_writer_pads_a_short_vocabulary_with_control_pieces(model, tmp_path):
    import dataclasses

    from elk.convert import Model, Tensor
    from elk.reference import Reference

    emb = np.concatenate([model.get("TOK_EMBD"), np.zeros((8, 64), np.float32)])
    cfg = dataclasses.replace(model.config, vocab_size=520)
    tensors = dict(model.tensors)
    tensors[("TOK_EMBD", 0)] = Tensor.of(emb)
    padded = Model(cfg, tensors, vocab=model.vocab, name="padded")
    im.write_image(tmp_path / "p.elk", padded)
    img = im.read_image(tmp_path / "p.elk")
    v = img.vocab()
    assert len(v.pieces) == 520 and v.pieces[519] == "<pad_519>" and v.types[519] == spec.TOKEN_TYPES["CONTROL"]
    assert v.pieces[:512] == model.vocab.pieces
    ids = [1, 403, 407]
    assert np.array_equal(Reference(img).logits(ids)[:, :512], Reference(model).logits(ids))
    tensors[("TOK_EMBD", 0)] = Tensor.of(emb[:500])
    too_small = Model(dataclasses.replace(model.config, vocab_size=500), tensors, vocab=model.vocab)
    with pytest.raises(im.FormatError, match="tokenizer has 512 tokens, model vocab_size is 500"):
        im.write_image(tmp_path / "s.elk", too_small)


def test_image_reader_random_damage_never_raises_anything_but_image_error(q8_image, tmp_path):
    """Random byte changes in the header, tables, tokenizer and metadata (CRC and hash re-sealed so
    the structure checks run): read_image either accepts or raises ImageError, nothing else."""
    good = q8_image.read_bytes()
    secs = {kind: (off, size) for kind, _, off, size, _ in sections(good)}
    regions = [(0, 252), (256, 384), (secs[1][0], secs[1][0] + secs[1][1]),
               (secs[3][0], secs[3][0] + 2000), (secs[4][0], secs[4][0] + secs[4][1])]
    rng = np.random.default_rng(2024)
    rejected = 0
    for i in range(300):
        b = bytearray(good)
        lo, hi = regions[i % len(regions)]
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(lo, hi))] = int(rng.integers(0, 256))
        fix_hash(b)
        path = write_and_read(tmp_path, b)
        try:
            im.read_image(path)
        except im.ImageError as e:
            assert "\n" not in str(e)
            rejected += 1
    assert rejected > 100  # most damage is caught, not silently accepted


def test_writer_reports_progress_per_tensor_up_to_the_total(model, tmp_path):
    import io

    from elk.convert.pack import ProgressBar

    calls = []
    res = im.write_image(tmp_path / "p.elk", model, quant="q8_0", progress=lambda d, t, n: calls.append((d, t, n)))
    assert len(calls) == 47 and calls[-1][0] == calls[-1][1] == sum(t.nbytes for t in res.tensors)
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:])) and calls[0][2] == "token_embd.weight"
    stream = io.StringIO()
    bar = ProgressBar(stream)
    for d, t, n in calls:
        bar(d, t, n)
    bar.close()
    assert "100.0%" in stream.getvalue() and stream.getvalue().endswith("\n")


def test_repacking_an_f32_image_equals_packing_the_checkpoint(model, tmp_path):
    from elk.convert import load_model

    im.write_image(tmp_path / "f32.elk", model)
    im.write_image(tmp_path / "direct.elk", model, quant="q4_0", security_counter=2)
    im.write_image(tmp_path / "re.elk", load_model(tmp_path / "f32.elk"), quant="q4_0", security_counter=2)
    assert (tmp_path / "re.elk").read_bytes() == (tmp_path / "direct.elk").read_bytes()


def _doc_table(title):
    """Rows (off, type, field) of the first table after the heading `title` in docs/image-format.md."""
    text = (ROOT / "docs" / "image-format.md").read_text()
    body = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            rows.append((int(cells[0]), cells[1], cells[2]))
    return rows


def test_docs_header_table_equals_spec_header_fields():
    """The byte-for-byte spec in docs/ and the constants C and Python use (spec.py -> spec.h) agree:
    every named field at the same offset with the same type, reserved gaps where spec has none."""
    doc = {f: (off, t) for off, t, f in _doc_table("Header (256 bytes)") if f != "reserved"}
    assert doc == {name: (off, t) for name, off, t in spec.HEADER_FIELDS}
    sizes = {"u8": 1, "char": 1, "u16": 2, "u32": 4, "u64": 8, "f32": 4}
    rows = _doc_table("Header (256 bytes)")
    for (off, t, _), (nxt, _, _) in zip(rows, rows[1:] + [(spec.IMAGE_HEADER_SIZE, "", "")]):
        base, _, n = t.partition("[")
        assert off + sizes[base] * (int(n[:-1]) if n else 1) == nxt, (off, t)  # no gap, no overlap


def test_docs_section_and_tensor_entries_equal_spec_and_the_writer():
    sect = _doc_table("Section table entry (32 bytes)")
    assert [o for o, _, _ in sect] == [0, 4, 8, 16, 24] and spec.SECTION_ENTRY_SIZE == 32
    kinds = dict((int(n), k) for n, k in re.findall(r"(\d) ([A-Z_]+)", sect[0][2]))
    assert kinds == {v: k for k, v in spec.SECTION_KINDS.items()}
    tens = _doc_table("TENSOR_TABLE")
    assert [(o, t) for o, t, _ in tens] == [(0, "char[48]"), (48, "u32"), (52, "u16"), (54, "u16"), (56, "u32"),
                                            (60, "u32"), (64, "u64"), (72, "u64"), (80, "u8[16]")]
    assert spec.TENSOR_NAME_MAX == 48 and spec.TENSOR_ENTRY_SIZE == 80 + 16
    types = dict((int(n), k) for n, k in re.findall(r"(\d+) (F32|F16|Q4_0|Q8_0)", tens[1][2]))
    assert types == {v[0]: k for k, v in spec.TENSOR_TYPES.items() if k != "BF16"}
    e = im.tensor_entry("blk.0.attn_q.weight", 8, 3, 0, 64, 64, 4928, 4352)
    assert len(e) == 96 and struct.unpack_from("<IHHIIQQ", e, 48) == (8, 3, 0, 64, 64, 4928, 4352)


def test_cli_info_json_lists_the_tensor_table_and_hashes(q8_image):
    import json

    r = subprocess.run([sys.executable, "-m", "elk", "info", "--json", str(q8_image)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    raw = q8_image.read_bytes()
    assert doc["header"]["payload_sha256"] == hashlib.sha256(raw[256:]).hexdigest()
    assert doc["header"]["header_crc32"] == zlib.crc32(raw[:252]) and doc["header"]["security_counter"] == 7
    assert doc["config"]["dim"] == 64 and doc["config"]["tied_output"] is True
    assert doc["tokenizer"]["n_tokens"] == 512 and doc["metadata"]["quant.recipe"] == "q8_0"
    t = {e["name"]: e for e in doc["tensors"]}
    assert len(t) == doc["totals"]["tensors"] == 47
    assert t["blk.0.ffn_down.weight"]["type"] == "F16" and t["blk.0.attn_q.weight"]["bytes"] == 64 * 68
    off, size = t["token_embd.weight"]["offset"], t["token_embd.weight"]["bytes"]
    assert raw[off:off + size] == im.read_image(q8_image).tensors["token_embd.weight"].data.tobytes()
