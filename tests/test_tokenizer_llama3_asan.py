"""Llama 3's byte-level pre-tokenizer and ignore_merges in the C tokenizer under AddressSanitizer + UBSan
(scons mode=asan): elk_bl_next_llama3 on random bytes cut at every length (each pattern edge at the end
of the buffer: a lone quote, a cut UTF-8 sequence, a space run), and elk_tokenize_ex on a kind-2 section
with the LLAMA3_SPLIT and IGNORE_MERGES flags, with long pre-tokens and damaged sections. Same harness as
test_tokenizer_special_asan.py."""

from conftest import run_driver_under_asan

DRIVER = r"""
import random, sys
import cffi
from conftest import ROOT
from elk import cheader, spec
from elk import tokenizer as T
from elk.convert import bytelevel as BL

ffi = cffi.FFI()
ffi.cdef(cheader.declarations(ROOT / "firmware/include/elk/elk.h", names=[
    "elk_tokenizer", "elk_tokenizer_arena_size", "elk_tokenizer_init", "elk_tokenize_ex", "elk_token_piece_ex"]))
ffi.cdef("uint64_t elk_bl_next_llama3(const uint8_t *p, uint64_t n, uint64_t i);")
lib = ffi.dlopen(sys.argv[1])
rng = random.Random(3303)
PARTS = [b"'", b"'s", b"'S", b"'r", b"'RE", b"'l", b"'ll", "'\u017f".encode(), "\u017f".encode()[:1], b" ", b"  ",
         b"\r", b"\n", b"\r\n", b"\t", b"9", b"123", "\u0661".encode(), "\u0661".encode()[:1], b"ab", b"(",
         "\u00e9".encode()[:1], "\u65e5".encode(), "\u65e5".encode()[:2], "\u3000".encode(), b"\x85", b"\xff"]

checked = 0
for _ in range(3000):
    data = b"".join(rng.choice(PARTS) for _ in range(rng.randint(1, 12)))
    for n in range(1, len(data) + 1):  # an exact-size copy per length: ASan sees any read past n
        buf, i, out = ffi.new("uint8_t[]", data[:n]), 0, []
        while i < n:
            j = lib.elk_bl_next_llama3(buf, n, i)
            assert i < j <= n
            out.append(data[i:j])
            i = j
        assert out == BL.pre_tokenize(data[:n], False, True), data[:n]
        checked += 1

pieces, splits = list(BL.BYTE_TO_CHAR), [0] * 256
for a, b2 in (("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("a", "a"), ("aa", "aa"), ("1", "2"), ("12", "3"), ("'", "s")):
    pieces.append(a + b2)
    splits.append(len(a.encode()))
pieces += ["Ġqqzzy", "<|begin_of_text|>", "<|eot_id|>", "a" * 400]  # a piece no merge makes; a long one
splits += [0, 0, 0, 0]
types = [T.NORMAL] * (len(pieces) - 3) + [T.CONTROL, T.CONTROL, T.NORMAL]
v = T.Vocab(pieces, [-float(i) for i in range(len(pieces))], types, bos_id=pieces.index("<|begin_of_text|>"),
            eos_id=pieces.index("<|eot_id|>"), unk_id=-1, pad_id=-1,
            flags=spec.TOKENIZER_FLAG_LLAMA3_SPLIT | spec.TOKENIZER_FLAG_IGNORE_MERGES,
            kind=spec.TOKENIZER_KIND_BYTE_BPE, splits=splits)
base = T.encode_section(v)


def use(sec, texts):
    buf = ffi.new("uint8_t[]", sec)
    need = lib.elk_tokenizer_arena_size(buf, len(sec))
    arena = ffi.new("uint8_t[]", max(need, 1 << 16))
    out = ffi.new("elk_tokenizer **")
    rc = lib.elk_tokenizer_init(out, buf, len(sec), arena, len(arena))
    if rc:
        assert rc < 0 and need == 0
        return 0
    n, piece = ffi.new("int *"), ffi.new("char[]", 16)
    for data in texts:
        lib.elk_tokenize_ex(out[0], data, len(data), 4, ffi.NULL, 0, n)
        ids = ffi.new("int32_t[]", max(n[0], 1))
        assert lib.elk_tokenize_ex(out[0], data, len(data), 4, ids, n[0], n) == 0
        for i in list(ids[0 : min(n[0], 64)]) + [rng.randrange(-2, len(pieces) + 2)]:
            lib.elk_token_piece_ex(out[0], -1, i, rng.randrange(2), piece, rng.randint(0, 16), n)
    return 1


longs = [b"a" * 5000, b"a" * 400, b" qqzzy" * 300, b"1" * 4000, b" " * 3000 + b"x", b"\r\n" * 2000,
         b"'S" * 2000, bytes(rng.getrandbits(8) for _ in range(9000))]
assert use(base, longs + [b"".join(rng.choice(PARTS) for _ in range(60)) for _ in range(200)])
accepted = 0
for k in range(300):
    b = bytearray(base)
    if k % 2 == 0:  # other known byte-level flags, and piece text changed: still valid sections
        b[8] = rng.choice([0, 0x10, 0x20, 0x40, 0x30, 0x50, 0x60, 0x70])
        for _ in range(rng.randint(0, 6)):
            b[len(b) - 1 - rng.randrange(400)] = rng.choice(b"abqz")  # inside the long piece
    for _ in range(rng.randint(1, 6) if k % 2 else 0):  # anywhere, the head often
        b[rng.choice([8, 9, rng.randrange(32), rng.randrange(len(b))])] = rng.getrandbits(8)
    accepted += use(bytes(b), [b"".join(rng.choice(PARTS) for _ in range(40)) for _ in range(10)])
print("checked", checked, accepted)
"""


def test_llama3_split_and_ignore_merges_are_clean_under_asan():
    proc = run_driver_under_asan(DRIVER)
    checked, accepted = map(int, proc.stdout.split()[1:3])
    assert checked > 10000, checked
    assert 150 <= accepted < 290, accepted  # every re-flagged section ran, most damaged ones were refused
