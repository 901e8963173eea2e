"""The demo model that ships in models/demo (for `elk demo`): a small llama2.c v0 checkpoint plus its
SentencePiece vocabulary. Its tokenizer must behave like sentencepiece in the C runtime, and its greedy
text must be readable words of its corpus, the same from the C runtime and the numpy reference."""

import importlib.util
import re
import struct

import pytest
import sentencepiece as spm

from conftest import ROOT
from elk import tokenizer as T

DEMO = ROOT / "models" / "demo"


def _corpus_words() -> tuple[set, set]:
    """Words and adjacent word pairs of the training corpus (train.py's defaults: 16000 stories, seed 1)."""
    spec_ = importlib.util.spec_from_file_location("make_corpus", DEMO / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    words = re.findall(r"[A-Za-z]+", mod.make_corpus(16000, seed=1))
    return set(words), set(zip(words, words[1:]))


def test_demo_checkpoint_is_a_small_llama2c_v0_file():
    data = (DEMO / "demo.bin").read_bytes()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack_from("<7i", data)
    assert len(data) < 2 * 1024 * 1024
    assert vocab == 512 and heads % kv_heads == 0 and kv_heads < heads and dim % 32 == 0 and hidden % 32 == 0
    head_dim = dim // heads
    n_floats = (vocab * dim + layers * (2 * dim + dim * dim * 2 + 2 * dim * kv_heads * head_dim + 3 * dim * hidden)
                + dim + seq_len * head_dim)  # tied output: no classifier; freq_cis real + imag
    assert len(data) == 28 + 4 * n_floats


def test_demo_tokenizer_is_byte_fallback_bpe_and_c_matches_sentencepiece(host_build):
    from test_tokenizer_c import CTokenizer

    sp = spm.SentencePieceProcessor(model_file=str(DEMO / "tokenizer.model"))
    v = T.load(DEMO / "tokenizer.model")
    assert len(v) == 512 and v.byte_fallback and v.add_dummy_prefix and v.bos_id == 1 and v.eos_id == 2
    c = CTokenizer(host_build / "libelk.so", T.encode_section(v))
    for text in ["Once upon a time, there was a little girl named Lily.", '"Oh no!" said Tom.\n\nThe end.',
                 "Ünïcödé 日本 😀 is not in the corpus", "  spaces   and\ttabs  "]:
        assert c.encode(text, bos=True) == [1] + sp.encode(text), text


@pytest.fixture(scope="module")
def demo_image(host_build, tmp_path_factory):
    from elk.convert.pack import pack

    out = tmp_path_factory.mktemp("demo") / "demo.elk"
    pack(str(DEMO / "demo.bin"), str(out), tokenizer=str(DEMO / "tokenizer.model"))
    return out


def test_demo_model_greedy_text_is_readable_corpus_words(demo_image):
    import elk

    with elk.load(demo_image, threads=1) as m:
        text = "".join(m.generate("Once upon a time", max_tokens=100, temperature=0))
    words = re.findall(r"[A-Za-z]+", text)
    known, pairs = _corpus_words()
    assert len(words) >= 30 and len(set(words)) >= 15, text  # not one word over and over
    unknown = [w for w in words if w not in known]
    assert not unknown, f"not corpus words: {unknown} in {text!r}"
    odd = [p for p in zip(words, words[1:]) if p not in pairs]
    assert len(odd) <= len(words) // 20, f"word pairs the corpus never has: {odd} in {text!r}"
    assert re.search(r"[.!?]", text), text  # sentences end


def test_demo_model_c_runtime_and_numpy_reference_pick_the_same_tokens(demo_image):
    import elk
    from elk.reference import Reference

    with elk.load(demo_image, threads=1) as m:
        prompt = m.tokenize("Once upon a time", bos=True)
        c_ids = [t for t, _ in m.generate_tokens(prompt, max_tokens=40, temperature=0)]
    ref_ids = Reference(demo_image).greedy(prompt, 40)
    assert c_ids == ref_ids[: len(c_ids)] and len(c_ids) == 40
