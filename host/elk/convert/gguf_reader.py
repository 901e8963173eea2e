"""Reader for GGUF llama files (via the gguf package): F32, F16, BF16, Q8_0 and Q4_0 tensors (other ggml
types, e.g. the Q6_K output of llama.cpp's q4_0 files, through gguf.quants.dequantize), the config
from `llama.*` metadata and the vocabulary via elk.tokenizer.from_gguf.

GGUF stores dims as ne[0] = cols (fastest), so a (rows, cols) matrix has shape [cols, rows] in GGUF.
llama.cpp's converters already put Wq/Wk in the interleaved RoPE convention: tensors pass unchanged,
and Q8_0/Q4_0 blocks are kept bit for bit when the target type is the same. RoPE scaling: llama.cpp's
rope_freqs.weight (Llama 3) and linear llama.rope.scaling.factor become the image's RoPE divisors;
yarn/longrope and mixtures of experts are refused.
"""

from __future__ import annotations

import pathlib

import numpy as np

from elk import quant
from elk.convert import Config, Model, Tensor, detect_chat_template
from elk.errors import FormatError
from elk.gguf_guard import printable_name

ROLE_OF = {  # GGUF tensor name (without blk.N.) -> role
    "token_embd.weight": "TOK_EMBD", "attn_norm.weight": "ATTN_NORM", "attn_q.weight": "WQ",
    "attn_k.weight": "WK", "attn_v.weight": "WV", "attn_output.weight": "WO", "ffn_norm.weight": "FFN_NORM",
    "ffn_gate.weight": "W1", "ffn_down.weight": "W2", "ffn_up.weight": "W3",
    "output_norm.weight": "OUTPUT_NORM", "output.weight": "OUTPUT",
}
READ_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0")  # read directly; other ggml types via gguf.quants
ROPE_FREQS = "rope_freqs.weight"  # Llama 3 RoPE scaling: per-frequency divisors (llama.cpp writes it
# instead of llama.rope.scaling.type); all ones means plain RoPE and is dropped


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception:  # noqa: BLE001 - a damaged field reads as absent; required ones are checked
        return default


def read(path, tokenizer=None) -> Model:
    import gguf

    path = pathlib.Path(path)
    from elk import gguf_guard

    gguf_guard.check(path)  # bounded pre-scan: the gguf package loops on crafted counts (fuzz finding)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # the gguf package raises ValueError/struct.error/IndexError on damage
        raise FormatError(f"{path}: damaged or unsupported GGUF file ({type(e).__name__}: {e})") from None
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise FormatError(f"{path}: GGUF architecture '{arch}' is not supported (llama only)")
    tensors, shapes = _tensors(path, reader)
    cfg = _config(path, reader, shapes)
    factor = _linear_rope_factor(path, reader)
    if factor is not None:  # llama.cpp multiplies every angle by 1/factor, on top of any rope_freqs divisors
        base = tensors.get(("ROPE_FREQS", 0))
        divisors = base.load().reshape(-1) if base is not None else np.ones(cfg.head_dim // 2, np.float32)
        if divisors.size != cfg.head_dim // 2:
            raise FormatError(f"{path}: {ROPE_FREQS} holds {divisors.size} divisors, head_dim {cfg.head_dim} needs "
                              f"{cfg.head_dim // 2}")
        tensors[("ROPE_FREQS", 0)] = Tensor.of((divisors * np.float32(factor)).astype(np.float32))
    from elk import tokenizer as tk

    if tokenizer is not None:
        vocab = tk.load(tokenizer) if isinstance(tokenizer, (str, pathlib.Path)) else tokenizer
    else:
        vocab = tk.from_gguf(reader)
    name = _field(reader, "general.name") or path.stem
    if name == arch:
        name = path.stem
    model = Model(cfg, tensors, vocab=vocab, name=name, source=f"gguf: {path.name}",
                  chat_template=detect_chat_template(_field(reader, "tokenizer.chat_template")))
    tie_if_identical(model)
    model.validate()
    return model


def _tensors(path, reader):
    tensors, shapes = {}, {}
    for t in reader.tensors:
        if t.name == ROPE_FREQS:
            factors = _rope_freqs(path, t)
            if factors is not None:  # all ones (plain RoPE) adds nothing: those images keep their bytes
                tensors[("ROPE_FREQS", 0)] = Tensor.of(factors)
            continue
        parts = t.name.split(".")
        if parts[0] == "blk" and len(parts) > 2 and parts[1].isdigit():
            layer, key = int(parts[1]), ".".join(parts[2:])
        else:
            layer, key = 0, t.name
        role = ROLE_OF.get(key)
        if role is None:
            raise FormatError(f"{path}: tensor '{printable_name(t.name)}' is not part of a llama model elk knows")
        ne = [int(n) for n in t.shape]
        if len(ne) > 2 or any(n <= 0 for n in ne):
            raise FormatError(f"{path}: tensor '{printable_name(t.name)}' has dims {ne}")
        cols, rows = ne[0], (ne[1] if len(ne) == 2 else 1)
        raw = np.asarray(t.data).reshape(-1).view(np.uint8)
        tensors[(role, layer)] = _tensor(path, t, raw, rows, cols)
        shapes[role] = (rows, cols)
    return tensors, shapes


def _rope_freqs(path, t):
    """llama.cpp's rope_freqs (Llama 3 RoPE scaling: one divisor per frequency) as float32, or None
    when every divisor is 1; the runtime divides each inverse frequency by its divisor."""
    if t.tensor_type.name not in ("F32", "F16"):
        raise FormatError(f"{path}: {ROPE_FREQS} is {t.tensor_type.name}; RoPE divisors must be F32 or F16")
    factors = np.asarray(t.data).reshape(-1).astype(np.float32)
    if not np.all(np.isfinite(factors) & (factors > 0)):
        raise FormatError(f"{path}: {ROPE_FREQS} holds a divisor that is not a positive finite number")
    return None if np.all(factors == 1.0) else factors


def _tensor(path, t, raw, rows, cols) -> Tensor:
    """Image types keep their bytes (`native`); other ggml types (Q4_K, Q6_K, Q5_0, ... as llama.cpp
    mixes them into its q4_0 files) are dequantized with the gguf package and re-quantized by the recipe."""
    import gguf

    tname = t.tensor_type.name
    if tname in READ_TYPES:
        need = rows * quant.row_bytes(tname, cols)
    else:
        be, bb = gguf.GGML_QUANT_SIZES.get(t.tensor_type, (0, 0))
        need = rows * (cols // be) * bb if be and cols % be == 0 else -1
    if raw.size != need:
        raise FormatError(f"{path}: tensor '{printable_name(t.name)}' holds {raw.size} bytes, {tname} {rows}x{cols} needs {need}")
    if tname in READ_TYPES:
        native = (tname, raw) if tname != "BF16" else None
        return Tensor(shape=(rows, cols), native=native,
                      loader=lambda: quant.dequantize(raw, tname, (rows, cols)))

    def load():
        try:
            return gguf.quants.dequantize(raw.reshape(rows, -1), t.tensor_type).reshape(rows, cols)
        except NotImplementedError:
            raise FormatError(f"{path}: tensor '{printable_name(t.name)}' has type {tname}, which the gguf package cannot "
                              f"dequantize; start from an F16/F32/Q8_0 file") from None

    return Tensor(shape=(rows, cols), loader=load)


def _config(path, reader, shapes) -> Config:
    def need(key):
        v = _field(reader, f"llama.{key}")
        if v is None:
            raise FormatError(f"{path}: GGUF metadata llama.{key} is missing")
        return int(v)

    dim, n_heads = need("embedding_length"), need("attention.head_count")
    n_kv = int(_field(reader, "llama.attention.head_count_kv", n_heads))
    vocab = _field(reader, "llama.vocab_size")
    if vocab is None:
        vocab = shapes.get("TOK_EMBD", (0, 0))[0]
    head_dim = int(_field(reader, "llama.attention.key_length", 0) or (dim // n_heads if n_heads else 0))
    cfg = Config(dim=dim, hidden_dim=need("feed_forward_length"), n_layers=need("block_count"),
                 n_heads=n_heads, n_kv_heads=n_kv, vocab_size=int(vocab), seq_len=need("context_length"),
                 rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
                 norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
                 head_dim=head_dim, tied_output="OUTPUT" not in shapes)
    cfg.validate(str(path))
    rot = _field(reader, "llama.rope.dimension_count")
    if rot is not None and int(rot) != cfg.head_dim:
        raise FormatError(f"{path}: RoPE over {int(rot)} of {cfg.head_dim} head dims is not supported")
    experts = _field(reader, "llama.expert_count")
    if experts:  # Mixtral-style files say arch llama too
        raise FormatError(f"{path}: a mixture of experts (llama.expert_count {experts}) is not supported; elk runs "
                          f"dense Llama models")
    return cfg


def _linear_rope_factor(path, reader):
    """The linear RoPE scaling factor as llama.cpp reads it, or None: llama.rope.scaling.factor (older
    files: llama.rope.scale_linear) with llama.rope.scaling.type absent or "linear" (convert_hf_to_gguf.py
    writes both for config.json's linear rope_scaling); type "none" means no scaling whatever the factor.
    Other types (yarn, longrope) are refused."""
    kind = _field(reader, "llama.rope.scaling.type")
    if kind not in (None, "none", "linear"):
        raise FormatError(f"{path}: RoPE scaling '{kind}' is not supported (plain, linear and llama3 RoPE are)")
    factor = _field(reader, "llama.rope.scaling.factor") or _field(reader, "llama.rope.scale_linear")
    if kind == "none" or factor is None:
        return None
    try:
        factor = float(factor)
    except (TypeError, ValueError):
        raise FormatError(f"{path}: llama.rope.scaling.factor {factor!r} is not a number") from None
    if not (factor > 0 and np.isfinite(factor)):
        raise FormatError(f"{path}: llama.rope.scaling.factor {factor} must be a positive number")
    return None if factor == 1.0 else factor


def tie_if_identical(model: Model) -> Model:
    """Drop output.weight when it holds exactly the embedding's bytes (saves flash; same logits)."""
    out, emb = model.tensors.get(("OUTPUT", 0)), model.tensors.get(("TOK_EMBD", 0))
    if out is None or emb is None or out.native is None or emb.native is None:
        return model
    if out.native[0] == emb.native[0] and np.array_equal(out.native[1], emb.native[1]):
        del model.tensors[("OUTPUT", 0)]
        model.config.tied_output = True
    return model
