"""The real boards' builds (rpi5, rk3588: Cortex-A76; ax650n: Cortex-A55; rpi4: Cortex-A72, ARMv8.0 with
plain NEON; opi-pc: Cortex-A7 armhf) run
under the emulation their board file declares: the kernel tables match ref, run-time selection picks
the board's best table, and the decoder gives the host's greedy tokens on a q4_0 image."""

import subprocess

import pytest

from conftest import ROOT, pack_stories260k, scons
from elk import boards

REAL = {"rpi5": "neon_dotprod", "rk3588": "neon_dotprod", "ax650n": "neon_dotprod", "rpi4": "neon",
        "opi-pc": "neon"}
PROMPT, N = "1 403 407 261", 10


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return pack_stories260k(tmp_path_factory.mktemp("real-boards") / "s-q4_0.elk", quant="q4_0")


def run(board, *args):
    return subprocess.run(boards.load(board).run_prefix() + [str(a) for a in args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("board", sorted(REAL))
def test_cross_real_board_build_runs_under_its_emulation(board, image):
    scons()
    scons(f"board={board}")
    out = ROOT / "build" / board
    kt = run(board, out / "elk-kernel-test", "--expect", REAL[board])
    assert kt.returncode == 0, kt.stdout[-2000:]
    assert kt.stdout.rstrip().endswith("failures") and ", 0 failures" in kt.stdout
    host = run("host", ROOT / "build" / "host" / "elk-run", image, "-p", PROMPT, "-n", N, "--temperature", "0", "--ids")
    arm = run(board, out / "elk-run", image, "-p", PROMPT, "-n", N, "--temperature", "0", "--ids")
    assert host.returncode == 0 and arm.returncode == 0, arm.stderr
    assert arm.stdout.split() == host.stdout.split() and len(arm.stdout.split()) == N
    assert f"kernels {REAL[board]}" in arm.stderr
