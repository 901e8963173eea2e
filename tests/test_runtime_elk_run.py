"""build/host/elk-run, the C-only generation program (used under qemu and for speed work):
same tokens as the Python binding, --ids mode, one-line errors with exit 2."""

import subprocess

import pytest

from conftest import fixture_path

from elk.convert.pack import pack
from elk.runtime import Model


@pytest.fixture(scope="module")
def image(tmp_path_factory, host_build):
    path = tmp_path_factory.mktemp("elkrun") / "stories260K-q8_0.elk"
    pack(str(fixture_path("stories260K.bin")), str(path), quant="q8_0", tokenizer=str(fixture_path("tok512.bin")))
    return path


def run(host_build, *args):
    return subprocess.run([str(host_build / "elk-run"), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_elk_run_greedy_ids_equal_the_python_binding(host_build, image):
    with Model(image, threads=1) as m:
        prompt = m.tokenize("Once upon a time")
        want = [t for t, _ in m.generate_tokens(prompt, max_tokens=30, temperature=0)]
        text = "".join(m.generate("Once upon a time", max_tokens=30, temperature=0))
    p = run(host_build, image, "--ids", "-p", ",".join(map(str, prompt)), "-n", 30, "--temperature", 0)
    assert p.returncode == 0, p.stderr
    assert [int(t) for t in p.stdout.split()] == want
    q = run(host_build, image, "-p", "Once upon a time", "-n", 30, "--temperature", 0, "--threads", 2)
    assert q.returncode == 0 and q.stdout == "Once upon a time" + text
    assert "tokens/s" in q.stderr and "first token after" in q.stderr


def test_elk_run_seeded_sampling_is_reproducible(host_build, image):
    a = run(host_build, image, "-n", 40, "--seed", 5, "--temperature", 1.0, "--top-p", 0.9)
    b = run(host_build, image, "-n", 40, "--seed", 5, "--temperature", 1.0, "--top-p", 0.9)
    c = run(host_build, image, "-n", 40, "--seed", 6, "--temperature", 1.0, "--top-p", 0.9)
    assert a.returncode == 0 and a.stdout == b.stdout != c.stdout


@pytest.mark.parametrize("args,words", [
    (("{tmp}/missing.elk",), "cannot open"),
    (("{img}", "-p", "Once upon a time " * 200), "context holds 512"),
    (("{img}", "--ctx", "9999"), "seq_len 512"),
    (("{img}", "--kernels", "nope"), "kernels 'nope'"),
    (("{img}", "-n"), "needs a value"),
    (("{img}", "--ids", "-p", "1,x"), "not a list of ids"),
    (("{img}", "--ids", "-p", "1,600"), "outside the vocabulary"),
    (("{img}", "--bogus", "1"), "--bogus: unknown option"),
    (("{img}", "-n", "1e10"), "-n 1e10 is outside [1, 2147483647]"),
    (("{img}", "-n", "2.5"), "-n 2.5 is not a whole number"),
    (("{img}", "--ctx", "-1"), "--ctx -1 is outside [1, 2147483647]"),
    (("{img}", "--threads", "1000"), "--threads 1000 is outside [1, 64]"),
    (("{img}", "--temperature", "warm"), "--temperature warm is not a number"),
    (("{img}", "--ids", "-p", "1,4294967297"), "not a list of ids"),  # would wrap to id 1 in int32
])
def test_elk_run_errors_are_one_line_exit_2(host_build, image, tmp_path, args, words):
    p = run(host_build, *[a.format(img=image, tmp=tmp_path) for a in args])
    assert p.returncode == 2
    err = [line for line in p.stderr.splitlines() if line.startswith("elk-run: error:")]
    assert len(err) == 1 and words in err[0], p.stderr


def test_elk_run_prompt_too_long_prints_nothing_but_one_error_line(host_build, image):
    p = run(host_build, image, "-p", "Once upon a time " * 200)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == ["elk-run: error: prompt is 802 tokens but the context holds 512: shorten the "
                                     "prompt (the context is already the model's whole seq_len 512)"]
