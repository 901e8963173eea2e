"""The C runtime (libelk) from Python, through cffi in ABI mode: no compiler needed at import, only
build/host/libelk.so (built with SCons on first use when missing).

    with elk.load("model.elk") as m:
        ids = m.tokenize("Once upon a time")
        rows = m.logits(ids)                      # float32 (len(ids), vocab)
        for piece in m.generate("Once upon a time", max_tokens=50, temperature=0):
            print(piece, end="", flush=True)
        print(m.stats.tokens_per_s)

Only plain ints, floats, strings and arrays cross into C (firmware/platform/posix/host_api.h).
Not here: numerics (firmware/src) or the numpy oracle (elk.reference).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
import threading

import numpy as np

from elk import cheader, spec
from elk.errors import ElkError, RuntimeFailure

ROOT = pathlib.Path(__file__).resolve().parents[2]

FIRMWARE = ROOT / "firmware"

STOP_REASONS = {0: "running", 1: "eos", 2: "max_tokens", 3: "context_full"}
ELK_E_RANGE = spec.ERRORS["E_RANGE"][0]
GEN_TEXT_CAP = 4096  # ELK_GEN_TEXT_CAP (elk.h): the most text one generation step gives

_lock = threading.Lock()
_loaded = None


class LibraryError(ElkError):
    """libelk.so is missing and could not be built."""


def library_path() -> pathlib.Path:
    """build/host/libelk.so, or $ELK_LIB (e.g. build/host-asan/libelk.so)."""
    env = os.environ.get("ELK_LIB")
    return pathlib.Path(env) if env else ROOT / "build" / "host" / "libelk.so"


def build_library() -> None:
    """Run SCons in the repository root (a no-op when up to date)."""
    cmd = [sys.executable, "-m", "SCons", "-Q", "-j2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise LibraryError("building libelk failed (python -m SCons -Q):\n" + "\n".join(tail))


def _stale(path: pathlib.Path) -> bool:
    """True when libelk is missing or older than a C source, header or build file (e.g. after
    `git pull`). A stat walk over the firmware tree costs a few milliseconds (5 ms measured); SCons itself
    decides what to rebuild."""
    try:
        built = path.stat().st_mtime
    except FileNotFoundError:
        return True
    sources = [ROOT / "SConstruct", *(ROOT / "firmware").rglob("*.[ch]"), *(ROOT / "firmware").rglob("SConscript")]
    return any(src.stat().st_mtime > built for src in sources)


def cdef() -> str:
    """The binding's declarations, read from the C headers themselves (no hand copy to drift)."""
    return (cheader.declarations(FIRMWARE / "include" / "elk" / "elk.h", names=["elk_strerror"])
            + cheader.declarations(FIRMWARE / "platform" / "posix" / "host_api.h"))


def library():
    """(ffi, lib) for libelk, building it first when the file is missing."""
    global _loaded
    with _lock:
        if _loaded is None:
            import cffi

            path = library_path()
            if not path.is_file() and os.environ.get("ELK_LIB"):
                raise LibraryError(f"ELK_LIB={path}: no such file")
            if not os.environ.get("ELK_LIB") and _stale(path):
                build_library()
                if not path.is_file():
                    raise LibraryError(f"{path}: not produced by the build")
            ffi = cffi.FFI()
            ffi.cdef(cdef())
            try:
                lib = ffi.dlopen(str(path))
            except OSError as e:
                raise LibraryError(f"cannot load {path}: {e}") from None
            _loaded = (ffi, lib)
        return _loaded


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """What the runtime reports about an open image (dimensions from its header)."""

    name: str
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    head_dim: int
    tied_output: bool
    n_ctx: int
    bos_id: int
    eos_id: int
    max_batch: int
    n_threads: int
    security_counter: int
    rope_theta: float
    norm_eps: float
    kernels: str


@dataclasses.dataclass
class GenStats:
    """Timing of the last generate() call. tokens_per_s counts decode steps after the first token."""

    n_prompt: int = 0
    prefill_s: float = 0.0
    ttft_s: float = 0.0
    n_generated: int = 0
    decode_s: float = 0.0
    tokens_per_s: float = 0.0
    stop_reason: str = "running"

    def summary(self) -> str:
        return (f"prompt {self.n_prompt} tokens, time to first token {self.ttft_s * 1000:.1f} ms, "
                f"{self.n_generated} tokens at {self.tokens_per_s:.1f} tokens/s (stop: {self.stop_reason})")


class Model:
    """An image opened by the C runtime.

    n_ctx: context length (default: the image's seq_len); threads: worker threads for the linear
    layers (default: all CPUs; 1 = serial); kernels: force a kernel table by name ("ref", "avx2").
    One generation runs at a time per Model; logits() ends a running generation.
    """

    def __init__(self, path, n_ctx=None, threads=None, kernels=None):
        self._ffi, self._lib = library()
        self.path = pathlib.Path(path)
        ffi = self._ffi
        err = ffi.new("char[512]")
        out = ffi.new("elk_host **")
        kern = kernels.encode() if kernels else ffi.NULL
        if n_ctx is not None:
            _check_int("context length", n_ctx, 1, 2**31 - 1)
        if threads is not None:
            _check_int("threads", threads, 0, MAX_THREADS)  # 0 = all CPUs, like None
        rc = self._lib.elk_host_open(os.fsencode(self.path), int(n_ctx or 0), int(threads or 0), kern, out, err, 512)
        if rc:
            raise RuntimeFailure(rc, ffi.string(err).decode("utf-8", "replace"))
        self._h = out[0]
        self.config = self._read_config()
        self.stats = GenStats()
        self._epoch = 0  # bumped by every generate()/logits(): an older generator then stops with an error

    def _read_config(self) -> RuntimeConfig:
        ffi, lib = self._ffi, self._lib
        ints = ffi.new("int64_t[15]")
        floats = ffi.new("double[2]")
        lib.elk_host_config(self._h, ints, 15)
        lib.elk_host_config_f(self._h, floats, 2)
        v = list(ints)
        return RuntimeConfig(
            name=ffi.string(lib.elk_host_name(self._h)).decode("utf-8", "replace"),
            dim=v[0], hidden_dim=v[1], n_layers=v[2], n_heads=v[3], n_kv_heads=v[4], vocab_size=v[5],
            seq_len=v[6], head_dim=v[7], tied_output=bool(v[8] & 1), n_ctx=v[9], bos_id=v[10], eos_id=v[11],
            max_batch=v[12], n_threads=v[13], security_counter=v[14], rope_theta=floats[0], norm_eps=floats[1],
            kernels=ffi.string(lib.elk_host_kernels(self._h)).decode())

    # -----------------------------------------------------------------------------------------
    # Lifetime

    def close(self) -> None:
        h, self._h = getattr(self, "_h", None), None
        if h is not None:
            self._lib.elk_host_close(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    def _handle(self):
        if self._h is None:
            raise ElkError(f"{self.path}: model is closed")
        return self._h

    def _fail(self, rc: int):
        detail = self._ffi.string(self._lib.elk_host_error(self._handle())).decode("utf-8", "replace")
        raise RuntimeFailure(rc, detail)

    # -----------------------------------------------------------------------------------------
    # Image

    @property
    def kernels(self) -> str:
        return self.config.kernels

    def meta(self, key: str):
        """Metadata value as str, or None."""
        n = self._ffi.new("uint32_t *")
        p = self._lib.elk_host_meta(self._handle(), key.encode(), n)
        return None if p == self._ffi.NULL else self._ffi.unpack(p, n[0]).decode("utf-8", "replace")

    def verify(self) -> None:
        """Hash the payload; raises RuntimeFailure (ELK_E_HASH) when it does not match the header."""
        rc = self._lib.elk_host_verify(self._handle())
        if rc:
            self._fail(rc)

    # -----------------------------------------------------------------------------------------
    # Tokenizer

    def tokenize(self, text, bos: bool = True, eos: bool = False) -> list:
        """Token ids of text (str, or bytes: invalid UTF-8 becomes byte tokens)."""
        data = _utf8(text)
        ffi, cap = self._ffi, len(data) + 3
        n = ffi.new("int *")
        for _ in range(2):
            ids = ffi.new("int32_t[]", cap)
            rc = self._lib.elk_host_tokenize(self._handle(), data, len(data), int(bos), int(eos), ids, cap, n)
            if rc == ELK_E_RANGE and n[0] > cap:
                cap = n[0]
                continue
            if rc:
                self._fail(rc)
            return list(ids[0:n[0]])
        self._fail(ELK_E_RANGE)

    def piece(self, token: int, prev: int = -1) -> bytes:
        """Bytes of `token` as it appears after `prev`."""
        self._ids_array([token])  # a clear error for ids outside the vocabulary (and outside int32)
        buf = self._ffi.new("char[512]")
        n = self._ffi.new("int *")
        rc = self._lib.elk_host_piece(self._handle(), int(prev), int(token), buf, 512, n)
        if rc:
            self._fail(rc)
        return self._ffi.unpack(buf, n[0])

    def detokenize(self, ids) -> str:
        """Text of ids as the decode of the whole sequence gives it (sentencepiece's decode, or tokenizers'
        for a tokenizer.json import; docs/tokenizer.md "Streaming decode"): the C token stream."""
        arr = self._ids_array(ids)
        ffi, n = self._ffi, self._ffi.new("int *")
        cap = 16 * arr.size + 64
        for _ in range(2):
            buf = ffi.new("char[]", cap)
            rc = self._lib.elk_host_decode(self._handle(), ffi.from_buffer("int32_t[]", arr), arr.size, buf, cap, n)
            if rc == ELK_E_RANGE and n[0] > cap:
                cap = n[0]
                continue
            if rc:
                self._fail(rc)
            return ffi.unpack(buf, n[0]).decode("utf-8", "replace")
        self._fail(ELK_E_RANGE)

    # -----------------------------------------------------------------------------------------
    # Decoder

    def _ids_array(self, ids) -> np.ndarray:
        try:
            arr = np.ascontiguousarray(np.asarray(list(ids), dtype=np.int64))
        except (TypeError, ValueError, OverflowError):
            raise ElkError("token ids must be a sequence of integers") from None
        if arr.ndim != 1:
            raise ElkError(f"token ids must be one flat sequence, not shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.config.vocab_size):
            bad = int(arr[(arr < 0) | (arr >= self.config.vocab_size)][0])
            raise ElkError(f"token id {bad} outside the vocabulary [0, {self.config.vocab_size})")
        return arr.astype(np.int32)

    def logits(self, ids) -> np.ndarray:
        """Logits for every position of ids from an empty context: float32 (len(ids), vocab)."""
        arr = self._ids_array(ids)
        if arr.size == 0:
            return np.zeros((0, self.config.vocab_size), dtype=np.float32)
        out = np.empty((arr.size, self.config.vocab_size), dtype=np.float32)
        ffi = self._ffi
        self._epoch += 1  # the C context is reused: a running generation cannot continue after this
        rc = self._lib.elk_host_forward(self._handle(), ffi.from_buffer("int32_t[]", arr), arr.size, 0,
                                        ffi.from_buffer("float[]", out), 1)
        if rc:
            self._fail(rc)
        return out

    def generate_tokens(self, prompt, max_tokens: int = 256, temperature: float = 0.8, top_k: int = 40,
                        top_p: float = 0.95, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
                        seed=None, keep_context: bool = False):
        """Start generating; returns an iterator of (token id, piece bytes). prompt: text (BOS is
        added) or a list of ids. Raises RuntimeFailure (ELK_E_RANGE) at once, not on iteration, when
        the prompt does not fit: prompt + generated tokens share n_ctx, so with max_tokens >= 1 the
        prompt must leave a free position (max_tokens=0 prefills only). Generation that reaches the
        end of the context stops with stats.stop_reason "context_full" (see context_notice)."""
        ids = self.tokenize(prompt, bos=True) if isinstance(prompt, (str, bytes)) else list(prompt)
        arr = self._ids_array(ids)
        _check_sampling(max_tokens, temperature, top_k, top_p, repeat_penalty, repeat_last_n)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ElkError(f"seed must be an integer, not {seed!r}")
        seed = int.from_bytes(os.urandom(8), "little") if seed is None else int(seed) % 2**64
        ffi = self._ffi
        rc = self._lib.elk_host_gen_begin(self._handle(), ffi.from_buffer("int32_t[]", arr), arr.size,
                                          int(max_tokens), float(temperature), int(top_k), float(top_p),
                                          float(repeat_penalty), int(repeat_last_n), seed, int(keep_context))
        self._epoch += 1
        if rc:
            self._fail(rc)
        self._update_stats()
        return self._steps(self._epoch)

    def _steps(self, epoch: int):
        ffi, lib, h = self._ffi, self._lib, self._handle()
        tok, buf, n = ffi.new("int32_t *"), ffi.new("char[512]"), ffi.new("int *")
        try:
            while True:
                if epoch != self._epoch:
                    raise ElkError("this generation was ended by a later generate() or logits() call on the "
                                   "same model (one generation at a time per model)")
                h = self._handle()  # the model may have been closed between steps
                rc = lib.elk_host_gen_next(h, tok, buf, 512, n)
                if rc < 0:
                    self._fail(rc)
                if rc == 0:
                    return
                yield tok[0], ffi.unpack(buf, n[0])
        finally:
            if epoch == self._epoch:
                self._update_stats()

    def generate(self, prompt, max_tokens: int = 256, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, repeat_penalty: float = 1.0, seed=None, **kw):
        """Generate text after prompt; returns an iterator of str pieces as they are produced. The text
        continues the prompt's: prompt + "".join(pieces) is the decode of prompt ids + generated ids
        (the C token stream, docs/runtime.md "Generated text"); a character split across byte-fallback
        tokens comes out whole. Greedy when temperature is 0."""
        ids = self.tokenize(prompt, bos=True) if isinstance(prompt, (str, bytes)) else list(prompt)
        self.generate_tokens(ids, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                             top_p=top_p, repeat_penalty=repeat_penalty, seed=seed, **kw)
        arr = self._ids_array(ids)
        rc = self._lib.elk_host_gen_text_begin(self._handle(), self._ffi.from_buffer("int32_t[]", arr), arr.size)
        if rc:
            self._fail(rc)
        return self._texts(self._epoch)

    def _texts(self, epoch: int):
        ffi, lib = self._ffi, self._lib
        tok, buf, n = ffi.new("int32_t *"), ffi.new("char[]", GEN_TEXT_CAP), ffi.new("int *")
        try:
            while True:
                if epoch != self._epoch:
                    raise ElkError("this generation was ended by a later generate() or logits() call on the "
                                   "same model (one generation at a time per model)")
                rc = lib.elk_host_gen_next_text(self._handle(), tok, buf, GEN_TEXT_CAP, n)
                if rc < 0:
                    self._fail(rc)
                if n[0]:  # whole UTF-8 characters (U+FFFD already in place of invalid bytes)
                    yield ffi.unpack(buf, n[0]).decode("utf-8", "replace")
                if rc == 0:
                    return
        finally:
            if epoch == self._epoch:
                self._update_stats()

    def _update_stats(self) -> None:
        if self._h is None:
            return
        v = self._ffi.new("double[7]")
        self._lib.elk_host_gen_stats(self._h, v, 7)
        self.stats = GenStats(int(v[0]), v[1], v[2], int(v[3]), v[4], v[5], STOP_REASONS.get(int(v[6]), "?"))


# ---------------------------------------------------------------------------------------------
# Argument checks: one clear line naming the setting, before anything reaches C (whose int and
# float parameters would overflow or come back as a bare ELK_E_RANGE).

MAX_THREADS = 64  # the posix worker pool's limit (firmware/platform/posix/threads.c)
INT32_MAX = 2**31 - 1
FLT_MAX = 3.4028234663852886e38  # C takes these as float: larger values would become inf


def _check_int(what: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ElkError(f"{what} must be an integer, not {value!r}")
    if not lo <= int(value) <= hi:
        raise ElkError(f"{what} {value} is outside [{lo}, {hi}]")
    return int(value)


def _check_float(what: str, value, ok, rule: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ElkError(f"{what} must be a number, not {value!r}") from None
    if not (v == v and ok(v)):  # NaN fails every rule
        raise ElkError(f"{what} {value} must be {rule}")
    return v


def _check_sampling(max_tokens, temperature, top_k, top_p, repeat_penalty, repeat_last_n) -> None:
    _check_int("max_tokens", max_tokens, 0, INT32_MAX)
    _check_float("temperature", temperature, lambda v: 0 <= v <= FLT_MAX, "finite and >= 0 (0 = greedy)")
    _check_int("top_k", top_k, 0, INT32_MAX)
    _check_float("top_p", top_p, lambda v: 0 < v <= 1, "in (0, 1] (1 = off)")
    _check_float("repeat_penalty", repeat_penalty, lambda v: 0 < v <= FLT_MAX, "finite and > 0 (1 = off)")
    _check_int("repeat_last_n", repeat_last_n, 0, INT32_MAX)


# ---------------------------------------------------------------------------------------------
# After a generation (the CLIs print it)


def context_notice(model: "Model", asked: int):
    """One line when the last generation stopped at the end of the context before `asked` tokens,
    else None: how full the context is and what would make room."""
    st, c = model.stats, model.config
    if st.stop_reason != "context_full":
        return None
    fix = (f"raise --ctx (up to the model's seq_len {c.seq_len}) or shorten the prompt" if c.n_ctx < c.seq_len
           else "shorten the prompt (the context is the model's whole seq_len)")
    return (f"stopped: the context is full ({c.n_ctx} tokens: {st.n_prompt} of prompt, {st.n_generated} "
            f"generated), so {st.n_generated} of the {asked} tokens asked for were produced; {fix}")


def _utf8(text) -> bytes:
    """UTF-8 bytes of text; bytes pass through. Undecodable command-line bytes (which Python keeps
    as surrogate escapes) come back as the original bytes and tokenize as byte tokens."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    if not isinstance(text, str):
        raise ElkError(f"text must be str or bytes, not {type(text).__name__}")
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        raise ElkError(f"text has a lone surrogate {text[e.start]!r} at index {e.start} (not encodable as UTF-8)") from None
