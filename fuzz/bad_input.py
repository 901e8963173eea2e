"""Run elk on deliberately bad input, every input surface, and record what the user sees.

    python fuzz/bad_input.py              # table on stdout
    python fuzz/bad_input.py --markdown   # the table docs/bad-input.md shows

Each case runs the real `elk` command (or, for board files and raw serial bytes, the real loader / a real
emulated board on a pty) and records exit code, the stderr lines and the time. tests/test_fuzz_bad_input.py
runs the same cases and asserts: non-zero exit, one `elk: error:` line, no traceback, within the limit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIX = ROOT.parent / "shared" / "fixtures"
sys.path.insert(0, str(ROOT / "host"))


@dataclasses.dataclass
class Case:
    surface: str
    tried: str
    argv: list | None = None          # elk arguments ({port} is replaced by the emulated board's port)
    call: object = None               # or a Python callable that raises ElkError
    stdin: bytes | None = None
    expect: str = ""                  # a fragment the error line must contain
    board: bool = False               # needs the emulated board
    succeeds: bool = False            # bad input the tool copes with: exit 0 is the right answer


@dataclasses.dataclass
class Outcome:
    case: Case
    rc: int
    lines: list
    seconds: float

    @property
    def shown(self) -> str:
        err = [ln for ln in self.lines if ln.strip()]
        return err[-1] if err else "(nothing)"


def make_files(d: pathlib.Path) -> dict:
    """Bad files made from real ones: truncations, flipped bytes, wrong kinds."""
    from elk import image, trust
    from elk.convert import load_model

    good = d / "good.elk"
    image.write_image(good, load_model(FIX / "stories260K.bin", tokenizer=FIX / "tok512.bin"), quant="q8_0")
    data = good.read_bytes()
    f = {"good": good}

    def put(name, b):
        (d / name).write_bytes(b)
        f[name] = d / name

    put("empty.elk", b"")
    put("random.elk", random.Random(1).randbytes(4096))
    put("truncated.elk", data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    put("payload-flip.elk", bytes(flipped))
    hdr = bytearray(data)
    hdr[100] ^= 0x40  # dim
    put("header-flip.elk", bytes(hdr))
    crcfixed = bytearray(data)
    struct.pack_into("<I", crcfixed, 100, 1 << 30)  # absurd dim, CRC recomputed
    struct.pack_into("<I", crcfixed, 252, zlib.crc32(crcfixed[:252]))
    put("absurd-dim.elk", bytes(crcfixed))
    k1, p1 = trust.keygen(d / "owner")
    k2, p2 = trust.keygen(d / "other")
    f["owner.key"], f["owner.pub"], f["other.key"], f["other.pub"] = k1, p1, k2, p2
    put("signed.elk", trust.sign_bytes(data, trust.load_private_key(k1)))
    put("signed-v3.elk", trust.sign_bytes(data, trust.load_private_key(k1), security_counter=3))  # the board runs it
    put("foreign.elk", trust.sign_bytes(data, trust.load_private_key(k2), security_counter=3))
    signed = trust.sign_bytes(data, trust.load_private_key(k1))
    put("sig-zeroed.elk", signed[:-30] + b"\x00" * 30)
    put("trailer-magic.elk", signed[:len(data)] + b"\x00" * 4 + signed[len(data) + 4:])
    ckpt = (FIX / "stories260K.bin").read_bytes()
    put("ckpt-truncated.bin", ckpt[:5000])
    put("ckpt-absurd.bin", struct.pack("<7i", 1 << 20, 1 << 22, 1000, 7, 3, 512, 512) + ckpt[28:4096])
    put("ckpt-random.bin", random.Random(2).randbytes(2048))
    reg = ROOT / "tests" / "fuzz-corpus" / "regressions" / "checkpoint"
    put("gguf-hang.gguf", (reg / "gguf-array-length-hang").read_bytes()[1:])
    put("gguf-bad-type.gguf", (reg / "gguf-token-type-out-of-range").read_bytes()[1:])
    put("gguf-truncated.gguf", (FIX / "stories260K.gguf").read_bytes()[:3000])
    put("not-a-tokenizer.bin", b"\xff" * 64)
    return f


def board_file_cases(d: pathlib.Path) -> list:
    """Board files go through elk.boards.load_file (what scons, elk plan and elk emulate call)."""
    from elk import boards

    host = (ROOT / "boards" / "host.toml").read_text()
    variants = {
        "not TOML at all": "this is = = not toml",
        "binary garbage": "\udcff\udcfe\x00",
        "missing field 'arch'": "\n".join(ln for ln in host.splitlines() if not ln.startswith("arch ")),
        "ram_mb as a string": host.replace("ram_mb = 8192", 'ram_mb = "lots"'),
        "unknown field": host + '\nfrobnicate = 1\n',
        "empty file": "",
    }
    cases = []
    for what, text in variants.items():
        (d / f"board-{len(cases)}").mkdir()
        p = d / f"board-{len(cases)}" / "host.toml"
        p.write_bytes(text.encode("utf-8", "surrogateescape"))

        def call(p=p):
            boards.load_file(p)
        cases.append(Case("board file", what, call=call))
    return cases


def serial_garbage(port: str) -> None:
    """Raw bytes on the board's line: noise, an oversized frame, a bad CRC; then the board must answer."""
    import serial

    from elk.link import connect

    with serial.serial_for_url(port, 115200, timeout=0.2) as s:
        rng = random.Random(3)
        s.write(rng.randbytes(3000))
        s.write(b"\x00" + b"\x01" * 20000 + b"\x00")
        s.write(b"\x00\x05\x01\x02\x03\x04\x00")
        time.sleep(0.3)
    with connect(port, 0) as link:
        info = link.info()
    print(f"(no error: the board answered INFO after the garbage: {info.board}, {info.firmware})")


def cases(f: dict, d: pathlib.Path) -> list:
    big = "once upon a time " * 1200  # 20 KB: several frames, inside the board's 32 KiB, 6002 tokens
    return [
        Case("image", "file does not exist", ["verify", d / "nope.elk"], expect="cannot read"),
        Case("image", "a directory", ["verify", d], expect=""),
        Case("image", "empty file", ["verify", f["empty.elk"]], expect="shorter"),
        Case("image", "4 KiB of random bytes", ["verify", f["random.elk"]], expect="magic"),
        Case("image", "truncated to half", ["run", f["truncated.elk"], "-p", "hi", "-n", "4"]),
        Case("image", "one payload byte flipped", ["verify", f["payload-flip.elk"]], expect="SHA-256"),
        Case("image", "header byte flipped", ["run", f["header-flip.elk"], "-p", "hi", "-n", "4"], expect="CRC"),
        Case("image", "dim = 2^30 with a valid CRC", ["run", f["absurd-dim.elk"], "-p", "hi", "-n", "4"]),
        Case("image", "signed, verified with another key", ["verify", f["signed.elk"], "--key", f["other.pub"]],
             expect="signature"),
        Case("image", "last 30 signature bytes zeroed", ["verify", f["sig-zeroed.elk"], "--key", f["owner.pub"]],
             expect="signature"),
        Case("image", "trailer magic zeroed", ["verify", f["trailer-magic.elk"], "--key", f["owner.pub"]],
             expect="trailer"),
        Case("image", "sign with the public key", ["sign", f["good"], "--key", f["owner.pub"]], expect="public key"),
        Case("checkpoint", "llama2.c file cut at 5000 bytes", ["pack", f["ckpt-truncated.bin"], "-o", d / "o.elk",
             "--tokenizer", FIX / "tok512.bin"]),
        Case("checkpoint", "llama2.c header dim 2^20, 1000 layers", ["pack", f["ckpt-absurd.bin"], "-o", d / "o.elk",
             "--tokenizer", FIX / "tok512.bin"]),
        Case("checkpoint", "2 KiB of random bytes", ["pack", f["ckpt-random.bin"], "-o", d / "o.elk",
             "--tokenizer", FIX / "tok512.bin"]),
        Case("checkpoint", "GGUF whose array length is 2^61 (fuzz find)", ["pack", f["gguf-hang.gguf"], "-o", d / "o.elk"],
             expect="do not fit"),
        Case("checkpoint", "GGUF with token type -255 (fuzz find)", ["pack", f["gguf-bad-type.gguf"], "-o", d / "o.elk"],
             expect="type"),
        Case("checkpoint", "GGUF cut at 3000 bytes", ["pack", f["gguf-truncated.gguf"], "-o", d / "o.elk"]),
        Case("checkpoint", "tokenizer with 32000 pieces for a 512-token model",
             ["pack", FIX / "stories260K.bin", "-o", d / "o.elk", "--tokenizer", FIX / "tokenizer.model"]),
        Case("checkpoint", "tokenizer file of 0xFF bytes", ["pack", FIX / "stories260K.bin", "-o", d / "o.elk",
             "--tokenizer", f["not-a-tokenizer.bin"]]),
        Case("checkpoint", "no such checkpoint", ["pack", d / "nope.bin", "-o", d / "o.elk"], expect="no such"),
        *board_file_cases(d),
        Case("board file", "unknown board name", ["plan", f["good"], "--board", "nosuch"], expect="unknown board"),
        Case("serial", "port that does not exist", ["status", "--port", "/dev/ttyNOPE"], expect="not found"),
        Case("serial", "3 KB noise, a 20 KB unterminated frame and a bad-CRC frame, then INFO", call="serial",
             board=True, succeeds=True),
        Case("serial", "flash an image whose payload hash is wrong", ["flash", f["payload-flip.elk"], "--port",
             "{port2}", "--connect-baud", "0", "--quiet"], board=True),
        Case("serial", "flash an unsigned image to a provisioned board", ["flash", f["good"], "--port", "{port}",
             "--connect-baud", "0", "--quiet"], board=True, expect="not signed"),
        Case("serial", "flash an image signed by another key to a provisioned board", ["flash", f["foreign.elk"],
             "--port", "{port}", "--connect-baud", "0", "--quiet"], board=True, expect="signed by key"),
        Case("serial", "flash an older owner-signed image (security counter 0, board runs 3)", ["flash",
             f["signed.elk"], "--port", "{port}", "--connect-baud", "0", "--quiet"], board=True,
             expect="downgrade refused"),
        Case("serial", "re-provision an owned board without --old-key", ["provision", "--port", "{port}", "--key",
             f["other.pub"], "--baud", "0"], board=True, expect="--old-key"),
        Case("serial", "re-provision with --old-key that is not the board's owner", ["provision", "--port",
             "{port}", "--key", f["other.pub"], "--old-key", f["other.key"], "--baud", "0"], board=True,
             expect="owner key is"),
        Case("CLI", "factory reset of a running board's flash file", ["provision", "--factory-reset",
             d / "b1.bin", "--board", "host"], board=True, expect="in use"),
        Case("chat", "20 KB prompt (several frames; 6002 tokens, context 512)", ["chat", "--port", "{port}",
             "--baud", "0", "-p", big, "-n", "4"], board=True, expect="more than the model's context of 512"),
        Case("chat", "prompt of exactly 512 tokens (fills the context, no room for a reply)", ["chat", "--port",
             "{port}", "--baud", "0", "--raw", "-p", "x" * 510, "-n", "4"], board=True,
             expect="the prompt is 512 tokens and fills the model's context of 512, leaving no room for a reply"),
        Case("chat", "32768-byte prompt (the board's limit: staged, then too long for the context)", ["chat",
             "--port", "{port}", "--baud", "0", "-p", "x" * 32768, "-n", "4"], board=True,
             expect="32770 tokens, more than the model's context"),
        Case("chat", "32769-byte prompt (one byte over the board's 32 KiB)", ["chat", "--port", "{port}", "--baud",
             "0", "-p", "x" * 32769, "-n", "4"], board=True, expect="the board takes at most 32768 bytes of prompt"),
        Case("chat", "prompt with invalid UTF-8 and control bytes", ["chat", "--port", "{port}", "--baud", "0", "-p",
             os.fsdecode(b"\xff\xfe\x1b[2J\x07 hi"), "-n", "4"], board=True, succeeds=True),
        Case("chat", "interactive lines: invalid UTF-8, empty, 10 KB (beyond the context), then /quit", ["chat",
             "--port", "{port}", "--baud", "0", "-n", "4"], stdin=b"\xff\xfe hi\n\n" + b"x" * 10000 + b"\n/quit\n",
             board=True, succeeds=True, expect="(the prompt is 10001 tokens, more than the model's context of 512"),
        Case("chat", "interactive 40 KB line, then /quit", ["chat", "--port", "{port}", "--baud", "0", "-n", "4"],
             stdin=b"x" * 40000 + b"\n/quit\n", board=True, succeeds=True,
             expect="(the line is 40000 bytes; the board takes at most 32768 bytes of prompt per turn: not sent)"),
        Case("chat", "chat with no model flashed", ["chat", "--port", "{port2}", "--baud", "0", "-p", "hi"],
             board=True),
        Case("CLI", "unknown command", ["frobnicate"]),
        Case("CLI", "keygen over an existing key", ["keygen", "-o", d / "owner"], expect="exists"),
        Case("CLI", "missing required option", ["sign", f["good"]]),
        Case("CLI", "security counter not a number", ["sign", f["good"], "--key", f["owner.key"],
             "--security-counter", "lots"]),
        Case("CLI", "security counter 2^32", ["sign", f["good"], "--key", f["owner.key"], "--security-counter",
             str(1 << 32)], expect="security counter"),
        Case("CLI", "negative token count", ["run", f["good"], "-p", "hi", "-n", "-5"]),
        Case("CLI", "unknown quant type", ["pack", FIX / "stories260K.bin", "-o", d / "o.elk", "--quant", "q3_k"]),
    ]


def run_case(c: Case, ports: dict, timeout: float = 120) -> Outcome:
    t0 = time.monotonic()
    if c.call is not None:
        from elk.errors import ElkError

        import contextlib
        import io

        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                serial_garbage(ports["port"]) if c.call == "serial" else c.call()
            lines, rc = [buf.getvalue().strip() or "(no error)"], 0
        except ElkError as e:
            lines, rc = [f"elk: error: {e}"], 2
        except Exception as e:  # noqa: BLE001 - recorded, the test fails on it
            lines, rc = [f"TRACEBACK {type(e).__name__}: {e}"], 1
        return Outcome(c, rc, lines, time.monotonic() - t0)
    argv = [str(a).format(**ports) if isinstance(a, str) else str(a) for a in c.argv]
    proc = subprocess.run([sys.executable, "-m", "elk", *argv], capture_output=True, timeout=timeout,
                          input=c.stdin, env={**os.environ, "PYTHONPATH": str(ROOT / "host")}, cwd=ROOT)
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    out = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    if c.succeeds and c.expect:  # coped with: the line that says how (e.g. the chat console's refusal)
        lines = lines + [ln for ln in out if c.expect in ln][:1]
    elif not lines:  # `elk verify` reports on stdout: its FAIL lines are what the user reads
        lines = [" / ".join(ln for ln in out if ln.startswith("FAIL")) or (out[-1] if out else "")]
    elif c.succeeds:
        lines = lines + out[-1:]
    return Outcome(c, proc.returncode, lines, time.monotonic() - t0)


def run_all(d: pathlib.Path, only_board: bool | None = None) -> list:
    from elk import flash as flashing
    from elk import provision, trust
    from elk.emulate import Emulator
    from elk.link import connect

    f = make_files(d)
    todo = [c for c in cases(f, d) if only_board is None or c.board == only_board]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:  # two at a time: the machine is shared
        out = list(pool.map(lambda c: run_case(c, {}), [c for c in todo if not c.board]))
    if any(c.board for c in todo):
        log = open(d / "fw.log", "w")
        with Emulator("host", baud=0, flash=d / "b1.bin", flash_mb=8, log=log) as emu, \
                Emulator("host", baud=0, flash=d / "b2.bin", flash_mb=8, log=log) as empty:
            assert flashing.flash([emu.port], f["signed-v3.elk"], connect_baud=0, progress=False)[0].ok
            with connect(emu.port, 0) as link:
                provision.provision(link, trust.load_public_key(f["owner.pub"]))
            ports = {"port": emu.port, "port2": empty.port}
            out += [run_case(c, ports) for c in todo if c.board]
    return out


def markdown(results: list) -> str:
    rows = ["| surface | what was tried | exit | what the user sees (last stderr line) | s |", "|---|---|---|---|---|"]
    for r in results:
        shown = r.shown.replace("|", "\\|")
        if len(shown) > 300:
            shown = shown[:300] + "…"
        rows.append(f"| {r.case.surface} | {r.case.tried} | {r.rc} | `{shown}` | {r.seconds:.1f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(pathlib.Path(tmp))
        if "--markdown" in argv:
            print(re.sub(r"/dev/pts/\d+", "PORT", markdown(results).replace(tmp, "TMP")))
        else:
            for r in results:
                print(f"{r.case.surface:10} {r.rc:3} {len(r.lines)}l {r.seconds:5.1f}s {r.case.tried}: {r.shown[:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
