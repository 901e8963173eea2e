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
           "added_tokens": [{"id": i, "content": c, "special": True} for c, i in added]}
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
