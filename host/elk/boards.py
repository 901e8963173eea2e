"""Board files (boards/*.toml): one declarative file per board, read by SConstruct, the host tool
and the tests. The format is documented in docs/boards.md. This module validates a file on load and
turns it into build settings; it holds no per-board code.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import tomllib

from elk.errors import ElkError

ROOT = pathlib.Path(__file__).resolve().parents[2]
BOARDS_DIR = ROOT / "boards"


class BoardError(ElkError):
    pass


@dataclasses.dataclass
class Board:
    name: str
    description: str
    arch: str
    platform: str
    toolchain: str
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
    path: pathlib.Path = None
    raw: dict = None

    def summary(self) -> str:
        npu = self.npu.get("kind", "none")
        return f"{self.arch:8} ram {self.ram_mb} MB, flash {self.flash_mb} MB, npu {npu} - {self.description}"

    def kernel_files(self):
        """(isa file stem, extra CFLAGS) for each ISA kernel file this board compiles."""
        flags = {
            "avx2": ["-mavx2", "-mfma", "-mf16c"],
            "neon": [],
            "neon_dotprod": ["-march=armv8.2-a+dotprod"],
            "neon_i8mm": ["-march=armv8.6-a+dotprod+i8mm"],
        }
        return [(k, flags.get(k, [])) for k in self.kernels]

    def configure(self, env) -> None:
        """Set compiler, flags and kernel defines on a SCons environment."""
        if env.get("cc"):
            env["CC"] = env["cc"]
        elif self.toolchain:
            cc = f"{self.toolchain}-gcc"
            if shutil.which(cc) is None:
                raise BoardError(f"{self.name}: cross compiler {cc} not found (apt-get install gcc-{self.toolchain})")
            env["CC"] = cc
        env.Append(CCFLAGS=list(self.cflags))
        env.Append(CPPDEFINES=[f"ELK_KERNELS_{k.upper()}" for k in self.kernels])
        env.Append(CPPDEFINES=[("ELK_BOARD_NAME", f'\\"{self.name}\\"')])
        env["STATIC_AND_SHARED_OBJECTS_ARE_THE_SAME"] = True


REQUIRED = {
    "name": str, "description": str, "arch": str, "platform": str, "toolchain": str,
    "cflags": list, "isa": list, "kernels": list, "ram_mb": int, "flash_mb": int,
    "erase_block_kb": int, "mem_bandwidth_gbs": (int, float), "cpu_cores": int, "cpu_gops": (int, float),
    "npu": dict, "console": dict, "emulation": dict,
}


def load_file(path: pathlib.Path) -> Board:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BoardError(f"{path}: {e}") from None
    for field, kind in REQUIRED.items():
        if field not in raw:
            raise BoardError(f"{path}: missing field '{field}'")
        if not isinstance(raw[field], kind) or isinstance(raw[field], bool):
            raise BoardError(f"{path}: field '{field}' has the wrong type ({type(raw[field]).__name__})")
    unknown = sorted(set(raw) - set(REQUIRED))
    if unknown:
        raise BoardError(f"{path}: unknown field '{unknown[0]}'")
    return Board(**{k: raw[k] for k in REQUIRED}, path=path, raw=raw)


def names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def load(name: str) -> Board:
    path = BOARDS_DIR / f"{name}.toml"
    if not path.is_file():
        raise BoardError(f"unknown board '{name}'; boards: {', '.join(names())}")
    return load_file(path)


def load_all() -> list[Board]:
    return [load(n) for n in names()]
