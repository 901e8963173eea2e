"""The numpy reference decoder: reproduces llama2.c's greedy stories260K text in float32, its KV cache
matches a full recompute, and its quantized matmul follows firmware/src/kernels/ref.c exactly."""

import math
import struct

import numpy as np
import pytest

from conftest import fixture_path
from elk import image as im
from elk import quant
from elk import tokenizer as tk
from elk.convert import llama2c
from elk.reference import Linear, Reference

STORY = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
         "One day, she saw a big, red ball.")


@pytest.fixture(scope="module")
def model():
    return llama2c.read(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))


@pytest.fixture(scope="module")
def images(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    out = {}
    for q in ("f32", "q8_0", "q4_0", "f16"):
        out[q] = d / f"s_{q}.elk"
        im.write_image(out[q], model, quant=q)
    return out


def test_f32_greedy_from_bos_reproduces_llama2c_story(images):
    img = im.read_image(images["f32"])
    ids = Reference(img).greedy([img.vocab().bos_id], 60)
    text = tk.decode(img.vocab(), ids)
    assert text.startswith(STORY), text


def test_model_and_f32_image_give_identical_logits(model, images):
    ids = [1, 403, 407, 261, 378]
    a = Reference(model).logits(ids)
    b = Reference(images["f32"]).logits(ids)
    assert a.shape == (5, 512) and a.dtype == np.float32
    assert np.array_equal(a, b)


def test_kv_cache_step_by_step_equals_whole_sequence(images):
    r = Reference(images["q8_0"])
    ids = [1, 403, 407, 261, 378, 9, 30]
    whole = r.logits(ids)
    r.reset()
    steps = np.concatenate([r.forward([i]) for i in ids])
    np.testing.assert_allclose(steps, whole, rtol=1e-5, atol=1e-5)


def test_quantized_images_stay_close_to_f32(images):
    ids = [1] + Reference(images["f32"]).greedy([1], 60)
    f32 = Reference(images["f32"]).logits(ids)
    for q, min_agree in (("q8_0", 0.95), ("f16", 0.99), ("q4_0", 0.6)):
        lq = Reference(images[q]).logits(ids)
        agree = np.mean(lq.argmax(1) == f32.argmax(1))
        assert agree >= min_agree, (q, agree)
        assert not np.array_equal(lq, f32)  # the weights really are quantized


def _fp16(x: float) -> float:
    return float(np.float32(x).astype(np.float16).astype(np.float32))


def _q8_row_scalar(x):
    """ref.c quantize_q8_0, one element at a time with C's roundf."""
    blocks = []
    for b in range(0, len(x), 32):
        amax = max(abs(float(v)) for v in x[b:b + 32])
        d = np.float32(amax) / np.float32(127)
        inv = np.float32(1) / d if d != 0 else np.float32(0)
        qs = []
        for v in x[b:b + 32]:
            t = float(np.float32(v) * inv)
            qs.append(int(math.copysign(math.floor(abs(t) + 0.5), t)))  # roundf: half away from 0
        blocks.append((_fp16(d), qs))
    return blocks


def _dot_scalar(wblocks, xblocks):
    acc = np.float32(0)
    for (dw, qw), (dx, qx) in zip(wblocks, xblocks):
        isum = sum(a * b for a, b in zip(qw, qx))
        acc = np.float32(acc + np.float32(isum) * np.float32(np.float32(dw) * np.float32(dx)))
    return acc


@pytest.mark.parametrize("wtype", ["Q8_0", "Q4_0"])
def test_quantized_matmul_follows_ref_c_numerics(wtype):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 96)).astype(np.float32)
    x = rng.standard_normal((2, 96)).astype(np.float32) * 3
    raw = quant.quantize(w, wtype)
    lin = Linear(wtype, raw, w.shape)
    got = lin(x)
    for r in range(6):
        row = raw[r].tobytes()
        wblocks = []
        for b in range(3):
            blk = row[b * (len(row) // 3):(b + 1) * (len(row) // 3)]
            d = float(np.frombuffer(blk[:2], np.float16)[0])
            if wtype == "Q8_0":
                qs = list(np.frombuffer(blk[2:], np.int8))
            else:
                qs = [(c & 15) - 8 for c in blk[2:]] + [(c >> 4) - 8 for c in blk[2:]]
            wblocks.append((d, [int(v) for v in qs]))
        for t in range(2):
            assert got[t, r] == _dot_scalar(wblocks, _q8_row_scalar(x[t])), (r, t)


def test_rope_rotates_consecutive_pairs_with_theta():
    r = Reference.__new__(Reference)
    from elk.convert import Config

    r.config = Config(dim=8, hidden_dim=8, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=4, seq_len=8,
                      rope_theta=100.0)
    r.inv_freq = (100.0 ** (-2.0 * np.arange(2) / 4)).astype(np.float32)
    x = np.zeros((1, 8), dtype=np.float32)
    x[0, 2] = 1.0  # head 0, pair 1 (freq 100^-0.5 = 0.1), first element
    out = r._rope(x, np.array([3]))
    np.testing.assert_allclose(out[0, 2:4], [math.cos(0.3), math.sin(0.3)], rtol=1e-6)
    assert np.count_nonzero(out) == 2
