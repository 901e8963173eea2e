"""The image writer writes every 2 MiB window whole before any piece of it (so a large-folio page
cache holds a fresh image in 2 MiB folios, docs/performance.md "Huge pages"), and the bytes are the
same as writing each piece where it goes."""

import os
import random

import pytest

from elk import image

W = image._WINDOW


def _pieces(seed, size):
    rnd = random.Random(seed)
    out, off = [], rnd.randrange(0, 4096)
    while True:
        n = rnd.choice([1, 63, 4096, W - 1, W, W + 1, 3 * W + 17, rnd.randrange(1, 5 * W)])
        if off + n > size:
            return out
        out.append((off, rnd.randbytes(n)))
        off += n + rnd.choice([0, 0, 1, 64, 4000, W])


def _first_writes_cover_whole_windows(calls, size):
    """True when the first write that touches each 2 MiB window covers all of it (to EOF at the end)."""
    seen = set()
    for off, n in calls:
        for w in range(off // W, (off + n - 1) // W + 1):
            if w in seen:
                continue
            seen.add(w)
            base, whole = w * W, min(W, size - w * W)
            if not (off <= base and off + n >= base + whole):
                return False
    return True


@pytest.mark.parametrize("seed", range(4))
def test_window_writer_bytes_and_whole_window_first_writes(tmp_path, monkeypatch, seed):
    size = 24 * W + 12345
    pieces = _pieces(seed, size)
    want = bytearray(size)
    for off, b in pieces:
        want[off:off + len(b)] = b

    calls, real = [], os.pwrite

    def pwrite(fd, data, off):
        calls.append((off, len(data)))
        return real(fd, data, off)
    monkeypatch.setattr(image.os, "pwrite", pwrite)
    path = tmp_path / "img"
    with open(path, "wb") as f:
        f.truncate(size)
        w = image._WindowWriter(f, size)
        for off, b in pieces:
            w.write_at(off, b)
    assert path.read_bytes() == bytes(want)
    assert calls and _first_writes_cover_whole_windows(calls, size)
    # and the check itself catches pieces written as they come
    assert not _first_writes_cover_whole_windows([(off, len(b)) for off, b in pieces], size)


def test_window_writer_is_forward_only(tmp_path):
    with open(tmp_path / "img", "wb") as f:
        w = image._WindowWriter(f, 1000)
        w.write_at(100, b"abc")
        with pytest.raises(AssertionError):
            w.write_at(50, b"x")


def test_pack_writes_the_image_in_whole_windows(tmp_path, monkeypatch):
    """elk pack goes through the window writer: the first write into every 2 MiB window covers it
    whole, and the image it writes verifies."""
    from conftest import pack_stories260k

    calls, real = [], os.pwrite

    def pwrite(fd, data, off):
        calls.append((off, len(data)))
        return real(fd, data, off)
    monkeypatch.setattr(image.os, "pwrite", pwrite)
    img = pack_stories260k(tmp_path / "s.elk", quant="q8_0")
    assert calls and _first_writes_cover_whole_windows(calls, img.stat().st_size)
    assert calls[0] == (0, img.stat().st_size)  # a 1 MB image: one window, primed whole first
    image.verify_image(img)


def _image_vmas(img):
    """[(size in kB, VmFlags)] of this process's mappings of the file img, from /proc/self/smaps."""
    vmas, inside = [], False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:
            inside = line.rstrip().endswith(str(img))
            if inside:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                vmas.append([(hi - lo) // 1024, None])
        elif inside and line.startswith("VmFlags:"):
            vmas[-1][1] = line.split()[1:]
    return vmas


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc/self/smaps")
def test_runtime_marks_image_mapping_for_huge_pages(tmp_path):
    """libelk asks for 2 MiB folios on the image mapping (VmFlags 'hg' in smaps): without it, a cold
    image is read into small folios and decode streams the weights through 4 KiB TLB entries. A tied
    embedding (stories260K's, also the output matrix) is streamed too and stays in that range."""
    from conftest import pack_stories260k
    from elk.runtime import Model

    img = pack_stories260k(tmp_path / "s.elk")
    with Model(img):
        vmas = _image_vmas(img)
    assert vmas, "image mapping not found in /proc/self/smaps"
    assert all("hg" in flags for _, flags in vmas), vmas


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc/self/smaps")
def test_runtime_keeps_an_untied_embedding_on_small_pages(tmp_path):
    """An embedding that is not the output matrix is read a row per token: libelk marks its pages
    'nh' (no huge pages), so a 2 MiB page is not mapped (and counted in the RSS) for one row."""
    from conftest import fixture_path
    from elk import image as im
    from elk.models import synth
    from elk.runtime import Model

    img = synth.synthesize("tiny", tmp_path / "tiny.elk", vocab_path=fixture_path("tok512.bin"), quant="q8_0")
    embd = im.read_image(img).tensor("TOK_EMBD")
    assert "output.weight" in im.read_image(img).tensors and embd.size > 3 * 4096
    with Model(img):
        vmas = _image_vmas(img)
    small = [kb for kb, flags in vmas if "nh" in flags]
    assert len(small) == 1 and embd.size // 1024 - 8 <= small[0] <= embd.size // 1024, (vmas, embd.size)
    assert sum(1 for _, flags in vmas if "hg" in flags) >= 1
