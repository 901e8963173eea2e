"""NPU prefill through the C runner: logits stay close to the CPU float path (stories260K and a
TinyLlama-shaped model), the first generated token agrees, shadow outliers measurably help, decode
stays on the CPU, partial chunks are padded, and declined or failing layers fall back to the CPU with
a notice instead of a wrong answer."""

import numpy as np
import pytest
from conftest import fixture_path

from elk import spec
from elk import tokenizer as tok
from elk.npu.calibrate import build_section
from elk.npu.evaluate import compare, compare_runtime
from elk.npu.native import Session
from elk.npu.section import pack_section, parse_section
from elk.npu.testmodel import tinyllama_shaped

# The fixture README's greedy text starts from these prompts (the empty prompt is BOS alone: one
# token, so it never reaches the NPU); the longer one continues it, where the float model's top two
# next tokens are only 0.13 apart.
FIXTURE_PROMPTS = ("Once upon a time",)
LONGER_PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play"
NEAR_TIE = 0.5  # a float logit gap below this may flip under int8 noise (max |dlogit| is ~1.5 here)


@pytest.fixture(scope="module")
def stories(host_build):
    from elk.convert import load_model

    m = load_model(fixture_path("stories260K.bin"), tokenizer=fixture_path("tok512.bin"))
    return m, pack_section(build_section(m, chunk=32))


@pytest.fixture(scope="module")
def tiny(stories):
    m = tinyllama_shaped(stories[0].vocab, n_layers=2, seed=1)
    with_outliers = pack_section(build_section(m, chunk=32))
    without = pack_section(build_section(m, chunk=32, max_outliers=0))
    return m, with_outliers, without


def _prompts(vocab):
    extra = "The little dog ran to the park and saw a big tree. He wanted to climb it, but the tree was tall, so he"
    return [tok.encode(vocab, t, bos=True) for t in FIXTURE_PROMPTS + (LONGER_PROMPT, extra)]


def _first_tokens_agree_or_near_tie(r, strict: int):
    """The first `strict` prompts must agree exactly; the others may differ only on a float near-tie."""
    for i, ((a, b), gap) in enumerate(zip(r.first_token, r.first_gap)):
        assert a == b if i < strict else (a == b or gap < NEAR_TIE), (i, r.lines())


def test_stories260k_npu_prefill_close_to_float_and_first_token_agrees(stories):
    m, blob = stories
    for backend in ("sim", "litert"):
        r = compare(m, blob, _prompts(m.vocab), backend)
        assert r.stats["chunks"] > 0 and r.stats["cpu_fallbacks"] == 0
        assert r.top1 >= 0.85, (backend, r.lines())
        assert r.kl < 0.05, (backend, r.lines())
        _first_tokens_agree_or_near_tie(r, strict=1)


def test_tinyllama_shaped_npu_prefill_close_to_float(tiny):
    m, blob, _ = tiny
    r = compare(m, blob, _prompts(m.vocab), "sim")
    assert r.top1 >= 0.6, r.lines()  # random weights: flat logits, many near-ties
    assert r.kl < 0.2, r.lines()
    _first_tokens_agree_or_near_tie(r, strict=0)


def test_shadow_outliers_reduce_error_against_the_same_export_without_them(tiny):
    m, with_outliers, without = tiny
    assert sum(len(L.outliers) for L in parse_section(with_outliers).layers) > 0
    assert sum(len(L.outliers) for L in parse_section(without).layers) == 0
    prompts = _prompts(m.vocab)
    a = compare(m, with_outliers, prompts, "sim")
    b = compare(m, without, prompts, "sim")
    assert a.kl < 0.5 * b.kl, (a.lines(), b.lines())
    assert a.top1 > b.top1


def test_backend_declining_half_the_layers_still_gives_correct_output(stories):
    m, blob = stories
    s = Session(blob, "sim", decline_odd=True)
    n = len(parse_section(blob).layers)
    assert [s.state(i) for i in range(n)] == ["npu" if i % 2 == 0 else "declined" for i in range(n)]
    assert s.log.count("declines") == n // 2
    # declined layers hand the call back (the CPU computes them), the others go through the NPU
    x = np.random.default_rng(0).standard_normal((40, 64)).astype(np.float32)
    assert s.linear("WK", 0, x, 32) is None  # entry 1: declined
    assert s.linear("WQ", 0, x, 64) is not None  # entry 0: offloaded
    r = compare(m, blob, _prompts(m.vocab), "sim", decline_odd=True)
    assert r.stats["cpu_fallbacks"] > 0 and r.stats["chunks"] > 0
    assert r.top1 >= 0.85 and r.kl < 0.05, r.lines()


def test_backend_failing_at_run_time_falls_back_with_one_notice(stories):
    m, blob = stories
    r = compare(m, blob, _prompts(m.vocab), "sim", fail_after=3)
    assert r.stats["chunks"] == 3  # then the failing layer (and only it) moves to the CPU
    assert r.top1 >= 0.85 and r.kl < 0.05, r.lines()
    s = Session(blob, "sim", fail_after=1)
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    assert s.linear("WQ", 0, x, 64) is not None
    assert s.linear("WK", 0, x, 32) is None
    assert s.state(1) == "failed"
    assert s.log.strip().splitlines() == ["npu: sim failed on blk.0.attn_k; CPU runs it (-10)"]
    assert s.linear("WK", 0, x, 32) is None  # stays on the CPU, no second notice
    assert len(s.log.strip().splitlines()) == 1


def test_decode_stays_on_cpu_and_partial_chunks_are_padded(stories):
    _, blob = stories
    s = Session(blob, "sim")
    x = np.random.default_rng(2).standard_normal((45, 64)).astype(np.float32)
    assert s.linear("WQ", 0, x[:1], 64) is None  # one token: decode, CPU
    full = s.linear("WQ", 0, x, 64)  # 32 + 13 (padded)
    parts = np.concatenate([s.linear("WQ", 0, x[:20], 64), s.linear("WQ", 0, x[20:], 64)])
    assert np.array_equal(full, parts)  # tokens are independent: padding never leaks into results
    L = parse_section(blob).layers[0]
    w = np.asarray(stories[0].get("WQ", 0))
    assert np.abs(full - x @ w.T).max() < 8 * L.out_scale


def test_runtime_with_npu_sim_matches_runtime_cpu_on_fixture_prompts(stories, tmp_path):
    from elk import image as im

    m, blob = stories
    path = tmp_path / "s.elk"
    im.write_image(path, m, npu=blob)
    for backend in ("sim", "litert"):
        r = compare_runtime(path, list(FIXTURE_PROMPTS) + [LONGER_PROMPT], backend)
        assert r.stats["chunks"] == 2 * 5 * 7  # every block linear of both prompts went to the NPU
        _first_tokens_agree_or_near_tie(r, strict=1)
        assert r.top1 >= 0.85 and r.kl < 0.05, (backend, r.lines())


def test_sim_cost_model_uses_board_tops_and_bandwidth(stories):
    _, blob = stories
    x = np.zeros((32, 64), np.float32)
    slow = Session(blob, "sim", tops=0.5, dma_gbs=1.0)
    fast = Session(blob, "sim", tops=5.0, dma_gbs=10.0)
    slow.linear("WQ", 0, x, 64)
    fast.linear("WQ", 0, x, 64)
    t_slow, t_fast = slow.stats()["npu_seconds"], fast.stats()["npu_seconds"]
    ops, nbytes = 2 * 32 * 64 * 64, 64 * 64 + 4 * 64 + 32 * (64 + 64)
    assert t_slow == pytest.approx(ops / 0.5e12 + nbytes / 1e9, rel=1e-9)
    assert t_fast == pytest.approx(t_slow / 10, rel=1e-9)


def test_section_of_another_model_is_declined_and_runtime_answers_like_the_cpu(stories, tiny, tmp_path):
    from elk import image as im
    from elk import runtime
    from elk.npu.offload import attach

    m, _ = stories
    path = tmp_path / "mismatch.elk"
    im.write_image(path, m, npu=tiny[1])  # stories260K weights, NPU section of the dim-256 model
    with runtime.Model(path, threads=1) as rt:
        ids = rt.tokenize(FIXTURE_PROMPTS[0])
        cpu = rt.logits(ids)
        sess = attach(rt, "sim")
        npu = rt.logits(ids)
        assert np.array_equal(cpu, npu)
        assert sess.stats()["chunks"] == 0
        assert "has another shape for blk.0.attn_q" in sess.log


def test_attach_off_detaches_a_session(stories, tmp_path):
    from elk import image as im
    from elk import runtime
    from elk.npu.offload import attach

    m, blob = stories
    path = tmp_path / "s.elk"
    im.write_image(path, m, npu=blob)
    with runtime.Model(path, threads=1) as rt:
        ids = rt.tokenize(LONGER_PROMPT)
        cpu = rt.logits(ids)
        sess = attach(rt, "sim")
        assert not np.array_equal(cpu, rt.logits(ids))  # int8 prefill changes the logits a little
        attach(rt, "off")
        assert np.array_equal(cpu, rt.logits(ids))
        assert sess.stats()["chunks"] == 35


def test_runner_input_quantization_is_tflite_quantize(stories):
    """The int8 chunk the runner hands the backend equals TFLite QUANTIZE of x (numpy reference)."""
    from elk.npu import intmath

    _, blob = stories
    L = parse_section(blob).layers[0]
    x = np.random.default_rng(4).standard_normal((32, 64)).astype(np.float32) * 3
    x[0, :4] = [0.5 * L.in_scale, -0.5 * L.in_scale, 1e9, -1e9]  # ties and saturation
    want = intmath.dequantize(intmath.fully_connected_int8(intmath.quantize(x, L.in_scale, L.in_zp), L.weights,
                                                           L.bias, L.in_zp, L.multiplier, L.shift, L.out_zp),
                              L.out_scale, L.out_zp)
    got = Session(blob, "sim").linear("WQ", 0, x, 64)
    assert len(L.outliers) == 0  # layer 0 wq has no shadow term: the result is the NPU's alone
    assert np.array_equal(got, want)
