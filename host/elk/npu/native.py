"""The C runtime's NPU session (firmware/platform/posix/npu_host.h) through cffi: open an NPU
section with the sim or LiteRT backend, run raw chunks or whole linear layers, read stats and the
fallback notices. The Python side of `elk run --npu` and of the NPU tests."""

from __future__ import annotations

import numpy as np

from elk import cheader, spec
from elk.errors import ElkError, RuntimeFailure, code_name
from elk.runtime import FIRMWARE, library_path

BACKENDS = ("sim", "litert")
STATES = {spec.NPU_ENTRY_STATES["NONE"]: "not exported", spec.NPU_ENTRY_STATES["NPU"]: "npu",
          spec.NPU_ENTRY_STATES["DECLINED"]: "declined", spec.NPU_ENTRY_STATES["FAILED"]: "failed"}

_ffi = None
_lib = None


class NpuError(ElkError):
    pass


def cdef() -> str:
    """npu_host.h's declarations; the two npu.h structs it hands out stay opaque to Python."""
    return cheader.declarations(FIRMWARE / "platform" / "posix" / "npu_host.h",
                                opaque=("elk_npu_backend", "elk_npu_runner"))


def _load():
    global _ffi, _lib
    if _lib is None:
        import cffi

        path = library_path()
        if not path.is_file():
            raise NpuError(f"{path}: runtime library not built (run scons)")
        ffi = cffi.FFI()
        ffi.cdef(cdef())
        _lib = ffi.dlopen(str(path))
        _ffi = ffi
    return _ffi, _lib


def load_litert(path=None) -> None:
    """dlopen LiteRT's C library into the runtime and register the "litert" backend."""
    from elk.npu import litert

    ffi, lib = _load()
    err = ffi.new("char[256]")
    rc = lib.elk_host_litert_load(str(path or litert.library_path()).encode(), err, 256)
    if rc != 0:
        raise NpuError(ffi.string(err).decode(errors="replace") or f"LiteRT load failed ({rc})")


class Session:
    """One NPU runner over an NPU section's bytes (kept alive here)."""

    def __init__(self, section: bytes, backend: str = "sim", *, tops: float = 0.0, dma_gbs: float = 0.0,
                 accelerators: int = 0, dispatch_dir: str = None, litert_log_severity: int = 3,
                 decline_odd: bool = False, fail_after: int = 0):
        if backend not in BACKENDS:
            raise NpuError(f"unknown NPU backend '{backend}' (choose {', '.join(BACKENDS)})")
        ffi, lib = _load()
        if backend == "litert":
            load_litert()
        self._buf = ffi.from_buffer(bytes(section))
        status = ffi.new("int *")
        err = ffi.new("char[512]")
        self._dispatch = ffi.new("char[]", dispatch_dir.encode()) if dispatch_dir else ffi.NULL
        h = lib.elk_host_npu_open(self._buf, len(self._buf), backend.encode(), tops, dma_gbs, accelerators,
                                  self._dispatch, litert_log_severity, 1 if decline_odd else 0, fail_after,
                                  status, err, 512)
        if h == ffi.NULL:
            raise RuntimeFailure(status[0], ffi.string(err).decode(errors="replace"))
        self._h = ffi.gc(h, lib.elk_host_npu_close)
        self.status = status[0]
        self.ffi, self.lib, self.backend = ffi, lib, backend

    @property
    def log(self) -> str:
        return self.ffi.string(self.lib.elk_host_npu_log(self._h)).decode(errors="replace")

    def configure(self, min_tokens: int = 2) -> None:
        """Calls with fewer tokens than min_tokens go to the CPU (decode)."""
        self.lib.elk_host_npu_configure(self._h, int(min_tokens))

    def state(self, entry: int) -> str:
        return STATES.get(self.lib.elk_host_npu_entry_state(self._h, entry), "?")

    def run_chunk(self, entry: int, x_q: np.ndarray, rows: int) -> np.ndarray:
        x_q = np.ascontiguousarray(x_q, dtype=np.int8)
        y = np.zeros((x_q.shape[0], rows), np.int8)
        rc = self.lib.elk_host_npu_run_chunk(self._h, entry, self.ffi.from_buffer("int8_t[]", x_q),
                                             self.ffi.from_buffer("int8_t[]", y, require_writable=True))
        if rc != 0:
            why = "; ".join(self.log.split("\n")).strip("; ")  # e.g. the backend's reason for declining it
            raise RuntimeFailure(rc, f"npu chunk (entry {entry}): {code_name(rc)[1]}" + (f" [{why}]" if why else ""))
        return y

    def linear(self, role: str, layer: int, x: np.ndarray, rows: int):
        """y (n_tok, rows) through the NPU, or None when the runner hands the call back to the CPU."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.zeros((x.shape[0], rows), np.float32)
        rc = self.lib.elk_host_npu_linear(self._h, spec.TENSOR_ROLES[role], layer, rows, x.shape[1],
                                          self.ffi.from_buffer("float[]", x),
                                          self.ffi.from_buffer("float[]", y, require_writable=True), x.shape[0])
        if rc == spec.ERRORS["E_UNSUPPORTED"][0]:
            return None
        if rc != 0:
            raise RuntimeFailure(rc, f"npu linear: {code_name(rc)[1]}")
        return y

    def stats(self) -> dict:
        c, f, s = self.ffi.new("uint64_t *"), self.ffi.new("uint64_t *"), self.ffi.new("double *")
        self.lib.elk_host_npu_stats(self._h, c, f, s)
        return {"chunks": int(c[0]), "cpu_fallbacks": int(f[0]), "npu_seconds": float(s[0])}


def attach_host(model, session: Session | None) -> None:
    """Point an elk.runtime.Model's C model at `session`'s runner (None detaches). Both bindings load
    the same libelk, so the handle crosses between the two cffi instances as an address."""
    ffi, lib = _load()
    rffi = model._ffi
    host = ffi.cast("struct elk_host *", int(rffi.cast("uintptr_t", model._handle())))
    rc = lib.elk_host_npu_attach(host, session._h if session is not None else ffi.NULL)
    if rc != 0:
        raise RuntimeFailure(rc, f"npu attach: {code_name(rc)[1]}")
