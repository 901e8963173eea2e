"""The same firmware cross-built for an AArch64 Cortex-A76 board (`scons board=qemu-a76`) and a 32-bit
Cortex-A7 board (`scons board=qemu-a7`) runs under qemu-user behind a pty: it takes a flash of
stories260K over the serial link (erase blocks of the board file, not the host's 4 KiB) and answers with
the known greedy text using its NEON kernels."""

import os

import pytest

from conftest import fixture_path, scons
from elk import boards
from elk import flash as flashing
from elk.emulate import Emulator
from elk.link import connect

GREEDY = ", there was a little girl named Lily. She loved to play outside in the park."


def _cross_build(name):
    board = boards.load(name)
    try:
        board.run_prefix()
    except boards.BoardError as e:
        pytest.fail(str(e))
    scons(f"board={name}", f"build/{name}/elk-fw")
    return board


@pytest.mark.parametrize("name,qemu", [("qemu-a76", "qemu-aarch64-static"), ("qemu-a7", "qemu-arm-static")])
def test_qemu_board_flashes_and_chats(name, qemu, tmp_path):
    from elk.convert.pack import pack

    board = _cross_build(name)
    image = tmp_path / "s260.elk"
    pack(str(fixture_path("stories260K.bin")), str(image), tokenizer=str(fixture_path("tok512.bin")))
    with Emulator(name, baud=0, flash=tmp_path / "flash.bin", log=open(os.devnull, "w")) as emu:
        assert emu.command()[0] == qemu and board.emulation["cpu"] in emu.command()
        res = flashing.flash([emu.port], image, progress=False)[0]
        assert res.ok, res.error
        assert res.block_size == board.erase_block_kb * 1024
        with connect(emu.port, 0) as link:
            info = link.info()
            text = "".join(link.generate("Once upon a time", max_tokens=40, temperature=0, raw=True, reset=True))
        assert info.board == name and info.kernels.startswith("neon")
        assert info.slots[0].valid and info.running == 0
        assert text.startswith(GREEDY)
