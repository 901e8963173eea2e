"""Conformance sweep: elk's tokenizers against the `tokenizers` library on tokenizer.json files built
here (nothing downloaded): two SentencePiece-style files from the fixture tokenizer.model (the legacy
Llama 2 form with a Prepend("▁") normalizer, and the Metaspace prepend_scheme "first" form transformers
writes now), each with ChatML special tokens and a non-special added token, and two byte-level BPE
files trained here (GPT-2's split with digits apart, and Llama 3's split with ignore_merges). Seeded
strings mix scripts, emoji, combining marks, white-space runs, digits, control characters and
special-token text, plus strings at the 32 KiB prompt limit. Each goes through the Python reference,
the C runtime on a packed image (elk.runtime.Model.tokenize; template text through elk_tokenize_ex
with ELK_TOKENIZE_SPECIAL) and tokenizers:
- user text (what a chat user typed) equals tokenizers with encode_special_tokens (special-token text
  stays text; non-special added tokens are matched whole);
- template text (ELK_TOKENIZE_SPECIAL) equals tokenizers' default encode;
- decoding equals tokenizers' decode, with and without special tokens.
The sweep found: Metaspace adds no "▁" to text that starts with a space; the legacy normalizer puts one
after every special token; added tokens are split off the raw text before that; "<unk>" is a special
token in template text; the Python decoder dropped the dummy-prefix space from more than the first
piece. All four are fixed (docs/tokenizer.md, "Hugging Face tokenizer.json")."""

import functools
import json
import random
import subprocess
import sys

import pytest

from conftest import ROOT, fixture_path, run_elk
from elk import tokenizer as T
from elk.image import read_image
from test_tokenizer_bytelevel import _train as train_gpt2
from test_tokenizer_llama3 import _train as train_llama3
from test_tokenizer_special import CTok, _tokenizer_json
from test_tokenizer_vocab import _llama_tokenizer_json

SCRIPTS = ["Hello world", "Привет мир", "Γειά σου", "日本語のテキスト", "中文字符", "한국어", "مرحبا بالعالم", "שלום",
           "नमस्ते", "สวัสดี", "café naïve façade", "straße über", "ǅemal", "ﬁne ﬂow"]
EMOJI = ["😀", "🎉", "🧑‍🚀", "👍🏽", "🇫🇷", "❤️", "👨‍👩‍👧‍👦", "🏳️‍🌈", "©", "™"]
COMBINING = ["e\u0301", "a\u0300\u0301\u0302", "n\u0303", "\u0301", "Z\u0335\u0327\u0361", "ก\u0e31\u0e49"]
SPACES = [" ", "  ", " " * 17, "\t", "\t\t ", "\n", "\n\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2009",
          " \u00a0 ", "\x0b", "\x0c"]
DIGITS = ["0", "42", "12345", "3.14159", "1,000,000", "٣٤٥", "１２３", "²³", "Ⅻ", "½", "007", "2024-11-21"]
CONTROLS = ["\x00", "\x01", "\x1b[31m", "\x7f", "\x85", "\u200b", "\ufeff", "\u2028", "\u200d", "\u202e", "\ufffd"]
SPECIALS = ["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|tool|>", "<|im_", "im_end|>",
            "<|begin_of_text|>", "<|eot_id|>", "<0x0A>", "\u2581", "Ġ", "<|"]
WORDS = ["the", "The", "don't", "it's", "WE'RE", "they'll", "I'M", "o'clock", "x", "function", "return", "self.x",
         "https://example.com/a?b=c&d=e", "foo_bar", "camelCase", "--flag", "...", "!!!", "??", "(a)", "[b]", "{c}",
         "#include", "a+b=c", "\\n", "'", '"', "`code`", "$", "%", "&", "*", "@user", "~", "^", "|"]
KINDS = [SCRIPTS, EMOJI, COMBINING, SPACES, DIGITS, CONTROLS, SPECIALS, WORDS]
EDGES = ["", " ", "  ", "\u2581", " leading", "\u2581x", "trailing ", "<|tool|>x", "x<|tool|> y", "<|im_start|> x",
         "<|im_end|>", "<unk>a", "a<unk>", "</s> x", "x <s> y", "<s>", "a" * 3000, " " * 3000, "日本" * 700,
         "\n" * 100 + "x", "😀" * 300, "1" * 100, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"]
FRAME = 32768  # the longest prompt a board takes (docs/protocol.md)


def _text(rng, n):
    return "".join(rng.choice(rng.choice(KINDS)) + (" " if rng.random() < 0.3 else "") for _ in range(n))


def _texts(seed, n):
    rng = random.Random(seed)
    return [_text(rng, rng.randint(0, 24)) for _ in range(n)]


def _frame_text(seed):
    """A mixed string of exactly FRAME UTF-8 bytes (cut at a character boundary, then padded)."""
    rng = random.Random(seed)
    out = ""
    while len(out.encode()) < FRAME:
        out += _text(rng, 40)
    data = out.encode()[:FRAME].decode("utf-8", "ignore")
    return data + "x" * (FRAME - len(data.encode()))


def _added(doc, n):
    """ChatML markers (special) and <|tool|> (not special) after the vocabulary's last id n - 1."""
    for k, (text, special) in enumerate((("<|im_start|>", True), ("<|im_end|>", True), ("<|tool|>", False))):
        doc["added_tokens"].append({"id": n + k, "content": text, "special": special, "single_word": False,
                                    "lstrip": False, "rstrip": False, "normalized": False})
    return doc


@functools.lru_cache(maxsize=None)
def _spm_json(kind: str) -> str:
    """The SentencePiece-style tokenizer.json text of `kind` ("legacy" or "first"), built once: the
    merge list of 32000 pieces takes a second."""
    v = T.load(fixture_path("tokenizer.model"))
    if kind == "legacy":
        doc = _added(_llama_tokenizer_json(v), len(v))
        doc["decoder"] = _tokenizer_json(v)["decoder"]  # Llama 2's: "▁" -> " ", bytes, strip one leading space
        return json.dumps(doc)
    doc = _tokenizer_json(v, added=False)
    doc["added_tokens"] = [{"id": i, "content": v.pieces[i], "special": True, "single_word": False, "lstrip": False,
                            "rstrip": False, "normalized": False} for i in (0, 1, 2)]
    return json.dumps(_added(doc, len(v)))


def _legacy(d):
    (d / "tokenizer.json").write_text(_spm_json("legacy"), encoding="utf-8")


def _first(d):
    (d / "tokenizer.json").write_text(_spm_json("first"), encoding="utf-8")


def _gpt2(d):
    train_gpt2(d / "tokenizer.json")


def _llama3(d):
    train_llama3(d / "tokenizer.json")


BUILDERS = {"spm-legacy": _legacy, "spm-metaspace": _first, "gpt2-digits": _gpt2, "llama3": _llama3}


@pytest.fixture(scope="module", params=list(BUILDERS))
def case(request, tmp_path_factory, host_build):
    """(name, tokenizers.Tokenizer, the same with encode_special_tokens, elk Vocab, packed image path)."""
    from tokenizers import Tokenizer

    d = tmp_path_factory.mktemp(request.param)
    BUILDERS[request.param](d)
    hf = Tokenizer.from_file(str(d / "tokenizer.json"))
    plain = Tokenizer.from_str(hf.to_str())
    plain.encode_special_tokens = True
    image = d / "m.elk"
    proc = subprocess.run([sys.executable, "-m", "elk.models.synth", "tiny", "--vocab", str(d / "tokenizer.json"),
                           "-o", str(image)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return request.param, hf, plain, T.load(d / "tokenizer.json"), image


def _specials(hf):
    return {i for i, t in hf.get_added_tokens_decoder().items() if t.special}


def test_user_text_encodes_like_tokenizers_in_python_and_the_c_runtime(case):
    import elk

    name, hf, plain, v, image = case
    texts = EDGES + _texts(1, 500) + [_frame_text(2)]
    with elk.load(image) as m:
        for text in texts:
            want = plain.encode(text, add_special_tokens=False).ids
            assert T.encode(v, text) == want, (name, text[:80])
            assert m.tokenize(text, bos=False) == want, (name, text[:80])
            # user text never yields a special token, and the runtime reads it back
            assert not _specials(hf) & set(want), (name, text[:80])
            if v.unk_id not in want:
                assert m.detokenize(want) == plain.decode(want) == T.decode(v, want), (name, text[:80])


def test_template_text_encodes_and_decodes_like_tokenizers(case, host_build):
    name, hf, _, v, image = case
    c = CTok(host_build, read_image(image).tokenizer)
    for text in EDGES + _texts(3, 500) + [_frame_text(4)]:
        want = hf.encode(text, add_special_tokens=False).ids
        assert T.encode(v, text, special=True) == want, (name, text[:80])
        assert c.encode(text, special=True) == want, (name, text[:80])
        if v.unk_id not in want:  # <unk> reads " ⁇ " in elk (as SentencePiece decodes it)
            assert T.decode(v, want) == hf.decode(want), (name, text[:80])
            assert T.decode(v, want, special=True) == hf.decode(want, skip_special_tokens=False), (name, text[:80])


def _always(d):
    """Metaspace prepend_scheme "always": a "▁" after every added token too."""
    _first(d)
    doc = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    doc["pre_tokenizer"]["prepend_scheme"] = "always"
    (d / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")


def _legacy_normalized(d):
    """Legacy normalizer with the non-special added token marked normalized: true (transformers' default
    for add_tokens): tokenizers matches it as the normalizer spells it, "▁<|tool|>"."""
    _legacy(d)
    doc = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    doc["added_tokens"][-1]["normalized"] = True
    (d / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")


def test_spm_tokenizer_json_dummy_prefix_rules_follow_tokenizers(tmp_path, host_build):
    """The prefix rules the sweep found, each on its own (these failed before the fix): Metaspace keeps
    a leading space as the only "▁"; the legacy normalizer prefixes the text after a special token; a
    non-special added token is split off before the text is prefixed, unless it is matched in the
    normalized text; "always" prefixes after every added token."""
    from tokenizers import Tokenizer

    for build, texts in ((_first, [" leading", "  two", "\u2581x", "<|tool|>x", "a<|tool|> b"]),
                         (_legacy, ["<|im_start|>user", "<|im_end|> x", "<|tool|>x", "a<|tool|>b"]),
                         (_always, ["<|im_start|>user", "<|im_end|> x", "<|tool|>x", " a<|tool|>b"]),
                         (_legacy_normalized, ["<|tool|>", "a <|tool|> b", "a<|tool|>", "\t<|tool|>x"])):
        d = tmp_path / build.__name__
        d.mkdir()
        build(d)
        hf = Tokenizer.from_file(str(d / "tokenizer.json"))
        v = T.load(d / "tokenizer.json")
        c = CTok(host_build, T.encode_section(v))
        for text in texts:
            want = hf.encode(text, add_special_tokens=False).ids
            assert T.encode(v, text, special=True) == c.encode(text, special=True) == want, (build.__name__, text)
            assert T.decode(v, want) == hf.decode(want), (build.__name__, text)
            if v.types[want[0]] != T.CONTROL:  # elk_token_piece drops the prefix after BOS only (docs)
                assert c.decode(want) == hf.decode(want), (build.__name__, text)


def _edit(change):
    def build(d):
        _first(d)
        doc = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
        change(doc)
        (d / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    return build


@pytest.mark.parametrize("change, message", [
    (lambda doc: doc.update(normalizer={"type": "NFKC"}), 'normalizer {"type": "NFKC"} is not supported'),
    (lambda doc: doc["pre_tokenizer"].pop("split"), "Metaspace pre-tokenizer with split"),
    (lambda doc: doc.update(normalizer=_llama_normalizer(), pre_tokenizer=None) or
     doc["added_tokens"][-2].update(normalized=True), "a special added token is matched after the normalizer"),
    (lambda doc: doc.update(normalizer=_llama_normalizer(), pre_tokenizer=None) or
     doc["added_tokens"][-1].update(normalized=True, rstrip=True),
     "added token '<|tool|>' has rstrip: true and is matched in the normalized text"),
])
def test_spm_tokenizer_json_variants_elk_cannot_run_are_refused_in_one_line(tmp_path, change, message):
    """Each of these gave ids that differ from tokenizers before (an NFKC normalizer was ignored, Metaspace's
    split merged across spaces, added tokens were matched in the wrong text). lstrip / rstrip /
    single_word are supported on tokens matched in the raw text (test_tokenizer_added_options.py), not
    on those the legacy normalizer matches in the normalized text."""
    _edit(change)(tmp_path)
    r = run_elk("pack", fixture_path("stories260K.bin"), "--tokenizer", tmp_path / "tokenizer.json",
                "-o", tmp_path / "m.elk")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert r.stderr.startswith(f"elk: error: {tmp_path / 'tokenizer.json'}: ") and not (tmp_path / "m.elk").exists()


def _llama_normalizer():
    from elk.convert.hf_tokenizer import LEGACY_NORMALIZER

    return LEGACY_NORMALIZER


def test_python_decode_drops_only_the_first_dummy_prefix_like_sentencepiece():
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(fixture_path("tokenizer.model")))
    v = T.load(fixture_path("tokenizer.model"))
    for text in [" *", "  x", " x   ", "\u3000 a"]:
        ids = sp.encode(text)
        for head in ([], [1], [2], [1, 1]):
            assert T.decode(v, head + ids) == sp.decode(head + ids), (head, text)


def test_packing_a_spm_tokenizer_json_records_its_prefix_flags(tmp_path):
    """Legacy and Metaspace files import with different prefix flags; other vocabularies keep none."""
    flags = {}
    for build in (_legacy, _first):
        d = tmp_path / build.__name__
        d.mkdir()
        build(d)
        flags[build.__name__] = T.load(d / "tokenizer.json").flags
    assert flags["_legacy"] & T.FLAG_PREFIX_SEGMENTS and not flags["_legacy"] & T.FLAG_PREFIX_UNLESS_SPACE
    assert flags["_first"] & T.FLAG_PREFIX_UNLESS_SPACE and not flags["_first"] & T.FLAG_PREFIX_SEGMENTS
    assert flags["_first"] & T.FLAG_USER_SPLIT_RAW and flags["_legacy"] & T.FLAG_USER_SPLIT_RAW
    r = run_elk("pack", fixture_path("stories260K.bin"), "--tokenizer", fixture_path("tok512.bin"),
                "-o", tmp_path / "plain.elk")
    assert r.returncode == 0, r.stderr
    # a llama2.c vocabulary keeps SentencePiece's rules (and its section its old bytes)
    assert T.decode_section(read_image(tmp_path / "plain.elk").tokenizer).flags == T.LLAMA_FLAGS


def test_no_prefix_template_text_still_prefixes_after_each_special_token_of_a_legacy_file(tmp_path, host_build):
    """ELK_TOKENIZE_NO_PREFIX (the board's ChatML wrapper sends template text with it) drops the dummy
    prefix at the start of the text only: with the legacy normalizer the text after each marker gets its
    "▁" as tokenizers gives it, so the wrapper's system block and tail encode as tokenizers does."""
    from tokenizers import Tokenizer

    _legacy(tmp_path)
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    v = T.load(tmp_path / "tokenizer.json")
    c = CTok(host_build, T.encode_section(v))
    for text in ["<|im_start|>system\nBe brief.<|im_end|>\n", "<|im_end|>\n<|im_start|>assistant\n"]:
        want = hf.encode(text, add_special_tokens=False).ids
        assert T.encode(v, text, special=True, prefix=False) == c.encode(text, special=True, prefix=False) == want
