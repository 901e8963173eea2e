"""`elk` subcommands of the run area: run (generate text), tokenize, detokenize. Argument parsing
and printing only; the work is elk.runtime.Model (the C runtime through cffi)."""

import sys


def register(sub) -> None:
    p = sub.add_parser("run", help="generate text from an image with the C runtime")
    p.add_argument("image", help="model image (.elk)")
    p.add_argument("-p", "--prompt", default="", help="prompt text (default: empty, generation starts at BOS)")
    from elk.options import CLI_TYPES as T  # ranges: docs/runtime.md

    p.add_argument("-n", "--max-tokens", type=T["max_tokens"], default=256,
                   help="most tokens to generate, >= 1 (default 256)")
    p.add_argument("--temperature", type=T["temperature"], default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=T["top_k"], default=40, help="keep the k most likely tokens, 0 = off (default 40)")
    p.add_argument("--top-p", type=T["top_p"], default=0.95, help="nucleus mass in (0, 1], 1 = off (default 0.95)")
    p.add_argument("--repeat-penalty", type=T["repeat_penalty"], default=1.0,
                   help="penalty for recent tokens, > 0, 1 = off")
    p.add_argument("--seed", type=T["seed"], default=None, help="random seed 0..2^64-1 (default: random)")
    p.add_argument("--threads", type=T["threads"], default=None, help="worker threads 1..64 (default: all CPUs)")
    p.add_argument("--ctx", type=T["ctx"], default=None,
                   help="context length: prompt + generated tokens (default: the model's seq_len)")
    p.add_argument("--kernels", default=None, help="force a kernel table (ref, avx2, neon, ...)")
    p.add_argument("--npu", choices=("sim", "litert", "off"), default=None,
                   help="prefill through the image's NPU section: simulated NPU, LiteRT, or off "
                        "(default: off, sim when --npu-board has an NPU)")
    p.add_argument("--npu-board", default=None, help="board whose NPU the sim's cost model uses (boards/)")
    p.add_argument("--npu-accel", choices=("cpu", "gpu", "npu"), default="cpu",
                   help="with --npu litert: LiteRT accelerator (CPU kept as fallback; default cpu)")
    p.add_argument("--litert-dispatch", default=None, help="with --npu-accel npu: the vendor dispatch library folder")
    p.set_defaults(func=_run)

    p = sub.add_parser("tokenize", help="print the token ids of a text")
    p.add_argument("image")
    p.add_argument("text")
    p.add_argument("--no-bos", action="store_true", help="do not prepend BOS")
    p.set_defaults(func=_tokenize)

    p = sub.add_parser("detokenize", help="print the text of token ids")
    p.add_argument("image")
    p.add_argument("ids", nargs="+", type=int)
    p.set_defaults(func=_detokenize)


def _open(args, **kw):
    from elk.runtime import Model

    return Model(args.image, **kw)


def _run(args) -> int:
    from elk.npu.offload import attach, resolve_backend, stats_line
    from elk.runtime import context_notice

    from elk.chat import choose_seed, seed_note

    seed, drawn = choose_seed(args.seed)  # drawn here, not in the runtime, so it can be said
    with _open(args, n_ctx=args.ctx, threads=args.threads, kernels=args.kernels) as m:
        npu = attach(m, resolve_backend(args.npu, args.npu_board, args.image), args.npu_board, accel=args.npu_accel,
                     dispatch_dir=args.litert_dispatch)
        pieces = m.generate(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, repeat_penalty=args.repeat_penalty,
                            seed=seed)
        if drawn and args.temperature > 0:  # after the prompt was taken; greedy text does not depend on it
            print(seed_note(seed, "this run"), file=sys.stderr, flush=True)
        out = sys.stdout
        out.write(args.prompt.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))  # argv bytes
        out.flush()
        for piece in pieces:
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()
        print(m.stats.summary(), file=sys.stderr)
        notice = context_notice(m, args.max_tokens)
        if notice:
            print(f"elk: {notice}", file=sys.stderr)
        if npu is not None:
            print(stats_line(npu, m.stats), file=sys.stderr)
    return 0


def _tokenize(args) -> int:
    with _open(args, threads=1) as m:
        print(" ".join(str(i) for i in m.tokenize(args.text, bos=not args.no_bos)))
    return 0


def _detokenize(args) -> int:
    with _open(args, threads=1) as m:
        print(m.detokenize(args.ids))
    return 0
