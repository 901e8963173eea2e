"""Decoding a token sequence one id at a time (generation output) so that the text streamed so far always
concatenates to the decode of the whole sequence: the Python reference of elk_token_stream_*
(firmware/src/tokenizer/stream.c); elk.tokenizer.decode runs on it. Not here: encoding.

Two rule sets, as the two independent decoders behave (docs/tokenizer.md, "Streaming decode"):
- SentencePiece (`sentencepiece`'s decode; images from tokenizer.model, GGUF, llama2.c): the leading
  "▁" of the first piece that is not a control piece is the dummy prefix and is dropped (only there;
  a byte piece or <unk> first keeps everything); an invalid byte of a byte-fallback run becomes one
  U+FFFD, the valid characters around it stay.
- tokenizers (Hugging Face's decoder ByteFallback, Fuse, Strip(" ", 1); images from a SentencePiece-style
  tokenizer.json, which all carry one of the TOKENIZER flags bits 7-9): special tokens are skipped
  first, then one leading space of the whole text is dropped, wherever it came from (a byte piece
  <0x20> too); a run of byte pieces that is not valid UTF-8 as a whole becomes one U+FFFD per byte.
Byte-level (kind 2) vocabularies map each piece back to its bytes; invalid UTF-8 becomes U+FFFD per
maximal invalid subsequence (tokenizers' ByteLevel decoder, Python's "replace")."""

from __future__ import annotations

from elk import tokenizer as T

HF_FLAGS = T.FLAG_PREFIX_SEGMENTS | T.FLAG_PREFIX_UNLESS_SPACE | T.FLAG_USER_SPLIT_RAW
REPLACEMENT = "\ufffd"


def hf_rules(v: T.Vocab) -> bool:
    """True when v decodes as tokenizers does (a SentencePiece-style tokenizer.json import)."""
    return v.kind == T.KIND_SPM and bool(v.flags & HF_FLAGS)


def spm_bytes_text(run: bytes) -> str:
    """SentencePiece's text of a byte-fallback run: valid characters kept, each other byte U+FFFD."""
    out, i = [], 0
    while i < len(run):
        n = T._char_len(run, i)
        out.append(run[i : i + n].decode("utf-8") if n else REPLACEMENT)
        i += n or 1
    return "".join(out)


class StreamDecoder:
    """feed(id) -> the text that id completes (possibly ""), end() -> what is still held. A byte-fallback
    run is held until the piece after it (or end), so a character split across byte pieces comes out
    whole, and a run tokenizers would replace as a whole is replaced as a whole."""

    def __init__(self, v: T.Vocab, special: bool = False):
        import codecs

        self.v, self.special, self.hf = v, special, hf_rules(v)
        self.run = bytearray()   # byte pieces not yet turned into text
        self.started = False     # some text (SentencePiece: a piece that is not a control piece) came
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")  # byte-level pieces

    def feed(self, i: int) -> str:
        v = self.v
        if not 0 <= i < len(v.pieces):
            return ""
        kind = v.types[i]
        if v.kind == T.KIND_BYTE:
            return self.utf8.decode(T.token_bytes(v, -1, i, self.special))
        if kind == T.CONTROL and not self.special:
            # tokenizers skips it before decoding (a byte run goes on across it); SentencePiece ends the run
            return "" if self.hf else self._flush()
        if kind == T.BYTE:
            self.run += T.token_bytes(v, -1, i)
            self.started = self.started or not self.hf
            return ""
        text = self._flush()
        piece = T.token_bytes(v, len(v), i, self.special).decode("utf-8")  # len(v): a "previous" that is not BOS
        if self.hf:
            return self._emit(text + piece)
        if not self.started and kind in (T.NORMAL, T.USER_DEFINED, T.UNUSED) and v.add_dummy_prefix \
                and piece.startswith(" "):
            piece = piece[1:]  # SentencePiece's dummy prefix: the first piece's leading "▁" only
        self.started = self.started or kind != T.CONTROL or bool(piece)
        return text + piece

    def end(self) -> str:
        if self.v.kind == T.KIND_BYTE:
            return self.utf8.decode(b"", final=True)
        return self._emit(self._flush()) if self.hf else self._flush()

    def _emit(self, text: str) -> str:
        """tokenizers: Strip drops one leading space of the whole decoded text."""
        if text and not self.started:
            self.started = True
            if text.startswith(" ") and self.v.add_dummy_prefix:
                text = text[1:]
        return text

    def _flush(self) -> str:
        run, self.run = bytes(self.run), bytearray()
        if not run:
            return ""
        if not self.hf:
            return spm_bytes_text(run)
        try:
            return run.decode("utf-8")
        except UnicodeDecodeError:
            return REPLACEMENT * len(run)


def decode(v: T.Vocab, ids, special: bool = False) -> str:
    """Text of ids: the concatenation of a StreamDecoder's output."""
    d = StreamDecoder(v, special)
    return "".join(d.feed(int(i)) for i in ids) + d.end()
