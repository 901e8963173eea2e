"""`elk eval`: quantized stories260K images scored against the float32 image on a teacher-forced text
(top-1 agreement and mean KL), through the numpy reference and the C runtime."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import fixture_path
from elk import evaluate as ev
from elk import image as im
from elk.convert import llama2c


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    m = llama2c.read(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    d = tmp_path_factory.mktemp("eval")
    out = {}
    for q in ("f32", "q8_0", "q4_0"):
        out[q] = d / f"{q}.elk"
        im.write_image(out[q], m, quant=q)
    return out


def test_compare_logits_metrics_on_known_distributions():
    lr = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]], dtype=np.float32))
    lq = np.log(np.array([[0.25, 0.5, 0.25], [0.1, 0.8, 0.1]], dtype=np.float32))
    r = ev.compare_logits(lq, lr, [0, 0, 1])
    assert r["n_tokens"] == 2 and r["top1"] == 0.5
    kl0 = 0.5 * np.log(2) + 0.25 * np.log(0.5)  # KL([.5,.25,.25] || [.25,.5,.25])
    assert r["mean_kl"] == pytest.approx(kl0 / 2, rel=1e-5) and r["max_kl"] == pytest.approx(kl0, rel=1e-5)
    assert r["ppl_ref"] == pytest.approx(np.exp(-(np.log(0.5) + np.log(0.8)) / 2), rel=1e-5)


def test_eval_orders_quantization_quality(images):
    same = ev.evaluate(images["f32"], images["f32"], engine="reference")
    q8 = ev.evaluate(images["q8_0"], images["f32"], engine="reference")
    q4 = ev.evaluate(images["q4_0"], images["f32"], engine="reference")
    assert same.top1 == 1.0 and same.mean_kl == pytest.approx(0, abs=1e-9)
    assert q8.n_tokens > 100 and q8.top1 >= 0.97 and 0 < q8.mean_kl < 0.005
    assert q4.top1 < q8.top1 and q4.mean_kl > 10 * q8.mean_kl
    assert q4.ppl_image > q8.ppl_image > 0


def test_eval_with_runtime_agrees_with_reference(images, host_build):
    rt = ev.evaluate(images["q8_0"], images["f32"], engine="runtime")
    ref = ev.evaluate(images["q8_0"], images["f32"], engine="reference")
    assert rt.engine == "runtime" and rt.n_tokens == ref.n_tokens
    assert abs(rt.top1 - ref.top1) <= 2 / rt.n_tokens
    assert rt.mean_kl == pytest.approx(ref.mean_kl, rel=0.1, abs=1e-5)


def test_eval_cli_prints_top1_and_kl_and_rejects_other_models(images, tmp_path):
    txt = tmp_path / "t.txt"
    txt.write_text("Lily and Ben went to the park. They saw a big dog. The dog was friendly.")
    r = subprocess.run([sys.executable, "-m", "elk", "eval", str(images["q4_0"]), "--ref", str(images["f32"]),
                        "--text", str(txt), "--engine", "reference"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "top-1 agreement:" in r.stdout and "mean KL:" in r.stdout
    other = tmp_path / "other.elk"
    from elk.convert import Config, Model, Tensor

    c = Config(dim=32, hidden_dim=64, n_layers=1, n_heads=4, n_kv_heads=4, vocab_size=512, seq_len=16,
               tied_output=True)
    rng = np.random.default_rng(0)
    model = Model(c, {k: Tensor.of(rng.standard_normal(c.tensor_shape(k[0])).astype(np.float32))
                      for k in c.tensor_keys()}, vocab=im.read_image(images["f32"]).vocab())
    im.write_image(other, model)
    r = subprocess.run([sys.executable, "-m", "elk", "eval", str(other), "--ref", str(images["f32"])],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not the same model" in r.stderr and r.stderr.count("\n") == 1


def test_eval_cli_max_tokens_below_two_names_the_option(images):
    r = subprocess.run([sys.executable, "-m", "elk", "eval", str(images["q8_0"]), "--ref", str(images["f32"]),
                        "--max-tokens", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--max-tokens 1: at least 2" in r.stderr, r.stderr
