"""The C image parser (firmware/src/image) on malformed copies of a real packed image, through the
host API (elk.runtime.Model): each defect gives the right ELK_E_* code and names the failing part.
Also the C CRC-32 / SHA-256 against zlib / hashlib, and `elk run` on a bad image."""

import hashlib
import os
import struct
import subprocess
import sys
import zlib

import cffi
import numpy as np
import pytest

from conftest import ROOT, fixture_path

from elk import image as im
from elk import spec
from elk.convert.pack import pack
from elk.errors import RuntimeFailure
from elk.runtime import Model

E = {name: code for name, (code, _) in spec.ERRORS.items()}
HDR = {name: off for name, off, _ in spec.HEADER_FIELDS}


@pytest.fixture(scope="module")
def good(tmp_path_factory, host_build):
    path = tmp_path_factory.mktemp("img") / "stories260K-q8_0.elk"
    pack(str(fixture_path("stories260K.bin")), str(path), quant="q8_0", tokenizer=str(fixture_path("tok512.bin")))
    return path.read_bytes()


class Img:
    """A mutable copy of the image with helpers that know the v1 layout."""

    def __init__(self, data: bytes):
        self.b = bytearray(data)
        self.sections = {}
        for i in range(self.u32(HDR["section_count"])):
            kind, _, off, size = struct.unpack_from("<IIQQ", self.b, 256 + 32 * i)
            self.sections[kind] = (i, off, size)

    def u32(self, off):
        return struct.unpack_from("<I", self.b, off)[0]

    def put(self, fmt, off, value):
        struct.pack_into("<" + fmt, self.b, off, value)

    def fix_crc(self):
        self.put("I", 252, zlib.crc32(bytes(self.b[:252])))

    def section_entry(self, kind):
        return 256 + 32 * self.sections[kind][0]

    def section_off(self, kind):
        return self.sections[kind][1]

    def tensor_entry(self, i):
        return self.section_off(spec.SECTION_KINDS["TENSOR_TABLE"]) + 16 + 96 * i

    def tensor_index(self, name):
        for i in range(self.u32(self.section_off(spec.SECTION_KINDS["TENSOR_TABLE"]))):
            e = self.tensor_entry(i)
            if bytes(self.b[e:e + 48]).split(b"\0")[0].decode() == name:
                return i
        raise KeyError(name)


def open_fails(tmp_path, data, code, *words):
    path = tmp_path / "bad.elk"
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeFailure) as e:
        Model(path, threads=1)
    assert e.value.code == code, str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)
    return str(e.value)


TT, TD, TOK, META = (spec.SECTION_KINDS[k] for k in ("TENSOR_TABLE", "TENSOR_DATA", "TOKENIZER", "METADATA"))


def test_image_good_copy_opens_and_verifies(tmp_path, good):
    path = tmp_path / "ok.elk"
    path.write_bytes(good)
    with Model(path, threads=1) as m:
        m.verify()
        assert m.config.vocab_size == 512


def test_image_rejects_bad_magic(tmp_path, good):
    img = Img(good)
    img.b[0:4] = b"GGUF"
    open_fails(tmp_path, img.b, E["E_FORMAT"], "magic")


def test_image_rejects_empty_and_tiny_files(tmp_path, good):
    open_fails(tmp_path, b"", E["E_FORMAT"], "empty")
    open_fails(tmp_path, good[:6], E["E_BOUNDS"], "header")
    open_fails(tmp_path, good[:200], E["E_BOUNDS"], "header_size")


def test_image_rejects_unknown_version(tmp_path, good):
    img = Img(good)
    img.put("H", HDR["version"], 2)
    img.fix_crc()
    open_fails(tmp_path, img.b, E["E_VERSION"], "version 2")


def test_image_rejects_header_crc_mismatch(tmp_path, good):
    img = Img(good)
    img.b[HDR["name"]] ^= 0x20
    open_fails(tmp_path, img.b, E["E_CRC"], "crc32")


def test_image_rejects_truncated_file(tmp_path, good):
    open_fails(tmp_path, good[: len(good) // 2], E["E_BOUNDS"], "image_size", "file size")


def test_image_rejects_section_outside_payload(tmp_path, good):
    img = Img(good)
    img.put("Q", img.section_entry(TOK) + 16, 1 << 40)
    img.fix_crc()
    open_fails(tmp_path, img.b, E["E_BOUNDS"], f"section {img.sections[TOK][0]} (TOKENIZER)", "outside payload")


def test_image_rejects_section_size_overflowing_64_bits(tmp_path, good):
    img = Img(good)
    img.put("Q", img.section_entry(META) + 16, 2**64 - 64)
    img.fix_crc()
    open_fails(tmp_path, img.b, E["E_BOUNDS"], "(METADATA)")


def test_image_rejects_overlapping_sections(tmp_path, good):
    img = Img(good)
    img.put("Q", img.section_entry(META) + 8, img.section_off(TOK))
    img.fix_crc()
    open_fails(tmp_path, img.b, E["E_FORMAT"], "overlaps")


def test_image_rejects_duplicate_and_unknown_section_kinds(tmp_path, good):
    img = Img(good)
    img.put("I", img.section_entry(META), TOK)
    img.fix_crc()
    open_fails(tmp_path, img.b, E["E_FORMAT"], "twice")
    img = Img(good)
    img.put("I", img.section_entry(META), 9)
    img.fix_crc()
    open_fails(tmp_path, img.b, E["E_FORMAT"], "unknown kind 9")


def test_image_rejects_missing_tokenizer_section(tmp_path, good):
    img = Img(good)
    img.put("I", img.section_entry(TOK), spec.SECTION_KINDS["NPU"])
    img.fix_crc()
    open_fails(tmp_path, img.b, E["E_MISSING"], "TOKENIZER")


def test_image_rejects_misaligned_section(tmp_path, good):
    img = Img(good)
    img.put("Q", img.section_entry(META) + 8, img.section_off(META) + 4)
    img.put("Q", img.section_entry(META) + 16, 4)
    img.fix_crc()
    open_fails(tmp_path, img.b, E["E_FORMAT"], "not aligned")


def test_image_rejects_tensor_outside_tensor_data(tmp_path, good):
    img = Img(good)
    _, off, size = img.sections[TD]
    img.put("Q", img.tensor_entry(0) + 64, off + size)
    open_fails(tmp_path, img.b, E["E_BOUNDS"], "tensor 0 (token_embd.weight)", "outside TENSOR_DATA")


def test_image_rejects_tensor_size_not_rows_times_row_bytes(tmp_path, good):
    img = Img(good)
    i = img.tensor_index("blk.0.attn_q.weight")
    img.put("Q", img.tensor_entry(i) + 72, struct.unpack_from("<Q", img.b, img.tensor_entry(i) + 72)[0] - 34)
    open_fails(tmp_path, img.b, E["E_FORMAT"], "blk.0.attn_q.weight", "size")


def test_image_rejects_unknown_tensor_type(tmp_path, good):
    img = Img(good)
    img.put("I", img.tensor_entry(img.tensor_index("blk.1.ffn_up.weight")) + 48, 99)
    open_fails(tmp_path, img.b, E["E_UNSUPPORTED"], "blk.1.ffn_up.weight", "unknown type 99")


def test_image_rejects_unknown_role_and_bad_layer(tmp_path, good):
    img = Img(good)
    img.put("H", img.tensor_entry(3) + 52, 77)
    open_fails(tmp_path, img.b, E["E_FORMAT"], "unknown role 77")
    img = Img(good)
    img.put("H", img.tensor_entry(img.tensor_index("blk.4.attn_k.weight")) + 54, 5)
    open_fails(tmp_path, img.b, E["E_FORMAT"], "layer 5")


def test_image_rejects_missing_required_tensor(tmp_path, good):
    img = Img(good)
    i = img.tensor_index("blk.2.ffn_up.weight")
    img.put("H", img.tensor_entry(i) + 54, 3)  # relabelled as layer 3: layer 2 has no W3 (ffn_up)
    open_fails(tmp_path, img.b, E["E_MISSING"], "W3 layer 2", "required")


def test_image_rejects_duplicate_tensor(tmp_path, good):
    img = Img(good)
    drop = img.tensor_index("output_norm.weight")
    e = img.tensor_entry(drop)
    img.put("H", e + 52, spec.TENSOR_ROLES["ATTN_NORM"])  # output_norm relabelled as a second blk.0 attn_norm
    open_fails(tmp_path, img.b, E["E_FORMAT"], "ATTN_NORM layer 0", "appears 2 times")


def python_reader_rejects(tmp_path, data, *words):
    """elk.image.read_image (the Python reader) rejects the same bytes."""
    path = tmp_path / "bad-py.elk"
    path.write_bytes(bytes(data))
    with pytest.raises(im.ImageError) as e:
        im.read_image(path)
    for w in words:
        assert w in str(e.value), str(e.value)


def tensor_span(img, name):
    e = img.tensor_entry(img.tensor_index(name))
    return struct.unpack_from("<QQ", img.b, e + 64)


def test_image_rejects_overlapping_tensors_in_offset_order(tmp_path, good):
    img = Img(good)
    q_off, q_size = tensor_span(img, "blk.0.attn_q.weight")
    assert q_size > 64
    img.put("Q", img.tensor_entry(img.tensor_index("blk.0.attn_k.weight")) + 64, q_off + 64)  # aligned, inside q
    open_fails(tmp_path, img.b, E["E_FORMAT"], "tensor 3 (blk.0.attn_k.weight) overlaps tensor 2 (blk.0.attn_q.weight)")
    python_reader_rejects(tmp_path, img.b, "overlap")


def test_image_rejects_overlap_in_a_table_out_of_offset_order(tmp_path, good):
    # blk.0.attn_k/attn_v (same size) swap places: the table is no longer sorted by offset but valid;
    # then the last tensor is moved onto token_embd, which the table lists first.
    img = Img(good)
    k, v = (img.tensor_entry(img.tensor_index(f"blk.0.attn_{x}.weight")) for x in "kv")
    k_off, v_off = tensor_span(img, "blk.0.attn_k.weight")[0], tensor_span(img, "blk.0.attn_v.weight")[0]
    img.put("Q", k + 64, v_off)
    img.put("Q", v + 64, k_off)
    path = tmp_path / "unsorted.elk"
    path.write_bytes(bytes(img.b))
    with Model(path, threads=1) as m:  # unsorted but not overlapping: accepted, as the Python reader does
        assert m.config.n_layers == 5
    im.read_image(path)
    last = img.u32(img.section_off(TT)) - 1
    img.put("Q", img.tensor_entry(last) + 64, tensor_span(img, "token_embd.weight")[0] + 128)
    open_fails(tmp_path, img.b, E["E_FORMAT"], f"tensor {last} (output_norm.weight) overlaps tensor 0 (token_embd.weight)")
    python_reader_rejects(tmp_path, img.b, "overlap")


def test_image_rejects_more_tensors_than_the_config_has(tmp_path, good):
    img = Img(good)
    tt = img.section_off(TT)
    count = img.u32(tt)
    assert count == 9 * 5 + 2  # tied: no output.weight
    img.put("I", tt, 9 * 5 + 5)  # 9 per layer + token_embd, output_norm, output, rope_freqs at most
    open_fails(tmp_path, img.b, E["E_FORMAT"], "50 entries", "at most 49")


def test_image_rejects_output_tensor_in_a_tied_image(tmp_path, good):
    img = Img(good)
    img.put("H", img.tensor_entry(img.tensor_index("output_norm.weight")) + 52, spec.TENSOR_ROLES["OUTPUT"])
    open_fails(tmp_path, img.b, E["E_FORMAT"], "OUTPUT (output_norm.weight)", "tied")
    python_reader_rejects(tmp_path, img.b)


def test_image_rejects_unknown_header_flags_and_model_flags(tmp_path, good):
    for field, bit, word in (("flags", 1 << 5, "unknown flags 0x20"), ("model_flags", 1 << 3, "unknown model_flags 0x9")):
        img = Img(good)
        img.put("I", HDR[field], img.u32(HDR[field]) | bit)
        img.fix_crc()
        open_fails(tmp_path, img.b, E["E_UNSUPPORTED"], word)
        python_reader_rejects(tmp_path, img.b, "unknown")


def test_image_header_crc_is_read_at_header_size_minus_4(tmp_path, good):
    # A longer header (260 bytes): the CRC moves to 256 and covers [0, 256); offset 252 is then an
    # ordinary header byte. Everything after the header shifts by 4, so the layout is rebuilt.
    img = Img(good)
    img.put("I", HDR["name"] + 60, 0)
    img.put("I", 252, 0xDEADBEEF)  # not a CRC any more
    img.put("H", HDR["header_size"], 260)
    hdr = bytes(img.b[:252]) + struct.pack("<I", 0xDEADBEEF)
    bad = hdr + struct.pack("<I", zlib.crc32(hdr) ^ 1) + bytes(img.b[256:])
    open_fails(tmp_path, bad, E["E_CRC"], "crc32")
    good_crc = hdr + struct.pack("<I", zlib.crc32(hdr)) + bytes(img.b[256:])
    # With the CRC right the parser goes on to the next check: the v1 layout wants the section table
    # at header_size, which this shifted copy does not have, so the failure is past the CRC.
    open_fails(tmp_path, good_crc, E["E_FORMAT"], "payload offset")


def test_image_rejects_tensor_shape_that_disagrees_with_config(tmp_path, good):
    img = Img(good)
    e = img.tensor_entry(img.tensor_index("blk.0.attn_v.weight"))
    rows, cols = struct.unpack_from("<II", img.b, e + 56)
    img.put("I", e + 56, rows // 2)
    img.put("Q", e + 72, (rows // 2) * (cols // 32) * 34)
    open_fails(tmp_path, img.b, E["E_FORMAT"], "blk.0.attn_v.weight", "config needs 32 x 64")


def test_image_rejects_inconsistent_gqa_config(tmp_path, good):
    img = Img(good)
    img.put("I", HDR["n_kv_heads"], 3)
    img.fix_crc()
    open_fails(tmp_path, img.b, E["E_FORMAT"], "n_kv_heads 3")


def test_image_rejects_oversized_and_zero_dimensions(tmp_path, good):
    img = Img(good)
    img.put("I", HDR["dim"], 1 << 31)
    img.fix_crc()
    open_fails(tmp_path, img.b, E["E_RANGE"], "dim")
    img = Img(good)
    img.put("I", HDR["n_layers"], 0)
    img.fix_crc()
    open_fails(tmp_path, img.b, E["E_FORMAT"], "n_layers is 0")


def test_image_rejects_vocab_size_unequal_to_tokenizer(tmp_path, good):
    img = Img(good)
    img.put("I", img.section_off(TOK), 511)
    open_fails(tmp_path, img.b, E["E_FORMAT"], "511 tokens", "vocab_size 512")


def test_image_rejects_token_string_outside_blob(tmp_path, good):
    img = Img(good)
    img.put("I", img.section_off(TOK) + 32 + 16 * 300 + 4, 1 << 20)
    open_fails(tmp_path, img.b, E["E_BOUNDS"], "token 300")


def test_image_rejects_metadata_running_past_its_section(tmp_path, good):
    img = Img(good)
    img.put("I", img.section_off(META) + 4, 1 << 30)  # first key length
    open_fails(tmp_path, img.b, E["E_BOUNDS"], "metadata")


def test_image_verify_detects_payload_corruption(tmp_path, good):
    img = Img(good)
    img.b[img.section_off(TD) + 1000] ^= 1
    path = tmp_path / "flipped.elk"
    path.write_bytes(bytes(img.b))
    with Model(path, threads=1) as m:  # opening does not hash the payload
        with pytest.raises(RuntimeFailure) as e:
            m.verify()
    assert e.value.code == E["E_HASH"] and "SHA-256" in str(e.value)


def test_cli_run_on_a_corrupt_image_prints_one_line_and_exits_2(tmp_path, good):
    img = Img(good)
    img.put("I", HDR["n_kv_heads"], 3)
    img.fix_crc()
    path = tmp_path / "bad.elk"
    path.write_bytes(bytes(img.b))
    proc = subprocess.run([sys.executable, "-m", "elk", "run", str(path), "-n", "5"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("elk: error: ") and "n_kv_heads 3" in lines[0]
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# CRC-32 and SHA-256 (firmware/src/util) against zlib and hashlib

@pytest.fixture(scope="module")
def util(host_build):
    ffi = cffi.FFI()
    ffi.cdef("""
        typedef struct { uint32_t h[8]; uint64_t total; uint8_t buf[64]; uint32_t used; } elk_sha256_ctx;
        uint32_t elk_crc32(uint32_t crc, const void *data, size_t len);
        void elk_sha256_init(elk_sha256_ctx *s);
        void elk_sha256_update(elk_sha256_ctx *s, const void *data, size_t len);
        void elk_sha256_final(elk_sha256_ctx *s, uint8_t out[32]);
        void elk_sha256(const void *data, size_t len, uint8_t out[32]);
    """)
    return ffi, ffi.dlopen(str(host_build / "libelk.so"))


SIZES = [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 65537]


def test_crc32_matches_zlib(util):
    ffi, lib = util
    rng = np.random.default_rng(3)
    for n in SIZES:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert lib.elk_crc32(0, data, n) == zlib.crc32(data)
        half = n // 3
        assert lib.elk_crc32(lib.elk_crc32(0, data[:half], half), data[half:], n - half) == zlib.crc32(data)


def test_sha256_matches_hashlib_one_shot_and_incremental(util):
    ffi, lib = util
    rng = np.random.default_rng(4)
    out = ffi.new("uint8_t[32]")
    for n in SIZES:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        lib.elk_sha256(data, n, out)
        assert bytes(out) == hashlib.sha256(data).digest(), n
        ctx = ffi.new("elk_sha256_ctx *")
        lib.elk_sha256_init(ctx)
        cut = min(n // 5 + 1, n)
        for a, b in ((0, n // 5), (n // 5, cut), (cut, n)):
            lib.elk_sha256_update(ctx, data[a:b], b - a)
        lib.elk_sha256_final(ctx, out)
        assert bytes(out) == hashlib.sha256(data).digest(), n
