"""The image's TOKENIZER section (docs/image-format.md) in Python: `encode_section` writes a vocabulary
as its bytes and checks them as every reader will; `decode_section` is the checking reader. elk.tokenizer
re-exports both. Not here: importing vocabularies or encoding text (elk.tokenizer)."""

from __future__ import annotations

import math
import struct

from elk import spec
from elk import tokenizer as _tok  # MAX_USER_PIECE_BYTES is read from there at call time (one setting)
from elk.tokenizer import (CONTROL, ENTRY, FLAG_ADDED_OPTIONS, FLAG_STOP_IDS, FLAG_USER_SPLIT_RAW, HEAD, KIND_BYTE,
                           KIND_SPM, KNOWN_FLAGS, MAX_TOKENS, UNKNOWN, USER_DEFINED, TokenizerFormatError, Vocab)
from elk.tokenizer_added import ALL as ADDED_ALL


def encode_section(v: Vocab) -> bytes:
    n = len(v.pieces)
    if not 0 < n <= MAX_TOKENS or len(v.scores) != n or len(v.types) != n:
        raise TokenizerFormatError(f"vocabulary has {n} pieces, {len(v.scores)} scores, {len(v.types)} types")
    # untrusted sources (GGUF, tokenizer.json) can carry any number here; struct.pack would raise
    known = set(spec.TOKEN_TYPES.values())
    for i, (score, kind) in enumerate(zip(v.scores, v.types)):
        if kind not in known:
            raise TokenizerFormatError(f"token {i} has type {kind}; known types are {min(known)}..{max(known)}")
        if not abs(score) <= 3.4e38:
            raise TokenizerFormatError(f"token {i} has score {score}, not a finite float32")
        size = len(v.pieces[i].encode())
        long_user = kind == USER_DEFINED and size > _tok.MAX_USER_PIECE_BYTES
        if v.kind == KIND_SPM and not v.flags & FLAG_USER_SPLIT_RAW and long_user:
            raise TokenizerFormatError(f"user-defined token {i} ({v.pieces[i][:24]!r}...) is {size} bytes; elk matches "
                                       f"user-defined pieces of at most {_tok.MAX_USER_PIECE_BYTES} bytes")
    if v.kind not in KNOWN_FLAGS:
        raise TokenizerFormatError(f"tokenizer kind {v.kind} is not one elk writes")
    blob = bytearray()
    if v.kind == KIND_BYTE:  # the merge split lengths lead the blob (u16 each, padded to 4 bytes)
        splits = v.splits or [0] * n
        if len(splits) != n or any(not 0 <= k < min(65536, len(p.encode()) or 1) for k, p in zip(splits, v.pieces)):
            raise TokenizerFormatError("byte-level vocabulary: bad merge split lengths")
        blob += struct.pack(f"<{n}H", *splits) + b"\0" * (-2 * n % 4)
    entries = bytearray()
    max_len = 0
    for piece, score, kind in zip(v.pieces, v.scores, v.types):
        raw = piece.encode("utf-8")
        entries += ENTRY.pack(len(blob), len(raw), score, kind)
        blob += raw
        max_len = max(max_len, len(raw))
    flags = v.flags & ~(FLAG_STOP_IDS | FLAG_ADDED_OPTIONS)
    options = sorted((i, o) for i, o in v.added_options.items() if o)
    if options:  # before the stop-id list, which stays the section's end
        if len(options) > spec.TOKENIZER_MAX_ADDED_OPTIONS:
            raise TokenizerFormatError(f"{len(options)} added tokens with options; at most "
                                       f"{spec.TOKENIZER_MAX_ADDED_OPTIONS}")
        blob += b"".join(struct.pack("<iI", i, o) for i, o in options) + struct.pack("<I", len(options))
        flags |= FLAG_ADDED_OPTIONS
    stops = [i for i in v.stop_ids if i != v.eos_id]
    if any(not 0 <= i < n for i in v.stop_ids):
        raise TokenizerFormatError(f"stop ids {v.stop_ids} outside 0..{n - 1}")
    tail = b""
    if stops:  # the list repeats eos_id (when there is one): a reader needs no merging rule
        ids = v.all_stop_ids()
        if len(ids) > spec.TOKENIZER_MAX_STOP_IDS:
            raise TokenizerFormatError(f"{len(ids)} stop ids; at most {spec.TOKENIZER_MAX_STOP_IDS}")
        tail = struct.pack(f"<{len(ids)}iI", *ids, len(ids))
        flags |= FLAG_STOP_IDS
    head = HEAD.pack(n, v.kind, flags, v.bos_id, v.eos_id, v.unk_id, v.pad_id, max_len)
    out = bytes(head + entries + blob + tail)
    decode_section(out)  # the writer checks what every reader will check
    return out


def decode_section(b: bytes) -> Vocab:
    b = bytes(b)
    if len(b) < HEAD.size:
        raise TokenizerFormatError(f"TOKENIZER section is {len(b)} bytes, shorter than its 32-byte head")
    n, kind, flags, bos, eos, unk, pad, max_len = HEAD.unpack_from(b, 0)
    if kind not in KNOWN_FLAGS:
        raise TokenizerFormatError(f"TOKENIZER kind {kind} is not supported (1 = SentencePiece BPE, 2 = byte-level BPE)")
    if not 0 < n <= MAX_TOKENS or HEAD.size + n * ENTRY.size > len(b):
        raise TokenizerFormatError(f"TOKENIZER n_tokens {n} does not fit the {len(b)}-byte section")
    if flags & ~KNOWN_FLAGS[kind]:
        raise TokenizerFormatError(f"TOKENIZER flags 0x{flags:x} has unknown bits")
    for name, i in (("bos", bos), ("eos", eos), ("unk", unk), ("pad", pad)):
        if not -1 <= i < n:
            raise TokenizerFormatError(f"TOKENIZER {name}_id {i} outside 0..{n - 1}")
    blob_off = HEAD.size + n * ENTRY.size
    blob = memoryview(b)[blob_off:]
    stop_ids = []
    if flags & FLAG_STOP_IDS:  # u32 count in the last 4 bytes, the ids before it
        k = struct.unpack_from("<I", b, len(b) - 4)[0] if len(blob) >= 4 else 0
        if not 1 <= k <= spec.TOKENIZER_MAX_STOP_IDS or 4 + 4 * k > len(blob):
            raise TokenizerFormatError(f"TOKENIZER stop-id list of {k} ids does not fit "
                                       f"(1..{spec.TOKENIZER_MAX_STOP_IDS} ids after the strings)")
        stop_ids = list(struct.unpack_from(f"<{k}i", b, len(b) - 4 - 4 * k))
        if any(not 0 <= i < n for i in stop_ids):
            raise TokenizerFormatError(f"TOKENIZER stop id outside 0..{n - 1}: {stop_ids}")
        blob = blob[: len(blob) - 4 - 4 * k]
    options = {}
    if flags & FLAG_ADDED_OPTIONS:  # k x (i32 id, u32 options), then u32 k, before the stop ids
        k = struct.unpack_from("<I", blob, len(blob) - 4)[0] if len(blob) >= 4 else 0
        if not 1 <= k <= spec.TOKENIZER_MAX_ADDED_OPTIONS or 4 + 8 * k > len(blob):
            raise TokenizerFormatError(f"TOKENIZER added-token option list of {k} entries does not fit "
                                       f"(1..{spec.TOKENIZER_MAX_ADDED_OPTIONS} after the strings)")
        raw = struct.unpack_from(f"<{2 * k}i", blob, len(blob) - 4 - 8 * k)
        options = {raw[2 * j]: raw[2 * j + 1] for j in range(k)}
        ids = list(raw[0::2])
        if ids != sorted(set(ids)) or any(not 0 <= i < n or not 0 < o <= ADDED_ALL for i, o in options.items()):
            raise TokenizerFormatError(f"TOKENIZER added-token options: ids not ascending in 0..{n - 1}, or "
                                       f"options outside 1..{ADDED_ALL}")
        blob = blob[: len(blob) - 4 - 8 * k]
    splits = None
    if kind == KIND_BYTE:
        if len(blob) < 2 * n:
            raise TokenizerFormatError(f"TOKENIZER byte-level merge splits need {2 * n} bytes, blob has {len(blob)}")
        splits = list(struct.unpack_from(f"<{n}H", blob, 0))
    pieces, scores, types = [], [], []
    for i in range(n):
        off, length, score, kind_i = ENTRY.unpack_from(b, HEAD.size + i * ENTRY.size)
        if off + length > len(blob) or length > max_len:
            raise TokenizerFormatError(f"TOKENIZER token {i}: bytes outside the string blob or above max_token_len")
        if kind_i not in spec.TOKEN_TYPES.values() or math.isnan(score):
            raise TokenizerFormatError(f"TOKENIZER token {i}: bad type {kind_i} or NaN score")
        try:
            pieces.append(bytes(blob[off : off + length]).decode("utf-8"))
        except UnicodeDecodeError:
            raise TokenizerFormatError(f"TOKENIZER token {i}: piece is not UTF-8") from None
        long_user = kind_i == USER_DEFINED and length > _tok.MAX_USER_PIECE_BYTES
        if kind == KIND_SPM and not flags & FLAG_USER_SPLIT_RAW and long_user:
            raise TokenizerFormatError(f"TOKENIZER token {i}: user-defined piece of {length} bytes, above "
                                       f"{_tok.MAX_USER_PIECE_BYTES}")
        if splits and splits[i] >= max(length, 1):
            raise TokenizerFormatError(f"TOKENIZER token {i}: merge split {splits[i]} not inside its {length} bytes")
        scores.append(score)
        types.append(kind_i)
    raw_users = kind == KIND_BYTE or flags & FLAG_USER_SPLIT_RAW
    whole = {CONTROL, UNKNOWN} | ({USER_DEFINED} if raw_users else set())
    raw_bit = spec.TOKENIZER_ADDED_RAW
    bad = next((i for i, o in options.items() if not pieces[i] or (
        types[i] != USER_DEFINED if o & raw_bit else types[i] not in whole)), None)
    if bad is not None:  # options apply to pieces matched whole in the raw text only
        raise TokenizerFormatError(f"TOKENIZER token {bad}: added-token options on a piece not matched whole "
                                   f"in the raw text")
    return Vocab(pieces, scores, types, bos_id=bos, eos_id=eos, unk_id=unk, pad_id=pad,
                 flags=flags, stop_ids=stop_ids, kind=kind, splits=splits, added_options=options)
