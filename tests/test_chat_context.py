"""The limits of one conversation on a board (stories260K: a 512-token context, prompts of up to 32 KiB
staged across frames): a prompt longer than the context or than that is one clear error line and the
board keeps answering; a chat that fills the context stops with "context full" and needs /reset (the
firmware keeps no sliding window, docs/protocol.md), in `elk chat` and on the board's text console."""

import io
import re
import subprocess
import sys
import time

import pytest
import serial

from conftest import ROOT, fixture_path, flashed_board, read_until
from elk import chat
from elk.link import connect

GREEDY = ", there was a little girl named Lily. She loved to play outside in the park."
LONG_PROMPT = "the cat sat on the mat. " * 200  # 4800 bytes: fits a frame, far more than 512 tokens


@pytest.fixture(scope="module")
def board(host_build, tmp_path_factory):
    from elk.convert.pack import pack

    image = tmp_path_factory.mktemp("ctx") / "s260.elk"
    pack(str(fixture_path("stories260K.bin")), str(image), tokenizer=str(fixture_path("tok512.bin")))
    with flashed_board(image) as emu:
        yield emu


def _chat(board, prompt, *extra):
    return subprocess.run([sys.executable, "-m", "elk", "chat", "--port", board.port, "-p", prompt, *extra],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def _still_serves(board):
    r = _chat(board, "Once upon a time", "-n", "20", "--temp", "0", "--raw")
    assert r.returncode == 0 and r.stdout.startswith(GREEDY[:40]), r.stderr


def test_chat_prompt_longer_than_the_context_is_one_error_line_and_the_board_keeps_serving(board):
    r = _chat(board, LONG_PROMPT, "-n", "20", "--temp", "0")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    m = re.fullmatch(r"elk: error: \S+: the prompt is (\d+) tokens, more than the model's context of 512; "
                     r"send a shorter prompt", lines[0])
    assert m and int(m.group(1)) > 512, lines[0]
    with connect(board.port, 0) as link:
        info = link.info()
    assert info.running == 0 and info.ctx_used == 0  # the refused turn left no tokens behind
    _still_serves(board)


def test_chat_prompt_larger_than_the_boards_prompt_buffer_is_refused_before_it_is_sent(board):
    r = _chat(board, "x" * 40000, "-n", "20")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"elk: error: {board.port}: the prompt is 40000 bytes; the board takes at most 32768 bytes of prompt"]
    _still_serves(board)


def test_chat_that_fills_the_context_says_so_and_reset_starts_again(board):
    # Greedy: "The end" draws 200 tokens of "He did not know what to do." (204 in the context); a 279-token
    # prompt that stops mid-sentence is continued until token 512, where the reply is cut; the next prompt
    # finds no room left; /reset starts a new conversation with the usual first reply.
    middle = "Lily liked to play in the park with her red ball. " * 16 + "One day, she saw a big"
    script = f"The end\n{middle}\nThe end\n/stats\n/reset\nOnce upon a time\n/quit\n"
    out = io.StringIO()
    with connect(board.port, 0) as link:
        rc = chat.Console(link, chat.Sampling(max_tokens=200, temperature=0), inp=io.StringIO(script),
                          out=out).run()
        info = link.info()
    text = out.getvalue()
    assert rc == 0
    assert "(context full (512/512 tokens): /reset starts a new conversation)" in text
    assert "does not fit the 0 tokens left in the context (512/512 used): /reset starts a new conversation" \
        in text
    assert "stopped: context_full" in text  # /stats of the refused turn
    after_reset = text.split("(new conversation)", 1)[1]
    assert GREEDY in after_reset and "context full" not in after_reset
    assert info.ctx_used < 512  # the board serves the new conversation


def test_text_console_says_when_the_context_is_full_and_reset_clears_it(board, tmp_path):
    """The board's own console (a terminal on the pty, no host tool): three 500-character lines (~210
    tokens each) cannot fit 512 tokens, whatever the sampled replies are, so the console must say the
    context is full; `reset` starts a new conversation."""
    with connect(board.port, 0) as link:
        assert link.info().running == 0
    time.sleep(1.6)  # the console ignores text for a moment after the last frame
    line = ("the cat sat on the mat. " * 21).encode()
    with serial.Serial(board.port, 115200, timeout=0.2) as term:
        term.reset_input_buffer()
        term.write(b"reset\r")
        read_until(term, b"(new conversation)\r\n> ")
        seen = b""
        for _ in range(3):
            term.write(line + b"\r")
            seen += read_until(term, b"\r\n> ", timeout=20, after=line)
            if b"(context full" in seen:
                break
        assert b"(context full: type reset to start a new conversation)" in seen, seen[-300:]
        term.write(b"reset\r")
        read_until(term, b"(new conversation)\r\n> ")
        term.write(b"info\r")
        assert b"context 0/512" in read_until(term, b"\r\n> ")


