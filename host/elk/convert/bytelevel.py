"""Byte-level BPE helpers (GPT-2 style vocabularies: SmolLM, SmolLM2, StarCoder): GPT-2's byte <-> char
map, the pre-tokenizer (GPT-2's split pattern, optionally with every digit on its own as SmolLM's
`Digits(individual_digits)`), and the Unicode class tables the C pre-tokenizer compiles in
(firmware/src/tokenizer/uclass.h, generated: `python -m elk.convert.bytelevel`).

The pattern is GPT-2's  's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
scanned by hand, the same way firmware/src/tokenizer/bytelevel.c does, so both agree byte for byte;
also Llama 3's pattern (next_split_llama3). Not here: other split patterns (Qwen2), refused at import.
"""

from __future__ import annotations

import heapq
import pathlib
import sys
import unicodedata

from elk import spec

# Unicode White_Space (what \\s matches in the regex engines tokenizers uses)
WHITE_SPACE = frozenset([*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                         0x202F, 0x205F, 0x3000])
CONTRACTIONS = (b"'s", b"'t", b"'re", b"'ve", b"'m", b"'ll", b"'d")


def byte_to_char() -> list[str]:
    """GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes map
    to U+0100.. in byte order, so every byte string is a printable text."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out, extra = [""] * 256, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(0x100 + extra)
            extra += 1
    return out


BYTE_TO_CHAR = byte_to_char()
CHAR_TO_BYTE = {c: b for b, c in enumerate(BYTE_TO_CHAR)}


def to_chars(data: bytes) -> str:
    return "".join(BYTE_TO_CHAR[b] for b in data)


def to_bytes(piece: str) -> bytes | None:
    """Bytes a byte-level piece spells, or None when it has a character outside the map."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in piece)
    except KeyError:
        return None


def merge_ranks(pieces: list, merges: list, where: str) -> tuple[list, list]:
    """Scores (-rank of the merge that made each piece; pieces no merge makes score below all) and
    split lengths (UTF-8 length of that merge's left part, 0 for none) from a merge list in rank order
    ("a b" strings or [a, b] pairs). Refuses a vocabulary without all 256 byte pieces."""
    from elk.tokenizer import TokenizerFormatError

    index: dict = {}
    for i, p in enumerate(pieces):
        index.setdefault(p, i)
    missing = [c for c in BYTE_TO_CHAR if c not in index]
    if missing:
        raise TokenizerFormatError(f"{where}: byte-level vocabulary lacks the byte piece {missing[0]!r} "
                                   f"(byte 0x{CHAR_TO_BYTE[missing[0]]:02x})")
    return rank_merges(index, len(pieces), merges, where)


def rank_merges(index: dict, n: int, merges: list, where) -> tuple[list, list]:
    """Scores and split lengths of n pieces (see merge_ranks) from merges in rank order, with `index`
    mapping a piece's text to its id."""
    from elk.tokenizer import TokenizerFormatError

    scores = [-float(len(merges) + i) for i in range(n)]  # pieces no merge makes: below every merge
    splits = [0] * n
    for rank, merge in enumerate(merges):
        try:
            a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
            i = index.get(a + b)
        except (TypeError, ValueError):
            raise TokenizerFormatError(f"{where}: merge {rank} is {merge!r}, not a pair") from None
        if i is not None and scores[i] < -rank:
            scores[i] = -float(rank)
            splits[i] = len(a.encode())
    return scores, splits


def _ranges(pred) -> list[tuple[int, int]]:
    out, start = [], None
    for cp in range(0x110000):
        ok = pred(cp)
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, 0x10FFFF))
    return out


def letter_ranges():
    return _ranges(lambda cp: unicodedata.category(chr(cp))[0] == "L")


def number_ranges():
    return _ranges(lambda cp: unicodedata.category(chr(cp))[0] == "N")


# ---------------------------------------------------------------------------------------------
# Pre-tokenizer (reference of bytelevel.c)

OTHER, LETTER, NUMBER, SPACE = 0, 1, 2, 3


def _char_at(data: bytes, i: int) -> tuple[int, int]:
    """(code point, length) of the UTF-8 character at data[i]; an invalid byte is (-1, 1)."""
    from elk.tokenizer import _char_len

    n = _char_len(data, i)
    if n == 0:
        return -1, 1
    return ord(data[i : i + n].decode("utf-8")), n


def char_class(cp: int) -> int:
    if cp < 0:
        return OTHER
    if cp in WHITE_SPACE:
        return SPACE
    cat = unicodedata.category(chr(cp))[0]
    return LETTER if cat == "L" else NUMBER if cat == "N" else OTHER


def _run(data: bytes, i: int, cls: int) -> int:
    """End of the run of characters of class cls starting at i."""
    while i < len(data):
        cp, n = _char_at(data, i)
        if char_class(cp) != cls:
            break
        i += n
    return i


def next_split(data: bytes, i: int) -> int:
    """End of GPT-2's pre-token that starts at data[i] (i < len(data))."""
    for c in CONTRACTIONS:
        if data.startswith(c, i):
            return i + len(c)
    cp, n = _char_at(data, i)
    cls = char_class(cp)
    if cp == 0x20 and i + 1 < len(data):  # " ?" before a letter / number / other run
        cp2, n2 = _char_at(data, i + 1)
        cls2 = char_class(cp2)
        if cls2 != SPACE:
            return _run(data, i + 1, cls2)
    if cls != SPACE:
        return _run(data, i, cls)
    return _space_end(data, i, _run(data, i, SPACE))


def _space_end(data: bytes, i: int, end: int) -> int:
    """\\s+(?!\\S)|\\s+ over the white-space run data[i:end): all of it at the end of the text, else
    the run without its last character (that one goes with the next token) when that leaves any."""
    if end == len(data):
        return end
    last = j = i
    while j < end:
        last = j
        j += _char_at(data, j)[1]
    return last if last > i else end


LLAMA3_CONTRACTIONS = (b"s", b"t", b"re", b"ve", b"m", b"ll", b"d")


def _llama3_contraction(data: bytes, i: int) -> int:
    """Length of (?i:'s|'t|'re|'ve|'m|'ll|'d) at data[i], or 0. Unicode case folding makes U+017F
    (long s) an 's' too, as the regex engine of tokenizers sees it."""
    if data[i : i + 1] != b"'":
        return 0
    if data.startswith("\u017f".encode(), i + 1):
        return 3
    rest = data[i + 1 : i + 3].lower()  # ASCII case only: no other letter folds to these
    for c in LLAMA3_CONTRACTIONS:
        if rest.startswith(c):
            return 1 + len(c)
    return 0


def next_split_llama3(data: bytes, i: int) -> int:
    """End of Llama 3's pre-token that starts at data[i] (i < len(data)): the first alternative of
    (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|
    \\s*[\\r\\n]+|\\s+(?!\\S)|\\s+ that matches there."""
    c = _llama3_contraction(data, i)
    if c:
        return i + c
    cp, n = _char_at(data, i)
    cls = char_class(cp)
    cp2, n2 = _char_at(data, i + n) if i + n < len(data) else (-2, 0)
    cls2 = char_class(cp2) if cp2 != -2 else None
    if cls == LETTER:
        return _run(data, i, LETTER)
    if cls2 == LETTER and cls != NUMBER and cp not in (0x0A, 0x0D):  # one non-letter prefix
        return _run(data, i + n, LETTER)
    if cls == NUMBER:
        j = i
        for _ in range(3):
            if j < len(data) and char_class(_char_at(data, j)[0]) == NUMBER:
                j += _char_at(data, j)[1]
        return j
    start = i + n if cp == 0x20 and cls2 == OTHER else i  # " ?" before a run of other characters
    if char_class(_char_at(data, start)[0]) == OTHER:
        j = _run(data, start, OTHER)
        while j < len(data) and data[j] in b"\r\n":
            j += 1
        return j
    end = _run(data, i, SPACE)
    last_nl, j = -1, i  # \\s*[\\r\\n]+: up to the run's last newline
    while j < end:
        if data[j] in b"\r\n":
            last_nl = j
        j += _char_at(data, j)[1]
    if last_nl >= 0:
        return last_nl + 1
    return _space_end(data, i, end)


def pre_tokenize(data: bytes, split_digits: bool, llama3: bool = False) -> list[bytes]:
    """The pre-tokens of data: with split_digits every number character is one first (SmolLM); llama3
    picks Llama 3's split pattern instead of GPT-2's."""
    out = []
    step = next_split_llama3 if llama3 else next_split
    for seg in _digit_segments(data) if split_digits else [data]:
        i = 0
        while i < len(seg):
            j = step(seg, i)
            out.append(seg[i:j])
            i = j
    return out


def _digit_segments(data: bytes) -> list[bytes]:
    out, start, i = [], 0, 0
    while i < len(data):
        cp, n = _char_at(data, i)
        if char_class(cp) == NUMBER:
            if start < i:
                out.append(data[start:i])
            out.append(data[i : i + n])
            start = i + n
        i += n
    if start < len(data):
        out.append(data[start:])
    return out


# ---------------------------------------------------------------------------------------------
# Merging and GGUF import


def bpe(v, mergeable: dict, word: str) -> list[int]:
    """Hugging Face BPE over one pre-token spelled in GPT-2's byte chars: the pair (a, b) merges only
    when a + b is a piece made by exactly that merge (its split is len(a)), lowest rank first, then
    leftmost. Characters without a piece are dropped (the importer requires all 256)."""
    piece = [c.encode() for c in word]
    nxt = list(range(1, len(piece))) + [-1]
    prev = list(range(-1, len(piece) - 1))
    heap: list = []

    def push(left):
        right = nxt[left] if left >= 0 else -1
        if right < 0:
            return
        i = mergeable.get(piece[left] + piece[right])
        if i is not None and v.types[i] == spec.TOKEN_TYPES["NORMAL"] and v.splits[i] == len(piece[left]):
            heapq.heappush(heap, (-v.scores[i], left, len(piece[left]) + len(piece[right])))

    for k in range(len(piece) - 1):
        push(k)
    while heap:
        _, left, size = heapq.heappop(heap)
        right = nxt[left]
        if not piece[left] or right < 0 or len(piece[left]) + len(piece[right]) != size:
            continue
        piece[left] += piece[right]
        piece[right] = b""
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        push(prev[left])
        push(left)
    return [i for i in (mergeable.get(p) for p in piece if p) if i is not None]


def from_gguf(get):
    """A GGUF "gpt2" vocabulary (`get` reads a tokenizer.ggml.* field): byte-spelled tokens, merges in
    rank order, token types, special ids; pre "gpt-2", "smollm", "starcoder" or "llama-bpe"."""
    from elk.tokenizer import (CONTROL, FLAG_IGNORE_MERGES, FLAG_LLAMA3_SPLIT, FLAG_SPLIT_DIGITS, KIND_BYTE,
                               MAX_TOKENS, NORMAL, USER_DEFINED, TokenizerFormatError, Vocab, add_turn_end_stops)

    gguf_pre = {"gpt-2": 0, "smollm": FLAG_SPLIT_DIGITS, "starcoder": FLAG_SPLIT_DIGITS,
                "llama-bpe": FLAG_LLAMA3_SPLIT | FLAG_IGNORE_MERGES}
    # llama.cpp's tokenizer.ggml.pre names of GPT-2's split pattern (alone, or after isolating digits)
    # and of Llama 3's, which llama.cpp runs with ignore_merges as tokenizers does
    pre = get("tokenizer.ggml.pre", "gpt-2")
    if pre not in gguf_pre:
        raise TokenizerFormatError(f"GGUF byte-level pre-tokenizer {pre!r} is not supported (elk runs "
                                   f"{', '.join(gguf_pre)})")
    pieces = list(get("tokenizer.ggml.tokens") or [])
    merges = list(get("tokenizer.ggml.merges") or [])
    if not pieces or not merges:
        raise TokenizerFormatError("GGUF gpt2 tokenizer has no tokenizer.ggml.tokens or tokenizer.ggml.merges")
    n = len(pieces)
    types = [int(t) for t in get("tokenizer.ggml.token_type", [NORMAL] * n)]
    if len(types) != n or len(pieces) > MAX_TOKENS:
        raise TokenizerFormatError("GGUF tokenizer arrays differ in length")
    types = [t if t in (CONTROL, USER_DEFINED) else NORMAL for t in types]
    scores, splits = merge_ranks(pieces, merges, "GGUF tokenizer.ggml.merges")

    def special(key):
        v = get(key)
        return int(v) if v is not None and 0 <= int(v) < n else -1

    v = Vocab(pieces, scores, types, bos_id=special("tokenizer.ggml.bos_token_id") if get(
        "tokenizer.ggml.add_bos_token", False) else -1, eos_id=special("tokenizer.ggml.eos_token_id"), unk_id=-1,
        pad_id=special("tokenizer.ggml.padding_token_id"), flags=gguf_pre[pre], kind=KIND_BYTE,
        splits=splits, chat_template=get("tokenizer.chat_template"))
    v.stop_ids = [i for i in (special("tokenizer.ggml.eos_token_id"), special("tokenizer.ggml.eot_token_id"),
                              special("tokenizer.ggml.eom_token_id")) if i >= 0]
    add_turn_end_stops(v)
    return v


# ---------------------------------------------------------------------------------------------
# The C tables


def c_header() -> str:
    def table(name, ranges):
        rows = [f"    {{ 0x{a:X}u, 0x{b:X}u }}," for a, b in ranges]
        return [f"static const uint32_t {name}[][2] = {{", *rows, "};"]

    out = ["/* Generated by `python -m elk.convert.bytelevel` from Python's unicodedata "
           f"{unicodedata.unidata_version}: do not edit.",
           " * Code point ranges of the Unicode letters (\\p{L}) and numbers (\\p{N}) for the byte-level",
           " * pre-tokenizer (bytelevel.c). Not here: the pattern itself. */",
           "#ifndef ELK_TOKENIZER_UCLASS_H", "#define ELK_TOKENIZER_UCLASS_H", "", "#include <stdint.h>", ""]
    out += table("elk_uclass_letters", letter_ranges()) + [""]
    out += table("elk_uclass_numbers", number_ranges()) + ["", "#endif", ""]
    return "\n".join(out)


HEADER = pathlib.Path(__file__).resolve().parents[3] / "firmware" / "src" / "tokenizer" / "uclass.h"


def main() -> int:
    HEADER.write_text(c_header())
    print(f"wrote {HEADER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
