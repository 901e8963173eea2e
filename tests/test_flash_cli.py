"""`elk flash` as a user meets it: the board is left at the rate it listens at (so `elk chat` and a
terminal find it after a fast flash, or after Ctrl-C), re-flashing the image the board already runs is a
no-op that keeps the rollback slot, a failure on one board is one line, and on a terminal the progress
bar is redrawn in place."""

import os
import select
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, fixture_path, run_elk
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
        r = run_elk("flash", "--port", small.port, images["f32"])
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
        res = flashing.flash([emu.port], images["f32"], connect_baud=115200, progress=False)[0]
        assert res.ok and res.blocks_skipped > 0, res


def test_flash_cli_refuses_a_damaged_or_cut_image_before_sending_it(host_build, images, tmp_path):
    data = images["q8"].read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    (tmp_path / "flip.elk").write_bytes(bytes(flipped))
    (tmp_path / "cut.elk").write_bytes(data[:len(data) // 2])
    with Emulator("host", baud=0, log=_quiet()) as emu:
        r = run_elk("flash", "--port", emu.port, tmp_path / "flip.elk")
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "flip.elk: damaged image: payload SHA-256" in r.stderr
        r = run_elk("flash", "--port", emu.port, tmp_path / "cut.elk")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cut.elk: truncated image" in r.stderr
        with connect(emu.port, 0) as link:
            assert not link.info().slots[0].image_size  # nothing reached the board


class _MaxDone:
    def __init__(self):
        self.max = self.total = 0

    def update(self, port, done, total, elapsed):
        self.max, self.total = max(self.max, done), total

    def note(self, port, text):
        pass


def test_board_refusing_a_damaged_image_is_reported_as_such(host_build, images, tmp_path):
    """Sent anyway (the library without check): the board's payload check refuses it with its reason;
    the host does not resend the slot (it is right: the image is wrong) nor count past 100 %."""
    import hashlib

    data = bytearray(images["q8"].read_bytes())
    data[len(data) // 2] ^= 1
    with Emulator("host", baud=0, log=_quiet()) as emu:
        t = flashing._Transfer(emu.port, bytes(data), hashlib.sha256(data).digest(), 0, None, _MaxDone())
        with pytest.raises(flashing.BoardReplyError, match="FLASH_END.*ELK_E_HASH.*payload"):
            t.run()
        assert t.progress.max == t.progress.total == len(data)


def test_flash_refuses_a_negative_rate_in_one_line(host_build, images):
    r = run_elk("flash", "--port", "/dev/pts/none", images["q8"], "--baud", "-5")
    assert r.returncode == 2 and r.stderr == (
        "elk: error: --baud must be a line rate in baud (0 = unthrottled emulated line), got -5\n")
