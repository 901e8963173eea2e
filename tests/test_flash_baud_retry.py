"""elk flash switches the line to the board's fastest rate; a reply lost right after the switch must not
leave the whole flash at the slow rate. The lost reply (board -> host bytes dropped for 0.8 s after the
first HELLO at the new rate) made the host fall back to 115200 for good: a 3 Mbaud flash took 30 s
(hours for a large image). Found with the multi-fault campaign's strict-rate line."""

import os
import random
import time

from conftest import pack_stories260k
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import CMD
from fault_tools import FaultLine


class LoseTheFirstReplyAtTheNewRate(FaultLine):
    """Drops every board -> host byte for `seconds` once the host has sent SET_BAUD and then HELLO."""

    seconds = 0.8

    def _mangle(self, data, direction):
        codes = [c for _, c in self.frames]
        if direction == "to_host" and CMD["SET_BAUD"] in codes and codes[codes.index(CMD["SET_BAUD"]):].count(
                CMD["HELLO"]) >= 1 and not getattr(self, "over", False):
            self.since = getattr(self, "since", None) or time.monotonic()
            if time.monotonic() - self.since < self.seconds:
                self.hits += len(data)
                return b""
            self.over = True
        return data


def test_flash_keeps_the_fast_rate_after_a_reply_lost_at_the_switch(host_build, tmp_path):
    x = pack_stories260k(tmp_path / "x.elk", quant="q4_0", name="x")
    y = pack_stories260k(tmp_path / "y.elk", quant="q8_0", name="y")
    flash = tmp_path / "board.bin"
    with Emulator("host", baud=0, flash=flash, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], x, progress=False)[0].ok
    with Emulator("host", baud=115200, max_baud=3000000, strict_rate=True, flash=flash,
                  log=open(os.devnull, "w")) as emu:
        line = LoseTheFirstReplyAtTheNewRate(emu.port, random.Random(0))
        try:
            res = flashing.flash([line.port], y, progress=False)[0]
        finally:
            line.close()
        assert line.hits > 0  # the reply was lost
        assert res.ok, res.error
        assert res.baud == 3000000, f"the flash ran at {res.baud} baud"
