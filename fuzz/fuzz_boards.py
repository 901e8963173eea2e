"""Fuzz the board-file loader (host/elk/boards.py): any bytes in, BoardError or a valid Board out.

Anything else (a traceback, a Board that breaks summary()/kernel_files()) is a crash. Runs under
atheris (libFuzzer for Python, same flags: `python fuzz/fuzz_boards.py -max_total_time=10 DIR`); when
atheris is not installed, a seeded mutation loop over the TOML seeds (`--mutate SECONDS DIR...`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import pathlib
import random
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))

boards = None  # elk.boards, imported in main() (under atheris' instrumentation when fuzzing)

# fuzz/run.py passes ELK_FUZZ_TMP (removed after the run: libFuzzer exits without atexit)
_TMP_PARENT = os.environ.get("ELK_FUZZ_TMP") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
_DIR = tempfile.mkdtemp(prefix="elk-fuzz-boards-", dir=_TMP_PARENT)
_PATH = pathlib.Path(_DIR) / "fuzz.toml"
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


def test_one(data: bytes) -> None:
    _PATH.write_bytes(data)
    try:
        board = boards.load_file(_PATH)
    except boards.BoardError as e:
        if "\n" in str(e).strip():
            raise AssertionError(f"board error is not one line: {e!r}") from None
        return
    board.summary()
    board.kernel_files()


# ---------------------------------------------------------------------------------------------
# Fallback without atheris: mutate the seeds (byte flips, splices, value swaps) for a fixed time.

_TOKENS = [b"= 1", b'= "x"', b"= []", b"= true", b"= 1.5", b"= -1", b"= 99999999999999999999", b"[npu]",
           b"[[x]]", b"\x00", b"\xff", b'"""', b"= {a = 1}", b"=", b"\n", b"name", b"kernels = [1]"]


def mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b[pos:pos] = rng.choice(_TOKENS)
        elif op == 2 and b:
            del b[pos:pos + rng.randint(1, 16)]
        elif op == 3:
            other = rng.choice(seeds)
            at = rng.randrange(len(other) + 1)
            b[pos:] = other[at:]
        else:
            lines = bytes(b).split(b"\n")
            rng.shuffle(lines)
            b = bytearray(b"\n".join(lines))
    return bytes(b)


def mutation_loop(seconds: float, dirs: list[str]) -> int:
    seeds = [p.read_bytes() for d in dirs for p in sorted(pathlib.Path(d).glob("*")) if p.is_file()]
    seeds = seeds or [b""]
    rng = random.Random(int(os.environ.get("ELK_FUZZ_SEED", "1")))
    runs, end = 0, time.monotonic() + seconds
    crash_dir = pathlib.Path(os.environ.get("ELK_FUZZ_ARTIFACTS", ROOT / "build" / "fuzz" / "crashes" / "boards"))
    while time.monotonic() < end:
        data = mutate(rng, rng.choice(seeds), seeds)
        try:
            test_one(data)
        except Exception as e:  # noqa: BLE001 - any escape is the bug we look for
            crash_dir.mkdir(parents=True, exist_ok=True)
            path = crash_dir / f"crash-{runs}"
            path.write_bytes(data)
            print(f"==CRASH== {type(e).__name__}: {e} -> {path}")
            return 1
        runs += 1
    print(f"stat::number_of_executed_units: {runs}")
    return 0


def main(argv: list[str]) -> int:
    global boards
    if argv[:1] in (["--mutate"], ["--replay"]):
        from elk import boards
    if argv[:1] == ["--mutate"]:
        return mutation_loop(float(argv[1]), argv[2:])
    if argv[:1] == ["--replay"]:
        import signal

        def hang(signum, frame):
            raise TimeoutError("input took more than 10 s (a hang)")

        signal.signal(signal.SIGALRM, hang)
        for p in argv[1:]:
            signal.alarm(10)
            test_one(pathlib.Path(p).read_bytes())
            signal.alarm(0)
        print(f"replayed {len(argv) - 1} inputs")
        return 0
    import atheris

    with atheris.instrument_imports(include=["elk", "tomllib"]):
        import tomllib  # noqa: F401  (instrument the parser the loader calls)

        from elk import boards
    atheris.Setup([sys.argv[0], *argv], test_one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
