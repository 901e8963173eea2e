"""The POSIX thread pool (firmware/platform/posix/threads.c) and threaded decoding.

Decision: a linear layer is split by weight rows and every output element is computed by the same
kernel on the same bytes whatever the thread count, so logits with N threads equal 1 thread
bit for bit. The AVX2 table against the ref table is a float tolerance (different summation order).
"""

import os
import subprocess

import cffi
import numpy as np
import pytest

from conftest import ROOT, fixture_path
from elk import runtime
from elk.models import synth

POOL_CDEF = """
typedef struct elk_pool elk_pool;
typedef void (*elk_task_fn)(void *ctx, int index, int count);
int elk_pool_create(elk_pool **out, int n_threads);
void elk_pool_destroy(elk_pool *pool);
void elk_pool_parallel_for(void *pool, elk_task_fn fn, void *ctx, int n);
int elk_pool_size(const elk_pool *pool);
"""


@pytest.fixture(scope="module")
def pool_lib(host_build):
    ffi = cffi.FFI()
    ffi.cdef(POOL_CDEF)
    return ffi, ffi.dlopen(os.fspath(host_build / "libelk.so"))


def test_pool_runs_every_index_exactly_once_across_many_jobs(pool_lib):
    ffi, lib = pool_lib
    pool = ffi.new("elk_pool **")
    assert lib.elk_pool_create(pool, 3) == 0
    assert lib.elk_pool_size(pool[0]) == 3
    hits = np.zeros((200, 16), dtype=np.int64)
    job = [0]
    counts = []

    @ffi.callback("void(void *, int, int)")
    def task(ctx, index, count):
        counts.append(count)
        hits[job[0], index] += 1

    try:
        for j in range(200):
            job[0] = j
            n = 1 + j % 16  # varying sizes: a late worker must never take an index of the next job
            lib.elk_pool_parallel_for(pool[0], task, ffi.NULL, n)
            assert hits[j, :n].tolist() == [1] * n and hits[j, n:].sum() == 0, j
    finally:
        lib.elk_pool_destroy(pool[0])
    assert set(counts) == set(range(1, 17))


def test_pool_with_one_thread_runs_on_the_caller_in_order(pool_lib):
    ffi, lib = pool_lib
    pool = ffi.new("elk_pool **")
    assert lib.elk_pool_create(pool, 1) == 0
    seen = []

    @ffi.callback("void(void *, int, int)")
    def task(ctx, index, count):
        seen.append(index)

    lib.elk_pool_parallel_for(pool[0], task, ffi.NULL, 5)
    lib.elk_pool_destroy(pool[0])
    assert seen == [0, 1, 2, 3, 4]


def test_pool_rejects_more_than_64_threads(pool_lib):
    ffi, lib = pool_lib
    pool = ffi.new("elk_pool **")
    assert lib.elk_pool_create(pool, 65) < 0 and pool[0] == ffi.NULL


STRESS_C = r"""
#include <stdio.h>
#include <stdatomic.h>
#include "threads.h"
static _Atomic int hits[64];
static void task(void *ctx, int i, int n) { (void)ctx; (void)n; atomic_fetch_add(&hits[i], 1); }
int main(void) {
    for (int threads = 2; threads <= 4; threads++) {
        elk_pool *p;
        if (elk_pool_create(&p, threads)) return 2;
        for (int job = 0; job < 20000; job++) {
            int n = 1 + job % 64;  /* sizes change every job: the window a late worker could abuse */
            for (int i = 0; i < 64; i++) atomic_store(&hits[i], 0);
            elk_pool_parallel_for(p, task, NULL, n);
            for (int i = 0; i < 64; i++)
                if (atomic_load(&hits[i]) != (i < n)) {
                    printf("threads %d job %d n %d index %d ran %d times\n", threads, job, n, i, atomic_load(&hits[i]));
                    return 1;
                }
        }
        elk_pool_destroy(p);
    }
    puts("ok");
    return 0;
}
"""


def build_pool_program(tmp_path, name, source, sanitize):
    """A C program of `source` linked with threads.c alone, under the given sanitizer(s)."""
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / name
    posix = ROOT / "firmware" / "platform" / "posix"
    build = subprocess.run(["cc", "-O1", "-g", "-std=c11", f"-fsanitize={sanitize}", "-fno-sanitize-recover=all",
                            f"-I{ROOT / 'firmware' / 'include'}", f"-I{ROOT / 'firmware' / 'src'}", f"-I{posix}",
                            str(src), str(posix / "threads.c"), "-o", str(exe), "-lpthread"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    return exe


def test_pool_stress_in_c_under_threadsanitizer(tmp_path):
    # 60,000 jobs of changing sizes straight in C (no GIL), under ThreadSanitizer, whose scheduling
    # shakes out ordering bugs: this found a late worker claiming index n-1 of the next job twice.
    exe = build_pool_program(tmp_path, "pool_stress", STRESS_C, "thread")
    for _ in range(2):
        run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr[-3000:]
        assert "ThreadSanitizer" not in run.stderr, run.stderr[-3000:]


PROBE_C = r"""
#include <stdio.h>
#include "threads.h"
int main(void) {
    for (int threads = 1; threads <= 8; threads *= 2) {  /* 8 threads: 128 tasks */
        elk_pool *p;
        if (elk_pool_create(&p, threads)) return 2;
        double gbs = elk_pool_probe_bandwidth(p, 4u << 20, 2);
        elk_pool_destroy(p);
        if (!(gbs > 0.01)) { printf("threads %d: %g\n", threads, gbs); return 1; }
    }
    puts("ok");
    return 0;
}
"""


def test_bandwidth_probe_under_addresssanitizer_with_many_threads(tmp_path):
    # The probe splits its buffer into 16 tasks per thread, each writing its own sink slot and
    # trying three read loops (scalar; 64-byte vectors in one and two streams): every slot and
    # every read must stay in bounds at any thread count (the slots once ran out past 4 threads).
    exe = build_pool_program(tmp_path, "probe", PROBE_C, "address,undefined")
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr[-3000:]


@pytest.fixture(scope="module")
def images(host_build, tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    vocab = fixture_path("tok512.bin")
    return {q: synth.synthesize("stories260k", d / f"s-{q}.elk", vocab_path=vocab, quant=q, seed=3)
            for q in ("f32", "f16", "q8_0", "q4_0")}


# 48 tokens: every layer of the 64-dim model is big enough (rows x cols x tokens) to be split
IDS = [1] + [(i * 37 + 11) % 509 + 3 for i in range(47)]


@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0", "q4_0"])
def test_logits_with_two_threads_equal_one_thread_bit_for_bit(images, quant):
    with runtime.Model(images[quant], threads=1) as m1, runtime.Model(images[quant], threads=2) as m2:
        assert m1.config.kernels == "avx2" and m2.config.n_threads == 2
        a, b = m1.logits(IDS), m2.logits(IDS)  # batched prefill: the gemm path for q8_0/q4_0
    assert np.array_equal(a, b)
    assert np.isfinite(a).all() and a.std() > 0


@pytest.mark.parametrize("quant", ["f32", "q8_0", "q4_0"])
def test_avx2_logits_match_ref_kernels_within_tolerance(images, quant):
    with runtime.Model(images[quant], threads=2) as fast, runtime.Model(images[quant], threads=1, kernels="ref") as ref:
        a, b = fast.logits(IDS), ref.logits(IDS)
    assert ref.config.kernels == "ref"
    scale = float(np.abs(b).max())
    assert float(np.abs(a - b).max()) <= 1e-3 * scale, (float(np.abs(a - b).max()), scale)
    assert (a.argmax(axis=1) == b.argmax(axis=1)).mean() >= 0.9


@pytest.mark.parametrize("quant", ["q8_0", "q4_0"])
def test_greedy_decode_with_two_threads_equals_one_thread_and_ref(images, quant):
    # decode runs one token at a time: the GEMV paths (not the batched gemm) of the avx2 table
    def run(**kw):
        with runtime.Model(images[quant], **kw) as m:
            return [t for t, _ in m.generate_tokens(IDS[:8], max_tokens=24, temperature=0.0)]

    one, two = run(threads=1), run(threads=2)
    assert one == two and len(one) > 0
    ref = run(threads=1, kernels="ref")
    assert sum(a == b for a, b in zip(one, ref)) >= 0.75 * len(ref)  # float order may flip a late near-tie
