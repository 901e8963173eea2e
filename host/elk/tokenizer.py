"""Vocabularies for the image's TOKENIZER section: import (llama2.c, SentencePiece, HF tokenizer.json,
GGUF), the section's byte layout (docs/image-format.md), and a pure-Python reference of the C encoder
(SentencePiece BPE as Llama uses it). It is the oracle for the C tokenizer, not a fast tokenizer.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import pathlib
import re
import struct

from elk import spec
from elk.errors import FormatError

SPACE = "\u2581"  # "▁": SentencePiece's spelling of a space inside pieces
NORMAL = spec.TOKEN_TYPES["NORMAL"]
UNKNOWN = spec.TOKEN_TYPES["UNKNOWN"]
CONTROL = spec.TOKEN_TYPES["CONTROL"]
USER_DEFINED = spec.TOKEN_TYPES["USER_DEFINED"]
UNUSED = spec.TOKEN_TYPES["UNUSED"]
BYTE = spec.TOKEN_TYPES["BYTE"]
FLAG_BYTE_FALLBACK = spec.TOKENIZER_FLAG_BYTE_FALLBACK
FLAG_ADD_DUMMY_PREFIX = spec.TOKENIZER_FLAG_ADD_DUMMY_PREFIX
FLAG_REMOVE_EXTRA_WHITESPACE = spec.TOKENIZER_FLAG_REMOVE_EXTRA_WHITESPACE
FLAG_STOP_IDS = spec.TOKENIZER_FLAG_STOP_IDS
FLAG_SPLIT_DIGITS = spec.TOKENIZER_FLAG_SPLIT_DIGITS
FLAG_LLAMA3_SPLIT = spec.TOKENIZER_FLAG_LLAMA3_SPLIT
FLAG_IGNORE_MERGES = spec.TOKENIZER_FLAG_IGNORE_MERGES
FLAG_PREFIX_SEGMENTS = spec.TOKENIZER_FLAG_PREFIX_SEGMENTS
FLAG_PREFIX_UNLESS_SPACE = spec.TOKENIZER_FLAG_PREFIX_UNLESS_SPACE
FLAG_USER_SPLIT_RAW = spec.TOKENIZER_FLAG_USER_SPLIT_RAW
FLAG_ADDED_OPTIONS = spec.TOKENIZER_FLAG_ADDED_OPTIONS
KIND_SPM = spec.TOKENIZER_KIND_SPM_BPE
KIND_BYTE = spec.TOKENIZER_KIND_BYTE_BPE
KNOWN_FLAGS = {  # per kind: the flags that mean something for it
    KIND_SPM: FLAG_BYTE_FALLBACK | FLAG_ADD_DUMMY_PREFIX | FLAG_REMOVE_EXTRA_WHITESPACE | FLAG_STOP_IDS |
              FLAG_PREFIX_SEGMENTS | FLAG_PREFIX_UNLESS_SPACE | FLAG_USER_SPLIT_RAW | FLAG_ADDED_OPTIONS,
    KIND_BYTE: FLAG_SPLIT_DIGITS | FLAG_STOP_IDS | FLAG_LLAMA3_SPLIT | FLAG_IGNORE_MERGES | FLAG_ADDED_OPTIONS,
}
LLAMA_FLAGS = FLAG_BYTE_FALLBACK | FLAG_ADD_DUMMY_PREFIX

HEAD = struct.Struct("<IIIiiiiI")  # n_tokens, kind, flags, bos, eos, unk, pad, max_token_len
ENTRY = struct.Struct("<IIfI")  # offset into blob, length, score, type
assert HEAD.size == 32 and ENTRY.size == spec.TOKEN_ENTRY_SIZE
MAX_TOKENS = 1 << 20  # more than any Llama-class vocabulary; bounds what a reader allocates
# Longest SentencePiece user-defined piece (UTF-8 bytes, "▁" spelling): the C runtime matches one whole
# in its 4 KiB normalized scratch (firmware/src/tokenizer/internal.h MAX_LONG_USER_LEN)
MAX_USER_PIECE_BYTES = 2048
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class TokenizerFormatError(FormatError):
    """A vocabulary file or a TOKENIZER section is malformed or of a kind elk does not support."""


@dataclasses.dataclass
class Vocab:
    """A SentencePiece-BPE vocabulary as the image stores it."""

    pieces: list[str]  # SentencePiece spelling: "▁" for space, "<0x0A>" for byte pieces
    scores: list[float]  # merge priority: higher merges first
    types: list[int]  # spec.TOKEN_TYPES values
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 0
    pad_id: int = -1  # -1: none
    flags: int = LLAMA_FLAGS  # spec.TOKENIZER_FLAG_* bits
    chat_template: str | None = None  # goes to the image's METADATA, not the TOKENIZER section
    stop_ids: list[int] = dataclasses.field(default_factory=list)  # generation also stops here (+ eos_id)
    kind: int = KIND_SPM  # spec.TOKENIZER_KIND_*
    splits: list[int] | None = None  # byte-level: UTF-8 length of the left part of the merge making each piece
    # id -> spec.TOKENIZER_ADDED_* bits (lstrip, rstrip, single_word) of pieces matched whole in the raw text
    added_options: dict[int, int] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pieces)

    @property
    def byte_fallback(self) -> bool:
        return bool(self.flags & FLAG_BYTE_FALLBACK)

    @property
    def add_dummy_prefix(self) -> bool:
        return bool(self.flags & FLAG_ADD_DUMMY_PREFIX)

    def all_stop_ids(self) -> list[int]:
        """Every id generation stops at: eos_id first, then the extra stop ids, each once."""
        out = []
        for i in [self.eos_id] + list(self.stop_ids):
            if 0 <= i < len(self.pieces) and i not in out:
                out.append(i)
        return out

    def special_id(self, text: str) -> int:
        """Id of the control piece spelled exactly `text` (e.g. "<|im_end|>"), or -1."""
        for i, (p, kind) in enumerate(zip(self.pieces, self.types)):
            if kind == CONTROL and p == text:
                return i
        return -1

    def piece_id(self, piece: str) -> int:
        """Id of a piece (SentencePiece spelling), or -1."""
        key = (id(self.pieces), len(self.pieces))
        if getattr(self, "_index_key", None) != key:
            self._index = {p: i for i, p in reversed(list(enumerate(self.pieces)))}
            self._index_key = key
        return self._index.get(piece, -1)


def _infer_type(piece: str) -> int:
    if _BYTE_PIECE.fullmatch(piece):
        return BYTE
    return NORMAL


# ---------------------------------------------------------------------------------------------
# Loaders


def from_llama2c(path) -> Vocab:
    """llama2.c tokenizer.bin / tok512.bin: i32 max_token_length, then per token f32 score, i32 len, bytes.
    The file has no vocabulary size: it ends when the bytes do. Pieces spell a space as " "."""
    data = pathlib.Path(path).read_bytes()
    if len(data) < 4:
        raise TokenizerFormatError(f"{path}: too short for a llama2.c tokenizer")
    (max_len,) = struct.unpack_from("<i", data, 0)
    if not 0 < max_len <= 1024:
        raise TokenizerFormatError(f"{path}: max_token_length {max_len} is not a llama2.c tokenizer")
    pieces, scores, types = [], [], []
    off = 4
    while off < len(data):
        if off + 8 > len(data):
            raise TokenizerFormatError(f"{path}: token {len(pieces)} truncated")
        score, n = struct.unpack_from("<fi", data, off)
        if not 0 <= n <= max_len or off + 8 + n > len(data) or math.isnan(score):
            raise TokenizerFormatError(f"{path}: token {len(pieces)} has a bad length or score")
        try:
            text = data[off + 8 : off + 8 + n].decode("utf-8")
        except UnicodeDecodeError:
            raise TokenizerFormatError(f"{path}: token {len(pieces)} is not UTF-8") from None
        off += 8 + n
        i = len(pieces)
        if i == 0:
            piece, kind = "<unk>", UNKNOWN
        elif i in (1, 2):
            piece, kind = text.strip(), CONTROL  # llama2.c spells them "\n<s>\n", "\n</s>\n"
        else:
            piece = text.replace(" ", SPACE)
            kind = _infer_type(piece)
        pieces.append(piece)
        scores.append(score)
        types.append(kind)
    if len(pieces) < 3:
        raise TokenizerFormatError(f"{path}: only {len(pieces)} tokens")
    return Vocab(pieces, scores, types, bos_id=1, eos_id=2, unk_id=0, pad_id=-1, flags=LLAMA_FLAGS)


def from_sentencepiece(path) -> Vocab:
    """A SentencePiece .model (protobuf) of model_type BPE with identity normalization."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    try:
        m.ParseFromString(pathlib.Path(path).read_bytes())
    except Exception as e:  # protobuf raises its own DecodeError family
        raise TokenizerFormatError(f"{path}: not a SentencePiece model ({e})") from None
    if not m.pieces:
        raise TokenizerFormatError(f"{path}: not a SentencePiece model (no pieces)")
    if m.trainer_spec.model_type != pb.TrainerSpec.BPE:
        raise TokenizerFormatError(f"{path}: SentencePiece model type is not BPE (elk supports BPE only)")
    norm = m.normalizer_spec
    if norm.precompiled_charsmap or norm.name not in ("", "identity"):
        raise TokenizerFormatError(
            f"{path}: normalization '{norm.name}' is not supported (elk supports identity, as Llama uses)")
    if m.trainer_spec.treat_whitespace_as_suffix:
        raise TokenizerFormatError(f"{path}: treat_whitespace_as_suffix is not supported")
    flags = 0
    flags |= FLAG_BYTE_FALLBACK if m.trainer_spec.byte_fallback else 0
    flags |= FLAG_ADD_DUMMY_PREFIX if norm.add_dummy_prefix else 0
    flags |= FLAG_REMOVE_EXTRA_WHITESPACE if norm.remove_extra_whitespaces else 0
    pieces = [p.piece for p in m.pieces]
    scores = [float(p.score) for p in m.pieces]
    types = [int(p.type) for p in m.pieces]
    if any(t not in spec.TOKEN_TYPES.values() for t in types):
        raise TokenizerFormatError(f"{path}: unknown piece type")
    ts = m.trainer_spec

    def special(i):
        return i if 0 <= i < len(pieces) else -1

    return Vocab(pieces, scores, types, bos_id=special(ts.bos_id), eos_id=special(ts.eos_id),
                 unk_id=special(ts.unk_id), pad_id=special(ts.pad_id), flags=flags)


def from_hf_tokenizer_json(path) -> Vocab:
    """Hugging Face tokenizer.json of a Llama-style SentencePiece BPE or a GPT-2 style byte-level BPE
    (elk.convert.hf_tokenizer)."""
    from elk.convert import hf_tokenizer

    return hf_tokenizer.read_tokenizer_json(path)


def hf_specials(v: Vocab, folder, added: bool = True, chat_template: str | None = None) -> Vocab:
    """A Hugging Face folder's added tokens, bos/eos, stop ids and chat template applied to v
    (elk.convert.hf_tokenizer.apply_specials)."""
    from elk.convert import hf_tokenizer

    return hf_tokenizer.apply_specials(v, folder, added=added, chat_template=chat_template)


# Special tokens a chat template puts at the end of every turn: when the template has one and the
# vocabulary holds it as a special token, generation stops there even if the config files forgot it.
TURN_END_MARKERS = ("<|im_end|>", "<|eot_id|>")


def add_turn_end_stops(v: Vocab) -> None:
    """Add the turn-end marker of v.chat_template (when it is a special token of v) to v.stop_ids."""
    for marker in TURN_END_MARKERS:
        i = v.special_id(marker)
        if isinstance(v.chat_template, str) and marker in v.chat_template and i >= 0 and i not in v.stop_ids:
            v.stop_ids.append(i)


def from_gguf(reader) -> Vocab:
    """The tokenizer.ggml.* metadata of a gguf.GGUFReader: tokenizer.ggml.model "llama" (SentencePiece BPE)
    or "gpt2" with a pre-tokenizer elk runs (byte-level BPE: "gpt-2", "smollm", "starcoder", "llama-bpe")."""
    fields = reader.fields

    def get(key, default=None):
        f = fields.get(key)
        if f is None:
            return default
        try:
            return f.contents()
        except Exception as e:  # noqa: BLE001 - gguf decodes strings strictly (fuzz finding: bad UTF-8 key)
            raise TokenizerFormatError(f"GGUF field {key} is damaged ({type(e).__name__}: {e})") from None

    model = get("tokenizer.ggml.model")
    if model == "gpt2":
        from elk.convert import bytelevel

        return bytelevel.from_gguf(get)
    if model != "llama":
        raise TokenizerFormatError(f"GGUF tokenizer model is {model!r}; elk supports 'llama' (SentencePiece BPE) "
                                   f"and 'gpt2' (byte-level BPE)")
    pieces = get("tokenizer.ggml.tokens")
    if not pieces:
        raise TokenizerFormatError("GGUF file has no tokenizer.ggml.tokens")
    n = len(pieces)
    scores = [float(s) for s in get("tokenizer.ggml.scores", [0.0] * n)]
    types = [int(t) for t in get("tokenizer.ggml.token_type", [_infer_type(p) for p in pieces])]
    if len(scores) != n or len(types) != n:
        raise TokenizerFormatError("GGUF tokenizer arrays differ in length")

    def special(key, default):
        v = get(key, default)
        return int(v) if v is not None and 0 <= int(v) < n else -1

    flags = FLAG_BYTE_FALLBACK
    if get("tokenizer.ggml.add_space_prefix", True):
        flags |= FLAG_ADD_DUMMY_PREFIX
    # end of turn / end of message (llama.cpp's keys) stop generation as EOS does
    stops = [special(k, None) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                        "tokenizer.ggml.eom_token_id")]
    v = Vocab(list(pieces), scores, types, bos_id=special("tokenizer.ggml.bos_token_id", 1),
              eos_id=special("tokenizer.ggml.eos_token_id", 2),
              unk_id=special("tokenizer.ggml.unknown_token_id", 0),
              pad_id=special("tokenizer.ggml.padding_token_id", None), flags=flags,
              chat_template=get("tokenizer.chat_template"))
    v.stop_ids = [i for i in stops if i >= 0]
    add_turn_end_stops(v)
    return v


def load(path) -> Vocab:
    """Read a vocabulary from any supported file, recognised by content (then extension)."""
    path = pathlib.Path(path)
    if path.is_dir():
        if (path / "tokenizer.model").is_file():  # + the folder's added tokens, eos and stop ids
            return hf_specials(load(path / "tokenizer.model"), path)
        if (path / "tokenizer.json").is_file():
            return load(path / "tokenizer.json")
        raise TokenizerFormatError(f"{path}: no tokenizer.model or tokenizer.json in this directory")
    try:
        head = path.open("rb").read(16)
    except OSError as e:
        raise TokenizerFormatError(f"{path}: cannot read ({e.strerror})") from None
    if head[:4] == b"GGUF":
        import gguf

        from elk import gguf_guard

        gguf_guard.check(path)  # bounded pre-scan: the gguf package loops on crafted counts (fuzz finding)
        try:
            reader = gguf.GGUFReader(str(path))
        except Exception as e:  # the gguf reader raises ValueError/struct errors on damaged files
            raise TokenizerFormatError(f"{path}: damaged GGUF file ({e})") from None
        return from_gguf(reader)
    if head.lstrip()[:1] == b"{":
        return from_hf_tokenizer_json(path)
    # protobuf field 1 (pieces), length-delimited with a non-zero length; llama2.c starts with its
    # max_token_length as int32. Content decides; the extension only breaks a tie or an unknown head.
    is_sp = head[:1] == b"\x0a" and head[1:2] != b"\x00"
    is_l2c = len(head) >= 4 and 0 < struct.unpack_from("<i", head)[0] <= 1024
    if is_sp != is_l2c:
        return from_sentencepiece(path) if is_sp else from_llama2c(path)
    if path.suffix == ".model":
        return from_sentencepiece(path)
    if path.suffix == ".bin":
        return from_llama2c(path)
    raise TokenizerFormatError(f"{path}: not a tokenizer elk reads (SentencePiece .model, tokenizer.json, "
                               "GGUF, llama2.c tokenizer.bin)")


# ---------------------------------------------------------------------------------------------
# Reference encoder / decoder (the algorithm firmware/src/tokenizer/tokenizer.c implements)


def _char_len(data: bytes, i: int) -> int:
    """Length of the valid UTF-8 character at data[i], or 0 when the byte there starts none."""
    c = data[i]
    if c < 0x80:
        return 1
    if 0xC2 <= c <= 0xDF:
        n, lo, hi = 2, 0x80, 0xBF
    elif 0xE0 <= c <= 0xEF:
        n = 3
        lo, hi = (0xA0, 0xBF) if c == 0xE0 else (0x80, 0x9F) if c == 0xED else (0x80, 0xBF)
    elif 0xF0 <= c <= 0xF4:
        n = 4
        lo, hi = (0x90, 0xBF) if c == 0xF0 else (0x80, 0x8F) if c == 0xF4 else (0x80, 0xBF)
    else:
        return 0
    if i + n > len(data) or not lo <= data[i + 1] <= hi:
        return 0
    if any(not 0x80 <= data[j] <= 0xBF for j in range(i + 2, i + n)):
        return 0
    return n


def normalize(v: Vocab, data: bytes, prefix: bool = True) -> bytes:
    """Identity normalization: optional whitespace cleanup, dummy prefix, " " → "▁"."""
    if v.flags & FLAG_REMOVE_EXTRA_WHITESPACE:
        data = re.sub(b" +", b" ", data).strip(b" ")
    if not data:
        return b""
    if v.flags & FLAG_PREFIX_UNLESS_SPACE and data.startswith((b" ", SPACE.encode())):
        prefix = False  # Hugging Face's Metaspace: the text already starts with a space
    if prefix and v.flags & FLAG_ADD_DUMMY_PREFIX:
        data = b" " + data
    return data.replace(b" ", SPACE.encode())


class _Tables:
    """Lookups the encoder needs, built once per vocabulary (the C side builds them in its arena)."""

    def __init__(self, v: Vocab):
        self.mergeable = {}  # piece bytes -> id for NORMAL / USER_DEFINED / UNUSED (first id wins)
        for i in range(len(v.pieces) - 1, -1, -1):
            if v.types[i] in (NORMAL, USER_DEFINED, UNUSED):
                self.mergeable[v.pieces[i].encode()] = i
        raw = {i for i, o in v.added_options.items() if o & spec.TOKENIZER_ADDED_RAW}  # split off the raw text
        self.user = sorted({v.pieces[i].encode() for i in range(len(v)) if v.types[i] == USER_DEFINED and i not in raw},
                           key=len, reverse=True)
        self.control = {}  # piece bytes -> id of non-empty CONTROL, then UNKNOWN pieces (first id wins)
        for kind in (UNKNOWN, CONTROL):  # matched in template text (special=True): both are special tokens
            for i in range(len(v.pieces) - 1, -1, -1):
                if v.types[i] == kind and v.pieces[i]:
                    self.control[v.pieces[i].encode()] = i
        self.control_len = max(map(len, self.control), default=0)
        self.user_ids = {}  # user-defined pieces split off the raw text first (byte-level, USER_SPLIT_RAW)
        if v.kind == KIND_BYTE or v.flags & FLAG_USER_SPLIT_RAW or raw:
            every = v.kind == KIND_BYTE or v.flags & FLAG_USER_SPLIT_RAW
            for i in range(len(v.pieces)):
                if v.types[i] == USER_DEFINED and v.pieces[i] and (every or i in raw):
                    # the id of the first piece so spelled: an added token spelled like a vocabulary
                    # piece is still split off whole, with the vocabulary's id (as tokenizers does)
                    self.user_ids[v.pieces[i].encode()] = self.mergeable[v.pieces[i].encode()]
            self.user = self.user if raw and not every else []
        self.match_len = max(self.control_len, max(map(len, self.user_ids), default=0))
        self.byte_ids = {}
        for i in range(len(v.pieces) - 1, -1, -1):
            m = _BYTE_PIECE.fullmatch(v.pieces[i])
            if v.types[i] == BYTE and m:
                self.byte_ids[int(m.group(1), 16)] = i


def _tables(v: Vocab) -> _Tables:
    key = (id(v.pieces), len(v.pieces), hash(tuple(v.types)), hash(tuple(sorted(v.added_options.items()))))
    if getattr(v, "_tables_key", None) != key:
        v._tables = _Tables(v)
        v._tables_key = key
    return v._tables


def _split(t: _Tables, s: bytes) -> list[tuple[bytes, bool]]:
    """Initial symbols: whole user-defined pieces (frozen), else one UTF-8 character, else one byte."""
    out, i = [], 0
    while i < len(s):
        user = next((u for u in t.user if s.startswith(u, i)), None)
        if user:
            out.append((user, True))
            i += len(user)
            continue
        n = _char_len(s, i) or 1
        out.append((s[i : i + n], False))
        i += n
    return out


def encode(v: Vocab, text: str | bytes, bos: bool = False, eos: bool = False, special: bool = False,
           prefix: bool = True) -> list[int]:
    """Token ids of text, as SentencePiece's BPE encodes it (invalid UTF-8 bytes: byte pieces).
    special: the text of a control piece ("<|im_start|>", "</s>") becomes that piece's id, longest
    match first; for template text only, never for what a user typed. The dummy prefix goes at the
    start of the whole text (prefix=False: not there, the text continues earlier text) and, with
    FLAG_PREFIX_SEGMENTS, after each special or raw-split added token."""
    t = _tables(v)
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    ids = [v.bos_id] if bos and v.bos_id >= 0 else []
    start = 0
    every = bool(v.flags & FLAG_PREFIX_SEGMENTS)  # the dummy prefix after special tokens (prefix: at the start)
    for at, length, i in _control_matches(t, data, special, v.added_options):
        ids += _encode_plain(v, t, data[start:at], prefix if start == 0 else every)
        ids.append(i)
        start = at + length
    ids += _encode_plain(v, t, data[start:], prefix if start == 0 else every)
    if eos and v.eos_id >= 0:
        ids.append(v.eos_id)
    return ids


def _control_matches(t: _Tables, data: bytes, special: bool, options: dict | None = None):
    """(offset, length, id) of control pieces (when `special`) and of raw-split user-defined pieces in
    data, scanning left to right, longest match first. A piece with added-token options takes the white
    space beside it into its span (lstrip, rstrip) or stays text unless it is a whole word (single_word;
    the scan then goes on after it, as tokenizers' matcher does): elk.tokenizer_added."""
    if not special and not t.user_ids:
        return
    from elk import tokenizer_added

    at = floor = 0  # floor: end of the last match (lstrip stops there)
    while at < len(data):
        for n in range(min(t.match_len, len(data) - at), 0, -1):
            i = t.control.get(data[at : at + n]) if special else None
            i = t.user_ids.get(data[at : at + n]) if i is None else i
            if i is None:
                continue
            span = (at, at + n)
            if options and options.get(i):
                span = tokenizer_added.apply(options[i], data, at, at + n, floor)
            if span is None:
                at += n
            else:
                yield span[0], span[1] - span[0], i
                at = floor = span[1]
            break
        else:
            at += 1


def _encode_plain(v: Vocab, t: _Tables, data: bytes, prefix: bool) -> list[int]:
    if v.kind == KIND_BYTE:
        from elk.convert import bytelevel

        out = []
        digits, llama3 = bool(v.flags & FLAG_SPLIT_DIGITS), bool(v.flags & FLAG_LLAMA3_SPLIT)
        for word in bytelevel.pre_tokenize(data, digits, llama3):
            chars = bytelevel.to_chars(word)
            whole = t.mergeable.get(chars.encode()) if v.flags & FLAG_IGNORE_MERGES else None
            if whole is not None and v.types[whole] == NORMAL:  # ignore_merges: the pre-token is a piece
                out.append(whole)
            else:
                out += bytelevel.bpe(v, t.mergeable, chars)
        return out
    syms = _split(t, normalize(v, data, prefix))
    piece = [s for s, _ in syms]
    frozen = [f for _, f in syms]
    tree: list = [s for s in piece]  # leaf bytes, or (id, left tree, right tree) for merged symbols
    prev = list(range(-1, len(syms) - 1))
    nxt = list(range(1, len(syms))) + [-1]
    heap: list = []

    def push(left):
        right = nxt[left]
        if left < 0 or right < 0 or frozen[left] or frozen[right]:
            return
        i = t.mergeable.get(piece[left] + piece[right])
        if i is not None:
            heapq.heappush(heap, (-v.scores[i], left, right, len(piece[left]) + len(piece[right]), i))

    for k in range(len(syms) - 1):
        push(k)
    while heap:
        _, left, right, size, i = heapq.heappop(heap)
        if not piece[left] or not piece[right] or len(piece[left]) + len(piece[right]) != size:
            continue  # stale: one side merged since this pair was queued
        tree[left] = (i, tree[left], tree[right])
        piece[left] += piece[right]
        piece[right] = b""
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        if prev[left] >= 0:
            push(prev[left])
        push(left)
    ids: list[int] = []
    k = 0 if syms else -1
    while k >= 0:
        _emit(v, t, tree[k], ids)
        k = nxt[k]
    return ids


def _emit(v: Vocab, t: _Tables, node, ids: list[int]) -> None:
    if isinstance(node, tuple):
        i, left, right = node
        if v.types[i] == UNUSED:  # SentencePiece resegments unused pieces into what merged them
            _emit(v, t, left, ids)
            _emit(v, t, right, ids)
        else:
            ids.append(i)
        return
    i = t.mergeable.get(node)
    if i is not None:
        ids.append(i)
    elif v.byte_fallback:  # a byte without a <0xXX> piece is <unk>
        ids.extend(i for i in (t.byte_ids.get(b, v.unk_id) for b in node) if i >= 0)
    elif v.unk_id >= 0 and (not ids or ids[-1] != v.unk_id):  # a run of unknown characters is one <unk>
        ids.append(v.unk_id)


def token_bytes(v: Vocab, prev: int, i: int, special: bool = False) -> bytes:
    """Bytes of token i as it appears after token prev (what elk_token_piece returns). Control pieces
    give nothing unless `special`: then their text ("<|im_end|>")."""
    if not 0 <= i < len(v.pieces):
        return b""
    kind = v.types[i]
    if kind == CONTROL:
        return v.pieces[i].encode() if special else b""
    if v.kind == KIND_BYTE:
        from elk.convert import bytelevel

        return (bytelevel.to_bytes(v.pieces[i]) or b"") if kind == NORMAL else v.pieces[i].encode()
    if kind == UNKNOWN:
        return " \u2047 ".encode()  # SentencePiece's default unknown surface
    if kind == BYTE:
        m = _BYTE_PIECE.fullmatch(v.pieces[i])
        return bytes([int(m.group(1), 16)]) if m else b""
    text = v.pieces[i]
    if (prev < 0 or prev == v.bos_id) and v.add_dummy_prefix and text.startswith(SPACE):
        text = text[1:]
    return text.replace(SPACE, " ").encode()


def decode(v: Vocab, ids: list[int], special: bool = False) -> str:
    """Text of ids as `sentencepiece` (or, for a tokenizer.json import, `tokenizers`) decodes them: the
    dummy prefix dropped, byte-fallback runs as text (invalid bytes: U+FFFD), control pieces skipped
    unless `special` (then their text). elk.tokenizer_stream.StreamDecoder gives it id by id."""
    from elk import tokenizer_stream

    return tokenizer_stream.decode(v, ids, special)


def encode_section(v: Vocab) -> bytes:
    """The TOKENIZER section bytes of v (elk.tokenizer_section, which builds on this module)."""
    from elk.tokenizer_section import encode_section as encode
    return encode(v)


def decode_section(b: bytes) -> Vocab:
    """The vocabulary of TOKENIZER section bytes, checked (elk.tokenizer_section)."""
    from elk.tokenizer_section import decode_section as decode
    return decode(b)
