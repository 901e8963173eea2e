"""`elk demo` runs the whole path (build, pack, emulate, flash over the pty, chat); with stdin not a
terminal it answers one scripted greedy prompt and exits 0."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT, fixture_path, run_elk

GREEDY = "Once upon a time, there was a little girl named Lily."


def test_demo_runs_the_whole_path_with_a_scripted_prompt(host_build):
    r = subprocess.run([sys.executable, "-m", "elk", "demo", "--model", fixture_path("stories260K.bin"),
                        "--tokenizer", fixture_path("tok512.bin"), "-n", "30"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout
    assert "demo: emulated host board on /dev/pts/" in out
    assert "OK slot A" in out
    assert GREEDY in out
    assert "tokens/s" in out


def test_demo_without_a_model_fails_in_one_line(host_build, tmp_path):
    r = subprocess.run([sys.executable, "-m", "elk", "demo", "--model", tmp_path / "missing.bin"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.startswith("elk: error:") and "Traceback" not in r.stderr


def _corpus_words() -> tuple:
    """Words and adjacent word pairs of the demo model's training corpus (train.py's defaults)."""
    import importlib.util
    import re

    spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "models" / "demo" / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    words = re.findall(r"[A-Za-z]+", mod.make_corpus(16000, seed=1))
    return set(words), set(zip(words, words[1:]))


def test_demo_uses_the_shipped_demo_model_by_default(host_build, tmp_path):
    """From any folder, without ../shared: the shipped model answers on the board in words and word
    pairs of its corpus (readable text, not noise)."""
    import re

    r = subprocess.run([sys.executable, "-m", "elk", "demo", "-n", "60"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "models/demo/demo.bin" in r.stdout and "OK slot A" in r.stdout and "shared" not in r.stdout
    story = [line for line in r.stdout.splitlines() if line.startswith("Once upon a time")]
    assert story and len(story[0]) > 100
    words = re.findall(r"[A-Za-z]+", story[0])
    known, pairs = _corpus_words()
    assert len(words) >= 20 and sum(w in known for w in words) >= 0.95 * len(words), story[0]
    assert sum(p in pairs for p in zip(words, words[1:])) >= 0.9 * (len(words) - 1), story[0]


def test_demo_on_a_terminal_opens_the_chat_console(host_build, tmp_path):
    """`elk demo` in a terminal (a real pty): after flashing, the chat console; a prompt gets a streamed
    reply, /stats reports it, /quit ends the demo with exit 0 and no board left running."""
    import os
    import select
    import time

    master, slave = os.openpty()
    env = dict(os.environ, ELK_RUNTIME_DIR=str(tmp_path / "run"))
    proc = subprocess.Popen([sys.executable, "-m", "elk", "demo", "-n", "30"], stdin=slave, stdout=slave,
                            stderr=slave, cwd=tmp_path, env=env)
    seen = b""

    def until(marker, timeout=120):
        nonlocal seen
        end = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < end and proc.poll() is None:
            if select.select([master], [], [], 0.1)[0]:
                seen += os.read(master, 65536)
        assert marker in seen, seen[-1500:]

    try:
        until(b"/help for commands\r\n> ")
        # no --seed: the session's seed is drawn at random and shown, as `elk chat` does
        assert re.search(rb"\(seed \d+, drawn at random: --seed \d+ repeats this session\)", seen), seen[-500:]
        os.write(master, b"/temp 0\r")
        until(b"(temperature 0, top-p 0.9, top-k 0")
        seen = b""
        os.write(master, b"Once upon a time\r")
        until(b"Once upon a time\r\n")  # the terminal's echo; then the reply streams
        seen = seen.split(b"Once upon a time\r\n", 1)[1]
        until(b"\r\n> ", timeout=60)
        reply = seen.split(b"\r\n> ", 1)[0].decode()
        assert len(reply) > 60 and reply.count(" ") > 10, reply
        os.write(master, b"/stats\r")
        until(b"30 tokens")
        os.write(master, b"/quit\r")
        assert proc.wait(timeout=30) == 0
        assert not list((tmp_path / "run").glob("*.json"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("value", ["0", "-1", "4294967296"])
def test_demo_token_limit_out_of_range_is_one_usage_line_before_building(value):
    """`elk demo -n 0` used to build, pack, emulate and flash, then send the prompt with a limit of 0:
    the board read the prompt in, nothing was printed and the demo exited 0. -n is refused as elk chat
    refuses it, before any of that (no output on stdout: nothing was built or started)."""
    r = run_elk("demo", "-n", value, timeout=60)
    assert r.returncode == 2 and r.stdout == "", r.stdout[-2000:]
    assert f"argument -n/--max-tokens: {value} is outside [1, 4294967295]" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
