"""The NEON kernel objects use the instructions they are named for (checked in the cross-built objects
with the target's objdump): SDOT in neon_dotprod, SMMLA in neon_i8mm, SMULL/SADALP (VMULL/VPADAL on
armv7) in plain neon, and FCVTAS (round half away) in the AArch64 quantizers."""

import re
import subprocess

from conftest import ROOT, scons


def mnemonics(objdump: str, obj) -> dict:
    text = subprocess.run([objdump, "-d", str(obj)], capture_output=True, text=True, check=True).stdout
    counts = {}
    for m in re.finditer(r"^\s+[0-9a-f]+:\s+(?:[0-9a-f]{2,8}\s)+\s*([a-z][\w.]*)", text, re.M):
        counts[m[1]] = counts.get(m[1], 0) + 1
    return counts


def test_kernels_neon_aarch64_objects_use_their_instructions():
    scons("board=qemu-max")
    obj = ROOT / "build" / "qemu-max" / "obj" / "src" / "kernels"
    dump = "aarch64-linux-gnu-objdump"
    plain, dot, mm = (mnemonics(dump, obj / f"{n}.o") for n in ("neon", "neon_dotprod", "neon_i8mm"))
    assert plain.get("sadalp", 0) > 0 and plain.get("sdot", 0) == 0 and plain.get("smmla", 0) == 0
    assert dot.get("sdot", 0) > 0 and dot.get("smmla", 0) == 0
    assert mm.get("smmla", 0) > 0
    for m in (plain, dot, mm):
        assert m.get("fcvtas", 0) > 0


def test_kernels_neon_armv7_object_uses_vmull_and_vpadal():
    scons("board=qemu-a7")
    m = mnemonics("arm-linux-gnueabihf-objdump", ROOT / "build" / "qemu-a7" / "obj" / "src" / "kernels" / "neon.o")
    assert m.get("vmull.s8", 0) > 0 and m.get("vpadal.s16", 0) > 0
    assert m.get("vcvt.f32.f16", 0) > 0  # f16 weights widened by the hardware


# ARMv8.1+ / optional instructions an ARMv8.0 CPU (Cortex-A53/A72) traps on: dot product, i8mm and
# LSE atomics. Only the kernel file of a table that requires the extension may contain them.
BEYOND_V80 = re.compile(r"^(sdot|udot|usdot|sudot|smmla|ummla|usmmla|cas\w*|ldadd\w*|ldset\w*|ldclr\w*|"
                        r"ldeor\w*|ldsmax\w*|ldsmin\w*|ldumax\w*|ldumin\w*|swp\w*)$")


def test_kernels_aarch64_common_code_has_no_instruction_beyond_armv8_0():
    """Every object of an A76-class board except neon_dotprod.o and neon_i8mm.o runs on ARMv8.0, so the
    run-time fallback to plain NEON (or ref) cannot meet an SDOT or an LSE atomic elsewhere."""
    scons("board=qemu-a76")
    objs = sorted((ROOT / "build" / "qemu-a76" / "obj").rglob("*.o"))
    assert len(objs) > 20
    for obj in objs:
        if obj.name in ("neon_dotprod.o", "neon_i8mm.o"):
            continue
        bad = sorted(m for m in mnemonics("aarch64-linux-gnu-objdump", obj) if BEYOND_V80.match(m))
        assert not bad, f"{obj.relative_to(ROOT)} uses {bad}"
    dot = ROOT / "build" / "qemu-a76" / "obj" / "src" / "kernels" / "neon_dotprod.o"
    assert any(BEYOND_V80.match(m) for m in mnemonics("aarch64-linux-gnu-objdump", dot))  # the pattern bites
