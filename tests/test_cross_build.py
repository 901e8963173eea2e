"""Cross builds: `scons board=NAME` / `elk build --board NAME` produce ARM binaries in build/NAME/ with the
board's toolchain (AArch64 for the A76-class boards, hard-float ARMv7 for the Cortex-A7 class)."""

import struct
import subprocess
import sys

from conftest import ROOT, scons

EM_ARM, EM_AARCH64 = 40, 183
EF_ARM_ABI_FLOAT_HARD = 0x400


def elf_header(path):
    """(ELF class 1/2, e_machine, e_flags) read from the file's ELF header."""
    data = path.read_bytes()[:64]
    assert data[:4] == b"\x7fELF", f"{path} is not ELF"
    elf_class = data[4]
    machine = struct.unpack_from("<H", data, 18)[0]
    flags = struct.unpack_from("<I", data, 48 if elf_class == 2 else 36)[0]
    return elf_class, machine, flags


def test_cross_build_aarch64_board_gives_aarch64_binaries():
    scons("board=qemu-a76")
    out = ROOT / "build" / "qemu-a76"
    for name in ("libelk.so", "elk-run", "elk-kernel-test"):
        elf_class, machine, _ = elf_header(out / name)
        assert (elf_class, machine) == (2, EM_AARCH64), name


def test_cross_build_armv7_board_gives_hard_float_arm_binaries():
    scons("board=qemu-a7")
    out = ROOT / "build" / "qemu-a7"
    for name in ("libelk.so", "elk-run", "elk-kernel-test"):
        elf_class, machine, flags = elf_header(out / name)
        assert (elf_class, machine) == (1, EM_ARM), name
        assert flags & EF_ARM_ABI_FLOAT_HARD, f"{name} is not hard-float"


def test_cross_build_elk_build_runs_scons_for_the_board():
    proc = subprocess.run([sys.executable, "-m", "elk", "build", "--board", "qemu-a7"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("build/qemu-a7")
    assert elf_header(ROOT / "build" / "qemu-a7" / "elk-run")[1] == EM_ARM
