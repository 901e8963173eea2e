"""Added tokens with lstrip / rstrip / single_word (as Phi-3's chat markers carry rstrip) encode in the
Python reference and the C runtime exactly as the `tokenizers` library encodes them, on tokenizer.json
files built here: the SentencePiece-style legacy and Metaspace files of test_tokenizer_conformance and
the two byte-level files trained there, with the options set on their added tokens. The options travel
in the TOKENIZER section (flag ADDED_OPTIONS, docs/image-format.md); damaged option lists are refused by
C and Python, and a reader that predates the flag refuses the image in one line (unknown flag)."""

import json
import struct
import subprocess
import sys

import pytest

from conftest import ROOT, fixture_path, run_elk
from elk import spec
from elk import tokenizer as T
from test_tokenizer_conformance import EDGES, _spm_json, _texts, train_gpt2, train_llama3
from test_tokenizer_special import CTok

LSTRIP, RSTRIP, SINGLE = spec.TOKENIZER_ADDED_LSTRIP, spec.TOKENIZER_ADDED_RSTRIP, spec.TOKENIZER_ADDED_SINGLE_WORD
# text where each option decides: white space of every kind beside markers, markers inside words,
# next to word characters of other scripts, marks, digits, "_" and non-word symbols, markers back to back
AROUND = ["a <|im_end|> b", "a\n\n<|im_start|>  user", "x<|tool|>y", "x <|tool|> y", "_<|tool|>", "é<|tool|>",
          "<|tool|>²", "<|tool|>٣", "\u0301<|tool|>", "-<|tool|>-", " \u3000<|im_end|>\u3000 z", "<|im_end|><|im_end|> ",
          "<|im_start|> <|im_end|>", "\t<|tool|>\t", "x\u00a0<|im_end|>\u2028y", "<|tool|>", " <|tool|> ",
          "<|im_start|>assistant\n", "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n", "日<|tool|>本", "😀<|tool|>😀",
          "<|endoftext|> x <|endoftext|>", "a<|eot_id|> b", " <|begin_of_text|> ", "x <|end_of_text|>y"]
OPTION_SETS = [  # the options given to the added tokens in file order (cycled)
    (RSTRIP, LSTRIP | RSTRIP, SINGLE | LSTRIP, 0),
    (LSTRIP, SINGLE, RSTRIP | SINGLE, LSTRIP | RSTRIP | SINGLE),
]


def _set_options(doc, options):
    for k, t in enumerate(doc["added_tokens"]):
        bits = options[k % len(options)]
        t.update(lstrip=bool(bits & LSTRIP), rstrip=bool(bits & RSTRIP), single_word=bool(bits & SINGLE))
    return doc


def _spm(kind):
    def build(d, options):
        doc = json.loads(_spm_json(kind))
        (d / "tokenizer.json").write_text(json.dumps(_set_options(doc, options)), encoding="utf-8")
    return build


def _trained(train):
    def build(d, options):
        train(d / "tokenizer.json")
        doc = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
        (d / "tokenizer.json").write_text(json.dumps(_set_options(doc, options)), encoding="utf-8")
    return build


BUILDERS = {"spm-legacy": _spm("legacy"), "spm-metaspace": _spm("first"), "gpt2": _trained(train_gpt2),
            "llama3": _trained(train_llama3)}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_added_token_options_encode_like_tokenizers_in_python_and_c(name, tmp_path, host_build):
    from tokenizers import Tokenizer

    checked = differs_without = 0
    for k, options in enumerate(OPTION_SETS):
        d = tmp_path / str(k)
        d.mkdir()
        BUILDERS[name](d, options)
        hf = Tokenizer.from_file(str(d / "tokenizer.json"))
        plain = Tokenizer.from_str(hf.to_str())
        plain.encode_special_tokens = True
        v = T.load(d / "tokenizer.json")
        assert v.added_options and all(0 < o <= 7 for o in v.added_options.values())
        section = T.encode_section(v)
        assert T.decode_section(section).added_options == v.added_options
        c = CTok(host_build, section)
        bare = T.decode_section(section)
        bare.added_options = {}
        for text in AROUND + EDGES[:18] + _texts(11 + k, 150):
            for special, ref in ((True, hf), (False, plain)):
                want = ref.encode(text, add_special_tokens=False).ids
                assert T.encode(v, text, special=special) == want, (name, options, special, text)
                assert c.encode(text, special=special) == want, (name, options, special, text)
                checked += 1
                differs_without += T.encode(bare, text, special=special) != want
    # the options decide many of these texts: without them elk gives other ids (the test can fail)
    assert checked > 700 and differs_without > 20, (checked, differs_without)


def test_packed_image_runs_the_options_through_the_runtime(tmp_path, host_build):
    """elk pack of a Phi-3-like file (chat markers with rstrip) gives an image whose runtime tokenizes
    template text as tokenizers does."""
    import elk
    from elk.image import read_image
    from tokenizers import Tokenizer

    _spm("legacy")(tmp_path, (RSTRIP,))
    image = tmp_path / "m.elk"
    proc = subprocess.run([sys.executable, "-m", "elk.models.synth", "tiny", "--vocab", str(tmp_path / "tokenizer.json"),
                           "-o", str(image)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sec = read_image(image).tokenizer
    assert struct.unpack_from("<I", sec, 8)[0] & spec.TOKENIZER_FLAG_ADDED_OPTIONS
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    c = CTok(host_build, sec)
    text = "<|im_start|>  system\nBe brief.<|im_end|>\n\n<|im_start|>user\n Hi <|tool|>  x<|im_end|>\n"
    assert c.encode(text, special=True) == hf.encode(text, add_special_tokens=False).ids
    with elk.load(image) as m:  # user text: markers stay text, the non-special <|tool|> keeps its rstrip
        plain = Tokenizer.from_str(hf.to_str())
        plain.encode_special_tokens = True
        assert m.tokenize(text, bos=False) == plain.encode(text, add_special_tokens=False).ids


def _section_with_options():
    v = T.load(fixture_path("tok512.bin"))
    v.pieces[5], v.types[5] = "<|x|>", T.CONTROL
    v.added_options = {5: RSTRIP | LSTRIP}
    v.stop_ids = [5]
    return v, T.encode_section(v)


def test_damaged_option_lists_are_refused_by_c_and_python(host_build):
    v, good = _section_with_options()
    flags = struct.unpack_from("<I", good, 8)[0]
    assert flags & spec.TOKENIZER_FLAG_ADDED_OPTIONS and flags & spec.TOKENIZER_FLAG_STOP_IDS
    stop_tail = 4 + 4 * len(v.all_stop_ids())
    at = len(good) - stop_tail - 4  # the option count

    def put(offset, fmt, value):
        b = bytearray(good)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    bad = {
        "count 0": put(at, "<I", 0),
        "count too large": put(at, "<I", 1 << 20),
        "unknown option bit": put(at - 4, "<I", 8),
        "no option bits": put(at - 4, "<I", 0),
        "id out of range": put(at - 8, "<i", 512),
        "id of a normal piece": put(at - 8, "<i", 300),
        "flag off (the list reads as strings)": put(8, "<I", flags & ~spec.TOKENIZER_FLAG_ADDED_OPTIONS),
    }
    from cffi import FFI

    for name, sec in bad.items():
        if name.startswith("flag off"):
            # without the flag the list is just more blob: still a valid section, but pieces keep no options
            assert T.decode_section(sec).added_options == {}
            continue
        with pytest.raises(T.TokenizerFormatError):
            T.decode_section(sec)
        ffi = FFI()
        ffi.cdef("uint64_t elk_tokenizer_arena_size(const void *section, uint64_t size);")
        lib = ffi.dlopen(str(host_build / "libelk.so"))
        assert lib.elk_tokenizer_arena_size(sec, len(sec)) == 0, name


def test_an_older_reader_refuses_the_options_flag_in_one_line(tmp_path):
    """A reader that does not know bit 10 (here: elk's own check with the bit taken out of the known set,
    as every runtime before it had it) refuses the section as an unknown flag, never matching markers
    without the white space tokenizers takes into them."""
    _, sec = _section_with_options()
    code = ("import sys; from elk import tokenizer as T, tokenizer_section as S\n"
            "for k in T.KNOWN_FLAGS: T.KNOWN_FLAGS[k] &= ~T.FLAG_ADDED_OPTIONS\n"
            "S.KNOWN_FLAGS = T.KNOWN_FLAGS\n"
            "S.decode_section(open(sys.argv[1], 'rb').read())\n")
    (tmp_path / "sec.bin").write_bytes(sec)
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "sec.bin")], cwd=ROOT / "host",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "flags 0x" in r.stderr and "unknown bits" in r.stderr, r.stderr


@pytest.mark.parametrize("change, message", [
    (lambda doc: doc["added_tokens"][-1].update(content="\u2581the", rstrip=True),
     "is spelled like vocabulary piece"),
])
def test_options_elk_cannot_apply_are_refused_in_one_line(tmp_path, change, message):
    doc = json.loads(_spm_json("first"))
    change(doc)
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    r = run_elk("pack", fixture_path("stories260K.bin"), "--tokenizer", tmp_path / "tokenizer.json",
                "-o", tmp_path / "m.elk")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


def test_word_table_header_is_what_its_generator_writes():
    """firmware/src/tokenizer/uword.h (C's \\w) is generated from the same Unicode data the Python
    reference reads back; a hand edit or a stale header fails here."""
    from elk import tokenizer_added

    assert tokenizer_added.HEADER.read_text(encoding="utf-8") == tokenizer_added.c_header()
    assert tokenizer_added.is_word(ord("é")) and tokenizer_added.is_word(ord("_")) and tokenizer_added.is_word(0x0301)
    assert not tokenizer_added.is_word(ord("²")) and not tokenizer_added.is_word(ord("-"))


def test_legacy_file_with_added_tokens_matched_both_before_and_after_the_normalizer(tmp_path, host_build):
    """Llama 2's legacy normalizer with non-special added tokens of both kinds (refused before): those
    marked normalized: false are split off the raw text (the RAW option), those marked true are matched
    in the normalized text as "▁<x>"; with options on the raw ones. Python and C equal tokenizers."""
    from tokenizers import Tokenizer

    doc = json.loads(_spm_json("legacy"))
    n = len(doc["model"]["vocab"])
    tool = doc["added_tokens"][-1]
    doc["added_tokens"] += [{**tool, "id": n + 3, "content": "<x>", "normalized": True},
                            {**tool, "id": n + 4, "content": "<y>", "normalized": False, "rstrip": True},
                            {**tool, "id": n + 5, "content": "<|tool|>y", "normalized": True}]
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    v = T.load(tmp_path / "tokenizer.json")
    assert not v.flags & T.FLAG_USER_SPLIT_RAW
    assert v.added_options == {n + 2: spec.TOKENIZER_ADDED_RAW, n + 4: spec.TOKENIZER_ADDED_RAW | RSTRIP}
    assert v.pieces[n + 3] == "\u2581<x>" and v.pieces[n + 2] == "<|tool|>"
    c = CTok(host_build, T.encode_section(v))
    texts = ["<x>", "a <x> b", "a<x>", "<|tool|>x", "a <|tool|> <x> <y>  z", "<y>\n\nq", " <|tool|>y", "<x><y><x>",
             "a<|tool|>y b", "<|im_start|>user\n<x> <y> hi<|im_end|>"] + AROUND
    rng = __import__("random").Random(3)
    parts = ["<x>", "<y>", "<|tool|>", "<|im_end|>", " ", "  ", "\n", "a", "y", "日本", "<", ">"]
    texts += ["".join(rng.choice(parts) for _ in range(rng.randint(0, 12))) for _ in range(400)]
    plain = Tokenizer.from_str(hf.to_str())
    plain.encode_special_tokens = True
    for text in texts:
        for special, ref in ((True, hf), (False, plain)):
            want = ref.encode(text, add_special_tokens=False).ids
            assert T.encode(v, text, special=special) == want, (special, text)
            assert c.encode(text, special=special) == want, (special, text)


def test_special_token_options_of_a_tokenizer_json_beside_a_tokenizer_model(tmp_path, host_build):
    """A folder with tokenizer.model and a tokenizer.json whose special tokens carry options (as Phi-3's
    and TinyLlama-chat-like folders ship both): elk reads the vocabulary from tokenizer.model and keeps
    the special tokens' options, so template text encodes as tokenizers does (texts that do not start
    with white space or "▁": there the Metaspace prefix rule and SentencePiece's differ, options aside).
    A non-special token with an option is still refused in one line there."""
    import shutil

    from tokenizers import Tokenizer

    shutil.copy(fixture_path("tokenizer.model"), tmp_path / "tokenizer.model")
    doc = json.loads(_spm_json("first"))
    doc["added_tokens"] = [t for t in doc["added_tokens"] if t["special"]]
    for t in doc["added_tokens"]:
        t.update({"<|im_start|>": {"rstrip": True}, "<|im_end|>": {"lstrip": True, "single_word": True},
                  "</s>": {"lstrip": True, "rstrip": True}}.get(t["content"], {}))
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    v = T.load(tmp_path)
    assert v.added_options == {2: LSTRIP | RSTRIP, 32000: RSTRIP, 32001: LSTRIP | SINGLE}
    c = CTok(host_build, T.encode_section(v))
    texts = [t for t in AROUND + _texts(21, 300) if t and not t[0].isspace() and t[0] != "\u2581"]
    for text in texts:
        want = hf.encode(text, add_special_tokens=False).ids
        assert T.encode(v, text, special=True) == want, text
        assert c.encode(text, special=True) == want, text
    doc["added_tokens"].append({**doc["added_tokens"][-1], "id": 32002, "content": "<|tool|>", "special": False,
                                "rstrip": True})
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(T.TokenizerFormatError, match="added token '<|tool|>' has rstrip: true"):
        T.load(tmp_path)
