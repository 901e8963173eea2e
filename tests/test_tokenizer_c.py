"""The C tokenizer (firmware/src/tokenizer) called through cffi ABI mode on build/host/libelk.so,
checked against the sentencepiece package itself, the Python reference and llama2.c's encoder."""

import random

import cffi
import pytest

from conftest import ROOT, fixture_path
from elk import cheader, spec
from elk import tokenizer as T

CDEF = cheader.declarations(ROOT / "firmware" / "include" / "elk" / "elk.h",
                            names=["elk_tokenizer", "elk_tokenizer_arena_size", "elk_tokenizer_init", "elk_tokenize",
                                   "elk_token_piece", "elk_tokenizer_bos", "elk_tokenizer_eos"])
E = {name: code for name, (code, _) in spec.ERRORS.items()}


class CTokenizerError(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


class CTokenizer:
    """The C tokenizer over one TOKENIZER section (bytes), its arena allocated by cffi."""

    def __init__(self, lib_path, section: bytes):
        self.ffi = cffi.FFI()
        self.ffi.cdef(CDEF)
        self.lib = self.ffi.dlopen(str(lib_path))
        self.section = self.ffi.new("uint8_t[]", section or b"\0")
        self.arena_size = self.lib.elk_tokenizer_arena_size(self.section, len(section))
        # a malformed section gives size 0; init must still reject it, so give it a real arena
        self.arena = self.ffi.new("uint8_t[]", max(self.arena_size, 1 << 16))
        out = self.ffi.new("elk_tokenizer **")
        rc = self.lib.elk_tokenizer_init(out, self.section, len(section), self.arena, len(self.arena))
        if rc != 0:
            raise CTokenizerError(rc)
        self.t = out[0]

    def encode(self, text, bos=False, eos=False, cap=None):
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        n = self.ffi.new("int *")
        if cap is None:  # ask for the size first, as callers with unknown input do
            rc = self.lib.elk_tokenize(self.t, data, len(data), bos, eos, self.ffi.NULL, 0, n)
            assert rc in (0, E["E_RANGE"])
            cap = n[0]
        ids = self.ffi.new("int32_t[]", max(cap, 1))
        rc = self.lib.elk_tokenize(self.t, data, len(data), bos, eos, ids, cap, n)
        if rc != 0:
            raise CTokenizerError(rc)
        return list(ids[0 : n[0]])

    def piece(self, prev, i, cap=64):
        buf = self.ffi.new("char[]", max(cap, 1))
        n = self.ffi.new("int *")
        rc = self.lib.elk_token_piece(self.t, prev, i, buf, cap, n)
        if rc != 0:
            raise CTokenizerError(rc)
        return self.ffi.buffer(buf, n[0])[:]

    def decode(self, ids):
        out, prev = b"", -1
        for i in ids:
            out += self.piece(prev, i)
            prev = i
        return out


# ---------------------------------------------------------------------------------------------
# Fixtures

LIB = ROOT / "build" / "host" / "libelk.so"


@pytest.fixture(scope="module")
def sp():
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(fixture_path("tokenizer.model")))


@pytest.fixture(scope="module")
def llama(host_build):
    return CTokenizer(host_build / "libelk.so", T.encode_section(T.load(fixture_path("tokenizer.model"))))


@pytest.fixture(scope="module")
def tok512(host_build):
    return CTokenizer(host_build / "libelk.so", T.encode_section(T.from_llama2c(fixture_path("tok512.bin"))))


CASES = {
    "english": "The quick brown fox jumps over the lazy dog. It wasn't me, said Tom!",
    "accents": "Café, naïve, façade, jalapeño, Ærøskøbing, Łódź, São Paulo",
    "cjk": "日本語のテキストと中文文本和한국어 텍스트",
    "cyrillic": "Привет, как дела? Всё хорошо.",
    "emoji": "I love 🦙 llamas 😀🎉 and 🧑‍🚀 (ZWJ) and flags 🇫🇷",
    "multiple_spaces": "a  b   c    d     e",
    "tabs_newlines": "col1\tcol2\t\tcol3\nline two\n\n\nline five\r\n",
    "leading_trailing_spaces": "   padded on both sides   ",
    "only_spaces": "     ",
    "only_newline": "\n",
    "code": 'def main(argv):\n    for i in range(10):\n        print(f"{i:>3}", end="")  # no newline\n    return {"k": [1, 2]}\n',
    "c_code": "int main(void) {\n\tif (x != 0 && y <= 3) { return -1; }\n}\n",
    "numbers": "3.14159 and 1,000,000 and 0x7FFF and 2024-11-21",
    "specials_as_text": "<s> </s> <unk> <0x0A> \u2581 are just text here",
    "empty": "",
}


# ---------------------------------------------------------------------------------------------
# Against the sentencepiece package


@pytest.mark.parametrize("name", CASES)
def test_c_encode_equals_sentencepiece(llama, sp, name):
    text = CASES[name]
    assert llama.encode(text) == sp.encode(text)
    assert llama.encode(text, bos=True, eos=True) == [1] + sp.encode(text) + [2]


@pytest.mark.parametrize("name", CASES)
def test_c_decode_round_trips_like_sentencepiece(llama, sp, name):
    ids = sp.encode(CASES[name])
    assert llama.decode([1] + ids).decode("utf-8") == sp.decode(ids) == CASES[name].replace("\u2581", " ")


def test_c_encode_equals_sentencepiece_on_long_text(llama, sp):
    text = "\n\n".join(CASES.values()) * 120  # ~90 KB: many scratch refills
    assert len(text.encode()) > 20 * 4096
    assert llama.encode(text) == sp.encode(text)


@pytest.mark.parametrize("word", ["a" * 5000, "ab" * 3001, "日本語の文章は空白を含まない。" * 200,
                                  "https://example.com/" + "a1b2c3" * 700, "=" * 4097])
def test_c_encode_equals_sentencepiece_on_words_longer_than_the_scratch(llama, sp, word):
    assert llama.encode(word) == sp.encode(word)


def _random_text(rng: random.Random) -> str:
    pools = [
        "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", ".,;:!?'\"()[]{}<>-_=+*/\\#@&%$^~`|",
        "      ", "\t\n\r", "éèêëàâäôöûüçñßøåæœ", "абвгдежзийклмнопрстуфхцчшщыьэюя", "αβγδεζηθλμπσω",
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年", "あいうえおかきくけこアイウエオ", "가나다라마바사아자차",
        "ابتثجحخدذرزسشصضطظعغفقكلمنهوي", "😀😂🥲🦙🎉🚀👍🏽❤️🇫🇷", "\u0301\u0308\u200d\u2581\ufeff\u00a0",
    ]
    out = []
    for _ in range(rng.randint(0, 40)):
        r = rng.random()
        if r < 0.85:
            out.append(rng.choice(rng.choice(pools)) * (1 if rng.random() < 0.9 else rng.randint(2, 5)))
        else:  # any scalar value except surrogates
            cp = rng.randint(1, 0x10FFFF)
            out.append(chr(cp) if not 0xD800 <= cp <= 0xDFFF else "x")
    return "".join(out)


def test_c_encode_equals_sentencepiece_on_random_unicode(llama, sp):
    rng = random.Random(20261121)
    v = T.load(fixture_path("tokenizer.model"))
    for _ in range(400):
        text = _random_text(rng)
        expected = sp.encode(text)
        assert llama.encode(text) == expected, repr(text)
        assert T.encode(v, text) == expected, repr(text)
        assert llama.decode(expected).decode("utf-8") == sp.decode(expected), repr(text)


# ---------------------------------------------------------------------------------------------
# llama2.c vocabulary (tok512.bin): against llama2.c's own encoder algorithm


def _llama2c_encode(path, text: str, bos: bool, eos: bool) -> list[int]:
    """run.c's encode(): dummy " " token, one token per UTF-8 character (else byte + 3), then merge the
    best-scoring adjacent pair (first one on ties) until none merges. Reads tok512.bin itself."""
    import struct

    data = path.read_bytes()
    vocab, scores, off = [], [], 4
    while off < len(data):
        score, n = struct.unpack_from("<fi", data, off)
        vocab.append(data[off + 8 : off + 8 + n])
        scores.append(score)
        off += 8 + n
    index = {p: i for i, p in enumerate(vocab)}
    tokens = [1] if bos else []
    if text:
        tokens.append(index[b" "])
    raw = text.encode()
    i = 0
    while i < len(raw):
        j = i + 1
        while j < len(raw) and (raw[j] & 0xC0) == 0x80 and j - i < 4:
            j += 1
        if raw[i:j] in index:
            tokens.append(index[raw[i:j]])
        else:
            tokens.extend(b + 3 for b in raw[i:j])
        i = j
    while True:
        best, best_i = -1e10, -1
        for k in range(len(tokens) - 1):
            merged = index.get(vocab[tokens[k]] + vocab[tokens[k + 1]])
            if merged is not None and scores[merged] > best:
                best, best_i, best_id = scores[merged], k, merged
        if best_i < 0:
            break
        tokens[best_i : best_i + 2] = [best_id]
    return tokens + ([2] if eos else [])


STORIES = [
    "Once upon a time",
    "Lily and Tom went to the park. They saw a big, red ball!",
    "The sun was hot.\nTim said: \"I want ice cream, Mom.\"",
    "One day, a little bird flew over the tall green trees and sang a happy song.",
]


@pytest.mark.parametrize("text", STORIES)
def test_tok512_encodes_like_llama2c(tok512, text):
    assert tok512.encode(text, bos=True) == _llama2c_encode(fixture_path("tok512.bin"), text, True, False)


def test_tok512_once_upon_a_time_is_four_word_pieces(tok512):
    ids = tok512.encode("Once upon a time", bos=True)
    assert ids[0] == tok512.lib.elk_tokenizer_bos(tok512.t) == 1
    assert [tok512.piece(p, i) for p, i in zip(ids, ids[1:])] == [b"Once", b" upon", b" a", b" time"]
    assert tok512.lib.elk_tokenizer_eos(tok512.t) == 2


# ---------------------------------------------------------------------------------------------
# Pieces, buffers, invalid input


def test_token_piece_turns_bytes_controls_and_spaces_into_text(llama):
    assert llama.piece(1, 15043) == b"Hello"  # "▁Hello" right after BOS: the dummy prefix goes
    assert llama.piece(15043, 3186) == b" world"
    assert llama.piece(15043, 3 + 0x0A) == b"\n"  # <0x0A>
    assert llama.piece(15043, 3 + 0xF0) == b"\xf0"  # a raw byte, not text
    assert llama.piece(15043, 1) == b"" and llama.piece(15043, 2) == b""
    assert llama.piece(15043, 0) == " \u2047 ".encode()  # <unk> shows as SentencePiece does
    with pytest.raises(CTokenizerError) as e:
        llama.piece(0, 32000)
    assert e.value.code == E["E_RANGE"]
    with pytest.raises(CTokenizerError) as e:
        llama.piece(0, 15043, cap=3)
    assert e.value.code == E["E_RANGE"]


def test_encode_reports_needed_size_when_the_buffer_is_small(llama, sp):
    text = "The quick brown fox jumps over the lazy dog."
    full = [1] + sp.encode(text)
    ids = llama.ffi.new("int32_t[]", 4)
    n = llama.ffi.new("int *")
    rc = llama.lib.elk_tokenize(llama.t, text.encode(), len(text), 1, 0, ids, 4, n)
    assert rc == E["E_RANGE"] and n[0] == len(full) and list(ids) == full[:4]


def test_invalid_utf8_becomes_byte_pieces_and_decodes_to_the_same_bytes(llama):
    raw = b"caf\xe9 \xff\xfe ok \xe6\x97"  # latin-1 byte, two never-valid bytes, a cut 3-byte sequence
    ids = llama.encode(raw)
    assert ids == T.encode(T.load(fixture_path("tokenizer.model")), raw)
    assert llama.decode(ids) == raw
    assert 3 + 0xFF in ids and 3 + 0xE9 in ids


def test_random_bytes_encode_like_the_reference_and_decode_to_the_same_bytes(llama):
    rng = random.Random(4242)
    v = T.load(fixture_path("tokenizer.model"))
    for _ in range(300):
        raw = bytes(rng.choice([rng.getrandbits(8), 0x20, 0x61, 0xE2, 0x96, 0x81, 0xC3, 0xA9])
                    for _ in range(rng.randint(0, 60)))
        ids = llama.encode(raw)
        assert ids == T.encode(v, raw), raw
        # decode drops only the dummy prefix; a typed "\u2581" comes back as a space, as in SentencePiece
        assert llama.decode([1] + ids) == raw.replace("\u2581".encode(), b" "), raw


# ---------------------------------------------------------------------------------------------
# Other SentencePiece settings: user-defined / control / unused pieces, no byte fallback, whitespace


def _train(tmp_path, name, **options):
    import io

    import sentencepiece as spm

    rng = random.Random(7)
    words = "the cat sat on a mat and dog ran far away into woods while birds sang über café naïve".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(2000)]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out, model_type="bpe",
                                   normalization_rule_name="identity", minloglevel=2, **options)
    path = tmp_path / f"{name}.model"
    path.write_bytes(out.getvalue())
    return path


VARIANT_TEXTS = ["the cat <tool>sat elk on a mat", "  the  cat   sat  ", "dog 日本 ran 😀 <ctl> x",
                 "cat café über<tool><tool>", "", "   ", "ZZZ QQ the", "\tthe\n", "that cat sat on the mat"]
VARIANTS = {
    "user_and_control": dict(vocab_size=360, byte_fallback=True, user_defined_symbols=["<tool>", "▁elk", "ca"],
                             control_symbols=["<ctl>"]),
    "no_byte_fallback": dict(vocab_size=120, byte_fallback=False),
    "remove_extra_whitespace": dict(vocab_size=360, byte_fallback=True, remove_extra_whitespaces=True),
    "no_dummy_prefix": dict(vocab_size=360, byte_fallback=True, add_dummy_prefix=False,
                            remove_extra_whitespaces=False),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_c_encode_equals_sentencepiece_for_vocab_variant(host_build, tmp_path, variant):
    import sentencepiece as spm

    path = _train(tmp_path, variant, **VARIANTS[variant])
    sp = spm.SentencePieceProcessor(model_file=str(path))
    v = T.load(path)
    c = CTokenizer(host_build / "libelk.so", T.encode_section(v))
    for text in VARIANT_TEXTS:
        assert c.encode(text) == sp.encode(text) == T.encode(v, text), repr(text)


def test_unused_pieces_are_merged_then_split_like_sentencepiece(host_build, tmp_path):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(_train(tmp_path, "base", **VARIANTS["user_and_control"]).read_bytes())
    for p in m.pieces:
        if p.piece in ("▁the", "▁ca", "at", "▁c", "▁s"):
            p.type = pb.ModelProto.SentencePiece.UNUSED
    path = tmp_path / "unused.model"
    path.write_bytes(m.SerializeToString())
    sp = spm.SentencePieceProcessor(model_file=str(path))
    v = T.load(path)
    c = CTokenizer(host_build / "libelk.so", T.encode_section(v))
    unused = {i for i, t in enumerate(v.types) if t == T.UNUSED}
    for text in VARIANT_TEXTS:
        ids = c.encode(text)
        assert ids == sp.encode(text), repr(text)
        assert not unused & set(ids)


def test_user_defined_piece_is_matched_whole_and_control_text_is_not_a_control(host_build, tmp_path):
    v = T.load(_train(tmp_path, "user", **VARIANTS["user_and_control"]))
    c = CTokenizer(host_build / "libelk.so", T.encode_section(v))
    ids = c.encode("x<tool>y <ctl>")
    assert v.piece_id("<tool>") in ids
    assert v.piece_id("<ctl>") not in ids and all(v.types[i] != T.CONTROL for i in ids)


# ---------------------------------------------------------------------------------------------
# Malformed sections


def _tok512_section() -> bytearray:
    return bytearray(T.encode_section(T.from_llama2c(fixture_path("tok512.bin"))))


def _put(b, off, fmt, value):
    import struct

    struct.pack_into(fmt, b, off, value)
    return b


MALFORMED = {
    "truncated_head": (lambda b: b[:31], "E_BOUNDS"),
    "truncated_entries": (lambda b: b[: 32 + 16 * 511], "E_BOUNDS"),
    "empty": (lambda b: b[:0], "E_BOUNDS"),
    "n_tokens_huge": (lambda b: _put(b, 0, "<I", 0xFFFFFFFF), "E_RANGE"),
    "n_tokens_past_section": (lambda b: _put(b, 0, "<I", 100000), "E_BOUNDS"),
    "n_tokens_zero": (lambda b: _put(b, 0, "<I", 0), "E_RANGE"),
    "kind_unknown": (lambda b: _put(b, 4, "<I", 3), "E_UNSUPPORTED"),  # 1 and 2 are known
    "offset_outside_blob": (lambda b: _put(b, 32 + 16 * 300, "<I", 0xFFFFFFF0), "E_BOUNDS"),
    "length_outside_blob": (lambda b: _put(b, 32 + 16 * 511 + 4, "<I", 4000), "E_BOUNDS"),
    "length_above_max_token_len": (lambda b: _put(b, 28, "<I", 2), "E_FORMAT"),
    "unknown_token_type": (lambda b: _put(b, 32 + 16 * 300 + 12, "<I", 7), "E_FORMAT"),
    "nan_score": (lambda b: _put(b, 32 + 16 * 300 + 8, "<f", float("nan")), "E_FORMAT"),
    "bos_out_of_range": (lambda b: _put(b, 12, "<i", 512), "E_FORMAT"),
    "unk_below_minus_one": (lambda b: _put(b, 20, "<i", -2), "E_FORMAT"),
    "unknown_flag": (lambda b: _put(b, 8, "<I", 1 << 11), "E_FORMAT"),
    "piece_not_utf8": (lambda b: b[:-1] + b"\xff", "E_FORMAT"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_c_init_rejects_malformed_section(host_build, name):
    damage, code = MALFORMED[name]
    section = bytes(damage(_tok512_section()))
    with pytest.raises(CTokenizerError) as e:
        CTokenizer(host_build / "libelk.so", section)
    assert e.value.code == E[code]
    with pytest.raises(T.TokenizerFormatError):  # the Python reader rejects the same bytes
        T.decode_section(section)


def test_c_init_rejects_a_small_arena_and_null_arguments(tok512):
    ffi, lib = tok512.ffi, tok512.lib
    out = ffi.new("elk_tokenizer **")
    small = ffi.new("uint8_t[]", 1024)
    assert lib.elk_tokenizer_init(out, tok512.section, len(tok512.section), small, 1024) == E["E_NOMEM"]
    assert lib.elk_tokenizer_init(out, tok512.section, len(tok512.section), ffi.NULL, 0) == E["E_INVAL"]
    n = ffi.new("int *")
    assert lib.elk_tokenize(tok512.t, ffi.NULL, 5, 0, 0, ffi.NULL, 0, n) == E["E_INVAL"]
    assert lib.elk_tokenize(tok512.t, ffi.NULL, 0, 1, 1, ffi.NULL, 0, n) == E["E_RANGE"] and n[0] == 2


# SentencePiece user-defined symbols longer than 256 bytes: the C tokenizer looked at most 256 bytes
# ahead for them, so it split such a symbol into characters where sentencepiece and the Python
# reference keep it whole. It now compares them one by one (up to 2048 normalized bytes, half its
# scratch); a longer one is refused by the writer, the Python reader and the C reader.
LONG_USER = "<tool_call:" + "abcdefghij" * 30 + ">"  # 312 bytes
LONGER_USER = "<doc>" + "▁the▁cat▁sat" * 110 + "</doc>"  # 1991 bytes normalized, spaces inside


def test_user_defined_pieces_longer_than_256_bytes_are_matched_whole_like_sentencepiece(host_build, tmp_path):
    import sentencepiece as spm

    path = _train(tmp_path, "long_user", vocab_size=360, byte_fallback=True,
                  user_defined_symbols=[LONG_USER, LONG_USER[:200], LONGER_USER, "<tool>"])
    sp = spm.SentencePieceProcessor(model_file=str(path))
    v = T.load(path)
    c = CTokenizer(host_build / "libelk.so", T.encode_section(v))
    longer = LONGER_USER.replace("▁", " ")
    rng = random.Random(11)
    words = ["the", "cat", LONG_USER, LONG_USER[:-1], LONG_USER[:250], longer, longer[:-3], "<tool>", "日本", "  "]
    texts = [LONG_USER, f"a{LONG_USER}b", LONG_USER * 3, LONG_USER[:-1], f"the cat {LONG_USER}<tool>{longer}x",
             f"{longer} {longer}", "the cat sat " * 400 + LONG_USER + longer + " mat" * 300, "x" * 5000 + longer]
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))) for _ in range(60)]
    ids_long = {v.piece_id(LONG_USER), v.piece_id(LONGER_USER)}
    for text in texts:
        want = sp.encode(text)
        assert c.encode(text) == want == T.encode(v, text), text[:80]
        assert (LONG_USER in text or longer in text) <= bool(ids_long & set(want))
        text_back = b"".join(c.piece(p, i, cap=4096) for p, i in zip([-1] + want, want)).decode()
        assert text_back == sp.decode(want)


def test_user_defined_piece_over_2048_bytes_is_refused_by_writer_and_readers(host_build, monkeypatch):
    v = T.from_llama2c(fixture_path("tok512.bin"))
    v.pieces[300], v.types[300] = "x" * 2049, T.USER_DEFINED
    with pytest.raises(T.TokenizerFormatError, match="user-defined token 300 .* is 2049 bytes; elk matches "
                                                     "user-defined pieces of at most 2048 bytes"):
        T.encode_section(v)
    monkeypatch.setattr(T, "MAX_USER_PIECE_BYTES", 4096)  # to write the section a reader must refuse
    section = T.encode_section(v)
    monkeypatch.undo()
    with pytest.raises(T.TokenizerFormatError, match="token 300: user-defined piece of 2049 bytes"):
        T.decode_section(section)
    with pytest.raises(CTokenizerError) as e:
        CTokenizer(host_build / "libelk.so", section)
    assert e.value.code == E["E_UNSUPPORTED"]
    v.pieces[300] = "x" * 2048  # the limit itself is matched whole
    c = CTokenizer(host_build / "libelk.so", T.encode_section(v))
    assert c.encode("a" + "x" * 2048 + "b") == T.encode(v, "a" + "x" * 2048 + "b")
    assert 300 in c.encode("x" * 2048)
