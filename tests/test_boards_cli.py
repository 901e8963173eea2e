"""`elk boards`, `scons board=list` and unknown board names on the command line."""

import json
import subprocess
import sys

from conftest import ROOT

REQUIRED_BOARDS = {"host", "qemu-a76", "qemu-max", "qemu-a7", "rpi5", "rk3588", "opi-pc", "ax650n"}


def run(*cmd):
    return subprocess.run(list(cmd), cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_boards_scons_list_prints_every_board():
    proc = run(sys.executable, "-m", "SCons", "-Q", "board=list")
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert REQUIRED_BOARDS <= listed


def test_boards_scons_unknown_board_fails_and_lists_valid_ones():
    proc = run(sys.executable, "-m", "SCons", "-Q", "board=rpi9")
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "unknown board 'rpi9'" in out and "qemu-a76" in out and "Traceback" not in out


def test_boards_cli_json_lists_board_objects():
    proc = run(sys.executable, "-m", "elk", "boards", "--json")
    assert proc.returncode == 0, proc.stderr
    data = {b["name"]: b for b in json.loads(proc.stdout)}
    assert REQUIRED_BOARDS <= set(data)
    for b in data.values():
        assert {"name", "arch", "isa", "ram_mb", "flash_mb", "npu"} <= set(b)
    assert data["rk3588"]["npu"]["kind"] == "rknpu2" and data["rpi5"]["npu"]["kind"] == "none"
    assert "i8mm" in data["qemu-max"]["isa"] and "i8mm" not in data["qemu-a76"]["isa"]


def test_boards_cli_text_lists_one_line_per_board():
    proc = run(sys.executable, "-m", "elk", "boards")
    assert proc.returncode == 0
    assert {line.split()[0] for line in proc.stdout.splitlines()} >= REQUIRED_BOARDS


def test_boards_cli_build_unknown_board_is_one_line_error():
    proc = run(sys.executable, "-m", "elk", "build", "--board", "rpi9")
    assert proc.returncode == 2
    assert proc.stderr.startswith("elk: error: unknown board 'rpi9'") and proc.stderr.count("\n") == 1


A53_BOARD = """# A board that exists in no file of this repository: Cortex-A53 (ARMv8.0-A, NEON, no dotprod)
name = "{name}"
description = "test board: 4x Cortex-A53, 512 MB"
arch = "aarch64"
platform = "posix"
toolchain = "aarch64-linux-gnu"
cpu = "cortex-a53"
cflags = []
isa = ["neon"]
kernels = ["neon"]
ram_mb = 512
flash_mb = 64
erase_block_kb = 64
mem_bandwidth_gbs = 6.4
cpu_cores = 4
cpu_gops = 20.0

[npu]
kind = "none"

[console]
device = "pty"
baud = 115200

[emulation]
kind = "qemu-aarch64"
cpu = "cortex-a53"
sysroot = "/usr/aarch64-linux-gnu"
"""


def test_boards_new_board_file_by_path_builds_runs_and_plans_with_no_code(tmp_path):
    """Adding a board is adding a file: one written outside boards/ is built by `elk build --board PATH`
    (and `scons board=PATH`), runs the decoder under the emulation it declares, and `elk plan` uses it."""
    import shutil

    from conftest import fixture_path

    import os

    name = f"test-a53-{os.getpid()}"  # its own build/<name>/, removed below: parallel runs never share it
    board = tmp_path / f"{name}.toml"
    board.write_text(A53_BOARD.format(name=name))
    out = ROOT / "build" / name
    try:
        proc = run(sys.executable, "-m", "elk", "build", "--board", str(board))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().endswith(f"built {out}")
        assert (out / "elk-run").read_bytes()[:4] == b"\x7fELF"
        image = tmp_path / "s.elk"
        proc = run(sys.executable, "-m", "elk", "pack", str(fixture_path("stories260K.bin")), "--tokenizer",
                   str(fixture_path("tok512.bin")), "--quant", "q4_0", "-o", str(image), "--quiet")
        assert proc.returncode == 0, proc.stderr
        qemu = ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu", "-cpu", "cortex-a53"]
        proc = run(*qemu, str(out / "elk-run"), str(image), "-p", "Once upon a time", "-n", "12", "--temperature", "0")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("Once upon a time, there was a little girl named Lily.")
        assert "kernels neon:" in proc.stderr
        proc = run(sys.executable, "-m", "elk", "plan", str(image), "--board", str(board))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"plan {image} on {name}, context 512 tokens")
        assert "of 512.00 MiB: fits" in proc.stdout  # the file's ram_mb
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_boards_misspelt_field_in_a_board_file_is_one_line_naming_file_and_field(tmp_path):
    board = tmp_path / "typo.toml"
    board.write_text(A53_BOARD.format(name="typo").replace("erase_block_kb =", "erase_blok_kb ="))
    for cmd in ([sys.executable, "-m", "elk", "plan", "x.elk", "--board", str(board)],
                [sys.executable, "-m", "elk", "build", "--board", str(board)]):
        proc = run(*cmd)
        assert proc.returncode == 2
        assert proc.stderr.startswith(f"elk: error: {board}: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "'erase_block_kb'" in proc.stderr or "'erase_blok_kb'" in proc.stderr
    proc = run(sys.executable, "-m", "SCons", "-Q", f"board={board}")
    assert proc.returncode == 2 and str(board) in proc.stdout and "erase_blo" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_boards_dir_from_environment_and_a_bad_file_there_is_one_line(tmp_path):
    """ELK_BOARDS_DIR points elk and SCons at a user's own board directory; a bad file in it makes
    `scons board=list` and `elk boards` fail with one line naming file and field (no traceback)."""
    import os

    (tmp_path / "mine.toml").write_text(A53_BOARD.format(name="mine"))
    env = {**os.environ, "ELK_BOARDS_DIR": str(tmp_path)}

    def run_env(*cmd):
        return subprocess.run(list(cmd), cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)

    proc = run_env(sys.executable, "-m", "SCons", "-Q", "board=list")
    assert proc.returncode == 0 and [line.split()[0] for line in proc.stdout.splitlines()] == ["mine"]
    assert json.loads(run_env(sys.executable, "-m", "elk", "boards", "--json").stdout)[0]["ram_mb"] == 512
    (tmp_path / "broken.toml").write_text(A53_BOARD.format(name="broken").replace("baud = 115200", 'baud = "fast"'))
    proc = run_env(sys.executable, "-m", "SCons", "-Q", "board=list")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"scons: error: {tmp_path / 'broken.toml'}: field 'console.baud' must be a int, not str"
    assert "Traceback" not in proc.stdout + proc.stderr
    proc = run_env(sys.executable, "-m", "elk", "boards")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "broken.toml: field 'console.baud'" in proc.stderr
