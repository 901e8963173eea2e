"""The NPU image section: what pack writes parses back, and a corrupt section is refused at load by the
Python reader, by the C parser (elk_npu_section_open through the host session) and by `elk run --npu`,
each with one clear line, never a crash."""

import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, fixture_path

from elk import spec
from elk.errors import ElkError
from elk.npu.native import Session
from elk.npu.section import HEAD, NpuSectionError, pack_section, parse_section


@pytest.fixture(scope="module")
def model():
    from elk.convert import load_model

    return load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))


@pytest.fixture(scope="module")
def built(model):
    from elk.npu.calibrate import build_section

    sec = build_section(model, chunk=16, outlier_k=3.0)
    return sec, pack_section(sec)


def test_npu_section_round_trips_every_field(built):
    sec, blob = built
    back = parse_section(blob)
    assert back.chunk == 16 and len(back.layers) == 5 * 7
    assert [(L.role, L.layer) for L in back.layers] == [(r, i) for i in range(5) for r in spec.NPU_ROLES]
    for a, b in zip(sec.layers, back.layers):
        assert (a.rows, a.cols, a.in_zp, a.out_zp) == (b.rows, b.cols, b.in_zp, b.out_zp)
        assert np.float32(a.in_scale) == b.in_scale and np.float32(a.out_scale) == b.out_scale
        assert a.tflite == b.tflite
        assert np.array_equal(a.multiplier, b.multiplier) and np.array_equal(a.shift, b.shift)
        assert np.array_equal(a.outliers, b.outliers) and np.array_equal(a.outlier_w, b.outlier_w)
    assert any(len(L.outliers) for L in back.layers), "k = 3 should flag some channels of stories260K"
    # every blob is 64-byte aligned inside the section
    for i in range(len(back.layers)):
        e = spec.NPU_HEAD_SIZE + i * spec.NPU_ENTRY_SIZE
        assert struct.unpack_from("<Q", blob, e + 32)[0] % 64 == 0


def test_npu_section_outlier_weights_are_the_float_columns(model, built):
    sec, _ = built
    L = next(L for L in sec.layers if len(L.outliers))
    w = model.get(L.role, L.layer)
    assert np.array_equal(L.outlier_w, w[:, L.outliers].T)
    # the NPU weights carry zeros where the CPU takes over
    assert not L.weights[:, L.outliers].any()


def _corruptions(blob):
    head_n = spec.NPU_HEAD_SIZE
    e0 = head_n  # first entry
    tfl0 = struct.unpack_from("<Q", blob, e0 + 32)[0]

    def patch(off, raw, fix_crc=True):
        b = bytearray(blob)
        b[off:off + len(raw)] = raw
        if fix_crc:
            import zlib

            n = struct.unpack_from("<I", b, 12)[0]
            crc = zlib.crc32(bytes(b[head_n:head_n + n * spec.NPU_ENTRY_SIZE]), zlib.crc32(bytes(b[:60])))
            struct.pack_into("<I", b, 60, crc)
        return bytes(b)

    return {
        "magic": (patch(0, b"XXXX"), "bad magic"),
        "entry byte flipped": (patch(e0 + 5, b"\x7f", fix_crc=False), "CRC"),
        "tflite outside": (patch(e0 + 32, struct.pack("<Q", len(blob) - 8)), "tflite blob outside"),
        "tflite identifier": (patch(tfl0 + 4, b"NOPE"), "TFL3"),
        "weights outside": (patch(e0 + 44, struct.pack("<I", 1 << 30)), "weights or bias outside"),
        "zero chunk": (patch(8, struct.pack("<I", 0)), "chunk"),
        "truncated": (blob[:100], "entry table outside"),
        "bad role": (patch(e0, struct.pack("<H", 1)), "unknown role"),
    }


@pytest.mark.parametrize("case", ["magic", "entry byte flipped", "tflite outside", "tflite identifier",
                                  "weights outside", "zero chunk", "truncated", "bad role"])
def test_corrupt_npu_section_rejected_by_python_and_c(built, host_build, case):
    bad, words = _corruptions(built[1])[case]
    with pytest.raises(NpuSectionError, match=words):
        parse_section(bad)
    with pytest.raises(ElkError) as e:
        Session(bad, "sim")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_elk_run_refuses_image_with_corrupt_npu_section(model, built, tmp_path, host_build):
    from elk import image as im

    blob = bytearray(built[1])
    blob[spec.NPU_HEAD_SIZE + 5] ^= 0x55  # entry table no longer matches its CRC
    path = tmp_path / "bad.elk"
    im.write_image(path, model, npu=bytes(blob))
    proc = subprocess.run([sys.executable, "-m", "elk", "run", str(path), "--npu", "sim", "-n", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("elk: error:")
    assert "CRC" in proc.stderr and "Traceback" not in proc.stderr


def test_elk_verify_fails_an_image_whose_npu_section_is_corrupt(model, built, tmp_path):
    from elk import image as im

    good = tmp_path / "good.elk"
    im.write_image(good, model, npu=built[1])
    blob = bytearray(built[1])
    blob[spec.NPU_HEAD_SIZE + 5] ^= 0x55  # the payload hash covers it, the section's own CRC does not
    bad = tmp_path / "bad.elk"
    im.write_image(bad, model, npu=bytes(blob))
    proc = subprocess.run([sys.executable, "-m", "elk", "verify", str(good)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "ok   NPU section: 35 layers, chunk 16 tokens" in proc.stdout, proc.stdout
    proc = subprocess.run([sys.executable, "-m", "elk", "verify", str(bad)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "FAIL NPU section: CRC of head and entry table mismatch" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr


def test_entry_that_disagrees_with_its_tflite_fails_verify_and_npu_check(model, built, tmp_path):
    """A section whose entry and .tflite describe different functions (the sim would follow the entry,
    LiteRT the .tflite) passes the section parser's bounds checks but not elk verify or elk npu check."""
    import zlib

    from elk import image as im
    from elk.npu.section import tflite_disagreements

    sec, blob = built
    assert tflite_disagreements(sec) == []

    def with_crc(b):
        n = struct.unpack_from("<I", b, 12)[0]
        table = bytes(b[spec.NPU_HEAD_SIZE:spec.NPU_HEAD_SIZE + n * spec.NPU_ENTRY_SIZE])
        crc = zlib.crc32(table, zlib.crc32(bytes(b[:60])))
        struct.pack_into("<I", b, 60, crc)
        return bytes(b)

    scale = bytearray(blob)  # entry 0's input scale x 1.5
    struct.pack_into("<f", scale, spec.NPU_HEAD_SIZE + 16, sec.layers[0].in_scale * 1.5)
    requant = bytearray(blob)  # entry 3's requantization multiplier of row 0, outside the CRC
    q_off = struct.unpack_from("<Q", blob, spec.NPU_HEAD_SIZE + 3 * spec.NPU_ENTRY_SIZE + 56)[0]
    struct.pack_into("<i", requant, q_off, sec.layers[3].multiplier[0] + 1000)
    cases = {"scale": (with_crc(scale), "blk.0.wq: .tflite input scale or zero point differs from the entry's"),
             "requant": (bytes(requant), "blk.0.wo: .tflite scales give other requantization multipliers than the "
                                          "entry's table")}
    for name, (bad, words) in cases.items():
        assert tflite_disagreements(parse_section(bad)) == [words], name
        path = tmp_path / f"{name}.elk"
        im.write_image(path, model, npu=bad)
        proc = subprocess.run([sys.executable, "-m", "elk", "verify", str(path)], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode != 0 and f"FAIL NPU section: {words}" in proc.stdout, proc.stdout
        proc = subprocess.run([sys.executable, "-m", "elk", "npu", "check", str(path), "--no-litert"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and words in proc.stdout, proc.stdout + proc.stderr


def test_head_layout_matches_spec():
    assert HEAD.size == spec.NPU_HEAD_SIZE
    blob = bytearray(spec.NPU_HEAD_SIZE)
    struct.pack_into("<I", blob, 0, spec.NPU_MAGIC)
    assert bytes(blob[:4]) == b"ELKN"


def test_calibration_reads_a_user_text_file_and_refuses_an_empty_one(model, tmp_path):
    from elk.npu.calibrate import CalibrationError, build_section, calibration_tokens

    text = tmp_path / "calib.txt"
    text.write_text("The cat sat on the mat.\n\nA big red ball rolled down the hill and the dog ran after it.\n")
    lists = calibration_tokens(model.vocab, text)
    assert len(lists) == 2 and all(ids[0] == model.vocab.bos_id for ids in lists)
    sec = build_section(model, chunk=8, text_file=text)
    assert sec.calib_tokens == sum(len(ids) for ids in lists)
    # a different text gives different activation ranges
    assert sec.layers[0].in_scale != build_section(model, chunk=8).layers[0].in_scale
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(CalibrationError, match="no text"):
        calibration_tokens(model.vocab, empty)
    with pytest.raises(CalibrationError, match="cannot read"):
        calibration_tokens(model.vocab, tmp_path / "missing.txt")
    binary = tmp_path / "zeros.bin"
    binary.write_bytes(bytes(5000))  # valid UTF-8, but not text
    with pytest.raises(CalibrationError, match="binary data"):
        calibration_tokens(model.vocab, binary)
    garbage = tmp_path / "random.bin"
    garbage.write_bytes(bytes(range(128, 256)) * 8)
    with pytest.raises(CalibrationError, match="cannot read calibration text"):
        calibration_tokens(model.vocab, garbage)
    one_paragraph = tmp_path / "long.txt"  # megabytes without a blank line: only its start is encoded
    one_paragraph.write_text("the cat sat on the mat and the dog ran " * 50000)
    lists = calibration_tokens(model.vocab, one_paragraph)
    assert len(lists) == 1 and len(lists[0]) == 128


def test_python_and_c_parsers_accept_and_reject_the_same_damaged_sections(built, host_build):
    import random
    import zlib

    blob = built[1]
    n = struct.unpack_from("<I", blob, 12)[0]
    end = spec.NPU_HEAD_SIZE + n * spec.NPU_ENTRY_SIZE
    rng = random.Random(11)
    verdicts = {True: 0, False: 0}
    for k in range(1000):
        b = bytearray(blob)
        off = spec.NPU_HEAD_SIZE + rng.randrange(n) * spec.NPU_ENTRY_SIZE + rng.randrange(0, 80, 4) \
            if k % 3 else rng.randrange(0, 60, 4)
        b[off:off + 4] = rng.choice([0, 1, 64, 127, 128, 0xFFFFFFFF, 0x7F7FFFFF, len(b), rng.getrandbits(32)]) \
            .to_bytes(4, "little")
        struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[spec.NPU_HEAD_SIZE:end]), zlib.crc32(bytes(b[:60]))))
        try:
            parse_section(bytes(b))
            py_ok = True
        except NpuSectionError:
            py_ok = False
        try:
            Session(bytes(b), "sim")
            c_ok = True
        except ElkError:
            c_ok = False
        assert py_ok == c_ok, (k, off, py_ok, c_ok)
        verdicts[py_ok] += 1
    assert verdicts[True] > 100 and verdicts[False] > 100
