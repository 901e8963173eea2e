"""Build and run every elk fuzz harness; replay the regression corpus. One command:

    python fuzz/run.py --seconds 10            # each harness 10 s (seeds: tests/fuzz-corpus/<name>/)
    python fuzz/run.py --only image,trust --seconds 600
    python fuzz/run.py --replay                # seeds + tests/fuzz-corpus/regressions/<name>/ once each
    python fuzz/run.py --save-crashes          # copy new crash inputs into the regression corpus

C harnesses are libFuzzer binaries (clang -fsanitize=fuzzer,address,undefined) built into build/fuzz/
from the module sources they exercise; a harness whose sources have not landed yet is reported as
skipped. The board-file harness is Python (atheris, or a mutation loop without it).
Exit status: 0 when nothing crashed, 1 on a crash, 2 on a build failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT / "firmware" / "src"
OUT = ROOT / "build" / "fuzz"
CORPUS = ROOT / "tests" / "fuzz-corpus"
REGRESSIONS = CORPUS / "regressions"
CFLAGS = ["-g", "-O1", "-std=c11", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
          "-fno-omit-frame-pointer", f"-I{ROOT / 'firmware' / 'include'}", f"-I{SRC}"]


@dataclasses.dataclass
class Harness:
    name: str
    what: str
    harness: str                 # file under fuzz/
    modules: tuple = ()          # firmware/src/<module>/*.c compiled in (C harnesses)
    libs: tuple = ()
    python: bool = False
    files: tuple = ()            # single extra files under firmware/src (e.g. kernels/ref.c for row sizes)

    def sources(self) -> list[pathlib.Path]:
        files = [ROOT / "fuzz" / self.harness]
        for m in self.modules:
            files += sorted((SRC / m).glob("*.c"))
        return files + [SRC / f for f in self.files]

    def missing(self) -> str | None:
        for m in self.modules:
            if not list((SRC / m).glob("*.c")):
                return f"firmware/src/{m} has no sources yet"
        for f in self.files:
            if not (SRC / f).is_file():
                return f"firmware/src/{f} does not exist yet"
        return None


HARNESSES = [
    Harness("image", "image parser + tensor/meta access", "fuzz_image.c", ("image", "util"),
            files=("kernels/ref.c",)),
    Harness("tokenizer", "TOKENIZER section parse + encode/decode of fuzzed text", "fuzz_tokenizer.c",
            ("tokenizer", "util")),
    Harness("frame", "serial frame decoder (COBS, CRC) + re-encode round trip", "fuzz_frame.c", ("proto", "util")),
    Harness("trust", "signature trailer, commit decision, provisioning record", "fuzz_trust.c",
            ("util",), libs=("sodium",), files=("trust/trust.c",)),  # not fw_trust.c: that needs the firmware
    Harness("commands", "firmware command handlers over a RAM board (flash, trust, generation)",
            "fuzz_commands.c", ("util", "image", "model", "tokenizer", "sampler", "proto", "npu", "main", "trust"),
            libs=("sodium",), files=("kernels/ref.c", "kernels/tables.c")),
    Harness("boards", "board-file loader (host/elk/boards.py)", "fuzz_boards.py", python=True),
    Harness("checkpoint", "checkpoint/tokenizer readers + packer (host/elk/convert, tokenizer)",
            "fuzz_checkpoint.py", python=True),
    Harness("host", "host parsers of untrusted bytes: board replies (elk.link), image reader, trust checks",
            "fuzz_host.py", python=True),
]
EXTRA = [  # harnesses other files register (fuzz/fuzz_commands.c when firmware/src/main lands)
    Harness("npu", "NPU section parser + runner over the sim backend (CRC rewritten)", "fuzz_npu.c",
            ("npu", "util")),
]


def all_harnesses() -> list[Harness]:
    return HARNESSES + EXTRA


def build(h: Harness, verbose: bool) -> pathlib.Path:
    """Compile a C harness unless the binary is newer than all its sources. Raises on failure."""
    exe = OUT / h.name
    srcs = h.sources()
    headers = list((ROOT / "firmware" / "include" / "elk").glob("*.h")) + list(SRC.glob("*/*.h"))
    if exe.exists() and exe.stat().st_mtime > max(p.stat().st_mtime for p in srcs + headers):
        return exe
    OUT.mkdir(parents=True, exist_ok=True)
    cmd = ["clang", *CFLAGS, *map(str, srcs), "-o", str(exe), "-lm", *[f"-l{lib}" for lib in h.libs]]
    if verbose:
        print(" ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"build of fuzz harness '{h.name}' failed:\n{proc.stderr[-4000:]}")
    return exe


def command(h: Harness, exe: pathlib.Path | None) -> list[str]:
    if h.python:
        return [sys.executable, str(ROOT / "fuzz" / h.harness)]
    return [str(exe)]


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def fuzz(h: Harness, exe, seconds: float, save_crashes: bool, fresh: bool = False) -> dict:
    work = OUT / "corpus" / h.name       # grows as libFuzzer finds new coverage; seeds stay untouched
    if fresh:  # start from the seeds only: libFuzzer first replays the whole work corpus, which grows
        work = OUT / "corpus-fresh" / h.name
        shutil.rmtree(work, ignore_errors=True)
    crashes = OUT / "crashes" / h.name
    work.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    seeds = [str(d) for d in (CORPUS / h.name, REGRESSIONS / h.name) if d.is_dir()]
    if h.python and not have_atheris():
        cmd = command(h, exe) + ["--mutate", str(seconds), *seeds]
        env = {**os.environ, "ELK_FUZZ_ARTIFACTS": str(crashes)}
    else:
        cmd = command(h, exe) + [f"-max_total_time={int(max(1, seconds))}", "-timeout=10", "-rss_limit_mb=2048",
                                 f"-artifact_prefix={crashes}/", "-print_final_stats=1", str(work), *seeds]
        env = os.environ
    # libFuzzer ends a Python target with _exit (no atexit): its scratch dir lives in one we remove
    tmp = tempfile.mkdtemp(prefix="elk-fuzz-run-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "ELK_FUZZ_TMP": tmp},
                              timeout=seconds + 300)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log = proc.stdout + proc.stderr
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    new = sorted(set(crashes.iterdir()) - before)
    saved = []
    if save_crashes and new:
        dest = REGRESSIONS / h.name
        dest.mkdir(parents=True, exist_ok=True)
        for p in new:
            shutil.copyfile(p, dest / p.name)
            saved.append(dest / p.name)
    return {"rc": proc.returncode, "runs": int(runs[-1]) if runs else 0, "crashes": new, "saved": saved,
            "corpus": len(list(work.iterdir())), "log": log}


def replay(h: Harness, exe, dirs=None) -> dict:
    dirs = dirs or (CORPUS / h.name, REGRESSIONS / h.name)
    files = [str(p) for d in dirs if d.is_dir() for p in sorted(d.iterdir()) if p.is_file()]
    if not files:
        return {"rc": 0, "runs": 0, "log": ""}
    if h.python:
        cmd = command(h, exe) + ["--replay", *files]
    else:
        cmd = command(h, exe) + ["-runs=1", *files]  # libFuzzer runs each file argument once
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return {"rc": proc.returncode, "runs": len(files), "log": proc.stdout + proc.stderr}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10, help="fuzzing time per harness (default 10)")
    ap.add_argument("--only", default="", help="comma-separated harness names")
    ap.add_argument("--replay", action="store_true", help="run seeds and regression inputs once, no fuzzing")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--save-crashes", action="store_true", help="copy new crash inputs to tests/fuzz-corpus/regressions/")
    ap.add_argument("--fresh", action="store_true", help="ignore the grown corpus in build/fuzz/corpus (quick smoke runs)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    chosen = all_harnesses()
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {h.name for h in chosen}
        if unknown:
            print(f"fuzz: unknown harness {sorted(unknown)[0]!r}; have {', '.join(h.name for h in chosen)}")
            return 2
        chosen = [h for h in chosen if h.name in names]
    if args.list:
        for h in chosen:
            print(f"{h.name:10} {h.what}" + (f"  [skipped: {h.missing()}]" if h.missing() else ""))
        return 0
    status = 0
    for h in chosen:
        why = h.missing()
        if why:
            print(f"{h.name:10} skipped: {why}")
            continue
        try:
            exe = None if h.python else build(h, args.verbose)
        except RuntimeError as e:
            print(f"{h.name:10} BUILD FAILED\n{e}")
            status = 2
            continue
        if args.build_only:
            print(f"{h.name:10} built {exe or h.harness}")
            continue
        if args.replay:
            r = replay(h, exe)
            ok = r["rc"] == 0
            print(f"{h.name:10} replay {r['runs']} inputs: {'ok' if ok else 'CRASH'}")
        else:
            r = fuzz(h, exe, args.seconds, args.save_crashes, args.fresh)
            ok = r["rc"] == 0 and not r["crashes"]
            line = f"{h.name:10} {r['runs']} runs in {args.seconds:g} s, corpus {r['corpus']}"
            print(line + ("" if ok else f", CRASH: {', '.join(str(p) for p in r['crashes']) or 'see log'}"))
            for p in r["saved"]:
                print(f"{'':10} saved regression {p.relative_to(ROOT)}")
        if not ok:
            status = max(status, 1)
            tail = [ln for ln in r["log"].splitlines() if "ERROR" in ln or "SUMMARY" in ln or "CRASH" in ln
                    or "Error" in ln or ln.startswith("    #")]
            print("\n".join(tail[:30]))
    return status


if __name__ == "__main__":
    sys.exit(main())
