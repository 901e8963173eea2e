"""Fuzz the host tool's own parsers of untrusted bytes: what a (broken or hostile) board sends back
(elk.link FrameDecoder, INFO and STATS replies) and the Python image reader and trust checks that
`elk info`, `elk verify` and `elk sign` run on files. Any bytes in: an ElkError or a result, never
another exception.

Input: byte 0 picks the parser (0 board byte stream, 1 image file, 2 signed-image checks, 3 INFO/STATS
payloads as such, past the CRC), the rest is the data. Runs under atheris like fuzz_boards.py (`--mutate SECONDS DIR...`, `--replay FILE...`).
"""

from __future__ import annotations

import sys

import pyfuzz

_DIR = pyfuzz.scratch_dir("host")
FUZZ_PUB = bytes.fromhex("2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12")  # fuzz/make_seeds.py
mods = None  # (link, image, trust, errors), imported in main()


def test_one(data: bytes) -> None:
    if not data:
        return
    link, image, trust, errors = mods
    kind, body = data[0] % 4, data[1:]
    try:
        if kind == 0:
            dec = link.FrameDecoder()
            for f in dec.feed(body):
                if isinstance(f, link.BadFrame):
                    continue
                if f.kind == 2:  # RESP: i16 status, then the reply
                    link.parse_info(f.payload[2:])
                elif f.kind == 4 and f.code == 2:  # EVENT STATS
                    link.parse_stats(f.payload)
        elif kind == 1:
            path = _DIR / "f.elk"
            path.write_bytes(body)
            rep = image.verify_image(path)
            rep.lines()
        elif kind == 2:
            for finding in trust.verify_bytes(body, FUZZ_PUB):
                assert isinstance(finding.detail, str)
        else:  # reply payloads as a board with a valid CRC could send them
            for parse in (link.parse_info, link.parse_stats):
                try:
                    parse(body)
                except errors.ElkError:
                    pass
    except errors.ElkError as e:
        if "\n" in str(e).strip():
            raise AssertionError(f"error is not one line: {e!r}") from None


_mutate = pyfuzz.splice_mutator([b"\x00", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"ELKT", b"ELK1"])


def _load() -> None:
    global mods
    from elk import errors, image, link, trust

    mods = (link, image, trust, errors)


if __name__ == "__main__":
    sys.exit(pyfuzz.main("host", sys.argv[1:], test_one, _mutate, _load, empty=b"\x00"))
