"""`elk flash`: write an image into a board's inactive slot over the serial link, sending only the
blocks the board does not already hold (block hashes: unchanged blocks are skipped or copied from the
other slot, an interrupted transfer resumes), verify the SHA-256 on the board, boot it and commit.
Several ports flash in parallel, one progress line each; one failing board does not stop the others.

Not here: framing and retransmission (elk.link).
"""

from __future__ import annotations

import dataclasses
import hashlib
import mmap
import os
import pathlib
import struct
import sys
import threading
import time
import zlib

from elk import proto_spec as P
from elk import spec
from elk.errors import ElkError
from elk.link import CMD, BoardReplyError, LinkError, connect
from elk.link import connect_timeout as connect_budget

COPY_RUN_MAX = 64  # blocks per FLASH_COPY request: bounds the board's time per reply


class ImageTooLargeError(ElkError):
    pass


class FlashInterruptedError(ElkError):
    pass


@dataclasses.dataclass
class FlashResult:
    port: str
    ok: bool = False
    error: str = ""
    image_size: int = 0
    slot: str = ""
    block_size: int = 0
    blocks_sent: int = 0
    blocks_copied: int = 0
    blocks_skipped: int = 0
    data_bytes_sent: int = 0      # image bytes carried in FLASH_DATA frames
    wire_bytes_out: int = 0
    wire_bytes_in: int = 0
    retransmits: int = 0
    baud: int = 0
    seconds: float = 0.0
    warning: str = ""             # from the board at FLASH_END (e.g. unsigned image, no owner key)
    up_to_date: bool = False      # the board already runs this image from its active slot: nothing done

    @property
    def efficiency(self) -> float:
        """Image bytes sent / all bytes on the wire (both directions, the whole session)."""
        wire = self.wire_bytes_out + self.wire_bytes_in
        return self.data_bytes_sent / wire if wire else 0.0

    def summary(self) -> str:
        if not self.ok:
            return f"{self.port}: FAILED: {self.error}"
        if self.up_to_date:
            return f"{self.port}: OK slot {self.slot} already runs this image (same SHA-256): nothing sent"
        rate = self.data_bytes_sent / self.seconds if self.seconds > 0 else 0
        line = "unthrottled" if self.baud == 0 else f"{self.baud} baud"
        return (f"{self.port}: OK slot {self.slot}, {_size(self.image_size)} image: sent {self.blocks_sent} "
                f"blocks ({_size(self.data_bytes_sent)}), copied {self.blocks_copied}, skipped "
                f"{self.blocks_skipped} in {self.seconds:.1f} s ({_size(rate)}/s at {line}), "
                f"{self.retransmits} retransmits, wire efficiency {100 * self.efficiency:.1f}%"
                + (f"\n{self.port}: warning: {self.warning}" if self.warning else ""))


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def block_hashes(data: bytes, block: int) -> list:
    """First 8 bytes of SHA-256 of each block (the last one may be short), as the board computes them."""
    return [hashlib.sha256(data[i:i + block]).digest()[:P.BLOCK_HASH_SIZE] for i in range(0, len(data), block)]


def _plan(local, target, other) -> list:
    """Per block: 'skip' (target slot already right), 'copy' (the other slot has it), or 'send'."""
    plan = []
    for i, h in enumerate(local):
        if i < len(target) and target[i] == h:
            plan.append("skip")
        elif i < len(other) and other[i] == h:
            plan.append("copy")
        else:
            plan.append("send")
    return plan


def _runs(plan, action):
    """(first, count) of consecutive blocks with this action."""
    i = 0
    while i < len(plan):
        if plan[i] != action:
            i += 1
            continue
        j = i
        while j < len(plan) and plan[j] == action:
            j += 1
        yield i, j - i
        i = j


class _Transfer:
    """One board's flash: the link, the image and the counters the progress line shows."""

    def __init__(self, port, data, sha, connect_baud, baud, progress, stop=None, connect_timeout=None):
        self.res = FlashResult(port, image_size=len(data))
        self.connect_timeout = connect_timeout
        self.data, self.sha = data, sha
        self.connect_baud, self.baud = connect_baud, baud
        self.progress = progress
        self.stop = stop  # threading.Event: the user pressed Ctrl-C
        self.done = 0
        self.t0 = time.monotonic()

    def tick(self, n):
        if self.stop is not None and self.stop.is_set():
            raise FlashInterruptedError("interrupted; the next `elk flash` resumes where this one stopped")
        self.done += n
        if self.progress:
            self.progress.update(self.res.port, self.done, len(self.data), time.monotonic() - self.t0)

    def run(self):
        link = connect(self.res.port, self.connect_baud, self.connect_timeout)
        home = link.baud  # the board's console rate: it goes back to it afterwards, so the next
        try:              # `elk chat`, `elk status` or a terminal finds it where it listens
            self._run(link)
        finally:
            self.res.baud = link.baud
            if link.baud not in (home, 0):
                saved, link.retries = link.retries, 2  # a board that stopped answering: give up soon
                try:
                    link.set_baud(home)
                except ElkError:
                    pass  # the flash result stands
                finally:
                    link.retries = saved
            c = link.counters
            self.res.wire_bytes_out, self.res.wire_bytes_in, self.res.retransmits = c.wire_out, c.wire_in, c.retransmits
            link.close()

    def _switch_baud(self, link, info):
        want = self.baud if self.baud else info.max_baud
        if link.baud == 0 or not want or want == link.baud or not info.capabilities & P.CAPABILITIES["SET_BAUD"]:
            return
        # twice: one lost reply at the new rate looks like a cable that cannot carry it, and would leave
        # the whole flash at the slow rate (hours for a large image); a cable that really cannot fails twice
        for _attempt in range(2):
            if link.set_baud(min(want, info.max_baud)):
                return
        if self.progress:
            self.progress.note(self.res.port, f"link failed at {want} baud, staying at {link.baud}")

    def _run(self, link):
        info = link.info()
        size = len(self.data)
        if size > info.slot_size:
            raise ImageTooLargeError(f"{self.res.port}: image too large for the board's flash: {_size(size)} "
                                     f"> slot size {_size(info.slot_size)} ({info.board})")
        act = info.active
        if (act < 2 and info.running == act and info.slots[act].valid and info.slots[act].image_size == size
                and info.slots[act].sha256 == self.sha.hex()):
            # re-flashing would copy it into the other slot and drop the rollback image there
            _refuse_if_boot_would(link, self.data, self.res.port)
            self.res.slot, self.res.up_to_date, self.res.ok = "AB"[act], True, True
            self.tick(size)
            return
        r = link.request(CMD["FLASH_BEGIN"], struct.pack("<Q", size) + self.sha)
        slot, block, _slot_size = struct.unpack_from("<B3xIQ", r)
        self.res.slot, self.res.block_size = "AB"[slot], block
        # hashed before the switch: a board away from its console rate goes back to it after
        # BAUD_IDLE_MS of silence, and hashing a large image takes seconds on a slow host
        local = block_hashes(self.data, block)
        self._switch_baud(link, info)
        for attempt in range(2):
            self.done = 0
            target = link.block_hashes(slot, size, block, len(local))
            other_slot = info.slots[1 - slot]
            other = link.block_hashes(1 - slot, size, block, len(local)) if other_slot.image_size else []
            plan = _plan(local, target, other)
            self._apply(link, plan, block)
            try:
                end = link.request(CMD["FLASH_END"], extra_time=2.0 + size / 5e6)
                self.res.warning = end[1:].decode("utf-8", "replace")  # trust warning after the slot byte
                break
            except BoardReplyError as e:
                # a bare ELK_E_HASH: the slot differs from the image (a block went wrong): resend what
                # differs once more. With a reason the board refused the image itself (session closed).
                if e.status != spec.ERRORS["E_HASH"][0] or e.detail or attempt:
                    raise
        link.request(CMD["BOOT"], bytes([slot]), extra_time=5.0 + size / 50e6)
        # COMMIT re-checks the trust decision: the board hashes the slot once more (docs/trust.md)
        link.request(CMD["COMMIT"], bytes([slot]), extra_time=2.0 + size / 50e6)
        self.res.ok = True

    def _apply(self, link, plan, block):
        size = len(self.data)
        skipped = plan.count("skip")
        self.res.blocks_skipped += skipped
        self.tick(min(size, skipped * block))
        for first, count in _runs(plan, "copy"):
            for f in range(first, first + count, COPY_RUN_MAX):
                n = min(COPY_RUN_MAX, first + count - f)
                link.request(CMD["FLASH_COPY"], struct.pack("<II", f, n), extra_time=n * block / 20e6)
                self.res.blocks_copied += n
                self.tick(min(size, (f + n) * block) - f * block)
        chunk = max(1024, (link.payload_max - 8) // 1024 * 1024)
        for first, count in _runs(plan, "send"):
            start, end = first * block, min(size, (first + count) * block)
            for off in range(start, end, chunk):
                piece = self.data[off:min(end, off + chunk)]
                link.request(CMD["FLASH_DATA"], struct.pack("<Q", off) + piece, extra_time=len(piece) / 20e6)
                self.res.data_bytes_sent += len(piece)
                self.tick(len(piece))
            self.res.blocks_sent += count


class Progress:
    """One line per board: bytes, rate, time left. Redrawn in place on a terminal, else every second."""

    def __init__(self, ports, out=None):
        self.ports = list(ports)
        self.out = out or sys.stderr
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.lines = {p: f"{p}: connecting" for p in self.ports}
        self.lock = threading.Lock()
        self.last = 0.0
        self.drawn = False

    def update(self, port, done, total, elapsed):
        rate = done / elapsed if elapsed > 0 else 0
        left = (total - done) / rate if rate > 0 else 0
        width = 24
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "." * (width - filled)
        self.lines[port] = (f"{port}: [{bar}] {100 * done // max(total, 1):3d}% {_size(done)}/{_size(total)} "
                            f"{_size(rate)}/s {int(left) // 60:02d}:{int(left) % 60:02d} left")
        self._draw(done >= total)

    def finish(self, port, text):
        self.lines[port] = f"{port}: {text}"
        self._draw(True)

    def note(self, port, text):
        with self.lock:
            print(f"{port}: {text}", file=self.out, flush=True)

    def _draw(self, force=False):
        with self.lock:
            now = time.monotonic()
            if not self.tty:
                if force or now - self.last > 1.0:
                    self.last = now
                    print("\n".join(self.lines[p] for p in self.ports), file=self.out, flush=True)
                return
            if not force and now - self.last < 0.1:
                return
            self.last = now
            if self.drawn:
                self.out.write(f"\x1b[{len(self.ports)}F")
            self.out.write("".join(f"\x1b[2K{self.lines[p]}\n" for p in self.ports))
            self.out.flush()
            self.drawn = True


def _refuse_if_boot_would(link, data, port) -> None:
    """The board runs this very image, but if it is owned it checks the image again at every power-on
    (docs/trust.md): an image committed before provisioning, or signed by a former owner or below the
    floor, is not "already flashed". Same rules as the board's (elk.trust mirrors trust.c)."""
    from elk import provision, trust

    try:
        ti = provision.trust_info(link)
    except (BoardReplyError, provision.ProvisionError):
        return  # a board without the trust commands accepts what it runs
    if not ti.owned:
        return
    bad = [f.detail for f in trust.verify_bytes(data, ti.owner_key, ti.security_floor) if not f.ok]
    if bad:
        raise trust.TrustError(f"{port}: the board runs this image now but will not start it after the next "
                               f"power-on or RESET (owner key {ti.key_id.hex()}): {bad[0]}")


def check_image(data, name) -> None:
    """The host's own look at the file before any board sees it: header CRC-32 and payload SHA-256
    (docs/image-format.md), so a damaged or cut file is one clear line, not a refusal after the whole
    transfer. The board checks all of this again, and more (structure, signature)."""
    from elk import image as im

    head = bytes(data[:spec.IMAGE_HEADER_SIZE])
    h = im.unpack_header(head)
    hs, po, ps = h["header_size"], h["payload_offset"], h["payload_size"]
    if hs < spec.IMAGE_HEADER_SIZE or hs % 4 or hs > len(data):
        raise ElkError(f"{name}: damaged image: header size {hs} is invalid (`elk verify` says more)")
    head = bytes(data[:hs])
    if zlib.crc32(head[:hs - 4]) != struct.unpack_from("<I", head, hs - 4)[0]:
        raise ElkError(f"{name}: damaged image: header CRC-32 mismatch (`elk verify` says more)")
    if po < hs or po + ps > len(data):
        raise ElkError(f"{name}: truncated image: the payload ends at byte {po + ps}, the file has {len(data)}")
    if not h["flags"] & spec.IMAGE_FLAG_HAS_TRAILER and len(data) > po + ps:
        # as `elk verify` says: the board would store and run these bytes as part of the image
        raise ElkError(f"{name}: damaged image: {len(data) - po - ps} bytes follow the image (it ends at byte "
                       f"{po + ps}) but its header says no trailer follows (`elk verify` says more)")
    if hashlib.sha256(data[po:po + ps]).digest() != h["payload_sha256"]:
        raise ElkError(f"{name}: damaged image: payload SHA-256 does not match the header (`elk verify` says more)")


def flash(ports, image, *, connect_baud=115200, baud=None, progress=True, out=None, check=False,
          connect_timeout=None) -> list:
    """Flash `image` to every port (in parallel). Returns one FlashResult per port, in order.
    check: verify the file's header CRC and payload SHA-256 first (`elk flash` does; tests that probe
    the board's own checks send damaged images on purpose). connect_timeout: elk.link.connect's budget."""
    connect_timeout_s = connect_budget(connect_timeout)  # a bad value: one line before any board is tried
    for name, value in (("--baud", baud), ("--connect-baud", connect_baud)):
        if value is not None and value < 0:
            raise ElkError(f"{name} must be a line rate in baud (0 = unthrottled emulated line), got {value}")
    path = pathlib.Path(image)
    try:
        with open(path, "rb") as f:
            # mapped, not read: a 600 MB image is paged in as blocks go out, shared by every board
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
    except OSError as e:
        raise ElkError(f"{image}: {e.strerror}") from None
    if len(data) < spec.IMAGE_HEADER_SIZE or data[:4] != spec.IMAGE_MAGIC.to_bytes(4, "little"):
        raise ElkError(f"{image}: not an elk image (pack one with `elk pack`)")
    if check:
        check_image(data, image)
    sha = hashlib.sha256(data).digest()
    prog = Progress(ports, out) if progress else None
    stop = threading.Event()
    transfers = [_Transfer(p, data, sha, connect_baud, baud, prog, stop, connect_timeout_s) for p in ports]

    finished = [threading.Event() for _ in transfers]

    def work(t, done):
        try:
            t.run()
        except ElkError as e:
            t.res.error = str(e).removeprefix(f"{t.res.port}: ")
        except Exception as e:  # noqa: BLE001 (one board's surprise must not stop the others)
            t.res.error = f"{type(e).__name__}: {e}"
        finally:
            t.res.seconds = time.monotonic() - t.t0
            done.set()
        if prog and not t.res.ok and len(ports) > 1:  # one board: the caller reports its error once
            prog.finish(t.res.port, f"FAILED: {t.res.error}")

    for t, done in zip(transfers, finished):
        threading.Thread(target=work, args=(t, done), daemon=True).start()
    # Events, not Thread.join: a join interrupted by Ctrl-C marks a running thread as finished (3.11)
    try:
        for done in finished:
            while not done.wait(0.5):
                pass
    except KeyboardInterrupt:
        # Ctrl-C: each board stops after its current frame and goes back to its console rate
        stop.set()
        for done in finished:
            done.wait(15)
        raise
    return [t.res for t in transfers]


__all__ = ["flash", "FlashResult", "ImageTooLargeError", "block_hashes", "LinkError"]
