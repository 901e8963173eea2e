"""elk.tokenizer: vocabulary import (SentencePiece, llama2.c, GGUF, tokenizers JSON), the TOKENIZER
section layout of docs/image-format.md, and the Python reference encoder against sentencepiece."""

import json
import struct

import pytest
import sentencepiece as spm

from conftest import fixture_path
from elk import spec
from elk import tokenizer as T
from elk.errors import ElkError, FormatError

TEXTS = [
    "Hello world",
    "Once upon a time, there was a little girl named Lily.",
    "  two leading, two trailing  ",
    "tabs\tand\nnew\n\nlines\r\n",
    "Café naïve façade — Ærø; Привет мир; 日本語のテキスト; 한국어",
    "emoji 😀🎉 and 🧑‍🚀 astronaut",
    "def f(x):\n    return x ** 2  # square\n",
    "",
    " ",
    "literal \u2581 lower block and <s> and <0x0A> spelled out",
]


@pytest.fixture(scope="module")
def llama_vocab():
    return T.load(fixture_path("tokenizer.model"))


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=str(fixture_path("tokenizer.model")))


def test_sentencepiece_import_reads_llama_vocab_and_flags(llama_vocab):
    v = llama_vocab
    assert len(v) == 32000
    assert (v.bos_id, v.eos_id, v.unk_id, v.pad_id) == (1, 2, 0, -1)
    assert v.pieces[:3] == ["<unk>", "<s>", "</s>"]
    assert v.types[:3] == [T.UNKNOWN, T.CONTROL, T.CONTROL]
    assert v.pieces[3 + 0x0A] == "<0x0A>" and v.types[3 + 0x0A] == T.BYTE
    assert v.flags == spec.TOKENIZER_FLAG_BYTE_FALLBACK | spec.TOKENIZER_FLAG_ADD_DUMMY_PREFIX
    assert v.pieces[v.piece_id("▁the")] == "▁the"


@pytest.mark.parametrize("text", TEXTS)
def test_reference_encoder_equals_sentencepiece(llama_vocab, sp, text):
    assert T.encode(llama_vocab, text) == sp.encode(text)
    assert T.encode(llama_vocab, text, bos=True, eos=True) == [1] + sp.encode(text) + [2]


@pytest.mark.parametrize("text", TEXTS)
def test_reference_decode_equals_sentencepiece_decode(llama_vocab, sp, text):
    ids = sp.encode(text)
    assert T.decode(llama_vocab, [1] + ids) == sp.decode(ids)


def test_reference_encoder_turns_invalid_utf8_into_byte_pieces(llama_vocab):
    ids = T.encode(llama_vocab, b"ok\xff\xc3")
    assert [llama_vocab.pieces[i] for i in ids[-2:]] == ["<0xFF>", "<0xC3>"]
    assert b"".join(T.token_bytes(llama_vocab, 0, i) for i in ids).endswith(b"\xff\xc3")


def test_section_round_trips_every_field(llama_vocab):
    v = llama_vocab
    b = T.encode_section(v)
    n, kind, flags, bos, eos, unk, pad, max_len = struct.unpack_from("<IIIiiiiI", b)
    assert (n, kind, flags, bos, eos, unk, pad) == (32000, 1, v.flags, 1, 2, 0, -1)
    assert max_len == max(len(p.encode()) for p in v.pieces)
    # entry 29871 is "▁": offset/length point at its UTF-8 bytes in the blob after the table
    off, length, score, kind_i = struct.unpack_from("<IIfI", b, 32 + 16 * 29871)
    blob = b[32 + 16 * 32000 :]
    assert blob[off : off + length].decode() == v.pieces[29871] == "▁"
    assert kind_i == T.NORMAL and score == pytest.approx(v.scores[29871])
    back = T.decode_section(b)
    assert back.pieces == v.pieces and back.types == v.types and back.flags == v.flags
    assert back.scores == [struct.unpack("<f", struct.pack("<f", s))[0] for s in v.scores]


def test_gguf_vocab_gives_the_same_section_as_tokenizer_model(llama_vocab):
    import gguf

    g = T.from_gguf(gguf.GGUFReader(str(fixture_path("ggml-vocab-llama-spm.gguf"))))
    assert g.pieces == llama_vocab.pieces and g.types == llama_vocab.types
    assert T.encode_section(g) == T.encode_section(llama_vocab)
    assert T.encode_section(T.load(fixture_path("ggml-vocab-llama-spm.gguf"))) == T.encode_section(llama_vocab)


def test_llama2c_tokenizer_bin_matches_sentencepiece_vocab(llama_vocab):
    v = T.load(fixture_path("tokenizer.bin"))
    assert v.pieces == llama_vocab.pieces
    assert v.types == llama_vocab.types
    assert v.scores == pytest.approx(llama_vocab.scores)
    assert T.encode(v, "Hello world, 日本") == T.encode(llama_vocab, "Hello world, 日本")


def test_llama2c_tok512_reads_space_as_lower_block():
    v = T.from_llama2c(fixture_path("tok512.bin"))
    assert len(v) == 512 and v.pieces[:3] == ["<unk>", "<s>", "</s>"]
    assert v.types[3:259] == [T.BYTE] * 256
    assert not any(" " in p for p in v.pieces)
    assert [v.pieces[i] for i in T.encode(v, "Once upon a time")] == ["▁Once", "▁upon", "▁a", "▁time"]


def spm_merges(v) -> list:
    """The BPE merges of a SentencePiece vocabulary as Hugging Face's converter orders them: by the
    merged piece's score, each piece's splits into two vocabulary pieces by their ids."""
    index = {p: i for i, p in enumerate(v.pieces)}
    merges = []
    for i in sorted(range(len(v)), key=lambda i: -v.scores[i]):
        piece = v.pieces[i]
        if v.types[i] != T.NORMAL:
            continue
        pairs = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in index and piece[k:] in index]
        merges += sorted(pairs, key=lambda ab: (index[ab[0]], index[ab[1]]))
    return merges


def _llama_tokenizer_json(v: T.Vocab) -> dict:
    """A tokenizers JSON as Hugging Face writes it for Llama: BPE vocab + merges ordered by the merged
    piece's SentencePiece score, the legacy Prepend/Replace normalizer, special added tokens."""
    index = {p: i for i, p in enumerate(v.pieces)}
    merges = spm_merges(v)
    return {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": v.pieces[i], "special": True, "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False} for i in (0, 1, 2)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": index, "merges": [f"{a} {b}" for a, b in merges]},
    }


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, llama_vocab):
    d = tmp_path_factory.mktemp("hf")
    (d / "tokenizer.json").write_text(json.dumps(_llama_tokenizer_json(llama_vocab)), encoding="utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "chat_template": "{{ messages }}"}))
    return d


def test_hf_tokenizer_json_import_encodes_like_sentencepiece(hf_dir, llama_vocab, sp):
    v = T.load(hf_dir)  # a directory: finds tokenizer.json
    assert v.pieces == llama_vocab.pieces and v.types == llama_vocab.types
    # the legacy Prepend normalizer also prefixes text after a special token (only template text has one)
    assert (v.bos_id, v.eos_id, v.unk_id, v.flags) == (1, 2, 0, llama_vocab.flags | spec.TOKENIZER_FLAG_PREFIX_SEGMENTS)
    assert v.chat_template == "{{ messages }}"
    for text in TEXTS:
        assert T.encode(v, text) == sp.encode(text), text


def test_hf_tokenizer_json_import_agrees_with_the_tokenizers_library(hf_dir):
    import tokenizers  # a test dependency (pyproject [test]); a skip here would hide a regression
    hf = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    v = T.from_hf_tokenizer_json(hf_dir / "tokenizer.json")
    for text in TEXTS:
        # HF matches added special tokens ("<s>") inside user text; SentencePiece and elk never
        # produce control tokens from text. HF also prepends "▁" to "". Both cases are left out.
        if text and "<s>" not in text:
            assert T.encode(v, text) == hf.encode(text, add_special_tokens=False).ids, text


@pytest.mark.parametrize("content, message", [
    (b"", "too short"),
    (b"\x00\x00\x00\x00garbage", "not a llama2.c tokenizer"),
    (b"\x07\x00\x00\x00\x00\x00\x00\x00\xff\x00\x00\x00", "bad length"),
    (b'{"model": {"type": "Unigram", "vocab": {}}}', "Unigram"),
    (b"GGUF\x03\x00\x00\x00", "GGUF"),
])
def test_load_rejects_malformed_files_with_one_clear_error(tmp_path, content, message):
    path = tmp_path / "tokenizer.bin"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=message):
        T.load(path)


def test_load_rejects_a_directory_without_tokenizer_and_a_missing_file(tmp_path):
    with pytest.raises(ElkError, match="no tokenizer.model"):
        T.load(tmp_path)
    with pytest.raises(ElkError, match="cannot read"):
        T.load(tmp_path / "absent.model")


def _section(v):
    return bytearray(T.encode_section(v))


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:20], "shorter than its 32-byte head"),
    (lambda b: b[: 32 + 16 * 100], "does not fit"),
    (lambda b: b.__setitem__(slice(0, 4), struct.pack("<I", 1 << 30)) or b, "does not fit"),
    (lambda b: b.__setitem__(slice(4, 8), struct.pack("<I", 3)) or b, "kind 3"),  # 1 and 2 are known
    (lambda b: b.__setitem__(slice(32 + 16 * 5, 32 + 16 * 5 + 4), struct.pack("<I", 1 << 31)) or b, "outside"),
    (lambda b: b.__setitem__(slice(32 + 16 * 5 + 12, 32 + 16 * 5 + 16), struct.pack("<I", 9)) or b, "bad type"),
    (lambda b: b.__setitem__(slice(12, 16), struct.pack("<i", 600)) or b, "bos_id"),
    (lambda b: b.__setitem__(slice(8, 12), struct.pack("<I", 0x800)) or b, "unknown bits"),
])
def test_decode_section_rejects_damaged_sections(damage, message):
    v = T.from_llama2c(fixture_path("tok512.bin"))
    with pytest.raises(T.TokenizerFormatError, match=message):
        T.decode_section(bytes(damage(_section(v))))


def test_decode_section_rejects_a_piece_that_is_not_utf8():
    v = T.Vocab(["<unk>", "<s>", "</s>", "ab"], [0.0] * 4, [T.UNKNOWN, T.CONTROL, T.CONTROL, T.NORMAL])
    b = bytearray(T.encode_section(v))
    b[-1] = 0xFF  # last byte of the blob: "ab" -> "a\xff"
    with pytest.raises(T.TokenizerFormatError, match="not UTF-8"):
        T.decode_section(bytes(b))


def test_load_recognises_tokenizers_by_content_not_extension(tmp_path):
    """A llama2.c tokenizer saved as *.model and a SentencePiece model saved as *.bin still load."""
    import shutil

    from elk import tokenizer as tk

    l2c, sp = tmp_path / "tok512.model", tmp_path / "spm.bin"
    shutil.copy(fixture_path("tok512.bin"), l2c)
    shutil.copy(fixture_path("tokenizer.model"), sp)
    assert tk.load(l2c).pieces == tk.load(fixture_path("tok512.bin")).pieces
    assert tk.load(sp).pieces == tk.load(fixture_path("tokenizer.model")).pieces
