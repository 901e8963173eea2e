"""Hugging Face folder variants users have (tied embeddings without lm_head, explicit head_dim, bf16/f16,
shards + index, every rope_scaling form, no num_key_value_heads, old inv_freq buffers), written here
with seeded random weights, packed by `elk pack` and run in the C runtime: the logits must equal a
float64 numpy LlamaForCausalLM forward pass on the same weights. What elk cannot run is refused with
one `elk: error:` line naming the cause."""

import json

import numpy as np
import pytest

from convert_variants_ref import (IDS, assert_logits, base_config, bf16_values, hf_logits, pack, random_weights,
                                  refusal, rel_err, save_safetensors, write_hf_folder)

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}

VARIANTS = {  # name -> (config changes, safetensors dtype, shards)
    "tied_without_lm_head": ({"tie_word_embeddings": True}, "F32", 1),
    "head_dim_equal_to_dim_over_heads": ({"head_dim": 16}, "F32", 1),
    "head_dim_not_dim_over_heads": ({"head_dim": 32}, "F32", 1),
    "bfloat16": ({"torch_dtype": "bfloat16"}, "BF16", 1),
    "float16_tied": ({"torch_dtype": "float16", "tie_word_embeddings": True}, "F16", 1),
    "sharded_with_index": ({}, "F32", 3),
    "rope_scaling_null": ({"rope_scaling": None}, "F32", 1),
    "rope_type_default": ({"rope_scaling": {"rope_type": "default"}}, "F32", 1),
    "rope_linear_factor_2": ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "F32", 1),
    "rope_llama3": ({"rope_scaling": LLAMA3, "rope_theta": 10000.0}, "F32", 2),
    "transformers5_rope_parameters_linear": ({"rope_theta": KeyError, "rope_parameters": {
        "rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0}}, "F32", 1),
    "transformers5_rope_parameters_llama3": ({"rope_theta": KeyError, "rope_parameters": dict(
        LLAMA3, rope_theta=500000.0)}, "F16", 1),
    "no_num_key_value_heads_is_mha": ({"num_key_value_heads": KeyError}, "F32", 1),
    "vocab_size_padded_past_the_tokenizer": ({"vocab_size": 544}, "F32", 1),
    # Llama-3.2-1B's mix: tied, explicit head_dim, llama3 RoPE, bf16, two shards
    "llama_3_2_style": ({"tie_word_embeddings": True, "head_dim": 16, "rope_scaling": LLAMA3,
                         "torch_dtype": "bfloat16", "rope_theta": 500000.0}, "BF16", 2),
    # SmolLM's: tied, 9 query / 3 KV heads (here 6 / 3, not a power of two), no lm_head
    "smollm_style": ({"tie_word_embeddings": True, "hidden_size": 96, "num_attention_heads": 6,
                      "num_key_value_heads": 3, "intermediate_size": 128}, "F32", 1),
}


def stored_values(w, dtype):
    """The float values the folder really holds after rounding to its dtype."""
    if dtype == "BF16":
        return {k: bf16_values(v) for k, v in w.items()}
    if dtype == "F16":
        return {k: v.astype(np.float16).astype(np.float32) for k, v in w.items()}
    return w


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_hf_variant_packs_and_gives_numpy_llama_logits(host_build, tmp_path, name):
    changes, dtype, shards = VARIANTS[name]
    c = base_config(**changes)
    w = random_weights(c, seed=len(name))
    write_hf_folder(tmp_path / name, c, w, dtype, shards)
    if shards > 1:
        assert (tmp_path / name / "model.safetensors.index.json").is_file()
    assert_logits(pack(tmp_path / name, tmp_path / "m.elk"), hf_logits(stored_values(w, dtype), c, IDS))



@pytest.mark.parametrize("scaling", [{"type": "linear", "factor": 2.0}, LLAMA3])
def test_hf_rope_scaling_changes_the_logits_it_is_checked_on(scaling):
    """The scaled cases above would fail if scaling were ignored: their logits differ from plain RoPE's
    by far more than the tolerance."""
    c = base_config(rope_scaling=scaling)
    w = random_weights(c, seed=3)
    assert rel_err(hf_logits(w, base_config(), IDS), hf_logits(w, c, IDS)) > 100 * 1e-4


def test_hf_tied_folder_uses_the_embedding_as_output(host_build, tmp_path):
    """A tied folder is not read as if some other matrix were the head: untie it with a random lm_head
    and the numpy logits move far away from what the tied image gives."""
    c = base_config(tie_word_embeddings=True)
    w = random_weights(c, seed=11)
    write_hf_folder(tmp_path / "t", c, w)
    got = assert_logits(pack(tmp_path / "t", tmp_path / "t.elk"), hf_logits(w, c, IDS))
    untied = dict(w, **{"lm_head.weight": np.random.default_rng(1).normal(0, 0.25, (512, 64)).astype(np.float32)})
    assert rel_err(got, hf_logits(untied, base_config(), IDS)) > 0.1


def test_hf_old_rotary_inv_freq_buffers_are_ignored(host_build, tmp_path):
    c = base_config()
    w = random_weights(c, seed=5)
    extra = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq":
             (1.0 / 10000 ** (np.arange(0, 16, 2) / 16)).astype(np.float32) for i in range(2)}
    write_hf_folder(tmp_path / "old", c, dict(w, **extra))
    assert_logits(pack(tmp_path / "old", tmp_path / "old.elk"), hf_logits(w, c, IDS))


def test_hf_tied_folder_that_still_stores_lm_head_uses_the_embedding(host_build, tmp_path):
    """transformers ties lm_head to embed_tokens when tie_word_embeddings is true, whatever the file holds."""
    c = base_config(tie_word_embeddings=True)
    w = random_weights(c, seed=6)
    stale = np.random.default_rng(2).normal(0, 0.25, (512, 64)).astype(np.float32)
    write_hf_folder(tmp_path / "t", c, dict(w, **{"lm_head.weight": stale}))
    assert_logits(pack(tmp_path / "t", tmp_path / "t.elk"), hf_logits(w, c, IDS))


REFUSED = {  # name -> (config changes, extra tensors (callable on config), words the line must hold)
    "yarn": ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}},
             None, ["RoPE scaling", "yarn", "not supported"]),
    "dynamic": ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, None,
                ["RoPE scaling", "dynamic", "not supported"]),
    "attention_bias": ({"attention_bias": True}, "attn", ["attention_bias is true", "no bias"]),
    "mlp_bias": ({"mlp_bias": True}, "mlp", ["mlp_bias is true", "no bias"]),
    "partial_rotary_factor": ({"partial_rotary_factor": 0.5}, None,
                              ["partial_rotary_factor 0.5 is not supported"]),
    "bias_tensors_without_flag": ({}, "attn", ["tensor model.layers.0.self_attn.k_proj.bias (+7 more) is not part of",
                                               "no bias terms"]),
}


def bias_tensors(c, kind):
    rng = np.random.default_rng(9)
    out = {}
    for i in range(c["num_hidden_layers"]):
        if kind == "attn":
            for p, n in (("q", 64), ("k", 32), ("v", 32), ("o", 64)):
                out[f"model.layers.{i}.self_attn.{p}_proj.bias"] = rng.normal(0, 0.1, n).astype(np.float32)
        else:
            for p, n in (("gate", 96), ("up", 96), ("down", 64)):
                out[f"model.layers.{i}.mlp.{p}_proj.bias"] = rng.normal(0, 0.1, n).astype(np.float32)
    return out


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hf_variant_elk_cannot_run_is_refused_in_one_line(tmp_path, name):
    changes, extra, words = REFUSED[name]
    c = base_config(**changes)
    w = random_weights(c)
    if extra:
        w.update(bias_tensors(c, extra))
    write_hf_folder(tmp_path / name, c, w)
    line = refusal(tmp_path / name, tmp_path)
    for word in words:
        assert word in line, line


def test_hf_index_naming_a_missing_shard_is_one_line(tmp_path):
    c = base_config()
    write_hf_folder(tmp_path / "s", c, random_weights(c), shards=2)
    (tmp_path / "s" / "model-00002-of-00002.safetensors").unlink()
    line = refusal(tmp_path / "s", tmp_path)
    assert "model-00002-of-00002.safetensors" in line and "missing" in line, line


def test_hf_index_naming_a_tensor_no_shard_holds_is_one_line(tmp_path):
    """An index whose weight_map lists a tensor under a shard that does not contain it."""
    c = base_config()
    write_hf_folder(tmp_path / "s", c, random_weights(c), shards=2)
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors" if \
        index["weight_map"]["model.norm.weight"].startswith("model-00002") else "model-00002-of-00002.safetensors"
    (tmp_path / "s" / "model.safetensors.index.json").write_text(json.dumps(index))
    line = refusal(tmp_path / "s", tmp_path)
    assert "model.norm.weight" in line, line


def test_hf_pytorch_bin_only_folder_names_safetensors(tmp_path):
    c = base_config()
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "config.json").write_text(json.dumps(c))
    (tmp_path / "pt" / "pytorch_model.bin").write_bytes(b"PK\x03\x04" + b"\0" * 60)
    line = refusal(tmp_path / "pt", tmp_path)
    assert "pytorch_model.bin" in line and "safetensors" in line, line


def test_hf_dtype_other_than_float_is_one_line(tmp_path):
    """An I8 tensor (a hand-quantized export) is named, not read as floats."""
    c = base_config()
    write_hf_folder(tmp_path / "q", c, random_weights(c))
    raw = (tmp_path / "q" / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    head = json.loads(raw[8:8 + n])
    name = "model.layers.0.mlp.up_proj.weight"
    head[name]["dtype"] = "I32"  # same byte count, integer type
    text = json.dumps(head, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    (tmp_path / "q" / "model.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    line = refusal(tmp_path / "q", tmp_path)
    assert name in line and "I32" in line, line


def test_hf_vocab_size_below_the_tokenizer_is_one_line(tmp_path):
    c = base_config(vocab_size=500)
    write_hf_folder(tmp_path / "v", c, random_weights(c))
    assert refusal(tmp_path / "v", tmp_path).endswith("tokenizer has 512 tokens, model vocab_size is 500")
