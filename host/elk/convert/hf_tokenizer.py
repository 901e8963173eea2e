"""Hugging Face tokenizer files as an elk vocabulary: tokenizer.json of a Llama-style SentencePiece BPE
or of a byte-level BPE (TOKENIZER kind 2: GPT-2's split pattern as SmolLM, SmolLM2; Llama 3's; other
split patterns such as Qwen2's are refused in one line), and the facts a HF folder keeps beside its
tokenizer: added (special) tokens, bos/eos/pad (BOS also from a post-processor template), stop ids from
generation_config.json, the chat template (docs/tokenizer.md). Not here: the byte-level split and merges (elk.convert.bytelevel), the section bytes or the encoder
(elk.tokenizer)."""

from __future__ import annotations

import dataclasses
import json
import pathlib

from elk import spec
from elk.convert import bytelevel
from elk.tokenizer import (BYTE, CONTROL, SPACE, FLAG_ADD_DUMMY_PREFIX, FLAG_BYTE_FALLBACK, FLAG_IGNORE_MERGES,
                           FLAG_LLAMA3_SPLIT, FLAG_PREFIX_SEGMENTS, FLAG_PREFIX_UNLESS_SPACE, FLAG_SPLIT_DIGITS,
                           FLAG_USER_SPLIT_RAW, KIND_BYTE,
                           MAX_TOKENS, NORMAL, UNKNOWN, USER_DEFINED, TokenizerFormatError, Vocab, _infer_type,
                           add_turn_end_stops)


# What a damaged JSON document raises where a field has the wrong type or is missing
_SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def read_tokenizer_json(path) -> Vocab:
    """Hugging Face tokenizer.json of a Llama-style SentencePiece BPE (byte fallback, "▁" spaces) or of a
    GPT-2 style byte-level BPE. Scores come from the merge order: the piece made by merge rank r scores
    -r, so the higher-priority merge wins as in HF. Then apply_specials on the file's folder. A field of
    the wrong shape is one TokenizerFormatError line."""
    path = pathlib.Path(path)
    try:
        v = _read_tokenizer_json(path)
    except _SHAPE_ERRORS as e:
        raise TokenizerFormatError(f"{path}: malformed tokenizer.json ({type(e).__name__}: {str(e)[:120]})") from None
    return apply_specials(v, path.parent, added=False)


def _read_tokenizer_json(path: pathlib.Path) -> Vocab:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        model = doc["model"]
        vocab_map = model["vocab"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TokenizerFormatError(f"{path}: not a tokenizers JSON file ({e})") from None
    if model.get("type") != "BPE" or not isinstance(vocab_map, dict):
        raise TokenizerFormatError(f"{path}: tokenizer model is {model.get('type')!r}, elk needs SentencePiece BPE")
    byte_level = '"ByteLevel"' in json.dumps(doc.get("pre_tokenizer")) + json.dumps(doc.get("decoder"))
    kind_flags = _byte_level_flags(path, doc, model) if byte_level else None
    added_list = [(t["id"], str(t["content"]), bool(t.get("special"))) for t in doc.get("added_tokens") or []]
    # a negative id would index the piece list from its end and silently replace another piece
    for where, entries in (("the vocab", vocab_map.items()), ("added_tokens", ((c, i) for i, c, _ in added_list))):
        bad = next(((piece, i) for piece, i in entries if isinstance(i, int) and i < 0), None)
        if bad:
            raise TokenizerFormatError(f"{path}: token {bad[0]!r} has id {bad[1]} in {where}; ids must be 0 or more")
    n = max(list(vocab_map.values()) + [i for i, _, _ in added_list]) + 1
    if n > MAX_TOKENS:
        raise TokenizerFormatError(f"{path}: {n} tokens is too many")
    pieces: list[str | None] = [None] * n
    for piece, i in vocab_map.items():
        if pieces[i] is not None:  # tokenizers keeps one of the two at random (a hash map): ambiguous
            raise TokenizerFormatError(f"{path}: the vocab gives id {i} to both {pieces[i]!r} and {piece!r}")
        pieces[i] = piece
    added = check_added_ids(path, pieces, added_list)
    in_normalized = not byte_level and _spm_normalizer(path, doc) and not _user_split_flag(path, doc)
    # with the legacy normalizer, tokens marked normalized: false are split off the raw text even when
    # others are matched in the normalized text (then each carries the RAW option)
    raw_ids = {t["id"] for t in doc.get("added_tokens") or [] if t.get("normalized", True) is False} \
        if in_normalized else set()
    for i, (text, special, alias) in added.items():
        pieces[i] = text if alias is None or not special else ""
        if in_normalized and not special and i not in raw_ids:  # matched (spelled, decoded) as normalized
            pieces[i] = SPACE + text.replace(" ", SPACE)
    if any(p is None for p in pieces):
        raise TokenizerFormatError(f"{path}: token ids are not contiguous")
    options = _added_options(path, doc.get("added_tokens") or [], added, in_normalized, raw_ids)
    scores, splits = bytelevel.rank_merges(vocab_map, n, model.get("merges") or [], path)
    types = [_infer_type(p) for p in pieces] if not byte_level else [NORMAL] * n
    unk = model.get("unk_token")
    unk_id = vocab_map.get(unk, -1) if unk else -1
    for i, (text, special, alias) in added.items():
        types[i] = CONTROL if special else USER_DEFINED
        if alias is not None and special:  # tokenizers: the vocabulary's id is the special token
            _make_special(path, types, alias, text, byte_level)
    if unk_id >= 0:
        types[unk_id] = UNKNOWN
    flags = FLAG_BYTE_FALLBACK if model.get("byte_fallback") else 0
    flags |= _hf_prefix_flags(path, doc) | _user_split_flag(path, doc)
    index = {p: i for i, p in enumerate(pieces)}
    v = Vocab(pieces, scores, types, bos_id=index.get("<s>", -1), eos_id=index.get("</s>", -1), unk_id=unk_id,
              pad_id=-1, flags=flags, added_options=options)
    if byte_level:
        missing = [c for c in bytelevel.BYTE_TO_CHAR if c not in vocab_map]
        if missing:
            raise TokenizerFormatError(f"{path}: byte-level vocabulary lacks the byte piece {missing[0]!r} "
                                       f"(byte 0x{bytelevel.CHAR_TO_BYTE[missing[0]]:02x})")
        v.kind, v.flags, v.splits, v.unk_id = KIND_BYTE, kind_flags, splits, -1
        v.eos_id = index.get("<|endoftext|>", -1)  # GPT-2's end of text, unless the config names another
        if unk_id >= 0:
            v.types[unk_id] = NORMAL
    return v


def _added_options(path, tokens: list, added: dict, in_normalized: bool, raw_ids=frozenset()) -> dict:
    """id -> lstrip / rstrip / single_word bits (elk.tokenizer_added) of the added tokens that have any.
    elk applies them where it matches a token whole in the raw text, as tokenizers does: special tokens,
    and non-special ones unless the legacy normalizer matches them in the normalized text (refused in one
    line then, as is a token spelled like a vocabulary piece at another id: its matches carry that id)."""
    from elk import tokenizer_added

    out = {}
    for t in tokens:
        bits = tokenizer_added.options_of(t) if isinstance(t, dict) else 0
        i = t["id"]
        text, special, alias = added[i]
        if i in raw_ids and not special:
            if alias is not None:
                raise TokenizerFormatError(f"{path}: added token {text!r} (normalized: false) is spelled like "
                                           f"vocabulary piece {alias}; elk splits off the raw text added ids only")
            bits |= tokenizer_added.RAW
            if bits == tokenizer_added.RAW:
                out[i] = bits
                continue
        if not bits:
            continue
        names = [k for k in ("lstrip", "rstrip", "single_word") if t.get(k)]
        if alias is not None:
            raise TokenizerFormatError(f"{path}: added token {text!r} has {names[0]}: true and is spelled like vocabulary "
                                       f"piece {alias}; elk applies added-token options to added ids only")
        if in_normalized and not special and i not in raw_ids:
            raise TokenizerFormatError(f"{path}: added token {text!r} has {names[0]}: true and is matched in the "
                                       f"normalized text (normalized: true); elk applies added-token options to "
                                       f"tokens matched in the raw text")
        out[i] = bits
    return out


def check_no_strip(where, tokens) -> None:
    """Added tokens read beside a tokenizer.model (the folder's tokenizer.json): the options of special
    ones are kept (_special_options); a non-special one is matched in the SentencePiece-normalized text,
    where elk applies no options, so one with any is refused in one line rather than matched differently."""
    for t in tokens:
        on = [k for k in ("lstrip", "rstrip", "single_word") if isinstance(t, dict) and t.get(k)]
        if on and not t.get("special"):
            raise TokenizerFormatError(f"{where}: added token {t.get('content')!r} has {on[0]}: true; elk matches "
                                       f"added tokens by their text alone")


def check_added_ids(where, pieces: list, added: list) -> dict:
    """The added tokens [(declared id, text, special), ...] of a tokenizer.json, in file order, on a
    vocabulary `pieces` (id -> piece; None for ids the vocabulary does not use), as the `tokenizers`
    library numbers them: a token spelled like a vocabulary piece takes that piece's id, every other
    one the next id after the vocabulary and the added tokens before it. Returns declared id ->
    (text, special, alias): alias is the vocabulary id of a token spelled like a vocabulary piece at
    another id (tokenizers' id for it), else None. A file whose declared ids tokenizers would not
    keep (two tokens on one id, a token on another piece's id, a token listed twice, ids out of
    order) is refused in one line: the model's rows follow one numbering, and the two disagree."""
    index = {p: i for i, p in enumerate(pieces) if p is not None}
    n_vocab = len(index)
    out: dict = {}
    first: dict = {}  # text -> declared id of the first added token so spelled
    top = -1  # largest id tokenizers has given an added token so far
    for i, text, special in added:
        if i in out:
            raise TokenizerFormatError(f"{where}: added tokens {out[i][0]!r} and {text!r} both have id {i}")
        if text in first:
            raise TokenizerFormatError(f"{where}: added_tokens lists {text!r} twice (ids {first[text]} and {i})")
        if i < len(pieces) and pieces[i] is not None and pieces[i] != text:
            raise TokenizerFormatError(f"{where}: added token {text!r} has id {i}, which the vocab gives to "
                                       f"{pieces[i]!r}")
        alias = index.get(text)
        given = alias if alias is not None else (top + 1 if top >= n_vocab else n_vocab)
        if alias is None and given != i:
            raise TokenizerFormatError(f"{where}: added token {text!r} has id {i}, but tokenizers numbers it {given} "
                                       f"(in file order, each new added token takes the next id after the vocab's {n_vocab} "
                                       f"pieces and the added tokens before it)")
        top = max(top, given)
        first[text] = i
        out[i] = (text, special, alias if alias is not None and alias != i else None)
    return out


def _make_special(where, types: list, i: int, text: str, byte_level: bool) -> None:
    """A special added token spelled like vocabulary piece i: tokenizers gives the token id i (and
    skips i when decoding), so piece i becomes the control piece; the added token's own row, which
    tokenizers never produces, is an empty control piece."""
    if types[i] == BYTE and not byte_level:
        raise TokenizerFormatError(f"{where}: special token {text!r} is the byte piece {i}; elk cannot use one id "
                                   f"as both")
    if types[i] != UNKNOWN:
        types[i] = CONTROL


def _byte_level_flags(path, doc: dict, model: dict) -> int:
    """TOKENIZER flags for a GPT-2 style byte-level tokenizer.json, or a one-line refusal of a variant the
    runtime does not implement (another split pattern, a normalizer, a prefix space, ...)."""
    bl = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}

    def is_gpt2(p):
        return isinstance(p, dict) and all(p.get(k, True if k == "use_regex" else False) == v for k, v in bl.items())

    pre = doc.get("pre_tokenizer")
    pres = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    if isinstance(pres, list) and len(pres) == 1 and is_gpt2(pres[0]):
        flags = 0
    elif (isinstance(pres, list) and len(pres) == 2 and isinstance(pres[0], dict) and pres[0].get("type") == "Digits"
          and pres[0].get("individual_digits") and is_gpt2(pres[1])):
        flags = FLAG_SPLIT_DIGITS
    elif isinstance(pres, list) and len(pres) == 2 and _is_llama3_split(pres[0]) and _is_bytes_only(pres[1]):
        flags = FLAG_LLAMA3_SPLIT
    else:
        raise TokenizerFormatError(f"{path}: byte-level pre-tokenizer {json.dumps(pre)[:160]} is not supported "
                                   f"(elk runs GPT-2's split pattern, optionally after Digits(individual_digits), "
                                   f"and Llama 3's; other patterns such as Qwen2's are not)")
    if model.get("ignore_merges"):  # Llama 3: a pre-token that is a vocabulary piece is not merged
        flags |= FLAG_IGNORE_MERGES
    problems = [("normalizer", doc.get("normalizer") is not None),
                ("byte_fallback", bool(model.get("byte_fallback"))),
                ("continuing_subword_prefix", bool(model.get("continuing_subword_prefix"))),
                ("end_of_word_suffix", bool(model.get("end_of_word_suffix")))]
    bad = [name for name, on in problems if on]
    if bad:
        raise TokenizerFormatError(f"{path}: byte-level BPE with {bad[0]} is not supported")
    return flags


# Llama 3's split pattern as its tokenizer.json spells it (tokenizers' Split pre-tokenizer)
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")


def _is_llama3_split(p) -> bool:
    """Split(Regex(LLAMA3_PATTERN)) keeping every match as a pre-token: behavior Isolated, or Removed
    with invert (the pattern matches at every position, so both keep exactly the matches)."""
    if not isinstance(p, dict) or p.get("type") != "Split" or p.get("pattern") != {"Regex": LLAMA3_PATTERN}:
        return False
    return (p.get("behavior"), bool(p.get("invert"))) in (("Isolated", False), ("Removed", True))


def _is_bytes_only(p) -> bool:
    """ByteLevel that only maps bytes to characters (use_regex false, no prefix space)."""
    return (isinstance(p, dict) and p.get("type") == "ByteLevel" and p.get("use_regex") is False
            and not p.get("add_prefix_space"))


def _hf_added_tokens(folder: pathlib.Path, pieces: list) -> dict:
    """id -> (content, special) of the tokens a HF tokenizer adds to its model's vocabulary `pieces`:
    from tokenizer.json's added_tokens (checked as tokenizers numbers them: check_added_ids; a token
    spelled like a special vocabulary piece at another id is left out: _apply_specials), else
    tokenizer_config.json's added_tokens_decoder, else added_tokens.json (special when listed as a
    special token in tokenizer_config.json)."""
    doc = _read_json(folder / "tokenizer.json")
    if isinstance(doc, dict) and isinstance(doc.get("added_tokens"), list):
        check_no_strip(folder / "tokenizer.json", doc["added_tokens"])
        try:
            listed = [(int(t["id"]), str(t["content"]), bool(t.get("special"))) for t in doc["added_tokens"]]
        except (KeyError, TypeError, ValueError) as e:
            raise TokenizerFormatError(f"{folder / 'tokenizer.json'}: bad added_tokens entry ({e})") from None
        bad = next(((c, i) for i, c, _ in listed if i < 0), None)
        if bad:
            raise TokenizerFormatError(f"{folder / 'tokenizer.json'}: token {bad[0]!r} has id {bad[1]} in "
                                       f"added_tokens; ids must be 0 or more")
        return {i: (text, special, alias) for i, (text, special, alias)
                in check_added_ids(folder / "tokenizer.json", pieces, listed).items()}
    cfg = _read_json(folder / "tokenizer_config.json")
    cfg = cfg if isinstance(cfg, dict) else {}
    dec = cfg.get("added_tokens_decoder")
    try:
        if isinstance(dec, dict) and dec:
            return {int(i): (str(t["content"]), bool(t.get("special")), None) for i, t in dec.items()}
        extra = _read_json(folder / "added_tokens.json")
        if isinstance(extra, dict):
            named = {_content(cfg.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
            named |= {_content(t) for t in cfg.get("additional_special_tokens") or []}
            return {int(i): (str(c), c in named, None) for c, i in extra.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise TokenizerFormatError(f"{folder}: bad added-token list ({e})") from None
    return {}


def _special_options(folder: pathlib.Path) -> dict:
    """declared id -> option bits of the special tokens in the folder's tokenizer.json added_tokens."""
    from elk import tokenizer_added

    doc = _read_json(folder / "tokenizer.json")
    tokens = doc.get("added_tokens") if isinstance(doc, dict) else None
    return {t["id"]: tokenizer_added.options_of(t) for t in tokens or []
            if isinstance(t, dict) and t.get("special") and isinstance(t.get("id"), int) and tokenizer_added.options_of(t)}


def _content(value):
    return value.get("content") if isinstance(value, dict) else value


def _read_json(path: pathlib.Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise TokenizerFormatError(f"{path}: not JSON ({e})") from None


def _eos_list(value) -> list[int]:
    """generation_config.json's eos_token_id: an int, a list of ints, or absent."""
    items = value if isinstance(value, list) else [value]
    return [int(i) for i in items if isinstance(i, int) and not isinstance(i, bool)]


def apply_specials(v: Vocab, folder, added: bool = True, chat_template: str | None = None) -> Vocab:
    """_apply_specials; a config value of the wrong shape is one TokenizerFormatError line."""
    try:
        return _apply_specials(v, folder, added, chat_template)
    except _SHAPE_ERRORS as e:
        raise TokenizerFormatError(f"{folder}: malformed tokenizer config ({type(e).__name__}: "
                                   f"{str(e)[:120]})") from None


def _apply_specials(v: Vocab, folder, added: bool, chat_template: str | None) -> Vocab:
    """The special-token facts of a Hugging Face tokenizer folder applied to a vocabulary read from its
    tokenizer.model or tokenizer.json:
    - added tokens (when `added`: tokenizer.json / tokenizer_config / added_tokens.json) with their real
      text: special ones become CONTROL pieces, the others USER_DEFINED (matched whole in text);
    - bos / eos / pad from tokenizer_config.json (token text -> id);
    - stop ids: generation_config.json's eos_token_id (int or list), then tokenizer_config's eos, then
      the tokenizer's own eos, plus a turn-end marker (<|im_end|>, <|eot_id|>) the chat template uses;
    - the chat template text (tokenizer_config.json, else chat_template.jinja; or `chat_template`)."""
    folder = pathlib.Path(folder)
    options = _special_options(folder) if added else {}
    v = dataclasses.replace(v, pieces=list(v.pieces), scores=list(v.scores), types=list(v.types),
                            added_options=dict(v.added_options),
                            stop_ids=list(v.stop_ids), splits=None if v.splits is None else list(v.splits))
    if added:
        for i, (text, special, alias) in sorted(_hf_added_tokens(folder, v.pieces).items()):
            if not 0 <= i < MAX_TOKENS:
                raise TokenizerFormatError(f"{folder}: added token {text!r} has id {i}")
            if alias is not None and special:  # tokenizers' id for it is the vocabulary piece's
                _make_special(folder / "tokenizer.json", v.types, alias, text, v.kind == KIND_BYTE)
                text = ""  # its own row: never produced, decodes to nothing (tokenizers has no such id)
            while len(v.pieces) < i:  # a gap: never produced by text, as padding rows are
                v.pieces.append(f"<pad_{len(v.pieces)}>")
                v.scores.append(0.0)
                v.types.append(CONTROL)
            if i == len(v.pieces):
                v.pieces.append(text)
                v.scores.append(0.0)
                v.types.append(CONTROL)
            if v.splits is not None:
                v.splits += [0] * (len(v.pieces) - len(v.splits))
                v.splits[i] = 0
            v.pieces[i] = text
            if v.types[i] not in (UNKNOWN,):
                v.types[i] = CONTROL if special else USER_DEFINED
            if options.get(i) and special:  # tokenizer.json's lstrip / rstrip / single_word of a special token
                if alias is not None or not text:
                    raise TokenizerFormatError(f"{folder / 'tokenizer.json'}: added token {text or v.pieces[alias]!r} "
                                               f"has options and is spelled like vocabulary piece {alias}; elk "
                                               f"applies added-token options to added ids only")
                v.added_options[i] = options[i]
    cfg = _hf_config(folder / "tokenizer_config.json")
    index: dict = {}
    for i, p in enumerate(v.pieces):
        index.setdefault(p, i)
    for key, attr in (("bos_token", "bos_id"), ("eos_token", "eos_id"), ("pad_token", "pad_id")):
        if isinstance(cfg.get(key), str) and cfg[key] in index:
            setattr(v, attr, index[cfg[key]])
    raw_cfg = _read_json(folder / "tokenizer_config.json")
    add_bos = raw_cfg.get("add_bos_token") if isinstance(raw_cfg, dict) else None
    if v.kind == KIND_BYTE and add_bos is not True:
        # GPT-2 style tokenizers add no BOS (bos_token is a name only) unless configured to; Llama 3's
        # tokenizer.json adds <|begin_of_text|> in its post-processor instead
        bos_text = _post_processor_bos(folder) if add_bos is None else None
        v.bos_id = index.get(bos_text, -1) if bos_text is not None else -1
    gen = _read_json(folder / "generation_config.json")
    gen_eos = [i for i in _eos_list(gen.get("eos_token_id")) if 0 <= i < len(v.pieces)] \
        if isinstance(gen, dict) else []
    if not (isinstance(cfg.get("eos_token"), str) and cfg["eos_token"] in index) and gen_eos:
        v.eos_id = gen_eos[0]
    template = chat_template or cfg.get("chat_template")
    if not isinstance(template, str) and (folder / "chat_template.jinja").is_file():
        try:
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise TokenizerFormatError(f"{folder / 'chat_template.jinja'}: cannot read ({e})") from None
    v.chat_template = template if isinstance(template, str) else v.chat_template
    stops = gen_eos + [v.eos_id] + list(v.stop_ids)
    v.stop_ids = [i for k, i in enumerate(stops) if i >= 0 and i not in stops[:k]]
    add_turn_end_stops(v)
    if len(v.all_stop_ids()) > spec.TOKENIZER_MAX_STOP_IDS:
        raise TokenizerFormatError(f"{folder}: {len(v.all_stop_ids())} stop ids; an image holds at most "
                                   f"{spec.TOKENIZER_MAX_STOP_IDS}")
    return v


def _post_processor_bos(folder: pathlib.Path) -> str | None:
    """Text of the special token tokenizer.json's post-processor writes before a single text (Llama 3's
    TemplateProcessing: <|begin_of_text|> $A), or None."""
    doc = _read_json(folder / "tokenizer.json")
    pp = doc.get("post_processor") if isinstance(doc, dict) else None
    procs = pp.get("processors") if isinstance(pp, dict) and pp.get("type") == "Sequence" else [pp]
    for proc in procs if isinstance(procs, list) else []:
        if isinstance(proc, dict) and proc.get("type") == "TemplateProcessing":
            single = proc.get("single")
            first = single[0] if isinstance(single, list) and single and isinstance(single[0], dict) else {}
            token = first.get("SpecialToken")
            if isinstance(token, dict) and isinstance(token.get("id"), str):
                return token["id"]
    return None


LEGACY_NORMALIZER = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE},
                                                         {"type": "Replace", "pattern": {"String": " "},
                                                          "content": SPACE}]}


def _spm_normalizer(path, doc) -> bool:
    """True for Llama 2's legacy normalizer (Prepend "▁", then spaces -> "▁"), False for none; any
    other normalizer (NFKC, Lowercase, ...) is refused in one line: elk normalizes nothing else."""
    norm = doc.get("normalizer")
    if norm is None:
        return False
    if norm != LEGACY_NORMALIZER:
        raise TokenizerFormatError(f"{path}: normalizer {json.dumps(norm)[:120]} is not supported (elk runs none, "
                                   f"or Llama's Prepend(\"▁\") + Replace(\" \", \"▁\"))")
    return True


def _user_split_flag(path, doc) -> int:
    """FLAG_USER_SPLIT_RAW when tokenizers splits the non-special added tokens off the raw text, before
    the normalizer runs: always when there is no normalizer, else for tokens marked normalized: false.
    Tokens marked normalized: true are matched in the normalized text, spelled as the normalizer writes
    them ("▁" first: elk's SentencePiece way, no flag); with both kinds, no flag either."""
    users = [t for t in doc.get("added_tokens") or [] if not t.get("special")]
    if not _spm_normalizer(path, doc):
        return FLAG_USER_SPLIT_RAW
    if any(t.get("normalized", True) is not False for t in doc.get("added_tokens") or [] if t.get("special")):
        raise TokenizerFormatError(f"{path}: a special added token is matched after the normalizer "
                                   f"(normalized: true); elk matches special tokens in the raw text")
    raw = {t.get("normalized", True) is False for t in users}
    # both kinds: no flag, the normalized: false ones carry the RAW added-token option (_added_options)
    return FLAG_USER_SPLIT_RAW if raw == {True} else 0


def _hf_prefix_flags(path, doc) -> int:
    """Dummy-prefix flags of a SentencePiece-style tokenizer.json. Llama's legacy normalizer (Prepend "▁"
    + Replace " "→"▁") prepends "▁" to every non-empty text between added tokens; a Metaspace
    pre-tokenizer prepends it only to text that does not start with "▁" (a space), with prepend_scheme
    "first" only at the start of the text, with "always" (or the older add_prefix_space) after added
    tokens too."""
    text = json.dumps(doc.get("normalizer")) + json.dumps(doc.get("pre_tokenizer"))
    if '"Prepend"' in text:
        return FLAG_ADD_DUMMY_PREFIX | FLAG_PREFIX_SEGMENTS
    pre = doc.get("pre_tokenizer") or {}
    pres = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for p in pres:
        if p and p.get("type") == "Metaspace":
            if p.get("split", True) is not False:  # tokenizers' default: every "▁" starts a new pre-token
                raise TokenizerFormatError(f"{path}: Metaspace pre-tokenizer with split (every space starts a "
                                           f"pre-token) is not supported; elk runs split: false, as Llama's")
            scheme = p.get("prepend_scheme", "always" if p.get("add_prefix_space", False) else "never")
            if scheme == "never":
                return 0
            return FLAG_ADD_DUMMY_PREFIX | FLAG_PREFIX_UNLESS_SPACE | (FLAG_PREFIX_SEGMENTS if scheme == "always" else 0)
    return 0


def _hf_config(path: pathlib.Path) -> dict:
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise TokenizerFormatError(f"{path}: not JSON ({e})") from None
    out = {}
    if not isinstance(cfg, dict):
        return out
    for key in ("bos_token", "eos_token", "pad_token", "chat_template"):
        out[key] = _content(cfg.get(key))
    if isinstance(out["chat_template"], list):  # named templates: "default" is the chat one
        named = {t.get("name"): t.get("template") for t in out["chat_template"] if isinstance(t, dict)}
        out["chat_template"] = named.get("default")
    return out
