"""Train the demo model that ships with elk: a SentencePiece BPE vocabulary and a tiny Llama (GQA, tied
embeddings, llama2.c's interleaved RoPE) on the corpus make_corpus.py generates, then export it as a
llama2.c version-0 checkpoint (float32) that `elk pack` reads. CPU only, one thread, minutes not hours.

    pip install torch==2.13.0          # the CPU wheel
    python models/demo/train.py        # writes models/demo/demo.bin and models/demo/tokenizer.model

Not here: anything the runtime uses; this script only produces the two files above.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import struct
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_corpus  # noqa: E402  (the sibling script)


# ---------------------------------------------------------------------------------------------
# Vocabulary


def train_vocab(corpus: pathlib.Path, prefix: pathlib.Path, vocab_size: int) -> pathlib.Path:
    """SentencePiece BPE as Llama's: identity normalization, dummy prefix, byte fallback, digits split."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, character_coverage=1.0, split_digits=True,
        allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2, max_sentence_length=8192)
    return prefix.with_suffix(".model")


def tokenize_stories(model: pathlib.Path, text: str) -> list[list[int]]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    return [[sp.bos_id()] + ids for ids in sp.encode([s for s in text.split("\n\n") if s.strip()])]


# ---------------------------------------------------------------------------------------------
# The model (llama2.c's model.py shape: weights (out, in), RoPE on consecutive pairs)


def build_model(cfg: dict):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class RMSNorm(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg["norm_eps"]) * self.weight

    def rope(x, cos, sin):  # x (B, T, H, D): rotate pairs (x[2i], x[2i+1]) by angle pos * theta^(-2i/D)
        xr, xi = x.float().reshape(*x.shape[:-1], -1, 2).unbind(-1)
        c, s = cos[None, :, None, :], sin[None, :, None, :]
        return torch.stack([xr * c - xi * s, xr * s + xi * c], dim=-1).flatten(3)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            d, hd, kv = cfg["dim"], cfg["dim"] // cfg["n_heads"], cfg["n_kv_heads"]
            self.wq = nn.Linear(d, cfg["n_heads"] * hd, bias=False)
            self.wk = nn.Linear(d, kv * hd, bias=False)
            self.wv = nn.Linear(d, kv * hd, bias=False)
            self.wo = nn.Linear(cfg["n_heads"] * hd, d, bias=False)
            self.w1 = nn.Linear(d, cfg["hidden_dim"], bias=False)
            self.w2 = nn.Linear(cfg["hidden_dim"], d, bias=False)
            self.w3 = nn.Linear(d, cfg["hidden_dim"], bias=False)
            self.attention_norm, self.ffn_norm = RMSNorm(d), RMSNorm(d)

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            H, KV = cfg["n_heads"], cfg["n_kv_heads"]
            hd = cfg["dim"] // H
            h = self.attention_norm(x)
            q = rope(self.wq(h).view(B, T, H, hd), cos, sin)
            k = rope(self.wk(h).view(B, T, KV, hd), cos, sin)
            v = self.wv(h).view(B, T, KV, hd)
            k = k.repeat_interleave(H // KV, dim=2)  # query head j uses kv head j // (H / KV)
            v = v.repeat_interleave(H // KV, dim=2)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True)
            x = x + self.wo(a.transpose(1, 2).reshape(B, T, H * hd))
            h = self.ffn_norm(x)
            return x + self.w2(F.silu(self.w1(h)) * self.w3(h))

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_embeddings = nn.Embedding(cfg["vocab_size"], cfg["dim"])
            self.layers = nn.ModuleList(Block() for _ in range(cfg["n_layers"]))
            self.norm = RMSNorm(cfg["dim"])
            hd = cfg["dim"] // cfg["n_heads"]
            freqs = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
            angles = torch.outer(torch.arange(cfg["seq_len"]).float(), freqs)  # (seq_len, hd / 2)
            self.register_buffer("cos", angles.cos(), persistent=False)
            self.register_buffer("sin", angles.sin(), persistent=False)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * cfg["n_layers"]) if name.endswith(("wo.weight", "w2.weight")) else 0.02
                    torch.nn.init.normal_(p, 0.0, std)

        def forward(self, ids):
            T = ids.shape[1]
            x = self.tok_embeddings(ids)
            for layer in self.layers:
                x = layer(x, self.cos[:T], self.sin[:T])
            return self.norm(x) @ self.tok_embeddings.weight.T  # tied output

    return Llama()


# ---------------------------------------------------------------------------------------------
# Export: llama2.c version 0 (run.c's legacy format)


def export_llama2c(model, cfg: dict, path: pathlib.Path) -> None:
    """7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size > 0 = shared output, seq_len),
    then float32: embedding, per-kind stacks over layers (rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3),
    rms_final, freq_cis_real, freq_cis_imag (seq_len, head_dim / 2)."""
    L = model.layers
    parts = [model.tok_embeddings.weight]
    for get in (lambda b: b.attention_norm.weight, lambda b: b.wq.weight, lambda b: b.wk.weight,
                lambda b: b.wv.weight, lambda b: b.wo.weight, lambda b: b.ffn_norm.weight,
                lambda b: b.w1.weight, lambda b: b.w2.weight, lambda b: b.w3.weight):
        parts += [get(b) for b in L]
    parts += [model.norm.weight, model.cos, model.sin]
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", cfg["dim"], cfg["hidden_dim"], cfg["n_layers"], cfg["n_heads"],
                            cfg["n_kv_heads"], cfg["vocab_size"], cfg["seq_len"]))
        for t in parts:
            f.write(t.detach().float().contiguous().numpy().astype("<f4").tobytes())


# ---------------------------------------------------------------------------------------------
# Training


def batches(stream: np.ndarray, batch: int, seq_len: int, rng: np.random.Generator):
    import torch

    while True:
        starts = rng.integers(0, len(stream) - seq_len - 1, batch)
        chunk = np.stack([stream[s : s + seq_len + 1] for s in starts]).astype(np.int64)
        yield torch.from_numpy(chunk[:, :-1]), torch.from_numpy(chunk[:, 1:])


def evaluate(model, stream: np.ndarray, seq_len: int, n: int = 16) -> float:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x, y = next(batches(stream, n, seq_len, rng))
    with torch.no_grad():
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()


def greedy(model, sp, prompt: str, n: int, seq_len: int) -> str:
    import torch

    ids = [sp.bos_id()] + sp.encode(prompt)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids[-seq_len:]]))[0, -1].argmax())
            if nxt in (sp.bos_id(), sp.eos_id()):
                break
            ids.append(nxt)
    return sp.decode(ids[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description="train the elk demo model")
    ap.add_argument("--out-dir", type=pathlib.Path, default=HERE)
    ap.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/elk-demo-train"))
    ap.add_argument("--stories", type=int, default=16000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--max-minutes", type=float, default=15.0, help="stop early (and still export) after this")
    ap.add_argument("--stop-at", type=int, default=None,
                    help="stop at this step, keeping the --steps schedule (replays a time-budget stop)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import sentencepiece as spm
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    corpus = args.work / "corpus.txt"
    text = make_corpus.make_corpus(args.stories, args.seed)
    corpus.write_text(text.replace("\n\n", "\n"), encoding="utf-8")  # one story per line for the trainer
    tok_path = train_vocab(corpus, args.work / "tokenizer", args.vocab)
    sp = spm.SentencePieceProcessor(model_file=str(tok_path))
    stories = tokenize_stories(tok_path, text)
    n_val = max(1, len(stories) // 50)
    train_stream = np.concatenate([np.array(s, dtype=np.int32) for s in stories[n_val:]])
    val_stream = np.concatenate([np.array(s, dtype=np.int32) for s in stories[:n_val]])
    print(f"corpus {len(text) / 1e6:.1f} MB, {len(train_stream)} train tokens "
          f"({len(text) / (len(train_stream) + len(val_stream)):.2f} chars/token), {time.time() - t0:.0f} s")

    cfg = dict(dim=args.dim, hidden_dim=args.hidden, n_layers=args.layers, n_heads=args.heads,
               n_kv_heads=args.kv_heads, vocab_size=sp.get_piece_size(), seq_len=args.seq_len,
               norm_eps=1e-5, rope_theta=10000.0)
    model = build_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {n_params} parameters: {json.dumps(cfg)}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, args.steps // 20)
    data = batches(train_stream, args.batch, args.seq_len, np.random.default_rng(args.seed))
    t_train, log = time.time(), []
    for step in range(1, args.steps + 1):
        lr = args.lr * min(step / warmup, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = next(data)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        minutes = (time.time() - t_train) / 60
        if step % 100 == 0 or step == args.steps or minutes > args.max_minutes:
            val = evaluate(model, val_stream, args.seq_len)
            log.append(dict(step=step, train_loss=round(loss.item(), 4), val_loss=round(val, 4),
                            minutes=round(minutes, 2)))
            print(json.dumps(log[-1]), flush=True)
        if minutes > args.max_minutes or step == args.stop_at:
            if step % 100 and step != args.steps and minutes <= args.max_minutes:
                val = evaluate(model, val_stream, args.seq_len)
                log.append(dict(step=step, train_loss=round(loss.item(), 4), val_loss=round(val, 4),
                                minutes=round(minutes, 2)))
                print(json.dumps(log[-1]), flush=True)
            print(f"stopped at step {step} ({minutes:.1f} min)")
            break

    export_llama2c(model, cfg, args.out_dir / "demo.bin")
    (args.out_dir / "tokenizer.model").write_bytes(tok_path.read_bytes())
    sample = greedy(model, sp, "Once upon a time", 120, args.seq_len)
    summary = dict(cfg=cfg, params=n_params, steps=log[-1]["step"], batch=args.batch,
                   tokens_seen=log[-1]["step"] * args.batch * args.seq_len, log=log,
                   train_minutes=round((time.time() - t_train) / 60, 1), sample=sample)
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out_dir / 'demo.bin'} ({(args.out_dir / 'demo.bin').stat().st_size} bytes)")
    print("greedy sample:", sample)


if __name__ == "__main__":
    main()
