"""Host errors on the serial link are one `elk: error:` line with exit 2, never a traceback: a port the
user may not open, and a path that is not a serial port. (Port not found, no answer, image too large
and protocol version mismatch: test_emulate_native, test_link_robustness, test_flash_cli.)"""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def _elk(*args, prefix=()):
    return subprocess.run([*prefix, sys.executable, "-m", "elk", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def _one_error_line(r, text):
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("elk: error: ") and text in r.stderr, r.stderr


def test_a_port_without_permission_is_one_line(tmp_path):
    master, slave = os.openpty()
    try:
        port = os.ttyname(slave)
        os.chmod(port, 0)
        prefix = ()
        if os.geteuid() == 0:  # root ignores file modes: drop the capabilities that let it
            if not shutil.which("setpriv"):
                pytest.fail("setpriv (util-linux) is needed to test permissions as root")
            prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
        from conftest import fixture_path
        from elk.convert.pack import pack

        image = tmp_path / "s.elk"
        pack(str(fixture_path("stories260K.bin")), str(image), tokenizer=str(fixture_path("tok512.bin")),
             quant="q8_0")
        for args in (("status",), ("chat", "-p", "hi"), ("flash", image)):
            r = _elk(*args, "--port", port, prefix=prefix)
            _one_error_line(r, f"{port}: permission denied")
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_path_that_is_not_a_serial_port_is_one_line(tmp_path, kind):
    path = tmp_path / "notes.txt"
    if kind == "file":
        path.write_text("not a tty\n")
    else:
        path.mkdir()
    _one_error_line(_elk("status", "--port", path), f"{path}: not a serial port")
