"""GGUF variants as llama.cpp's convert_hf_to_gguf.py writes them (gguf.GGUFWriter; Q and K rows
permuted from HF's rotate-half order to interleaved pairs, per KV head for K): with and without
output.weight, llama.rope.dimension_count, without llama.vocab_size, general.alignment 8 and 64, an
explicit attention.key_length, tensor types F16, BF16, Q8_0, Q4_0, a Q6_K output beside Q4_0 layers
(llama.cpp's q4_0 mix) and a Q4_K_M-like mix of Q4_K and Q6_K, linear RoPE scaling keys. `elk pack
--quant f32` then the C runtime must give the float64 numpy LlamaForCausalLM logits of the values the
file holds (decoded with gguf.quants, not elk), and a GGUF made from an HF folder must give the folder's
logits. K-quant blocks are random bytes with fixed scales: the gguf package cannot quantize K-quants
(its quantize raises NotImplementedError)."""

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from convert_variants_ref import (IDS, TOK, assert_logits, base_config, hf_logits, pack, random_weights, refusal,
                                  runtime_logits, write_hf_folder)
from elk import image as im
from elk import tokenizer as tk
from elk.models.synth import write_gguf_vocab

GGUF_OF = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight", "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
           "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
           "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.down_proj": "ffn_down",
           "mlp.up_proj": "ffn_up"}


def gguf_name(hf_name):
    if hf_name in GGUF_OF:
        return GGUF_OF[hf_name]
    _, _, layer, *rest = hf_name.split(".")
    return f"blk.{layer}.{GGUF_OF['.'.join(rest[:-1])]}.weight"


def llama_cpp_permute(w, n_head, n_head_kv=None):
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate-half rows -> interleaved pairs, per head
    (per KV head for K)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def kquant_random(rows, cols, seed, qtype=QT.Q6_K):
    """Random Q6_K blocks (ql, qh, int8 scales, fp16 d = 1/512) or Q4_K blocks (fp16 d = 1/4096,
    dmin = 1/8192, 6-bit scales and mins, nibbles): with the scales fixed, any bytes are a valid block."""
    rng = np.random.default_rng(seed)
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, (rows, cols // 256, size), dtype=np.uint8)
    if qtype == QT.Q6_K:
        blocks[:, :, 192:208] = rng.integers(-40, 41, (rows, cols // 256, 16)).astype(np.int8).view(np.uint8)
        blocks[:, :, 208:210] = np.array([1 / 512], np.float16).view(np.uint8)
    else:
        blocks[:, :, 0:4] = np.array([1 / 4096, 1 / 8192], np.float16).view(np.uint8)
    return blocks.reshape(rows, -1)


def write_gguf(path, c, w, qtype=QT.F32, *, output_qtype=None, rope_dim=True, vocab_size=True, alignment=None,
               key_length=False, kv_count=True, extra_kv=None, per_tensor=None):
    """The GGUF convert_hf_to_gguf.py writes for config `c` and HF weights `w`; returns name -> the float32
    values the file holds for every tensor in HF layout (decoded with gguf.quants)."""
    nh = c["num_attention_heads"]
    nkv = c.get("num_key_value_heads") or nh
    hd = c.get("head_dim") or c["hidden_size"] // nh
    wr = gguf.GGUFWriter(str(path), "llama")
    if alignment:
        wr.add_custom_alignment(alignment)
    wr.add_name("variant")
    wr.add_context_length(c["max_position_embeddings"])
    wr.add_embedding_length(c["hidden_size"])
    wr.add_block_count(c["num_hidden_layers"])
    wr.add_feed_forward_length(c["intermediate_size"])
    wr.add_head_count(nh)
    if kv_count:
        wr.add_head_count_kv(nkv)
    wr.add_rope_freq_base(c["rope_theta"])
    wr.add_layer_norm_rms_eps(c["rms_norm_eps"])
    if vocab_size:
        wr.add_vocab_size(c["vocab_size"])
    if rope_dim:
        wr.add_rope_dimension_count(hd if rope_dim is True else rope_dim)
    if key_length:
        wr.add_key_length(hd)
        wr.add_value_length(hd)
    if extra_kv:
        extra_kv(wr)
    write_gguf_vocab(wr, tk.load(TOK))
    held = {}
    for name in ["model.embed_tokens.weight"] + sorted(n for n in w if n.startswith("model.layers.")) + \
            ["model.norm.weight"] + (["lm_head.weight"] if "lm_head.weight" in w else []):
        a = w[name]
        if ".q_proj." in name:
            a = llama_cpp_permute(a, nh, nh)
        elif ".k_proj." in name:
            a = llama_cpp_permute(a, nh, nkv)
        t = output_qtype if name == "lm_head.weight" and output_qtype else qtype
        t = (per_tensor or {}).get(gguf_name(name), t)
        if a.ndim == 1 or t == QT.F32:
            wr.add_tensor(gguf_name(name), a.astype(np.float32))
            held[name] = w[name]
            continue
        if t in (QT.Q6_K, QT.Q4_K):
            data = kquant_random(*a.shape, seed=len(name), qtype=t)
        elif t == QT.F16:
            data = a.astype(np.float16)
        else:
            data = gguf.quants.quantize(a, t)
        wr.add_tensor(gguf_name(name), data, raw_dtype=None if t == QT.F16 else t)
        values = gguf.quants.dequantize(data.view(np.uint8) if t != QT.F16 else data, t).astype(np.float32)
        held[name] = values.reshape(a.shape)  # rows still permuted: permute back below
        if ".q_proj." in name or ".k_proj." in name:
            heads = nh if ".q_proj." in name else nkv
            held[name] = values.reshape(heads, -1, 2, a.shape[1]).swapaxes(1, 2).reshape(a.shape)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return held


VARIANTS = {  # name -> (config changes, write_gguf options)
    "f32_untied_rope_dim": ({}, {}),
    "f32_tied_no_output": ({"tie_word_embeddings": True}, {}),
    "no_vocab_size_key": ({}, {"vocab_size": False}),
    "no_rope_dimension_count": ({}, {"rope_dim": False}),
    "alignment_64": ({}, {"alignment": 64}),
    "alignment_8": ({"tie_word_embeddings": True}, {"alignment": 8}),
    "key_length_equal": ({}, {"key_length": True}),
    "head_dim_32_of_dim_64": ({"head_dim": 32}, {"key_length": True}),
    "mha_without_head_count_kv": ({"num_key_value_heads": 4}, {"kv_count": False}),
    "f16": ({}, {"qtype": QT.F16}),
    "bf16_tied": ({"tie_word_embeddings": True}, {"qtype": QT.BF16}),
    "q8_0": ({}, {"qtype": QT.Q8_0}),
    "q4_0": ({}, {"qtype": QT.Q4_0}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_gguf_variant_packs_and_gives_numpy_llama_logits(host_build, tmp_path, name):
    changes, options = VARIANTS[name]
    c = base_config(**changes)
    held = write_gguf(tmp_path / "m.gguf", c, random_weights(c, seed=len(name)), **options)
    image = pack(tmp_path / "m.gguf", tmp_path / "m.elk", tokenizer=False)
    assert_logits(image, hf_logits(held, c, IDS))


def test_gguf_q4_0_layers_with_q6_k_output_like_llama_cpp_q4_0_files(host_build, tmp_path):
    """llama.cpp's q4_0 files keep output.weight in Q6_K (rows of 256-value super-blocks: dim 256)."""
    c = base_config(hidden_size=256, intermediate_size=256, num_attention_heads=8, num_key_value_heads=2)
    held = write_gguf(tmp_path / "m.gguf", c, random_weights(c, seed=4, std=0.1), QT.Q4_0, output_qtype=QT.Q6_K)
    assert np.std(held["lm_head.weight"]) > 0.01
    want = hf_logits(held, c, IDS)
    assert_logits(pack(tmp_path / "m.gguf", tmp_path / "f32.elk", tokenizer=False), want)
    # the default q4_0 recipe keeps the Q4_0 layers' blocks bit for bit and re-quantizes the Q6_K output
    image = pack(tmp_path / "m.gguf", tmp_path / "q4.elk", "--quant", "q4_0", tokenizer=False)
    img = im.read_image(image)
    src = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert img.tensors["blk.1.attn_k.weight"].data.tobytes() == src["blk.1.attn_k.weight"].data.tobytes()
    assert img.tensors["output.weight"].type == "Q4_0"
    got = runtime_logits(image)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.75


def test_gguf_q4_k_m_mix_of_k_quants(host_build, tmp_path):
    """llama.cpp's Q4_K_M mix: token_embd and most matrices Q4_K, output and some attn_v/ffn_down Q6_K
    (random blocks: the gguf package cannot quantize K-quants); every one is dequantized, row order kept."""
    c = base_config(hidden_size=256, intermediate_size=256, num_attention_heads=8, num_key_value_heads=2)
    held = write_gguf(tmp_path / "m.gguf", c, random_weights(c, seed=14), QT.Q4_K, output_qtype=QT.Q6_K,
                      per_tensor={"blk.0.attn_v.weight": QT.Q6_K, "blk.1.ffn_down.weight": QT.Q6_K})
    kinds = {t.name: t.tensor_type for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert kinds["token_embd.weight"] == QT.Q4_K and kinds["blk.0.attn_v.weight"] == QT.Q6_K
    assert_logits(pack(tmp_path / "m.gguf", tmp_path / "m.elk", tokenizer=False), hf_logits(held, c, IDS))


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_0])
def test_gguf_same_type_blocks_are_kept_bit_for_bit(host_build, tmp_path, qtype):
    c = base_config()
    write_gguf(tmp_path / "m.gguf", c, random_weights(c, seed=2), qtype)
    img = im.read_image(pack(tmp_path / "m.gguf", tmp_path / "m.elk", "--quant", qtype.name.lower(),
                             tokenizer=False))
    for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors:
        if t.tensor_type == qtype:
            assert img.tensors[t.name].data.tobytes() == t.data.tobytes(), t.name


@pytest.mark.parametrize("tied", [False, True])
def test_gguf_from_an_hf_folder_gives_the_folders_logits(host_build, tmp_path, tied):
    """The GQA Q/K permutation: the HF folder (rotate-half rows, un-permuted by elk's HF reader) and the
    GGUF llama.cpp's converter would make from it (permuted, read as is) are one model."""
    c = base_config(tie_word_embeddings=tied, num_attention_heads=8, num_key_value_heads=2, head_dim=8)
    w = random_weights(c, seed=21)
    write_hf_folder(tmp_path / "hf", c, w)
    write_gguf(tmp_path / "m.gguf", c, w)
    from_hf = runtime_logits(pack(tmp_path / "hf", tmp_path / "hf.elk"))
    from_gguf = runtime_logits(pack(tmp_path / "m.gguf", tmp_path / "gguf.elk", tokenizer=False))
    assert np.max(np.abs(from_hf - from_gguf)) <= 1e-6 * np.max(np.abs(from_hf))
    assert_logits(tmp_path / "gguf.elk", hf_logits(w, c, IDS))
    # and the permutation matters: a GGUF written without it gives other logits
    unpermuted = dict(w)
    for i in range(c["num_hidden_layers"]):
        for p, heads in (("q", 8), ("k", 2)):
            n = f"model.layers.{i}.self_attn.{p}_proj.weight"
            unpermuted[n] = w[n].reshape(heads, -1, 2, 64).swapaxes(1, 2).reshape(w[n].shape)
    write_gguf(tmp_path / "bad.gguf", c, unpermuted)
    wrong = runtime_logits(pack(tmp_path / "bad.gguf", tmp_path / "bad.elk", tokenizer=False))
    assert np.max(np.abs(wrong - from_hf)) > 0.01 * np.max(np.abs(from_hf))


def linear_2(wr):  # what convert_hf_to_gguf.py writes for rope_scaling {"type": "linear", "factor": 2}
    wr.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    wr.add_rope_scaling_factor(2.0)


SCALED = {  # name -> (metadata writer, the config.json rope_scaling it stands for)
    "linear_type_and_factor": (linear_2, {"type": "linear", "factor": 2.0}),
    "factor_without_type_is_linear": (lambda wr: wr.add_rope_scaling_factor(4.0), {"type": "linear", "factor": 4.0}),
    "old_scale_linear_key": (lambda wr: wr.add_float32("llama.rope.scale_linear", 2.0),
                             {"type": "linear", "factor": 2.0}),
    "type_none_ignores_factor": (lambda wr: (wr.add_rope_scaling_type(gguf.RopeScalingType.NONE),
                                             wr.add_rope_scaling_factor(8.0)), None),
}


@pytest.mark.parametrize("name", sorted(SCALED))
def test_gguf_linear_rope_scaling_is_applied_as_llama_cpp_does(host_build, tmp_path, name):
    """llama.cpp reads llama.rope.scaling.factor (or the older rope.scale_linear) as linear scaling unless
    the type says none; elk refused every scaled GGUF before, though it packs the HF folder they came from."""
    writer, scaling = SCALED[name]
    c = base_config(rope_scaling=scaling)
    held = write_gguf(tmp_path / "m.gguf", c, random_weights(c, seed=8), extra_kv=writer)
    got = assert_logits(pack(tmp_path / "m.gguf", tmp_path / "m.elk", tokenizer=False), hf_logits(held, c, IDS))
    if scaling:
        assert np.max(np.abs(got - hf_logits(held, base_config(), IDS))) > 0.01 * np.max(np.abs(got))


REFUSED = {
    "yarn": (lambda wr: (wr.add_rope_scaling_type(gguf.RopeScalingType.YARN), wr.add_rope_scaling_factor(4.0)),
             "RoPE scaling 'yarn' is not supported (plain, linear and llama3 RoPE are)"),
    "experts": (lambda wr: wr.add_expert_count(8), "a mixture of experts (llama.expert_count 8) is not supported"),
    "partial_rotary": (None, "RoPE over 8 of 16 head dims is not supported"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_gguf_variant_elk_cannot_run_is_refused_in_one_line(tmp_path, name):
    writer, words = REFUSED[name]
    c = base_config()
    write_gguf(tmp_path / "m.gguf", c, random_weights(c), extra_kv=writer, rope_dim=8 if writer is None else True)
    line = refusal(tmp_path / "m.gguf", tmp_path, tokenizer=False)
    assert words in line, line


def test_gguf_version_2_file_reads_like_version_3(host_build, tmp_path):
    """GGUF v2 (2023 files) has the v3 layout (64-bit counts); only the version number differs."""
    import struct

    c = base_config()
    held = write_gguf(tmp_path / "m.gguf", c, random_weights(c, seed=12))
    raw = bytearray((tmp_path / "m.gguf").read_bytes())
    raw[4:8] = struct.pack("<I", 2)
    (tmp_path / "m.gguf").write_bytes(bytes(raw))
    assert_logits(pack(tmp_path / "m.gguf", tmp_path / "m.elk", tokenizer=False), hf_logits(held, c, IDS))
