"""Make the golden Hugging Face Llama folders and their logits with transformers + torch (an
implementation independent of elk). Not run by the tests: they only read what this wrote.

    pip install torch transformers sentencepiece    # generation only, not a test dependency
    python tests/golden/make_hf_golden.py           # rewrites tests/golden/hf/

Each case is a tiny seeded random Llama (2 layers) saved with save_pretrained (safetensors) beside
hf/<case>.logits.npy: float32 [len(ids), vocab] logits of transformers' LlamaForCausalLM (eager
attention, float32 compute) for the ids in hf/cases.json. Weights are drawn on the storage dtype's grid
(bf16/f16 cases), so the saved file holds exactly the weights the logits were computed from. The
vocabulary is a 384-piece SentencePiece BPE (byte fallback, identity normalization, like Llama 2's)
trained here on generated text.
"""

from __future__ import annotations

import json
import pathlib
import random
import shutil
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "hf"
VOCAB = 384
TEXT = "Once upon a time, the little robot said: h\u00e9llo \u4e2d! 42"
# TinyLlama-1.1B-Chat-v1.0's chat template (Zephyr style), as its tokenizer_config.json has it.
ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content']"
          " + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + "
          "eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + "
          "eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n"
          "{% endif %}\n{% endfor %}")

# name -> what it exercises. "template": where the chat template goes ("config" = tokenizer_config.json
# like TinyLlama, "jinja" = chat_template.jinja like transformers >= 4.50 writes, None = no template).
CASES = {
    "gqa_untied_f32": dict(
        doc="GQA 8 query / 2 kv heads, untied lm_head, rope_theta 500000, rms_norm_eps 1e-6, float32, one file",
        config=dict(hidden_size=64, intermediate_size=96, num_attention_heads=8, num_key_value_heads=2,
                    rope_theta=500000.0, rms_norm_eps=1e-6, tie_word_embeddings=False),
        dtype="float32", shard=None, template="config"),
    "mha_tied_bf16_sharded": dict(
        doc="MHA 4 heads, tied embeddings (no lm_head in the files), rope_theta 10000, bfloat16, 3 shards + index",
        config=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
                    rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
        dtype="bfloat16", shard="40KB", template="jinja"),
    "headdim_f16_sharded": dict(
        doc="head_dim 32 with hidden 64 and 4 heads (q_proj 128x64), GQA 4/2, float16, shards + index",
        config=dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                    head_dim=32, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
        dtype="float16", shard="40KB", template=None),
}


# Long context (TinyLlama's 2048 positions): the weights of LONG_CASE with max_position_embeddings 2048
# (plain RoPE does not depend on it); seeded random ids; hf/long_context.npz keeps the ids, every
# transformers argmax and top-two margin, and the full logit rows at LONG_ROWS.
QUANT_CASES = ("gqa_untied_f32", "mha_tied_bf16_sharded")  # also get logits with ggml-quantized weights
GREEDY_N = 32  # greedy tokens generated after the ids, per case
LONG_CASE, LONG_N = "mha_tied_bf16_sharded", 2048
LONG_ROWS = list(range(0, LONG_N, 128)) + [LONG_N - 1]


def corpus(n_lines: int = 3000) -> str:
    rng = random.Random(0)
    words = ("the a little robot cat dog girl boy sun moon tree house ran saw said liked played happy big "
             "small red blue green and then but because once upon time day night friend").split()
    lines = []
    for _ in range(n_lines):
        s = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
        lines.append(s.capitalize() + rng.choice(".!?,"))
    return "\n".join(lines) + "\n"


def train_tokenizer(dst: pathlib.Path) -> None:
    """Trained from an iterator into memory, so no temporary path ends up in the model's trainer spec."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus().splitlines()), model_writer=model, vocab_size=VOCAB, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, num_threads=1, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        add_dummy_prefix=True, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, minloglevel=2)
    dst.write_bytes(model.getvalue())


def init_weights(model, dtype) -> None:
    """Random weights large enough that logits differ clearly between tokens and positions, drawn on
    the storage dtype's grid. Norm weights are random too (a (1 + w) convention error would show)."""
    import torch

    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                v = torch.rand(p.shape, generator=g) * 0.8 + 0.6
            elif "embed_tokens" in name:
                v = torch.randn(p.shape, generator=g)
            else:
                v = torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5 * 1.5
            p.copy_(v.to(dtype).to(torch.float32))


def write_tokenizer_json(tok_model: pathlib.Path, dst: pathlib.Path) -> None:
    """tokenizer.json as transformers' own SentencePiece converter writes it."""
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(tok_model, pathlib.Path(tmp) / "tokenizer.model")
        LlamaTokenizer.from_pretrained(tmp).save_pretrained(pathlib.Path(tmp) / "out")
        shutil.copy(pathlib.Path(tmp) / "out" / "tokenizer.json", dst)


def make_case(name: str, case: dict, tok_model: pathlib.Path, ids: list) -> dict:
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    dtype = getattr(torch, case["dtype"])
    cfg = LlamaConfig(vocab_size=VOCAB, num_hidden_layers=2, max_position_embeddings=256, bos_token_id=1,
                      eos_token_id=2, attn_implementation="eager", **case["config"])
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    init_weights(model, dtype)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].to(torch.float32).numpy()
    folder = OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    kw = {"max_shard_size": case["shard"]} if case["shard"] else {}
    model.to(dtype).save_pretrained(folder, safe_serialization=True, **kw)
    shutil.copy(tok_model, folder / "tokenizer.model")
    tcfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "pad_token": None, "tokenizer_class": "LlamaTokenizer", "legacy": False,
            "model_max_length": 256, "clean_up_tokenization_spaces": False}
    if case["template"] == "config":  # the TinyLlama file set: also tokenizer.json and special_tokens_map.json
        tcfg["chat_template"] = ZEPHYR
        write_tokenizer_json(tok_model, folder / "tokenizer.json")
        (folder / "special_tokens_map.json").write_text(json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"}, indent=2))
    elif case["template"] == "jinja":
        (folder / "chat_template.jinja").write_text(ZEPHYR)
    (folder / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2))
    # The saved folder must give the same logits back (what the test compares elk against).
    again = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        check = again(torch.tensor([ids])).logits[0].numpy()
    assert np.array_equal(check, logits), f"{name}: reloaded folder gives other logits"
    np.save(OUT / f"{name}.logits.npy", logits.astype(np.float32))
    greedy, margins = greedy_continuation(again, ids)
    if name in QUANT_CASES:
        quantized_logits(folder, name, ids)
    if name == LONG_CASE:
        long_context(again)
    return {"doc": case["doc"], "dtype": case["dtype"], "chat_template": case["template"],
            "files": sorted(p.name for p in folder.iterdir()), "greedy": greedy,
            "greedy_margins": margins}


def quantized_logits(folder, name, ids) -> None:
    """transformers' logits with every matrix (embedding and lm_head too) replaced by its Q8_0 / Q4_0
    round trip through the gguf package's ggml reference quantizer (llama.cpp's numbers, not elk's):
    what a correct q8_0 / q4_0 image approaches up to its own activation rounding. float16 is plenty."""
    import gguf
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM

    out = {}
    for qtype in ("Q8_0", "Q4_0"):
        t = getattr(gguf.GGMLQuantizationType, qtype)
        model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 2:
                    w = p.numpy()
                    p.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w, t), t).reshape(w.shape)))
            out[qtype.lower()] = model(torch.tensor([ids])).logits[0].numpy().astype(np.float16)
    np.savez_compressed(OUT / f"{name}.quantized_logits.npz", **out)


def greedy_continuation(model, ids, n_new: int = GREEDY_N):
    """transformers' greedy decode (generate, KV cache) after ids, and at each step the gap between the
    top two logits over max |logit| of that step (a tiny gap would make the comparison a coin toss)."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n_new, do_sample=False,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    tokens = out.sequences[0, len(ids):].tolist()
    margins = []
    for step in out.logits:
        top2 = torch.topk(step[0].float(), 2).values
        margins.append(round(float((top2[0] - top2[1]) / step[0].abs().max()), 6))
    return tokens, margins


def long_context(model) -> None:
    import numpy as np
    import torch

    rng = np.random.default_rng(7)
    ids = np.concatenate([[1], rng.integers(3, VOCAB, LONG_N - 1)]).astype(np.int32)
    model.config.max_position_embeddings = LONG_N
    with torch.no_grad():
        logits = model(torch.tensor(ids[None].astype(np.int64))).logits[0].numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    np.savez_compressed(OUT / "long_context.npz", ids=ids, argmax=logits.argmax(1).astype(np.int32),
                        margin=(top2[:, 1] - top2[:, 0]).astype(np.float32), rows=np.array(LONG_ROWS, np.int32),
                        logits=logits[LONG_ROWS].astype(np.float32), max_abs=np.float32(np.abs(logits).max()))


def main() -> int:
    import sentencepiece as spm
    import torch
    import transformers

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok_model = pathlib.Path(tmp) / "tokenizer.model"
        train_tokenizer(tok_model)
        sp = spm.SentencePieceProcessor(model_file=str(tok_model))
        assert sp.get_piece_size() == VOCAB
        ids = [sp.bos_id()] + sp.encode(TEXT)
        cases = {name: make_case(name, case, tok_model, ids) for name, case in CASES.items()}
    meta = {"made_by": f"tests/golden/make_hf_golden.py with transformers {transformers.__version__}, "
                       f"torch {torch.__version__}, sentencepiece {spm.__version__}",
            "text": TEXT, "ids": ids, "cases": cases,
            "long_context": {"case": LONG_CASE, "n": LONG_N, "max_position_embeddings": LONG_N,
                             "file": "long_context.npz"}}
    (OUT / "cases.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
