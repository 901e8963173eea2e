"""The C decoder on shapes stories260K does not cover, from the project's synthetic checkpoints
(elk.models.synth): an untied output tensor, F16 weights, a quantized embedding table, mixed
per-tensor types, multi-head attention with head_dim 48 and a 32000-token vocabulary. Compared with
elk.reference using the ref kernel table (same summation order, so equal to float rounding)."""

import numpy as np
import pytest

from conftest import fixture_path

from elk.models import synth
from elk.reference import Reference
from elk.runtime import Model

CASES = {
    "tiny-f16-untied": ("tiny", "tok512.bin", "f16", None),
    "tiny-mixed": ("tiny", "tok512.bin", "q4_0", "token_embd=q8_0,output=f16,blk.0.*=q8_0"),
    "stories15m-q8_0": ("stories15m", "tokenizer.model", "q8_0", None),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory, host_build):
    out = tmp_path_factory.mktemp("synth")
    return {name: synth.synthesize(preset, out / f"{name}.elk", vocab_path=fixture_path(vocab), quant=quant,
                                   recipe=recipe, seed=11)
            for name, (preset, vocab, quant, recipe) in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_runtime_logits_match_reference_on_synthetic_shapes(images, name):
    with Model(images[name], kernels="ref", threads=1) as m:
        if name.startswith("tiny"):
            assert not m.config.tied_output
        ids = m.tokenize("Once upon a time there was a dog named Max who liked to run in the park")
        got = m.logits(ids)
    want = Reference(images[name]).logits(ids)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_runtime_generation_logits_equal_teacher_forced_logits(images):
    # The decode loop (one token per forward, KV cache) sees the same numbers as one batched
    # forward over the whole sequence: greedy ids must be the argmax of each batched row.
    with Model(images["stories15m-q8_0"], kernels="ref", threads=1) as m:
        prompt = m.tokenize("Max ran to the park")
        out = [t for t, _ in m.generate_tokens(prompt, max_tokens=20, temperature=0)]
        rows = m.logits(prompt + out)
    assert out == [int(np.argmax(r)) for r in rows[len(prompt) - 1:-1]]
