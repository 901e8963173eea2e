"""NPU prefill on cross-built boards under qemu-user: elk-run --npu sim for the rk3588 board (aarch64,
the board with an NPU) and qemu-a7 (32-bit ARM: 64-bit section offsets on a 32-bit size_t) greedily
generates the same token ids as the native build does with the same NPU section."""

import subprocess

import pytest
from conftest import ROOT, fixture_path, scons

from elk import boards

PROMPT_IDS = "1 403 407 261 378"  # BOS "Once upon a time" in tok512


@pytest.fixture(scope="module")
def image(tmp_path_factory, host_build):
    from elk.npu.offload import pack_with_npu

    out = tmp_path_factory.mktemp("npuq") / "s.elk"
    pack_with_npu(fixture_path("stories260K.bin"), out, board="rk3588", tokenizer=fixture_path("tok512.bin"),
                  quant="q8_0")
    return out


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split(), proc.stderr


@pytest.mark.parametrize("board", ["rk3588", "qemu-a7"])
def test_cross_built_elk_run_npu_sim_matches_native(image, board):
    args = [str(image), "-p", PROMPT_IDS, "--ids", "-n", "24", "--temperature", "0", "--npu", "sim",
            "--npu-tops", "1.2", "--npu-dma-gbs", "20"]
    native, err = _run([str(ROOT / "build" / "host" / "elk-run"), *args])
    assert "npu sim: 35 chunks offloaded" in err
    scons(f"board={board}", f"build/{board}/elk-run")
    b = boards.load(board)
    emu = b.emulation
    qemu = "qemu-aarch64-static" if emu["kind"] == "qemu-aarch64" else "qemu-arm-static"
    sysroot = emu.get("sysroot") or ("/usr/aarch64-linux-gnu" if "aarch64" in qemu else "/usr/arm-linux-gnueabihf")
    cross, err = _run([qemu, "-L", sysroot, "-cpu", emu["cpu"], str(ROOT / "build" / board / "elk-run"), *args])
    assert "npu sim: 35 chunks offloaded, 0 prefill linear calls on the CPU (decode runs there)" in err
    assert cross == native and len(native) == 24
