"""`elk bench`: the report has every field with sane values (no timing thresholds: speed is
measured with `elk bench`, never asserted), bad input gives one line and exit 2."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, fixture_path
from elk import bench, image
from elk.models import synth


@pytest.fixture(scope="module")
def stories(host_build, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "stories260K.elk"
    subprocess.run([sys.executable, "-m", "elk", "pack", str(fixture_path("stories260K.bin")), "--tokenizer",
                    str(fixture_path("tok512.bin")), "-o", str(out)], check=True, capture_output=True, cwd=ROOT)
    return out


def elk_cli(*args):
    return subprocess.run([sys.executable, "-m", "elk", *args], capture_output=True, text=True, cwd=ROOT)


def test_bench_json_has_every_field_with_sane_values(stories):
    p = elk_cli("bench", str(stories), "--threads", "2", "--prompt", "16", "--gen", "8", "--reps", "2", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    for key in ("decode_tok_s", "prefill_tok_s", "ttft_ms", "decode_gb_s", "bandwidth_pct", "peak_rss_mb", "open_ms"):
        assert isinstance(r[key], float) and r[key] > 0, key
    assert r["kernels"] == "avx2" and r["threads"] == 2 and r["n_prompt"] == 16 and r["n_gen"] == 8
    assert len(r["decode_runs"]) == 2 and len(r["prefill_runs"]) == 2
    assert r["huge_pages_pct"] is None or 0 <= r["huge_pages_pct"] <= 100
    # decode GB/s is exactly bytes/token x tokens/s; the figure the percentage is taken from is the probe's
    assert r["decode_gb_s"] == pytest.approx(r["weight_bytes_per_token"] * r["decode_tok_s"] / 1e9)
    assert r["bandwidth_pct"] == pytest.approx(100 * r["decode_gb_s"] / r["machine_gb_s"])
    assert 0.5 < r["machine_gb_s"] < 1000 and r["probe_gb_s"] <= r["machine_gb_s"]
    # a same-thread probe before the first repetition and after each; each repetition is rated
    # against the mean of the two around it, and the median of those ratings is reported
    assert len(r["probe_runs"]) == 3 and max(r["probe_runs"]) <= r["machine_gb_s"] + 0.005  # runs: 2 decimals
    p_ = r["probe_runs"]
    rated = sorted(100 * r["weight_bytes_per_token"] * d / 1e9 / ((p_[i] + p_[i + 1]) / 2)
                   for i, d in enumerate(r["decode_runs"]))
    assert r["bandwidth_pct_same_threads"] == pytest.approx((rated[0] + rated[1]) / 2, rel=0.02)
    # the time to first token cannot be shorter than the prefill of the prompt
    assert r["ttft_ms"] >= 1000 * 16 / r["prefill_tok_s"] * 0.999
    # RSS: Python's baseline plus a 1 MB model and its arena, not hundreds of MB
    assert r["baseline_rss_mb"] <= r["peak_rss_mb"] < r["baseline_rss_mb"] + 64


def test_bench_counts_the_whole_embedding_only_when_it_is_also_the_output(stories, tmp_path):
    tied = image.read_image(stories)  # stories260K shares token_embd as the output matrix
    assert "output.weight" not in tied.tensors
    assert bench.weight_bytes_per_token(stories) == sum(t.size for t in tied.tensors.values())
    untied_path = synth.synthesize("tiny", tmp_path / "tiny.elk", vocab_path=fixture_path("tok512.bin"), quant="q8_0")
    untied = image.read_image(untied_path)
    embd = untied.tensor("TOK_EMBD")
    others = sum(t.size for t in untied.tensors.values() if t.name != embd.name)
    assert bench.weight_bytes_per_token(untied_path) == others + embd.size // embd.rows


def test_bench_json_without_probe_has_nulls_not_nan(stories):
    p = elk_cli("bench", str(stories), "-t", "1", "-p", "4", "-n", "2", "-r", "1", "--no-probe", "--json")
    assert p.returncode == 0, p.stderr
    assert "NaN" not in p.stdout
    r = json.loads(p.stdout)
    assert r["machine_gb_s"] is None and r["bandwidth_pct"] is None and r["decode_tok_s"] > 0


def test_bench_text_report_names_the_figures(stories):
    p = elk_cli("bench", str(stories), "-t", "1", "-p", "8", "-n", "4", "-r", "1", "--no-probe")
    assert p.returncode == 0, p.stderr
    for word in ("prefill", "decode", "first token", "peak RSS", "open", "1 thread"):
        assert word in p.stdout
    # a 1 MB model is never on 2 MiB pages, and it does not matter: no huge-page note
    assert "note" not in p.stdout and "2 MiB" not in p.stdout


def test_bandwidth_probe_reads_faster_than_a_megabyte_per_second(host_build):
    gbs = bench.probe_bandwidth(1, nbytes=64 << 20, reps=2)
    assert 0.001 < gbs < 1000


@pytest.mark.parametrize("args, message", [
    (["bench", "/nonexistent.elk"], "no such file"),
    (["bench", "/tmp"], "/tmp: a directory, not an image file"),
    (["bench", "STORIES", "--gen", "0"], "must be at least 1"),
    (["bench", "STORIES", "--prompt", "500", "--gen", "100", "--no-probe"], "exceeds the context"),
])
def test_bench_rejects_bad_input_with_one_line(stories, args, message):
    p = elk_cli(*[str(stories) if a == "STORIES" else a for a in args])
    assert p.returncode == 2
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_the_elk_command_keeps_numpy_from_starting_blas_threads():
    # libelk has its own pool; OpenBLAS's workers (one per core, spinning after numpy loads) showed
    # up in `elk bench` profiles competing for the same two cores. The CLI caps them before numpy loads.
    code = ("import os, elk.cli, numpy; "
            "print(len(os.listdir('/proc/self/task')), os.environ['OPENBLAS_NUM_THREADS'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENBLAS", "OMP_"))}
    env["PYTHONPATH"] = str(ROOT / "host")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]


def test_huge_pages_pct_reads_this_process_mapping_of_the_file(tmp_path):
    """bench.huge_pages_pct finds the file's mapping in /proc/self/smaps (a percentage while it is
    mapped and touched, NaN once it is not): the figure `elk bench --json` reports as huge_pages_pct."""
    import math
    import mmap

    if not os.path.exists("/proc/self/smaps"):
        pytest.skip("needs Linux /proc/self/smaps")
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(4 << 20))
    assert math.isnan(bench.huge_pages_pct(f))
    with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert sum(m[i] for i in range(0, len(m), 4096)) >= 0  # touch every page: Rss > 0
        pct = bench.huge_pages_pct(f)
        assert 0.0 <= pct <= 100.0
    assert math.isnan(bench.huge_pages_pct(f))


def _result(huge_pct, bytes_per_token, path="/data/my model.elk"):
    nan = float("nan")
    return bench.BenchResult(
        model=path, kernels="avx2", threads=1, n_prompt=64, n_gen=32, reps=3, prefill_tok_s=100.0,
        decode_tok_s=50.0, ttft_ms=600.0, open_ms=5.0, weight_bytes_per_token=bytes_per_token, decode_gb_s=30.0,
        machine_gb_s=40.0, probe_gb_s=nan, bandwidth_pct=75.0, bandwidth_pct_same_threads=nan, prefill_cpu_ms=10.0,
        decode_cpu_ms=20.0, peak_rss_mb=600.0, baseline_rss_mb=35.0, load_avg=0.1, prefill_runs=[], decode_runs=[],
        probe_runs=[], huge_pages_pct=huge_pct)


def test_bench_notes_an_image_partly_in_small_pages_with_a_command_that_fixes_it():
    """A large image under 90% on 2 MiB pages (a copy, or memory pressure that split its page cache) gets a
    note naming the share and a shell command, quoted for the path, that reads it back in 2 MiB pages;
    one at 90% or more, a small model, or no smaps (NaN) get none."""
    note = [line for line in _result(76.0, 582 << 20).lines() if line.startswith("note")]
    assert len(note) == 1 and "only 76%" in note[0]
    assert "dd if='/data/my model.elk' iflag=nocache count=0; cat '/data/my model.elk' >/dev/null" in note[0]
    for quiet in (_result(95.0, 582 << 20), _result(10.0, 1 << 20), _result(float("nan"), 582 << 20)):
        assert not [line for line in quiet.lines() if line.startswith("note")]
