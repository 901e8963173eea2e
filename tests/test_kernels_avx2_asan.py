"""The avx2 table under AddressSanitizer + UBSan. The numerics tests call the kernels through cffi on
numpy buffers, where an over-read past a matrix's last row or a token's last block goes unnoticed;
here a C driver gives every gemm call (decode GEMV at one token, row-pair, 16-token and 8-row
transposed tiles, the fallback past 16384 columns; built for this host, plain AVX2 and AVX-VNNI) weights, activations and outputs malloc'd to their exact size, with
the last row inside the range, and checks each output against ref's dot. The kernel and attention
drivers of the asan build run as well."""

import subprocess

import pytest

from conftest import ROOT, scons

DRIVER = r"""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"
extern const elk_kernels elk_kernels_avx2;

static unsigned long long rng = 0x9e3779b97f4a7c15ull;
static unsigned rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (unsigned)(rng >> 11); }

/* Random quantized rows: bytes anywhere (Q8_0 activations in [-127, 127], what quantize_q8_0
 * makes; weights may hold -128), then each block's scale set to a small finite fp16. */
static void *make_rows(int type, int rows, int n, int activation)
{
    const size_t rb = elk_row_bytes(type, n), block = type == ELK_TYPE_Q4_0 ? 18 : 34;
    unsigned char *p = malloc(rb * rows);
    for (size_t i = 0; i < rb * rows; i++)
        p[i] = activation ? (unsigned char)(signed char)((int)(rnd() % 255) - 127) : (unsigned char)rnd();
    for (size_t b = 0; b < rb * rows / block; b++) {
        elk_fp16 d = elk_fp32_to_fp16(0.001f + (float)(rnd() % 1000) * 1e-5f);
        memcpy(p + b * block, &d, sizeof d);
    }
    return p;
}

/* sum |w_i x_i|: the scale of the rounding a different summation order may add. */
static double magnitude(int type, const void *w, const void *x, int n, float *a, float *b)
{
    elk_dequantize_row(type, w, a, n);
    elk_dequantize_row(ELK_TYPE_Q8_0, x, b, n);
    double s = 0;
    for (int i = 0; i < n; i++)
        s += fabs((double)a[i] * b[i]);
    return s;
}

int main(void)
{
    static const int widths[] = { 32, 96, 2080, 5632, 16416 }, tokens[] = { 1, 2, 5, 16, 17, 64 };
    static const int heights[] = { 1, 7, 18, 33 }, types[] = { ELK_TYPE_Q4_0, ELK_TYPE_Q8_0 };
    int calls = 0, bad = 0;
    for (int ti = 0; ti < 2; ti++)
        for (int wi = 0; wi < 5; wi++)
            for (int hi = 0; hi < 4; hi++)
                for (int ki = 0; ki < 6; ki++) {
                    const int type = types[ti], n = widths[wi], rows = heights[hi], nt = tokens[ki];
                    const size_t rb = elk_row_bytes(type, n), xb = elk_row_bytes(ELK_TYPE_Q8_0, n);
                    unsigned char *w = make_rows(type, rows, n, 0), *x = make_rows(ELK_TYPE_Q8_0, nt, n, 1);
                    float *y = malloc(sizeof(float) * rows * nt), *a = malloc(4 * n), *b = malloc(4 * n);
                    const int r0 = rows > 2 ? 1 : 0; /* the range always ends at the last row */
                    elk_kernels_avx2.gemm[type](n, w, rb, r0, rows, x, xb, nt, y, rows);
                    calls++;
                    for (int t = 0; t < nt; t++)
                        for (int r = r0; r < rows; r++) {
                            const float want = elk_kernels_ref.dot[type](n, w + r * rb, x + t * xb);
                            const double m = magnitude(type, w + r * rb, x + t * xb, n, a, b);
                            if (!(fabs((double)y[t * rows + r] - want) <= 1e-5 * m + 1e-30)) {
                                if (bad++ < 5)
                                    printf("mismatch type %d n %d rows %d tokens %d: row %d token %d %g vs %g\n",
                                           type, n, rows, nt, r, t, y[t * rows + r], want);
                            }
                        }
                    free(w), free(x), free(y), free(a), free(b);
                }
    printf("gemm calls %d, mismatches %d\n", calls, bad);
    return bad != 0;
}
"""


@pytest.mark.parametrize("isa", [
    ["-march=native"],                                   # this host: AVX-512 VNNI tiles and GEMV
    ["-mavx2", "-mfma", "-mf16c", "-mno-avxvnni"],       # plain AVX2: 8-row maddubs tiles, 256-bit GEMV
    ["-mavx2", "-mfma", "-mf16c", "-mavxvnni"],          # AVX-VNNI: 8-row vpdpbusd tiles
], ids=["native", "plain-avx2", "avx2-vnni"])
def test_avx2_gemm_paths_stay_inside_exact_size_buffers_and_equal_ref(tmp_path, isa):
    src, fw = tmp_path / "gemm_asan.c", ROOT / "firmware"
    src.write_text(DRIVER)
    exe = tmp_path / "gemm_asan"
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
    cmd = ["cc", "-O1", "-g", "-std=c11", *isa, "-ffp-contract=off", *san, "-DELK_KERNELS_AVX2",
           f"-I{fw / 'include'}", f"-I{fw / 'src'}", f"-I{fw / 'src' / 'kernels'}", str(src),
           *(str(fw / "src" / "kernels" / f) for f in ("ref.c", "tables.c", "avx2.c", "avx2_gemv.c", "avx2_attn.c")),
           "-o", str(exe), "-lm"]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "gemm calls 240, mismatches 0" in proc.stdout
    assert "ERROR: AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr


@pytest.mark.parametrize("program, summary", [("elk-kernel-test", "kernel-test:"), ("elk-attn-test", "attn-test:")])
def test_avx2_kernel_and_attention_drivers_are_clean_under_asan(program, summary):
    out = ROOT / "build" / "host-asan"
    scons("mode=asan", str(out / program))
    proc = subprocess.run([str(out / program)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "check avx2" in proc.stdout and " 0 failures" in proc.stdout.split(summary)[1]
    assert "ERROR: AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr
