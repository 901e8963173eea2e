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


def _damage(flash_file, slot_base, offset):
    with open(flash_file, "r+b") as f:
        f.seek(slot_base + offset)
        b = f.read(1)
        f.seek(slot_base + offset)
        f.write(bytes([b[0] ^ 0x10]))


def test_damaged_active_slot_boots_the_previous_image_and_the_next_flash_replaces_it(host_build, tmp_path):
    """A bit flips in the committed slot after the flash (flash wear): at power-on the board checks the
    slot against its recorded SHA-256, drops it and runs the previous image; INFO says why, and the next
    flash writes over the damaged slot while the good image keeps running."""
    a, b = _pack(tmp_path / "a.elk"), _pack(tmp_path / "b.elk", name="second")
    flash_file = tmp_path / "board.bin"
    with Emulator("host", baud=0, flash=flash_file, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], a, progress=False)[0].ok
        assert flashing.flash([emu.port], b, progress=False)[0].ok  # B active, A the rollback target
        with connect(emu.port, 0) as link:
            slot_size = link.info().slot_size
    _damage(flash_file, 2 * BLOCK + slot_size, b.stat().st_size // 2)  # inside slot B's image
    info = _info(flash_file)
    assert info.running == 0 and info.active == 0 and not info.slots[1].valid
    assert info.boot_error == "slot B damaged: SHA-256 mismatch; running slot A"
    with Emulator("host", baud=0, flash=flash_file, log=open(os.devnull, "w")) as emu:
        res = flashing.flash([emu.port], b, progress=False)[0]
        assert res.ok and res.slot == "B", res
        with connect(emu.port, 0) as link:
            info = link.info()
            text = "".join(link.generate("Once upon a time", max_tokens=8, temperature=0, raw=True, reset=True))
    assert info.active == 1 and info.previous == 0 and info.boot_error == ""
    assert text.startswith(", there was a little girl")


def test_damaged_only_image_leaves_a_board_that_answers_and_says_why(host_build, tmp_path):
    a = _pack(tmp_path / "a.elk")
    flash_file = tmp_path / "board.bin"
    with Emulator("host", baud=0, flash=flash_file, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], a, progress=False)[0].ok
    _damage(flash_file, 2 * BLOCK, 300)  # slot A's header
    info = _info(flash_file)
    assert info.running == 255 and info.active == 255 and not info.slots[0].valid
    assert info.boot_error == "slot A damaged: SHA-256 mismatch"


def _record(active, size, sha, name=b"big"):
    """A boot record (docs/protocol.md) naming slot `active` valid with `size` bytes and `sha`."""
    import zlib

    rec = bytearray(256)
    struct.pack_into("<IHHIBB", rec, 0, 0x424B4C45, 1, 256, 1, active, 0xFF)
    struct.pack_into("<IIQ32s64s", rec, 16 + active * 112, 1, 0, size, sha, name)
    struct.pack_into("<I", rec, 252, zlib.crc32(bytes(rec[:252])))
    return bytes(rec)


def test_board_answers_while_it_checks_a_large_image_at_power_on(host_build, tmp_path):
    """Hashing a large slot takes seconds (minutes under qemu for a 1 GB model): meanwhile HELLO and
    INFO answer with capability CHECKING and progress, other commands are refused with the reason, and
    connect() waits until the check is done."""
    import hashlib

    from elk import proto_spec as P
    from elk.link import BoardReplyError, Link

    size = 160 << 20  # zeros in a fresh (sparse) flash file: about a second of hashing
    h, zeros = hashlib.sha256(), bytes(1 << 20)
    for _ in range(size >> 20):
        h.update(zeros)
    flash_file = tmp_path / "board.bin"
    with open(flash_file, "wb") as f:
        f.truncate(1 << 30)
        f.write(_record(0, size, h.digest()))
    checking = P.CAPABILITIES["CHECKING"]
    with Emulator("host", baud=0, flash=flash_file, flash_mb=1024, log=open(os.devnull, "w")) as emu:
        link = Link(emu.port, 0)
        try:
            assert link.hello()["capabilities"] & checking
            info = link.info()
            assert info.boot_error.startswith("checking slot A") and info.running == 255
            with pytest.raises(BoardReplyError, match="GENERATE.*ELK_E_STATE.*checking its image"):
                list(link.generate("hi", max_tokens=2))
            link.wait_checked()
            info = link.info()
        finally:
            link.close()
    assert not info.capabilities & checking
    # the bytes match their SHA-256 (the slot is intact) but zeros are no image: it does not start
    assert info.running == 255 and info.boot_error.startswith("slot A: ") and info.slots[0].valid
    with Emulator("host", baud=0, flash=flash_file, flash_mb=1024, log=open(os.devnull, "w")) as emu:
        with connect(emu.port, 0) as link:  # connect waits for the check by itself
            assert not link.info().capabilities & checking
