"""A special added token spelled exactly like a vocabulary piece at another id. The `tokenizers` library
gives such a token the vocabulary piece's id: text matching it becomes that id, and decoding skips that
id unless asked for special tokens; the token's own declared id does not exist there. elk used to keep
its declared id as the control piece and decode the vocabulary id as text. Now the vocabulary piece is
the control piece and the declared row an empty control piece, in the Python reference and in the C
tokenizer, for SentencePiece-style and byte-level tokenizer.json files."""

import json

import pytest

from conftest import fixture_path
from elk import tokenizer as T
from test_tokenizer_bytelevel import _texts, _train
from test_tokenizer_special import VOCAB, CTok, _tokenizer_json


def _add(doc, text, i):
    doc["added_tokens"].append({"id": i, "content": text, "special": True, "single_word": False, "lstrip": False,
                                "rstrip": False, "normalized": False})


def _spm_case(tmp_path):
    v = T.from_llama2c(fixture_path("tok512.bin"))
    word = max((p for p in v.pieces if p.isascii() and p.isalpha()), key=len)  # a piece without "▁"
    doc = _tokenizer_json(v)
    _add(doc, word, VOCAB)
    return doc, word, v.piece_id(word), ["Once upon a time", f"x{word}y", f"Once upon a {word}", f"{word}{word}",
                                         f"un{word}ed and <|im_start|>{word}<|im_end|>", word]


def _byte_level_case(tmp_path):
    _train(tmp_path / "base.json")
    doc = json.loads((tmp_path / "base.json").read_text())
    word = max((p for p in doc["model"]["vocab"] if p.isascii() and p.isalpha()), key=len)
    _add(doc, word, 1 + max([*doc["model"]["vocab"].values()] + [t["id"] for t in doc["added_tokens"]]))
    return doc, word, doc["model"]["vocab"][word], [f"x {word} y", f"{word}{word}", f"un{word}ed 12{word}",
                                                     f"<|im_start|>{word}<|im_end|>", word] + \
        [t.replace("<|tool|>", word) for t in _texts(100, 3)]


@pytest.mark.parametrize("case", [_spm_case, _byte_level_case], ids=["sentencepiece", "byte-level"])
def test_special_token_spelled_like_a_vocab_piece_encodes_and_decodes_like_tokenizers(tmp_path, host_build, case):
    from tokenizers import Tokenizer

    doc, word, vocab_id, texts = case(tmp_path)
    declared = doc["added_tokens"][-1]["id"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.token_to_id(word) == vocab_id != declared and hf.id_to_token(declared) is None
    v = T.load(tmp_path / "tokenizer.json")
    assert (v.pieces[vocab_id], v.types[vocab_id], v.pieces[declared], v.types[declared]) == \
        (word, T.CONTROL, "", T.CONTROL)
    c = CTok(host_build, T.encode_section(v))
    for text in texts:
        want = hf.encode(text, add_special_tokens=False).ids
        assert T.encode(v, text, special=True) == want, text
        assert c.encode(text, special=True) == want, text
        assert (vocab_id in want) == (word in text), text
        for special in (False, True):
            shown = hf.decode(want, skip_special_tokens=not special)
            assert T.decode(v, want, special=special) == shown, (text, special)
            assert c.decode(want, special=special) == shown, (text, special)
        # user text: the special token's text stays text (never the control id), and reads back
        user = c.encode(text)
        assert user == T.encode(v, text) and vocab_id not in user and c.decode(user) == text, text
    # the declared id: tokenizers has no such token and decodes it to nothing; so does elk
    assert c.decode([declared], special=True) == T.decode(v, [declared], special=True) == ""
