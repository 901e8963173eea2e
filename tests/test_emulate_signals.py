"""`elk emulate` stops cleanly however it is stopped: Ctrl-C (SIGINT), SIGTERM and a closed terminal
(SIGHUP) stop the firmware and remove the board's record; even SIGKILL of `elk emulate` takes the
firmware down with it (no orphan elk-fw holding a pty and a flash file)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie no longer runs
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_emulate_leaves_no_firmware_behind(host_build, tmp_path, sig):
    # TMPDIR: a SIGKILLed emulator cannot delete its temporary flash file; keep it in tmp_path
    env = dict(os.environ, ELK_RUNTIME_DIR=str(tmp_path / "run"), TMPDIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "elk", "emulate", "--baud", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fw_pid = None
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("port: /dev/pts/"), first + proc.stderr.read()
        assert proc.stdout.readline().startswith("board: ")  # printed once the firmware runs
        records = list((tmp_path / "run").glob("*.json"))
        assert len(records) == 1
        fw_pid = json.loads(records[0].read_text())["fw_pid"]
        assert not _gone(fw_pid)
        proc.send_signal(sig)
        rc = proc.wait(timeout=10)
        assert _wait_gone(fw_pid), f"elk-fw {fw_pid} outlived `elk emulate` ({sig.name})"
        if sig != signal.SIGKILL:
            assert rc == 0, proc.stderr.read()
            assert not list((tmp_path / "run").glob("*.json"))  # `elk ports` no longer lists it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if fw_pid is not None and not _gone(fw_pid):
            os.kill(fw_pid, signal.SIGKILL)


def test_emulate_port_line_comes_first_even_with_stderr_merged(host_build, tmp_path):
    """A board with an image prints its boot line at once; `elk emulate 2>&1 | head -1` still gets
    the port."""
    from conftest import fixture_path
    from elk import flash as flashing
    from elk.convert.pack import pack
    from elk.emulate import Emulator

    image, flash = tmp_path / "s.elk", tmp_path / "board.bin"
    pack(str(fixture_path("stories260K.bin")), str(image), tokenizer=str(fixture_path("tok512.bin")), quant="q8_0")
    with Emulator("host", baud=0, flash=flash, log=open(os.devnull, "w")) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "elk", "emulate", "--baud", "0", "--flash", str(flash)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, ELK_RUNTIME_DIR=str(tmp_path / "run")))
        try:
            first, second = proc.stdout.readline(), proc.stdout.readline()
            assert first.startswith("port: /dev/pts/"), (first, second)
        finally:
            proc.terminate()
            assert proc.wait(timeout=10) == 0


def test_a_second_board_on_the_same_flash_file_is_one_line(host_build, tmp_path):
    from elk.emulate import Emulator

    flash = tmp_path / "board.bin"
    with Emulator("host", baud=0, flash=flash, log=open(os.devnull, "w")):
        r = subprocess.run([sys.executable, "-m", "elk", "emulate", "--flash", str(flash)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, ELK_RUNTIME_DIR=str(tmp_path / "run")))
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr == f"elk: error: {flash}: flash file in use by another emulated board (`elk ports` lists them)\n"


@pytest.mark.parametrize("args,message", [
    (("--baud", "-1"), "--baud must be 0 or more, got -1"),
    (("--flash-mb", "0"), "--flash-mb must be 1 or more, got 0"),
    (("--threads", "0"), "--threads must be 1 or more, got 0"),
    (("--flash", "/no/such/folder/f.bin"), "/no/such/folder/f.bin: its folder does not exist"),
])
def test_emulate_refuses_bad_options_in_one_line(host_build, tmp_path, args, message):
    r = subprocess.run([sys.executable, "-m", "elk", "emulate", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, ELK_RUNTIME_DIR=str(tmp_path / "run")))
    assert r.returncode == 2 and r.stdout == "" and r.stderr == f"elk: error: {message}\n", r.stdout + r.stderr
