"""Fuzz the checkpoint and tokenizer readers (host/elk/convert, host/elk/tokenizer) and the packer behind
them: any bytes in, an ElkError or a packed image out. Anything else is a crash.

Input: byte 0 picks the reader (0 llama2.c checkpoint + tiny tokenizer, 1 GGUF, 2 tokenizer file),
the rest is the file. Runs under atheris like fuzz_boards.py (`--mutate SECONDS DIR...` without it,
`--replay FILE...` to run saved inputs once).
"""

from __future__ import annotations

import pathlib
import sys
import warnings

import pyfuzz

_DIR = pyfuzz.scratch_dir("ckpt")
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


_mutate = pyfuzz.splice_mutator([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x00" * 4, b"\x01\x00\x00\x00"])


def _load() -> None:
    global elk
    from elk import convert, errors, image, tokenizer
    import elk.convert.gguf_reader  # noqa: F401  (instrumented under atheris)
    import elk.convert.llama2c  # noqa: F401

    elk = (convert, image, tokenizer, errors)


if __name__ == "__main__":
    write_tiny_tokenizer(TINY_TOKENIZER)
    sys.exit(pyfuzz.main("checkpoint", sys.argv[1:], test_one, _mutate, _load, empty=b"\x00"))
