"""tokenizer.json ids must be 0 or more: a negative id in the model's vocab or in added_tokens used to
index the piece list from its end and silently replace the last piece (here "b" became "ab"); it is now
one line naming the token, from the library and from `elk pack --tokenizer`."""

import json

import pytest

from conftest import fixture_path, run_elk
from elk import tokenizer as T

VOCAB = {"<unk>": 0, "a": 1, "b": 2}


def _write(tmp_path, vocab, added=()):
    doc = {"model": {"type": "BPE", "vocab": vocab, "merges": ["a b"], "unk_token": "<unk>"},
           "added_tokens": [{"id": i, "content": c, "special": True, "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": False} for c, i in added]}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("vocab, added, message", [
    ({**VOCAB, "ab": -1}, (), "token 'ab' has id -1 in the vocab; ids must be 0 or more"),
    (VOCAB, (("<|end|>", -3),), "token '<|end|>' has id -3 in added_tokens; ids must be 0 or more"),
])
def test_hf_tokenizer_json_negative_id_is_one_line_naming_the_token(tmp_path, vocab, added, message):
    path = _write(tmp_path, vocab, added)
    with pytest.raises(T.TokenizerFormatError) as e:
        T.load(path)
    assert str(e.value) == f"{path}: {message}"
    r = run_elk("pack", fixture_path("stories260K.bin"), "--tokenizer", path, "-o", tmp_path / "m.elk")
    assert r.returncode == 2 and r.stderr == f"elk: error: {path}: {message}\n", r.stderr


def test_hf_tokenizer_json_with_valid_ids_still_loads(tmp_path):
    v = T.load(_write(tmp_path, {**VOCAB, "ab": 3}, (("<|end|>", 4),)))
    assert v.pieces == ["<unk>", "a", "b", "ab", "<|end|>"]
    assert T.encode(v, "ab") == [3]


# ---------------------------------------------------------------------------------------------
# Duplicate ids: tokenizers keeps one of two vocab pieces on one id at random (a hash map) and
# renumbers added tokens whose declared id it cannot keep (in file order, from the end of the vocab).
# Either way the file and the library disagree on what a row of the model means: refused in one line
# naming the file, the id and both pieces. Before, the later piece silently replaced the earlier one.

DUPLICATES = [
    ({**VOCAB, "ab": 3, "c": 3}, (), "the vocab gives id 3 to both 'ab' and 'c'"),
    ({**VOCAB, "ab": 3}, (("<x>", 2),), "added token '<x>' has id 2, which the vocab gives to 'b'"),
    ({**VOCAB, "ab": 3}, (("<x>", 4), ("<y>", 4)), "added tokens '<x>' and '<y>' both have id 4"),
    ({**VOCAB, "ab": 3}, (("<x>", 4), ("<x>", 5)), "added_tokens lists '<x>' twice (ids 4 and 5)"),
    ({**VOCAB, "ab": 3}, (("<y>", 5), ("<x>", 4)),
     "added token '<y>' has id 5, but tokenizers numbers it 4 (in file order, each new added token takes the next id "
     "after the vocab's 4 pieces and the added tokens before it)"),
]


@pytest.mark.parametrize("vocab, added, message", DUPLICATES)
def test_tokenizer_json_with_duplicate_ids_is_refused_naming_the_id_and_both_pieces(tmp_path, vocab, added, message):
    import tokenizers

    path = _write(tmp_path, vocab, added)
    hf = tokenizers.Tokenizer.from_file(str(path))
    # the oracle does not keep the file's numbering: a declared id holds another token (or none), or
    # two pieces share one id and id_to_token can answer only one of them
    ids = hf.get_vocab(with_added_tokens=True)
    assert any(hf.id_to_token(i) != c for c, i in added) or len(set(ids.values())) < len(ids)
    with pytest.raises(T.TokenizerFormatError) as e:
        T.load(path)
    assert str(e.value) == f"{path}: {message}"
    r = run_elk("pack", fixture_path("stories260K.bin"), "--tokenizer", path, "-o", tmp_path / "m.elk")
    assert r.returncode == 2 and r.stderr == f"elk: error: {path}: {message}\n", r.stderr
    assert not (tmp_path / "m.elk").exists()


def test_added_tokens_beside_a_sentencepiece_model_are_checked_the_same_way(tmp_path):
    """A folder with tokenizer.model and a tokenizer.json whose added token sits on another piece's id:
    the same one line, naming tokenizer.json (it used to replace piece 3 of the model silently)."""
    (tmp_path / "tokenizer.model").symlink_to(fixture_path("tokenizer.model"))
    added = [{"id": 0, "content": "<unk>", "special": True}, {"id": 3, "content": "<|im_end|>", "special": True}]
    (tmp_path / "tokenizer.json").write_text(json.dumps({"added_tokens": added}))
    with pytest.raises(T.TokenizerFormatError) as e:
        T.load(tmp_path)
    assert str(e.value) == f"{tmp_path / 'tokenizer.json'}: added token '<|im_end|>' has id 3, which the vocab gives to '<0x00>'"
    added[1]["id"] = 32000  # where tokenizers puts it: accepted
    (tmp_path / "tokenizer.json").write_text(json.dumps({"added_tokens": added}))
    v = T.load(tmp_path)
    assert v.pieces[3] == "<0x00>" and v.pieces[32000] == "<|im_end|>" and v.types[32000] == T.CONTROL
    # a special token spelled like a vocabulary piece: that piece is the special token (tokenizers' id),
    # its declared row an empty control piece; spelled like a byte piece: refused
    added.append({"id": 32001, "content": "▁the", "special": True})
    (tmp_path / "tokenizer.json").write_text(json.dumps({"added_tokens": added}))
    v = T.load(tmp_path)
    the = v.piece_id("▁the")
    assert the < 32000 and v.types[the] == T.CONTROL and (v.pieces[32001], v.types[32001]) == ("", T.CONTROL)
    assert T.encode(v, "the▁the", special=True)[-1] == the and the not in T.encode(v, "the the")
    added[2]["content"] = "<0x0A>"
    (tmp_path / "tokenizer.json").write_text(json.dumps({"added_tokens": added}))
    with pytest.raises(T.TokenizerFormatError, match="special token '<0x0A>' is the byte piece 13; elk cannot use"):
        T.load(tmp_path)
