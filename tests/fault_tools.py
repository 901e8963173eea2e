"""Tools the fault campaigns share (tests/test_fault_campaign.py, tests/test_fault_campaign_multi.py):
a pty proxy that injects line faults and cuts a board's power, the real `elk` command with a hang
bound, and the checks of what a board holds after a fault (through `elk status` and the flash file).
Not here: the campaigns' budgets, seeds and fault schedules."""

import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import termios
import threading
import time
import tty

from conftest import ROOT
from elk.frame import BadFrame, FrameDecoder
from elk.link import connect

CLI_TIMEOUT = 180  # a hang, not a slow run: every command here ends in seconds


class Campaign:
    """A campaign's schedule: each kind runs until its share of `budget` seconds is spent (at least
    once), or only the run `only` ("kind:n") names; run i of a kind draws from its own seeded RNG, so
    one run replays alone. tally: kind -> [runs, faults]."""

    def __init__(self, seed, budget, only, share):
        self.seed, self.budget, self.only, self.share = seed, budget, only, share
        self.tally = {}

    def runs(self, kind):
        if self.only:
            want, _, n = self.only.partition(":")
            if want == kind:
                yield int(n)
            return
        end = time.monotonic() + self.budget * self.share[kind]
        i = 0
        while i == 0 or time.monotonic() < end:
            t0 = time.monotonic()
            yield i
            if os.environ.get("ELK_FAULT_VERBOSE"):
                print(f"{kind}:{i} {time.monotonic() - t0:.1f} s")
            i += 1

    def rng(self, kind, i):
        return random.Random(f"{self.seed}:{kind}:{i}")

    def count(self, kind, faults=1):
        t = self.tally.setdefault(kind, [0, 0])
        t[0] += 1
        t[1] += faults


def elk(*args, timeout=CLI_TIMEOUT):
    try:
        return subprocess.run([sys.executable, "-m", "elk", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"`elk {' '.join(map(str, args))}` hung for {timeout} s") from None


def one_line_error(r, where):
    assert r.returncode == 2, f"{where}: exit {r.returncode}, stderr {r.stderr[-800:]!r}"
    assert r.stderr.startswith("elk: error: ") and r.stderr.count("\n") == 1, f"{where}: {r.stderr[-800:]!r}"
    assert "Traceback" not in r.stderr, where


class FaultLine:
    """A pty proxy between the board's port and a new pty the host opens: flips bits, drops and
    duplicates bytes (per direction), and can cut the board's power once the host has sent `kill_at`
    bytes (the bytes before that point reach the board; then the host side hangs up, as a USB serial
    adapter powered by the board does), or `kill_delay` seconds later while the line keeps working
    (a cut inside the board's own work after a given command). `frames` records which command
    ended at which byte, so a cut can be aimed at one (SET_BAUD, COMMIT)."""

    def __init__(self, board_port, rng, *, flip=0.0, drop=0.0, dup=0.0, directions=("to_board", "to_host"),
                 kill_at=None, on_kill=None, kill_delay=0.0):
        self.rng, self.flip, self.drop, self.dup = rng, flip, drop, dup
        self.directions = set(directions)
        self.kill_at, self.on_kill, self.kill_delay = kill_at, on_kill, kill_delay
        self.frames = []  # (host bytes sent when the frame ended, command code) of each clean host frame
        self._dec = FrameDecoder()
        self._timer = None
        self.killed = False
        self.board = os.open(board_port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.board)
        self.master, slave = os.openpty()
        os.set_blocking(self.master, False)
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        os.close(slave)  # the host opens it by name; a closed slave reads EIO on the master until then
        self.sent = 0    # host -> board bytes forwarded
        self.hits = 0    # bytes flipped, dropped or duplicated
        self.cut = False
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _mangle(self, data, direction):
        if direction not in self.directions or not (self.flip or self.drop or self.dup):
            return data
        out = bytearray()
        for b in data:
            r = self.rng.random()
            if r < self.drop:
                self.hits += 1
                continue
            if r < self.drop + self.flip:
                b ^= 1 << self.rng.randrange(8)
                self.hits += 1
            out.append(b)
            if self.rng.random() < self.dup:
                out.append(b)
                self.hits += 1
        return bytes(out)

    def _write(self, fd, data):
        """Write all of data unless that side reads nothing for a second (a host that left: its bytes go
        nowhere, as a UART's into an unplugged cable); the proxy never blocks, so close() ends it."""
        end = time.monotonic() + 1.0
        while data and not self.stop and time.monotonic() < end:
            try:
                n = os.write(fd, data)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            data = data[n:]
            end = time.monotonic() + 1.0

    def _run(self):
        fds = [self.board, self.master]
        while not self.stop and not self.cut:
            if self.killed:
                self._hang_up()
                return
            self._mirror_rate()
            ready, _, _ = select.select(fds, [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = None
                if not data:
                    if fd == self.board:  # the board's pty went away (EIO or EOF): the host side hangs up too
                        self._hang_up()
                        return
                    time.sleep(0.01)  # the host has not opened its side yet, or closed it
                    continue
                try:
                    if fd == self.master:
                        if self.kill_at is not None and self.sent + len(data) >= self.kill_at:
                            head = data[:self.kill_at - self.sent]
                            self._note_frames(head)
                            self._write(self.board, self._mangle(head, "to_board"))
                            self.sent = self.kill_at
                            self.kill_at = None
                            if self.kill_delay > 0:  # the line goes on until the board dies
                                self._timer = threading.Timer(self.kill_delay, self._kill_later)
                                self._timer.start()
                                data = data[len(head):]
                            else:
                                self.on_kill()
                                self._hang_up()
                                return
                        self._note_frames(data)
                        self.sent += len(data)
                        self._write(self.board, self._mangle(data, "to_board"))
                    else:
                        self._write(self.master, self._mangle(data, "to_host"))
                except OSError:
                    time.sleep(0.01)

    def _mirror_rate(self):
        """The rate the host set on its pty goes to the board's pty, so a board run with strict_rate
        (elk-fw --strict-rate) sees the host's rate through the proxy as it would on a cable."""
        try:
            host = termios.tcgetattr(self.master)
            board = termios.tcgetattr(self.board)
        except (termios.error, TypeError):
            return
        if host[4:6] != board[4:6]:
            board[4:6] = host[4:6]
            board[2] = (board[2] & ~termios.CBAUD) | (host[2] & termios.CBAUD)
            try:
                termios.tcsetattr(self.board, termios.TCSANOW, board)
            except termios.error:
                pass

    def _kill_later(self):
        self.on_kill()
        self.killed = True  # the next pass of the proxy hangs the host side up, as at once

    def _note_frames(self, data):
        at = 0
        while True:  # a frame ends at its 0x00 delimiter (COBS)
            end = data.find(b"\0", at)
            if end < 0:
                self._dec.feed(data[at:])
                return
            for f in self._dec.feed(data[at:end + 1]):
                if not isinstance(f, BadFrame):
                    self.frames.append((self.sent + end + 1, f.code))
            at = end + 1

    def _hang_up(self):
        self.cut = True
        try:
            os.close(self.master)
        except OSError:
            pass
        self.master = None

    def close(self):
        self.stop = True
        if self._timer is not None:
            self._timer.join(10)
        self.thread.join(10)
        assert not self.thread.is_alive(), "the fault proxy did not stop"
        for fd in (self.board, self.master):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def flash_slot_sha(flash_file, block, slot_size, slot, size):
    with open(flash_file, "rb") as f:
        f.seek(2 * block + slot * slot_size)
        return hashlib.sha256(f.read(size)).hexdigest()


def check_committed(emu, flash_file, images, allowed, where, booted=False, baud=None):
    """`elk status` on a (restarted) board: it runs its committed image, that image is one of
    `allowed` ("x", "y" or None for a blank board), and the flash file holds what status reports.
    booted: the board was not restarted, so it may also run the new image (Y) that BOOT started and a
    COMMIT never made active (the host died between the two). baud: the board's console rate (as a
    user gives it on a real line; None: elk's default). Returns the committed image's key."""
    r = elk("status", "--json", "--port", emu.port, *(["--baud", baud] if baud else []))
    assert r.returncode == 0, f"{where}: status failed: {r.stderr}"
    st = json.loads(r.stdout)
    if st["active"] is None:
        assert None in allowed, f"{where}: the committed image is lost: {st}"
        assert st["running"] is None, f"{where}: {st}"
        return None
    slot = st["slots"]["AB".index(st["active"])]
    which = images["sha"].get(slot["sha256"])
    assert which in allowed, f"{where}: the board's active slot holds {which or slot['sha256']}: {st}"
    assert slot["valid"] and st["boot_error"] == "", f"{where}: {st}"
    if st["running"] != st["active"]:
        run = st["slots"]["AB".index(st["running"])] if st["running"] else None
        assert booted and run and run["valid"] and images["sha"].get(run["sha256"]) == "y", f"{where}: {st}"
        got = flash_slot_sha(flash_file, emu.board.erase_block_kb * 1024, st["slot_size"],
                              "AB".index(st["running"]), run["image_size"])
        assert got == run["sha256"], f"{where}: status reports {run['sha256']} running, the flash holds {got}"
    got = flash_slot_sha(flash_file, emu.board.erase_block_kb * 1024, st["slot_size"], "AB".index(st["active"]),
                          slot["image_size"])
    assert got == slot["sha256"], f"{where}: status reports {slot['sha256']}, the flash holds {got}"
    return which


def flash_ok(port, image, where, baud=None):
    r = elk("flash", image, "--port", port, "--quiet", *(["--connect-baud", baud] if baud else []))
    assert r.returncode == 0 and "Traceback" not in r.stderr, f"{where}: the next flash failed: {r.stderr}"
    return r


def holds(port, images, want, where, baud=0):
    with connect(port, baud) as link:
        info = link.info()
    assert info.active < 2 and info.running == info.active, f"{where}: {info}"
    got = images["sha"].get(info.slots[info.active].sha256)
    assert got == want, f"{where}: the board runs {got}, expected {want}: {info}"
    return info


def stop_board(emu, after, seconds, done=None):
    """SIGSTOP elk-fw `after` seconds from now for `seconds`, then SIGCONT (in a thread)."""
    def run():
        if done is not None and done.wait(after):
            return
        if done is None:
            time.sleep(after)
        try:
            os.kill(emu.proc.pid, signal.SIGSTOP)
            time.sleep(seconds)
        finally:
            os.kill(emu.proc.pid, signal.SIGCONT)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t
