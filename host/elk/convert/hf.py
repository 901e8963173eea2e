"""Reader for Hugging Face Llama checkpoints: a folder with config.json, one or several *.safetensors
(with model.safetensors.index.json) and tokenizer.model or tokenizer.json; or a hub id fetched with
huggingface_hub.snapshot_download.

Tensors are read lazily, one at a time while packing, so a 1.1B model never sits in RAM as float32. HF stores Wq/Wk permuted for the rotate-half RoPE; they are permuted back here to the
interleaved-pairs convention of the image (permute_rope and config_dict are the writing side, for
elk.models.synth). RoPE scaling of type linear or llama3 becomes the image's RoPE divisors. Not here:
non-Llama architectures, yarn/dynamic/partial RoPE, bias terms, pickled (.bin/.pth) weights: refused in one line.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from elk.convert import Config, Model, Tensor, detect_chat_template
from elk.errors import ElkError, FormatError

HF_NAMES = {
    "TOK_EMBD": "model.embed_tokens.weight",
    "ATTN_NORM": "model.layers.{L}.input_layernorm.weight",
    "WQ": "model.layers.{L}.self_attn.q_proj.weight",
    "WK": "model.layers.{L}.self_attn.k_proj.weight",
    "WV": "model.layers.{L}.self_attn.v_proj.weight",
    "WO": "model.layers.{L}.self_attn.o_proj.weight",
    "FFN_NORM": "model.layers.{L}.post_attention_layernorm.weight",
    "W1": "model.layers.{L}.mlp.gate_proj.weight",
    "W2": "model.layers.{L}.mlp.down_proj.weight",
    "W3": "model.layers.{L}.mlp.up_proj.weight",
    "OUTPUT_NORM": "model.norm.weight",
    "OUTPUT": "lm_head.weight",
}
HUB_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.model",
                "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


def unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF rotate-half layout -> interleaved pairs: per head, rows (2, hd/2) become (hd/2, 2)."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def permute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Interleaved pairs (elk, GGUF, Meta) -> HF rotate-half layout; the inverse of unpermute_rope."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def config_dict(cfg: Config) -> dict:
    """config.json for `cfg` with the keys _config reads back (a float16 LlamaForCausalLM)."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.seq_len,
        "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta, "hidden_act": "silu",
        "tie_word_embeddings": cfg.tied_output, "torch_dtype": "float16", "bos_token_id": 1,
        "eos_token_id": 2,
    }


def read_hub(repo_id: str, tokenizer=None, revision=None, **_) -> Model:
    """Download (or find in the local cache) the files a Llama checkpoint needs, then read them."""
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS)
    except Exception as e:  # offline, unknown repo, gated repo, ...: all become one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ""
        if type(e).__name__ == "LocalEntryNotFoundError" or "offline" in reason.lower():
            hint = "not in the local cache and the hub cannot be reached (offline?); "
        raise ElkError(f"{repo_id}: cannot fetch from the Hugging Face hub ({hint}{type(e).__name__}: "
                       f"{reason[:160]})") from None
    return read(pathlib.Path(folder), tokenizer=tokenizer, source=f"hf: {repo_id}", name=repo_id.split("/")[-1])


def _load_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None


def _config(folder: pathlib.Path, c: dict) -> Config:
    where = folder / "config.json"
    if not isinstance(c, dict):
        raise FormatError(f"{where}: not a JSON object")
    if c.get("model_type") not in ("llama", None) and "LlamaForCausalLM" not in (c.get("architectures") or []):
        raise FormatError(f"{where}: model_type '{c.get('model_type')}' is not a Llama model")
    if c.get("quantization_config"):
        method = (c["quantization_config"] or {}).get("quant_method", "?") if isinstance(
            c["quantization_config"], dict) else "?"
        raise FormatError(f"{where}: a pre-quantized checkpoint ({method}); elk reads float weights "
                          f"(F32/F16/BF16) and quantizes them itself")
    rope_theta = _rope_theta(where, c)
    if c.get("hidden_act", "silu") not in ("silu", "swish"):  # transformers maps both to SiLU
        raise FormatError(f"{where}: hidden_act '{c['hidden_act']}' is not supported (Llama uses silu)")
    partial = c.get("partial_rotary_factor", 1.0)
    if partial not in (None, 1, 1.0):  # transformers then rotates only that share of each head
        raise FormatError(f"{where}: partial_rotary_factor {partial} is not supported (elk rotates whole heads)")
    for key in ("attention_bias", "mlp_bias"):
        if c.get(key):
            raise FormatError(f"{where}: {key} is true; elk's Llama runtime has no bias terms")
    try:
        n_heads = int(c["num_attention_heads"])
        dim = int(c["hidden_size"])
        cfg = Config(dim=dim, hidden_dim=int(c["intermediate_size"]), n_layers=int(c["num_hidden_layers"]),
                     n_heads=n_heads, n_kv_heads=int(c.get("num_key_value_heads") or n_heads),
                     vocab_size=int(c["vocab_size"]), seq_len=int(c.get("max_position_embeddings", 2048)),
                     rope_theta=rope_theta, norm_eps=float(c.get("rms_norm_eps", 1e-6)),
                     head_dim=int(c.get("head_dim") or dim // max(n_heads, 1)),
                     tied_output=bool(c.get("tie_word_embeddings", False)))
    except KeyError as e:
        raise FormatError(f"{where}: missing {e.args[0]}") from None
    except (TypeError, ValueError) as e:
        raise FormatError(f"{where}: bad value ({e})") from None
    cfg.validate(str(where))
    return cfg


def _rope_params(where, c: dict) -> dict:
    """The RoPE scaling object of config.json ({} for plain RoPE): transformers < 5 writes `rope_theta`
    (+ `rope_scaling`), 5.x writes `rope_parameters` {rope_type, rope_theta, ...}."""
    found = {}
    for key in ("rope_scaling", "rope_parameters"):
        rp = c.get(key)
        if rp in (None, {}):
            continue
        if not isinstance(rp, dict):
            raise FormatError(f"{where}: {key} {rp!r} is not an object")
        kind = rp.get("rope_type", rp.get("type", "default"))
        if kind not in ("default", "llama3", "linear") or any(isinstance(v, dict) for v in rp.values()):
            raise FormatError(f"{where}: RoPE scaling ({key} {json.dumps(rp)[:120]}) is not supported; "
                              f"plain RoPE, llama3 and linear are")
        if kind != "default":
            found = dict(rp, rope_type=kind)
    return found


def _rope_theta(where, c: dict) -> float:
    """RoPE base from config.json (see _rope_params for where it lives)."""
    params = c.get("rope_parameters")
    _rope_params(where, c)
    theta = (params or {}).get("rope_theta", c.get("rope_theta", 10000.0))
    try:
        return float(theta)
    except (TypeError, ValueError):
        raise FormatError(f"{where}: bad rope_theta {theta!r}") from None


def rope_divisors(where, c: dict, cfg: Config):
    """Per-frequency divisors f_i of RoPE's inverse frequencies theta^(-2i/head_dim) for config.json's
    scaling (the image's ROPE_FREQS tensor, as llama.cpp's rope_freqs), or None for plain RoPE.
    linear: every f_i = factor. llama3 (Llama 3.1/3.2): frequencies whose wavelength 2 pi / freq is
    shorter than original_max_position_embeddings / high_freq_factor keep f = 1, longer than
    .../ low_freq_factor get f = factor, and in between f = 1 / ((1 - s) / factor + s) with
    s = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)."""
    rp = _rope_params(where, c)
    if not rp:
        return None
    try:
        factor = float(rp.get("factor", 8.0 if rp["rope_type"] == "llama3" else 1.0))
        low = float(rp.get("low_freq_factor", 1.0))
        high = float(rp.get("high_freq_factor", 4.0))
        original = float(rp.get("original_max_position_embeddings", 8192))
    except (TypeError, ValueError) as e:
        raise FormatError(f"{where}: bad RoPE scaling value ({e})") from None
    if not (factor > 0 and np.isfinite(factor)):
        raise FormatError(f"{where}: RoPE scaling factor {factor} must be a positive number")
    half = cfg.head_dim // 2
    if rp["rope_type"] == "linear":
        return np.full(half, factor, dtype=np.float32)
    if not (0 < low < high and original > 0):
        raise FormatError(f"{where}: llama3 RoPE scaling needs 0 < low_freq_factor < high_freq_factor and "
                          f"original_max_position_embeddings > 0 (got {low}, {high}, {original})")
    freq = cfg.rope_theta ** (-2.0 * np.arange(half) / cfg.head_dim)
    wavelen = 2 * np.pi / freq
    s = (original / wavelen - low) / (high - low)
    f = np.where(wavelen < original / high, 1.0,
                 np.where(wavelen > original / low, factor, 1.0 / ((1.0 - s) / factor + s)))
    return f.astype(np.float32)


class _SafetensorsFile:
    """Tensors of one .safetensors file: names and shapes via the safetensors package, data read
    from the offsets in its header (also for BF16, which safetensors' numpy API cannot return)."""

    def __init__(self, path: pathlib.Path):
        from safetensors import safe_open

        self.path = path
        try:
            with safe_open(str(path), framework="numpy") as f:
                self.info = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
            raw = path.open("rb").read(8)
            n = int.from_bytes(raw, "little")
            header = json.loads(path.open("rb").read(8 + n)[8:])
        except Exception as e:  # safetensors raises its own SafetensorError on damage
            raise FormatError(f"{path}: damaged safetensors file ({type(e).__name__}: {str(e)[:120]})") from None
        self.offsets = {k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
                        for k, v in header.items() if k != "__metadata__"}
        self.size = path.stat().st_size

    def load(self, name: str) -> np.ndarray:
        """Read one tensor from the file (not through a long-lived map, so the pages of tensors
        already packed do not stay resident)."""
        dtype, shape = self.info[name]
        start, end = self.offsets[name]
        if end > self.size:
            raise FormatError(f"{self.path}: tensor {name} runs past the end of the file (truncated?)")
        raw = np.fromfile(self.path, dtype=DTYPES[dtype], count=(end - start) // DTYPES[dtype].itemsize,
                          offset=start)
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        return raw.astype(np.float32).reshape(shape)


def _open_weights(folder: pathlib.Path) -> dict:
    """name -> _SafetensorsFile holding it."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        wmap = _load_json(index).get("weight_map", {})
        files = {f: None for f in sorted(set(wmap.values()))}
    else:
        files = {p.name: None for p in sorted(folder.glob("*.safetensors"))}
        wmap = None
    if not files:
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
        if pickles:
            raise FormatError(f"{folder}: weights are PyTorch pickles ({pickles[0]}); elk reads only *.safetensors "
                              f"(re-save with transformers: save_pretrained(dir, safe_serialization=True))")
        raise FormatError(f"{folder}: no *.safetensors weights")
    where = {}
    for fname in files:
        if not (folder / fname).is_file():
            raise FormatError(f"{folder}: shard {fname} named in model.safetensors.index.json is missing "
                              f"(incomplete download?)")
        st = _SafetensorsFile(folder / fname)
        for name in st.info:
            if wmap is None or wmap.get(name) == fname:
                where[name] = st
    return where


def read(folder, tokenizer=None, source=None, name=None, **_) -> Model:
    folder = pathlib.Path(folder)
    if not (folder / "config.json").is_file():
        raise FormatError(f"{folder}: no config.json (not a Hugging Face model folder)")
    conf = _load_json(folder / "config.json")
    cfg = _config(folder, conf)
    where = _open_weights(folder)
    if not cfg.tied_output and HF_NAMES["OUTPUT"] not in where:
        cfg.tied_output = True  # some exports leave lm_head out when it equals the embedding
    _check_no_extra_tensors(folder, cfg, where)
    tensors = {}
    for role, layer in cfg.tensor_keys():
        hname = HF_NAMES[role].replace("{L}", str(layer))
        st = where.get(hname)
        if st is None:
            raise FormatError(f"{folder}: missing tensor {hname}")
        shape = cfg.tensor_shape(role)
        got = st.info[hname][1]
        if st.info[hname][0] not in DTYPES:
            raise FormatError(f"{st.path}: tensor {hname} has dtype {st.info[hname][0]} (F32, F16, BF16 are read)")
        if tuple(got) != (shape if len(got) == 2 else (shape[1],)):
            raise FormatError(f"{st.path}: tensor {hname} has shape {list(got)}, config.json needs {list(shape)}")
        heads = {"WQ": cfg.n_heads, "WK": cfg.n_kv_heads}.get(role)
        tensors[(role, layer)] = Tensor(shape=shape, loader=_loader(st, hname, shape, heads))
    divisors = rope_divisors(folder / "config.json", conf, cfg)
    if divisors is not None:
        tensors[("ROPE_FREQS", 0)] = Tensor.of(divisors)
    vocab = _vocab(folder, tokenizer)
    chat = detect_chat_template(_chat_template_text(folder))
    chat = chat or detect_chat_template(getattr(vocab, "chat_template", None))
    model = Model(cfg, tensors, vocab=vocab, name=name or folder.name, source=source or f"hf: {folder.name}",
                  chat_template=chat)
    model.validate()
    return model


def _check_no_extra_tensors(folder, cfg, where) -> None:
    """A tensor the runtime would not use (biases, extra heads, another architecture's names) means the
    numbers would silently differ: refuse. RoPE inv_freq buffers (old exports) and a stored lm_head of a
    tied model (transformers ignores it too) are harmless."""
    known = {HF_NAMES[role].replace("{L}", str(layer)) for role, layer in cfg.tensor_keys()}
    known.add(HF_NAMES["OUTPUT"])
    extra = sorted(n for n in where if n not in known and not n.endswith("rotary_emb.inv_freq"))
    if extra:
        # biases first: attention_bias/mlp_bias absent or false, yet the file holds them (say why)
        extra.sort(key=lambda n: not n.endswith(".bias"))
        more = f" (+{len(extra) - 1} more)" if len(extra) > 1 else ""
        why = "; elk's Llama runtime has no bias terms" if extra[0].endswith(".bias") else ""
        raise FormatError(f"{folder}: tensor {extra[0]}{more} is not part of a {cfg.n_layers}-layer Llama model "
                          f"elk knows{why}")


def _chat_template_text(folder):
    """The chat template string: tokenizer_config.json's chat_template (a string, or a list of named
    templates: "default" is used), else chat_template.jinja (what transformers >= 4.50 saves)."""
    text = None
    if (folder / "tokenizer_config.json").is_file():
        doc = _load_json(folder / "tokenizer_config.json")
        text = doc.get("chat_template") if isinstance(doc, dict) else None
        if isinstance(text, list):
            named = {t.get("name"): t.get("template") for t in text if isinstance(t, dict)}
            text = named.get("default")
        if not isinstance(text, str):
            text = None
    if text is None and (folder / "chat_template.jinja").is_file():
        try:
            text = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise FormatError(f"{folder / 'chat_template.jinja'}: cannot read ({e})") from None
    return text


def _loader(st, hname, shape, heads):
    def load():
        w = st.load(hname).reshape(shape)
        return unpermute_rope(w, heads) if heads else w

    return load


def _vocab(folder, tokenizer):
    from elk import tokenizer as tk

    if tokenizer is not None:
        return tk.load(tokenizer) if isinstance(tokenizer, (str, pathlib.Path)) else tokenizer
    for fname in ("tokenizer.model", "tokenizer.json"):
        if (folder / fname).is_file():
            # added tokens (tokenizer.model lacks them), bos/eos from tokenizer_config.json, stop ids
            # from generation_config.json: the folder's files beside the model file
            return tk.hf_specials(tk.load(folder / fname), folder, added=fname == "tokenizer.model",
                                  chat_template=_chat_template_text(folder))
    raise FormatError(f"{folder}: no tokenizer.model or tokenizer.json (pass --tokenizer FILE)")
