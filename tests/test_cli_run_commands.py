"""`elk run`, `elk tokenize`, `elk detokenize` as a user runs them (subprocess, real image)."""

import subprocess
import sys

import pytest

from conftest import ROOT, fixture_path, run_elk

from elk.convert.pack import pack

KNOWN_GREEDY = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
                "One day, she saw a big, red ball.")


@pytest.fixture(scope="module")
def image(tmp_path_factory, host_build):
    path = tmp_path_factory.mktemp("cli") / "stories260K.elk"
    pack(str(fixture_path("stories260K.bin")), str(path), quant="f32", tokenizer=str(fixture_path("tok512.bin")))
    return path


def test_cli_run_greedy_prints_the_known_story_and_timing(image):
    p = run_elk("run", image, "-p", "Once upon a time", "-n", "40", "--temperature", "0")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(KNOWN_GREEDY)
    assert "tokens/s" in p.stderr and "time to first token" in p.stderr


def test_cli_run_seed_reproduces_sampled_text(image):
    a = run_elk("run", image, "-n", "30", "--seed", "11", "--top-k", "20", "--top-p", "0.9")
    b = run_elk("run", image, "-n", "30", "--seed", "11", "--top-k", "20", "--top-p", "0.9")
    assert a.returncode == 0 and a.stdout == b.stdout and len(a.stdout.strip()) > 20


def test_cli_run_single_thread_and_short_context(image):
    p = run_elk("run", image, "-p", "Once upon a time", "-n", "100", "--temperature", "0", "--threads", "1",
            "--ctx", "20")
    assert p.returncode == 0, p.stderr
    assert "context_full" in p.stderr and p.stdout.startswith("Once upon a time, there was")


def test_cli_tokenize_then_detokenize_roundtrips(image):
    p = run_elk("tokenize", image, "Lily saw a big dog.")
    ids = p.stdout.split()
    assert p.returncode == 0 and ids[0] == "1" and len(ids) > 4
    q = run_elk("detokenize", image, *ids)
    assert q.returncode == 0 and q.stdout == "Lily saw a big dog.\n"
    assert run_elk("tokenize", image, "Lily", "--no-bos").stdout.split()[0] != "1"


@pytest.mark.parametrize("args,words", [
    (("run", "{img}", "-p", "Once upon a time " * 200, "-n", "5"), ("prompt is", "context holds 512")),
    (("run", "{missing}",), ("cannot open",)),
    (("run", "{img}", "--temperature", "-1"), ("--temperature: -1 must be finite and >= 0",)),
    (("detokenize", "{img}", "9999"), ("9999", "outside the vocabulary")),
    (("run", "{img}", "--ctx", "4096"), ("seq_len 512",)),
    # values C cannot hold or would reject with a bare status code: named, with the allowed range
    # (usage errors from argparse: "elk run: error: argument OPTION: VALUE ...", elk.options)
    (("run", "{img}", "-n", "10000000000000"), ("--max-tokens: 10000000000000 is outside [1, 2147483647]",)),
    (("run", "{img}", "--top-k", "10000000000000"), ("--top-k: 10000000000000 is outside",)),
    (("run", "{img}", "--temperature", "nan"), ("--temperature: nan", ">= 0")),
    (("run", "{img}", "--temperature", "1e39"), ("--temperature: 1e39", "finite")),
    (("run", "{img}", "--top-p", "1.5"), ("--top-p: 1.5", "(0, 1]")),
    (("run", "{img}", "--top-p", "0"), ("--top-p: 0 ", "(0, 1]")),
    (("run", "{img}", "--repeat-penalty", "0"), ("--repeat-penalty: 0 ", "> 0")),
    (("run", "{img}", "--threads", "-3"), ("--threads: -3", "[1, 64]")),
    (("run", "{img}", "--threads", "1000"), ("--threads: 1000", "[1, 64]")),
    (("run", "{img}", "--ctx", "10000000000"), ("--ctx: 10000000000", "outside")),
    (("detokenize", "{img}", "99999999999999"), ("99999999999999", "outside the vocabulary")),
    (("detokenize", "{img}", "--", "-5"), ("-5", "outside the vocabulary")),
])
def test_cli_run_errors_are_one_line_exit_2(image, tmp_path, args, words):
    args = [a.format(img=image, missing=tmp_path / "nope.elk") for a in args]
    p = run_elk(*args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("elk: error: ", "elk run: error: ")), p.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_cli_prompt_bytes_that_are_not_utf8_become_byte_tokens(image):
    """argv is bytes: an invalid UTF-8 byte reaches the tokenizer as its byte token (tok512: <0xFF> is
    id 3 + 255), and the echoed prompt shows U+FFFD instead of a traceback."""
    raw = [sys.executable, "-m", "elk", "tokenize", str(image), b"a\xffb"]
    p = subprocess.run(raw, capture_output=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    assert 258 in [int(i) for i in p.stdout.split()]
    q = subprocess.run([sys.executable, "-m", "elk", "run", str(image), "-p", b"a\xffb", "-n", "3"],
                       capture_output=True, cwd=ROOT, timeout=60)
    assert q.returncode == 0, q.stderr
    assert q.stdout.startswith("a\ufffdb".encode())
