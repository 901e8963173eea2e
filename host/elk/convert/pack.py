"""What `elk pack` and `elk info` do, as library functions: read a checkpoint, pack it with a recipe,
and render the per-tensor quality report and an image summary as text lines.

Not here: the byte layout (elk.image) or quantization numerics (elk.quant).
"""

from __future__ import annotations

import sys
import time

from elk import image as im
from elk import spec
from elk import tokenizer as tk
from elk.convert import load_model
from elk.errors import ElkError


KEEP = "keep"  # system_prompt: the checkpoint's own default (or, re-packing an image, the image's)
SYSTEM_PROMPT_MAX = 32768  # bytes: the board's longest prompt; a longer system block leaves no room for one


def check_system_prompt(system_prompt) -> None:
    """--system-prompt's text, checked before the checkpoint is read: one line naming the problem."""
    if system_prompt in (KEEP, None):
        return
    try:
        size = len(system_prompt.encode("utf-8"))
    except UnicodeEncodeError:  # bytes from argv that are not UTF-8 (surrogateescape)
        raise ElkError("--system-prompt is not valid UTF-8 text") from None
    if not system_prompt.strip():
        raise ElkError("--system-prompt is empty; --no-system-prompt records none")
    if "\0" in system_prompt:
        raise ElkError("--system-prompt contains a NUL character")
    if size > SYSTEM_PROMPT_MAX:
        raise ElkError(f"--system-prompt is {size} bytes; at most {SYSTEM_PROMPT_MAX} (the board's prompt limit)")


def set_system_prompt(model, system_prompt, src=None):
    """The conversation-opening system prompt the image records (METADATA chat.system, used by the board's
    ChatML wrapper): KEEP the checkpoint's default (an image being re-packed keeps its own), a text to
    replace it, or None to record none. A text needs a ChatML model: other templates write no system block."""
    import dataclasses

    from elk.convert import detect_chat_template

    chat = model.chat_template or detect_chat_template(getattr(model.vocab, "chat_template", None))
    if system_prompt == KEEP:
        if src is not None and chat == "chatml" and "chat.system" not in (model.metadata or {}):
            old = _image_system_prompt(src)
            if old:
                model.metadata = {**(model.metadata or {}), "chat.system": old}
        return model
    model.chat_template = chat  # decided here, so dropping the template text below cannot change it
    if getattr(model.vocab, "chat_template", None) is not None:  # the default is read from this text
        model.vocab = dataclasses.replace(model.vocab, chat_template=None)
    model.metadata = {k: v for k, v in (model.metadata or {}).items() if k != "chat.system"}
    if system_prompt is not None:
        if chat != "chatml":
            raise ElkError(f"--system-prompt: {model.source or 'the model'} has "
                           f"{'the ' + chat + ' chat template' if chat else 'no chat template'}; the board writes a "
                           "system prompt only in ChatML (<|im_start|>) conversations")
        model.metadata["chat.system"] = system_prompt
    return model


def _image_system_prompt(src):
    """chat.system of `src` when it is an elk image (re-packing one keeps it), else None."""
    import pathlib

    path = pathlib.Path(str(src))
    try:
        if not path.is_file() or path.open("rb").read(4) != spec.IMAGE_MAGIC.to_bytes(4, "little"):
            return None
        return im.read_image(path).metadata.get("chat.system")
    except (OSError, ElkError):
        return None


def pack(src, out, *, quant="f32", recipe=None, tokenizer=None, name=None, security_counter=0,
         npu=None, progress=False, system_prompt=KEEP, **options) -> im.PackResult:
    """Read `src` (llama2.c .bin, GGUF, HF folder or hub id) and write the image `out`. `system_prompt`:
    see set_system_prompt."""
    from elk import quant as q

    q.parse_recipe(quant, recipe)  # a typo in the recipe fails before a 2 GB checkpoint is read
    check_system_prompt(system_prompt)
    model = set_system_prompt(load_model(src, tokenizer=tokenizer, **options), system_prompt, src)
    bar = ProgressBar() if progress else None
    result = im.write_image(out, model, quant=quant, recipe=recipe, security_counter=security_counter,
                            name=name, npu=npu, progress=bar)
    if bar:
        bar.close()
    return result


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most 10 times a second."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.last, self.drawn = stream, 0.0, False

    def __call__(self, done, total, name):
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        frac = done / total if total else 1.0
        bar = "#" * int(30 * frac)
        self.stream.write(f"\r[{bar:<30}] {100 * frac:5.1f}% {done / 2**20:8.1f} MiB  {name[:32]:<32}")
        self.stream.flush()
        self.drawn = True

    def close(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def fmt_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def report_lines(result: im.PackResult) -> list:
    """The per-tensor table `elk pack` prints: name, type, shape, bytes, RMSE, max |error|."""
    rows = [f"{'tensor':<28} {'type':<5} {'shape':>12} {'bytes':>11} {'rmse':>10} {'max_err':>10}"]
    by_type = {}
    for t in result.tensors:
        shape = f"{t.shape[0]}x{t.shape[1]}"
        line = f"{t.name:<28} {t.type:<5} {shape:>12} {t.nbytes:>11} {t.rmse:>10.3g} {t.max_err:>10.3g}"
        rows.append(line + (f"  ({t.note})" if t.note else ""))
        by_type[t.type] = by_type.get(t.type, 0) + t.nbytes
    summary = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in sorted(by_type.items()))
    fallbacks = sum(1 for t in result.tensors if t.note)
    rows.append(f"recipe {result.recipe}; {len(result.tensors)} tensors ({summary})"
                + (f"; {fallbacks} tensors fell back (see notes)" if fallbacks else ""))
    rows.append(f"wrote {result.path} ({fmt_bytes(result.image_size)}, {result.image_size} bytes)")
    return rows


def info_lines(path) -> list:
    """A readable summary of an image: header, config, tokenizer, metadata, tensor table, totals."""
    img = im.read_image(path)
    h, c = img.header, img.config
    out = [f"{img.path}: elk image v{h['version']}, {h['image_size']} bytes "
           f"({fmt_bytes(h['image_size'])}), alignment {h['alignment']}, security counter {h['security_counter']}"
           + (", trailer present" if img.trailer else "")]
    out.append(f"name: {h['name']}")
    sha = h["payload_sha256"]
    out.append(f"header crc32 0x{h['header_crc32']:08X}; payload sha256 {sha.hex() if isinstance(sha, bytes) else sha} "
               f"(as stored; elk verify recomputes both)")
    out.append(f"config: dim {c.dim}, hidden {c.hidden_dim}, layers {c.n_layers}, heads {c.n_heads}, "
               f"kv heads {c.n_kv_heads}, head_dim {c.head_dim}, vocab {c.vocab_size}, seq_len {c.seq_len}, "
               f"rope_theta {c.rope_theta:g}, norm_eps {c.norm_eps:g}, output {'tied' if c.tied_output else 'separate'}")
    try:
        v = img.vocab()
        kind = {tk.KIND_SPM: "SentencePiece BPE", tk.KIND_BYTE: "byte-level BPE"}.get(v.kind, str(v.kind))
        out.append(f"tokenizer: {len(v.pieces)} tokens ({kind}), bos {v.bos_id}, eos {v.eos_id}, unk {v.unk_id}, "
                   f"pad {v.pad_id}, flags 0x{v.flags:x}, stop ids {' '.join(map(str, v.all_stop_ids())) or 'none'}")
        special = [f"{i} {p}" for i, (p, kind) in enumerate(zip(v.pieces, v.types))
                   if kind == tk.CONTROL and p and not p.startswith("<pad_")]
        if special:
            out.append(f"special tokens: {', '.join(special[:12])}" + (f" (+{len(special) - 12} more)"
                                                                      if len(special) > 12 else ""))
    except Exception as e:  # noqa: BLE001 - the summary still shows the rest
        out.append(f"tokenizer: unreadable ({e})")
    out.append("sections: " + ", ".join(f"{k} @{off} {size} B" for k, (_, off, size) in img.sections.items()))
    for k, v in img.metadata.items():  # control characters escaped: one key, one line
        out.append(f"meta {k} = " + "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(v)))
    out.append(f"{'tensor':<28} {'type':<5} {'shape':>12} {'offset':>11} {'bytes':>11}")
    by_type, params = {}, 0
    for t in img.tensors.values():
        out.append(f"{t.name:<28} {t.type:<5} {f'{t.rows}x{t.cols}':>12} {t.offset:>11} {t.size:>11}")
        by_type[t.type] = by_type.get(t.type, 0) + t.size
        params += t.rows * t.cols
    total = sum(by_type.values())
    out.append(f"total: {len(img.tensors)} tensors, {params} parameters, {fmt_bytes(total)} of weights ("
               + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in sorted(by_type.items())) + ")")
    return out


def info_dict(path) -> dict:
    """What `elk info --json` prints: the same facts as info_lines, as plain JSON values."""
    import dataclasses

    img = im.read_image(path)
    h = img.header
    header = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in h.items()}
    try:
        v = img.vocab()
        tok = {"n_tokens": len(v.pieces), "kind": v.kind, "bos_id": v.bos_id, "eos_id": v.eos_id, "unk_id": v.unk_id,
               "pad_id": v.pad_id, "flags": v.flags, "stop_ids": v.all_stop_ids(),
               "special": {str(i): p for i, (p, kind) in enumerate(zip(v.pieces, v.types)) if kind == tk.CONTROL}}
    except Exception as e:  # noqa: BLE001 - reported, like the text summary
        tok = {"error": str(e)}
    tensors = [{"name": t.name, "type": t.type, "role": t.role, "layer": t.layer, "rows": t.rows, "cols": t.cols,
                "offset": t.offset, "bytes": t.size} for t in img.tensors.values()]
    return {"path": str(img.path), "header": header, "config": dataclasses.asdict(img.config), "tokenizer": tok,
            "sections": {k: {"version": ver, "offset": off, "size": size} for k, (ver, off, size) in img.sections.items()},
            "metadata": dict(img.metadata), "trailer": bool(img.trailer), "tensors": tensors,
            "totals": {"tensors": len(tensors), "parameters": sum(t["rows"] * t["cols"] for t in tensors),
                       "bytes": sum(t["bytes"] for t in tensors)}}
