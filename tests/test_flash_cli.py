"""`elk flash` as a user meets it: the board is left at the rate it listens at (so `elk chat` and a
terminal find it after a fast flash, or after Ctrl-C), re-flashing the image the board already runs is a
no-op that keeps the rollback slot, a failure on one board is one line, and on a terminal the progress
bar is redrawn in place."""

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, fixture_path
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect


def _quiet():
    return open(os.devnull, "w")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from elk.convert.pack import pack

    d = tmp_path_factory.mktemp("img")
    out = {}
    for key, kw in (("q8", {"quant": "q8_0"}), ("f32", {}), ("renamed", {"quant": "q8_0", "name": "s-v2"})):
        out[key] = d / f"{key}.elk"
        pack(str(fixture_path("stories260K.bin")), str(out[key]), tokenizer=str(fixture_path("tok512.bin")), **kw)
    return out


def _elk(*args, **kw):
    return subprocess.run([sys.executable, "-m", "elk", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, **kw)


def test_flash_at_a_higher_rate_returns_the_board_to_its_console_rate(host_build, images):
    with Emulator("host", baud=115200, log=_quiet()) as emu:
        res = flashing.flash([emu.port], images["q8"], progress=False)[0]
        assert res.ok, res.error
        assert res.baud == 3000000  # the image went at the board's fastest rate
        with connect(emu.port, 115200) as link:
            assert link.hello_reply["baud"] == 115200  # and the board listens at 115200 again


def test_reflashing_the_running_image_sends_nothing_and_keeps_the_rollback_slot(host_build, images):
    with Emulator("host", baud=0, log=_quiet()) as emu:
        assert flashing.flash([emu.port], images["q8"], progress=False)[0].ok
        assert flashing.flash([emu.port], images["renamed"], progress=False)[0].ok  # slot B, A is the rollback
        again = flashing.flash([emu.port], images["renamed"], progress=False)[0]
        assert again.ok and again.up_to_date and again.slot == "B"
        assert again.data_bytes_sent == again.blocks_copied == 0
        assert "already runs this image" in again.summary()
        with connect(emu.port, 0) as link:
            info = link.info()
    assert info.active == 1 and info.previous == 0
    assert info.slots[0].valid and info.slots[0].name == "stories260K"


def test_flash_cli_one_failing_board_is_one_line(host_build, images):
    with Emulator("host", baud=0, flash_mb=1, log=_quiet()) as small:
        r = _elk("flash", "--port", small.port, images["f32"])
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"elk: error: {small.port}: image too large")


def test_flash_progress_is_redrawn_in_place_on_a_terminal(host_build, images):
    master, slave = os.openpty()
    try:
        with Emulator("host", baud=0, log=_quiet()) as a, Emulator("host", baud=0, log=_quiet()) as b:
            proc = subprocess.Popen([sys.executable, "-m", "elk", "flash", "--port", a.port, "--port", b.port,
                                     images["f32"]], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=slave)
            got = b""
            while proc.poll() is None or select.select([master], [], [], 0.2)[0]:
                if select.select([master], [], [], 0.1)[0]:
                    got += os.read(master, 65536)
            assert proc.returncode == 0
    finally:
        os.close(master)
        os.close(slave)
    text = got.decode()
    assert "\x1b[2F" in text  # two boards: the cursor goes back up two lines to redraw them
    assert f"{a.port}: [########################] 100%" in text and f"{b.port}: [" in text


def test_ctrl_c_during_flash_leaves_the_board_at_its_rate_and_the_next_flash_resumes(host_build, images):
    with Emulator("host", baud=115200, log=_quiet()) as emu:
        proc = subprocess.Popen([sys.executable, "-m", "elk", "flash", "--port", emu.port, "--baud", "460800",
                                 images["f32"]], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        line = ""
        while "KiB/s" not in line or " 0%" in line:  # the data is going out at 460800
            line = proc.stderr.readline()
            assert line, "flash ended before it sent data"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and err.strip().endswith("elk: interrupted") and "Traceback" not in err
        with connect(emu.port, 115200) as link:
            assert link.hello_reply["baud"] == 115200
        t0 = time.monotonic()
        res = flashing.flash([emu.port], images["f32"], connect_baud=115200, progress=False)[0]
        assert res.ok and res.blocks_skipped > 0, res
        assert time.monotonic() - t0 < 60
