"""The C sampler (firmware/src/sampler) called directly in libelk through cffi: greedy ties,
top-k, top-p, temperature, repetition penalty and seeds, on logits the tests choose."""

import cffi
import numpy as np
import pytest

from conftest import ROOT, fixture_path

from elk import cheader, spec
from elk.convert.pack import pack
from elk.runtime import Model

# The declarations are elk.h's own (a hand copy of struct elk_sampling could drift from the C layout).
CDEF = cheader.declarations(ROOT / "firmware" / "include" / "elk" / "elk.h",
                            names=["elk_sampling", "elk_sampler", "elk_sampler_arena_size", "elk_sampler_init",
                                   "elk_sampler_sample"])
ELK_E_RANGE = spec.ERRORS["E_RANGE"][0]


@pytest.fixture(scope="module")
def lib(host_build):
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(str(host_build / "libelk.so"))


class Sampler:
    def __init__(self, lib, vocab, temperature=1.0, top_k=0, top_p=1.0, repeat_penalty=1.0, repeat_last_n=0,
                 seed=0):
        self.ffi, self.lib = lib
        ffi = self.ffi
        self.params = ffi.new("elk_sampling *", (temperature, top_k, top_p, repeat_penalty, repeat_last_n, seed))
        size = self.lib.elk_sampler_arena_size(vocab)
        self.arena = ffi.new("char[]", size)
        self.ptr = ffi.new("elk_sampler **")
        self.rc = self.lib.elk_sampler_init(self.ptr, vocab, self.params, self.arena, size)

    def sample(self, logits, history=()):
        x = np.ascontiguousarray(logits, dtype=np.float32)
        h = np.ascontiguousarray(history, dtype=np.int32)
        tok = self.lib.elk_sampler_sample(self.ptr[0], self.ffi.from_buffer("float[]", x),
                                          self.ffi.from_buffer("int32_t[]", h), len(h))
        return tok, x

    def draws(self, logits, n):
        return [self.sample(logits)[0] for _ in range(n)]


def test_sampler_greedy_picks_lowest_index_on_ties(lib):
    s = Sampler(lib, 6, temperature=0.0, seed=123)
    assert s.sample([0.0, 5.0, 1.0, 5.0, 5.0, -1.0])[0] == 1
    assert s.sample([7.0, 7.0, 7.0, 7.0, 7.0, 7.0])[0] == 0
    assert s.sample([-3.0, -2.0, -2.5, -9.0, -2.0, -7.0])[0] == 1


def test_sampler_greedy_ignores_seed_and_top_p(lib):
    logits = np.random.default_rng(0).normal(size=300).astype(np.float32)
    picks = {Sampler(lib, 300, temperature=0.0, top_p=0.5, seed=s).sample(logits)[0] for s in range(5)}
    assert picks == {int(np.argmax(logits))}


def test_sampler_top_k_1_equals_greedy(lib):
    rng = np.random.default_rng(1)
    s = Sampler(lib, 1000, temperature=1.5, top_k=1, seed=9)
    for _ in range(50):
        logits = rng.normal(size=1000).astype(np.float32)
        assert s.sample(logits)[0] == int(np.argmax(logits))


def test_sampler_same_seed_same_sequence_other_seed_differs(lib):
    logits = np.random.default_rng(2).normal(size=512).astype(np.float32)
    a = Sampler(lib, 512, temperature=1.0, seed=42).draws(logits, 64)
    b = Sampler(lib, 512, temperature=1.0, seed=42).draws(logits, 64)
    c = Sampler(lib, 512, temperature=1.0, seed=43).draws(logits, 64)
    assert a == b
    assert a != c


def test_sampler_top_k_keeps_only_the_k_best(lib):
    logits = np.array([1.0, 3.0, 2.9, 0.5, 2.8, -1.0], dtype=np.float32)
    seen = set(Sampler(lib, 6, temperature=2.0, top_k=3, seed=5).draws(logits, 2000))
    assert seen == {1, 2, 4}


def test_sampler_top_p_keeps_the_smallest_prefix_reaching_the_mass(lib):
    probs = np.array([0.05, 0.5, 0.15, 0.3], dtype=np.float64)  # sorted: 1 (0.5), 3 (0.3), 2 (0.15), 0
    logits = np.log(probs).astype(np.float32)
    assert set(Sampler(lib, 4, temperature=1.0, top_p=0.7, seed=1).draws(logits, 3000)) == {1, 3}
    assert set(Sampler(lib, 4, temperature=1.0, top_p=0.9, seed=1).draws(logits, 3000)) == {1, 3, 2}
    assert set(Sampler(lib, 4, temperature=1.0, top_p=0.4, seed=1).draws(logits, 500)) == {1}


def test_sampler_frequencies_follow_softmax_with_temperature(lib):
    logits = np.array([2.0, 1.0, 0.0, -1.0], dtype=np.float32)
    for temp in (1.0, 0.5):
        p = np.exp(logits / temp)
        p /= p.sum()
        draws = Sampler(lib, 4, temperature=temp, seed=77).draws(logits, 20000)
        freq = np.bincount(draws, minlength=4) / len(draws)
        assert np.abs(freq - p).max() < 0.015, (temp, freq, p)


def test_sampler_repeat_penalty_divides_positive_and_multiplies_negative(lib):
    s = Sampler(lib, 4, temperature=0.0, repeat_penalty=1.5)
    tok, x = s.sample([2.0, 1.9, -1.0, -1.2], history=[0, 2, 0])
    assert tok == 1
    assert x[0] == pytest.approx(2.0 / 1.5) and x[2] == pytest.approx(-1.5) and x[1] == pytest.approx(1.9)
    tok, x = s.sample([-1.0, -1.2, -5.0, -6.0], history=[0])
    assert tok == 1 and x[0] == pytest.approx(-1.5)


def test_sampler_repeat_penalty_only_looks_at_the_last_n(lib):
    s = Sampler(lib, 4, temperature=0.0, repeat_penalty=2.0, repeat_last_n=2)
    tok, x = s.sample([3.0, 2.0, 1.0, 0.0], history=[0, 3, 3])
    assert tok == 0 and x[0] == 3.0


def test_sampler_rejects_out_of_range_settings(lib):
    assert Sampler(lib, 10, temperature=-0.5).rc == ELK_E_RANGE
    assert Sampler(lib, 10, top_p=0.0).rc == ELK_E_RANGE
    assert Sampler(lib, 10, top_k=-1).rc == ELK_E_RANGE
    assert Sampler(lib, 10, repeat_penalty=0.0).rc == ELK_E_RANGE
    assert Sampler(lib, 10, temperature=float("nan")).rc == ELK_E_RANGE


def test_runtime_repeat_penalty_over_whole_history_prevents_any_repeat(host_build, tmp_path):
    # Through the host API (sampler arena from malloc, not zeroed by Python): with a huge penalty
    # over all history, greedy never picks a token already in the context.
    path = tmp_path / "s.elk"
    pack(str(fixture_path("stories260K.bin")), str(path), tokenizer=str(fixture_path("tok512.bin")))
    with Model(path, threads=1) as m:
        p = m.tokenize("Once upon a time")
        plain = [t for t, _ in m.generate_tokens(p, max_tokens=40, temperature=0)]
        pen = [t for t, _ in m.generate_tokens(p, max_tokens=40, temperature=0, repeat_penalty=1e6,
                                               repeat_last_n=0)]
    assert len(set(plain)) < len(plain)  # the plain story repeats tokens ...
    assert len(set(p + pen)) == len(p + pen) == len(p) + 40  # ... the penalized one never does
