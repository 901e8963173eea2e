"""Float32 logits are the same bits on the host (x86-64, glibc, GCC -march=native) and on an ARM
board (Cortex-A76 cross build under qemu-aarch64), and equal to elk.reference, with the reference
kernels: model.c rounds exp/cos/sin from double and keeps every product unfused. Full logit rows
are compared (elk-run --logits), not only greedy tokens. Before that fix the two builds differed by
up to 1.7e-5 (host ref vs ARM ref, stories260K f32, 82-token prompt)."""

import subprocess

import numpy as np
import pytest

from conftest import ROOT, fixture_path, scons
from elk import boards
from elk.convert.pack import pack
from elk.reference import Reference
from elk.runtime import Model

TEXT = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
        "One day, she saw a big, red ball. She wanted to play with it, but it was too high.")
BOARD = "qemu-a76"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, host_build):
    scons(f"board={BOARD}")
    d = tmp_path_factory.mktemp("cross-logits")
    image = d / "stories260K-f32.elk"
    pack(str(fixture_path("stories260K.bin")), str(image), quant="f32", tokenizer=str(fixture_path("tok512.bin")))
    with Model(image, threads=1) as m:
        ids = m.tokenize(TEXT)
    return d, image, ids, Reference(image).logits(ids)


def elk_run_logits(board, image, ids, out, kernels=None):
    """Logit rows written by build/<board>/elk-run --logits (under qemu for an ARM board)."""
    cmd = boards.load(board).run_prefix() + [str(ROOT / "build" / board / "elk-run"), str(image), "--ids",
                                            "-p", " ".join(map(str, ids)), "-n", "0", "--logits", str(out)]
    proc = subprocess.run(cmd + (["--kernels", kernels] if kernels else []), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return np.fromfile(out, dtype=np.float32).reshape(len(ids), -1), proc.stderr


def test_runtime_f32_logits_bit_identical_on_host_arm_and_reference(setup):
    d, image, ids, want = setup
    host, _ = elk_run_logits("host", image, ids, d / "host.bin", "ref")
    arm, log = elk_run_logits(BOARD, image, ids, d / "arm.bin", "ref")
    assert "kernels ref" in log
    assert host.shape == (len(ids), 512)
    assert np.array_equal(host, arm), f"max |host - arm| = {np.abs(host - arm).max():.3e}"
    assert np.array_equal(arm, want), f"max |arm - reference| = {np.abs(arm - want).max():.3e}"


def test_runtime_f32_logits_close_on_arm_simd_kernels(setup):
    # neon_dotprod sums f32 dot products 4 lanes at a time: another float order than ref.c.
    # Measured 1.9e-5 = 8.6e-7 x max|logit|.
    d, image, ids, want = setup
    arm, log = elk_run_logits(BOARD, image, ids, d / "arm-best.bin")
    assert "kernels neon_dotprod" in log, log
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(arm, want, rtol=2e-6, atol=2e-6 * scale)
    assert arm.argmax(1).tolist() == want.argmax(1).tolist()


def test_elk_run_logits_rejects_an_unwritable_file(setup, tmp_path):
    d, image, ids, _ = setup
    proc = subprocess.run([str(ROOT / "build" / "host" / "elk-run"), str(image), "-n", "0", "--logits",
                           str(tmp_path / "missing" / "x.bin")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"elk-run: error: --logits {tmp_path / 'missing' / 'x.bin'}: "
                                                "No such file or directory"]


def test_llama3_rope_scaled_logits_bit_identical_on_host_arm_and_reference(setup, tmp_path):
    # The image's RoPE divisors (Llama 3 scaling, from llama.cpp's GGUF) go through the same float32
    # steps on both builds and in the reference: ref-kernel logits equal bit for bit. (`setup` has
    # built the ARM board.)
    image = tmp_path / "l3.elk"
    pack(str(ROOT / "tests" / "golden" / "gguf" / "llama3_rope.q8_0.gguf"), str(image), quant="f32")
    ids = [1, 17, 301, 5, 99, 42, 250, 8, 3, 77, 120, 64, 200, 11, 2, 300]
    want = Reference(image).logits(ids)
    host, _ = elk_run_logits("host", image, ids, tmp_path / "host.bin", "ref")
    arm, _ = elk_run_logits(BOARD, image, ids, tmp_path / "arm.bin", "ref")
    assert np.array_equal(host, arm) and np.array_equal(arm, want)
