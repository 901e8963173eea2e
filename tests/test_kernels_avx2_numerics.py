"""AVX2 kernel table against the reference table, through cffi on the built libelk.so.

Contract (firmware/src/kernels/kernels.h): Q8_0 activation bytes are identical to ref; integer
block sums are identical (checked with unit scales, where the float result is an exact integer);
float results agree within a relative 1e-5 of the sum of |terms| (the order of additions differs).
Run four times: the native libelk.so (AVX-512 VNNI/VBMI/GFNI paths on this CPU) and the kernel files
built for three other x86-64 classes (VARIANTS below).
"""

import os
import pathlib
import subprocess

import cffi
import numpy as np
import pytest

from conftest import ROOT
from kernel_table import BF16, CDEF, F16, F32, Q4_0, Q8_0

Q8_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", 32)])
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
REQUIRED = 0b111  # AVX2 | FMA | F16C


# The kernel files alone, built for other x86-64 CPUs than this one: the paths the native libelk.so
# here (AVX-512 VNNI/VBMI/GFNI) does not contain. Flags as the project builds them (-O3, no FMA
# contraction); the CPU running the tests must have what the flags ask for (this host has all).
VARIANTS = {
    # plain AVX2+FMA+F16C, maddubs (Haswell .. Zen 3)
    "plain-avx2": ["-mavx2", "-mfma", "-mf16c", "-mno-avxvnni"],
    # AVX2 with AVX-VNNI (256-bit vpdpbusd, no AVX-512: Alder Lake and later client cores)
    "avx2-vnni": ["-mavx2", "-mfma", "-mf16c", "-mavxvnni"],
    # AVX-512 VNNI without VBMI and GFNI (Cascade Lake): the 512-bit GEMV gathers Q4_0 nibbles with
    # 16-byte inserts and scales with scalar loads
    "avx512-no-vbmi": ["-march=native", "-mno-avx512vbmi", "-mno-gfni"],
}


def build_variant(name, out_dir) -> pathlib.Path:
    src = ROOT / "firmware" / "src"
    out = out_dir / f"libkernels_{name}.so"
    cmd = ["cc", "-O3", "-std=c11", "-shared", "-fPIC", *VARIANTS[name], "-ffp-contract=off", "-DELK_KERNELS_AVX2",
           f"-I{ROOT / 'firmware' / 'include'}", f"-I{src}",
           *(str(src / "kernels" / f) for f in ("ref.c", "tables.c", "avx2.c", "avx2_gemv.c", "avx2_attn.c")),
           str(ROOT / "firmware" / "platform" / "posix" / "cpu.c"), "-o", str(out), "-lm"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        pytest.fail(f"building the {name} kernels failed:\n{p.stderr[-2000:]}")
    return out


@pytest.fixture(scope="module", params=["native", *VARIANTS])
def k(request, host_build, tmp_path_factory):
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    if request.param == "native":
        lib = ffi.dlopen(os.fspath(host_build / "libelk.so"))
    else:
        lib = ffi.dlopen(os.fspath(build_variant(request.param, tmp_path_factory.mktemp(request.param))))
    if lib.elk_cpu_features() & REQUIRED != REQUIRED:
        pytest.fail("this test machine is expected to have AVX2, FMA and F16C")
    return ffi, lib


def table_of(k, name):
    ffi, lib = k
    return ffi.addressof(lib, name)


def quantize(k, table, x):
    ffi, lib = k
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros(x.size // 32, dtype=Q8_BLOCK)
    table_of(k, table).quantize_q8_0(ffi.from_buffer("float[]", x), ffi.from_buffer(out), x.size)
    return out


def dot(k, table, wtype, n, w, x):
    ffi, lib = k
    return table_of(k, table).dot[wtype](n, ffi.from_buffer(w), ffi.from_buffer(x))


def random_q8(rng, blocks, unit_scale=False):
    b = np.zeros(blocks, dtype=Q8_BLOCK)
    b["qs"] = rng.integers(-127, 128, size=(blocks, 32))
    b["d"] = 1.0 if unit_scale else rng.uniform(0.001, 0.05, size=blocks)
    return b


def random_q4(rng, blocks, unit_scale=False):
    b = np.zeros(blocks, dtype=Q4_BLOCK)
    b["qs"] = rng.integers(0, 256, size=(blocks, 16))
    b["d"] = 1.0 if unit_scale else rng.uniform(0.001, 0.05, size=blocks)
    return b


def test_avx2_table_is_selected_on_this_machine(k):
    ffi, lib = k
    chosen = lib.elk_kernels_select(lib.elk_cpu_features(), ffi.NULL)
    assert ffi.string(chosen.name) == b"avx2"
    assert ffi.addressof(lib, "elk_kernels_avx2").requires == REQUIRED


@pytest.mark.parametrize("scale", [1e-3, 1.0, 37.0])
def test_avx2_quantize_q8_0_bytes_equal_ref_on_random_rows(k, scale):
    rng = np.random.default_rng(int(scale * 1000))
    x = (rng.standard_normal(4096) * scale).astype(np.float32)
    x[:32] = 0.0  # an all-zero block: d = 0, every q = 0
    assert quantize(k, "elk_kernels_avx2", x).tobytes() == quantize(k, "elk_kernels_ref", x).tobytes()


def test_avx2_quantize_q8_0_rounds_halves_away_from_zero_like_ref(k):
    # amax 127 gives d = 1 and id = 1, so these values are exact ties; round-half-even would
    # give 2, -2, 0, 0 where roundf gives 3, -3, 1, -1.
    x = np.zeros(64, dtype=np.float32)
    x[0], x[1:9] = 127.0, [2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 126.5, -126.5]
    x[9] = np.nextafter(np.float32(0.5), np.float32(0))  # just below a half: must round down
    x[32:] = np.random.default_rng(3).uniform(-1, 1, 32).astype(np.float32)
    x[40] = 1.0  # amax of the second block
    avx = quantize(k, "elk_kernels_avx2", x)
    assert avx.tobytes() == quantize(k, "elk_kernels_ref", x).tobytes()
    assert list(avx["qs"][0][1:10]) == [3, -3, 1, -1, 2, -2, 127, -127, 0]


@pytest.mark.parametrize("blocks", [1, 3, 64])
def test_avx2_q8_0_dot_integer_sums_equal_ref(k, blocks):
    rng = np.random.default_rng(blocks)
    w, x = random_q8(rng, blocks, unit_scale=True), random_q8(rng, blocks, unit_scale=True)
    want = int(np.sum(w["qs"].astype(np.int64) * x["qs"]))
    n = blocks * 32
    assert dot(k, "elk_kernels_avx2", Q8_0, n, w, x) == want
    assert dot(k, "elk_kernels_ref", Q8_0, n, w, x) == want


@pytest.mark.parametrize("blocks", [1, 3, 64])
def test_avx2_q4_0_dot_integer_sums_equal_ref(k, blocks):
    rng = np.random.default_rng(100 + blocks)
    w, x = random_q4(rng, blocks, unit_scale=True), random_q8(rng, blocks, unit_scale=True)
    lo = (w["qs"] & 15).astype(np.int64) - 8
    hi = (w["qs"] >> 4).astype(np.int64) - 8
    want = int(np.sum(lo * x["qs"][:, :16]) + np.sum(hi * x["qs"][:, 16:]))
    n = blocks * 32
    assert dot(k, "elk_kernels_avx2", Q4_0, n, w, x) == want
    assert dot(k, "elk_kernels_ref", Q4_0, n, w, x) == want


def close(a, b, scale):
    return abs(a - b) <= 1e-5 * scale + 1e-30


@pytest.mark.parametrize("wtype", [Q8_0, Q4_0])
def test_avx2_quantized_dot_with_scales_matches_ref_within_tolerance(k, wtype):
    rng = np.random.default_rng(7)
    blocks = 70
    w = random_q8(rng, blocks) if wtype == Q8_0 else random_q4(rng, blocks)
    x = random_q8(rng, blocks)
    ref = dot(k, "elk_kernels_ref", wtype, blocks * 32, w, x)
    avx = dot(k, "elk_kernels_avx2", wtype, blocks * 32, w, x)
    bound = float(np.sum(np.abs(w["d"].astype(np.float32) * x["d"].astype(np.float32))) * 127 * 127 * 32)
    assert close(avx, ref, bound)


@pytest.mark.parametrize("wtype", [F32, F16, BF16])
@pytest.mark.parametrize("n", [64, 172, 2048])  # 172: stories260K's hidden_dim, not a multiple of 8
def test_avx2_float_dot_matches_ref_within_tolerance(k, wtype, n):
    rng = np.random.default_rng(n + wtype)
    wf = rng.standard_normal(n).astype(np.float32)
    if wtype == F16:
        w = wf.astype(np.float16)
        wf = w.astype(np.float32)
    elif wtype == BF16:
        w = (wf.view(np.uint32) >> 16).astype(np.uint16)
        wf = (w.astype(np.uint32) << 16).view(np.float32)
    else:
        w = wf
    x = rng.standard_normal(n).astype(np.float32)
    ref = dot(k, "elk_kernels_ref", wtype, n, w, x)
    avx = dot(k, "elk_kernels_avx2", wtype, n, w, x)
    assert close(avx, ref, float(np.sum(np.abs(wf * x))))
    assert abs(avx - float(np.dot(wf.astype(np.float64), x))) < 1e-3  # and it is the right dot


def gemm(k, wtype, n, w, row_bytes, r0, r1, x, n_tok, rows):
    ffi, lib = k
    y = np.full(n_tok * rows, np.nan, dtype=np.float32)
    ffi.addressof(lib, "elk_kernels_avx2").gemm[wtype](n, ffi.from_buffer(w), row_bytes, r0, r1, ffi.from_buffer(x),
                                     (n // 32) * 34, n_tok, ffi.from_buffer("float[]", y), rows)
    return y.reshape(n_tok, rows)


@pytest.mark.parametrize("wtype", [Q8_0, Q4_0])
@pytest.mark.parametrize("n_tok", [1, 2, 5, 13, 31])  # 31 = 16 + 8 + 4 + 3 token tiles
# block counts: 3 (odd: the 512-bit paths pair blocks), 6 (the Q4_0 GEMV's group of 4 + 2 left over),
# 8 (groups only), 18 (SmolLM's 576 columns: 4 groups + 2)
@pytest.mark.parametrize("n", [96, 192, 256, 576])
def test_avx2_gemm_equals_dot_loop_over_its_row_range_only(k, wtype, n_tok, n):
    rng = np.random.default_rng(wtype * 10 + n_tok + n)
    rows, r0, r1 = 13, 2, 11  # 9 rows: two 4-row tiles and one edge row
    blocks = n // 32
    make = random_q8 if wtype == Q8_0 else random_q4
    w = np.concatenate([make(rng, blocks, unit_scale=True) for _ in range(rows)])
    x = np.concatenate([random_q8(rng, blocks, unit_scale=True) for _ in range(n_tok)])
    row_bytes = w.itemsize * blocks
    y = gemm(k, wtype, n, w, row_bytes, r0, r1, x, n_tok, rows)
    for t in range(n_tok):
        for r in range(rows):
            if r0 <= r < r1:  # unit scales: exact integers, so equality with ref's dot
                want = dot(k, "elk_kernels_ref", wtype, n, w[r * blocks:(r + 1) * blocks],
                           x[t * blocks:(t + 1) * blocks])
                assert y[t, r] == want, (t, r)
            else:
                assert np.isnan(y[t, r]), f"gemm wrote row {r} outside [{r0}, {r1})"


@pytest.mark.parametrize("n_tok", [1, 3])
def test_avx2_q8_0_products_take_weight_bytes_of_minus_128(k, n_tok):
    """Q8_0 weights from other quantizers may hold -128 (ours stop at -127): the decode GEMV's
    sign trick (|w| against x with w's signs) and the batched tiles must still give ref's exact
    integer sums. Rows of all -128, and random bytes over the whole int8 range; activations at +-127."""
    rng = np.random.default_rng(128 + n_tok)
    rows, n = 6, 2048
    blocks = n // 32
    w = np.concatenate([random_q8(rng, blocks, unit_scale=True) for _ in range(rows)])
    w["qs"][:blocks] = -128
    w["qs"][blocks:] = rng.integers(-128, 128, size=w["qs"][blocks:].shape)
    x = np.concatenate([random_q8(rng, blocks, unit_scale=True) for _ in range(n_tok)])
    x["qs"][:, ::3] = 127
    x["qs"][:, 1::3] = -127
    y = gemm(k, Q8_0, n, w, w.itemsize * blocks, 0, rows, x, n_tok, rows)
    for t in range(n_tok):
        for r in range(rows):
            want = dot(k, "elk_kernels_ref", Q8_0, n, w[r * blocks:(r + 1) * blocks], x[t * blocks:(t + 1) * blocks])
            assert y[t, r] == want, (t, r)


def test_avx2_gemm_with_scales_matches_ref_dots(k):
    rng = np.random.default_rng(11)
    rows, n, n_tok = 8, 256, 3
    blocks = n // 32
    w = np.concatenate([random_q4(rng, blocks) for _ in range(rows)])
    x = np.concatenate([random_q8(rng, blocks) for _ in range(n_tok)])
    y = gemm(k, Q4_0, n, w, w.itemsize * blocks, 0, rows, x, n_tok, rows)
    for t in range(n_tok):
        for r in range(rows):
            want = dot(k, "elk_kernels_ref", Q4_0, n, w[r * blocks:(r + 1) * blocks], x[t * blocks:(t + 1) * blocks])
            assert abs(y[t, r] - want) <= 1e-5 * (abs(want) + 1.0)


@pytest.mark.parametrize("wtype", [Q8_0, Q4_0])
@pytest.mark.parametrize("n", [576, 2048, 5632, 11008])  # SmolLM dim, TinyLlama dim and FFN, a 7B FFN (344 blocks)
def test_avx2_decode_gemv_with_scales_matches_ref_dots(k, wtype, n):
    """One token (the decode GEMV: groups of 4 Q4_0 blocks, pairs of Q8_0 blocks, two row streams)
    on real model widths, an odd row range, random scales: within rounding of ref's dot."""
    rng = np.random.default_rng(n + wtype)
    rows, r0, r1 = 9, 1, 8
    blocks = n // 32
    make = random_q8 if wtype == Q8_0 else random_q4
    w = np.concatenate([make(rng, blocks) for _ in range(rows)])
    x = random_q8(rng, blocks)
    y = gemm(k, wtype, n, w, w.itemsize * blocks, r0, r1, x, 1, rows)[0]
    for r in range(rows):
        if not r0 <= r < r1:
            assert np.isnan(y[r])
            continue
        wr = w[r * blocks:(r + 1) * blocks]
        want = dot(k, "elk_kernels_ref", wtype, n, wr, x)
        bound = float(np.sum(np.abs(wr["d"].astype(np.float32) * x["d"].astype(np.float32)))) * 127 * 127 * 32
        assert close(y[r], want, bound), (r, y[r], want)


@pytest.mark.parametrize("wtype", [F32, F16])
@pytest.mark.parametrize("n", [8, 37, 64, 200, 2048])  # the 32-column body, the 8-column and scalar tails
def test_avx2_float_decode_gemv_equals_its_dot_kernel_bit_for_bit(k, wtype, n):
    """F16/F32 weights: one token takes the two-stream GEMV (rows half a range apart), which must give
    each row exactly the dot kernel's result (thread splits change nothing); a batch takes the 2-row x
    4-token tiles: within float rounding of the exact sum (float64), and each element the same
    whichever rows and tokens share its tile (an odd row range and 3 tokens make partial tiles);
    rows outside [r0, r1) stay untouched."""
    ffi, lib = k
    rng = np.random.default_rng(n + 7 * wtype)
    rows, r0, r1 = 11, 1, 10  # 9 rows: 4 pairs and an odd one
    dtype = np.float16 if wtype == F16 else np.float32
    w = rng.standard_normal((rows, n)).astype(dtype)
    def gemm(x, n_tok, lo, hi):
        y = np.full(n_tok * rows, np.nan, dtype=np.float32)
        ffi.addressof(lib, "elk_kernels_avx2").gemm[wtype](
            n, ffi.from_buffer(w), w.itemsize * n, lo, hi, ffi.from_buffer(x), 4 * n, n_tok,
            ffi.from_buffer("float[]", y), rows)
        return y.reshape(n_tok, rows)

    for n_tok in (1, 3, 9):
        x = rng.standard_normal((n_tok, n)).astype(np.float32)
        y = gemm(x, n_tok, r0, r1)
        for t in range(n_tok):
            for r in range(rows):
                if not r0 <= r < r1:
                    assert np.isnan(y[t, r])
                elif n_tok == 1:
                    assert y[t, r] == dot(k, "elk_kernels_avx2", wtype, n, w[r], x[t]), (t, r)
                else:
                    exact = w[r].astype(np.float64) @ x[t].astype(np.float64)
                    assert abs(y[t, r] - exact) <= 1e-6 * (np.abs(w[r].astype(np.float64)) @ np.abs(x[t])), (t, r)
        if n_tok > 1:  # rows 2..9 only, and the tokens from the second on: other tile partners, same elements
            assert np.array_equal(gemm(x, n_tok, 2, r1)[:, 2:r1], y[:, 2:r1])
            assert np.array_equal(gemm(x[1:].copy(), n_tok - 1, r0, r1)[:, r0:r1], y[1:, r0:r1])
