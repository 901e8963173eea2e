"""What the board says back, as Python values: the LinkError family (a failed port, a missing or
refused reply, a prompt too long for the link) and the parsed INFO and STATS payloads (docs/protocol.md).
elk.link raises and returns these and re-exports every name, so `from elk.link import BoardInfo` works.
Not here: frames, sequence numbers or any I/O (elk.link).
"""

from __future__ import annotations

import dataclasses
import struct

from elk import proto_spec as P
from elk.errors import ElkError, code_name

STOP_NAMES = {v: k.lower() for k, v in P.STOP_REASONS.items()}


class LinkError(ElkError):
    """The serial link failed: the port, the board's answers, or the protocol."""


class NoAnswerError(LinkError):
    pass


class ReplyCutError(LinkError):
    """The board ended a reply this host did not ask it to stop (its events went unacknowledged)."""


class ProtocolVersionError(LinkError):
    pass


class PromptTooLongError(LinkError):
    """A prompt that does not fit one GENERATE frame; raised before anything is sent, so the session
    is intact and the caller may go on (the chat console does)."""

    def __init__(self, message: str, size: int, limit: int):
        super().__init__(message)
        self.size, self.limit = size, limit


class BoardReplyError(LinkError):
    """The board answered a command with an error status."""

    def __init__(self, command: str, status: int, detail: str = ""):
        self.command = command
        self.status = status
        self.detail = detail  # the board's reason text ("" when it gave none)
        name, message = code_name(status)
        super().__init__(f"board refused {command}: {message} ({name}){': ' + detail if detail else ''}")


# ---------------------------------------------------------------------------------------------
# Replies


@dataclasses.dataclass
class SlotInfo:
    index: int
    valid: bool
    active: bool
    running: bool
    image_size: int
    sha256: str
    name: str

    @property
    def letter(self) -> str:
        return "AB"[self.index]


@dataclasses.dataclass
class BoardInfo:
    protocol: int
    capabilities: int
    max_payload: int
    baud: int
    max_baud: int
    ram_bytes: int
    flash_bytes: int
    block_size: int
    slot_size: int
    active: int
    running: int
    previous: int
    board: str
    firmware: str
    slots: list
    n_ctx: int
    ctx_used: int
    kernels: str
    chat_template: str
    boot_error: str
    npu: str = ""       # NPU backend the prompt prefill runs on ("" = the CPU; older firmware: always "")
    npu_note: str = ""  # why a board with an NPU prefills on the CPU (section refused, none in the image)
    prompt_max: int = 0  # longest prompt PROMPT frames can stage (0: older firmware, one GENERATE frame)

    def caps(self) -> list:
        out = [name.lower() for name, bit in P.CAPABILITIES.items() if self.capabilities & bit]
        return [f"npu:{self.npu}" if c == "npu" and self.npu else c for c in out]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["capabilities"] = self.caps()
        for key in ("active", "running", "previous"):
            d[key] = "AB"[d[key]] if d[key] < 2 else None
        return d


def _cstr(b: bytes) -> str:
    return b.split(b"\x00", 1)[0].decode("utf-8", "replace")


def parse_info(p: bytes) -> BoardInfo:
    head = struct.Struct("<HIIIIQQIQBBBB32s32s")
    if len(p) < head.size + 2 * 112 + 8 + 32 + 16:
        raise LinkError(f"INFO reply too short ({len(p)} bytes)")
    (proto, caps, max_payload, baud, max_baud, ram, flash, block, slot_size, active, running, prev, _n,
     board, fw) = head.unpack_from(p, 0)
    off = head.size
    slots = []
    for i in range(2):
        flags, _, size, sha, name = struct.unpack_from("<IIQ32s64s", p, off)
        off += 112
        slots.append(SlotInfo(i, bool(flags & P.SLOT_FLAGS["VALID"]), bool(flags & P.SLOT_FLAGS["ACTIVE"]),
                              bool(flags & P.SLOT_FLAGS["RUNNING"]), size, sha.hex(), _cstr(name)))
    n_ctx, used = struct.unpack_from("<II", p, off)
    kernels, template = struct.unpack_from("<32s16s", p, off + 8)
    boot_error = _cstr(p[off + 56:off + 120]) if len(p) >= off + 120 else ""
    npu, npu_note, prompt_max = "", "", 0
    if len(p) >= off + 120 + 16 + 96:  # appended fields (firmware with NPU prefill, after HELLO)
        npu, npu_note = _cstr(p[off + 120:off + 136]), _cstr(p[off + 136:off + 232])
    if len(p) >= off + 232 + 4 and caps & P.CAPABILITIES["LONG_PROMPT"]:  # appended: PROMPT's limit
        prompt_max = struct.unpack_from("<I", p, off + 232)[0]
    return BoardInfo(proto, caps, max_payload, baud, max_baud, ram, flash, block, slot_size, active, running,
                     prev, _cstr(board), _cstr(fw), slots, n_ctx, used, _cstr(kernels), _cstr(template),
                     boot_error, npu, npu_note, prompt_max)


@dataclasses.dataclass
class GenStats:
    stop: str
    prompt_tokens: int
    gen_tokens: int
    ttft_s: float
    total_s: float
    ctx_used: int
    n_ctx: int
    status: int
    npu_s: float = 0.0  # simulated NPU time of this turn's prefill (0: the CPU prefilled)
    npu_chunks: int = 0

    @property
    def tokens_per_s(self) -> float:
        gen_time = self.total_s - self.ttft_s
        return (self.gen_tokens - 1) / gen_time if self.gen_tokens > 1 and gen_time > 0 else 0.0


def parse_stats(p: bytes) -> GenStats:
    if len(p) < 32:  # a board of another version, or a broken one (fuzz/fuzz_host.py found the traceback)
        raise LinkError(f"STATS event too short ({len(p)} bytes, need 32)")
    stop, prompt, gen, ttft, total, used, n_ctx, status = struct.unpack_from("<B3xIIIIIIi", p)
    npu_us, npu_chunks = struct.unpack_from("<II", p, 32) if len(p) >= 40 else (0, 0)  # appended fields
    return GenStats(STOP_NAMES.get(stop, str(stop)), prompt, gen, ttft / 1e6, total / 1e6, used, n_ctx, status,
                    npu_us / 1e6, npu_chunks)
