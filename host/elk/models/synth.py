"""Synthetic Llama checkpoints with seeded random weights in the shape of real models, so speed and
memory can be measured (and compared with llama.cpp on the very same weights) without downloading
anything. Output: a Hugging Face-style folder, a GGUF file, or an elk image, written tensor by tensor.

    python -m elk.models.synth tinyllama-1.1b --vocab tokenizer.model -o tl/          # HF folder
    python -m elk.models.synth tinyllama-1.1b -o tl.safetensors    # the file + config.json beside it
    python -m elk.models.synth tinyllama-1.1b --vocab vocab.gguf -o tl.gguf            # for llama.cpp
    python -m elk.models.synth tinyllama-1.1b --vocab tokenizer.model -o tl.elk --quant q4_0

Weights are N(0, std) rounded to float16 (norm weights 1 + N(0, std)), drawn per tensor from
(seed, tensor index), so every output format holds exactly the same values. Not here: training,
or any claim that the text these models produce means anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shutil
import struct
import sys

import numpy as np

from elk.convert import NORM_ROLES, Config, Model, Tensor, tensor_name
from elk.convert.hf import HF_NAMES, permute_rope as hf_permute
from elk.convert.hf import config_dict as hf_config
from elk.errors import ElkError

# Shapes of real models (and small ones for tests). vocab_size follows the vocabulary when given.
PRESETS = {
    "tinyllama-1.1b": Config(dim=2048, hidden_dim=5632, n_layers=22, n_heads=32, n_kv_heads=4,
                             vocab_size=32000, seq_len=2048, rope_theta=10000.0, norm_eps=1e-5),
    "stories15m": Config(dim=288, hidden_dim=768, n_layers=6, n_heads=6, n_kv_heads=6,
                         vocab_size=32000, seq_len=256),
    "stories260k": Config(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4,
                          vocab_size=512, seq_len=512),
    "tiny": Config(dim=64, hidden_dim=160, n_layers=2, n_heads=4, n_kv_heads=2,
                   vocab_size=512, seq_len=128),
}


class SynthError(ElkError):
    pass


def preset_config(name: str, vocab=None) -> Config:
    if name not in PRESETS:
        raise SynthError(f"unknown preset '{name}'; presets: {', '.join(PRESETS)}")
    cfg = dataclasses.replace(PRESETS[name])
    if vocab is not None:
        cfg.vocab_size = len(vocab)
    cfg.validate(name)
    return cfg


def synth_tensor(cfg: Config, index: int, role: str, seed: int, std: float) -> np.ndarray:
    """Weight `index` of the model (image order): float16 values, (rows, cols) or (n,) for norms."""
    rng = np.random.default_rng([seed, index])
    rows, cols = cfg.tensor_shape(role)
    if role in NORM_ROLES:
        return (1.0 + std * rng.standard_normal(cols, dtype=np.float32)).astype(np.float16)
    out = np.empty((rows, cols), dtype=np.float16)
    step = max(1, (1 << 22) // cols)  # ~16 MB of float32 at a time
    for r in range(0, rows, step):
        out[r:r + step] = (std * rng.standard_normal((min(step, rows - r), cols), dtype=np.float32))
    return out


def synth_model(preset: str, *, vocab=None, seed: int = 0, std: float = 0.02) -> Model:
    """An elk Model whose tensors are generated lazily (one at a time while packing)."""
    cfg = preset_config(preset, vocab)
    tensors = {}
    for index, (role, layer) in enumerate(cfg.tensor_keys()):
        shape = cfg.tensor_shape(role)
        tensors[(role, layer)] = Tensor(
            shape=shape, loader=lambda i=index, r=role: synth_tensor(cfg, i, r, seed, std).astype(np.float32))
    return Model(config=cfg, tensors=tensors, vocab=vocab, name=f"synth-{preset}",
                 source=f"elk.models.synth {preset} seed={seed} std={std}",
                 metadata={"synth.preset": preset, "synth.seed": str(seed), "synth.std": str(std)})


def iter_tensors(cfg: Config, seed: int, std: float):
    """(role, layer, float16 array) in image order, one tensor alive at a time."""
    for index, (role, layer) in enumerate(cfg.tensor_keys()):
        yield role, layer, synth_tensor(cfg, index, role, seed, std)


# ---------------------------------------------------------------------------------------------
# Hugging Face folder: config.json + model.safetensors (+ the tokenizer file, copied)


def write_safetensors(path: pathlib.Path, cfg: Config, seed: int, std: float) -> None:
    """Stream a safetensors file (8-byte LE header length, JSON header, raw little-endian data)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for role, layer in cfg.tensor_keys():
        rows, cols = cfg.tensor_shape(role)
        shape = [cols] if role in NORM_ROLES else [rows, cols]
        nbytes = rows * cols * 2
        header[HF_NAMES[role].replace("{L}", str(layer))] = {
            "dtype": "F16", "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for role, layer, w in iter_tensors(cfg, seed, std):
            if role == "WQ":
                w = hf_permute(w, cfg.n_heads)
            elif role == "WK":
                w = hf_permute(w, cfg.n_kv_heads)
            f.write(np.ascontiguousarray(w, dtype="<f2").tobytes())


def write_hf(folder: pathlib.Path, cfg: Config, seed: int, std: float, vocab_path=None,
             weights_name: str = "model.safetensors") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(hf_config(cfg), indent=2) + "\n")
    write_safetensors(folder / weights_name, cfg, seed, std)
    if vocab_path is not None and vocab_path.suffix in (".model", ".json"):  # SentencePiece / HF tokenizers
        shutil.copyfile(vocab_path, folder / f"tokenizer{vocab_path.suffix}")


# ---------------------------------------------------------------------------------------------
# GGUF (llama.cpp's llama architecture, f16 weights, tokenizer from the given vocabulary)


def write_gguf_vocab(w, vocab) -> None:
    """The tokenizer.ggml.* keys of an elk vocabulary, as llama.cpp's converter writes them: a
    SentencePiece vocabulary as model "llama" (pieces, scores, types), a byte-level one (kind 2) as
    model "gpt2" with its merges in rank order and pre-tokenizer "smollm" (digits split off first)
    or "gpt-2". Then bos (gpt2: only when the vocabulary adds one), eos, the first two extra stop ids
    as eot / eom, and the chat template's text."""
    import gguf

    from elk import spec

    type_names = {v: k for k, v in spec.TOKEN_TYPES.items()}
    byte_level = vocab.kind == spec.TOKENIZER_KIND_BYTE_BPE
    w.add_tokenizer_model("gpt2" if byte_level else "llama")
    if byte_level:
        w.add_tokenizer_pre("llama-bpe" if vocab.flags & spec.TOKENIZER_FLAG_LLAMA3_SPLIT else
                            "smollm" if vocab.flags & spec.TOKENIZER_FLAG_SPLIT_DIGITS else "gpt-2")
    else:
        w.add_tokenizer_pre("default")
    w.add_token_list(list(vocab.pieces))
    if byte_level:
        w.add_token_merges(byte_level_merges(vocab))
    else:
        w.add_token_scores([float(s) for s in vocab.scores])
    w.add_token_types([int(getattr(gguf.TokenType, type_names.get(t, "NORMAL"))) for t in vocab.types])
    if vocab.bos_id >= 0:
        w.add_bos_token_id(vocab.bos_id)
    w.add_add_bos_token(vocab.bos_id >= 0 if byte_level else True)
    if vocab.eos_id >= 0:
        w.add_eos_token_id(vocab.eos_id)
    if vocab.unk_id >= 0:
        w.add_unk_token_id(vocab.unk_id)
    if vocab.pad_id >= 0:
        w.add_pad_token_id(vocab.pad_id)
    w.add_add_eos_token(False)
    extra = [i for i in vocab.all_stop_ids() if i != vocab.eos_id]
    if extra:
        w.add_eot_token_id(extra[0])
    if len(extra) > 1:
        w.add_eom_token_id(extra[1])
    if vocab.chat_template:
        w.add_chat_template(vocab.chat_template)


def byte_level_merges(vocab) -> list:
    """The "left right" merges of a byte-level vocabulary in rank order: each piece a merge made (its
    split length > 0), cut where that merge joined it, highest score (lowest rank) first."""
    made = [i for i, k in enumerate(vocab.splits or []) if k > 0]
    made.sort(key=lambda i: (-vocab.scores[i], i))
    out = []
    for i in made:
        raw = vocab.pieces[i].encode()
        out.append(raw[:vocab.splits[i]].decode() + " " + raw[vocab.splits[i]:].decode())
    return out


def write_gguf(path: pathlib.Path, cfg: Config, vocab, seed: int, std: float, name: str) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(cfg.seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.hidden_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    write_gguf_vocab(w, vocab)
    for role, layer in cfg.tensor_keys():
        rows, cols = cfg.tensor_shape(role)
        shape = (cols,) if role in NORM_ROLES else (rows, cols)
        # norms stay float32 in GGUF (llama.cpp's converter does the same)
        dtype = np.float32 if role in NORM_ROLES else np.float16
        w.add_tensor_info(tensor_name(role, layer), shape, np.dtype(dtype), rows * cols * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for role, _layer, t in iter_tensors(cfg, seed, std):
        w.write_tensor_data(t.astype(np.float32) if role in NORM_ROLES else t)
    w.close()


# ---------------------------------------------------------------------------------------------
# Command line


def load_vocab(path):
    if path is None:
        return None
    from elk import tokenizer

    return tokenizer.load(path)


def synthesize(preset: str, out, *, vocab_path=None, seed: int = 0, std: float = 0.02, fmt=None,
               quant: str = "f16", recipe=None) -> pathlib.Path:
    """Write the synthetic model `preset` to `out` as fmt 'hf' | 'gguf' | 'elk' (default: from
    the suffix of out: .gguf, .elk, otherwise a Hugging Face folder)."""
    out = pathlib.Path(out)
    vocab_path = pathlib.Path(vocab_path) if vocab_path else None
    fmt = fmt or {".gguf": "gguf", ".elk": "elk"}.get(out.suffix, "hf")
    preset_config(preset)  # unknown preset: say so before reading anything
    if fmt != "elk" and (quant != "f16" or recipe):
        # GGUF and HF outputs are float16; ignoring the option would write a file named for one
        # type that holds another (and a comparison with llama.cpp on unequal weights)
        raise SynthError(f"--quant/--recipe apply to .elk output only; the {fmt} output is float16 "
                         "(quantize a GGUF with llama-quantize --pure, docs/performance.md)")
    vocab = load_vocab(vocab_path)
    if vocab is None and fmt != "hf":
        raise SynthError(f"the {fmt} output needs --vocab (tokenizer.model, tokenizer.json, a GGUF or tokenizer.bin)")
    cfg = preset_config(preset, vocab)
    try:
        _write(preset, out, fmt, cfg, vocab, vocab_path, seed, std, quant, recipe)
    except OSError as e:  # a missing folder, a full disk, no permission: one line, as elk pack says it
        raise SynthError(f"{e.filename or out}: cannot write ({e.strerror or e})") from None
    return out


def _write(preset, out, fmt, cfg, vocab, vocab_path, seed, std, quant, recipe) -> None:
    """The writer for one output format (synthesize has checked the arguments)."""
    if fmt == "hf" and out.suffix == ".safetensors":
        # the file itself, plus config.json (and the tokenizer) beside it: that folder is what
        # Hugging Face readers (elk's included) open
        if (out.parent / "config.json").exists():
            raise SynthError(f"{out.parent}: already has a config.json; write into a new folder (-o DIR)")
        write_hf(out.parent, cfg, seed, std, vocab_path, weights_name=out.name)
    elif fmt == "hf":
        write_hf(out, cfg, seed, std, vocab_path)
    elif fmt == "gguf":
        write_gguf(out, cfg, vocab, seed, std, f"synth-{preset}")
    elif fmt == "elk":
        from elk import image

        image.write_image(out, synth_model(preset, vocab=vocab, seed=seed, std=std), quant=quant, recipe=recipe)
    else:
        raise SynthError(f"unknown output format '{fmt}' (hf, gguf, elk)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m elk.models.synth", description=__doc__.split("\n\n")[0])
    p.add_argument("preset", help=f"model shape: {', '.join(PRESETS)}")
    p.add_argument("-o", "--out", required=True, help="folder (HF), .safetensors (+ config.json beside it), .gguf or .elk")
    p.add_argument("--vocab", help="tokenizer.model / tokenizer.json / vocab GGUF / tokenizer.bin")
    p.add_argument("--gguf", action="store_true", help="write GGUF whatever the suffix")
    p.add_argument("--quant", default="f16", help="image type for .elk output (f32, f16, q8_0, q4_0)")
    p.add_argument("--recipe", help="per-tensor recipe for .elk output")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--std", type=float, default=0.02, help="weight standard deviation")
    a = p.parse_args(argv)
    try:
        out = synthesize(a.preset, a.out, vocab_path=a.vocab, seed=a.seed, std=a.std,
                         fmt="gguf" if a.gguf else None, quant=a.quant, recipe=a.recipe)
    except ElkError as e:
        print(f"elk: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
