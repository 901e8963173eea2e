"""`elk flash` refuses a file with bytes after the image when its header says no trailer follows (a
concatenated or padded file), in one line before any board is touched, as `elk verify` does. It used
to send them: the board stored and ran 'image + junk' as the image. The board refuses such a file at
FLASH_END too (a host that does not check). Signed images (trailer flag set) are unaffected (test_trust_*)."""

import os

from conftest import pack_stories260k, run_elk
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect


def test_flash_refuses_bytes_after_an_image_without_trailer(host_build, tmp_path):
    image = pack_stories260k(tmp_path / "s.elk", quant="q8_0")
    data = image.read_bytes()
    padded = tmp_path / "padded.elk"
    padded.write_bytes(data + b"\xff" * 4096)
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        with connect(emu.port, 0) as link:
            before = link.info()
        r = run_elk("flash", padded, "--port", emu.port, "--quiet")
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr == (f"elk: error: {padded}: damaged image: 4096 bytes follow the image (it ends at byte "
                            f"{len(data)}) but its header says no trailer follows (`elk verify` says more)\n")
        with connect(emu.port, 0) as link:
            after = link.info()
    assert after.slots == before.slots and after.active == before.active and after.running == before.running


def test_board_refuses_bytes_after_an_image_without_trailer(host_build, tmp_path):
    image = pack_stories260k(tmp_path / "s.elk", quant="q8_0")
    padded = tmp_path / "padded.elk"
    padded.write_bytes(image.read_bytes() + b"\x00" * 100)
    with Emulator("host", baud=0, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        res = flashing.flash([emu.port], padded, progress=False, check=False)[0]  # the host does not look
        assert not res.ok
        assert "FLASH_END" in res.error and "100 bytes follow the image but its header says no trailer" in res.error
        with connect(emu.port, 0) as link:
            info = link.info()
    assert info.active == 0 and info.running == 0 and not info.slots[1].valid
