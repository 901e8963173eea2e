"""A board that a host switched to a faster rate goes back to its console rate once the line has been
silent for BAUD_IDLE_MS: a host killed or unplugged mid-flash (after SET_BAUD, before switching back)
must not leave the board at a rate the next host and a terminal do not look at. A session that keeps
talking at the fast rate is not disturbed. Found by the multi-fault campaign (a host killed during a
flash on a throttled board: the board stayed at 3 Mbaud for good). With elk-fw --strict-rate (bytes
garbled while the two ends' rates differ, as on a cable) the next command at the console rate connects
even when it starts at once: the idle time is below the connect budget."""

import os
import time

from elk import proto_spec as P
from elk.emulate import Emulator
from elk.link import connect


def test_board_returns_to_its_console_rate_after_the_host_goes_silent(host_build):
    idle = P.BAUD_IDLE_MS / 1000
    with Emulator("host", baud=115200, max_baud=3000000, log=open(os.devnull, "w")) as emu:
        with connect(emu.port, 115200) as link:
            assert link.set_baud(921600) is True
            end = time.monotonic() + idle + 1.0
            while time.monotonic() < end:  # a live session at the fast rate, longer than the idle time
                assert link.info().baud == 921600
                time.sleep(idle / 5)
        # the host leaves without SET_BAUD back (as `elk flash` killed by SIGKILL does)
        time.sleep(idle + 0.6)
        with connect(emu.port, 115200) as link:
            assert link.hello_reply["baud"] == 115200 and link.info().baud == 115200


def test_a_command_right_after_a_killed_fast_session_connects_at_the_console_rate(host_build):
    with Emulator("host", baud=115200, max_baud=3000000, strict_rate=True, log=open(os.devnull, "w")) as emu:
        with connect(emu.port, 115200) as link:
            assert link.set_baud(3000000) is True
            assert link.info().baud == 3000000
        # gone without switching back; the next host starts at once, at the rate the board listens at
        with connect(emu.port, 115200) as link:  # the default connect budget (3 s)
            assert link.info().baud == 115200
