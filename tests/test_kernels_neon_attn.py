"""NEON attention and SwiGLU (firmware/src/kernels/neon_attn.c) against ref, bit for bit, under qemu:
elk-attn-test (firmware/tests/attn_test.c) cross-built for qemu-max runs once under -cpu max, where all
three AArch64 tables are supported, over head sizes 8/32/48/64, GQA groups 1/2/3/8/20, 1-9/15/17/65/301
positions (the tested table reads cache rows that end at an inaccessible page) and spreads 0.1/3/40, and
SwiGLU over [-90, 90] plus specials. The object is checked for
fused float multiply-adds (one would change the last bit), a q8_0 model's logits stay ref's bits
end to end, and armv7 keeps ref's slots."""

import re
import subprocess

import numpy as np

from conftest import ROOT, fixture_path, scons
from elk import boards
from elk.models import synth

FUSED = re.compile(r"^\s+[0-9a-f]+:\s+(?:[0-9a-f]{8}\s+)?(fmla|fmls|fmadd|fmsub|fnmadd|fnmsub)\s+(.*)$", re.M)


def run(board: str, *args: str) -> subprocess.CompletedProcess:
    scons(f"board={board}", f"build/{board}/elk-attn-test")
    prefix = boards.load(board).run_prefix()  # qemu-max: -cpu max; qemu-a7: -cpu cortex-a7
    return subprocess.run(prefix + [str(ROOT / "build" / board / "elk-attn-test"), *args],
                          capture_output=True, text=True, timeout=120)


def checks(stdout: str) -> dict:
    """{(table, what): (cases, mismatches, ok)} from the driver's `check` lines."""
    rows = {}
    for m in re.finditer(r"^check (\S+)\s+(\S+)\s+cases=(\d+)\s+mismatches=(\d+)\s+(ok|FAIL)$", stdout, re.M):
        rows[(m[1], m[2])] = (int(m[3]), int(m[4]), m[5] == "ok")
    return rows


def test_neon_attention_and_swiglu_equal_ref_bit_for_bit_under_qemu():
    proc = run("qemu-max")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    out = proc.stdout
    # all three tables fill both slots, with one function checked once
    for t in ("neon_i8mm", "neon_dotprod", "neon"):
        assert f"slots {t:<13} attend=own swiglu=own" in out
    for t in ("neon_dotprod", "neon"):
        assert f"same  {t:<13} attend as neon_i8mm" in out and f"same  {t:<13} swiglu as neon_i8mm" in out
    rows = checks(out)
    assert "read the KV cache past position n" not in proc.stderr
    for hd in (8, 32, 48, 64):
        assert rows[("neon_i8mm", f"attend_hd{hd}")] == (210, 0, True)  # 5 groups x 14 lengths (0 included) x 3 spreads
        assert rows[("ref", f"ref_textbook_hd{hd}")][2]  # ref itself is the softmax formula
    for what in ("swiglu_u1", "swiglu_random_u"):
        cases, mismatches, ok = rows[("neon_i8mm", what)]
        assert cases > 400_000 and mismatches == 0 and ok
    # the peaked inputs reached exp underflow (weights of exactly 0) and subnormal weights
    m = re.search(r"softmax weights: (\d+) underflowed to 0, (\d+) subnormal", out)
    assert m and int(m[1]) > 1000 and int(m[2]) > 0
    assert "attn-test: 10 checks, 0 failures" in out


def test_neon_attention_object_never_fuses_a_float_multiply_add():
    """Only the double exp polynomial (.2d, guarded by the midpoint test) may fuse; every float path
    multiplies then adds as ref does (-ffp-contract=off reaches the cross build)."""
    scons("board=qemu-max", "build/qemu-max/elk-attn-test")
    obj = ROOT / "build" / "qemu-max" / "obj" / "src" / "kernels"
    for name in ("neon_attn.o", "ref.o"):
        text = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(obj / name)], capture_output=True,
                              text=True, check=True).stdout
        fused = [(m[1], m[2]) for m in FUSED.finditer(text)]
        single = [f for f in fused if not re.fullmatch(r"(v\d+\.2d|v\d+\.d\[\d\])(, (v\d+\.2d|v\d+\.d\[\d\]))*", f[1].strip())]
        assert not single, f"{name}: fused float ops {single[:4]}"
        if name == "neon_attn.o":
            assert len(fused) >= 10  # the polynomial's fused steps: the pattern sees them
            assert re.search(r"\sfmul\s+v\d+\.4s, v\d+\.4s, v\d+\.s\[\d\]", text)  # scores: multiply by lane


def test_neon_exp_equals_ref_on_slices_of_the_exhaustive_check(tmp_path):
    """tools/bench/exp_exhaustive_neon.c (the check of every float in [-110, 89]; minutes under qemu)
    on 6 of its 4096 slices, ~550,000 consecutive floats each: around 0.5, -1 and -20, up to 89 (results
    up to overflow), across -87 (normal to subnormal results) and across -104 (the clamp that gives
    +0). Every lane the fast path keeps equals (float)exp((double)x); about 1 in 512 goes to the
    library (the midpoint window), far more in the subnormal slices; -104, -inf, 89 and +inf stay fast.
    Built with the library's AArch64 flags, run under qemu -cpu cortex-a76."""
    k = ROOT / "firmware"
    exe = tmp_path / "exp_exhaustive_neon"
    subprocess.run(["aarch64-linux-gnu-gcc", "-O3", "-march=armv8-a", "-mtune=cortex-a76", "-std=c11",
                    "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", f"-I{k}/include", f"-I{k}/src",
                    f"-I{k}/src/kernels", str(ROOT / "tools" / "bench" / "exp_exhaustive_neon.c"),
                    str(k / "src" / "kernels" / "ref.c"), "-lm", "-o", str(exe)], check=True)
    qemu = ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu", "-cpu", "cortex-a76", str(exe)]
    for part in (1932, 2045, 3992, 4058, 4090, 4094):
        proc = subprocess.run(qemu + [str(part), "4096"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        m = re.search(rf"part {part}/4096: (\d+) inputs checked, 0 differ, (\d+) to the library", proc.stdout)
        assert m and int(m[1]) > 500_000, proc.stdout
        slow = int(m[2]) / int(m[1])
        assert 1 / 2000 < slow < (1.0 if part >= 4090 else 1 / 300), (part, slow)
        assert proc.stdout.count("fast, exact") == 4
    for bad in (["4096", "4096"], ["1"], ["x", "2"]):
        proc = subprocess.run(qemu + bad, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "usage" in proc.stderr


def test_neon_attention_object_prefetches_the_cache_rows():
    """At decode the KV rows come from DRAM: the keys are prefetched ahead of the scores and the values
    during them. GCC 12 deleted a __builtin_prefetch loop outright at -O3, so the object is read for
    the PRFMs (4 per 256 bytes of a row) rather than trusting the source."""
    scons("board=qemu-max", "build/qemu-max/elk-attn-test")
    text = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(ROOT / "build" / "qemu-max" / "obj" / "src" /
                                                                  "kernels" / "neon_attn.o")],
                          capture_output=True, text=True, check=True).stdout
    body = text.split("<elk_attend_neon>:")[1].split(">:\n")[0]
    assert len(re.findall(r"\sprfm\s+pldl1keep, \[x\d+(?:, #(?:64|128|192))?\]", body)) >= 8


def test_attn_test_count_takes_a_position_count_and_rejects_a_bad_one():
    """elk-attn-test --count TABLE attend [POSITIONS] (docs/boards.md counts instructions with it):
    a position count in 1..1024 runs, anything else is one line and exit 2 (native build: the
    argument handling is the same C)."""
    scons("build/host/elk-attn-test")
    exe = str(ROOT / "build" / "host" / "elk-attn-test")
    for args in (["ref", "attend", "255"], ["none", "attend", "1"], ["ref", "attend"]):
        proc = subprocess.run([exe, "--count", *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.stderr)
    for bad in ("0", "1025", "12x", ""):
        proc = subprocess.run([exe, "--count", "ref", "attend", bad], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "POSITIONS must be 1..1024" in proc.stderr, (bad, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1


def test_neon_armv7_table_keeps_ref_attention():
    """ARMv7 NEON flushes subnormals and has no float64 vectors: the neon table leaves both slots NULL
    (the runtime then calls ref's) and neon_attn.c compiles to no code there."""
    proc = run("qemu-a7")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "slots neon          attend=ref swiglu=ref" in proc.stdout
    assert "attn-test: 0 checks, 0 failures" in proc.stdout
    syms = subprocess.run(["arm-linux-gnueabihf-nm", str(ROOT / "build" / "qemu-a7" / "obj" / "src" / "kernels" /
                                                      "neon_attn.o")], capture_output=True, text=True, check=True)
    assert "elk_attend_neon" not in syms.stdout and "elk_swiglu_neon" not in syms.stdout


def test_neon_attention_keeps_q8_0_logits_identical_to_ref_end_to_end(tmp_path):
    """A synthetic q8_0 model whose every matmul is Q8_0 (elk.models.synth "tiny": head 16, groups of 2,
    weights std 0.2 so the softmaxes are not flat) through elk-run --logits under qemu -cpu max. Every
    other kernel neon_i8mm uses on it is exact (quantize, integer block sums in ref's float order, i8mm
    gemm), so with its own attend/swiglu the logits of 128 positions are ref's bits. (stories260K
    cannot serve: its F16 ffn_down, 172 wide, sums in FMA lanes.) An FMA in the scores fails this."""
    scons("board=qemu-max", "build/qemu-max/elk-run")
    image = synth.synthesize("tiny", tmp_path / "tiny-q8_0.elk", vocab_path=fixture_path("tok512.bin"),
                             quant="q8_0", seed=5, std=0.2)
    ids = " ".join(["1"] + [str(i) for i in np.random.default_rng(1).integers(3, 512, 127)])  # fills the context
    rows = {}
    for table in ("ref", "neon_i8mm"):
        out = tmp_path / f"{table}.bin"
        cmd = boards.load("qemu-max").run_prefix() + [str(ROOT / "build" / "qemu-max" / "elk-run"), str(image),
                                                      "--ids", "-p", ids, "-n", "0", "--logits", str(out),
                                                      "--kernels", table]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and f"kernels {table}" in proc.stderr, proc.stderr
        rows[table] = np.fromfile(out, dtype=np.float32).reshape(128, -1)
    assert np.isfinite(rows["ref"]).all() and rows["ref"].std() > 0.5
    assert np.array_equal(rows["neon_i8mm"], rows["ref"]), np.abs(rows["neon_i8mm"] - rows["ref"]).max()
