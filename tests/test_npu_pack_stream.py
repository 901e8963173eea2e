"""`elk pack --npu` streams the NPU section into the image block by block: the file is byte for byte
the one the whole-model, in-memory path (calibrate.build_section + section.pack_section, an independent
implementation of calibration and layout) gives; its memory does not grow with the number of layers;
and a pack that fails while streaming leaves no image (and no part file) behind."""

import errno
import hashlib
import subprocess
import sys
import tracemalloc

import pytest
from conftest import ROOT, fixture_path

from elk import image as im
from elk import spec
from elk import tokenizer as tok
from elk.convert import load_model
from elk.errors import FormatError
from elk.npu.calibrate import build_section
from elk.npu.section import pack_section, parse_section, parse_table
from elk.npu.stream import section_writer
from elk.npu.testmodel import tinyllama_shaped

ONE_SAMPLE = [[1] + list(range(3, 40))]  # one short calibration sample keeps the big model fast


@pytest.fixture(scope="module")
def vocab():
    return tok.load(fixture_path("tok512.bin"))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_pack_npu_equals_in_memory_reference(tmp_path):
    """The CLI's streamed image equals write_image over the in-memory section, for stories260K q8_0."""
    out = tmp_path / "s.elk"
    r = subprocess.run([sys.executable, "-m", "elk", "pack", str(fixture_path("stories260K.bin")), "--tokenizer",
                        str(fixture_path("tok512.bin")), "--quant", "q8_0", "--npu", "--npu-chunk", "16",
                        "-o", str(out), "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "NPU section v1: 35 layers, chunk 16 tokens" in r.stdout
    m = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    ref = tmp_path / "ref.elk"
    im.write_image(ref, m, quant="q8_0", npu=pack_section(build_section(m, chunk=16)))
    assert out.read_bytes() == ref.read_bytes()
    img = im.read_image(out)
    assert img.npu == pack_section(build_section(m, chunk=16))  # the section itself, via the reader


@pytest.mark.parametrize("quant,max_outliers", [("f32", None), ("q4_0", 0)])
def test_streamed_section_equals_whole_model_builder_with_outliers(tmp_path, vocab, quant, max_outliers):
    """A TinyLlama-shaped model with outlier channels (shadow-outlier tables in most layers), 3 blocks."""
    m = tinyllama_shaped(vocab, n_layers=3, seed=2)
    a, b = tmp_path / "stream.elk", tmp_path / "memory.elk"
    tables = []
    im.write_image(a, m, quant=quant, npu=section_writer(m, 32, max_outliers=max_outliers, done=tables.append))
    sec = build_section(m, chunk=32, max_outliers=max_outliers)
    im.write_image(b, m, quant=quant, npu=pack_section(sec))
    assert _digest(a) == _digest(b)
    has_outliers = any(len(L.outliers) for L in sec.layers)
    assert has_outliers == (max_outliers is None)  # the first case really exercises outlier tables
    head = parse_table(tables[0])  # what pack prints from: the head and entries as written
    assert [(e.role, e.layer, e.n_outliers, e.tflite_size) for e in head.layers] == \
        [(L.role, L.layer, len(L.outliers), len(L.tflite)) for L in sec.layers]
    assert im.verify_image(a).ok


def test_pack_memory_does_not_grow_with_the_npu_section(tmp_path, vocab):
    """tracemalloc peak of a streamed pack: the same for 6 and 24 blocks, and well under the section."""
    peaks, sizes = {}, {}
    for n in (6, 24):
        m = tinyllama_shaped(vocab, n_layers=n, seed=3)
        write = section_writer(m, 32, token_lists=ONE_SAMPLE)
        tracemalloc.start()
        try:
            im.write_image(tmp_path / f"m{n}.elk", m, quant="q8_0", npu=write)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        sizes[n] = im.read_image(tmp_path / f"m{n}.elk").sections["NPU"][2]
    assert sizes[24] > 20_000_000  # int8 weights + .tflite framing of 24 x 7 layers
    assert peaks[24] < sizes[24] / 3, (peaks, sizes)  # the in-memory path peaks at ~5x the section
    assert peaks[24] < peaks[6] * 1.25, (peaks, sizes)


class _DiskFull:
    """A file whose writes fail with ENOSPC once `left` bytes have gone through."""

    def __init__(self, f, left):
        self.f, self.left = f, left

    def write(self, b):
        n = len(memoryview(b).cast("B"))
        if n > self.left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= n
        return self.f.write(b)

    def seek(self, *a):
        return self.f.seek(*a)


def test_failed_stream_keeps_the_old_image_and_leaves_no_part_file(tmp_path, vocab):
    m = tinyllama_shaped(vocab, n_layers=2, seed=4)
    out = tmp_path / "m.elk"
    out.write_bytes(b"the previous image")
    write = section_writer(m, 32, token_lists=ONE_SAMPLE)
    with pytest.raises(FormatError, match="cannot write .No space left on device"):
        im.write_image(out, m, npu=lambda f, off: write(_DiskFull(f, 300_000), off))
    assert out.read_bytes() == b"the previous image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.elk"]


def test_bad_calibration_text_fails_before_any_file_is_written(tmp_path):
    text = tmp_path / "calib.txt"
    text.write_bytes(b"\x00\x01binary")
    out = tmp_path / "m.elk"
    r = subprocess.run([sys.executable, "-m", "elk", "pack", str(fixture_path("stories260K.bin")), "--tokenizer",
                        str(fixture_path("tok512.bin")), "--npu", "--npu-calib", str(text), "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("elk: error: ") and "Traceback" not in r.stderr
    assert "NUL bytes" in r.stderr
    assert list(tmp_path.iterdir()) == [text]


def test_section_writer_refuses_a_short_layer_count(tmp_path, vocab):
    """A section announced with n layers is never finished with fewer (its table would have holes)."""
    from elk.npu.section import NpuSectionError, SectionWriter

    m = tinyllama_shaped(vocab, n_layers=1, seed=5)
    sec = build_section(m, chunk=8, token_lists=ONE_SAMPLE)
    with open(tmp_path / "s.bin", "wb") as f:
        w = SectionWriter(f, 0, len(sec.layers) + 1, sec.chunk, sec.outlier_k, sec.calib_tokens)
        for L in sec.layers:
            w.add(L)
        with pytest.raises(NpuSectionError, match="7 of 8 layers"):
            w.finish()
    with open(tmp_path / "t.bin", "w+b") as f:
        w = SectionWriter(f, 0, len(sec.layers), sec.chunk, sec.outlier_k, sec.calib_tokens)
        for L in sec.layers:
            w.add(L)
        size = w.finish()
        f.seek(0)
        data = f.read()
    assert size == len(data) and data == pack_section(sec)
    assert len(parse_section(data).layers) == len(spec.NPU_ROLES)


def test_progress_counts_every_layers_int8_weights(tmp_path, vocab):
    m = tinyllama_shaped(vocab, n_layers=2, seed=6)
    calls = []
    im.write_image(tmp_path / "m.elk", m, npu=section_writer(m, 8, token_lists=ONE_SAMPLE,
                                                             progress=lambda *a: calls.append(a)))
    sec = parse_section(im.read_image(tmp_path / "m.elk").npu)
    assert len(calls) == len(sec.layers) == 2 * len(spec.NPU_ROLES)
    assert calls[-1][0] == calls[-1][1] == sum(L.rows * L.cols for L in sec.layers)
    assert calls[0][2] == "npu blk.0.wq" and calls[-1][2] == "npu blk.1.w3"
