"""The special-token paths of the C tokenizer under AddressSanitizer + UBSan (scons mode=asan): a
TOKENIZER section with control pieces and a stop-id list, its tail damaged in many ways, must be
rejected or used without one invalid access; ELK_TOKENIZE_SPECIAL on random text full of marker
fragments, ELK_PIECE_SPECIAL and the stop-id calls run on the valid ones; the same for a byte-level
(kind 2) section damaged in its merge-split table, entries and head. Same harness as
test_tokenizer_asan.py: libasan preloaded into Python, Python's allocator switched to malloc."""

from conftest import run_driver_under_asan

DRIVER = r"""
import random, struct, sys
import cffi
from conftest import ROOT, fixture_path
from elk import cheader, spec
from elk import tokenizer as T

ffi = cffi.FFI()
ffi.cdef(cheader.declarations(ROOT / "firmware/include/elk/elk.h", names=[
    "elk_tokenizer", "elk_tokenizer_arena_size", "elk_tokenizer_init", "elk_tokenize_ex", "elk_token_piece_ex",
    "elk_tokenizer_stop_ids", "elk_tokenizer_is_stop"]))
lib = ffi.dlopen(sys.argv[1])
rng = random.Random(2111)

v = T.from_llama2c(fixture_path("tok512.bin"))
LONG = "<|" + "long_marker_" * 25 + "|>"  # 304 bytes: past the length-by-length match, compared whole
markers = ["<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|a|>", "<", LONG]
for k, m in enumerate(markers):
    v.pieces[500 + k], v.types[500 + k] = m, T.CONTROL
v.stop_ids = [2, 501, 502]
base = T.encode_section(v)
assert struct.unpack_from("<I", base, 8)[0] & spec.TOKENIZER_FLAG_STOP_IDS


def text():
    parts = [m.encode() for m in markers] + [b"<|im_", b"end|>", b"|>", "héllo 日本 ".encode(), b"  ", b"the ",
                                             LONG[:-1].encode(),
                                             bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 20)))]
    return b"".join(rng.choice(parts) for _ in range(rng.randint(0, 30)))


def use(sec):
    buf = ffi.new("uint8_t[]", sec)
    need = lib.elk_tokenizer_arena_size(buf, len(sec))
    arena = ffi.new("uint8_t[]", max(need, 1 << 16))
    out = ffi.new("elk_tokenizer **")
    rc = lib.elk_tokenizer_init(out, buf, len(sec), arena, len(arena))
    if rc:
        assert rc < 0 and need == 0
        return 0
    t = out[0]
    ids, n, piece = ffi.new("int32_t[]", 64), ffi.new("int *"), ffi.new("char[]", 16)
    for _ in range(40):
        data = text()
        lib.elk_tokenize_ex(t, data, len(data), rng.randrange(16), ids, rng.randint(0, 64), n)
        for i in list(ids[0 : min(n[0], 64)]) + [rng.randrange(-2, 520)]:
            lib.elk_token_piece_ex(t, rng.randint(-1, 520), i, rng.randrange(2), piece, rng.randint(0, 16), n)
            lib.elk_tokenizer_is_stop(t, i)
    lib.elk_tokenizer_stop_ids(t, ids, rng.randint(0, 16))
    return 1


accepted = use(base)
for k in range(400):
    b = bytearray(base)
    how = k % 4
    if how == 0:      # damage the list's count or ids
        off = len(b) - 4 * rng.randint(1, 4)
        b[off : off + 4] = rng.choice([0, 1, 3, 16, 17, 600, 1 << 31, rng.getrandbits(32)]).to_bytes(4, "little")
    elif how == 1:    # cut the section in its tail
        b = b[: len(b) - rng.randint(1, 64)]
    elif how == 2:    # set the flag on a section without a list
        b = bytearray(T.encode_section(T.from_llama2c(fixture_path("tok512.bin"))))
        b[8] |= spec.TOKENIZER_FLAG_STOP_IDS
        b = b[: len(b) - rng.randint(0, 8)]
    else:             # random bytes in the last 64
        for _ in range(rng.randint(1, 6)):
            b[len(b) - 1 - rng.randrange(64)] = rng.getrandbits(8)
    accepted += use(bytes(b))

# a byte-level vocabulary (kind 2): GPT-2's 256 byte pieces, a few merges, ChatML and a user-defined piece
from elk.convert import bytelevel as BL
pieces, splits = list(BL.BYTE_TO_CHAR), [0] * 256
for a, b2 in (("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("a", "a"), ("aa", "aa"), ("1", "2"), ("Ã", "©")):
    pieces.append(a + b2)
    splits.append(len(a.encode()))
pieces += ["<|im_start|>", "<|im_end|>", "<|tool|>"]
splits += [0, 0, 0]
types = [T.NORMAL] * (len(pieces) - 3) + [T.CONTROL, T.CONTROL, T.USER_DEFINED]
pieces, splits, types = pieces + [LONG, "he"], splits + [0, 0], types + [T.CONTROL, T.USER_DEFINED]  # "he": as 257
bv = T.Vocab(pieces, [-float(i) for i in range(len(pieces))], types, bos_id=-1, eos_id=pieces.index("<|im_end|>"),
             unk_id=-1,
             pad_id=-1, flags=spec.TOKENIZER_FLAG_SPLIT_DIGITS, kind=spec.TOKENIZER_KIND_BYTE_BPE, splits=splits,
             stop_ids=[pieces.index("<|im_start|>")])
bl_base = T.encode_section(bv)
bl_accepted = use(bl_base)
buf = ffi.new("uint8_t[]", bl_base)
arena = ffi.new("uint8_t[]", lib.elk_tokenizer_arena_size(buf, len(bl_base)))
tp = ffi.new("elk_tokenizer **")
assert lib.elk_tokenizer_init(tp, buf, len(bl_base), arena, len(arena)) == 0
for long in (b"a" * 5000, "日本語".encode() * 900 + b" end", bytes(rng.getrandbits(8) for _ in range(9000)),
             b"1" * 3000 + b"<|tool|>" * 200,  # pre-tokens longer than the scratch: merged in windows
             LONG.encode() * 30 + b" the he" * 500):
    n = ffi.new("int *")
    lib.elk_tokenize_ex(tp[0], long, len(long), 4, ffi.NULL, 0, n)
    ids = ffi.new("int32_t[]", n[0])
    assert lib.elk_tokenize_ex(tp[0], long, len(long), 4, ids, n[0], n) == 0
blob = 32 + 16 * len(pieces)
for k in range(300):
    b = bytearray(bl_base)
    if k % 2 == 0:  # other merge splits, mostly still valid: odd merges must not break the engine
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(pieces))
            b[blob + 2 * i : blob + 2 * i + 2] = rng.randrange(len(pieces[i].encode())).to_bytes(2, "little")
        bl_accepted += use(bytes(b))
        continue
    for _ in range(rng.randint(1, 6)):  # the split table, the entries, the head, or anywhere
        at = rng.choice([blob + rng.randrange(2 * len(pieces)), 32 + rng.randrange(16 * len(pieces)),
                         rng.randrange(32), rng.randrange(len(b))])
        b[at] = rng.getrandbits(8)
    bl_accepted += use(bytes(b))

# a SentencePiece vocabulary as tokenizer.json gives it: dummy prefix after special tokens and unless the
# text starts with a space, user-defined pieces (one past 256 bytes) split off the raw text, <unk> matched
hv = T.from_llama2c(fixture_path("tok512.bin"))
for k, m in enumerate(markers):
    hv.pieces[500 + k], hv.types[500 + k] = m, T.CONTROL
for k, m in enumerate(["<|tool|>", "<|" + "user_piece_" * 30 + "|>", "he"]):
    hv.pieces[490 + k], hv.types[490 + k] = m, T.USER_DEFINED
hv.flags |= T.FLAG_PREFIX_SEGMENTS | T.FLAG_PREFIX_UNLESS_SPACE | T.FLAG_USER_SPLIT_RAW
markers += ["<|tool|>", hv.pieces[491], hv.pieces[491][:-1], "<unk>", " ", "\u2581"]
hf_base = T.encode_section(hv)
hf_accepted = use(hf_base)
for k in range(100):
    b = bytearray(hf_base)
    b[8:12] = (struct.unpack_from("<I", b, 8)[0] ^ (1 << rng.randrange(10))).to_bytes(4, "little")
    hf_accepted += use(bytes(b))
assert hf_accepted > 40, hf_accepted  # 7 of the 10 flips keep a valid kind-1 section
print("accepted", accepted, bl_accepted, hf_accepted)
"""


def test_special_token_paths_are_clean_under_asan():
    proc = run_driver_under_asan(DRIVER)
    accepted, bl_accepted = map(int, proc.stdout.split()[1:3])
    assert 20 < accepted < 300, accepted  # the valid section and many damaged ones ran, most were refused
    assert 60 < bl_accepted < 290, bl_accepted  # the same for the byte-level (kind 2) section
