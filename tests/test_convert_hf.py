"""Hugging Face Llama folders, written here from the stories260K weights the way HF stores them
(Wq/Wk permuted for rotate-half RoPE, safetensors, optional shards and bf16): the packed image gives
the same logits as the llama2.c-packed one; hub ids fail with one line when offline."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import fixture_path
from elk import image as im
from elk.convert import hf, llama2c, load_model
from elk.errors import FormatError
from elk.reference import Reference

IDS = [1, 403, 407, 261, 378, 9, 30, 100]
NAMES = {
    "TOK_EMBD": "model.embed_tokens.weight", "ATTN_NORM": "model.layers.{L}.input_layernorm.weight",
    "WQ": "model.layers.{L}.self_attn.q_proj.weight", "WK": "model.layers.{L}.self_attn.k_proj.weight",
    "WV": "model.layers.{L}.self_attn.v_proj.weight", "WO": "model.layers.{L}.self_attn.o_proj.weight",
    "FFN_NORM": "model.layers.{L}.post_attention_layernorm.weight", "W1": "model.layers.{L}.mlp.gate_proj.weight",
    "W2": "model.layers.{L}.mlp.down_proj.weight", "W3": "model.layers.{L}.mlp.up_proj.weight",
    "OUTPUT_NORM": "model.norm.weight", "OUTPUT": "lm_head.weight",
}
ZEPHYR = "{% for message in messages %}{% if message['role'] == 'user' %}<|user|>\n{{ message['content'] }}" \
         "</s>{% endif %}{% endfor %}<|assistant|>"


@pytest.fixture(scope="module")
def l2c():
    return llama2c.read(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))


@pytest.fixture(scope="module")
def l2c_logits(l2c, tmp_path_factory):
    p = tmp_path_factory.mktemp("hf") / "l2c.elk"
    im.write_image(p, l2c)
    return Reference(p).logits(IDS)


def to_hf_layout(w, n_heads):
    """What HF's conversion script does to Meta/llama2.c weights: per head, pairs -> two halves."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def bf16(a):
    """float32 -> bfloat16 bits (round to nearest even), as uint16."""
    b = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def write_hf(folder, m, *, tied=True, shards=1, dtype="F32", tokenizer=True, rope_theta=None):
    folder.mkdir(parents=True, exist_ok=True)
    c = m.config
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.dim,
           "intermediate_size": c.hidden_dim, "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
           "num_key_value_heads": c.n_kv_heads, "vocab_size": c.vocab_size, "max_position_embeddings": c.seq_len,
           "rms_norm_eps": 1e-5, "tie_word_embeddings": tied, "torch_dtype": dtype.lower()}
    if rope_theta:
        cfg["rope_theta"] = rope_theta
    (folder / "config.json").write_text(json.dumps(cfg))
    tensors = {}
    keys = list(c.tensor_keys()) + ([] if tied else [("OUTPUT", 0)])
    for role, layer in keys:
        w = m.tensors[(role if role != "OUTPUT" else "TOK_EMBD", layer)].load()
        if role == "WQ":
            w = to_hf_layout(w, c.n_heads)
        if role == "WK":
            w = to_hf_layout(w, c.n_kv_heads)
        if role.endswith("NORM"):
            w = w.reshape(-1)
        w = {"F32": w.astype(np.float32), "F16": w.astype(np.float16), "BF16": bf16(w)}[dtype]
        tensors[NAMES[role].replace("{L}", str(layer))] = np.ascontiguousarray(w)
    names = sorted(tensors)
    wmap = {}
    for s in range(shards):
        fname = "model.safetensors" if shards == 1 else f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        save_file(part, str(folder / fname))
        if dtype == "BF16":  # safetensors' numpy API has no bfloat16: relabel the U16 entries
            raw = (folder / fname).read_bytes()
            n = int.from_bytes(raw[:8], "little")
            head = json.loads(raw[8:8 + n])
            for k, v in head.items():
                if k != "__metadata__":
                    v["dtype"] = "BF16"
            text = json.dumps(head).encode()
            text += b" " * (-len(text) % 8)
            (folder / fname).write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
        wmap.update({n: fname for n in part})
    if shards > 1:
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    if tokenizer:
        (folder / "tokenizer.model").symlink_to(fixture_path("tokenizer.model"))
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": ZEPHYR}))
    return folder


def test_unpermute_is_the_inverse_of_hf_layout():
    w = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    assert np.array_equal(hf.unpermute_rope(to_hf_layout(w, 2), 2), w)
    assert not np.array_equal(to_hf_layout(w, 2), w)


def test_hf_folder_gives_the_same_logits_as_llama2c(l2c, l2c_logits, tmp_path):
    folder = write_hf(tmp_path / "stories-hf", l2c, tokenizer=False)
    m = load_model(folder, tokenizer=fixture_path("tok512.bin"))
    assert m.config.tied_output and m.config.n_kv_heads == 4 and m.source == "hf: stories-hf"
    out = tmp_path / "hf.elk"
    im.write_image(out, m)
    assert np.array_equal(Reference(out).logits(IDS), l2c_logits)


def test_hf_sharded_untied_folder_with_index(l2c, l2c_logits, tmp_path):
    folder = write_hf(tmp_path / "sh", l2c, tied=False, shards=3, tokenizer=False)
    m = hf.read(folder, tokenizer=fixture_path("tok512.bin"))
    assert not m.config.tied_output
    assert np.array_equal(Reference(m).logits(IDS), l2c_logits)


@pytest.mark.parametrize("dtype, atol", [("F16", 0.05), ("BF16", 0.3)])
def test_hf_half_precision_weights(l2c, l2c_logits, tmp_path, dtype, atol):
    folder = write_hf(tmp_path / dtype, l2c, dtype=dtype, tokenizer=False)
    m = hf.read(folder, tokenizer=fixture_path("tok512.bin"))
    np.testing.assert_allclose(m.get("WQ", 1), l2c.get("WQ", 1), atol=2e-2)
    logits = Reference(m).logits(IDS)
    assert np.max(np.abs(logits - l2c_logits)) < atol
    assert np.array_equal(logits.argmax(1), l2c_logits.argmax(1))


def test_hf_rope_theta_and_chat_template_reach_the_image(l2c, tmp_path):
    folder = write_hf(tmp_path / "t", l2c, rope_theta=500000.0)
    m = hf.read(folder, tokenizer=fixture_path("tok512.bin"))
    assert m.config.rope_theta == 500000.0 and m.chat_template == "zephyr"
    im.write_image(tmp_path / "t.elk", m, quant="q8_0")
    img = im.read_image(tmp_path / "t.elk")
    assert img.config.rope_theta == 500000.0 and img.metadata["chat.template"] == "zephyr"


def test_hf_folder_tokenizer_model_is_used_and_checked_against_vocab_size(l2c, tmp_path):
    folder = write_hf(tmp_path / "tk", l2c)
    m = hf.read(folder)
    assert len(m.vocab.pieces) == 32000  # tokenizer.model from the folder
    with pytest.raises(FormatError, match="tokenizer has 32000 tokens, model vocab_size is 512"):
        im.write_image(tmp_path / "x.elk", m)


def test_hf_shape_mismatch_and_missing_files(l2c, tmp_path):
    folder = write_hf(tmp_path / "bad", l2c, tokenizer=False)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 160
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match=r"mlp.*has shape \[172, 64\], config.json needs \[160, 64\]"):
        hf.read(folder, tokenizer=fixture_path("tok512.bin"))
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(FormatError, match="damaged safetensors"):
        hf.read(folder, tokenizer=fixture_path("tok512.bin"))
    (folder / "config.json").unlink()
    with pytest.raises(FormatError, match="no config.json"):
        hf.read(folder)


def test_hub_id_offline_is_one_line_error(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hfhome"))
    r = subprocess.run([sys.executable, "-m", "elk", "pack", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "-o",
                        str(tmp_path / "t.elk")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("elk: error: TinyLlama/TinyLlama-1.1B-Chat-v1.0: cannot fetch")
    assert r.stderr.count("\n") == 1
    assert "not in the local cache and the hub cannot be reached (offline?)" in r.stderr, r.stderr


@pytest.mark.parametrize("template, name", [
    (ZEPHYR, "zephyr"),
    ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
     "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}", "llama2"),
    ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}",
     "chatml"),
    ("{{ messages[0]['content'] }}", None),
    (None, None),
])
def test_chat_template_names(template, name):
    from elk.convert import detect_chat_template

    assert detect_chat_template(template) == name
