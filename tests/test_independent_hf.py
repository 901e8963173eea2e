"""elk against an independent implementation: tiny random Llama folders written by transformers'
save_pretrained, with transformers' own float32 logits (tests/golden/hf, made by
tests/golden/make_hf_golden.py). `elk pack --quant f32` then the C runtime must give those logits and
greedy tokens; config dialects (transformers 4 `rope_theta`/`rope_scaling`, 5 `rope_parameters`),
chat templates and what the real TinyLlama-1.1B-Chat folder holds are read right; what elk cannot run
(RoPE scaling, biases, pickled weights) is refused in one line."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import ROOT
from elk import tokenizer as tk
from elk.convert import hf
from elk.errors import FormatError

GOLDEN = ROOT / "tests" / "golden" / "hf"
META = json.loads((GOLDEN / "cases.json").read_text())
IDS = META["ids"]
CASES = sorted(META["cases"])
REL_TOL = 1e-4  # max |elk - transformers| over max |transformers logit| (measured ~2e-6)


def elk_cli(*args):
    return subprocess.run([sys.executable, "-m", "elk", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def golden_logits(case):
    return np.load(GOLDEN / f"{case}.logits.npy")


@pytest.fixture(scope="module")
def images(host_build, tmp_path_factory):
    """case -> f32 image packed from the golden folder by the `elk pack` command."""
    out = {}
    tmp = tmp_path_factory.mktemp("independent_hf")
    for case in CASES:
        out[case] = tmp / f"{case}.elk"
        r = elk_cli("pack", GOLDEN / case, "-o", out[case], "--quant", "f32")
        assert r.returncode == 0, r.stderr
    return out


def copy_case(case, tmp_path):
    return shutil.copytree(GOLDEN / case, tmp_path / case)


def edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    for k, v in changes.items():
        if v is KeyError:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("case", CASES)
def test_independent_hf_f32_logits_match_transformers(images, case):
    import elk

    ref = golden_logits(case)
    with elk.load(images[case]) as m:
        got = m.logits(IDS)
    assert got.shape == ref.shape == (len(IDS), 384)
    err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    assert err < REL_TOL, f"{case}: max |elk - transformers| = {err:.2e} x max|logit|"
    assert np.array_equal(got.argmax(1), ref.argmax(1))


@pytest.mark.parametrize("case", CASES)
def test_independent_hf_greedy_token_after_every_prefix_is_transformers_argmax(images, case):
    """Teacher forcing: after IDS[:k] the runtime's greedy sampler picks argmax of transformers' row k-1
    (positions where transformers' top two are closer than 1e-3 x max|logit| would be a coin toss: none
    may be skipped silently, at most 2 of 33)."""
    import elk

    ref = golden_logits(case)
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-3 * np.max(np.abs(ref))
    assert clear.sum() >= len(IDS) - 2
    with elk.load(images[case]) as m:
        for k in range(1, len(IDS) + 1):
            if not clear[k - 1]:
                continue
            want = int(ref[k - 1].argmax())
            got = [t for t, _ in m.generate_tokens(IDS[:k], max_tokens=1, temperature=0)]
            if want in (m.config.bos_id, m.config.eos_id):  # the runtime ends a reply on BOS/EOS
                assert got == [] and m.stats.stop_reason == "eos", f"{case}: prefix {k}"
            else:
                assert got == [want], f"{case}: prefix {k}"


@pytest.mark.parametrize("case", CASES)
def test_independent_hf_greedy_decode_matches_transformers_generate(images, case):
    """Token-by-token decode with the KV cache (not the batched prompt path): the runtime's greedy reply
    after IDS is transformers' generate(do_sample=False), up to and including its stop at EOS."""
    import elk

    want, margins = META["cases"][case]["greedy"], META["cases"][case]["greedy_margins"]
    with elk.load(images[case]) as m:
        ends = [i for i, t in enumerate(want) if t in (m.config.bos_id, m.config.eos_id)]
        stop = ends[0] if ends else len(want)
        assert min(margins[:stop + 1]) > 1e-4  # every step is a clear choice, no coin toss
        got = [t for t, _ in m.generate_tokens(IDS, max_tokens=len(want), temperature=0)]
        assert got == want[:stop]
        assert m.stats.stop_reason == ("eos" if ends else "max_tokens")


def test_independent_hf_full_2048_context_matches_transformers(host_build, tmp_path):
    """TinyLlama's whole context: 2048 positions (RoPE angles up to 2047 rad, theta 10000) in one prompt.
    Full rows every 128 positions are compared; every position's argmax where transformers' top two
    differ by more than 1e-3 x max|logit|."""
    import elk

    long = META["long_context"]
    gold = np.load(GOLDEN / long["file"])
    folder = copy_case(long["case"], tmp_path)
    edit_config(folder, max_position_embeddings=long["max_position_embeddings"])
    r = elk_cli("pack", folder, "-o", tmp_path / "long.elk", "--quant", "f32")
    assert r.returncode == 0, r.stderr
    with elk.load(tmp_path / "long.elk") as m:
        assert m.config.n_ctx == 2048
        got = m.logits(gold["ids"].tolist())
    rows = gold["rows"]
    assert rows[-1] == 2047
    assert np.max(np.abs(got[rows] - gold["logits"])) < REL_TOL * gold["max_abs"]
    clear = gold["margin"] > 1e-3 * gold["max_abs"]
    assert clear.sum() > 1900
    assert np.array_equal(got.argmax(1)[clear], gold["argmax"][clear])


@pytest.mark.parametrize("quant", ["q8_0", "q4_0"])
@pytest.mark.parametrize("case", ["gqa_untied_f32", "mha_tied_bf16_sharded"])
def test_independent_hf_quantized_image_tracks_transformers_with_ggml_quantized_weights(images, tmp_path,
                                                                                         case, quant):
    """These random models are very sensitive to weight rounding (transformers itself moves 4% of
    max|logit| with Q8_0 weights, ~50% with Q4_0), so a quantized image is compared with transformers
    running the ggml-reference-quantized weights: what remains is the image's activation rounding
    (measured 0.027-0.043). A block-layout or scale error would be of the order of the logits."""
    import elk

    image = tmp_path / f"{quant}.elk"
    r = elk_cli("pack", GOLDEN / case, "-o", image, "--quant", quant)
    assert r.returncode == 0, r.stderr
    ref = np.load(GOLDEN / f"{case}.quantized_logits.npz")[quant].astype(np.float32)
    f32 = golden_logits(case)
    with elk.load(image) as m:
        got = m.logits(IDS)
    scale = np.max(np.abs(f32))
    assert np.max(np.abs(got - ref)) / scale < 0.08


def test_independent_hf_config_reaches_the_runtime(images):
    import elk

    with elk.load(images["gqa_untied_f32"]) as m:
        c = m.config
        assert (c.n_heads, c.n_kv_heads, c.head_dim, c.tied_output) == (8, 2, 8, False)
        assert c.rope_theta == 500000.0 and abs(c.norm_eps - 1e-6) < 1e-12
    with elk.load(images["mha_tied_bf16_sharded"]) as m:
        assert (m.config.n_heads, m.config.n_kv_heads, m.config.tied_output) == (4, 4, True)
        assert m.config.rope_theta == 10000.0
    with elk.load(images["headdim_f16_sharded"]) as m:
        assert (m.config.dim, m.config.n_heads, m.config.head_dim) == (64, 4, 32)


@pytest.mark.parametrize("case, template", [("gqa_untied_f32", "zephyr"),  # tokenizer_config.json
                                            ("mha_tied_bf16_sharded", "zephyr"),  # chat_template.jinja
                                            ("headdim_f16_sharded", None)])
def test_independent_hf_chat_template_becomes_metadata(images, case, template):
    import elk

    with elk.load(images[case]) as m:
        assert m.meta("chat.template") == template


TEXTS = ["", " ", "  two  spaces", "\n", "line\nbreak\n\n", " leading", "trailing ", "12345 67", "emoji \U0001f642 ok",
         "tabs\tand\rcr", "<s> not special </s>", "<|user|>\nhi</s>", META["text"]]


def test_independent_hf_tokenizer_model_and_json_encode_like_sentencepiece(images):
    """The golden vocabulary (byte fallback for é, 中 and the emoji; split digits) through the C runtime
    (tokenizer.model) against SentencePiece itself, and transformers' tokenizer.json conversion against
    the tokenizers library that runs that file (its Metaspace adds no "▁" to text starting with a space,
    where SentencePiece does; user text keeps "<s>" as text: encode_special_tokens)."""
    import sentencepiece as spm
    import tokenizers

    import elk

    sp = spm.SentencePieceProcessor(model_file=str(GOLDEN / "gqa_untied_f32" / "tokenizer.model"))
    vj = tk.load(GOLDEN / "gqa_untied_f32" / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(GOLDEN / "gqa_untied_f32" / "tokenizer.json"))
    hf.encode_special_tokens = True
    assert [1] + sp.encode(META["text"]) == IDS
    with elk.load(images["gqa_untied_f32"]) as m:
        for text in TEXTS:
            want = [1] + sp.encode(text)
            assert m.tokenize(text, bos=True) == want, text
            assert tk.encode(vj, text, bos=True) == [1] + hf.encode(text, add_special_tokens=False).ids, text
        assert m.detokenize(IDS[1:]) == META["text"]


def test_independent_hf_transformers4_config_dialect_gives_the_same_logits(tmp_path):
    """TinyLlama's config.json style: top-level rope_theta, rope_scaling null, torch_dtype."""
    from elk.reference import Reference

    folder = copy_case("gqa_untied_f32", tmp_path)
    edit_config(folder, rope_parameters=KeyError, rope_theta=500000.0, rope_scaling=None, torch_dtype="float32",
                dtype=KeyError, transformers_version="4.35.0")
    m = hf.read(folder)
    assert m.config.rope_theta == 500000.0
    ref = golden_logits("gqa_untied_f32")
    assert np.max(np.abs(Reference(m).logits(IDS) - ref)) < REL_TOL * np.max(np.abs(ref))


TINYLLAMA_CHAT_CONFIG = {  # TinyLlama/TinyLlama-1.1B-Chat-v1.0 config.json, key for key
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
    "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22,
    "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.35.0", "use_cache": True, "vocab_size": 32000,
}


def test_independent_hf_tinyllama_chat_config_is_understood(tmp_path):
    c = hf._config(tmp_path, dict(TINYLLAMA_CHAT_CONFIG))
    assert (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads) == (2048, 5632, 22, 32, 4)
    assert (c.head_dim, c.vocab_size, c.seq_len, c.tied_output) == (64, 32000, 2048, False)
    assert (c.rope_theta, c.norm_eps) == (10000.0, 1e-5)
    assert c.tensor_shape("WK") == (256, 2048)


@pytest.mark.parametrize("changes, message", [
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "RoPE scaling"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}}, "RoPE scaling"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
                       "original_max_position_embeddings": 64}}, "low_freq_factor < high_freq_factor"),
    ({"rope_scaling": {"type": "linear", "factor": -2.0}}, "factor -2.0 must be a positive number"),
    ({"attention_bias": True}, "attention_bias is true"),
    ({"mlp_bias": True}, "mlp_bias is true"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}}, r"pre-quantized .*\(gptq\)"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": "fast"}}, "bad rope_theta"),
])
def test_independent_hf_configs_elk_cannot_run_are_refused(tmp_path, changes, message):
    folder = copy_case("gqa_untied_f32", tmp_path)
    edit_config(folder, **changes)
    with pytest.raises(FormatError, match=message):
        hf.read(folder)


def test_independent_hf_rope_scaling_refused_by_pack_in_one_line(tmp_path):
    folder = copy_case("mha_tied_bf16_sharded", tmp_path)
    edit_config(folder, rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0})
    r = elk_cli("pack", folder, "-o", tmp_path / "x.elk")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "RoPE scaling" in r.stderr and "yarn" in r.stderr
    assert not (tmp_path / "x.elk").exists()


def test_independent_hf_llama3_rope_scaling_packs_as_llama_cpp_converts_it(host_build, tmp_path):
    """The HF case with Llama 3 RoPE scaling in config.json (as tests/golden/make_gguf_golden.py gave
    llama.cpp's converter): elk's divisors equal the rope_freqs llama.cpp computed, and the HF-packed
    image equals the one packed from llama.cpp's GGUF tensor for tensor and in its logits."""
    import elk
    from elk import image as im

    spec = json.loads((ROOT / "tests" / "golden" / "gguf" / "made_by.json").read_text())["llama3_rope"]
    folder = copy_case(spec["hf"], tmp_path)
    edit_config(folder, rope_parameters=spec["rope_parameters"])
    for src, out in ((folder, "h.elk"), (ROOT / "tests" / "golden" / "gguf" / spec["file"], "g.elk")):
        r = elk_cli("pack", src, "-o", tmp_path / out, "--quant", "q8_0")
        assert r.returncode == 0, r.stderr
    h, g = im.read_image(tmp_path / "h.elk"), im.read_image(tmp_path / "g.elk")
    assert np.frombuffer(h.tensors["rope_freqs.weight"].data, dtype=np.float32).tolist() == [1.0, 8.0, 8.0, 8.0]
    for name, t in g.tensors.items():
        assert (h.tensors[name].type, bytes(h.tensors[name].data)) == (t.type, bytes(t.data)), name
    ids = json.loads((ROOT / "tests" / "golden" / "hf" / "cases.json").read_text())["ids"]
    with elk.load(tmp_path / "h.elk") as a, elk.load(tmp_path / "g.elk") as b:
        assert np.array_equal(a.logits(ids), b.logits(ids))


def test_rope_divisors_follow_the_llama3_formula_on_every_band():
    """Divisors for a config whose frequencies fall in all three llama3 bands (kept, smoothed, divided):
    theta^(-2i/d) / f_i equals the scaled inverse frequencies as transformers' llama3 rule computes them
    (written here from its definition, independently of elk's)."""
    import math

    cfg = hf.Config(dim=64, hidden_dim=128, n_layers=1, n_heads=1, n_kv_heads=1, vocab_size=16, seq_len=64,
                    rope_theta=10000.0)
    rp = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 256}
    f = hf.rope_divisors("config.json", {"rope_scaling": rp}, cfg)
    low_wl, high_wl = 256 / 1.0, 256 / 4.0
    bands = set()
    for i in range(32):
        inv = 10000.0 ** (-2 * i / 64)
        wl = 2 * math.pi / inv
        if wl < high_wl:
            want, band = inv, "kept"
        elif wl > low_wl:
            want, band = inv / 8.0, "divided"
        else:
            smooth = (256 / wl - 1.0) / (4.0 - 1.0)
            want, band = (1 - smooth) * inv / 8.0 + smooth * inv, "smoothed"
        bands.add(band)
        assert abs(inv / float(f[i]) - want) <= 1e-6 * want, i
    assert bands == {"kept", "smoothed", "divided"}
    lin = hf.rope_divisors("config.json", {"rope_scaling": {"type": "linear", "factor": 2.5}}, cfg)
    assert lin.tolist() == [2.5] * 32 and hf.rope_divisors("config.json", {}, cfg) is None


def test_independent_hf_bias_tensors_are_refused_not_dropped(tmp_path):
    """A checkpoint with q_proj.bias but a config that does not say so: ignoring the bias would give
    wrong logits, so the reader names the tensor instead."""
    folder = copy_case("gqa_untied_f32", tmp_path)
    save_file({"model.layers.0.self_attn.q_proj.bias": np.zeros(64, np.float32)}, str(folder / "extra.safetensors"))
    with pytest.raises(FormatError, match=r"q_proj.bias is not part of a 2-layer Llama model"):
        hf.read(folder)


def test_independent_hf_rotary_inv_freq_buffers_are_ignored(tmp_path):
    """Older exports stored each layer's rotary_emb.inv_freq: a buffer, not a weight."""
    folder = copy_case("gqa_untied_f32", tmp_path)
    inv = (1.0 / 500000.0 ** (np.arange(0, 8, 2) / 8)).astype(np.float32)
    save_file({f"model.layers.{i}.self_attn.rotary_emb.inv_freq": inv for i in range(2)},
              str(folder / "buffers.safetensors"))
    assert hf.read(folder).config.n_layers == 2


def test_independent_hf_pytorch_bin_only_folder_says_safetensors_are_needed(tmp_path):
    folder = copy_case("gqa_untied_f32", tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not read")
    r = elk_cli("pack", folder, "-o", tmp_path / "x.elk")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "pytorch_model.bin" in r.stderr and "safetensors" in r.stderr


def test_independent_hf_byte_level_bpe_tokenizer_json_is_refused(tmp_path):
    """A Llama-architecture folder with a byte-level BPE tokenizer.json whose split pattern elk does not
    run (Qwen2's Split regex: Llama 3's with single digits, \\p{N} for \\p{N}{1,3}): elk runs GPT-2's
    and Llama 3's patterns only (tests/test_tokenizer_bytelevel.py, test_tokenizer_llama3.py), so pack
    refuses in one line rather than split text differently."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({"Ġt": len(vocab), "Ġth": len(vocab) + 1})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "t"), ("Ġt", "h")]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                                   r"\s*[\r\n]+|\s+(?!\S)|\s+"), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    assert tok.encode(" th").tokens == ["Ġth"]
    folder = copy_case("gqa_untied_f32", tmp_path)
    (folder / "tokenizer.model").unlink()
    tok.save(str(folder / "tokenizer.json"))
    r = elk_cli("pack", folder, "-o", tmp_path / "x.elk")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "byte-level pre-tokenizer" in r.stderr and not (tmp_path / "x.elk").exists()


def test_independent_hf_missing_shard_is_named(tmp_path):
    folder = copy_case("mha_tied_bf16_sharded", tmp_path)
    (folder / "model-00003-of-00006.safetensors").unlink()
    with pytest.raises(FormatError, match="shard model-00003-of-00006.safetensors named in "
                                          "model.safetensors.index.json is missing"):
        hf.read(folder)


def test_independent_hf_folder_of_symlinks_like_the_hub_cache(images, tmp_path):
    """huggingface_hub snapshots are folders of symlinks into a blob store."""
    import elk

    folder = tmp_path / "snapshot"
    folder.mkdir()
    for f in (GOLDEN / "mha_tied_bf16_sharded").iterdir():
        (folder / f.name).symlink_to(f)
    r = elk_cli("pack", folder, "-o", tmp_path / "s.elk", "--quant", "f32")
    assert r.returncode == 0, r.stderr
    with elk.load(tmp_path / "s.elk") as a, elk.load(images["mha_tied_bf16_sharded"]) as b:
        assert np.array_equal(a.logits(IDS), b.logits(IDS))


def test_independent_hf_hub_id_packs_from_the_local_cache_offline(tmp_path):
    """`elk pack TinyLlama/TinyLlama-1.1B-Chat-v1.0` with the files already in the hub cache and no
    network: a tiny stand-in under that id, laid out as huggingface_hub caches it (refs/main ->
    snapshots/<commit>/), packs and gives transformers' logits."""
    import os

    import elk

    repo = tmp_path / "hf" / "hub" / "models--TinyLlama--TinyLlama-1.1B-Chat-v1.0"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(GOLDEN / "gqa_untied_f32", repo / "snapshots" / commit)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "elk", "pack", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "-o",
                        str(tmp_path / "t.elk")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    with elk.load(tmp_path / "t.elk") as m:
        assert m.meta("general.source") == "hf: TinyLlama/TinyLlama-1.1B-Chat-v1.0"
        assert m.meta("chat.template") == "zephyr"
        ref = golden_logits("gqa_untied_f32")
        assert np.max(np.abs(m.logits(IDS) - ref)) < REL_TOL * np.max(np.abs(ref))


@pytest.mark.parametrize("text", ["[1, 2]", '{"architectures": null, "model_type": "mistral"}'])
def test_independent_hf_odd_config_json_is_a_format_error(tmp_path, text):
    folder = copy_case("gqa_untied_f32", tmp_path)
    (folder / "config.json").write_text(text)
    with pytest.raises(FormatError, match="config.json: (not a JSON object|model_type 'mistral' is not a Llama)"):
        hf.read(folder)


def test_independent_hf_folder_with_only_tokenizer_json(tmp_path):
    """Repos without tokenizer.model: transformers' tokenizer.json is read instead and encodes in the
    packed image (C runtime) like the tokenizers library on that file (user text: encode_special_tokens)."""
    import tokenizers

    import elk

    folder = copy_case("gqa_untied_f32", tmp_path)
    hf_tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    hf_tok.encode_special_tokens = True
    (folder / "tokenizer.model").unlink()
    r = elk_cli("pack", folder, "-o", tmp_path / "j.elk", "--quant", "f32")
    assert r.returncode == 0, r.stderr
    with elk.load(tmp_path / "j.elk") as m:
        assert (m.config.bos_id, m.config.eos_id) == (1, 2)
        for text in TEXTS:
            assert m.tokenize(text, bos=True) == [1] + hf_tok.encode(text, add_special_tokens=False).ids, text
        assert m.meta("chat.template") == "zephyr"
