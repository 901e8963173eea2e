"""The `elk` entry point: usage mistakes are one clear line and exit code 2, like every other error."""

from conftest import ROOT


def test_cli_usage_mistakes_are_one_line_with_exit_2():
    import subprocess
    import sys

    for argv in (["pack"], ["run", "x.elk", "--temperature", "abc"], ["no-such-command"]):
        proc = subprocess.run([sys.executable, "-m", "elk", *argv], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2, argv
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0] and "--help" in lines[0], proc.stderr
