"""A TinyLlama-shaped test model with random weights at reduced size (dim 256, 8 query / 4 KV heads,
SwiGLU 704, the 512-token vocabulary of tok512), for NPU export tests. A few input channels get large
RMSNorm gains, the way trained LLMs develop persistent activation outlier channels; without them a
random model would never exercise shadow-outlier handling. Not a trained model: its text is noise."""

from __future__ import annotations

import numpy as np

from elk.convert import Config, Model, Tensor

OUTLIER_CHANNELS = (5, 77, 190)
OUTLIER_GAIN = 40.0


def tinyllama_shaped(vocab, n_layers: int = 2, seed: int = 0, outliers=OUTLIER_CHANNELS) -> Model:
    dim, hidden, n_heads, n_kv = 256, 704, 8, 4
    cfg = Config(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                 vocab_size=len(vocab.pieces), seq_len=256, rope_theta=10000.0, norm_eps=1e-5)
    rng = np.random.default_rng(seed)
    tensors = {}

    def put(role, layer, a):
        tensors[(role, layer)] = Tensor.of(a.astype(np.float32))

    put("TOK_EMBD", 0, rng.standard_normal((cfg.vocab_size, dim)) * 0.5)
    for L in range(n_layers):
        for role in ("ATTN_NORM", "FFN_NORM"):
            g = 1.0 + 0.1 * rng.standard_normal(dim)
            g[list(outliers)] *= OUTLIER_GAIN
            put(role, L, g)
        for role in ("WQ", "WK", "WV", "WO", "W1", "W2", "W3"):
            rows, cols = cfg.tensor_shape(role)
            put(role, L, rng.standard_normal((rows, cols)) / np.sqrt(cols))
    put("OUTPUT_NORM", 0, np.ones(dim))
    put("OUTPUT", 0, rng.standard_normal((cfg.vocab_size, dim)) * (3.0 / np.sqrt(dim)))
    return Model(cfg, tensors, vocab=vocab, name="tinyllama-shaped-test", source="elk.npu.testmodel")


def main(argv=None) -> int:
    """python -m elk.npu.testmodel --vocab tok512.bin -o tiny.elk [--layers 2] [--seed 1] [--max-outliers N]
    writes the model as an f32 image with an NPU section (chunk 32)."""
    import argparse
    import sys

    from elk import image as im
    from elk import tokenizer as tok
    from elk.errors import ElkError
    from elk.npu.calibrate import build_section
    from elk.npu.section import pack_section

    p = argparse.ArgumentParser(prog="python -m elk.npu.testmodel", description=main.__doc__)
    p.add_argument("--vocab", required=True, help="tokenizer file (tok512.bin)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-outliers", type=int, default=None, help="per layer (default cols/64; 0 = none)")
    args = p.parse_args(argv)
    try:
        m = tinyllama_shaped(tok.load(args.vocab), n_layers=args.layers, seed=args.seed)
        sec = build_section(m, chunk=32, max_outliers=args.max_outliers)
        im.write_image(args.output, m, npu=pack_section(sec))
    except ElkError as e:
        print(f"elk: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
