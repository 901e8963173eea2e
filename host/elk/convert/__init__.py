"""The in-memory model description every checkpoint reader produces and the packer consumes.

A `Model` holds the config, float32 tensors keyed by (role, layer) in the image's convention
((out, in) row-major, RoPE pairs interleaved), the tokenizer Vocab and metadata. Tensors may be
lazy (loaded one at a time while packing, so a 1.1B model never sits in RAM as float32) and may
carry their source bytes when the source is already in an image type (GGUF Q8_0/Q4_0).
Readers live in llama2c.py, hf.py and gguf_reader.py; `load_model(src)` picks one.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Callable, Optional

import numpy as np

from elk import spec
from elk.errors import FormatError

# Upper bounds a sane Llama-class checkpoint stays under; larger values mean a corrupt header.
MAX_DIM = 1 << 16
MAX_LAYERS = 1024
MAX_VOCAB = 1 << 20
MAX_SEQ = 1 << 20


@dataclasses.dataclass
class Config:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    head_dim: int = 0  # 0 = dim // n_heads
    tied_output: bool = False

    def __post_init__(self):
        if not self.head_dim and self.n_heads > 0:
            self.head_dim = self.dim // self.n_heads

    def validate(self, what: str = "config") -> None:
        """Raise FormatError unless the dimensions are positive, bounded and consistent."""
        checks = [
            ("dim", self.dim, MAX_DIM), ("hidden_dim", self.hidden_dim, 4 * MAX_DIM),
            ("n_layers", self.n_layers, MAX_LAYERS), ("n_heads", self.n_heads, 1024),
            ("n_kv_heads", self.n_kv_heads, 1024), ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("seq_len", self.seq_len, MAX_SEQ), ("head_dim", self.head_dim, 4096),
        ]
        for name, value, bound in checks:
            if not isinstance(value, (int, np.integer)) or not 0 < value <= bound:
                raise FormatError(f"{what}: {name} = {value} is outside 1..{bound}")
        if self.n_heads % self.n_kv_heads:
            raise FormatError(f"{what}: n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise FormatError(f"{what}: head_dim {self.head_dim} is odd (RoPE rotates pairs)")
        if not (self.rope_theta > 0 and np.isfinite(self.rope_theta)):
            raise FormatError(f"{what}: rope_theta {self.rope_theta} must be positive")
        if not (self.norm_eps > 0 and np.isfinite(self.norm_eps)):
            raise FormatError(f"{what}: norm_eps {self.norm_eps} must be positive")

    def tensor_shape(self, role: str) -> tuple:
        """(rows, cols) of a tensor of this role; vectors are (1, n)."""
        d, hd = self.dim, self.head_dim
        return {
            "TOK_EMBD": (self.vocab_size, d),
            "ATTN_NORM": (1, d),
            "WQ": (self.n_heads * hd, d),
            "WK": (self.n_kv_heads * hd, d),
            "WV": (self.n_kv_heads * hd, d),
            "WO": (d, self.n_heads * hd),
            "FFN_NORM": (1, d),
            "W1": (self.hidden_dim, d),
            "W2": (d, self.hidden_dim),
            "W3": (self.hidden_dim, d),
            "OUTPUT_NORM": (1, d),
            "OUTPUT": (self.vocab_size, d),
            "ROPE_FREQS": (1, hd // 2),
        }[role]

    def tensor_keys(self) -> list:
        """(role, layer) of every tensor the model needs, in image order."""
        keys = [("TOK_EMBD", 0)]
        for layer in range(self.n_layers):
            keys += [(role, layer) for role in spec.PER_LAYER_ROLES]
        keys.append(("OUTPUT_NORM", 0))
        if not self.tied_output:
            keys.append(("OUTPUT", 0))
        return keys


NORM_ROLES = ("ATTN_NORM", "FFN_NORM", "OUTPUT_NORM")


def tensor_name(role: str, layer: int) -> str:
    return spec.TENSOR_NAMES[role].replace("{L}", str(layer))


@dataclasses.dataclass
class Tensor:
    """One weight. `load()` gives float32 (rows, cols); `native` = (type_name, bytes) when the
    source already stores it in an image type (kept bit for bit if the target type is the same)."""

    shape: tuple
    loader: Callable[[], np.ndarray]
    native: Optional[tuple] = None

    def load(self) -> np.ndarray:
        a = np.asarray(self.loader(), dtype=np.float32)
        return a.reshape(self.shape)

    @classmethod
    def of(cls, array: np.ndarray) -> "Tensor":
        a = np.ascontiguousarray(array, dtype=np.float32)
        if a.ndim == 1:
            a = a.reshape(1, -1)
        return cls(shape=a.shape, loader=lambda: a)


@dataclasses.dataclass
class Model:
    config: Config
    tensors: dict  # (role, layer) -> Tensor
    vocab: object = None  # elk.tokenizer.Vocab
    name: str = ""
    source: str = ""
    chat_template: Optional[str] = None  # "zephyr", "llama2", "chatml" or None
    metadata: dict = dataclasses.field(default_factory=dict)  # extra string metadata

    def get(self, role: str, layer: int = 0) -> np.ndarray:
        """The float32 (rows, cols) weight; vectors come back 1-D."""
        a = self.tensors[(role, layer)].load()
        return a.reshape(-1) if role in NORM_ROLES + spec.OPTIONAL_ROLES else a

    def tensor_keys(self) -> list:
        """(role, layer) of every tensor the image gets: the config's, then the optional ones present."""
        return self.config.tensor_keys() + [(r, 0) for r in spec.OPTIONAL_ROLES if (r, 0) in self.tensors]

    def validate(self) -> None:
        """Check the config and that every tensor the config needs is present with its shape; optional
        RoPE frequency divisors must be positive and finite."""
        self.config.validate(self.source or "model")
        if ("ROPE_FREQS", 0) in self.tensors:
            f = self.get("ROPE_FREQS")
            if f.size != self.config.head_dim // 2 or not np.all(np.isfinite(f) & (f > 0)):
                raise FormatError(f"{self.source or 'model'}: RoPE frequency divisors must be {self.config.head_dim // 2} "
                                  f"positive finite numbers")
        for role, layer in self.tensor_keys():
            t = self.tensors.get((role, layer))
            if t is None:
                raise FormatError(f"{self.source or 'model'}: missing tensor {tensor_name(role, layer)}")
            want = self.config.tensor_shape(role)
            if tuple(t.shape) != want:
                raise FormatError(f"{self.source or 'model'}: tensor {tensor_name(role, layer)} has shape "
                                  f"{tuple(t.shape)}, config needs {want}")


def padded_vocab(vocab, n: int):
    """The vocabulary grown to n entries with CONTROL pieces `<pad_i>` (checkpoints often round
    vocab_size up past the tokenizer: the extra embedding rows are never produced by encoding)."""
    have = len(vocab.pieces)
    if have >= n:
        return vocab
    extra = n - have
    return dataclasses.replace(vocab, pieces=list(vocab.pieces) + [f"<pad_{i}>" for i in range(have, n)],
                               scores=list(vocab.scores) + [0.0] * extra,
                               types=list(vocab.types) + [spec.TOKEN_TYPES["CONTROL"]] * extra,
                               splits=None if getattr(vocab, "splits", None) is None else list(vocab.splits) + [0] * extra)


def detect_chat_template(text: Optional[str]) -> Optional[str]:
    """Map a Jinja chat template (HF tokenizer_config / GGUF) to the names the runtime knows."""
    if not text:
        return None
    if text in ("zephyr", "llama2", "chatml"):
        return text
    if "<|im_start|>" in text:
        return "chatml"
    if "<|user|>" in text:
        return "zephyr"
    if "[INST]" in text:
        return "llama2"
    return None


def default_system_prompt(text: Optional[str]) -> Optional[str]:
    """The system prompt a ChatML chat template writes when the conversation has none (SmolLM2-Instruct:
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face"), or None. Taken from a
    single Jinja string literal holding the whole block "<|im_start|>system\n...<|im_end|>"; a template
    that only writes messages[0]'s content there has no such literal."""
    if not text:
        return None
    code = " ".join(re.findall(r"\{\{.*?\}\}|\{%.*?%\}", text, re.S))  # literals live in tags only
    for m in re.finditer(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"", code):
        lit = m.group(1) if m.group(1) is not None else m.group(2)
        lit = re.sub(r"\\(.)", lambda e: {"n": "\n", "t": "\t"}.get(e.group(1), e.group(1)), lit)
        found = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", lit, re.S)
        if found and found.group(1):
            return found.group(1)
    return None


def load_model(src, tokenizer=None, **options) -> Model:
    """Read a checkpoint: llama2.c .bin, GGUF file, Hugging Face folder or hub id."""
    from elk.errors import ElkError

    text = str(src)
    path = pathlib.Path(text)
    if path.is_dir():
        from elk.convert import hf

        return _vocab_fits(hf.read(path, tokenizer=tokenizer, **options), tokenizer, path)
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
        if head == spec.IMAGE_MAGIC.to_bytes(4, "little"):
            return _vocab_fits(from_image(path, tokenizer=tokenizer), tokenizer, path)
        if head == b"GGUF":
            from elk.convert import gguf_reader

            return _vocab_fits(gguf_reader.read(path, tokenizer=tokenizer), tokenizer, path)
        from elk.convert import llama2c

        return _vocab_fits(llama2c.read(path, tokenizer=tokenizer), tokenizer, path)
    file_like = path.suffix.lower() in (".bin", ".gguf", ".elk", ".safetensors", ".model", ".json", ".pt")
    if "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1 and not file_like:
        from elk.convert import hf

        return hf.read_hub(text, tokenizer=tokenizer, **options)
    raise ElkError(f"{text}: no such file, folder or Hugging Face model id")


def _vocab_fits(model: Model, tokenizer, src: pathlib.Path) -> Model:
    """The model, checked to have an embedding row for every token of its tokenizer (fewer tokens are
    padded later: padded_vocab). Too many is one line naming the file the tokenizer came from (the
    --tokenizer file, else the folder's tokenizer.model / tokenizer.json, else the checkpoint itself)
    and both sizes (elk.image's own check cannot say which file it was)."""
    vocab, rows = model.vocab, model.config.vocab_size
    if vocab is None or len(vocab.pieces) <= rows:
        return model
    if isinstance(tokenizer, (str, pathlib.Path)):
        where = str(tokenizer)
    elif src.is_dir():
        where = next((str(src / f) for f in ("tokenizer.model", "tokenizer.json") if (src / f).is_file()), str(src))
    else:
        where = str(src)
    raise FormatError(f"{where}: tokenizer has {len(vocab.pieces)} tokens, model vocab_size is {rows}")


def from_image(path, tokenizer=None) -> Model:
    """An elk image as a source (to re-quantize it): tensors of the image's type are kept as bytes."""
    from elk import image as im

    img = im.read_image(path)
    tensors = {}
    for t in img.tensors.values():
        tensors[(t.role, t.layer)] = Tensor(shape=(t.rows, t.cols), loader=t.array, native=(t.type, t.data))
    if tokenizer is not None:
        from elk import tokenizer as tk

        vocab = tk.load(tokenizer)
    else:
        vocab = img.vocab()
    meta = img.metadata
    model = Model(dataclasses.replace(img.config), tensors, vocab=vocab, name=meta.get("general.name", img.header["name"]),
                  source=meta.get("general.source", f"elk: {pathlib.Path(path).name}"),
                  chat_template=meta.get("chat.template"))
    model.validate()
    return model
