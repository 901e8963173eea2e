"""Connecting to a board: a port with no board behind it (off, wrong port) is one `elk: error:` line after
the connect budget (3 s by default, --connect-timeout / ELK_CONNECT_TIMEOUT), not after 16 s of
retransmissions; the line says what was tried and the likely causes. A board that starts answering
within the budget is reached, a longer budget waits longer, and `elk emulate` hands out a board only
once its firmware serves the line. (A board checking a large image answers HELLO at once and is waited
for: test_flash_bootrecord.)"""

import os
import re
import subprocess
import threading
import time

import pytest

from conftest import ROOT, run_elk
from elk.emulate import Emulator
from elk.link import LinkError, NoAnswerError, connect

NO_ANSWER = re.compile(r"elk: error: (\S+): no answer from a board: (\d+) HELLO tries at 115200 baud in "
                       r"(\d+\.\d) s; nothing came back\. Is the board powered and running elk-fw, is this its "
                       r"port \(`elk ports` lists ports and emulated boards\), is the rate right \(--baud\)\? "
                       r"A board that needs longer: --connect-timeout SECONDS\n")


@pytest.fixture
def silent_port():
    """A real pseudo-terminal with nothing behind it: what a board that is off looks like."""
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_no_board_is_one_line_within_the_connect_budget(silent_port):
    for args in (("status",), ("chat", "-p", "hi")):
        t0 = time.monotonic()
        r = run_elk(*args, "--port", silent_port, timeout=60)
        took = time.monotonic() - t0
        m = NO_ANSWER.fullmatch(r.stderr)
        assert r.returncode == 2 and m and r.stdout == "", r.stderr
        assert m.group(1) == silent_port and int(m.group(2)) >= 3  # quick retries, not one long wait
        assert 3.0 <= float(m.group(3)) < 4.0
        # 8 retransmissions with a growing timeout took 16 s before; Python's start-up is the rest
        assert took < 12, took


def test_connect_timeout_flag_and_environment_set_the_budget(silent_port):
    r = run_elk("status", "--port", silent_port, "--connect-timeout", "1")
    m = NO_ANSWER.fullmatch(r.stderr)
    assert r.returncode == 2 and m and 1.0 <= float(m.group(3)) < 1.5, r.stderr
    r = run_elk("status", "--port", silent_port, env={**os.environ, "ELK_CONNECT_TIMEOUT": "0.5"})
    m = NO_ANSWER.fullmatch(r.stderr)
    assert r.returncode == 2 and m and 0.5 <= float(m.group(3)) < 1.0, r.stderr


@pytest.mark.parametrize("args, env, message", [
    (("--connect-timeout", "0"), None, "--connect-timeout must be above 0 seconds, got 0"),
    (("--connect-timeout", "-2"), None, "--connect-timeout must be above 0 seconds, got -2"),
    ((), "soon", "ELK_CONNECT_TIMEOUT must be a number of seconds, got 'soon'"),
    # a large budget was refused as "must be above 0 seconds"
    (("--connect-timeout", "1e6"), None, "--connect-timeout must be below 1000000 seconds (11.6 days), got 1e+06"),
    ((), "nan", "ELK_CONNECT_TIMEOUT must be a number of seconds, got nan"),
])
def test_a_bad_connect_budget_is_one_line(silent_port, args, env, message):
    for cmd in (("status",), ("flash", ROOT / "README.md")):
        r = run_elk(*cmd, "--port", silent_port, *args,
                    env={**os.environ, "ELK_CONNECT_TIMEOUT": env} if env else None)
        assert r.returncode == 2 and r.stderr == f"elk: error: {message}\n", r.stderr


def test_garbage_on_the_line_is_named_in_the_no_answer_line():
    """A line that carries bytes but no valid frame (on a real UART: a wrong --baud) says so."""
    m, s = os.openpty()
    import tty
    tty.setraw(s)
    port = os.ttyname(s)
    stop = threading.Event()

    def noise():  # what a UART at the wrong rate delivers: bytes, zeros among them, never a valid frame
        while not stop.is_set():
            os.write(m, bytes([0x00, 0x55, 0xF0, 0x0F, 0x33, 0x00, 0x81]))
            time.sleep(0.02)
    threading.Thread(target=noise, daemon=True).start()
    try:
        with pytest.raises(NoAnswerError) as e:
            connect(port, 115200, timeout=1.0)
        assert re.search(r"no answer from a board: \d+ HELLO tries at 115200 baud in 1\.\d s; \d+ bytes came "
                         r"back but no valid reply \(a wrong --baud garbles them\)", str(e.value)), str(e.value)
        assert "\n" not in str(e.value)
    finally:
        stop.set()
        time.sleep(0.05)
        os.close(m)
        os.close(s)


def _start_firmware_later(master: int, delay: float, flash) -> subprocess.Popen:
    time.sleep(delay)
    fw = ROOT / "build" / "host" / "elk-fw"
    return subprocess.Popen([str(fw), "--uart-fd", str(master), "--flash", str(flash), "--baud", "0", "--quiet"],
                            pass_fds=(master,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def test_a_board_that_starts_answering_within_the_budget_is_reached(host_build, tmp_path):
    """HELLO is retried quickly until the budget is spent, so a board that comes up 1.5 s after the
    first HELLO (the real elk-fw, started late on the pty) is reached by the same connect()."""
    master, slave = os.openpty()
    import tty
    tty.setraw(slave)
    procs = []
    try:
        t = threading.Thread(target=lambda: procs.append(_start_firmware_later(master, 1.5, tmp_path / "f.bin")))
        t0 = time.monotonic()
        t.start()
        with connect(os.ttyname(slave), 0, timeout=3.0) as link:
            took, hello_tries = time.monotonic() - t0, link.tries
            assert link.info().board == "host" and hello_tries >= 2
        assert took >= 1.5  # it was waited for, not answered by something else
    finally:
        t.join()
        for p in procs:
            p.terminate()
            p.wait()
        os.close(master)
        os.close(slave)


def test_connect_timeout_flag_waits_for_a_board_slower_than_the_default(host_build, tmp_path):
    """`elk status --connect-timeout 20` reaches a board that starts 4 s after it began (the default 3 s
    budget would have given up)."""
    master, slave = os.openpty()
    import tty
    tty.setraw(slave)
    procs = []
    try:
        t = threading.Thread(target=lambda: procs.append(_start_firmware_later(master, 4.0, tmp_path / "f.bin")))
        t.start()
        r = run_elk("status", "--port", os.ttyname(slave), "--baud", "0", "--connect-timeout", "20")
        assert r.returncode == 0 and "board host: elk-fw" in r.stdout, r.stderr
    finally:
        t.join()
        for p in procs:
            p.terminate()
            p.wait()
        os.close(master)
        os.close(slave)


def test_emulate_returns_once_the_firmware_serves(host_build):
    """Emulator.start() waits for elk-fw's first UART read (--ready-fd): the first HELLO, with a budget far
    below any start-up time, is answered."""
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        with connect(emu.port, 0, timeout=0.3) as link:
            assert link.info().board == "host"


def test_a_missing_port_is_named_without_saying_hello():
    with pytest.raises(LinkError, match=r"^/dev/pts/no-such-port: port not found \(is `elk emulate` running"):
        connect("/dev/pts/no-such-port")
