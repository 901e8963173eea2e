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
    rc, so, se = elk("pack", fixture_path("stories260K.bin"), "--tokenizer", fixture_path("tok512.bin"),
                     "-o", tmp_path / "z.elk", "--npu", "--npu-outliers", "-1")
    assert rc == 2 and se.strip() == "elk: error: NPU outlier channels per layer must be >= 0, got -1"
    rc, so, se = elk("npu", "info", tmp_path / "missing.elk")
    assert rc == 2 and se.startswith("elk: error:") and "Traceback" not in se


def test_litert_library_missing_or_not_litert_falls_back_to_the_cpu_with_one_notice(image, tmp_path):
    import os

    libm = subprocess.run(["gcc", "-print-file-name=libm.so.6"], capture_output=True, text=True).stdout.strip()
    cpu = subprocess.run([sys.executable, "-m", "elk", "run", str(image), "-p", "Once upon a time", "-n", "8",
                          "--temperature", "0", "--npu", "off"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert cpu.returncode == 0, cpu.stderr
    for lib, why in ((libm, f"{libm}: missing symbol LiteRtCreateEnvironment (not a LiteRT C API library)"),
                     (tmp_path / "nowhere" / "libLiteRt.so", "LiteRT C library not found")):
        env = dict(os.environ, ELK_LITERT_LIB=str(lib))
        proc = subprocess.run([sys.executable, "-m", "elk", "run", str(image), "-p", "Once upon a time", "-n", "8",
                               "--temperature", "0", "--npu", "litert"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == cpu.stdout  # the CPU path's answer
        notices = [ln for ln in proc.stderr.splitlines() if ln.startswith("npu:")]
        assert len(notices) == 1 and why in notices[0] and "CPU runs every layer" in notices[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_image_chunk_other_than_the_boards_runs_the_images_chunk_with_one_notice(image):
    # image: packed for rk3588 (64-token chunks); ax650n.toml says 32
    rc, so, se = elk("run", image, "-p", "Once upon a time", "-n", "4", "--temperature", "0", "--npu", "sim",
                     "--npu-board", "ax650n")
    assert rc == 0, se
    assert "npu: image chunk 64 tokens, ax650n NPU chunk 32: runs the image's" in se
    assert "npu sim: 35 chunks offloaded" in se
    rc, so, se = elk("run", image, "-p", "Once upon a time", "-n", "4", "--npu", "sim", "--npu-board", "rk3588")
    assert rc == 0 and "npu: image chunk" not in se


def test_elk_run_program_with_an_unloadable_litert_runs_on_the_cpu_with_one_notice(image, tmp_path):
    prog = ROOT / "build" / "host" / "elk-run"
    args = [str(prog), str(image), "-p", "Once upon a time", "-n", "8", "--temperature", "0"]
    cpu = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert cpu.returncode == 0, cpu.stderr
    bad = tmp_path / "libLiteRt.so"
    bad.write_bytes(b"not an ELF file")
    proc = subprocess.run(args + ["--npu", "litert", "--litert-lib", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == cpu.stdout
    notices = [ln for ln in proc.stderr.splitlines() if ln.startswith("npu")]
    assert len(notices) == 1 and notices[0].startswith(f"npu: litert unavailable (cannot load {bad}")
    assert notices[0].endswith("; CPU runs every layer")


def test_elk_run_sim_says_which_cost_model_the_simulated_time_uses(image):
    import re

    times = {}
    for board in ("rk3588", None):
        rc, so, se = elk("run", image, "-p", "Once upon a time", "-n", "2", "--npu", "sim",
                         *(("--npu-board", board) if board else ()))
        assert rc == 0, se
        m = re.search(r"simulated NPU time ([0-9.]+) ms \(([^)]*)\), measured prefill [0-9.]+ ms on this CPU", se)
        assert m, se
        times[board] = (float(m.group(1)), m.group(2))
    # rk3588.toml: int8 6 TOPS x efficiency 0.2, dma_gbs 20
    assert times["rk3588"][1] == "rk3588: 1.2 TOPS int8 reached, DMA 20 GB/s"
    assert times[None][1].startswith("no NPU board named: default 1 TOPS, DMA 4 GB/s")
    assert times[None][0] > times["rk3588"][0]


def test_npu_board_default_on_an_image_without_section_runs_on_the_cpu_with_one_notice(tmp_path):
    plain = tmp_path / "plain.elk"
    rc, so, se = elk("pack", fixture_path("stories260K.bin"), "--tokenizer", fixture_path("tok512.bin"), "-o", plain,
                     "--quiet")
    assert rc == 0, se
    args = ("run", plain, "-p", "Once upon a time", "-n", "6", "--temperature", "0")
    cpu = elk(*args)
    rc, so, se = elk(*args, "--npu-board", "rk3588")  # no --npu: the board's NPU is the default
    assert rc == 0, se
    assert so == cpu[1]
    assert [ln for ln in se.splitlines() if ln.startswith("npu")] == [
        f"npu: {plain} has no NPU section (pack it with --npu or --board rk3588); prefill on the CPU"]
    rc, so, se = elk(*args, "--npu-board", "rk3588", "--npu", "sim")  # asked for explicitly: an error
    assert rc == 2 and "no NPU section" in se


def test_litert_asked_for_an_npu_that_is_not_here_says_it_ran_on_litert_cpu(image):
    # no NPU or dispatch library on this machine: LiteRT compiles the layers for its CPU, and says so
    # through LiteRtCompiledModelIsNonCpuFullyAccelerated; elk reports it in one line
    for accel, notice in (("npu", "npu: litert placed 35 of 35 layers on its own CPU: the requested NPU "
                                  "accelerator is not available here"), ("cpu", None)):
        rc, so, se = elk("run", image, "-p", "Once upon a time", "-n", "4", "--temperature", "0", "--npu", "litert",
                         "--npu-accel", accel)
        assert rc == 0, se
        assert "npu litert: 35 chunks offloaded" in se
        assert [ln for ln in se.splitlines() if ln.startswith("npu:")] == ([notice] if notice else []), se
