"""Serial protocol v1 client (docs/protocol.md) over pyserial: sequence numbers over the frames of
elk.frame (COBS/CRC-32), retransmission on timeout or NAK, HELLO negotiation, event acknowledgement, and typed commands
(INFO, flash, boot/commit/rollback, SET_BAUD, GENERATE/ABORT, PROMPT staging for long prompts), and the
connect budget (a silent port is reported in seconds).

Works on any pyserial port or URL (a /dev/pts/N of `elk emulate`, /dev/ttyUSB0, loop://).
Not here: the flashing policy (elk.flash), the chat console (elk.chat), or the error classes and the
parsed INFO/STATS replies (elk.link_replies; every name is re-exported here).
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import errno
import os
import random
import struct
import time

from elk import proto_spec as P
from elk.errors import ElkError
from elk.frame import HOST_PAYLOAD_MAX, BadFrame, FrameDecoder, encode_frame
from elk.link_replies import (BoardInfo, BoardReplyError, GenStats, LinkError, NoAnswerError,  # noqa: F401
                              PromptTooLongError, ProtocolVersionError, ReplyCutError, SlotInfo, parse_info,
                              parse_stats)

KIND = P.FRAME_KINDS
CMD = P.COMMANDS
EVT = P.EVENTS
CMD_NAMES = {v: k for k, v in CMD.items()}
READ_SLICE = 0.01  # seconds one serial read may block
# connect(): how long the first HELLO may go unanswered before "no answer" (a board that is off, a wrong
# port or rate). A board busy checking its image answers HELLO at once (capability CHECKING) and is then
# waited for; only a board that says nothing at all for this long is given up on. ELK_CONNECT_TIMEOUT or
# --connect-timeout override it.
CONNECT_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_MAX_S = 1e6  # --connect-timeout / ELK_CONNECT_TIMEOUT must be below this
HELLO_FIRST_RTO_S = 0.25   # first HELLO try; later tries wait 1.5x longer, at most HELLO_MAX_RTO_S
HELLO_MAX_RTO_S = 1.0
# generate(): the longest the board may stay silent during a reply. A board with capability PROGRESS
# reports its prefill (docs/protocol.md "Prefill progress"), so this bounds the silence between two reports
# (one prefill batch), not the whole prefill; older firmware is silent for all of it.
REPLY_SILENCE_S = 120.0
REPLY_TIMEOUT_MAX_S = CONNECT_TIMEOUT_MAX_S  # `elk chat --reply-timeout` must be below this (a bound, not "never")


# ---------------------------------------------------------------------------------------------
# The link


@dataclasses.dataclass
class Counters:
    wire_out: int = 0       # bytes written to the line
    wire_in: int = 0        # bytes read from the line
    payload_out: int = 0    # payload bytes of requests (first transmissions only)
    frames_out: int = 0
    retransmits: int = 0
    naks_in: int = 0
    bad_in: int = 0         # damaged frames received


def open_serial(port: str, baud: int):
    import serial

    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=READ_SLICE, write_timeout=10, exclusive=True)
    except serial.SerialException as e:
        err = getattr(e, "errno", None)
        text = str(e)
        if err == errno.ENOENT or "No such file" in text or "could not open port" in text and "No such" in text:
            raise LinkError(f"{port}: port not found (is `elk emulate` running? `elk ports` lists ports)") from None
        if err == errno.EACCES or "Permission denied" in text:
            raise LinkError(f"{port}: permission denied (add yourself to the 'dialout' group)") from None
        if "busy" in text.lower() or "lock" in text.lower():
            raise LinkError(f"{port}: port is in use by another program") from None
        if err in (errno.ENOTTY, errno.EISDIR) or "Inappropriate ioctl" in text or "Is a directory" in text:
            raise LinkError(f"{port}: not a serial port (`elk ports` lists ports)") from None
        raise LinkError(f"{port}: cannot open: {text}") from None
    except (OSError, ValueError) as e:
        raise LinkError(f"{port}: cannot open: {e}") from None


class Link:
    """One connection to a board. `with Link(port) as link: link.info()`."""

    def __init__(self, port: str, baud: int = 115200, *, retries: int = P.RETRY_COUNT, ser=None):
        self.port = port
        self.baud = baud           # the board's line rate (0 = unthrottled emulated line)
        self.retries = retries
        self.ser = ser if ser is not None else open_serial(port, baud or 115200)
        self.dec = FrameDecoder()
        self.seq = random.randrange(0x10000)
        self.payload_max = P.PAYLOAD_MAX_DEFAULT
        self.counters = Counters()
        self.events = collections.deque()
        self.last_event_seq = None
        self.hello_reply = None
        self._pending = None       # (seq, wire) of the request awaiting its RESP
        self._resp = None
        self._events_before_resp = 0
        self._turn_open = False    # a GENERATE of this session was accepted and its STATS not yet seen
        self._abort_sent = False   # this host sent ABORT since the last GENERATE
        self.tries = 0             # transmissions of the last request
        self._info = None          # INFO cached for generate()'s prompt limit
        try:
            self.ser.reset_input_buffer()
        except Exception:  # noqa: BLE001 (URL handlers without buffers)
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.ser.close()
        except Exception:  # noqa: BLE001
            pass

    # -- wire -----------------------------------------------------------------------------------

    def _write(self, wire: bytes) -> None:
        try:
            self.ser.write(wire)
        except Exception as e:  # noqa: BLE001 (SerialTimeoutException, OSError)
            text = str(e)
            # pyserial words an EIO as SerialException("write failed: [Errno 5] ..."), without errno
            if isinstance(e, OSError) and e.errno == errno.EIO or f"[Errno {errno.EIO}]" in text:
                raise LinkError(self._lost()) from None
            raise LinkError(f"{self.port}: write failed: {text.removeprefix('write failed: ')}") from None
        self.counters.wire_out += len(wire)

    def _lost(self) -> str:
        return (f"{self.port}: connection lost: the port closed (the emulated board stopped, or the cable was "
                "unplugged)")

    def wire_time(self, nbytes: int) -> float:
        return nbytes * 10 / self.baud if self.baud else 0.0

    def pump(self, timeout: float) -> None:
        """Read what arrives within about `timeout` seconds and handle every complete frame."""
        end = time.monotonic() + timeout
        data = b""
        try:
            while True:
                # the port's own timeout (READ_SLICE) bounds each read; changing it would re-apply termios
                data = self.ser.read(max(1, self.ser.in_waiting))
                if data or time.monotonic() >= end:
                    break
        except Exception as e:  # noqa: BLE001 (port vanished: the emulator stopped)
            if "returned no data" in str(e) or isinstance(e, OSError) and e.errno == errno.EIO:
                raise LinkError(self._lost()) from None
            raise LinkError(f"{self.port}: read failed: {e}") from None
        self.counters.wire_in += len(data)
        for f in self.dec.feed(data):
            self._handle(f)

    def _handle(self, f) -> None:
        if isinstance(f, BadFrame):
            self.counters.bad_in += 1
            self._write(encode_frame(KIND["NAK"], 0, 0xFFFF, bytes([f.reason])))
            return
        if f.kind == KIND["RESP"]:
            if self._pending and f.seq == self._pending[0] and self._resp is None:
                self._resp = f
                self._events_before_resp = len(self.events)  # those belong to an earlier command
        elif f.kind == KIND["EVENT"]:
            self._write(encode_frame(KIND["EACK"], f.code, f.seq))
            if f.seq != self.last_event_seq:
                self.last_event_seq = f.seq
                self.events.append(f)
        elif f.kind == KIND["NAK"]:
            self.counters.naks_in += 1
            if self._pending:
                self.counters.retransmits += 1
                self._write(self._pending[1])

    def request(self, code: int, payload: bytes = b"", *, extra_time: float = 0.0, check: bool = True,
                budget: float | None = None) -> bytes:
        """Send one command and return the reply payload after the status. Retransmits on timeout:
        self.retries times with a growing timeout, or (budget) quick tries until `budget` seconds pass."""
        if len(payload) > self.payload_max:
            raise LinkError(f"{self.port}: {CMD_NAMES.get(code, hex(code))} needs {len(payload)} bytes in one "
                            f"frame; the board takes at most {self.payload_max}")
        if code == CMD["ABORT"]:
            self._abort_sent = True
        self.seq = (self.seq + 1) & 0xFFFF
        wire = encode_frame(KIND["REQ"], code, self.seq, payload)
        self._pending, self._resp = (self.seq, wire), None
        self.counters.frames_out += 1
        self.counters.payload_out += len(payload)
        # the reply may be as large as our limit: allow for its wire time too
        wire_s = 2 * self.wire_time(len(wire) + 64) + extra_time
        rto = (HELLO_FIRST_RTO_S if budget is not None else P.RETRY_BASE_MS / 1000) + wire_s
        start = time.monotonic()
        try:
            attempt = 0
            while True:
                if attempt:
                    self.counters.retransmits += 1
                self._write(wire)
                deadline = time.monotonic() + rto
                if budget is not None:
                    deadline = min(deadline, start + budget)
                while self._resp is None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.pump(min(left, 0.05))
                attempt += 1
                if self._resp is not None:
                    break
                if budget is not None:
                    if time.monotonic() - start >= budget:
                        break
                    rto = min(rto * 1.5, HELLO_MAX_RTO_S + wire_s)
                    continue
                if attempt > self.retries:
                    break
                rto = min(rto * 1.5, rto + 2.0)
            self.tries = attempt
            if self._resp is None:
                name = CMD_NAMES.get(code, hex(code))
                raise NoAnswerError(f"{self.port}: no answer from the board to {name} "
                                    f"(is `elk emulate` running? right --baud?)")
        finally:
            resp, self._pending = self._resp, None
        if len(resp.payload) < 2:
            raise LinkError(f"{self.port}: reply to {CMD_NAMES.get(code)} too short")
        status = struct.unpack_from("<h", resp.payload)[0]
        if status and check:
            # the board may say why after the status (trust refusals: docs/trust.md)
            reason = resp.payload[2:].split(b"\0", 1)[0].decode("utf-8", "replace").strip()
            raise BoardReplyError(CMD_NAMES.get(code, hex(code)), status, reason)
        return resp.payload[2:] if check else resp.payload

    # -- session --------------------------------------------------------------------------------

    def hello(self, retries: int | None = None, budget: float | None = None) -> dict:
        saved = self.retries
        if retries is not None:
            self.retries = retries
        try:
            raw = self.request(CMD["HELLO"], struct.pack("<HHI", P.PROTO_VERSION, 0, HOST_PAYLOAD_MAX),
                               check=False, budget=budget)
        finally:
            self.retries = saved
        status = struct.unpack_from("<h", raw)[0]
        if len(raw) < 20:
            raise LinkError(f"{self.port}: HELLO reply too short")
        version, board_max, caps, baud, max_baud = struct.unpack_from("<HIIII", raw, 2)
        if version != P.PROTO_VERSION:
            raise ProtocolVersionError(f"{self.port}: protocol version mismatch: the board speaks v{version}, "
                                       f"this elk speaks v{P.PROTO_VERSION} (update the firmware or elk)")
        if status:
            raise BoardReplyError("HELLO", status)
        self.payload_max = min(board_max, HOST_PAYLOAD_MAX)
        self.baud = baud
        self._turn_open = False  # HELLO ends a generation the board was running (no STATS follows)
        self.hello_reply = {"version": version, "max_payload": board_max, "capabilities": caps,
                            "baud": baud, "max_baud": max_baud}
        return self.hello_reply

    def info(self) -> BoardInfo:
        return parse_info(self.request(CMD["INFO"]))

    def wait_checked(self, timeout: float = 900.0, note=None) -> None:
        """A board just powered on first checks its active image's SHA-256 (seconds for a large image,
        more under qemu) and meanwhile serves only HELLO and INFO: wait until it is done."""
        caps = self.hello_reply["capabilities"] if self.hello_reply else 0
        end, told = time.monotonic() + timeout, False
        while caps & P.CAPABILITIES["CHECKING"]:
            if time.monotonic() > end:
                raise NoAnswerError(f"{self.port}: the board is still checking its image after {timeout:.0f} s")
            info = self.info()
            caps = info.capabilities
            if caps & P.CAPABILITIES["CHECKING"]:
                if not told:
                    told = True
                    import sys
                    print(f"{self.port}: waiting: the board checks its image before starting it "
                          f"({info.boot_error})", file=note or sys.stderr, flush=True)
                time.sleep(0.3)

    def set_baud(self, baud: int) -> bool:
        """Switch both ends to `baud`; on no answer at the new rate, return to the old one (False)."""
        old = self.baud
        self.request(CMD["SET_BAUD"], struct.pack("<I", baud))
        if old == 0:
            return True  # an unthrottled emulated line only records the rate
        try:
            self.ser.baudrate = baud
        except Exception:  # noqa: BLE001
            pass
        self.baud = baud
        try:
            self.hello(retries=2)
            return True
        except NoAnswerError:
            pass
        self.baud = old
        try:
            self.ser.baudrate = old
        except Exception:  # noqa: BLE001
            pass
        # the board returns to the old rate once BAUD_CONFIRM_MS pass without a frame
        time.sleep(P.BAUD_CONFIRM_MS / 1000)
        self.dec = FrameDecoder()
        self.hello()
        return False

    # -- commands -------------------------------------------------------------------------------

    def block_hashes(self, slot: int, limit: int, block: int, count_total: int) -> list:
        hashes = []
        per_block_s = block / 20e6  # board hashing rate; qemu is slower than native
        while len(hashes) < count_total:
            want = count_total - len(hashes)
            r = self.request(CMD["BLOCK_HASHES"], struct.pack("<B3xIIQ", slot, len(hashes), want, limit),
                             extra_time=2.0 + per_block_s * min(want, 1024) * 10)
            _bs, got = struct.unpack_from("<II", r)
            if got == 0:
                break
            hashes += [r[8 + i * 8:16 + i * 8] for i in range(got)]
        return hashes

    def generate(self, prompt: str, *, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 top_k: int = 0, repeat_penalty: float = 1.0, repeat_last_n: int = 64, seed: int = 0,
                 raw: bool = False, reset: bool = False, idle_timeout: float = REPLY_SILENCE_S, on_progress=None):
        """Yield text pieces as the board produces them; self.last_stats holds the STATS afterwards.
        `idle_timeout`: seconds the board may send nothing (a PROGRESS during the prefill counts) before
        NoAnswerError. `on_progress(done, total)`: called for each prefill report (capability PROGRESS)."""
        _check_sampling(max_tokens, temperature, top_p, top_k, repeat_penalty, repeat_last_n, seed)
        flags = (P.GEN_FLAGS["RAW"] if raw else 0) | (P.GEN_FLAGS["RESET_CONTEXT"] if reset else 0)
        caps = self.hello_reply["capabilities"] if self.hello_reply else 0
        progress = bool(caps & P.CAPABILITIES["PROGRESS"])  # older firmware: silent prefill, as before
        if progress:
            flags |= P.GEN_FLAGS["PROGRESS"]
        self.last_progress = None  # (tokens prefilled, the turn's prompt tokens) of the last report
        head = struct.pack("<IIffIfIQ", flags, max_tokens, temperature, top_p, top_k, repeat_penalty,
                           repeat_last_n, seed)
        self.last_stats = None
        # Events that arrive before GENERATE's RESP are this turn's when that RESP was lost and came again
        # from the board's reply cache (the reply then streams first): keep them. Only an earlier turn of
        # this session left unfinished can send a late STATS; end it first so the two cannot mix.
        stale = self._turn_open and self.drain_generation(abort=True) is None
        self.events.clear()
        # surrogateescape: bytes a terminal sent that are not UTF-8 (argv, stdin) pass through as they came
        # and the board's tokenizer byte-falls-back on them, instead of a UnicodeEncodeError here
        text = prompt.encode("utf-8", "surrogateescape")
        own = self._stage_prompt(text, self.payload_max - len(head))
        if own != len(text):
            head = struct.pack("<I", flags | P.GEN_FLAGS["STAGED"]) + head[4:]
        self._abort_sent = False
        self.request(CMD["GENERATE"], head + text[len(text) - own:])
        self._turn_open = True
        if stale:  # the earlier turn did not end in time: drop its events up to its STATS
            early = [self.events.popleft() for _ in range(self._events_before_resp)]
            ends = [i for i, ev in enumerate(early) if ev.code == EVT["STATS"]]
            self.events.extendleft(reversed(early[ends[0] + 1:] if ends else []))
        utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        last = time.monotonic()
        pieces = 0
        while True:
            while self.events:
                ev = self.events.popleft()
                last = time.monotonic()
                if ev.code == EVT["PROGRESS"] and len(ev.payload) >= 8:
                    self.last_progress = struct.unpack_from("<II", ev.payload)
                    if on_progress:
                        on_progress(*self.last_progress)
                elif ev.code == EVT["PIECE"]:
                    pieces += 1
                    text = utf8.decode(ev.payload)
                    if text:
                        yield text
                elif ev.code == EVT["STATS"]:
                    tail = utf8.decode(b"", final=True)
                    if tail:
                        yield tail
                    self.last_stats = parse_stats(ev.payload)
                    self._turn_open = False
                    if self.last_stats.stop == "aborted" and not self._abort_sent:
                        raise ReplyCutError(self._cut_message(max_tokens))
                    return
            if time.monotonic() - last > idle_timeout:
                raise NoAnswerError(self._silent_message(idle_timeout, progress, pieces))
            self.pump(0.05)

    def _cut_message(self, max_tokens: int) -> str:
        """One line for a reply the board stopped on its own (ABORT was not sent): it gives up on a reply
        whose events go unacknowledged, so the text that came is not the whole reply."""
        st = self.last_stats
        return (f"{self.port}: the board stopped the reply after {st.gen_tokens} of up to {max_tokens} tokens: "
                "its text events went unacknowledged (this host was stalled or the line failed), so the text "
                "above is cut; ask again")

    def _silent_message(self, seconds: float, progress: bool, pieces: int) -> str:
        """One line for a board that went silent in the middle of a reply."""
        took = f"nothing came from the board for {seconds:g} s"
        if pieces:
            return f"{self.port}: the board stopped sending text ({took})"
        if self.last_progress:
            done, total = self.last_progress
            return f"{self.port}: the board stopped answering during the prompt's prefill ({done}/{total} tokens; {took})"
        if progress:
            return f"{self.port}: the board stopped answering before its first prefill report or token ({took})"
        return (f"{self.port}: no reply from the board ({took} after GENERATE; this firmware does not report "
                "prefill progress, so a long prompt on a slow board can take longer: update the firmware)")

    def _stage_prompt(self, text: bytes, room: int) -> int:
        """A prompt longer than one GENERATE frame goes ahead in PROMPT frames (docs/protocol.md "Long
        prompts"); return how many of its last bytes GENERATE itself carries."""
        if len(text) <= room:
            return len(text)
        caps = self.hello_reply["capabilities"] if self.hello_reply else 0
        if not caps & P.CAPABILITIES["LONG_PROMPT"]:  # older firmware: one frame is all there is
            raise PromptTooLongError(f"{self.port}: the prompt is {len(text)} bytes; this board's firmware takes "
                                     f"one frame of at most {self.payload_max} bytes, so at most {room} bytes of "
                                     "prompt (update the firmware for longer prompts)", len(text), room)
        if self._info is None:
            self._info = self.info()
        limit = self._info.prompt_max
        if len(text) > limit:
            raise PromptTooLongError(f"{self.port}: the prompt is {len(text)} bytes; the board takes at most "
                                     f"{limit} bytes of prompt", len(text), limit)
        staged_end, chunk = len(text) - room, self.payload_max - 4
        for off in range(0, staged_end, chunk):
            part = text[off:min(off + chunk, staged_end)]
            r = self.request(CMD["PROMPT"], struct.pack("<I", off) + part)
            if len(r) < 4 or struct.unpack_from("<I", r)[0] != off + len(part):
                raise LinkError(f"{self.port}: the board staged a different amount of the prompt than was sent")
        return room

    def abort(self) -> None:
        self.request(CMD["ABORT"])

    def drain_generation(self, timeout: float = 10.0, abort: bool = False) -> GenStats | None:
        """After abort() (or with abort=True, which sends it): consume pieces until STATS."""
        if abort:
            self.request(CMD["ABORT"], check=False)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            while self.events:
                ev = self.events.popleft()
                if ev.code == EVT["STATS"]:
                    self.last_stats = parse_stats(ev.payload)
                    self._turn_open = False
                    return self.last_stats
            self.pump(0.05)
        return None


def _check_sampling(max_tokens, temperature, top_p, top_k, repeat_penalty, repeat_last_n, seed) -> None:
    """The ranges GENERATE carries and the board's sampler accepts; one line naming the value if not."""
    import math

    def bad(what, value):
        raise ElkError(f"sampling: {what}, got {value}")

    if not 0 <= max_tokens <= 0xFFFFFFFF:
        bad("the token limit (-n) must be 0 to 4294967295", max_tokens)
    if not (math.isfinite(temperature) and temperature >= 0):
        bad("temperature must be 0 (greedy) or more", temperature)
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        bad("top-p must be above 0 and at most 1 (1 = off)", top_p)
    if not 0 <= top_k < 2**31:
        bad("top-k must be 0 (off) or more", top_k)
    if not (math.isfinite(repeat_penalty) and repeat_penalty > 0):
        bad("the repeat penalty must be above 0 (1 = off)", repeat_penalty)
    if not 0 <= repeat_last_n < 2**31:
        bad("the repeat window must be 0 or more tokens", repeat_last_n)
    if not 0 <= seed < 2**64:
        bad("the seed must be 0 to 2^64-1", seed)


def connect_timeout(timeout: float | None = None) -> float:
    """connect()'s budget: `timeout`, else ELK_CONNECT_TIMEOUT, else CONNECT_TIMEOUT_S seconds."""
    where = "--connect-timeout"
    if timeout is None:
        env = os.environ.get("ELK_CONNECT_TIMEOUT", "").strip()
        if not env:
            return CONNECT_TIMEOUT_S
        where = "ELK_CONNECT_TIMEOUT"
        try:
            timeout = float(env)
        except ValueError:
            raise LinkError(f"{where} must be a number of seconds, got {env!r}") from None
    if timeout != timeout:
        raise LinkError(f"{where} must be a number of seconds, got nan")
    if timeout <= 0:
        raise LinkError(f"{where} must be above 0 seconds, got {timeout:g}")
    if timeout >= CONNECT_TIMEOUT_MAX_S:  # a budget, not "wait forever": a silent port still ends
        raise LinkError(f"{where} must be below {CONNECT_TIMEOUT_MAX_S:.0f} seconds (11.6 days), got {timeout:g}")
    return float(timeout)


def _no_answer(link: Link, baud: int, seconds: float) -> str:
    rate = f"{baud} baud" if baud else "the emulated line"
    heard = (f"; {link.counters.wire_in} bytes came back but no valid reply (a wrong --baud garbles them)"
             if link.counters.wire_in else "; nothing came back")
    return (f"{link.port}: no answer from a board: {link.tries} HELLO tries at {rate} in {seconds:.1f} s{heard}. "
            "Is the board powered and running elk-fw, is this its port (`elk ports` lists ports and emulated "
            "boards), is the rate right (--baud)? A board that needs longer: --connect-timeout SECONDS")


def connect(port: str, baud: int = 115200, timeout: float | None = None) -> Link:
    """Open the port and say HELLO; raise a one-line LinkError if nothing answers within the connect
    budget (connect_timeout). A board that answers but is still checking its image is waited for."""
    budget = connect_timeout(timeout)
    if "://" not in port and not os.path.exists(port):
        raise LinkError(f"{port}: port not found (is `elk emulate` running? `elk ports` lists ports)")
    link = Link(port, baud)
    try:
        start = time.monotonic()
        try:
            link.hello(budget=budget)
        except NoAnswerError:
            raise NoAnswerError(_no_answer(link, baud, time.monotonic() - start)) from None
        link.wait_checked()
    except BaseException:
        link.close()
        raise
    return link
