"""End to end on a native emulated board behind a real pty: `elk emulate` prints its port first,
`elk ports` lists it, `elk flash` writes stories260K, `elk chat -p` gets its known greedy text, and a
plain terminal gets the text console."""

import os
import signal
import subprocess
import sys
import time

import pytest
import serial

from conftest import ROOT, pack_stories260k, run_elk

GREEDY = ", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball."


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    return pack_stories260k(tmp_path_factory.mktemp("img") / "s260.elk")


@pytest.fixture(scope="module")
def emulator(host_build, tmp_path_factory):
    """`elk emulate` as a user runs it, unthrottled for speed."""
    flash = tmp_path_factory.mktemp("flash") / "board.bin"
    proc = subprocess.Popen([sys.executable, "-m", "elk", "emulate", "--baud", "0", "--flash", str(flash)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = proc.stdout.readline().strip()
    assert first.startswith("port: /dev/pts/"), first
    yield {"proc": proc, "port": first.split(" ", 1)[1], "flash": flash}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_emulate_prints_port_first_and_ports_lists_it(emulator):
    r = run_elk("ports")
    assert r.returncode == 0
    assert any(line.startswith(emulator["port"]) and "emulated host board" in line for line in r.stdout.splitlines())


def test_flash_then_chat_gives_the_known_greedy_text(emulator, stories):
    r = run_elk("flash", "--port", emulator["port"], stories, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "OK slot A" in r.stdout
    r = run_elk("chat", "--port", emulator["port"], "-p", "Once upon a time", "-n", "30", "--temperature", "0", "--raw")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(GREEDY[:60])
    r = run_elk("status", "--port", emulator["port"], "--json")
    import json

    st = json.loads(r.stdout)
    assert st["active"] == "A" and st["running"] == "A" and st["slots"][0]["name"] == "stories260K"
    assert st["slots"][0]["image_size"] == stories.stat().st_size
    import hashlib

    sha = hashlib.sha256(stories.read_bytes()).hexdigest()
    assert st["slots"][0]["sha256"] == sha and st["slots"][0]["valid"] and not st["slots"][1]["valid"]
    assert st["protocol"] == 1 and st["firmware"].startswith("elk-fw ") and st["ram_bytes"] > 0
    assert "flash" in st["capabilities"] and "generate" in st["capabilities"]
    r = run_elk("status", "--port", emulator["port"])  # the same for people: the full SHA-256 to compare
    assert r.returncode == 0 and f"slot A: stories260K ({stories.stat().st_size} bytes, sha256 {sha}) " \
        "[active, running]" in r.stdout and "slot B: (empty)" in r.stdout and "RAM " in r.stdout


def test_text_console_answers_a_terminal(emulator, stories):
    if run_elk("status", "--port", emulator["port"], "--json").returncode != 0:
        pytest.fail("board not answering")
    time.sleep(1.6)  # the console ignores text for a moment after the last frame
    with serial.Serial(emulator["port"], 115200, timeout=0.2) as term:
        term.reset_input_buffer()
        term.write(b"help\r")
        text = _read_until(term, b"> ")
        assert b"reset" in text and b"info" in text
        term.write(b"info\r")
        text = _read_until(term, b"> ")
        assert b"slot A: stories260K [active] [running]" in text
        term.write(b"Once upon a time\r")
        text = _read_until(term, b"\r\n> ", timeout=20)
        assert len(text.strip()) > 40 and b"\x00" not in text  # a streamed reply, then the prompt again


def _read_until(term, marker, timeout=5.0):
    buf, end = b"", time.monotonic() + timeout
    while marker not in buf and time.monotonic() < end:
        buf += term.read(4096)
    assert marker in buf, buf[-300:]
    return buf


def test_flash_and_chat_fail_in_one_line_for_a_missing_port(stories):
    r = run_elk("flash", "--port", "/dev/pts/nope", stories)
    assert r.returncode == 2 and "port not found" in r.stderr and "Traceback" not in r.stderr
    r = run_elk("chat", "--port", "/dev/pts/nope", "-p", "hi")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "port not found" in r.stderr


def test_emulate_rejects_an_unknown_board():
    r = run_elk("emulate", "--board", "no-such-board", timeout=30)
    assert r.returncode == 2 and "unknown board" in r.stderr and "Traceback" not in r.stderr


def test_text_console_ctrl_c_stops_a_reply(stories, tmp_path):
    """On a 2400-baud line a console reply takes seconds; Ctrl-C (0x03) right after it starts cuts it
    short (" ^C" and a new prompt, no prompt before it), and the console keeps working."""
    import os

    from elk import flash as flashing
    from elk.emulate import Emulator

    flash = tmp_path / "board.bin"
    with Emulator("host", baud=0, flash=flash, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], stories, progress=False)[0].ok
    with Emulator("host", baud=2400, flash=flash, log=open(os.devnull, "w")) as emu, \
            serial.Serial(emu.port, 2400, timeout=0.2) as term:
        _read_until(term, b"> ")  # the banner
        term.write(b"Once upon a time\r")
        _read_until(term, b"Once upon a time\r\n")  # echo, then the reply streams
        time.sleep(0.2)
        term.write(b"\x03")
        text = _read_until(term, b" ^C\r\n> ", timeout=10)
        assert b"\r\n> " not in text[:-4]  # the reply was cut, not finished before the ^C
        term.write(b"help\r")
        assert b"reset" in _read_until(term, b"> ")
