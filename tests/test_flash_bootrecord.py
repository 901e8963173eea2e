"""The boot record survives a power cut while it is written: the board keeps two copies with
sequence numbers and a CRC, and boots from the newest intact one. Simulated by tearing the newest copy
in the flash file of a stopped board (real firmware, real flash file)."""

import os
import struct

import pytest

from conftest import fixture_path
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect

BLOCK = 4096  # host board erase block: copy 0 at 0, copy 1 at 4096


def _pack(out, **kw):
    from elk.convert.pack import pack

    pack(str(fixture_path("stories260K.bin")), str(out), tokenizer=str(fixture_path("tok512.bin")), **kw)
    return out


def _records(path):
    """(copy index, seq) of each copy whose magic is right, read straight from the flash file."""
    out = []
    with open(path, "rb") as f:
        for i in range(2):
            f.seek(i * BLOCK)
            rec = f.read(256)
            if rec[:4] == b"ELKB":
                out.append((i, struct.unpack_from("<I", rec, 8)[0]))
    return out


def _tear(path, copy):
    """Half of the record programmed, the rest still erased: what a cut mid-write leaves."""
    with open(path, "r+b") as f:
        f.seek(copy * BLOCK + 128)
        f.write(b"\xff" * 128)


def _info(flash_file):
    with Emulator("host", baud=0, flash=flash_file, log=open(os.devnull, "w")) as emu, \
            connect(emu.port, 0) as link:
        return link.info()


@pytest.fixture
def two_images_flashed(host_build, tmp_path):
    a, b = _pack(tmp_path / "a.elk"), _pack(tmp_path / "b.elk", name="second")
    flash_file = tmp_path / "board.bin"
    with Emulator("host", baud=0, flash=flash_file, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], a, progress=False)[0].ok
        assert flashing.flash([emu.port], b, progress=False)[0].ok  # B committed, A the rollback target
    return flash_file


def test_torn_newest_record_boots_from_the_older_copy(two_images_flashed):
    recs = _records(two_images_flashed)
    assert len(recs) == 2 and recs[0][1] != recs[1][1]
    newest = max(recs, key=lambda r: r[1])[0]
    _tear(two_images_flashed, newest)
    info = _info(two_images_flashed)
    # the older record is the one written at FLASH_END of B: B valid, not yet committed
    assert info.active == 0 and info.running == 0
    assert info.slots[0].name == "stories260K" and info.slots[1].valid and info.slots[1].name == "second"


def test_both_records_torn_leaves_a_blank_board_that_still_answers(two_images_flashed):
    _tear(two_images_flashed, 0)
    _tear(two_images_flashed, 1)
    info = _info(two_images_flashed)
    assert info.active == 255 and info.running == 255 and not info.slots[0].valid


def test_record_writes_alternate_between_copies(host_build, tmp_path):
    flash_file = tmp_path / "board.bin"
    with Emulator("host", baud=0, flash=flash_file, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], _pack(tmp_path / "a.elk"), progress=False)[0].ok
        first = dict(_records(flash_file))
        assert flashing.flash([emu.port], _pack(tmp_path / "b.elk", name="b"), progress=False)[0].ok
        second = dict(_records(flash_file))
    # every store goes to the copy not holding the newest record, with the next sequence number
    assert sorted(first.values())[1] < sorted(second.values())[1]
    assert abs(second[0] - second[1]) == 1
