"""The image parser and everything behind it under AddressSanitizer + UBSan (scons mode=asan):
a bounded mutation fuzz (tests/c/image_fuzz.c: truncations, bit flips, boundary values in the
header / section / tensor / tokenizer fields) and a generation run of libelk's asan build from
Python (LD_PRELOAD of libasan). Any memory error or undefined behaviour aborts the program."""

import subprocess
import sys

import pytest

from conftest import ROOT, fixture_path, scons

from elk.convert.pack import pack

SANITIZER_WORDS = ("AddressSanitizer", "runtime error", "LeakSanitizer")


@pytest.fixture(scope="module")
def asan_build():
    scons("mode=asan")
    return ROOT / "build" / "host-asan"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz")
    paths = {}
    for quant in ("f32", "q4_0"):
        paths[quant] = out / f"stories260K-{quant}.elk"
        pack(str(fixture_path("stories260K.bin")), str(paths[quant]), quant=quant,
             tokenizer=str(fixture_path("tok512.bin")))
    return paths


@pytest.mark.parametrize("quant,seed", [("f32", 1), ("q4_0", 2)])
def test_image_fuzz_under_asan_finds_no_memory_errors(asan_build, images, quant, seed):
    proc = subprocess.run([str(asan_build / "elk-image-fuzz"), str(images[quant]), "3000", str(seed)],
                          capture_output=True, text=True, timeout=300)
    assert not any(w in proc.stderr for w in SANITIZER_WORDS), proc.stderr[-4000:]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    counts = dict(line.rsplit(" ", 1) for line in proc.stdout.strip().splitlines())
    assert sum(int(v) for v in counts.values()) == 3000
    # The mutations reach many different checks, and some images still open (and then run).
    assert len(counts) >= 5 and int(counts.get("ok", 0)) > 0, counts
    for kind in ("offset or size outside the image", "header CRC mismatch",
                 "not an elk image (bad magic or malformed structure)"):
        assert int(counts.get(kind, 0)) > 0, counts


SCRIPT = r"""
import sys
import numpy as np
from elk.runtime import Model
with Model(sys.argv[1], threads=2) as m:
    ids = m.tokenize("Once upon a time, there was a little girl")
    rows = m.logits(ids)
    assert rows.shape == (len(ids), 512) and np.isfinite(rows).all()
    text = "".join(m.generate("Once upon a time", max_tokens=80, temperature=0.9, top_k=40, top_p=0.9,
                              repeat_penalty=1.1, seed=3))
    list(m.generate_tokens([1], max_tokens=500, temperature=1.0, seed=4))  # runs into the context end
    assert m.stats.stop_reason in ("context_full", "eos", "max_tokens")
    print(m.detokenize(m.tokenize(text)) == text)
"""


def test_runtime_generation_under_asan_is_clean(asan_build, images):
    lib = asan_build / "libelk.so"
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    env = {"ELK_LIB": str(lib), "LD_PRELOAD": libasan, "ASAN_OPTIONS": "detect_leaks=0",
           "PYTHONPATH": str(ROOT / "host"), "PATH": "/usr/bin:/bin"}
    for quant in ("f32", "q4_0"):
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(images[quant])], capture_output=True, text=True,
                              env=env, timeout=300)
        assert not any(w in proc.stderr for w in SANITIZER_WORDS), proc.stderr[-4000:]
        assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-3000:]
