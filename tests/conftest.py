"""Shared test fixtures: paths to ../shared/fixtures, the built host runtime, a scratch dir."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
sys.path.insert(0, str(ROOT / "host"))


def fixture_path(name: str) -> pathlib.Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"missing test fixture {path} (../shared/fixtures must sit beside the project)")
    return path


@pytest.fixture(scope="session")
def fixtures() -> pathlib.Path:
    return FIXTURES


def scons(*args: str) -> None:
    """Build with SCons (a no-op when up to date); fails the test with the compiler output."""
    cmd = [sys.executable, "-m", "SCons", "-Q", f"-j{os.cpu_count() or 2}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"scons {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="session")
def host_build() -> pathlib.Path:
    scons()
    return ROOT / "build" / "host"
