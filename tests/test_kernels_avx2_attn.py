"""The avx2 table's attention and SwiGLU against ref's, through cffi on the built libelk.so: equal
bit for bit (kernels.h's contract for these two slots; ref's numerics are elk.reference's), on
random heads, GQA groups, odd position counts, peaked softmaxes whose exp underflows, and the
inputs where (float)exp((double)x) is hardest to get right."""

import os

import cffi
import numpy as np
import pytest

from kernel_table import CDEF


@pytest.fixture(scope="module")
def k(host_build):
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(os.fspath(host_build / "libelk.so"))


def attend(k, table, q, kc, vc, n, scale):
    ffi, lib = k
    nq, hd = q.shape
    stride = kc.shape[1]
    n_ctx = n + 3  # score rows wider than n: the stride is honoured
    scores = np.full((nq, n_ctx), np.nan, dtype=np.float32)
    out = np.full((nq, hd), np.nan, dtype=np.float32)
    getattr(lib, table).attend(hd, nq, n, ffi.from_buffer("float[]", q), ffi.from_buffer("float[]", kc),
                               ffi.from_buffer("float[]", vc), stride, scale, ffi.from_buffer("float[]", scores),
                               n_ctx, ffi.from_buffer("float[]", out))
    return scores[:, :n].copy(), out


def cache(rng, n, kv_dim, spread):
    return (rng.standard_normal((n, kv_dim)) * spread).astype(np.float32)


@pytest.mark.parametrize("hd, nq, n", [
    (64, 8, 1), (64, 8, 7), (64, 8, 8), (64, 8, 301),   # TinyLlama's heads and group, 1..301 positions
    (8, 2, 37), (32, 1, 64), (48, 3, 19),               # stories260K's head size; 48 = no 32-wide block
    (64, 20, 17),                                       # a group wider than one pass (16 heads)
    (12, 2, 9),                                         # head size not a multiple of 8: ref's loops
    (64, 12, 70), (64, 4, 33), (64, 3, 9), (64, 1, 200),  # 8-, 4- and 1-head score paths, sums 8 at a time
    (128, 4, 100), (256, 5, 40),                        # value chunks of 32 and 16 positions, 2-4 passes of 64
    (16, 65, 9),                                        # more heads than the vector path takes: ref's loops
])
@pytest.mark.parametrize("spread", [0.1, 3.0, 40.0])   # flat, typical, peaked (exp underflows to 0)
def test_avx2_attention_equals_ref_bit_for_bit(k, hd, nq, n, spread):
    rng = np.random.default_rng(hd * 1000 + nq * 10 + n)
    kv_dim = hd * 2 + 8  # cache rows wider than one head: the stride is honoured
    kc, vc = cache(rng, n, kv_dim, spread), cache(rng, n, kv_dim, 1.0)
    q = (rng.standard_normal((nq, hd)) * spread).astype(np.float32)
    scale = np.float32(1.0 / np.sqrt(hd))
    want = attend(k, "elk_kernels_ref", q, kc, vc, n, scale)
    got = attend(k, "elk_kernels_avx2", q, kc, vc, n, scale)
    assert np.isfinite(want[1]).all()
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    # and ref is the textbook formula
    s = (q.astype(np.float64) @ kc[:, :hd].T.astype(np.float64)) * float(scale)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert np.allclose(want[1], p @ vc[:, :hd].astype(np.float64), rtol=1e-4, atol=1e-5)


def test_avx2_attention_reads_the_head_at_its_offset_in_the_cache_row(k):
    # model.c passes k + kv_head * hd with the full kv_dim stride: only that head's columns count
    ffi, lib = k
    rng = np.random.default_rng(5)
    hd, n, kv_dim = 16, 12, 48
    kc, vc = cache(rng, n, kv_dim, 1.0), cache(rng, n, kv_dim, 1.0)
    q = rng.standard_normal((2, hd)).astype(np.float32)
    outs = []
    for table in ("elk_kernels_ref", "elk_kernels_avx2"):
        out = np.zeros((2, hd), dtype=np.float32)
        scores = np.zeros((2, n), dtype=np.float32)
        kp = ffi.cast("float *", ffi.from_buffer("float[]", kc)) + hd
        vp = ffi.cast("float *", ffi.from_buffer("float[]", vc)) + hd
        getattr(lib, table).attend(hd, 2, n, ffi.from_buffer("float[]", q), kp, vp, kv_dim, 0.25,
                                   ffi.from_buffer("float[]", scores), n, ffi.from_buffer("float[]", out))
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])
    s = q.astype(np.float64) @ kc[:, hd:2 * hd].T * 0.25
    p = np.exp(s - s.max(axis=1, keepdims=True))
    assert np.allclose(outs[0], (p / p.sum(axis=1, keepdims=True)) @ vc[:, hd:2 * hd], rtol=1e-4, atol=1e-5)


def swiglu(k, table, g, u):
    ffi, lib = k
    out = g.copy()
    getattr(lib, table).swiglu(ffi.from_buffer("float[]", out), ffi.from_buffer("float[]", u), out.size)
    return out


@pytest.mark.parametrize("n", [1, 7, 8, 5632, 5637])
def test_avx2_swiglu_equals_ref_bit_for_bit(k, n):
    rng = np.random.default_rng(n)
    g = (rng.standard_normal(n) * 6).astype(np.float32)
    u = rng.standard_normal(n).astype(np.float32)
    assert np.array_equal(swiglu(k, "elk_kernels_avx2", g, u), swiglu(k, "elk_kernels_ref", g, u))


def test_avx2_exp_equals_ref_over_the_whole_float_range_it_sees(k):
    # floats in [-120, 120] on a fine grid plus specials, through SwiGLU (u = 1): g / (1 + exp(-g))
    # exercises exp(-g) on both sides of the polynomial's range and its exact fallbacks
    grid = np.linspace(-120, 120, 400_003, dtype=np.float32)  # past -104, where exp rounds to +0
    near = np.array([-87.0, -87.33654, -88.0, -88.72284, 88.0, 88.7, 0.0, -0.0, 1e-30, -1e-30,
                     103.97, 103.972, 103.9721, 104.0, np.nextafter(np.float32(104), np.float32(0)), 110.0,
                     np.float32(np.log(2.0)), np.inf, -np.inf, 1e30, -1e30], dtype=np.float32)
    # floats whose exp lies within 64 double ulp of a float rounding midpoint (found by a numpy search
    # over 10^8 random floats): the polynomial cannot call these and the exact fallback must
    hard = -np.array([7.5697612373915035e-06, 0.00010996452328981832, -2.8023555278778076], dtype=np.float32)
    g = np.concatenate([grid, near, hard, np.nextafter(grid[:1000], np.float32(np.inf))])
    u = np.ones_like(g)
    a, b = swiglu(k, "elk_kernels_avx2", g, u), swiglu(k, "elk_kernels_ref", g, u)
    assert np.array_equal(a, b, equal_nan=True)


def test_avx2_softmax_exp_equals_ref_at_chosen_score_gaps(k):
    # q = e0 and keys k_s = (x_s, 0, ...) with scale 1 make the scores exactly x_s, so the softmax
    # sees exactly these gaps below the maximum (0): the subnormal range, the +0 cut-off near
    # -103.97, the polynomial's clamp edges, and the far tail
    # (every other term is below 2^-24 of the maximum's, so the sum is exactly 1 and each probability
    # is its exp itself)
    gaps = np.array([0.0, -86.9, -87.0, -87.1, -90.0, -103.0, -103.5, -103.97, -103.972, -104.0, -104.5,
                     -110.0, -200.0, -1e30, -20.0, -50.0], dtype=np.float32)
    hd, n = 8, gaps.size
    kc = np.zeros((n, hd), dtype=np.float32)
    kc[:, 0] = gaps
    vc = np.random.default_rng(1).standard_normal((n, hd)).astype(np.float32)
    q = np.zeros((1, hd), dtype=np.float32)
    q[0, 0] = 1.0
    want = attend(k, "elk_kernels_ref", q, kc, vc, n, np.float32(1.0))
    got = attend(k, "elk_kernels_avx2", q, kc, vc, n, np.float32(1.0))
    p = want[0][0]
    assert p[0] == 1.0 and p[6] > 0 and p[9] == 0  # e^-103.5 is the smallest subnormal, e^-104 is +0
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_avx2_attention_signed_zero_and_nan_scores_match_ref(k):
    """Scores of +0 and -0 (a zero query) and a NaN score: the vector max may pick either zero and
    skips NaN as ref does, and the results still equal ref's bit for bit (NaN where ref has NaN)."""
    rng = np.random.default_rng(7)
    hd, nq, n = 64, 8, 41
    kc, vc = cache(rng, n, hd, 1.0), cache(rng, n, hd, 1.0)
    q = (rng.standard_normal((nq, hd))).astype(np.float32)
    q[:4] = 0.0
    q[1] = -0.0
    scale = np.float32(0.125)
    want = attend(k, "elk_kernels_ref", q, kc, vc, n, scale)
    got = attend(k, "elk_kernels_avx2", q, kc, vc, n, scale)
    assert np.array_equal(got[0].view(np.uint32), want[0].view(np.uint32))
    assert np.array_equal(got[1].view(np.uint32), want[1].view(np.uint32))
    kc[5, 3] = np.nan  # position 5's score is NaN for every head that reads element 3
    want = attend(k, "elk_kernels_ref", q, kc, vc, n, scale)
    got = attend(k, "elk_kernels_avx2", q, kc, vc, n, scale)
    assert np.isnan(want[1][4:]).all()
    assert np.array_equal(np.isnan(got[1]), np.isnan(want[1]))
    assert np.array_equal(got[1], want[1], equal_nan=True)
