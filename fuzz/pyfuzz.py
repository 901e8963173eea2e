"""What the Python fuzz harnesses (fuzz_boards.py, fuzz_checkpoint.py, fuzz_host.py) share: a scratch
folder, the seeded mutation loop used when atheris is absent, replay of saved inputs with a hang alarm,
and the atheris entry. Each harness keeps only its test_one, its mutator and what it imports."""

from __future__ import annotations

import atexit
import os
import pathlib
import random
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))


def scratch_dir(name: str) -> pathlib.Path:
    """A folder removed at exit; fuzz/run.py passes ELK_FUZZ_TMP and removes it after the run too,
    because libFuzzer (atheris) exits without running atexit handlers."""
    parent = os.environ.get("ELK_FUZZ_TMP") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    path = pathlib.Path(tempfile.mkdtemp(prefix=f"elk-fuzz-{name}-", dir=parent))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def splice_mutator(tokens: list):
    """A mutator for binary formats: byte flips, insertions of `tokens` (boundary ints, magics),
    deletions, and tails spliced from other seeds; byte 0 (the harness's selector) is left alone."""

    def mutate(rng: random.Random, data: bytes, seeds: list) -> bytes:
        b = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(1, len(b) + 1) if len(b) > 1 else 1
            op = rng.randrange(4)
            if op == 0 and len(b) > 1:
                b[min(pos, len(b) - 1)] = rng.randrange(256)
            elif op == 1:
                b[pos:pos] = rng.choice(tokens)
            elif op == 2 and len(b) > 1:
                del b[pos:pos + rng.randint(1, 64)]
            else:
                other = rng.choice(seeds)
                b[pos:] = other[pos:]
        return bytes(b)

    return mutate


def mutation_loop(name: str, test_one, mutate, seconds: float, dirs: list, empty: bytes = b"") -> int:
    """Mutate the seeds in dirs for `seconds` (seeded by ELK_FUZZ_SEED); the first input whose test
    raises is saved under ELK_FUZZ_ARTIFACTS (or build/fuzz/crashes/<name>/) and ends the run with 1."""
    seeds = [p.read_bytes() for d in dirs for p in sorted(pathlib.Path(d).glob("*")) if p.is_file()] or [empty]
    rng = random.Random(int(os.environ.get("ELK_FUZZ_SEED", "1")))
    crash_dir = pathlib.Path(os.environ.get("ELK_FUZZ_ARTIFACTS", ROOT / "build" / "fuzz" / "crashes" / name))
    runs, end = 0, time.monotonic() + seconds
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


def replay(test_one, paths: list) -> int:
    """Run saved inputs once each; an input running over 10 s is a hang and raises."""
    import signal

    def hang(signum, frame):
        raise TimeoutError("input took more than 10 s (a hang)")

    signal.signal(signal.SIGALRM, hang)
    for p in paths:
        signal.alarm(10)
        test_one(pathlib.Path(p).read_bytes())
        signal.alarm(0)
    print(f"replayed {len(paths)} inputs")
    return 0


def main(name: str, argv: list, test_one, mutate, load, instrument=("elk",), empty: bytes = b"") -> int:
    """`--mutate SECONDS DIR...` and `--replay FILE...` without atheris; otherwise libFuzzer args for
    atheris. load() imports the code under test (inside atheris' instrumentation when fuzzing)."""
    if argv[:1] == ["--mutate"]:
        load()
        return mutation_loop(name, test_one, mutate, float(argv[1]), argv[2:], empty)
    if argv[:1] == ["--replay"]:
        load()
        return replay(test_one, argv[1:])
    import atheris

    with atheris.instrument_imports(include=list(instrument)):
        load()
    atheris.Setup([sys.argv[0], *argv], test_one)
    atheris.Fuzz()
    return 0
