"""An NPU chunk longer than the context would pad every prompt: `elk pack --npu-chunk` clamps it to the
model's context with one warning line, and `elk run --npu` with a --ctx shorter than the image's chunk
says so in one line (the chunk is baked into the image's int8 layers, so a run cannot shrink it)."""

import pytest

from conftest import fixture_path, run_elk


def _pack(out, *extra):
    return run_elk("pack", fixture_path("stories260K.bin"), "--tokenizer", fixture_path("tok512.bin"), "-o", out,
                   "--quant", "q8_0", "--npu", *extra, timeout=300)


@pytest.fixture(scope="module")
def chunk64(tmp_path_factory, host_build):
    out = tmp_path_factory.mktemp("npuctx") / "c64.elk"
    p = _pack(out, "--npu-chunk", "64", "--quiet")
    assert p.returncode == 0, p.stderr
    return out


def test_pack_clamps_an_npu_chunk_longer_than_the_context_with_one_warning(tmp_path, host_build):
    p = _pack(tmp_path / "big.elk", "--npu-chunk", "1024", "--quiet")
    assert p.returncode == 0, p.stderr
    warn = [line for line in p.stderr.splitlines() if "--npu-chunk" in line]
    assert warn == ["elk: warning: --npu-chunk 1024 is longer than the model's context (seq_len 512): "
                    "using 512 (a longer chunk would only pad every prompt)"], p.stderr
    assert "chunk 512 tokens" in p.stdout and "chunk 1024" not in p.stdout
    q = run_elk("npu", "info", tmp_path / "big.elk")
    assert q.returncode == 0 and "chunk 512 tokens" in q.stdout, q.stdout + q.stderr


def test_pack_with_a_chunk_inside_the_context_says_nothing(chunk64):
    q = run_elk("npu", "info", chunk64)
    assert "chunk 64 tokens" in q.stdout


def test_run_with_a_context_shorter_than_the_chunk_says_every_prefill_is_padded(chunk64):
    p = run_elk("run", chunk64, "-p", "Once upon a time", "-n", "4", "--temperature", "0", "--npu", "sim",
                "--ctx", "32")
    assert p.returncode == 0, p.stderr
    notes = [line for line in p.stderr.splitlines() if "padded" in line]
    assert notes == ["npu: the image's NPU chunk is 64 tokens, longer than the context of 32: every prefill "
                     "is padded to 64 tokens (repack with --npu-chunk 32 or less, or run without --ctx)"], p.stderr
    q = run_elk("run", chunk64, "-p", "Once upon a time", "-n", "4", "--temperature", "0", "--npu", "sim",
                "--ctx", "64")
    assert q.returncode == 0 and "padded" not in q.stderr, q.stderr
    assert q.stdout == p.stdout


def test_elk_run_program_says_the_same_about_padding(chunk64, host_build):
    import subprocess

    args = [str(host_build / "elk-run"), str(chunk64), "-p", "Once upon a time", "-n", "4", "--temperature", "0",
            "--npu", "sim"]
    p = subprocess.run(args + ["--ctx", "32"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    notes = [line for line in p.stderr.splitlines() if "padded" in line]
    assert notes == ["elk-run: npu: the image's NPU chunk is 64 tokens, longer than the context of 32: every "
                     "prefill is padded to 64 tokens (repack with --npu-chunk 32 or less, or run without --ctx)"], \
        p.stderr
    q = subprocess.run(args + ["--ctx", "64"], capture_output=True, text=True, timeout=120)
    assert q.returncode == 0 and "padded" not in q.stderr and q.stdout == p.stdout, q.stderr


def test_npu_time_with_a_prompt_as_long_as_the_context_times_the_prefill(chunk64):
    """`elk npu time` prefills without generating, so a prompt of the whole context (512) still fits
    (a generated token would need a position the context does not have)."""
    p = run_elk("npu", "time", chunk64, "--board", "rk3588", "--prompt", "100000", timeout=300)
    assert p.returncode == 0, p.stderr
    assert "prefill 512 tokens" in p.stdout and "(simulated, 280 chunks)" in p.stdout, p.stdout
