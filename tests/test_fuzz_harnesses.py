"""Fuzz smoke tests: every harness builds and fuzzes a few seconds without a crash, the seed corpus
holds real inputs (so fuzzing starts deep, not at the magic check), and every saved crash input in
tests/fuzz-corpus/regressions/ replays clean. Long runs: `python fuzz/run.py --seconds 600`."""

import re
import subprocess
import sys

import pytest
from conftest import ROOT

from elk import boards, image, tokenizer, trust

CORPUS = ROOT / "tests" / "fuzz-corpus"
sys.path.insert(0, str(ROOT / "fuzz"))
import run as fuzz_run  # noqa: E402

NAMES = [h.name for h in fuzz_run.all_harnesses()]


def run(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "fuzz" / "run.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def test_fuzz_image_seeds_are_valid_images():
    seeds = sorted((CORPUS / "image").glob("*.elk"))
    assert len(seeds) >= 3
    for p in seeds:
        rep = image.verify_image(p)
        assert rep.ok, (p, rep.lines())
    signed = (CORPUS / "image" / "tiny-q8-signed.elk").read_bytes()
    from make_seeds import FUZZ_KEY

    findings = trust.verify_bytes(signed, trust.public_bytes(FUZZ_KEY))
    assert all(f.ok for f in findings), findings


def test_fuzz_tokenizer_and_board_seeds_parse():
    import struct

    for p in sorted((CORPUS / "tokenizer").iterdir()):
        data = p.read_bytes()
        n = struct.unpack_from("<I", data)[0]
        assert len(tokenizer.decode_section(data[4:4 + n])) > 0, p
    for p in sorted((CORPUS / "boards").glob("*.toml")):
        boards.load_file(p)


@pytest.mark.parametrize("name", NAMES)
def test_fuzz_harness_runs_clean_for_a_few_seconds(name):
    h = next(h for h in fuzz_run.all_harnesses() if h.name == name)
    if h.missing():
        pytest.fail(f"harness {name} cannot build: {h.missing()}")
    r = run("--only", name, "--seconds", "2", "--fresh")
    assert r.returncode == 0, r.stdout + r.stderr
    runs = int(re.search(rf"^{name}\s+(\d+) runs", r.stdout, re.M).group(1))
    assert runs > 50, r.stdout  # the harness really executed inputs, it did not just start


def test_fuzz_regressions_and_seeds_replay_clean():
    r = run("--replay")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in NAMES:
        assert re.search(rf"^{name}\s+replay \d+ inputs: ok", r.stdout, re.M), r.stdout


BOOM_C = r"""
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    char *b = malloc(4);
    memcpy(b, "ELK", 4);
    volatile char c = 0;
    if (n >= 3 && d[0] == 'E' && d[1] == 'L' && d[2] == 'K')
        c = b[n + 8];
    free(b);
    return c;
}
"""


def test_fuzz_replay_reports_a_crashing_input(tmp_path):
    """The runner must notice a crash: replay a harness with a planted out-of-bounds read."""
    src = tmp_path / "boom.c"
    src.write_text(BOOM_C)
    exe = tmp_path / "boom"
    subprocess.run(["clang", *fuzz_run.CFLAGS, str(src), "-o", str(exe)], check=True, capture_output=True)
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "fine").write_bytes(b"abc")
    h = fuzz_run.Harness("boom", "planted bug", "boom.c")
    assert fuzz_run.replay(h, exe, dirs=[inputs])["rc"] == 0
    (inputs / "bad").write_bytes(b"ELK!")
    r = fuzz_run.replay(h, exe, dirs=[inputs])
    assert r["rc"] != 0 and "heap-buffer-overflow" in r["log"]


@pytest.mark.parametrize("name, message", [
    ("gguf-array-length-hang", "do not fit"),          # was: gguf package looping for hours
    ("gguf-token-type-out-of-range", "has type -255"),  # was: struct.error traceback while packing
    ("gguf-tokenizer-model-bad-utf8", "is damaged"),    # was: UnicodeDecodeError traceback
])
def test_fuzz_found_checkpoints_give_one_line_errors_quickly(tmp_path, name, message):
    src = tmp_path / "model.gguf"
    src.write_bytes((CORPUS / "regressions" / "checkpoint" / name).read_bytes()[1:])  # byte 0 picks the reader
    proc = subprocess.run([sys.executable, "-m", "elk", "pack", str(src), "-o", str(tmp_path / "o.elk")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("elk: error:") and message in lines[0], proc.stderr
