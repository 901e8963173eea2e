"""`elk chat --reply-timeout SECONDS`: how long the host waits for a silent board during a reply (default
120 s; with a PROGRESS board, the silence during one 64-token prefill batch). Out of range is one usage
line; a board that hangs mid-prefill (its emulator SIGSTOPped after the first progress report) ends
`elk chat` with one error line and exit 2 that many seconds later, instead of two minutes."""

import os
import pty
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, flashed_board, pack_stories260k_long, read_pty_to_end, run_elk

LONG = "".join(f"Lily and Tom went to the park {i} times to play with the ball. " for i in range(160))


@pytest.mark.parametrize("value, rule", [("0", "is outside (0, 1000000) seconds"),
                                         ("-3", "is outside (0, 1000000) seconds"),
                                         ("1000000", "is outside (0, 1000000) seconds"),
                                         ("nan", "is outside (0, 1000000) seconds"),
                                         ("inf", "is outside (0, 1000000) seconds"),
                                         ("soon", "is not a number")])
def test_reply_timeout_out_of_range_is_one_usage_line(value, rule):
    r = run_elk("chat", "--port", "/dev/null", "-p", "hi", f"--reply-timeout={value}")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert lines == [f"elk chat: error: argument --reply-timeout: {value} {rule} (see `elk chat --help`)"], r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def board(tmp_path_factory, host_build):
    with flashed_board(pack_stories260k_long(tmp_path_factory.mktemp("reply-timeout"))) as emu:
        yield emu


def _chat_and_stop_board(board, bound):
    """`elk chat -p LONG --stats` with stderr on a pty (so it shows prefill progress); the board is
    SIGSTOPped at the first report. Returns (exit code, stderr text, seconds from the stop to the exit)."""
    args = ["chat", "--port", board.port, "--baud", "0", "-p", LONG, "--raw", "-n", "4", "--stats",
            "--reply-timeout", str(bound)]
    master, slave = pty.openpty()
    stopped = None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "elk", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=slave)
        os.close(slave)

        def stop_at_first_report(err):
            nonlocal stopped
            if stopped is None and b"(prefill " in err:
                board.proc.send_signal(signal.SIGSTOP)
                stopped = time.monotonic()
        err = read_pty_to_end(master, stop_at_first_report)
        proc.wait(timeout=60)
        ended = time.monotonic()
    finally:
        board.proc.send_signal(signal.SIGCONT)
        os.close(master)
    assert stopped is not None, err
    return proc.returncode, err.decode(), ended - stopped


def test_a_board_that_hangs_mid_prefill_ends_elk_chat_within_the_bound(board):
    code, err, waited = _chat_and_stop_board(board, 1.5)
    # what the terminal shows: the progress note is rewritten in place (\r) and erased before the error
    shown = [line.rsplit("\r", 1)[-1] for line in err.replace("\r\n", "\n").split("\n")]
    shown = [line for line in shown if line.strip()]
    assert code == 2, err
    assert len(shown) == 1 and re.fullmatch(
        rf"elk: error: {re.escape(board.port)}: the board stopped answering during the prompt's prefill "
        r"\(\d+/3732 tokens; nothing came from the board for 1.5 s\)", shown[0]), err
    assert 1.5 <= waited < 1.5 + 3, waited
    # woken up, the board serves the next reply at once (the default bound is unchanged)
    r = run_elk("chat", "--port", board.port, "--baud", "0", "-p", "Once upon a time", "-n", "4")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
