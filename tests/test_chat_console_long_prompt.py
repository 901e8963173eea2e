"""The board's text console on a prompt too long for the context: on a fresh conversation `reset` cannot
help, so it says the prompt is too long (it used to say "context full: type reset to start a new
conversation"); a conversation that has filled up still says "context full" and reset clears it.
stories260K (512-token context): each "中" is 3 byte-fallback tokens, so a console line of at most 512
bytes can reach and pass 512 tokens."""

import os
import time

import pytest
import serial

import elk
from conftest import pack_stories260k
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect

FILLS = "中" * 170           # 510 bytes: BOS + "▁" + 510 byte tokens = 512, no room for a reply
OVER = "中" * 170 + "!!"     # 512 bytes, the console's line limit: more than 512 tokens


@pytest.fixture(scope="module")
def board(host_build, tmp_path_factory):
    image = pack_stories260k(tmp_path_factory.mktemp("console") / "s260.elk")
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        with connect(emu.port, 0) as link:
            assert link.info().running == 0
        emu.image = image
        yield emu


def _read_until(term, marker, timeout=20.0, after=b""):
    buf, end = b"", time.monotonic() + timeout
    while time.monotonic() < end:
        buf += term.read(4096)
        if marker in (buf.split(after, 1)[-1] if after else buf):
            return buf.split(after, 1)[-1] if after else buf
    raise AssertionError(buf[-400:])


def _say(term, line: str) -> str:
    data = line.encode()
    term.write(data + b"\r")
    return _read_until(term, b"\r\n> ", after=data).decode(errors="replace")


def test_text_console_says_a_prompt_too_long_for_the_context_is_too_long(board):
    with elk.load(board.image) as m:
        assert len(m.tokenize(FILLS)) == 512
        over = len(m.tokenize(OVER))
    assert over > 512
    time.sleep(1.6)  # the console ignores text for a moment after the last frame
    with serial.Serial(board.port, 115200, timeout=0.2) as term:
        term.reset_input_buffer()
        term.write(b"reset\r")
        _read_until(term, b"(new conversation)\r\n> ")
        out = _say(term, OVER)
        assert f"(the prompt is {over} tokens, more than the model's context of 512: send a shorter prompt)" \
            in out, out
        assert "context full" not in out and "reset" not in out
        out = _say(term, FILLS)
        assert ("(the prompt is 512 tokens and fills the model's context of 512, leaving no room for a reply: "
                "send a shorter prompt)") in out, out
        term.write(b"info\r")
        assert b"context 0/512" in _read_until(term, b"\r\n> ")  # nothing was taken in
        # a conversation that has filled up: a 302-token turn fits a fresh context, a second one does
        # not fit the rest, and here reset is the answer
        _say(term, "set tokens 1")
        _say(term, "中" * 100)
        out = _say(term, "中" * 100)
        assert "(context full: type reset to start a new conversation)" in out, out
        assert "(new conversation)" in _say(term, "reset")
        assert "context full" not in _say(term, "中" * 100)
