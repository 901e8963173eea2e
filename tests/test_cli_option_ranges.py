"""Sampler and generation options out of range are one error line and exit 2, never silently taken as
"off" or "all", in both the C program (elk-run) and `elk run`."""

import subprocess

import pytest

from conftest import pack_stories260k, run_elk


@pytest.fixture(scope="module")
def image(tmp_path_factory, host_build):
    return pack_stories260k(tmp_path_factory.mktemp("opts") / "s.elk", quant="q8_0")


# (option, value, rule): the error line holds "OPTION VALUE RULE" (elk-run) or "argument OPTION...: VALUE
# RULE" (argparse in `elk run`)
BAD = [
    ("--top-p", "2", "is outside (0, 1]"),
    ("--top-p", "1.0001", "is outside (0, 1]"),
    ("--top-p", "0", "is outside (0, 1]"),
    ("--top-p", "-0.5", "is outside (0, 1]"),
    ("--top-p", "nan", "is outside (0, 1]"),
    ("--temperature", "-1", "must be finite and >= 0"),
    ("--temperature", "nan", "must be finite and >= 0"),
    ("--temperature", "inf", "must be finite and >= 0"),
    ("--top-k", "-1", "is outside [0, 2147483647]"),
    ("--repeat-penalty", "0", "must be finite and > 0"),
    ("--repeat-penalty", "-2", "must be finite and > 0"),
    ("--seed", "-1", "is outside [0, 18446744073709551615]"),
    ("--seed", "18446744073709551616", "is outside [0, 18446744073709551615]"),
    ("--seed", "1.5", "is not a whole number"),
    ("-n", "0", "is outside [1, 2147483647]"),
    ("-n", "-3", "is outside [1, 2147483647]"),
    ("--threads", "0", "is outside [1, 64]"),
    ("--threads", "-2", "is outside [1, 64]"),
    ("--threads", "65", "is outside [1, 64]"),
    ("--ctx", "0", "is outside [1, "),
]


def _one_line(stderr: str, prefix: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix) and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("opt,value,rule", BAD)
def test_elk_run_program_rejects_out_of_range_option(host_build, image, opt, value, rule):
    p = subprocess.run([str(host_build / "elk-run"), str(image), "-p", "hi", opt, value], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == "", p.stdout
    assert f"{opt} {value} {rule}" in _one_line(p.stderr, "elk-run: error: ")


@pytest.mark.parametrize("opt,value,rule", BAD)
def test_elk_run_command_rejects_out_of_range_option(image, opt, value, rule):
    p = run_elk("run", image, "-p", "hi", f"{opt}={value}")
    assert p.returncode == 2 and p.stdout == "", p.stdout
    line = _one_line(p.stderr, "elk run: error: argument ")
    assert f"{opt}: {value} {rule}" in line or f"{opt}/" in line and f": {value} {rule}" in line, line


@pytest.mark.parametrize("opt", ["--npu-tops", "--npu-dma-gbs"])
def test_elk_run_program_names_the_rule_for_a_non_finite_npu_figure(host_build, image, opt):
    p = subprocess.run([str(host_build / "elk-run"), str(image), "-p", "hi", "--npu", "sim", opt, "nan"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == "", p.stdout
    assert f"{opt} nan must be a finite number" in _one_line(p.stderr, "elk-run: error: ")


def test_in_range_edges_are_accepted_by_both(host_build, image):
    ok = ["--top-p", "1", "--temperature", "0", "--top-k", "0", "--seed", "18446744073709551615", "-n", "1",
          "--threads", "1", "--ctx", "512", "--repeat-penalty", "1e-3"]
    p = subprocess.run([str(host_build / "elk-run"), str(image), "-p", "hi", *ok], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    q = run_elk("run", image, "-p", "hi", *ok)
    assert q.returncode == 0, q.stderr
    assert p.stdout == q.stdout.rstrip("\n")  # greedy: the same token from both


def test_elk_run_program_n_0_is_still_allowed_with_logits(host_build, image, tmp_path):
    out = tmp_path / "rows.f32"
    p = subprocess.run([str(host_build / "elk-run"), str(image), "-p", "hi", "-n", "0", "--logits", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    from elk.runtime import Model

    with Model(image, threads=1) as m:
        n = len(m.tokenize("hi"))
    assert out.stat().st_size == n * 512 * 4  # one row of 512 float32 per prompt id


def test_elk_run_option_parsing_and_context_edges_are_clean_under_asan(image, tmp_path):
    """The ASan/UBSan elk-run over every bad value above, odd spellings (whitespace, signs, hex, huge
    exponents, empty), and the context edges: one line, exit 2 (or 0), no sanitizer report."""
    from conftest import ROOT, scons

    scons("mode=asan")
    exe = ROOT / "build" / "host-asan" / "elk-run"
    odd = ["", " ", "-", "+", "0x10", "1e308", "-1e308", "1e-320", "9" * 400, " 5", "5 ", "+5", "-0", "inf",
           "-inf", "nan(1)", "18446744073709551615", "-18446744073709551616", "2147483648"]
    runs = [[opt, value] for opt, value, _ in BAD]
    runs += [[opt, v] for opt in ("-n", "--top-k", "--top-p", "--seed", "--threads", "--ctx", "--temperature")
             for v in odd]
    runs += [["-p", "Once upon a time there was", "--ctx", c, "-n", "5", "--temperature", "0"] for c in ("6", "7", "9")]
    for args in runs:
        p = subprocess.run([str(exe), str(image), "-p", "hi", *args], capture_output=True, text=True, timeout=60,
                           env={"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "halt_on_error=1"})
        assert not any(w in p.stderr for w in ("AddressSanitizer", "runtime error", "LeakSanitizer")), \
            (args, p.stderr[-2000:])
        assert p.returncode in (0, 2), (args, p.returncode, p.stderr[-500:])
        if p.returncode == 2:
            assert len([x for x in p.stderr.splitlines() if x.startswith("elk-run: error: ")]) == 1, (args, p.stderr)
