"""The C tokenizer under AddressSanitizer + UBSan (scons mode=asan): damaged sections and random bytes
must be rejected or encoded without one invalid memory access. Runs in a subprocess with libasan
preloaded into Python and Python's allocator switched to malloc so every cffi buffer has redzones."""

from conftest import run_driver_under_asan

DRIVER = r"""
import random, sys
from test_tokenizer_c import CTokenizer, CTokenizerError, _tok512_section, T, fixture_path

lib = sys.argv[1]
rng = random.Random(1121)
base = bytes(_tok512_section())
entries_end = 32 + 16 * 512


def random_bytes(n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def random_text():
    parts = [random_bytes(rng.randint(0, 40)), b" " * rng.randint(0, 5), "héllo wörld 日本 😀 ".encode(),
             b"a" * rng.randint(0, 3000), b"\xe2\x96\x81", b"<0x0A>", b"\t\n"]
    return b"".join(rng.choice(parts) for _ in range(rng.randint(0, 12)))


def exercise(c):
    for _ in range(5):
        ids = c.encode(random_text(), bos=True, eos=True)
        for i in ids[:200]:
            c.piece(rng.randint(-1, 600), i)
    for i in range(min(600, c.lib.elk_tokenizer_eos(c.t) + 600)):
        try:
            c.piece(rng.randint(-1, 600), i, cap=rng.randint(0, 8))
        except CTokenizerError:
            pass


accepted = rejected = 0
for k in range(600):
    b = bytearray(base)
    how = k % 4
    if how == 0:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(entries_end)] = rng.getrandbits(8)
    elif how == 1:
        b = b[: rng.randrange(len(b))]
    elif how == 2:
        b = bytearray(random_bytes(rng.randint(0, 200)))
    else:
        off = rng.randrange(0, entries_end, 4)
        b[off : off + 4] = rng.getrandbits(32).to_bytes(4, "little")
    try:
        c = CTokenizer(lib, bytes(b))
    except CTokenizerError as e:
        assert e.code < 0
        rejected += 1
        continue
    accepted += 1
    exercise(c)

# valid vocabularies, including user-defined and unused pieces, on random bytes and long inputs
v = T.from_llama2c(fixture_path("tok512.bin"))
for i in range(300, 320):
    v.types[i] = T.USER_DEFINED if i % 2 else T.UNUSED
# user-defined pieces past the 256-byte lookups, up to the 2048-byte limit, met whole, cut and at ends
w = T.from_llama2c(fixture_path("tok512.bin"))
longs = ["<" + "ab" * 150 + ">", "x\u2581" * 511 + "wxyz", "<" + "ab" * 120 + ">"]  # 302, 2048, 242 bytes
for i, piece in zip((320, 321, 322), longs):
    w.pieces[i], w.types[i] = piece, T.USER_DEFINED
cuts = [p.replace("\u2581", " ") for p in longs]
cuts += [p[: rng.randint(1, len(p))] for p in cuts]
c = CTokenizer(lib, T.encode_section(w))
for _ in range(150):
    c.encode(b"".join(rng.choice(cuts + ["a", " ", "日本"]).encode() for _ in range(rng.randint(0, 20))), bos=True)
for section in (bytes(base), T.encode_section(v), T.encode_section(T.load(fixture_path("tokenizer.model")))):
    c = CTokenizer(lib, section)
    for _ in range(150):
        c.encode(random_text(), bos=True)
        short = c.ffi.new("int32_t[]", 3)
        n = c.ffi.new("int *")
        data = random_text()
        c.lib.elk_tokenize(c.t, data, len(data), 1, 1, short, 3, n)
    c.encode(("word " * 5000 + "x" * 9000 + " end").encode())
print("accepted", accepted, "rejected", rejected)
"""


def test_c_tokenizer_is_clean_under_asan_on_malformed_sections_and_random_bytes():
    proc = run_driver_under_asan(DRIVER)
    words = proc.stdout.split()
    accepted, rejected = int(words[1]), int(words[3])
    assert accepted > 20 and rejected > 200  # both the accept path and the reject paths ran
