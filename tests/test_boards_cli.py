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
