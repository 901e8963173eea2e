"""elk.models.synth: synthetic checkpoints of a requested shape, identical values in every format."""

import json
import subprocess
import sys

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import ROOT, fixture_path
from elk import image
from elk.models import synth

TINY = synth.PRESETS["tiny"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    vocab = fixture_path("tok512.bin")
    return {
        "elk": synth.synthesize("tiny", d / "tiny.elk", vocab_path=vocab, quant="f16", seed=5),
        "gguf": synth.synthesize("tiny", d / "tiny.gguf", vocab_path=vocab, seed=5),
        "hf": synth.synthesize("tiny", d / "hf", vocab_path=None, seed=5),
    }


def test_synth_elk_image_has_the_preset_shape_and_sane_weights(outputs):
    img = image.read_image(outputs["elk"])
    c = img.config
    assert (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size) == (64, 160, 2, 4, 2, 512)
    assert img.tensor("WK", 1).rows == TINY.n_kv_heads * TINY.head_dim
    assert img.tensor("W2", 0).cols == TINY.hidden_dim
    wq = img.tensor("WQ", 0).array()
    assert 0.015 < float(wq.std()) < 0.025 and abs(float(wq.mean())) < 0.005
    norm = img.tensor("ATTN_NORM", 1).array()
    assert abs(float(norm.mean()) - 1.0) < 0.02
    assert len(img.vocab()) == 512


def test_synth_gguf_holds_the_same_values_as_the_elk_image(outputs):
    img = image.read_image(outputs["elk"])
    r = gguf.GGUFReader(str(outputs["gguf"]))
    by_name = {t.name: t for t in r.tensors}
    assert len(by_name) == len(img.tensors)
    for name in ("token_embd.weight", "blk.1.attn_q.weight", "blk.0.ffn_down.weight", "output.weight"):
        g = np.asarray(by_name[name].data, dtype=np.float32).reshape(img.tensors[name].rows, img.tensors[name].cols)
        np.testing.assert_array_equal(g, img.tensors[name].array())
    fields = r.fields
    assert int(fields["llama.block_count"].parts[-1][0]) == 2
    assert int(fields["llama.attention.head_count_kv"].parts[-1][0]) == 2
    assert len(fields["tokenizer.ggml.tokens"].data) == 512


def test_synth_hf_folder_uses_hf_names_and_half_split_rope_order(outputs):
    folder = outputs["hf"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["num_key_value_heads"] == 2 and cfg["intermediate_size"] == 160
    tensors = load_file(str(folder / "model.safetensors"))
    assert len(tensors) == len(TINY.tensor_keys())
    img = image.read_image(outputs["elk"])
    q = tensors["model.layers.0.self_attn.q_proj.weight"].astype(np.float32)
    elk_q = img.tensor("WQ", 0).array()
    assert not np.array_equal(q, elk_q)  # permuted for HF's rotate-half RoPE ...
    np.testing.assert_array_equal(q, synth.hf_permute(elk_q, TINY.n_heads))  # ... by exactly this map
    k = tensors["model.layers.1.self_attn.k_proj.weight"].astype(np.float32)
    np.testing.assert_array_equal(k, synth.hf_permute(img.tensor("WK", 1).array(), TINY.n_kv_heads))
    np.testing.assert_array_equal(tensors["model.layers.1.mlp.up_proj.weight"].astype(np.float32),
                                  img.tensor("W3", 1).array())


def test_synth_seed_changes_the_weights(tmp_path):
    a = synth.synth_tensor(TINY, 2, "WQ", seed=1, std=0.02)
    b = synth.synth_tensor(TINY, 2, "WQ", seed=2, std=0.02)
    assert a.shape == (64, 64) and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, synth.synth_tensor(TINY, 2, "WQ", seed=1, std=0.02))


def test_synth_tinyllama_preset_is_tinyllama_shaped():
    c = synth.preset_config("tinyllama-1.1b")
    params = sum(r * k for r, k in (c.tensor_shape(role) for role, _ in c.tensor_keys()))
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden_dim, c.vocab_size) == (2048, 22, 32, 4, 5632, 32000)
    assert 1.09e9 < params < 1.11e9


@pytest.mark.parametrize("args, message", [
    (["nosuch", "-o", "x.elk"], "unknown preset 'nosuch'"),
    (["tiny", "-o", "x.elk"], "needs --vocab"),
])
def test_synth_cli_rejects_bad_input_with_one_line(tmp_path, args, message):
    p = subprocess.run([sys.executable, "-m", "elk.models.synth", *args], cwd=tmp_path, capture_output=True,
                       text=True, env={"PYTHONPATH": str(ROOT / "host"), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 2
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("out, option", [("tl-q4_0.gguf", ["--quant", "q4_0"]), ("hf", ["--quant", "q8_0"]),
                                         ("x.gguf", ["--recipe", "*=q4_0"])])
def test_synth_refuses_quant_options_for_float16_outputs_instead_of_ignoring_them(tmp_path, out, option):
    # it used to write an F16 GGUF named tl-q4_0.gguf: a llama.cpp comparison on unequal weights
    p = subprocess.run([sys.executable, "-m", "elk.models.synth", "tiny", "--vocab", str(fixture_path("tok512.bin")),
                        "-o", out, *option], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT / "host"), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 2
    assert "apply to .elk output only" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / out).exists()


@pytest.mark.parametrize("out", ["missing/tl.gguf", "a-file/tl/", "missing/tl.elk"])
def test_synth_into_a_folder_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path, out):
    # a GGUF into a missing folder (docs/performance.md's setup writes into /tmp/elkbench) was a traceback
    (tmp_path / "a-file").write_text("")
    p = subprocess.run([sys.executable, "-m", "elk.models.synth", "tiny", "--vocab", str(fixture_path("tok512.bin")),
                        "-o", out], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT / "host"), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 2
    assert "cannot write" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_synth_hf_folder_packs_through_elks_hf_reader_into_the_same_tensors(outputs, tmp_path):
    # The HF reader undoes the rotate-half permutation; every tensor must come back bit for bit.
    out = tmp_path / "from-hf.elk"
    p = subprocess.run([sys.executable, "-m", "elk", "pack", str(outputs["hf"]), "--tokenizer",
                        str(fixture_path("tok512.bin")), "--quant", "f16", "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    direct, via_hf = image.read_image(outputs["elk"]), image.read_image(out)
    assert list(direct.tensors) == list(via_hf.tensors)
    for name, t in direct.tensors.items():
        assert t.data.tobytes() == via_hf.tensors[name].data.tobytes(), name


def test_synth_safetensors_output_gets_a_config_beside_it_and_refuses_to_clobber(tmp_path):
    synth.synthesize("tiny", tmp_path / "tl.safetensors", vocab_path=fixture_path("tokenizer.model"))
    assert (tmp_path / "config.json").is_file() and (tmp_path / "tokenizer.model").is_file()
    assert len(load_file(str(tmp_path / "tl.safetensors"))) == len(synth.preset_config("tiny").tensor_keys())
    with pytest.raises(synth.SynthError, match="already has a config.json"):
        synth.synthesize("tiny", tmp_path / "again.safetensors")
