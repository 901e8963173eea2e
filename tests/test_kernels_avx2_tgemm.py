"""The transposed-tile prefill GEMMs: the AVX-512 VNNI build's (gemm_t512 in firmware/src/kernels/avx2.c),
which carries every block of 16 tokens in batched prefill for Q4_0 and Q8_0 weights, and the plain-AVX2
and AVX-VNNI builds' 8-row version (gemm_t256), which carries every block of 4 tokens (Q8_0 through
maddubs as |w| against sign(x, w) on the plain build).

Decision: it adds each block's exact integer sum as (float)isum * (d_w * d_x), rounded, then added, in
block order — the reference dot's own order — so its results equal ref.c's dot bit for bit with real
(non-unit) scales, for any row range and any row count (full 16-row tiles, partial tiles at a range
end), and it never writes outside [r0, r1)."""

import numpy as np
import pytest

from test_kernels_avx2_numerics import (CDEF, Q4_0, Q8_0, Q4_BLOCK, Q8_BLOCK, build_variant, gemm,  # noqa: F401
                                        random_q4, random_q8)
import os

import cffi

from conftest import ROOT

# build -> (weight types its transposed tile takes, token sub-tile)
TILES = {"native": ((Q4_0, Q8_0), 16), "plain-avx2": ((Q4_0, Q8_0), 4), "avx2-vnni": ((Q4_0, Q8_0), 4)}


@pytest.fixture(scope="module")
def libs(host_build, tmp_path_factory):
    """build name -> (ffi, lib), built on first use."""
    ffi, cache = cffi.FFI(), {}
    ffi.cdef(CDEF)

    def get(build):
        if build not in cache:
            path = host_build / "libelk.so" if build == "native" else build_variant(build, tmp_path_factory.mktemp(build))
            cache[build] = (ffi, ffi.dlopen(os.fspath(path)))
        return cache[build]
    return get


def native_has_avx512_vnni():
    flags = open("/proc/cpuinfo").read()
    return " avx512_vnni" in flags and " avx512bw" in flags


@pytest.mark.parametrize("build, wtype", [(b, t) for b, (types, _) in TILES.items() for t in types])
@pytest.mark.parametrize("n_tok, n, rows, r0, r1", [
    (16, 256, 40, 0, 40),     # two full 16-row tiles and a partial one
    (37, 96, 21, 3, 20),      # 32 tokens transposed + a 5-token tail; range not 16-aligned
    (80, 2048, 18, 1, 18),    # more than one 64-token chunk; TinyLlama width
    (7, 576, 11, 2, 11),      # 8-row tiles: one full, one partial; SmolLM width; 4 tokens + a tail of 3
])
def test_transposed_gemm_equals_reference_dot_bit_for_bit(libs, build, wtype, n_tok, n, rows, r0, r1):
    if not native_has_avx512_vnni():
        pytest.fail("this test machine is expected to have AVX-512 VNNI (the host board builds -march=native)")
    k = libs(build)
    ffi, _ = k
    sub = TILES[build][1]
    rng = np.random.default_rng(wtype * 1000 + n_tok + n)
    blocks = n // 32
    make = random_q8 if wtype == Q8_0 else random_q4
    w = np.concatenate([make(rng, blocks) for _ in range(rows)])
    x = np.concatenate([random_q8(rng, blocks) for _ in range(n_tok)])
    y = gemm(k, wtype, n, w, w.itemsize * blocks, r0, r1, x, n_tok, rows)
    ref = ffi.addressof(k[1], "elk_kernels_ref").dot[wtype]
    for t in range(n_tok - n_tok % sub):  # the tokens the transposed tile carries
        for r in range(rows):
            if r0 <= r < r1:
                want = ref(n, ffi.from_buffer(w[r * blocks:(r + 1) * blocks]), ffi.from_buffer(x[t * blocks:(t + 1) * blocks]))
                assert y[t, r] == np.float32(want), (t, r, float(y[t, r]), want)
            else:
                assert np.isnan(y[t, r]), f"gemm wrote row {r} outside [{r0}, {r1})"
    assert np.isfinite(y[:, r0:r1]).all()
