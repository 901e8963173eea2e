"""`elk demo` runs the whole path (build, pack, emulate, flash over the pty, chat); with stdin not a
terminal it answers one scripted greedy prompt and exits 0."""

import subprocess
import sys

from conftest import ROOT, fixture_path

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


def test_demo_uses_the_shipped_demo_model_by_default(host_build):
    r = subprocess.run([sys.executable, "-m", "elk", "demo", "-n", "40"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "models/demo/demo.bin" in r.stdout and "OK slot A" in r.stdout
    story = [line for line in r.stdout.splitlines() if line.startswith("Once upon a time")]
    assert story and len(story[0]) > 60
