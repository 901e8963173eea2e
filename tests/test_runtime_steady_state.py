"""Decoding allocates nothing and starts no thread per token: the thread pool is created once per
model and the arena is carved at load. elk-run runs under an LD_PRELOAD shim that counts malloc,
calloc, realloc, mmap and pthread_create; 4 and 120 generated tokens must give the same counts."""

import re
import subprocess

import pytest

from conftest import pack_stories260k

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>
extern void *__libc_malloc(size_t), *__libc_calloc(size_t, size_t), *__libc_realloc(void *, size_t);
static unsigned long n_alloc, n_mmap, n_thread;
static void count(unsigned long *c) { __atomic_add_fetch(c, 1, __ATOMIC_RELAXED); }
void *malloc(size_t n) { count(&n_alloc); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(&n_alloc); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(&n_alloc); return __libc_realloc(p, n); }
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
static void *mapped(const char *name, void *a, size_t n, int p, int f, int fd, off_t o)
{
    mmap_fn real = (mmap_fn)dlsym(RTLD_NEXT, name);
    count(&n_mmap);
    return real(a, n, p, f, fd, o);
}
void *mmap(void *a, size_t n, int p, int f, int fd, off_t o) { return mapped("mmap", a, n, p, f, fd, o); }
void *mmap64(void *a, size_t n, int p, int f, int fd, off_t o) { return mapped("mmap64", a, n, p, f, fd, o); }
int pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) =
        (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(RTLD_NEXT, "pthread_create");
    count(&n_thread);
    return real(t, a, fn, arg);
}
__attribute__((destructor)) static void report(void)
{
    char b[128];
    int len = snprintf(b, sizeof b, "shim alloc=%lu mmap=%lu threads=%lu\n", n_alloc, n_mmap, n_thread);
    if (write(2, b, (size_t)len) < 0)
        return;
}
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    d = tmp_path_factory.mktemp("shim")
    (d / "count.c").write_text(SHIM)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", str(d / "count.c"), "-o", str(d / "count.so"), "-ldl"],
                   check=True, capture_output=True)
    return d / "count.so"


def counts(host_build, shim, image, threads, n):
    proc = subprocess.run([str(host_build / "elk-run"), str(image), "-p", "Once upon a time", "-n", str(n),
                           "--temperature", "0.8", "--top-p", "0.9", "--seed", "3", "--threads", str(threads)],
                          capture_output=True, text=True, timeout=60, env={"LD_PRELOAD": str(shim)})
    assert proc.returncode == 0, proc.stderr
    assert f"{n} tokens" in proc.stderr  # it really generated them all (no early stop)
    m = re.search(r"shim alloc=(\d+) mmap=(\d+) threads=(\d+)", proc.stderr)
    assert m, proc.stderr
    return tuple(map(int, m.groups()))


@pytest.mark.parametrize("quant", ["f32", "q4_0"])
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_decoding_more_tokens_allocates_nothing_more_and_starts_no_thread(host_build, shim, tmp_path, quant, threads):
    image = pack_stories260k(tmp_path / f"s-{quant}.elk", quant=quant)
    few, many = counts(host_build, shim, image, threads, 4), counts(host_build, shim, image, threads, 120)
    assert few == many
    alloc, mmaps, started = many
    assert started == threads - 1  # the caller is one of the pool's threads
    assert mmaps >= 1 and alloc >= 1  # the shim saw the image mapping and elk-run's buffers
