"""`elk npu` subcommands: info (describe an image's NPU section), check (sim vs LiteRT per layer),
eval (CPU vs NPU-prefill logits), time (CPU prefill vs simulated NPU), export (each layer's .tflite).
Parsing and printing only; the work is in elk.npu."""

import sys


def register(sub) -> None:
    p = sub.add_parser("npu", help="inspect, check and evaluate an image's NPU section")
    s = p.add_subparsers(dest="npu_command", metavar="NPU_COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    q = s.add_parser("info", help="describe the NPU section (layers, scales, outlier channels)")
    q.add_argument("image")
    q.set_defaults(func=_info)

    q = s.add_parser("check", help="every layer through the sim backend, numpy, LiteRT (C) and LiteRT (Python)")
    q.add_argument("image")
    q.add_argument("--no-litert", action="store_true", help="sim vs numpy only")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_check)

    q = s.add_parser("eval", help="logits with NPU prefill vs the CPU path (top-1 agreement, KL)")
    q.add_argument("image")
    q.add_argument("-p", "--prompt", action="append", help="prompt (repeatable; default: two built-in ones)")
    q.add_argument("--npu", choices=("sim", "litert"), default="sim")
    q.add_argument("--npu-board", default=None, help="board whose NPU the sim's cost model uses")
    q.set_defaults(func=_eval)

    q = s.add_parser("time", help="measured CPU prefill next to the simulated NPU time on a board")
    q.add_argument("image")
    q.add_argument("--board", required=True, help="board with an NPU (boards/)")
    q.add_argument("-p", "--prompt", type=int, default=64, help="prompt tokens (default 64)")
    q.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    q.set_defaults(func=_time)

    q = s.add_parser("export", help="write each layer's .tflite into a folder (for vendor NPU toolchains)")
    q.add_argument("image")
    q.add_argument("-o", "--output", required=True, help="folder to write blk.<L>.<role>.tflite into")
    q.set_defaults(func=_export)


def _info(args) -> int:
    from elk.npu.offload import describe, section_of

    print("\n".join(describe(section_of(args.image))))
    return 0


def _check(args) -> int:
    from elk.npu.evaluate import check_report
    from elk.npu.offload import section_of

    lines, ok = check_report(section_of(args.image), seed=args.seed, litert=not args.no_litert)
    print("\n".join(lines))
    return 0 if ok else 1


DEFAULT_PROMPTS = ("Once upon a time", "The little dog ran to the park and saw a big tree. He wanted to climb it, "
                   "but the tree was very tall, so he sat down and")


def _eval(args) -> int:
    from elk.npu.evaluate import compare_runtime

    r = compare_runtime(args.image, args.prompt or list(DEFAULT_PROMPTS), args.npu, args.npu_board)
    print("\n".join(r.lines()))
    return 0


def _time(args) -> int:
    from elk.npu.evaluate import time_prefill

    print("\n".join(time_prefill(args.image, args.board, args.prompt, threads=args.threads).lines()))
    return 0


def _export(args) -> int:
    from elk.npu.offload import export_tflite, section_of

    paths = export_tflite(section_of(args.image), args.output)
    print(f"wrote {len(paths)} .tflite files to {args.output}", file=sys.stderr)
    return 0
