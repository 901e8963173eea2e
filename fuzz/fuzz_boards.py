"""Fuzz the board-file loader (host/elk/boards.py): any bytes in, BoardError or a valid Board out.

Anything else (a traceback, a Board that breaks summary()/kernel_files()) is a crash. Runs under
atheris (libFuzzer for Python, same flags: `python fuzz/fuzz_boards.py -max_total_time=10 DIR`); when
atheris is not installed, a seeded mutation loop over the TOML seeds (`--mutate SECONDS DIR...`).
"""

from __future__ import annotations

import random
import sys

import pyfuzz

boards = None  # elk.boards, imported by _load() (under atheris' instrumentation when fuzzing)
_PATH = pyfuzz.scratch_dir("boards") / "fuzz.toml"


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


def _load() -> None:
    global boards
    import tomllib  # noqa: F401  (instrumented too: the parser the loader calls)

    from elk import boards


if __name__ == "__main__":
    sys.exit(pyfuzz.main("boards", sys.argv[1:], test_one, mutate, _load, instrument=("elk", "tomllib")))
