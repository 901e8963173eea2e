"""Fuzz the checkpoint and tokenizer readers (host/elk/convert, host/elk/tokenizer) and the packer behind
them: any bytes in, an ElkError or a packed image out. Anything else is a crash.

Input: byte 0 picks the reader (0 llama2.c checkpoint + tiny tokenizer, 1 GGUF, 2 tokenizer file),
the rest is the file. Runs under atheris like fuzz_boards.py (`--mutate SECONDS DIR...` without it,
`--replay FILE...` to run saved inputs once).
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
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))

# fuzz/run.py passes ELK_FUZZ_TMP (removed after the run: libFuzzer exits without atexit)
_TMP_PARENT = os.environ.get("ELK_FUZZ_TMP") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
_DIR = pathlib.Path(tempfile.mkdtemp(prefix="elk-fuzz-ckpt-", dir=_TMP_PARENT))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)
SUFFIX = {0: "model.bin", 1: "model.gguf", 2: "tokenizer.bin"}
TINY_TOKENIZER = _DIR / "tiny-tok.bin"
elk = None  # (convert, image, tokenizer, errors) imported in main() (instrumented under atheris)


def test_one(data: bytes) -> None:
    if not data:
        return
    convert, image, tokenizer, errors = elk
    kind = data[0] % 3
    path = _DIR / SUFFIX[kind]
    path.write_bytes(data[1:])
    warnings.simplefilter("ignore")  # numpy overflow warnings on garbage floats are not failures
    try:
        if kind == 2:
            v = tokenizer.load(path)
            tokenizer.decode_section(tokenizer.encode_section(v))
            return
        model = convert.load_model(path, tokenizer=TINY_TOKENIZER if kind == 0 else None)
        cfg = model.config
        if cfg.dim * cfg.hidden_dim * cfg.n_layers > 1 << 20 or cfg.vocab_size * cfg.dim > 1 << 20:
            return  # a valid but big model: packing it would only measure numpy
        image.write_image(_DIR / "out.elk", model, quant="q8_0")
    except errors.ElkError as e:
        if "\n" in str(e).strip():
            raise AssertionError(f"error is not one line: {e!r}") from None


def write_tiny_tokenizer(path: pathlib.Path) -> None:
    """A 16-token llama2.c tokenizer file (int32 max_len; per token f32 score, i32 len, bytes)."""
    import struct

    pieces = [b"<unk>", b"<s>", b"</s>", b" ", b"a", b"b", b"c", b" a", b"ab", b" ab", b"\n", b"x", b"y",
              b"z", b"bc", b" b"]
    out = struct.pack("<i", 5)
    for i, p in enumerate(pieces):
        out += struct.pack("<fi", -float(i), len(p)) + p
    path.write_bytes(out)


def _mutate(rng: random.Random, data: bytes, seeds: list) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        pos = rng.randrange(1, len(b) + 1) if len(b) > 1 else 1
        op = rng.randrange(4)
        if op == 0 and len(b) > 1:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b[pos:pos] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x00" * 4, b"\x01\x00\x00\x00"])
        elif op == 2 and len(b) > 1:
            del b[pos:pos + rng.randint(1, 64)]
        else:
            other = rng.choice(seeds)
            b[pos:] = other[pos:]
    return bytes(b)


def mutation_loop(seconds: float, dirs: list) -> int:
    seeds = [p.read_bytes() for d in dirs for p in sorted(pathlib.Path(d).glob("*")) if p.is_file()] or [b"\x00"]
    rng = random.Random(int(os.environ.get("ELK_FUZZ_SEED", "1")))
    crash_dir = pathlib.Path(os.environ.get("ELK_FUZZ_ARTIFACTS", ROOT / "build" / "fuzz" / "crashes" / "checkpoint"))
    runs, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        data = _mutate(rng, rng.choice(seeds), seeds)
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


def _import():
    global elk
    from elk import convert, errors, image, tokenizer

    elk = (convert, image, tokenizer, errors)


def main(argv: list) -> int:
    write_tiny_tokenizer(TINY_TOKENIZER)
    if argv[:1] in (["--mutate"], ["--replay"]):
        _import()
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

    with atheris.instrument_imports(include=["elk"]):
        _import()
        import elk.convert.gguf_reader  # noqa: F401
        import elk.convert.llama2c  # noqa: F401
    atheris.Setup([sys.argv[0], *argv], test_one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
