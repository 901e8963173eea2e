"""`python -m elk.models.synth ... --vocab <byte-level tokenizer.json> -o x.gguf` writes the vocabulary as
llama.cpp writes SmolLM's: tokenizer.ggml.model "gpt2", the merges in rank order, pre-tokenizer "smollm"
(digits split off) or "gpt-2", eos and the turn-end stop id, the chat template. The reference is a
vocabulary trained by the `tokenizers` library in the test; `elk pack` of the GGUF must give its ids."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, run_elk
from elk import spec
from elk import tokenizer as T
from test_tokenizer_bytelevel import _texts, _train

TEMPLATE = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="module", params=[True, False], ids=["digits", "gpt2"])
def synth_gguf(request, tmp_path_factory):
    """(tokenizers reference, tokenizer.json folder, GGUF written by the synth CLI, digits flag)."""
    d = tmp_path_factory.mktemp("synth_bl")
    hf = _train(d / "tokenizer.json", digits=request.param)
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "chat_template": TEMPLATE}))
    out = d / "x.gguf"
    proc = subprocess.run([sys.executable, "-m", "elk.models.synth", "tiny", "--vocab", str(d / "tokenizer.json"),
                           "-o", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "host")})
    assert proc.returncode == 0, proc.stderr
    return hf, d, out, request.param


def _field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if len(f.types) > 1 or f.types[0].name == "STRING":  # arrays and strings
        vals = [bytes(f.parts[i]).decode() if f.types[-1].name == "STRING" else f.parts[i].tolist()[0]
                for i in f.data]
        return vals[0] if f.types[0].name == "STRING" else vals
    return f.parts[f.data[0]].tolist()[0]


def test_synth_writes_a_byte_level_vocabulary_as_a_gpt2_tokenizer(synth_gguf):
    import gguf

    hf, d, out, digits = synth_gguf
    r = gguf.GGUFReader(str(out))
    doc = json.loads((d / "tokenizer.json").read_text())
    merges = [" ".join(m) if isinstance(m, list) else m for m in doc["model"]["merges"]]
    assert _field(r, "tokenizer.ggml.model") == "gpt2"
    assert _field(r, "tokenizer.ggml.pre") == ("smollm" if digits else "gpt-2")
    assert _field(r, "tokenizer.ggml.merges") == merges  # every merge, in the trainer's rank order
    assert _field(r, "tokenizer.ggml.tokens") == [hf.id_to_token(i) for i in range(hf.get_vocab_size())]
    assert "tokenizer.ggml.scores" not in r.fields  # gpt2 vocabularies rank by merges, not scores
    types = _field(r, "tokenizer.ggml.token_type")
    assert types[hf.token_to_id("<|im_end|>")] == 3 and types[hf.token_to_id("<|tool|>")] == 4
    assert types[hf.token_to_id("Ġthe")] == 1
    assert _field(r, "tokenizer.ggml.eos_token_id") == hf.token_to_id("<|endoftext|>")
    assert _field(r, "tokenizer.ggml.eot_token_id") == hf.token_to_id("<|im_end|>")  # the template's turn end
    assert _field(r, "tokenizer.ggml.add_bos_token") is False and "tokenizer.ggml.bos_token_id" not in r.fields
    assert _field(r, "tokenizer.chat_template") == TEMPLATE


def test_synth_gguf_reads_back_as_the_same_vocabulary(synth_gguf):
    _, d, out, _ = synth_gguf
    a, b = T.load(d / "tokenizer.json"), T.load(out)
    assert b.kind == spec.TOKENIZER_KIND_BYTE_BPE
    assert T.encode_section(b) == T.encode_section(a)  # pieces, ranks, splits, types, ids, stop list


def test_synth_gguf_packs_into_an_image_with_the_reference_token_ids(synth_gguf, tmp_path, host_build):
    import elk

    hf, _, out, _ = synth_gguf
    image = tmp_path / "x.elk"
    proc = run_elk("pack", out, "-o", image)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(run_elk("info", image, "--json").stdout)
    assert info["tokenizer"]["stop_ids"] == [hf.token_to_id("<|endoftext|>"), hf.token_to_id("<|im_end|>")]
    assert info["metadata"]["chat.template"] == "chatml"
    with elk.load(str(image)) as m:
        for text in _texts(200, 5) + ["hello world 1234 it's", "日本語 テスト\n\n  x", ""]:
            want = hf.encode(text, add_special_tokens=False).ids
            if hf.token_to_id("<|im_start|>") in want or hf.token_to_id("<|im_end|>") in want:
                continue  # elk.load().tokenize is user text: special markers stay text (tested elsewhere)
            assert m.tokenize(text, bos=False) == want, text
