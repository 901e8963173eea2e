"""Serial protocol v1 constants: the one source for the firmware (via spec.h) and host/elk/link.py.

The byte layouts are specified in docs/protocol.md; this file only names the numbers.
`python -m elk.spec` appends c_lines() to firmware/include/elk/spec.h.
"""

PROTO_VERSION = 1

# Framing: COBS-encoded frames between 0x00 delimiters. A 0x00 byte never occurs in console text.
FRAME_DELIM = 0x00
FRAME_HEADER_SIZE = 4  # u8 kind, u8 code, u16 seq (little-endian)
FRAME_CRC_SIZE = 4  # CRC-32 (ISO-HDLC, zlib's) over header + payload, little-endian
PAYLOAD_MAX_DEFAULT = 512  # bytes of payload every side accepts before HELLO negotiates more (INFO fits)
PAYLOAD_MAX_BOARD = 8208  # the firmware's receive limit (8 KiB of flash data + FLASH_DATA header room)
# Longest prompt the firmware stages across PROMPT frames (bytes, before the chat template): 16 bytes per
# token of a 2048-token context. Reported in INFO (offset 572) so a host knows it before sending.
PROMPT_MAX_BOARD = 32768

# Retransmission: timeout = RETRY_BASE_MS + 2 x wire time of the frame; then resend, RETRY_COUNT times.
RETRY_BASE_MS = 200
RETRY_COUNT = 8
# After a valid frame the board ignores console text this long (noise between frames is not typing).
CONSOLE_HOLDOFF_MS = 1500
# PROGRESS events during a prompt's prefill (capability PROGRESS, GENERATE flag PROGRESS): the board sends
# one after a prefill batch when at least this long has passed since GENERATE or the previous one.
PROGRESS_MIN_MS = 100
# After SET_BAUD the board reverts to the old baud unless a valid frame arrives within this time.
BAUD_CONFIRM_MS = 2000
# A board away from its console rate (SET_BAUD) returns to it after this long without a valid frame: the
# host that switched it died or was unplugged before switching back, and the next host looks there. Below
# the connect budget (3 s), so a command started right after such a host died still finds the board.
BAUD_IDLE_MS = 2000

FRAME_KINDS = {
    "REQ": 1,    # host -> board: a command; code = command, seq = host sequence number
    "RESP": 2,   # board -> host: the answer to REQ seq (also its acknowledgement); payload starts i16 status
    "NAK": 3,    # either way: a frame arrived damaged; payload u8 reason. The peer resends its pending frame
    "EVENT": 4,  # board -> host: streamed output; code = event, seq = board event sequence number
    "EACK": 5,   # host -> board: acknowledges EVENT seq
}

COMMANDS = {
    "HELLO": 0x01,
    "INFO": 0x02,
    "FLASH_BEGIN": 0x10,
    "FLASH_DATA": 0x11,
    "FLASH_COPY": 0x12,
    "FLASH_END": 0x13,
    "BLOCK_HASHES": 0x14,
    "SET_BAUD": 0x20,
    "BOOT": 0x30,
    "COMMIT": 0x31,
    "ROLLBACK": 0x32,
    "RESET": 0x33,
    "GENERATE": 0x40,
    "ABORT": 0x41,
    "PROMPT": 0x42,      # stage prompt bytes for the next GENERATE (capability LONG_PROMPT)
    "TRUST_INFO": 0x50,  # trust area (docs/trust.md): provisioning state
    "PROVISION": 0x51,   # store / replace / clear the owner key
}

EVENTS = {
    "PIECE": 0x01,  # UTF-8 bytes of generated text (a piece may split a multi-byte character)
    "STATS": 0x02,  # the last event of a generation
    "PROGRESS": 0x03,  # u32 prompt tokens prefilled so far, u32 the turn's prompt tokens (flag PROGRESS)
}

NAK_REASONS = {
    "CRC": 1,        # CRC-32 mismatch
    "TOO_LONG": 2,   # more bytes than the receiver's limit before a delimiter
    "MALFORMED": 3,  # bad COBS code or shorter than header + CRC
}

CAPABILITIES = {  # bits of the u32 capabilities word in HELLO / INFO
    "FLASH": 1 << 0,
    "GENERATE": 1 << 1,    # a model is loaded and GENERATE works
    "SET_BAUD": 1 << 2,
    "BLOCK_HASHES": 1 << 3,
    "FLASH_COPY": 1 << 4,
    "CONSOLE": 1 << 5,     # the human text console shares the line
    "NPU": 1 << 6,         # prompt prefill runs on an NPU backend (INFO names it)
    "CHECKING": 1 << 7,    # power-on check of the active slot's SHA-256 under way: only HELLO/INFO served
    "LONG_PROMPT": 1 << 8,  # PROMPT + GENERATE flag STAGED: prompts longer than one frame
    "PROGRESS": 1 << 9,     # GENERATE flag PROGRESS: PROGRESS events during prefill; ABORT/HELLO end a prefill
}

GEN_FLAGS = {
    "RESET_CONTEXT": 1 << 0,  # forget the conversation before this prompt
    "RAW": 1 << 1,            # do not wrap the prompt in the image's chat template
    "STAGED": 1 << 2,         # the prompt is the bytes staged by PROMPT, then this frame's own bytes
    "PROGRESS": 1 << 3,       # send PROGRESS events while the prompt is prefilled (capability PROGRESS)
}

STOP_REASONS = {  # STATS.stop
    "EOS": 0,
    "MAX_TOKENS": 1,
    "CONTEXT_FULL": 2,
    "ABORTED": 3,
    "ERROR": 4,
}

SLOT_NONE = 0xFF
SLOT_FLAGS = {  # INFO per-slot flags
    "VALID": 1 << 0,    # holds an image whose SHA-256 was verified on the board
    "ACTIVE": 1 << 1,   # the committed slot: booted after a reset
    "RUNNING": 1 << 2,  # the slot the model currently runs from
}

# Fixed sizes of the INFO response fields (docs/protocol.md).
INFO_NAME_MAX = 32     # board and firmware strings, NUL-padded
SLOT_NAME_MAX = 64     # image name (header name), NUL-padded
BLOCK_HASH_SIZE = 8    # BLOCK_HASHES: the first 8 bytes of each block's SHA-256

# Boot record (flash blocks 0 and 1, one copy each): docs/protocol.md "Flash layout".
BOOT_MAGIC = 0x424B4C45  # bytes "ELKB" little-endian
BOOT_VERSION = 1
BOOT_RECORD_SIZE = 256


def _define(name, value, comment=None):
    line = f"#define {name} {value}"
    return f"{line:<56} /* {comment} */" if comment else line


def c_lines() -> list:
    """The protocol part of firmware/include/elk/spec.h."""
    out = ["/* serial protocol v1 (docs/protocol.md), from host/elk/proto_spec.py */"]
    out.append(_define("ELK_PROTO_VERSION", PROTO_VERSION))
    out.append(_define("ELK_PROTO_FRAME_DELIM", f"0x{FRAME_DELIM:02X}"))
    out.append(_define("ELK_PROTO_FRAME_HEADER_SIZE", FRAME_HEADER_SIZE, "u8 kind, u8 code, u16 seq"))
    out.append(_define("ELK_PROTO_FRAME_CRC_SIZE", FRAME_CRC_SIZE))
    out.append(_define("ELK_PROTO_PAYLOAD_MAX_DEFAULT", PAYLOAD_MAX_DEFAULT, "before HELLO"))
    out.append(_define("ELK_PROTO_PAYLOAD_MAX_BOARD", PAYLOAD_MAX_BOARD))
    out.append(_define("ELK_PROTO_PROMPT_MAX_BOARD", PROMPT_MAX_BOARD, "bytes staged by PROMPT"))
    out.append(_define("ELK_PROTO_RETRY_BASE_MS", RETRY_BASE_MS))
    out.append(_define("ELK_PROTO_RETRY_COUNT", RETRY_COUNT))
    out.append(_define("ELK_PROTO_CONSOLE_HOLDOFF_MS", CONSOLE_HOLDOFF_MS))
    out.append(_define("ELK_PROTO_BAUD_CONFIRM_MS", BAUD_CONFIRM_MS))
    out.append(_define("ELK_PROTO_BAUD_IDLE_MS", BAUD_IDLE_MS, "back to the console rate after this much silence"))
    out.append(_define("ELK_PROTO_PROGRESS_MIN_MS", PROGRESS_MIN_MS, "PROGRESS events at most this often"))
    out.append(_define("ELK_PROTO_INFO_NAME_MAX", INFO_NAME_MAX))
    out.append(_define("ELK_PROTO_SLOT_NAME_MAX", SLOT_NAME_MAX))
    out.append(_define("ELK_PROTO_BLOCK_HASH_SIZE", BLOCK_HASH_SIZE))
    out.append(_define("ELK_PROTO_SLOT_NONE", f"0x{SLOT_NONE:02X}"))
    out.append(_define("ELK_BOOT_MAGIC", f"0x{BOOT_MAGIC:08X}u", '"ELKB" little-endian'))
    out.append(_define("ELK_BOOT_VERSION", BOOT_VERSION))
    out.append(_define("ELK_BOOT_RECORD_SIZE", BOOT_RECORD_SIZE))
    for prefix, table in (("ELK_FRAME_", FRAME_KINDS), ("ELK_CMD_", COMMANDS), ("ELK_EVENT_", EVENTS),
                          ("ELK_NAK_", NAK_REASONS), ("ELK_STOP_", STOP_REASONS)):
        out.append("enum {")
        for name, value in table.items():
            out.append(f"    {prefix}{name} = 0x{value:02X},")
        out.append("};")
    for prefix, table in (("ELK_CAP_", CAPABILITIES), ("ELK_GEN_", GEN_FLAGS), ("ELK_SLOT_", SLOT_FLAGS)):
        for name, value in table.items():
            out.append(_define(f"{prefix}{name}", f"(1u << {value.bit_length() - 1})"))
    return out
