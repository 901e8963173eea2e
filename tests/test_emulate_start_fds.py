"""Emulator.start() that fails leaves no file descriptor open: the read end of elk-fw's ready pipe used
to leak when the firmware binary could not be started (one fd per failed start in a long-lived host
process), along with the pty's and the pipe's other ends, which stop() and start() already closed."""

import os

import pytest

from elk.emulate import Emulator, EmulatorError


def _open_fds() -> set:
    return set(os.listdir("/proc/self/fd"))


def test_start_with_a_binary_that_cannot_run_leaves_no_fd_open(tmp_path):
    not_fw = tmp_path / "elk-fw"
    not_fw.write_text("not a program\n")
    not_fw.chmod(0o755)  # executable bit, no ELF header, no #!: exec fails with ENOEXEC at once
    emu = Emulator("host", baud=0, flash=tmp_path / "flash.bin")
    emu.fw = not_fw
    before = _open_fds()
    for _ in range(3):
        with pytest.raises(EmulatorError, match="cannot start .*elk-fw: Exec format error"):
            emu.start()
    assert _open_fds() == before


def test_start_with_a_flag_elk_fw_refuses_leaves_no_fd_open(host_build, tmp_path):
    with open(os.devnull, "w") as log:
        emu = Emulator("host", baud=0, flash=tmp_path / "flash.bin", log=log)
        emu.ram_mb = "lots"  # elk-fw: bad argument, exit 2 before it serves
        before = _open_fds()
        with pytest.raises(EmulatorError, match=r"exited at start \(code 2\): it refused its arguments"):
            emu.start()
        assert _open_fds() == before
        assert not emu.alive()
