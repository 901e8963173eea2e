"""Line rate: the emulated board really paces its UART (the one throttled check), SET_BAUD switches
both ends when the cable carries the new rate, and falls back to the old rate when it does not."""

import os
import struct
import time

import pytest

from elk.emulate import Emulator
from elk.link import CMD, connect


def _quiet():
    return open(os.devnull, "w")


def test_board_paces_its_line_at_the_set_baud(host_build):
    with Emulator("host", baud=115200, log=_quiet()) as emu, connect(emu.port, 115200) as link:
        assert link.hello_reply["baud"] == 115200
        # 6 KiB of FLASH_DATA needs >= 6144 * 10 / 115200 = 0.53 s on a 115200 baud line
        link.request(CMD["FLASH_BEGIN"], struct.pack("<Q", 8192) + bytes(32))
        t = time.monotonic()
        link.request(CMD["FLASH_DATA"], struct.pack("<Q", 0) + os.urandom(6144))
        elapsed = time.monotonic() - t
        assert elapsed >= 0.9 * 6144 * 10 / 115200


def test_set_baud_switches_both_ends(host_build):
    with Emulator("host", baud=115200, log=_quiet()) as emu, connect(emu.port, 115200) as link:
        assert link.set_baud(921600) is True
        assert link.baud == 921600
        assert link.info().baud == 921600


def test_set_baud_falls_back_when_the_cable_fails_at_the_new_rate(host_build):
    with Emulator("host", baud=115200, broken_above=460800, log=_quiet()) as emu, \
            connect(emu.port, 115200) as link:
        assert link.set_baud(921600) is False
        assert link.baud == 115200
        info = link.info()  # the session survives at the old rate
        assert info.baud == 115200 and info.board == "host"


def test_set_baud_refuses_a_rate_above_the_board_maximum(host_build):
    from elk.link import BoardReplyError

    with Emulator("host", baud=115200, max_baud=921600, log=_quiet()) as emu, connect(emu.port, 115200) as link:
        with pytest.raises(BoardReplyError, match="SET_BAUD.*out of range"):
            link.set_baud(3000000)
        assert link.info().baud == 115200


def test_slow_line_carries_several_tokens_per_piece(host_build, tmp_path):
    """While one PIECE is in flight the board keeps generating and sends what piled up as one event, so
    a slow line costs a round trip per event, not per token; the text is the same."""
    from conftest import fixture_path
    from elk import flash as flashing
    from elk.convert.pack import pack

    image = tmp_path / "s260.elk"
    pack(str(fixture_path("stories260K.bin")), str(image), tokenizer=str(fixture_path("tok512.bin")))
    flash = tmp_path / "board.bin"
    with Emulator("host", baud=0, flash=flash, log=_quiet()) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        with connect(emu.port, 0) as link:
            fast = "".join(link.generate("Once upon a time", max_tokens=100, temperature=0, raw=True, reset=True))
    with Emulator("host", baud=19200, flash=flash, log=_quiet()) as emu, connect(emu.port, 19200) as link:
        pieces = list(link.generate("Once upon a time", max_tokens=100, temperature=0, raw=True, reset=True))
        assert link.last_stats.gen_tokens == 100
    assert "".join(pieces) == fast
    assert len(pieces) < 50
