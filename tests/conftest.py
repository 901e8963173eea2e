"""Shared test fixtures: paths to ../shared/fixtures, the built host runtime, a scratch dir."""

import contextlib
import os
import pathlib
import subprocess
import sys
import time

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


def run_elk(*args, timeout=120, **kw) -> subprocess.CompletedProcess:
    """`python -m elk <args>` as a user runs it, from the repository root, output captured as text."""
    return subprocess.run([sys.executable, "-m", "elk", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)


def pack_stories260k(out: pathlib.Path, **options) -> pathlib.Path:
    """The stories260K fixture with its tok512 vocabulary packed to `out` (options as elk.convert.pack.pack)."""
    from elk.convert.pack import pack

    pack(str(fixture_path("stories260K.bin")), str(out), tokenizer=str(fixture_path("tok512.bin")), **options)
    return out


@contextlib.contextmanager
def flashed_board(image, board="host", **emulator_options):
    """An emulated board behind a real pty (no line-rate throttle, log discarded) with `image`
    flashed over the link as a user would; yields the running Emulator."""
    from elk import flash as flashing
    from elk.emulate import Emulator

    with Emulator(board, baud=0, log=open(os.devnull, "w"), **emulator_options) as emu:
        assert flashing.flash([emu.port], image, progress=False)[0].ok
        yield emu


def read_until(term, marker, timeout=10.0, after=b""):
    """Console bytes read from `term` up to `marker`, looked for after the echo of `after` (the line
    just typed) when given; fails the test with the last bytes seen when it does not come."""
    buf, end = b"", time.monotonic() + timeout
    while time.monotonic() < end:
        buf += term.read(4096)
        if marker in (buf.split(after, 1)[-1] if after else buf):
            return buf
    raise AssertionError(buf[-300:])


def run_driver_under_asan(driver: str, *args, env=None, scons_targets=()) -> subprocess.CompletedProcess:
    """Python source `driver` (argv[1:] = `args`) in a child with libasan preloaded, against the
    ASan+UBSan libelk (built first; its path is $ELK_LIB and, if no args are given, argv[1]). Fails
    the test on a non-zero exit or any UBSan report; returns the finished process."""
    scons("mode=asan", *scons_targets)
    lib = ROOT / "build" / "host-asan" / "libelk.so"
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    assert os.path.isfile(libasan), "gcc has no libasan.so"
    child = dict(os.environ, LD_PRELOAD=libasan, PYTHONMALLOC="malloc", ELK_LIB=str(lib),
                 ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1",
                 UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
                 PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT / "host")]), **(env or {}))
    proc = subprocess.run([sys.executable, "-c", driver, *(map(str, args) if args else [str(lib)])], env=child,
                          capture_output=True, text=True, timeout=600, cwd=ROOT / "tests")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "runtime error" not in proc.stderr, proc.stderr[-4000:]  # UBSan reports
    return proc


def owner_keys(d: pathlib.Path, names) -> dict:
    """name -> {"key", "pub": the files `elk keygen` writes (no passphrase), "priv", "raw": loaded}."""
    from elk import trust

    out = {}
    for name in names:
        k, p = trust.keygen(d / name)
        out[name] = {"key": k, "pub": p, "priv": trust.load_private_key(k), "raw": trust.load_public_key(p)}
    return out


def read_pty_to_end(master: int, on_output=None) -> bytes:
    """Everything a program writes to the slave side of a pty, until it ends (EIO or EOF on the
    master); on_output(all bytes so far) is called after each read."""
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the program ended and closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if on_output:
            on_output(out)
    return out


def pack_stories260k_long(d: pathlib.Path, seq_len: int = 4096) -> pathlib.Path:
    """stories260K with a longer context, packed to d/s4k.elk: the legacy llama2.c file grows by the
    longer RoPE tables its header then declares (zeros; elk computes RoPE itself)."""
    import struct

    from elk.convert.pack import pack

    raw = bytearray(fixture_path("stories260K.bin").read_bytes())
    dim, _hidden, _layers, heads = struct.unpack_from("<4i", raw)
    struct.pack_into("<i", raw, 24, seq_len)
    raw += bytes((seq_len - 512) * (dim // heads) * 4)  # freq_cis real + imag, f32, for the extra positions
    (d / "s4k.bin").write_bytes(raw)
    pack(str(d / "s4k.bin"), str(d / "s4k.elk"), tokenizer=str(fixture_path("tok512.bin")))
    return d / "s4k.elk"
