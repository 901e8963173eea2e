"""A GENERATE whose reply is lost on the line: the board streams the turn at once, the host resends
GENERATE and the board answers it from its reply cache after the turn's pieces and STATS. The host keeps
those events (they are this turn's); it used to drop every event that came before the reply and then
wait 120 s for a turn that had already ended. Found by tests/test_fault_campaign.py (noise run 4 of seed
20261121: duplicated bytes). Also: a turn the caller abandoned is ended before the next one starts."""

import os
import select
import threading
import time
import tty

import pytest

from conftest import pack_stories260k, run_elk
from elk import flash as flashing
from elk.emulate import Emulator
from elk.frame import cobs_decode
from elk.link import CMD, KIND, connect

PROMPT = "Once upon a time"


class LoseFirstReply:
    """pty proxy: damages the first RESP to `code` on its way to the host (one flipped byte: the host
    sees a bad frame); everything else passes unchanged."""

    def __init__(self, board_port, code):
        self.code, self.damaged = code, 0
        self.board = os.open(board_port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.board)
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        os.close(slave)
        self.pending = b""  # board -> host bytes after the last delimiter
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _to_host(self, data):
        buf = self.pending + data
        cut = buf.rfind(b"\x00") + 1
        self.pending = buf[cut:]
        parts = buf[:cut].split(b"\x00")
        for i, enc in enumerate(parts):
            if not enc or self.damaged:
                continue
            try:
                raw = cobs_decode(enc)
            except Exception:  # noqa: BLE001 (not a frame: console text)
                continue
            if len(raw) >= 8 and raw[0] == KIND["RESP"] and raw[1] == self.code:
                parts[i] = enc[:-1] + bytes([enc[-1] ^ 0x01 or 0x02])
                self.damaged += 1
        return b"\x00".join(parts)

    def _run(self):
        while not self.stop:
            ready, _, _ = select.select([self.board, self.master], [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    time.sleep(0.01)
                    continue
                out = data if fd == self.master else self._to_host(data)
                os.write(self.board if fd == self.master else self.master, out)

    def close(self):
        self.stop = True
        self.thread.join()
        os.close(self.board)
        os.close(self.master)


@pytest.fixture(scope="module")
def board(host_build, tmp_path_factory):
    image = pack_stories260k(tmp_path_factory.mktemp("img") / "s.elk")
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        r = run_elk("chat", "--port", emu.port, "-p", PROMPT, "--raw", "-n", "40")
        assert r.returncode == 0 and len(r.stdout) > 40, r.stderr
        emu.text = r.stdout
        yield emu


def test_chat_whose_generate_reply_is_lost_prints_the_whole_reply(board):
    line = LoseFirstReply(board.port, CMD["GENERATE"])
    try:
        t0 = time.monotonic()
        r = run_elk("chat", "--port", line.port, "-p", PROMPT, "--raw", "-n", "40", "--reply-timeout", "20",
                    timeout=60)
        took = time.monotonic() - t0
    finally:
        line.close()
    assert line.damaged == 1  # the reply really was lost once
    assert r.returncode == 0, r.stderr
    assert r.stdout == board.text
    assert took < 20, took  # not the reply timeout: the turn had arrived


def test_a_turn_left_unfinished_is_ended_before_the_next_one(board):
    with connect(board.port, 0) as link:
        first = link.generate(PROMPT, max_tokens=400, temperature=0, raw=True, reset=True)
        next(first)
        first.close()  # the caller walks away mid-reply; the board is still generating
        text = "".join(link.generate(PROMPT, max_tokens=40, temperature=0, raw=True, reset=True))
        assert link.last_stats.gen_tokens == 40
    assert text + "\n" == board.text
