"""Protocol v1 framing (docs/protocol.md) in Python: COBS, the frame encoder and the byte-stream
decoder that tells frames from console text. Pure bytes, no port: the link (elk.link) and the tests
drive it. Not here: sequence numbers, retransmission or commands (elk.link)."""

from __future__ import annotations

import dataclasses
import struct
import zlib

from elk import proto_spec as P

HOST_PAYLOAD_MAX = 16384  # what this client accepts from a board


def cobs_encode(data: bytes) -> bytes:
    """COBS: no 0x00 in the output; each run of up to 254 non-zero bytes gets a code byte (run + 1).
    A full 254-byte run (code 0xFF) implies no zero after it; byte-identical to elk_proto_encode."""
    out = bytearray()
    for part in data.split(b"\x00"):
        while len(part) >= 254:
            out.append(0xFF)
            out += part[:254]
            part = part[254:]
        out.append(len(part) + 1)
        out += part
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        i += 1
        if code == 0 or i + code - 1 > n:
            raise ValueError("bad COBS code")
        out += data[i:i + code - 1]
        i += code - 1
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(kind: int, code: int, seq: int, payload: bytes = b"") -> bytes:
    body = struct.pack("<BBH", kind, code, seq & 0xFFFF) + payload
    body += struct.pack("<I", zlib.crc32(body))
    return b"\x00" + cobs_encode(body) + b"\x00"


@dataclasses.dataclass
class Frame:
    kind: int
    code: int
    seq: int
    payload: bytes


class BadFrame:
    def __init__(self, reason: int):
        self.reason = reason


class FrameDecoder:
    """Byte stream -> Frame / BadFrame objects; bytes outside frames (console text) go to .text."""

    def __init__(self, limit: int = HOST_PAYLOAD_MAX):
        self.limit = limit
        self.buf = bytearray()
        self.in_frame = False
        self.text = bytearray()

    def feed(self, data: bytes) -> list:
        out, pos, n = [], 0, len(data)
        while pos < n:
            z = data.find(0, pos)
            if not self.in_frame:
                self.text += data[pos:] if z < 0 else data[pos:z]
                if z < 0:
                    break
                self.in_frame, self.buf, pos = True, bytearray(), z + 1
                continue
            if z < 0:
                self.buf += data[pos:]
                break
            self.buf += data[pos:z]
            pos = z + 1
            if not self.buf:
                continue  # closing delimiter of one frame followed by the opening of the next
            self.in_frame = False
            out.append(self._finish(bytes(self.buf)))
        if len(self.text) > 65536:
            del self.text[:-4096]
        return out

    def _finish(self, wire: bytes):
        if len(wire) > self.limit + 64:
            return BadFrame(P.NAK_REASONS["TOO_LONG"])
        try:
            raw = cobs_decode(wire)
        except ValueError:
            return BadFrame(P.NAK_REASONS["MALFORMED"])
        if len(raw) < P.FRAME_HEADER_SIZE + P.FRAME_CRC_SIZE:
            return BadFrame(P.NAK_REASONS["MALFORMED"])
        body, crc = raw[:-4], struct.unpack("<I", raw[-4:])[0]
        if zlib.crc32(body) != crc:
            return BadFrame(P.NAK_REASONS["CRC"])
        kind, code, seq = struct.unpack("<BBH", body[:4])
        return Frame(kind, code, seq, body[4:])
