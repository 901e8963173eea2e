"""Board files (boards/*.toml): one declarative file per board, read by SConstruct, the host tool
and the tests. The format is documented field by field in docs/boards.md. This module validates a
file on load (every error names the file and the field) and turns it into build settings and an
emulation command; it holds no per-board code, so adding a board is adding a file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import tomllib

from elk.errors import ElkError

ROOT = pathlib.Path(__file__).resolve().parents[2]
# ELK_BOARDS_DIR: a directory of board files to use instead of boards/ (a user's own boards)
BOARDS_DIR = pathlib.Path(os.environ.get("ELK_BOARDS_DIR") or ROOT / "boards").resolve()


class BoardError(ElkError):
    pass


# What each architecture allows: the cross toolchain triple, the qemu emulation kind and the ISA
# flags a board of that architecture may declare.
ARCHES = {
    "x86_64": {"toolchain": "x86_64-linux-gnu", "qemu": None, "isa": {"avx2", "fma", "f16c"}},
    "aarch64": {"toolchain": "aarch64-linux-gnu", "qemu": "qemu-aarch64",
                "isa": {"neon", "fp16", "dotprod", "i8mm"}},
    "armv7": {"toolchain": "arm-linux-gnueabihf", "qemu": "qemu-arm", "isa": {"neon", "vfpv4"}},
}

# Kernel files (firmware/src/kernels/<name>.c): the architectures they build for and the ISA flags
# the board must declare for them.
KERNELS = {
    "avx2": {"arches": {"x86_64"}, "needs": {"avx2", "fma", "f16c"}},
    "neon": {"arches": {"aarch64", "armv7"}, "needs": {"neon"}},
    "neon_dotprod": {"arches": {"aarch64"}, "needs": {"neon", "dotprod"}},
    "neon_i8mm": {"arches": {"aarch64"}, "needs": {"neon", "dotprod", "i8mm"}},
}

EMULATION_KINDS = ("native", "qemu-aarch64", "qemu-arm", "none")
NPU_DTYPES = ("int4", "int8", "int16", "fp16", "bf16")
PLATFORMS = ("posix",)
MAX_FLASH_MB_32BIT = 1536  # elk-fw maps the whole flash file (32-bit off_t, ~3 GB of address space)

NUMBER = (int, float)

# field: (type, required). Types are checked exactly (a bool is not an int).
FIELDS = {
    "name": (str, True), "description": (str, True), "arch": (str, True), "platform": (str, True),
    "toolchain": (str, True), "cpu": (str, True), "cflags": (list, True), "isa": (list, True),
    "kernels": (list, True), "ram_mb": (int, True), "flash_mb": (int, True),
    "erase_block_kb": (int, True), "mem_bandwidth_gbs": (NUMBER, True), "cpu_cores": (int, True),
    "cpu_gops": (NUMBER, True), "npu": (dict, True), "console": (dict, True),
    "emulation": (dict, True), "rng": (str, False),
}
RNG_KINDS = ("os", "none")  # rng: the board's random generator ("os": getrandom; "none": docs/trust.md)
NPU_FIELDS = {
    "kind": (str, True), "tops": (dict, True), "dtypes": (list, True),
    "prefill_chunk_tokens": (int, True), "dma_gbs": (NUMBER, True), "efficiency": (NUMBER, True),
}
CONSOLE_FIELDS = {"device": (str, True), "baud": (int, True)}
EMULATION_FIELDS = {"kind": (str, True), "cpu": (str, False), "sysroot": (str, False),
                    "binary": (str, False)}


@dataclasses.dataclass
class Board:
    name: str
    description: str
    arch: str
    platform: str
    toolchain: str
    cpu: str
    cflags: list
    isa: list
    kernels: list
    ram_mb: int
    flash_mb: int
    erase_block_kb: int
    mem_bandwidth_gbs: float
    cpu_cores: int
    cpu_gops: float
    npu: dict
    console: dict
    emulation: dict
    rng: str = "os"
    path: pathlib.Path = None
    raw: dict = None

    @property
    def is_cross(self) -> bool:
        return bool(self.toolchain)

    def summary(self) -> str:
        npu = self.npu["kind"]
        if npu != "none":
            npu += " " + "/".join(f"{v:g} TOPS {k}" for k, v in self.npu["tops"].items())
        return (f"{self.arch:8} {'+'.join(self.isa):22} ram {self.ram_mb} MB, flash {self.flash_mb} MB, "
                f"npu {npu} - {self.description}")

    def as_dict(self) -> dict:
        """The board as plain data (what `elk boards --json` prints)."""
        return {f: getattr(self, f) for f in FIELDS} | {"path": str(self.path)}

    def kernel_files(self):
        """(isa file stem, extra CFLAGS) for each ISA kernel file this board compiles. On AArch64 the
        common code is built for the ARMv8.0 baseline (cpu_flags); only the file of a table that needs
        an extension gets it (-march=armv8.2-a+dotprod[+i8mm], tuned for the board's CPU), and that
        table runs only where getauxval reports the extension, so no other code can SIGILL."""
        out = []
        for k in self.kernels:
            if k == "avx2":
                flags = ["-mavx2", "-mfma", "-mf16c"]
            elif k in ("neon_dotprod", "neon_i8mm"):
                ext = "+dotprod" if k == "neon_dotprod" else "+dotprod+i8mm"
                flags = [f"-march=armv8.2-a{ext}"] + ([f"-mtune={self.cpu}"] if self.cpu != "native" else [])
            elif self.arch == "armv7":
                flags = ["-mfp16-format=ieee"]  # the __fp16 type and vcvt_f32_f16 on 32-bit ARM
            else:
                flags = []
            out.append((k, flags))
        return out

    def cpu_flags(self) -> list:
        """Target flags for the common code (and the plain `neon` table). AArch64: the ARMv8.0 baseline
        tuned for the board's CPU (-march=armv8-a -mtune=<cpu>): with -mcpu=cortex-a76 GCC would put
        SDOT into ref.c's loops and LSE atomics into the thread pool, and the binary would die with
        SIGILL on an ARMv8.0 CPU before the run-time fallback to plain NEON could help. armv7:
        -mcpu=<cpu>; x86-64: -march=<cpu> (native for the host)."""
        if self.cpu == "native":
            return ["-march=native"] if self.arch == "x86_64" else ["-mcpu=native"]
        if self.arch == "x86_64":
            return [f"-march={self.cpu}"]
        if self.arch == "aarch64":
            return ["-march=armv8-a", f"-mtune={self.cpu}"]
        return [f"-mcpu={self.cpu}"]

    def configure(self, env) -> None:
        """Set compiler, binutils, flags and kernel defines on a SCons environment."""
        if env.get("cc"):
            env["CC"] = env["cc"]
        elif self.toolchain:
            cc = f"{self.toolchain}-gcc"
            if shutil.which(cc) is None:
                raise BoardError(f"{self.name}: cross compiler {cc} not found "
                                 f"(apt-get install gcc-{self.toolchain}; tools/setup.sh does it)")
            env["CC"] = cc
            for tool, var in (("ar", "AR"), ("ranlib", "RANLIB")):
                if shutil.which(f"{self.toolchain}-{tool}"):
                    env[var] = f"{self.toolchain}-{tool}"
        env.Append(CCFLAGS=self.cpu_flags() + list(self.cflags))
        env.Append(LINKFLAGS=[f for f in self.cflags if f.startswith("-mfloat-abi")])
        env.Append(CPPDEFINES=[f"ELK_KERNELS_{k.upper()}" for k in self.kernels])
        env.Append(CPPDEFINES=[("ELK_BOARD_NAME", f'\\"{self.name}\\"')])
        env["STATIC_AND_SHARED_OBJECTS_ARE_THE_SAME"] = True

    def build_dir(self, mode: str = "release") -> pathlib.Path:
        """Where `scons board=<name> [mode=...]` puts libelk.so and the programs."""
        return ROOT / "build" / (self.name if mode == "release" else f"{self.name}-{mode}")

    def run_prefix(self) -> list:
        """argv prefix that runs one of this board's programs on this machine: [] for native,
        the qemu-user command for emulated boards. Raises BoardError when it cannot run here."""
        kind = self.emulation["kind"]
        if kind == "native":
            return []
        if kind == "none":
            raise BoardError(f"{self.name}: board is not emulated (emulation kind 'none')")
        binary = self.emulation.get("binary", f"{kind}-static")
        if shutil.which(binary) is None:
            raise BoardError(f"{self.name}: {binary} not found (apt-get install qemu-user-static)")
        return [binary, "-L", self.emulation["sysroot"], "-cpu", self.emulation["cpu"]]


def _check_fields(path, table: dict, spec: dict, prefix: str = "") -> None:
    for field, (kind, required) in spec.items():
        if field not in table:
            if required:
                raise BoardError(f"{path}: missing field '{prefix}{field}'")
            continue
        value = table[field]
        if not isinstance(value, kind) or isinstance(value, bool):
            want = kind.__name__ if isinstance(kind, type) else "number"
            raise BoardError(f"{path}: field '{prefix}{field}' must be a {want}, "
                             f"not {type(value).__name__}")
    unknown = sorted(set(table) - set(spec))
    if unknown:
        raise BoardError(f"{path}: unknown field '{prefix}{unknown[0]}' "
                         f"(known: {', '.join(prefix + f for f in spec)})")


def _check_strings(path, field: str, values: list, allowed=None) -> None:
    for v in values:
        if not isinstance(v, str):
            raise BoardError(f"{path}: field '{field}' must list strings, found {v!r}")
        if allowed is not None and v not in allowed:
            raise BoardError(f"{path}: field '{field}': unknown value '{v}' "
                             f"(known: {', '.join(sorted(allowed))})")


def _check_npu(path, npu: dict) -> None:
    if npu.get("kind") == "none":
        _check_fields(path, npu, {"kind": (str, True)}, "npu.")
        return
    _check_fields(path, npu, NPU_FIELDS, "npu.")
    _check_strings(path, "npu.dtypes", npu["dtypes"], NPU_DTYPES)
    if not npu["tops"]:
        raise BoardError(f"{path}: field 'npu.tops' must give TOPS for at least one data type")
    for dtype, tops in npu["tops"].items():
        if dtype not in npu["dtypes"]:
            raise BoardError(f"{path}: field 'npu.tops.{dtype}': '{dtype}' is not in npu.dtypes")
        if not isinstance(tops, NUMBER) or isinstance(tops, bool) or tops <= 0:
            raise BoardError(f"{path}: field 'npu.tops.{dtype}' must be a positive number")
    for field in ("prefill_chunk_tokens", "dma_gbs"):
        if npu[field] <= 0:
            raise BoardError(f"{path}: field 'npu.{field}' must be positive")
    if not 0 < npu["efficiency"] <= 1:
        raise BoardError(f"{path}: field 'npu.efficiency' must be in (0, 1]")


def _check_emulation(path, raw: dict) -> None:
    emu = raw["emulation"]
    _check_fields(path, emu, EMULATION_FIELDS, "emulation.")
    kind = emu["kind"]
    if kind not in EMULATION_KINDS:
        raise BoardError(f"{path}: field 'emulation.kind': unknown kind '{kind}' "
                         f"(known: {', '.join(EMULATION_KINDS)})")
    if kind.startswith("qemu-"):
        if kind != ARCHES[raw["arch"]]["qemu"]:
            raise BoardError(f"{path}: field 'emulation.kind': '{kind}' cannot run arch '{raw['arch']}'")
        for field in ("cpu", "sysroot"):
            if field not in emu:
                raise BoardError(f"{path}: missing field 'emulation.{field}' (needed by {kind})")
    elif kind == "native" and raw["toolchain"]:
        raise BoardError(f"{path}: field 'emulation.kind': a cross-built board cannot run 'native'")


def _check_semantics(path, raw: dict) -> None:
    arch = raw["arch"]
    if arch not in ARCHES:
        raise BoardError(f"{path}: field 'arch': unknown arch '{arch}' (known: {', '.join(ARCHES)})")
    if raw["platform"] not in PLATFORMS:
        raise BoardError(f"{path}: field 'platform': unknown platform '{raw['platform']}' "
                         f"(known: {', '.join(PLATFORMS)})")
    tc = raw["toolchain"]
    if tc and tc != ARCHES[arch]["toolchain"]:
        raise BoardError(f"{path}: field 'toolchain': '{tc}' does not build {arch} "
                         f"(expected '{ARCHES[arch]['toolchain']}')")
    if not raw["cpu"] or (raw["cpu"] == "native" and tc):
        raise BoardError(f"{path}: field 'cpu': a cross board names its -mcpu (e.g. 'cortex-a76')")
    _check_strings(path, "cflags", raw["cflags"])
    _check_strings(path, "isa", raw["isa"], ARCHES[arch]["isa"])
    _check_strings(path, "kernels", raw["kernels"], KERNELS)
    for k in raw["kernels"]:
        if arch not in KERNELS[k]["arches"]:
            raise BoardError(f"{path}: field 'kernels': '{k}' does not build for {arch}")
        missing = KERNELS[k]["needs"] - set(raw["isa"])
        if missing:
            raise BoardError(f"{path}: field 'kernels': '{k}' needs isa {', '.join(sorted(missing))}")
    for field in ("ram_mb", "flash_mb", "erase_block_kb", "mem_bandwidth_gbs", "cpu_cores", "cpu_gops"):
        if raw[field] <= 0:
            raise BoardError(f"{path}: field '{field}' must be positive")
    if raw["flash_mb"] * 1024 < 4 * raw["erase_block_kb"]:
        raise BoardError(f"{path}: field 'flash_mb': flash must hold at least 4 erase blocks "
                         "(boot record copies and two slots)")
    if arch == "armv7" and raw["flash_mb"] > MAX_FLASH_MB_32BIT:
        raise BoardError(f"{path}: field 'flash_mb': {raw['flash_mb']} MB cannot be mapped by a 32-bit "
                         f"process (elk-fw maps the whole flash); at most {MAX_FLASH_MB_32BIT}")
    _check_npu(path, raw["npu"])
    _check_fields(path, raw["console"], CONSOLE_FIELDS, "console.")
    if raw["console"]["baud"] <= 0:
        raise BoardError(f"{path}: field 'console.baud' must be positive")
    _check_emulation(path, raw)
    if raw.get("rng", "os") not in RNG_KINDS:
        raise BoardError(f"{path}: field 'rng': unknown value '{raw['rng']}' (known: {', '.join(RNG_KINDS)})")


def load_file(path: pathlib.Path) -> Board:
    """Read and validate one board file; BoardError names the file and the field on any problem."""
    path = pathlib.Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BoardError(f"{path}: {e}") from None
    _check_fields(path, raw, FIELDS)
    if raw["name"] != path.stem:
        raise BoardError(f"{path}: field 'name': '{raw['name']}' must match the file name '{path.stem}'")
    _check_semantics(path, raw)
    return Board(**{k: raw[k] for k in FIELDS if k in raw}, path=path, raw=raw)


def names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def load(name: str) -> Board:
    """A board by name (boards/<name>.toml), or by the path of a .toml file outside boards/."""
    if name.endswith(".toml") and pathlib.Path(name).is_file():
        return load_file(pathlib.Path(name))
    path = BOARDS_DIR / f"{name}.toml"
    if not name or "/" in name or not path.is_file():
        raise BoardError(f"unknown board '{name}'; boards: {', '.join(names())}")
    return load_file(path)


def load_all() -> list[Board]:
    return [load(n) for n in names()]


def build(name: str, mode: str = "release", jobs: int = 2, quiet: bool = False) -> pathlib.Path:
    """Build libelk and the programs for board `name` with SCons (cross-compiling for ARM boards);
    returns the build directory. Raises BoardError for an unknown board or a failed build."""
    import subprocess
    import sys

    board = load(name)
    if mode not in ("release", "debug", "asan"):
        raise BoardError(f"unknown build mode '{mode}' (release, debug, asan)")
    # a board file given by path goes to SCons by its absolute path (SCons runs in ROOT)
    arg = str(board.path.resolve()) if board.path.parent.resolve() != BOARDS_DIR.resolve() else board.name
    cmd = [sys.executable, "-m", "SCons", "-Q", f"-j{max(1, jobs)}", f"board={arg}", f"mode={mode}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=quiet, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] if quiet else []
        raise BoardError(f"scons board={board.name} mode={mode} failed (exit {proc.returncode})"
                         + (f": {tail[0]}" if tail else ""))
    return board.build_dir(mode)
