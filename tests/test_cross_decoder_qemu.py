"""The whole decoder cross-built for each emulated ARM board and run under qemu (elk-run) gives the same
greedy tokens as the host build, for f32, q8_0 and q4_0 images of stories260K. The prompt is several
ids, so prefill goes through the batched gemm path (i8mm tiles on qemu-max) and decode through dot."""

import re
import subprocess

import pytest

from conftest import ROOT, pack_stories260k, scons
from elk import boards

QUANTS = ("f32", "q8_0", "q4_0")
# BOS then five ids: a multi-token prefill
PROMPT = "1 403 407 261 378 432"
N_TOKENS = 12
ARM_BOARDS = {"qemu-a76": "neon_dotprod", "qemu-max": "neon_i8mm", "qemu-a7": "neon"}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    out = tmp_path_factory.mktemp("cross-images")
    return {q: pack_stories260k(out / f"stories260K-{q}.elk", quant=q) for q in QUANTS}


def generate(board: str, image) -> tuple[list, str]:
    """Greedy ids from build/<board>/elk-run (under the board's emulator) and its stderr."""
    prefix = boards.load(board).run_prefix()
    exe = ROOT / "build" / board / "elk-run"
    proc = subprocess.run(prefix + [str(exe), str(image), "-p", PROMPT, "-n", str(N_TOKENS),
                                    "--temperature", "0", "--ids"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{board}: {proc.stderr}"
    return [int(t) for t in proc.stdout.split()], proc.stderr


@pytest.fixture(scope="module")
def host_tokens(images):
    scons()
    return {q: generate("host", images[q])[0] for q in QUANTS}


@pytest.mark.parametrize("board", sorted(ARM_BOARDS))
def test_cross_decoder_arm_board_matches_host_greedy_tokens(board, images, host_tokens):
    scons(f"board={board}")
    for q in QUANTS:
        tokens, log = generate(board, images[q])
        assert len(tokens) == N_TOKENS
        assert tokens == host_tokens[q], f"{board} {q}"
        assert f"kernels {ARM_BOARDS[board]}" in log, log


@pytest.mark.parametrize("board", sorted(ARM_BOARDS))
def test_cross_decoder_arm_board_tells_the_known_story(board, images):
    """Text in, text out on the board (its own tokenizer too): the fixture's documented greedy story."""
    scons(f"board={board}")
    exe = ROOT / "build" / board / "elk-run"
    proc = subprocess.run(boards.load(board).run_prefix() + [str(exe), str(images["f32"]), "-p", "Once upon a time",
                                                              "-n", "20", "--temperature", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Once upon a time, there was a little girl named Lily. She loved to play")


@pytest.mark.parametrize("table", ["neon_i8mm", "neon_dotprod", "neon", "ref"])
def test_cross_decoder_every_table_forced_on_qemu_max_matches_host(table, images, host_tokens):
    """elk-run --kernels forces each compiled table on -cpu max: all give the host's tokens."""
    scons("board=qemu-max")
    exe = ROOT / "build" / "qemu-max" / "elk-run"
    for q in ("q8_0", "q4_0"):
        proc = subprocess.run(boards.load("qemu-max").run_prefix() + [
            str(exe), str(images[q]), "-p", PROMPT, "-n", str(N_TOKENS), "--temperature", "0", "--ids",
            "--kernels", table], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert f"kernels {table}" in proc.stderr
        assert [int(t) for t in proc.stdout.split()] == host_tokens[q], f"{table} {q}"


@pytest.mark.parametrize("board,cpu", [("qemu-a76", "cortex-a53"), ("qemu-max", "cortex-a72")])
def test_cross_decoder_aarch64_build_falls_back_to_plain_neon_on_an_armv8_0_cpu(board, cpu, images, host_tokens):
    """The same binary on a CPU without dotprod/i8mm (getauxval says so): plain NEON is chosen at run
    time and the whole decoder, built for a Cortex-A76 board, runs without SIGILL to the host's tokens."""
    scons(f"board={board}")
    prefix = boards.load(board).run_prefix()
    prefix[prefix.index("-cpu") + 1] = cpu
    exe = ROOT / "build" / board / "elk-run"
    proc = subprocess.run(prefix + [str(exe), str(images["q4_0"]), "-p", PROMPT, "-n", str(N_TOKENS),
                                    "--temperature", "0", "--ids"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{board} on {cpu}: exit {proc.returncode} {proc.stderr[-500:]}"
    assert "kernels neon:" in proc.stderr, proc.stderr
    assert [int(t) for t in proc.stdout.split()] == host_tokens["q4_0"]


def smmla_translated(image, prompt: str, n: int, log) -> int:
    """How many SMMLA instructions (i8mm: 0x4e80a400 under mask 0xffe0fc00) qemu translated while
    elk-run decoded on -cpu max (qemu's -d in_asm log lists every guest instruction it translates)."""
    exe = ROOT / "build" / "qemu-max" / "elk-run"
    prefix = boards.load("qemu-max").run_prefix()
    proc = subprocess.run(prefix + ["-d", "in_asm", "-D", str(log), str(exe), str(image), "-p", prompt,
                                    "-n", str(n), "--temperature", "0", "--ids"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "kernels neon_i8mm" in proc.stderr, proc.stderr
    words = re.findall(r"^0x[0-9a-f]+:\s+([0-9a-f]{8})\s", log.read_text(), re.M)
    return sum(1 for w in words if int(w, 16) & 0xFFE0FC00 == 0x4E80A400)


def test_cross_decoder_i8mm_gemm_runs_for_batched_prefill_only(images, tmp_path):
    """The i8mm table's gemm slot really carries batched prefill: a six-token prompt executes SMMLA,
    a one-token prompt (decode-shaped, n_tok = 1) executes none."""
    scons("board=qemu-max")
    for q in ("q8_0", "q4_0"):
        assert smmla_translated(images[q], PROMPT, 1, tmp_path / f"{q}-batch.log") > 0, q
        assert smmla_translated(images[q], "1", 1, tmp_path / f"{q}-one.log") == 0, q
