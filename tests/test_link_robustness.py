"""The board survives a hostile line: garbage, oversized and corrupted frames get NAKs, commands out of
order get error replies, and afterwards the same session still works. Real pty, real elk-fw, raw pyserial."""

import os
import struct
import time

import pytest
import serial

from conftest import scons

from elk import proto_spec as P
from elk.emulate import Emulator
from elk.frame import BadFrame, FrameDecoder, cobs_decode, cobs_encode, encode_frame
from elk.link import CMD, KIND, Link, LinkError, NoAnswerError, ProtocolVersionError, connect

E = {name: code for name, (code, _) in __import__("elk.spec", fromlist=["ERRORS"]).ERRORS.items()}


@pytest.fixture(scope="module")
def board(host_build, tmp_path_factory):
    """The firmware built with AddressSanitizer + UBSan: a bad read or write while parsing hostile input
    kills it (and the alive() checks below fail with its report)."""
    scons("mode=asan", "build/host-asan/elk-fw")
    log_path = tmp_path_factory.mktemp("log") / "elk-fw.log"
    with open(log_path, "w") as log, Emulator("host", baud=0, mode="asan", log=log) as emu:
        emu.log_path = log_path
        yield emu


class Raw:
    """A bare pyserial port plus a frame decoder: sends exactly the bytes a test wants."""

    def __init__(self, port):
        self.ser = serial.Serial(port, 115200, timeout=0.05)
        self.ser.reset_input_buffer()
        self.dec = FrameDecoder()
        # a new session starts with HELLO (never answered from the replay cache), as elk.link does
        self.seq = 100
        self.req(CMD["HELLO"], struct.pack("<HHI", P.PROTO_VERSION, 0, 16384), seq=int.from_bytes(os.urandom(2), "little"))

    def send(self, data: bytes):
        self.ser.write(data)

    def frames(self, want=1, timeout=30.0):  # a ceiling, not a speed check: every caller expects a frame (ASan board, loaded CI)
        got, end = [], time.monotonic() + timeout
        while len(got) < want and time.monotonic() < end:
            got += self.dec.feed(self.ser.read(max(1, self.ser.in_waiting)))
        return got

    def req(self, code, payload=b"", seq=None):
        self.seq = (self.seq + 1) & 0xFFFF if seq is None else seq
        self.send(encode_frame(KIND["REQ"], code, self.seq, payload))
        frames = [f for f in self.frames() if not isinstance(f, BadFrame)]
        assert frames, f"no reply to command {code:#x}"
        f = frames[0]
        assert f.kind == KIND["RESP"] and f.seq == self.seq and f.code == code
        return struct.unpack_from("<h", f.payload)[0], f.payload[2:]

    def close(self):
        self.ser.close()


@pytest.fixture
def raw(board):
    r = Raw(board.port)
    yield r
    r.close()
    assert board.alive(), "elk-fw died: " + board.log_path.read_text()[-3000:]


def test_cobs_roundtrip_and_known_vectors():
    # vectors from the COBS paper's examples (Cheshire & Baker): zeros and a 254-byte run
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x00\x00") == b"\x01\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    run = bytes(range(1, 255))
    assert cobs_encode(run) == b"\xff" + run + b"\x01"
    for data in (b"", b"\x00" * 600, bytes(range(256)) * 3, b"\x01" * 1000):
        enc = cobs_encode(data)
        assert 0 not in enc and cobs_decode(enc) == data


def test_board_frames_are_byte_identical_to_the_python_encoder(raw):
    raw.send(encode_frame(KIND["REQ"], CMD["INFO"], 777))
    wire, end = b"", time.monotonic() + 30
    while wire.count(b"\x00") < 2 and time.monotonic() < end:
        wire += raw.ser.read(4096)
    start = wire.index(b"\x00")
    stop = wire.index(b"\x00", start + 1)
    frame = raw.dec.feed(wire)[0]
    assert frame.kind == KIND["RESP"] and frame.seq == 777
    assert wire[start:stop + 1] == encode_frame(frame.kind, frame.code, frame.seq, frame.payload)


def test_link_naks_garbage_between_delimiters(raw):
    raw.send(b"\x00" + bytes([7, 200, 3, 9, 9, 9]) + b"\x00")
    frames = raw.frames()
    assert frames and frames[0].kind == KIND["NAK"]
    assert frames[0].payload[0] in (P.NAK_REASONS["MALFORMED"], P.NAK_REASONS["CRC"])


def test_link_naks_bad_crc(raw):
    wire = bytearray(encode_frame(KIND["REQ"], CMD["INFO"], 5))
    body = bytearray(cobs_decode(bytes(wire[1:-1])))
    body[-1] ^= 0x40  # damage the CRC
    raw.send(b"\x00" + cobs_encode(bytes(body)) + b"\x00")
    frames = raw.frames()
    assert frames[0].kind == KIND["NAK"] and frames[0].payload[0] == P.NAK_REASONS["CRC"]


def test_link_naks_oversized_frame(raw):
    raw.send(b"\x00" + b"\x41" * 30000 + b"\x00")
    frames = raw.frames()
    assert frames[0].kind == KIND["NAK"] and frames[0].payload[0] == P.NAK_REASONS["TOO_LONG"]
    status, _ = raw.req(CMD["HELLO"], struct.pack("<HHI", 1, 0, 4096))
    assert status == 0


def test_link_rejects_commands_out_of_order(raw):
    assert raw.req(CMD["FLASH_DATA"], struct.pack("<Q", 0) + b"x" * 16)[0] == E["E_STATE"]
    assert raw.req(CMD["FLASH_END"])[0] == E["E_STATE"]
    assert raw.req(CMD["FLASH_COPY"], struct.pack("<II", 0, 1))[0] == E["E_STATE"]
    assert raw.req(CMD["COMMIT"], b"\x00")[0] == E["E_STATE"]  # empty slot
    assert raw.req(CMD["BOOT"], b"\x01")[0] == E["E_STATE"]
    assert raw.req(CMD["BOOT"], b"\x07")[0] == E["E_INVAL"]
    assert raw.req(CMD["ROLLBACK"])[0] == E["E_STATE"]
    gen = struct.pack("<IIffIfIQ", 0, 10, 0.0, 1.0, 0, 1.0, 64, 0) + b"hi"
    assert raw.req(CMD["GENERATE"], gen)[0] == E["E_STATE"]  # no model yet
    assert raw.req(0x7E)[0] == E["E_UNSUPPORTED"]
    assert raw.req(CMD["FLASH_BEGIN"], b"\x01\x02")[0] == E["E_INVAL"]  # truncated
    assert raw.req(CMD["SET_BAUD"], b"")[0] == E["E_INVAL"]


def test_flash_rejects_unaligned_write_and_wrong_hash(raw):
    data = os.urandom(10000)
    import hashlib

    status, r = raw.req(CMD["FLASH_BEGIN"], struct.pack("<Q", len(data)) + hashlib.sha256(b"other").digest())
    assert status == 0
    block = struct.unpack_from("<B3xI", r)[1]
    assert raw.req(CMD["FLASH_DATA"], struct.pack("<Q", 100) + data[100:200])[0] == E["E_STATE"]
    assert raw.req(CMD["FLASH_DATA"], struct.pack("<Q", len(data) - 8) + data[:64])[0] == E["E_BOUNDS"]
    for off in range(0, len(data), block):
        assert raw.req(CMD["FLASH_DATA"], struct.pack("<Q", off) + data[off:off + block])[0] == 0
    assert raw.req(CMD["FLASH_END"])[0] == E["E_HASH"]
    big = struct.pack("<Q", 1 << 62) + bytes(32)
    assert raw.req(CMD["FLASH_BEGIN"], big)[0] == E["E_RANGE"]


def test_link_replays_the_cached_reply_for_a_repeated_sequence_number(raw):
    status, first = raw.req(CMD["INFO"], seq=4242)
    assert status == 0
    # the same seq again must not run twice: FLASH_BEGIN under seq 4242 would be answered as INFO
    raw.send(encode_frame(KIND["REQ"], CMD["INFO"], 4242))
    frames = raw.frames()
    assert frames[0].seq == 4242 and frames[0].payload[2:] == first


def test_link_session_still_works_after_abuse(board, raw):
    raw.send(os.urandom(5000))  # noise, including some 0x00 bytes
    raw.send(b"\x00\x00\x00")
    time.sleep(0.2)
    raw.close()
    with connect(board.port, 0) as link:
        info = link.info()
    assert info.board == "host" and info.protocol == P.PROTO_VERSION


def test_link_reports_protocol_version_mismatch(board, monkeypatch):
    import elk.link as link_mod

    monkeypatch.setattr(link_mod.P, "PROTO_VERSION", 2)
    with pytest.raises(ProtocolVersionError, match="board speaks v1, this elk speaks v2"):
        connect(board.port, 0)


def test_link_reports_missing_port_in_one_line():
    with pytest.raises(LinkError, match="port not found") as e:
        connect("/dev/pts/no-such-port")
    assert "\n" not in str(e.value)


def test_link_reports_no_answer_with_a_hint(tmp_path):
    master, slave = os.openpty()  # a pty with nothing behind it: nobody answers
    try:
        link = Link(os.ttyname(slave), 115200, retries=1)
        with pytest.raises(NoAnswerError, match="no answer from the board.*elk emulate"):
            link.hello()
        link.close()
    finally:
        os.close(master)
        os.close(slave)


def test_board_survives_hostile_generate_requests(board, tmp_path):
    """With a model flashed: GENERATE with random bytes as prompt (invalid UTF-8 too), absurd sampling
    values (NaN, negative, huge) and tiny/huge token limits. Each one ends with a STATS event, the
    ASan firmware stays alive, and a normal greedy request still gives the known text."""
    import math
    import random

    from conftest import fixture_path
    from elk import flash as flashing
    from elk.convert.pack import pack
    from elk.link import EVT

    image = tmp_path / "s260.elk"
    pack(str(fixture_path("stories260K.bin")), str(image), tokenizer=str(fixture_path("tok512.bin")))
    assert flashing.flash([board.port], image, progress=False)[0].ok, board.log_path.read_text()[-2000:]
    rng = random.Random(11)
    odd = [0.0, -1.0, math.nan, math.inf, -math.inf, 1e30, 2.0, 0.5]
    with connect(board.port, 0) as link:
        for i in range(60):
            prompt = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 7, 300))))
            head = struct.pack("<IIffIfIQ", rng.randrange(4), rng.choice((0, 1, 5, 0xFFFFFFFF)),
                               rng.choice(odd), rng.choice(odd), rng.choice((0, 1, 5, 0xFFFFFFFF)),
                               rng.choice(odd), rng.choice((0, 1, 64, 0xFFFFFFFF)), rng.randrange(1 << 64))
            status = struct.unpack_from("<h", link.request(CMD["GENERATE"], head + prompt, check=False))[0]
            if status == 0:
                stats = None
                for _ in range(400):
                    link.pump(0.05)
                    done = [e for e in link.events if e.code == EVT["STATS"]]
                    if done:
                        stats = done[0]
                        link.events.clear()
                        break
                    if len(link.events) > 20:
                        link.abort()  # a huge token limit: stop it, STATS still has to come
                        link.events.clear()
                assert stats is not None, f"request {i}: no STATS"
            assert board.alive(), board.log_path.read_text()[-3000:]
        text = "".join(link.generate("Once upon a time", max_tokens=12, temperature=0, raw=True, reset=True))
    assert text.startswith(", there was a little girl")


def test_board_survives_random_well_formed_requests(board, raw):
    """500 seeded random requests with valid CRCs (every command code, random payloads) reach the
    command handlers: each gets a reply, the ASan firmware stays alive, HELLO works afterwards."""
    import random

    rng = random.Random(7)
    codes = sorted(set(CMD.values()) | {0x00, 0x7F, 0xFF})
    for i in range(500):
        code = rng.choice(codes)
        payload = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 4, 8, 20, 40, 100, 600))))
        if code == CMD["SET_BAUD"]:
            continue  # a successful rate change is not what this test is about
        status, _ = raw.req(code, payload)
        assert status <= 0
        assert board.alive(), board.log_path.read_text()[-3000:]
    raw.close()
    with connect(board.port, 0) as link:
        assert link.info().board == "host"
