"""The x86 kernel table is chosen at run time from cpuid, not at build time. The host board is built
-march=native, so on this machine the choice can only ever be avx2; here a board file with
cpu = "x86-64" (baseline common code, only the avx2 files get -mavx2 -mfma -mf16c) is built and its
programs run under qemu-x86_64 as CPUs with and without AVX2: without it, ref is selected and
nothing dies of SIGILL; with it (Haswell: no AVX-VNNI, no AVX-512), avx2 is selected and equals ref."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, pack_stories260k

BOARD = "test-x86-64"  # built into build/test-x86-64/, apart from the host build


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    qemu = shutil.which("qemu-x86_64-static")
    if qemu is None:
        pytest.fail("qemu-x86_64-static is missing (Debian qemu-user-static; tools/setup.sh installs it)")
    boards = tmp_path_factory.mktemp("boards")
    host = (ROOT / "boards" / "host.toml").read_text()
    board = re.sub(r'(?m)^cpu = .*$', 'cpu = "x86-64"', re.sub(r'(?m)^name = .*$', f'name = "{BOARD}"', host))
    assert 'cpu = "x86-64"' in board and f'name = "{BOARD}"' in board
    (boards / f"{BOARD}.toml").write_text(board)
    out = ROOT / "build" / BOARD
    cmd = [sys.executable, "-m", "SCons", "-Q", "-j2", f"board={BOARD}", str(out / "elk-kernel-test"),
           str(out / "elk-run")]
    env = {**os.environ, "ELK_BOARDS_DIR": str(boards)}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return qemu, out


def run(portable, cpu, program, *args):
    qemu, out = portable
    return subprocess.run([qemu, "-cpu", cpu, str(out / program), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_a_cpu_without_avx2_selects_ref_and_skips_the_avx2_table(portable):
    proc = run(portable, "Nehalem", "elk-kernel-test", "--expect", "ref")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "features 0x00000000\nselected ref\n" in proc.stdout
    assert re.search(r"^skip\s+avx2\s", proc.stdout, re.M)
    assert not re.search(r"^check avx2", proc.stdout, re.M)


def test_forcing_avx2_on_a_cpu_without_it_is_refused_in_one_line(portable, tmp_path):
    assert run(portable, "Nehalem", "elk-kernel-test", "--expect", "avx2").returncode == 1
    model = pack_stories260k(tmp_path / "s.elk")
    proc = run(portable, "Nehalem", "elk-run", model, "-n", "4", "--kernels", "avx2")
    assert proc.returncode == 2
    expected = "elk-run: error: kernels 'avx2' are not built in or not supported by this CPU"
    assert proc.stderr.strip() == expected


def test_a_cpu_with_avx2_selects_it_and_it_equals_ref(portable):
    proc = run(portable, "Haswell", "elk-kernel-test", "--seed", "7", "--expect", "avx2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "selected avx2\n" in proc.stdout
    checks = re.findall(r"^check avx2\s+(\S+)\s+n=\d+\s+maxdiff=(\S+)\s+(ok|FAIL)$", proc.stdout, re.M)
    assert {"quantize_q8_0", "dot_q8_0", "dot_q4_0", "gemm_q8_0", "gemm_q4_0"} <= {w for w, _, _ in checks}
    assert all(ok == "ok" for _, _, ok in checks)
    for what, maxdiff, _ in checks:
        if re.match(r"(quantize_q8_0|dot_q8_0_int|dot_q4_0_int)", what):
            assert float(maxdiff) == 0.0, what


def test_greedy_text_is_the_same_with_the_table_each_cpu_selects(portable, tmp_path):
    model = pack_stories260k(tmp_path / "s.elk")
    args = (model, "-p", "Once upon a time", "-n", "24", "--temperature", "0", "--threads", "1")
    old, new = run(portable, "Nehalem", "elk-run", *args), run(portable, "Haswell", "elk-run", *args)
    assert old.returncode == 0 and new.returncode == 0, old.stderr + new.stderr
    assert "kernels ref" in old.stderr and "kernels avx2" in new.stderr
    assert old.stdout == new.stdout and len(old.stdout) > len("Once upon a time")
