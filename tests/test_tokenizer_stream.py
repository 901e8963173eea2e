"""Streaming decode: ids fed one at a time to elk_token_stream_* (C) and elk.tokenizer_stream (Python)
give text that concatenates to the independent decode of the whole id sequence, `tokenizers`' decode
for tokenizer.json files built here and `sentencepiece`'s for the fixture tokenizer.model, and every
chunk is whole UTF-8. The sequences are the cases elk_token_piece (which sees only the previous id) gets
wrong: a generation that starts without BOS or after a special token (ChatML's
"<|im_start|>assistant\\n"), BOS or </s> in the middle, byte-fallback pieces of one character split
across tokens, invalid byte runs, a control token inside a byte run; plus thousands of random ones."""

import json
import random

import cffi
import pytest

from conftest import ROOT, fixture_path
from elk import cheader
from elk import tokenizer as T
from elk import tokenizer_stream as S
from test_tokenizer_conformance import _spm_json, train_gpt2

B = lambda *bs: [b + 3 for b in bs]  # noqa: E731 - Llama's byte pieces <0x00>.. start at id 3
HELLO, WORLD, SPACE_PIECE, NL = 15043, 3186, 29871, 13  # "▁Hello", "▁world", "▁", "<0x0A>"
IM_START, IM_END, TOOL = 32000, 32001, 32002


class CStream:
    """elk_token_stream_* of libelk over one TOKENIZER section (cffi ABI mode)."""

    NAMES = ["elk_tokenizer", "elk_tokenizer_arena_size", "elk_tokenizer_init", "elk_token_stream",
             "elk_token_stream_begin", "elk_token_stream_piece", "elk_token_stream_end", "elk_token_piece_ex"]

    def __init__(self, lib_dir, section: bytes):
        self.ffi = cffi.FFI()
        self.ffi.cdef(cheader.declarations(ROOT / "firmware/include/elk/elk.h", names=self.NAMES))
        self.lib = self.ffi.dlopen(str(lib_dir / "libelk.so"))
        self.sec = self.ffi.new("uint8_t[]", section)
        size = self.lib.elk_tokenizer_arena_size(self.sec, len(section))
        self.arena = self.ffi.new("uint8_t[]", size)
        out = self.ffi.new("elk_tokenizer **")
        assert self.lib.elk_tokenizer_init(out, self.sec, len(section), self.arena, size) == 0
        self.t = out[0]

    def chunks(self, ids, special=False, cap=512):
        s, buf, n = self.ffi.new("elk_token_stream *"), self.ffi.new("char[]", 512), self.ffi.new("int *")
        self.lib.elk_token_stream_begin(s)
        out = []
        for i in ids:
            assert self.lib.elk_token_stream_piece(self.t, s, i, 1 if special else 0, buf, cap, n) == 0
            out.append(self.ffi.buffer(buf, n[0])[:])
        assert self.lib.elk_token_stream_end(self.t, s, buf, cap, n) == 0
        out.append(self.ffi.buffer(buf, n[0])[:])
        return out

    def piece_by_piece(self, ids):
        """elk_token_piece with the previous id, as elk_gen_next streams (the old way)."""
        buf, n, out, prev = self.ffi.new("char[]", 512), self.ffi.new("int *"), b"", -1
        for i in ids:
            assert self.lib.elk_token_piece_ex(self.t, prev, i, 0, buf, 512, n) == 0
            out, prev = out + self.ffi.buffer(buf, n[0])[:], i
        return out.decode("utf-8", "replace")


def _streamed(chunks):
    return "".join(c.decode("utf-8") for c in chunks)  # each chunk alone is valid UTF-8 (else this raises)


# (what the case is, ids): the generation's ids, as the stream sees them from its first token
CASES = [
    ("starts without BOS", [HELLO, WORLD]),
    ("starts with BOS", [1, HELLO, WORLD]),
    ("starts after a special token", [IM_START, HELLO, WORLD]),
    ("ChatML assistant header, then the reply", [IM_START, 20255, NL, HELLO, WORLD, IM_END]),
    ("reply after the header's newline", [NL, HELLO, WORLD]),
    ("</s> first", [2, HELLO]),
    ("BOS in the middle", [HELLO, 1, WORLD]),
    ("special token in the middle", [HELLO, IM_END, WORLD]),
    ("a lone space piece first", [SPACE_PIECE, HELLO]),
    ("a character split across byte pieces", B(0xE6, 0x97, 0xA5) + [HELLO]),
    ("an emoji split across byte pieces", [HELLO] + B(0xF0, 0x9F, 0x98, 0x80)),
    ("a byte run that is not UTF-8", B(0xE6, 0x97) + [HELLO]),
    ("valid and invalid bytes in one run", B(0xE6, 0x97, 0xA5, 0xE6) + [WORLD]),
    ("a special token inside a byte run", B(0xE6) + [IM_END] + B(0x97, 0xA5)),
    ("a space byte first", B(0x20, 0x41)),
    ("a space byte, then a word", B(0x20) + [HELLO]),
]


def _hf_files(tmp_path):
    out = {}
    for kind in ("legacy", "first"):
        d = tmp_path / kind
        d.mkdir()
        (d / "tokenizer.json").write_text(_spm_json(kind), encoding="utf-8")
        out[kind] = d / "tokenizer.json"
    return out


def _random_ids(rng, extra):
    ids = []
    for _ in range(rng.randint(0, 14)):
        r = rng.random()
        if r < 0.4:
            ids += B(rng.choice([0xE6, 0x97, 0xA5, 0x20, 0x41, 0xF0, 0x9F, 0x98, 0x80, 0xC3, 0xA9, 0xFF]))
        elif r < 0.6:
            ids.append(rng.randrange(259, 32000))
        elif r < 0.75:
            ids.append(rng.choice([1, 2] + extra))
        else:
            ids.append(rng.choice([SPACE_PIECE, HELLO, WORLD, 10994, NL]))
    return ids


def test_stream_equals_tokenizers_decode_of_the_whole_sequence(tmp_path, host_build):
    from tokenizers import Tokenizer

    rng = random.Random(7)
    for kind, path in _hf_files(tmp_path).items():
        hf = Tokenizer.from_file(str(path))
        v = T.load(path)
        c = CStream(host_build, T.encode_section(v))
        wrong_before = 0
        sequences = [ids for _, ids in CASES] + [_random_ids(rng, [IM_START, IM_END, TOOL]) for _ in range(1500)]
        for ids in sequences:
            for special in (False, True):
                want = hf.decode(ids, skip_special_tokens=not special)
                d = S.StreamDecoder(v, special)
                assert "".join(d.feed(i) for i in ids) + d.end() == want, (kind, special, ids)
                assert _streamed(c.chunks(ids, special)) == want, (kind, special, ids)
            wrong_before += c.piece_by_piece(ids) != hf.decode(ids)
        assert wrong_before > 100, wrong_before  # what elk_token_piece streamed differed this often


def test_stream_equals_sentencepiece_decode_for_a_tokenizer_model(host_build):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(fixture_path("tokenizer.model")))
    v = T.load(fixture_path("tokenizer.model"))
    c = CStream(host_build, T.encode_section(v))
    rng = random.Random(8)
    cases = [ids for _, ids in CASES if max(ids) < 32000] + [_random_ids(rng, []) for _ in range(1500)]
    for ids in cases:
        want = sp.decode(ids)
        assert T.decode(v, ids) == want, ids
        assert _streamed(c.chunks(ids)) == want, ids


def test_named_cases_read_as_the_reference_says(tmp_path, host_build):
    """The cases by name, with what tokenizers gives spelled out (so a reader sees the rules)."""
    from tokenizers import Tokenizer

    path = _hf_files(tmp_path)["legacy"]
    hf, c = Tokenizer.from_file(str(path)), CStream(host_build, T.encode_section(T.load(path)))
    got = {name: _streamed(c.chunks(ids)) for name, ids in CASES}
    assert got == {name: hf.decode(ids) for name, ids in CASES}
    assert got["starts after a special token"] == "Hello world"  # elk_token_piece gave " Hello world"
    assert got["BOS in the middle"] == "Hello world"  # elk_token_piece gave "Helloworld"
    assert got["a character split across byte pieces"] == "日 Hello"
    assert got["a byte run that is not UTF-8"] == "\ufffd\ufffd Hello"  # one U+FFFD per byte
    assert got["valid and invalid bytes in one run"] == "\ufffd" * 4 + " world"  # tokenizers: the whole run
    assert got["a special token inside a byte run"] == "日"  # skipped before the bytes are joined


def test_byte_level_stream_equals_tokenizers_decode(tmp_path, host_build):
    from tokenizers import Tokenizer

    train_gpt2(tmp_path / "tokenizer.json")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    v = T.load(tmp_path / "tokenizer.json")
    c = CStream(host_build, T.encode_section(v))
    rng = random.Random(9)
    texts = ["日本語 😀 héllo", "a\u0301b", "x" * 300]
    for k in range(600):
        ids = hf.encode(rng.choice(texts) + str(k), add_special_tokens=False).ids
        cut = rng.randint(0, len(ids))  # a sequence cut anywhere: invalid UTF-8 at either end
        ids = ids[cut:] + [rng.randrange(len(v))] + ids[:cut]
        for special in (False, True):
            want = hf.decode(ids, skip_special_tokens=not special)
            assert T.decode(v, ids, special) == want, ids
            assert _streamed(c.chunks(ids, special)) == want, ids


def test_small_buffer_is_range_and_leaves_the_stream_as_it_was(tmp_path, host_build):
    path = _hf_files(tmp_path)["legacy"]
    c = CStream(host_build, T.encode_section(T.load(path)))
    ffi, lib = c.ffi, c.lib
    s, buf, n = ffi.new("elk_token_stream *"), ffi.new("char[]", 64), ffi.new("int *")
    lib.elk_token_stream_begin(s)
    for i in B(0xE6, 0x97):
        assert lib.elk_token_stream_piece(c.t, s, i, 0, buf, 0, n) == 0 and n[0] == 0  # held
    assert lib.elk_token_stream_piece(c.t, s, 0xA5 + 3, 0, buf, 0, n) == 0
    assert lib.elk_token_stream_piece(c.t, s, WORLD, 0, buf, 4, n) < 0 and n[0] == len("日 world".encode())
    assert lib.elk_token_stream_piece(c.t, s, WORLD, 0, buf, 64, n) == 0
    assert ffi.buffer(buf, n[0])[:].decode() == "日 world"
    assert lib.elk_token_stream_piece(c.t, s, 1 << 30, 0, buf, 64, n) < 0  # id out of range
    assert lib.elk_token_stream_end(c.t, ffi.NULL, buf, 64, n) < 0


def test_a_run_longer_than_the_hold_streams_its_characters_early(tmp_path, host_build):
    """200 bytes of valid characters as byte pieces: text comes out before the run ends (at most
    ELK_TOKEN_STREAM_HOLD = 64 bytes held) and the whole is still the reference."""
    from tokenizers import Tokenizer

    path = _hf_files(tmp_path)["legacy"]
    hf, c = Tokenizer.from_file(str(path)), CStream(host_build, T.encode_section(T.load(path)))
    ids = B(*"日本語".encode()) * 22 + [HELLO]
    chunks = c.chunks(ids)
    assert _streamed(chunks) == hf.decode(ids)
    assert sum(map(len, chunks[:-2])) >= len(ids) - 1 - 64  # all but the last HOLD bytes came early
