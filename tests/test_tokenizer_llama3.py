"""Byte-level BPE with Llama 3's split pattern (Llama-3.2-1B's tokenizer.json: Split(Regex, Isolated) then
ByteLevel(use_regex=False), ignore_merges, <|begin_of_text|> from the post-processor; GGUF pre
"llama-bpe"). A vocabulary trained in the test by the `tokenizers` library is the reference: its
pre-tokenizer, the C scanner (elk_bl_next_llama3), the Python one, and the C and Python encoders must
agree on random text full of the pattern's edges; the GGUF round trip keeps the section's bytes."""

import dataclasses
import json
import random

import pytest

from conftest import run_elk
from elk import spec
from elk import tokenizer as T
from elk.convert import bytelevel as BL
from elk.convert.hf_tokenizer import LLAMA3_PATTERN
from test_tokenizer_special import CTok, _model_files

QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
FLAGS = spec.TOKENIZER_FLAG_LLAMA3_SPLIT | spec.TOKENIZER_FLAG_IGNORE_MERGES
WORDS = ("the quick brown fox it's WE'RE They'Ll don't I'M café naïve 日本語 テスト über straße Привет мир "
         "12345 2024 3.14 hello_world print(x) return value\r\n").split()
# the pattern's edges: contractions in any case (and U+017F, an 's' under case folding), digit runs of
# every length and script, a non-letter before letters, newlines and CRLF after punctuation and inside
# white space, runs of spaces before words and at the end, other white space (NBSP, NEL, ideographic)
ALPHABET = (list("abcXYZé日本ж1234567890 '!?.,()-_\n\r\t") +
            ["'s", "'S", "'t", "'RE", "'rE", "'ve", "'Ve", "'m", "'M", "'ll", "'LL", "'lL", "'d", "'D", "'ſ",
             "'x", "  ", "   ", "\r\n", "\n\n", " \n ", ".\r\n", "١٢٣", "Ⅻ", "½", "\u00a0", "\u0085", "\u3000",
             "😀", "e\u0301", "hello", " world", "123456789", "\x0b", "\x0c"])


def _train(path):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=900, show_progress=False,
                                  special_tokens=["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    rng = random.Random(3)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(20)) + rng.choice(["\n", "\n\n", "  ", ". ", "!\r\n"])
              for _ in range(3000)]
    tok.train_from_iterator(corpus, trainer)
    bot = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bot)])])
    tok.save(str(path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tokenizers import Tokenizer

    d = tmp_path_factory.mktemp("l3")
    _train(d / "tokenizer.json")
    # a piece no merge makes: only ignore_merges gives " qqzzy" as one token
    doc = json.loads((d / "tokenizer.json").read_text())
    doc["model"]["vocab"]["Ġqqzzy"] = max(max(doc["model"]["vocab"].values()),
                                          max(t["id"] for t in doc["added_tokens"])) + 1
    (d / "tokenizer.json").write_text(json.dumps(doc))
    return Tokenizer.from_file(str(d / "tokenizer.json")), T.load(d / "tokenizer.json"), d


def _texts(n, seed):
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40))) for _ in range(n)]


class CSplit:
    """firmware's elk_bl_next_llama3 (an internal symbol of libelk.so) over one byte string."""

    def __init__(self, lib_dir):
        import cffi

        self.ffi = cffi.FFI()
        self.ffi.cdef("uint64_t elk_bl_next_llama3(const uint8_t *p, uint64_t n, uint64_t i);")
        self.lib = self.ffi.dlopen(str(lib_dir / "libelk.so"))

    def split(self, data: bytes) -> list[bytes]:
        buf, out, i = self.ffi.new("uint8_t[]", data), [], 0
        while i < len(data):
            j = self.lib.elk_bl_next_llama3(buf, len(data), i)
            assert i < j <= len(data)
            out.append(data[i:j])
            i = j
        return out


def test_tokenizers_writes_llama3_pre_tokenizer_as_the_importer_expects(trained):
    _, v, d = trained
    doc = json.loads((d / "tokenizer.json").read_text())
    split, bl = doc["pre_tokenizer"]["pretokenizers"]
    assert split == {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False}
    assert (bl["type"], bl["use_regex"], bl["add_prefix_space"]) == ("ByteLevel", False, False)
    assert doc["model"]["ignore_merges"] is True
    assert (v.kind, v.flags) == (spec.TOKENIZER_KIND_BYTE_BPE, FLAGS)
    assert v.bos_id == v.pieces.index("<|begin_of_text|>")  # from the post-processor's template


def test_c_and_python_split_like_tokenizers(trained, host_build):
    hf, _, _ = trained
    c = CSplit(host_build)
    texts = _texts(700, 1) + ["it's IT'S 'ſ 'Ll", "x  \n\n  y  ", "a\r\n\r\n b", "1234567 ١٢٣٤", "(hello) .\n\nok",
                              "   ", " \n", "\t\tword", "wait...\r\n", "'", "a'", "''ll"]
    for text in texts:
        want = [BL.to_bytes(p) for p, _ in hf.pre_tokenizer.pre_tokenize_str(text)]
        assert BL.pre_tokenize(text.encode(), False, True) == want, text
        assert c.split(text.encode()) == want, text
    rng = random.Random(5)
    for _ in range(300):  # invalid UTF-8 (no tokenizers reference): C and Python must still agree
        data = b"".join(rng.choice([bytes([rng.getrandbits(8)]), b" ", b"\n", b"'S", b"ab", "é".encode()[:1], b"9"])
                        for _ in range(rng.randint(1, 30)))
        assert c.split(data) == BL.pre_tokenize(data, False, True), data


def test_c_and_python_encode_like_tokenizers(trained, host_build):
    hf, v, _ = trained
    c = CTok(host_build, T.encode_section(v))
    for text in _texts(600, 2) + ["x" * 3000, " 1" * 700, "\n" * 2000 + "end", "'S" * 500]:
        want = hf.encode(text, add_special_tokens=False).ids
        assert c.encode(text) == want, text
        assert T.encode(v, text, bos=False) == want, text
        assert c.decode(want) == text
    assert c.encode("a b", bos=True) == hf.encode("a b").ids  # <|begin_of_text|> first, as the template


def test_ignore_merges_takes_a_pre_token_that_is_a_piece_whole(trained, host_build):
    hf, v, _ = trained
    whole = v.pieces.index("Ġqqzzy")
    assert hf.encode(" qqzzy", add_special_tokens=False).ids == [whole]
    assert CTok(host_build, T.encode_section(v)).encode(" qqzzy") == [whole]
    assert T.encode(v, " qqzzy", bos=False) == [whole]
    merged = dataclasses.replace(v, flags=spec.TOKENIZER_FLAG_LLAMA3_SPLIT)
    assert len(T.encode(merged, " qqzzy", bos=False)) > 1  # without the flag BPE cannot reach the piece


def test_gguf_llama_bpe_round_trip_keeps_the_section(trained, tmp_path, host_build):
    """synth's writer puts pre "llama-bpe" (llama.cpp's name of this pattern) in the GGUF; reading it
    back gives the same TOKENIZER section, and its ids are tokenizers' ids."""
    import gguf

    from elk.models.synth import write_gguf_vocab

    hf, v, _ = trained
    w = gguf.GGUFWriter(str(tmp_path / "l3.gguf"), "llama")
    write_gguf_vocab(w, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    r = gguf.GGUFReader(str(tmp_path / "l3.gguf"))
    assert r.fields["tokenizer.ggml.pre"].contents() == "llama-bpe"
    g = T.load(tmp_path / "l3.gguf")
    assert (g.flags, g.bos_id) == (FLAGS, v.bos_id)
    assert T.encode_section(g) == T.encode_section(v)
    c = CTok(host_build, T.encode_section(g))
    for text in _texts(200, 4):
        assert c.encode(text) == hf.encode(text, add_special_tokens=False).ids, text


def test_llama3_shaped_folder_packs_and_the_image_encodes_like_tokenizers(trained, tmp_path, host_build):
    import shutil

    import elk

    hf, v, d = trained
    folder = tmp_path / "hf"
    _model_files(folder, vocab=len(v), target=0)
    shutil.copy(d / "tokenizer.json", folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|begin_of_text|>",
                                                              "eos_token": "<|end_of_text|>"}))
    r = run_elk("pack", folder, "-o", tmp_path / "l3.elk")
    assert r.returncode == 0, r.stderr
    m = elk.load(tmp_path / "l3.elk")
    for text in ["Hello, it's 2024!\r\n\r\n  I'M here  ", "日本語 12345 'LL"] + _texts(20, 6):
        assert m.tokenize(text) == hf.encode(text).ids, text


@pytest.mark.parametrize("change, message", [
    (lambda p: p[0]["pattern"].update(Regex=QWEN2_PATTERN), "Qwen2"),                  # Qwen2's digits
    (lambda p: p[0].update(behavior="Contiguous"), "pre-tokenizer"),
    (lambda p: p[1].update(use_regex=True), "pre-tokenizer"),                            # GPT-2's split after
    (lambda p: p[1].update(add_prefix_space=True), "pre-tokenizer"),
    (lambda p: p.reverse(), "pre-tokenizer"),
])
def test_llama3_variants_elk_cannot_run_are_refused(trained, tmp_path, change, message):
    _, _, d = trained
    doc = json.loads((d / "tokenizer.json").read_text())
    change(doc["pre_tokenizer"]["pretokenizers"])
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    with pytest.raises(T.TokenizerFormatError, match=message) as e:
        T.load(tmp_path / "tokenizer.json")
    assert "\n" not in str(e.value)


def test_removed_inverted_split_is_the_same_pre_tokenizer(trained, tmp_path):
    """Split(..., Removed, invert=True) keeps exactly the matches (some Llama 3 derivatives ship it)."""
    from tokenizers import Tokenizer

    hf, v, d = trained
    doc = json.loads((d / "tokenizer.json").read_text())
    doc["pre_tokenizer"]["pretokenizers"][0].update(behavior="Removed", invert=True)
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    other = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert T.load(tmp_path / "tokenizer.json").flags == FLAGS
    for text in _texts(100, 7):
        assert other.encode(text).ids == hf.encode(text).ids, text


def test_section_with_an_unknown_byte_level_flag_is_refused(trained, host_build):
    """Bits 5 and 6 are known to kind 2; bit 7 is not, in Python and in C (ELK_E_FORMAT)."""
    _, v, _ = trained
    sec = bytearray(T.encode_section(v))
    assert sec[8] & FLAGS == FLAGS
    sec[8] |= 1 << 7
    with pytest.raises(T.TokenizerFormatError, match="unknown bits"):
        T.decode_section(bytes(sec))
    c = CTok(host_build, T.encode_section(v))
    buf = c.ffi.new("uint8_t[]", bytes(sec))
    assert c.lib.elk_tokenizer_arena_size(buf, len(sec)) == 0
    arena, out = c.ffi.new("uint8_t[]", 1 << 20), c.ffi.new("elk_tokenizer **")
    assert c.lib.elk_tokenizer_init(out, buf, len(sec), arena, 1 << 20) == spec.ERRORS["E_FORMAT"][0]
