"""Emulated boards behind real pseudo-terminals: build elk-fw for a board, open a pty pair, run the
firmware natively or under qemu-user (the board file's `emulation` table) with the pty master as
its UART, and record the running board in a runtime directory so `elk ports` can list it.

Not here: the protocol (elk.link) or the firmware itself (firmware/src/main).
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import ctypes
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty

from elk import boards
from elk.errors import ElkError

RUNTIME_DIR = pathlib.Path(os.environ.get("ELK_RUNTIME_DIR", "/tmp/elk-emulators"))
RAM_CAP_MB = 2048  # reserve at most this much board RAM per emulated board (NORESERVE, but be kind)
FAST_MAX_BAUD = 3000000
FLASH_CAP_32BIT_MB = 1024  # emulated flash of 32-bit boards (the firmware maps all of it)
# start() returns once the firmware serves its UART (elk-fw --ready-fd), so a client's first HELLO is not
# spent on qemu starting up; a ceiling, not an expected time (qemu under load, an ASan build)
READY_TIMEOUT_S = 300.0


class EmulatorError(ElkError):
    pass


try:  # looked up here, not in the forked child (no allocation between fork and exec)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int):
    """preexec_fn: the firmware gets SIGTERM when the process that started it dies, even by SIGKILL or a
    closed terminal, so no elk-fw (or qemu) outlives its `elk emulate`. Linux ties this to the creating
    thread, hence only used from the main thread."""
    def child():
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return child


def build(board: boards.Board, mode: str = "release") -> pathlib.Path:
    """Run SCons for the board (a no-op when up to date) and return elk-fw's path."""
    cmd = [sys.executable, "-m", "SCons", "-Q", "-j2", f"board={_board_arg(board)}"]
    if mode != "release":
        cmd.append(f"mode={mode}")
    fw = board.build_dir(mode) / "elk-fw"
    cmd.append(str(fw.relative_to(boards.ROOT)))
    proc = subprocess.run(cmd, cwd=boards.ROOT, capture_output=True, text=True)
    if proc.returncode != 0 or not fw.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise EmulatorError(f"building elk-fw for {board.name} failed: {' | '.join(tail)}")
    return fw


def _board_arg(board: boards.Board) -> str:
    """SCons' board= value: the name for boards/, the file's path for a board file elsewhere (tests)."""
    in_tree = board.path is None or board.path.resolve().parent == boards.BOARDS_DIR.resolve()
    return board.name if in_tree else str(board.path.resolve())


def npu_args(board: boards.Board) -> list:
    """elk-fw flags carrying the board file's NPU facts ([] for a board without an NPU)."""
    npu = board.npu
    if npu.get("kind", "none") == "none":
        return []
    tops = npu["tops"]
    int8 = tops.get("int8", max(tops.values()))
    return ["--npu-kind", npu["kind"], "--npu-tops", f"{float(int8):g}",
            "--npu-efficiency", f"{float(npu['efficiency']):g}", "--npu-dma-gbs", f"{float(npu['dma_gbs']):g}",
            "--npu-chunk", str(npu["prefill_chunk_tokens"])]


def firmware_path(board: boards.Board, mode: str = "release", build_if_missing: bool = True) -> pathlib.Path:
    fw = board.build_dir(mode) / "elk-fw"
    if not fw.exists():
        if not build_if_missing:
            raise EmulatorError(f"{fw} not built (run `scons board={board.name}`)")
        return build(board, mode)
    return fw


class Emulator:
    """One emulated board. `with Emulator("host", flash=path) as emu: Link(emu.port)`.

    baud: the line rate the firmware paces to (0 = unthrottled; default the board file's console baud).
    strict_rate: bytes arrive garbled while the host's side of the pty is set to another rate than the
    board's (elk-fw --strict-rate), as on a real line; by default a pty carries them whatever the rates.
    """

    def __init__(self, board: str = "host", *, flash=None, baud=None, max_baud=FAST_MAX_BAUD,
                 broken_above=0, build_first=False, mode="release", log=None, flash_mb=None, threads=1,
                 ram_mb=None, on_port=None, rng=None, strict_rate=False):
        for name, value, low in (("--baud", baud, 0), ("--flash-mb", flash_mb, 1), ("--threads", threads, 1),
                                 ("RAM MiB", ram_mb, 1)):
            if value is not None and int(value) < low:
                raise EmulatorError(f"{name} must be {low} or more, got {value}")
        if flash is not None and not pathlib.Path(flash).parent.is_dir():
            raise EmulatorError(f"{flash}: its folder does not exist")
        self.board = boards.load(board)
        if self.board.emulation.get("kind") == "none":
            raise EmulatorError(f"{board}: this board is not emulated (emulation kind 'none')")
        self.prefix = self.board.run_prefix()
        self.fw = build(self.board, mode) if build_first else firmware_path(self.board, mode)
        self.baud = self.board.console.get("baud", 115200) if baud is None else int(baud)
        self.max_baud = max_baud
        self.broken_above = broken_above
        self.strict_rate = strict_rate
        self.flash_mb = flash_mb or self.board.flash_mb
        if self.board.arch == "armv7":
            # elk-fw maps the whole flash; a 32-bit process cannot map more than ~2 GiB of it
            self.flash_mb = min(self.flash_mb, FLASH_CAP_32BIT_MB)
        self.threads = threads
        # rng: None = as the board file says (field rng), False = a board without an RNG (elk-fw --no-rng)
        self.rng = (self.board.rng != "none") if rng is None else bool(rng)
        self.ram_mb = ram_mb or min(self.board.ram_mb, RAM_CAP_MB)
        self._tmp = None
        if flash is None:
            self._tmp = tempfile.NamedTemporaryFile(prefix=f"elk-flash-{self.board.name}-", suffix=".bin",
                                                    delete=False)
            self._tmp.close()
            flash = self._tmp.name
        self.flash = str(flash)
        self.log = log  # file object for firmware diagnostics (None: inherit stderr)
        self.on_port = on_port  # called with the port before the firmware starts (and can print)
        self.proc = None
        self.port = None
        self._master = self._slave = None
        self._ready_w = None
        self.record = None

    def command(self) -> list:
        b = self.board
        ready = ["--ready-fd", str(self._ready_w)] if self._ready_w is not None else []
        return self.prefix + [
            str(self.fw), "--uart-fd", str(self._master), "--flash", self.flash, "--board", b.name,
            "--flash-mb", str(self.flash_mb), "--erase-kb", str(b.erase_block_kb),
            "--ram-mb", str(self.ram_mb), "--baud", str(self.baud),
            "--max-baud", str(self.max_baud), "--broken-above", str(self.broken_above),
            "--threads", str(self.threads)] + ready + npu_args(b) + ([] if self.rng else ["--no-rng"]) + (
            ["--strict-rate"] if self.strict_rate else [])

    def _flash_free(self) -> None:
        """elk-fw locks its flash file (flock); say in one line when another board holds it."""
        import fcntl

        try:
            fd = os.open(self.flash, os.O_RDONLY)
        except OSError:
            return  # not there yet (elk-fw creates it) or unreadable: elk-fw reports that itself
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            raise EmulatorError(f"{self.flash}: flash file in use by another emulated board "
                                "(`elk ports` lists them)") from None
        finally:
            os.close(fd)

    def start(self) -> "Emulator":
        try:
            self._flash_free()
            return self._start()
        except BaseException:
            self.stop()  # no pty, record or temporary flash file left behind
            raise

    def _start(self) -> "Emulator":
        self._master, self._slave = os.openpty()
        # Raw mode on the slave: no echo, no CR/LF translation, ^C is a byte. The emulator keeps the
        # slave open so the firmware's UART never sees a hang-up between clients.
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        if self.on_port is not None:
            self.on_port(self.port)
        tie = _prctl is not None and threading.current_thread() is threading.main_thread()
        ready_r, self._ready_w = os.pipe()
        try:  # the read end is closed on every path: a failed spawn used to leak it
            try:
                self._spawn(tie)
            finally:
                os.close(self._ready_w)
                self._ready_w = None
            os.close(self._master)
            self._master = None
            self._write_record()
            self._wait_ready(ready_r)
        finally:
            os.close(ready_r)
        return self

    def _write_record(self) -> None:
        """The runtime-directory entry `elk ports` lists (none when the directory is not writable)."""
        self.record = RUNTIME_DIR / f"{os.getpid()}-{self.proc.pid}.json"
        try:
            RUNTIME_DIR.mkdir(parents=True, exist_ok=True)
            self.record.write_text(json.dumps({
                "port": self.port, "board": self.board.name, "pid": os.getpid(), "fw_pid": self.proc.pid,
                "flash": self.flash, "baud": self.baud, "started": time.time()}))
        except OSError:
            self.record = None

    def _wait_ready(self, fd: int) -> None:
        """Until elk-fw first reads its UART (one byte on the --ready-fd pipe); EOF = it exited."""
        import select

        end = time.monotonic() + READY_TIMEOUT_S
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise EmulatorError(f"elk-fw for {self.board.name} did not start serving within "
                                    f"{READY_TIMEOUT_S:.0f} s")
            if select.select([fd], [], [], min(left, 1.0))[0]:
                if os.read(fd, 1):
                    return
                try:
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
                code = self.proc.poll()
                hint = (f": it refused its arguments, a build older than this elk? (`scons board="
                        f"{_board_arg(self.board)}`)" if code == 2 else "")
                raise EmulatorError(f"elk-fw for {self.board.name} exited at start (code {code}){hint}")

    def _spawn(self, tie: bool) -> None:
        for attempt in range(20):
            try:
                self.proc = subprocess.Popen(self.command(), pass_fds=(self._master, self._ready_w),
                                             stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=self.log or None,
                                             start_new_session=True,
                                             preexec_fn=_die_with_parent(os.getpid()) if tie else None)
                break
            except OSError as e:
                # a concurrent SCons run may be relinking elk-fw right now (EACCES / ETXTBSY / ENOENT)
                if attempt == 19 or e.errno not in (errno.EACCES, errno.ETXTBSY, errno.ENOENT):
                    raise EmulatorError(f"cannot start {self.fw}: {e.strerror}") from None
                time.sleep(0.25)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Stop the firmware at once, as a power cut would (the flash file keeps what was written)."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        if self.record is not None:
            try:
                self.record.unlink()
            except OSError:
                pass
            self.record = None
        if self._tmp is not None:
            try:
                os.unlink(self._tmp.name)
            except OSError:
                pass
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def running() -> list:
    """Emulated boards recorded in the runtime directory whose firmware is still alive."""
    out = []
    if not RUNTIME_DIR.is_dir():
        return out
    for path in sorted(RUNTIME_DIR.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
            os.kill(int(rec["fw_pid"]), 0)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            try:
                path.unlink()  # stale: the emulator died without cleaning up
            except OSError:
                pass
            continue
        if os.path.exists(rec.get("port", "")):
            out.append(rec)
    return out



def ports() -> dict:
    """What `elk ports` lists: this machine's serial ports and the emulated boards running now."""
    from serial.tools import list_ports

    emulated = running()
    real = [{"port": p.device, "description": p.description} for p in list_ports.comports()]
    return {"serial": real, "emulated": emulated}


def ports_lines(listing: dict) -> list:
    """ports() for people: one line per port, or a hint when there is none."""
    lines = [f"{r['port']:16} {r['description']}" for r in listing["serial"]]
    for e in listing["emulated"]:
        rate = "unthrottled" if e["baud"] == 0 else f"{e['baud']} baud"
        lines.append(f"{e['port']:16} emulated {e['board']} board ({rate}, pid {e['fw_pid']}, flash {e['flash']})")
    return lines or ["no serial ports and no emulated boards (start one with `elk emulate`)"]

def serve(board: str, flash=None, baud=None, out=sys.stdout, **kw) -> int:
    """`elk emulate`: start a board, print its port first (flushed), run until Ctrl-C, SIGTERM or SIGHUP
    (the terminal closed); each stops the firmware and removes the record and a temporary flash file."""
    # the port line goes out before the firmware runs, so it is first even with stderr merged
    emu = Emulator(board, flash=flash, baud=baud, build_first=True,
                   on_port=lambda port: print(f"port: {port}", file=out, flush=True), **kw)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        emu.start()
        rate = "unthrottled" if emu.baud == 0 else f"{emu.baud} baud"
        print(f"board: {emu.board.name} ({rate}), flash: {emu.flash}; Ctrl-C stops", file=out, flush=True)
        while not stop["now"]:
            if not emu.alive():
                raise EmulatorError(f"elk-fw exited (code {emu.proc.returncode})")
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        emu.stop()
    return 0
