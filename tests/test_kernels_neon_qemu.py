"""NEON kernel tables under qemu-user: elk-kernel-test (firmware/tests/kernel_test.c), cross-built per
board, compares every table this CPU supports with ref on seeded random inputs and reports the table
the run-time selection (getauxval) picks. The NEON tables must equal ref exactly on every integer path
and on the quantized dots/gemm (maxdiff 0); float dots within 1e-5 of sum |w x|."""

import os
import re
import subprocess

import pytest

from conftest import ROOT, scons
from elk import boards

EXACT = re.compile(r"^(quantize_q8_0|dot_q8_0|dot_q4_0|gemm_q8_0|gemm_q4_0)")


def run_kernel_test(board: str, qemu_cpu: str, *args: str) -> subprocess.CompletedProcess:
    scons(f"board={board}")
    b = boards.load(board)
    prefix = b.run_prefix()
    prefix[prefix.index("-cpu") + 1] = qemu_cpu
    exe = ROOT / "build" / board / "elk-kernel-test"
    return subprocess.run(prefix + [str(exe), *args], capture_output=True, text=True, timeout=120)


def parse_checks(stdout: str) -> list:
    """[(table, what, maxdiff, ok)] from the driver's `check` lines."""
    rows = []
    for line in stdout.splitlines():
        m = re.match(r"check (\S+)\s+(\S+)\s+n=\d+\s+maxdiff=(\S+)\s+(ok|FAIL)$", line)
        if m:
            rows.append((m[1], m[2], float(m[3]), m[4] == "ok"))
    return rows


CASES = [
    # board, qemu -cpu, table the run-time selection must pick, tables that must be checked
    ("qemu-max", "max", "neon_i8mm", {"neon_i8mm", "neon_dotprod", "neon"}),
    ("qemu-max", "cortex-a76", "neon_dotprod", {"neon_dotprod", "neon"}),
    ("qemu-a76", "cortex-a76", "neon_dotprod", {"neon_dotprod", "neon"}),
    ("qemu-a7", "cortex-a7", "neon", {"neon"}),
    # the safe fallback: AArch64 builds on ARMv8.0 CPUs without dotprod (Cortex-A53/A72) pick plain
    # NEON and must not die with SIGILL in code built for the board's bigger CPU
    ("qemu-a76", "cortex-a53", "neon", {"neon"}),
    ("qemu-max", "cortex-a72", "neon", {"neon"}),
]


@pytest.mark.parametrize("board,cpu,selected,tables", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_kernels_neon_tables_match_ref_and_selection_follows_cpu(board, cpu, selected, tables):
    proc = run_kernel_test(board, cpu, "--seed", "7", "--expect", selected)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert f"selected {selected}\n" in proc.stdout
    checks = parse_checks(proc.stdout)
    assert {t for t, *_ in checks} == tables | {"select"}
    for table, what, maxdiff, ok in checks:
        assert ok, (table, what)
        if EXACT.match(what):
            assert maxdiff == 0.0, f"{table} {what} differs from ref by {maxdiff}"
    # every table ran the full set: quantize, 3 float dots, quantized dots (+int, -128), gemm if present
    for t in tables:
        whats = {w for tt, w, *_ in checks if tt == t}
        assert {"quantize_q8_0", "dot_f32", "dot_f16", "dot_bf16", "dot_q8_0", "dot_q4_0",
                "dot_q8_0_int", "dot_q4_0_int", "dot_q8_0_int_m128"} <= whats, t
        if t != "neon":
            assert {"gemm_q8_0", "gemm_q4_0"} <= whats, t


def test_kernels_i8mm_table_is_skipped_on_a_cpu_without_i8mm():
    proc = run_kernel_test("qemu-max", "cortex-a76")
    assert proc.returncode == 0
    assert re.search(r"^skip\s+neon_i8mm", proc.stdout, re.M)


def test_kernels_selection_check_fails_when_the_cpu_lacks_the_table():
    proc = run_kernel_test("qemu-max", "cortex-a76", "--expect", "neon_i8mm")
    assert proc.returncode == 1
    assert re.search(r"check select\s+neon_i8mm .* FAIL", proc.stdout)


def test_kernels_neon_tables_are_clean_under_asan_and_ubsan():
    """AddressSanitizer + UBSan build of the driver (only its target) on -cpu max: all three AArch64
    tables run every check without an out-of-bounds access or undefined behaviour."""
    scons("board=qemu-max", "mode=asan", "build/qemu-max-asan/elk-kernel-test")
    prefix = boards.load("qemu-max").run_prefix()
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0"}  # LeakSanitizer cannot run under qemu-user (ptrace)
    proc = subprocess.run(prefix + [str(ROOT / "build" / "qemu-max-asan" / "elk-kernel-test")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert "ERROR: AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr
    assert {t for t, *_ in parse_checks(proc.stdout)} == {"neon_i8mm", "neon_dotprod", "neon"}
