"""The `--npu` options and `elk npu` commands as a user runs them: pack an image with an NPU section,
generate with the sim and LiteRT backends, check and describe the section; bad options give one line."""

import subprocess
import sys

import pytest
from conftest import ROOT, fixture_path


def elk(*args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "elk", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def image(tmp_path_factory, host_build):
    out = tmp_path_factory.mktemp("npu") / "s.elk"
    rc, so, se = elk("pack", fixture_path("stories260K.bin"), "--tokenizer", fixture_path("tok512.bin"),
                     "-o", out, "--quant", "q8_0", "--board", "rk3588", "--quiet")
    assert rc == 0, se
    assert "NPU section v1: 35 layers, chunk 64 tokens" in so  # rk3588.toml: prefill_chunk_tokens = 64
    return out


def test_pack_for_npu_board_then_run_greedy_with_sim_and_litert(image):
    texts = []
    for backend in ("sim", "litert", "off"):
        rc, so, se = elk("run", image, "-p", "Once upon a time", "-n", "12", "--temperature", "0",
                         "--npu", backend, "--npu-board", "rk3588")
        assert rc == 0, se
        texts.append(so)
        if backend != "off":
            assert f"npu {backend}: 35 chunks offloaded" in se
        else:
            assert "npu " not in se.replace("INFO", "")
    assert texts[0].startswith("Once upon a time, there was")
    assert "simulated NPU time" in elk("run", image, "-p", "Once upon a time", "-n", "2", "--npu", "sim",
                                       "--npu-board", "rk3588")[2]


def test_npu_info_and_check_on_packed_image(image):
    rc, so, se = elk("npu", "info", image)
    assert rc == 0 and "blk.4.w3" in so and "outliers" in so
    rc, so, se = elk("npu", "check", image)
    assert rc == 0, so + se
    assert "sim equals numpy: yes" in so and "largest int8 difference" in so


def test_npu_export_writes_one_tflite_per_layer(image, tmp_path):
    rc, so, se = elk("npu", "export", image, "-o", tmp_path / "t")
    assert rc == 0, se
    files = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert len(files) == 35 and "blk.0.wq.tflite" in files
    assert (tmp_path / "t" / "blk.0.wq.tflite").read_bytes()[4:8] == b"TFL3"


def test_bad_npu_options_give_one_line(image, tmp_path):
    rc, so, se = elk("pack", fixture_path("stories260K.bin"), "--tokenizer", fixture_path("tok512.bin"),
                     "-o", tmp_path / "x.elk", "--npu", "--npu-chunk", "0")
    assert rc == 2 and se.strip() == "elk: error: NPU chunk must be 1..4096 tokens, got 0"
    rc, so, se = elk("pack", fixture_path("stories260K.bin"), "--tokenizer", fixture_path("tok512.bin"),
                     "-o", tmp_path / "y.elk", "--quiet")
    assert rc == 0
    rc, so, se = elk("run", tmp_path / "y.elk", "--npu", "sim", "-n", "2")
    assert rc == 2 and "no NPU section" in se and "Traceback" not in se
    rc, so, se = elk("npu", "info", tmp_path / "missing.elk")
    assert rc == 2 and se.startswith("elk: error:") and "Traceback" not in se


def test_litert_backend_with_a_library_that_is_not_litert_gives_one_line(image):
    import os

    libm = subprocess.run(["gcc", "-print-file-name=libm.so.6"], capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, ELK_LITERT_LIB=libm)
    proc = subprocess.run([sys.executable, "-m", "elk", "run", str(image), "--npu", "litert", "-n", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"elk: error: {libm}: missing symbol LiteRtCreateEnvironment (not a LiteRT C API library)"
