"""`elk` subcommands of the pack area (pack, info, verify, eval). No logic here: each command calls
a library function (elk.convert.pack, elk.image, elk.evaluate) and prints what it returns."""

import sys


def register(sub) -> None:
    p = sub.add_parser("pack", help="convert a checkpoint (llama2.c .bin, GGUF, HF folder or hub id) to an image")
    p.add_argument("src", help="checkpoint file, Hugging Face folder, or hub id (org/name)")
    p.add_argument("-o", "--output", required=True, help="image to write (model.elk)")
    p.add_argument("--quant", default="f32", help="default tensor type: f32, f16, q8_0, q4_0 (default f32)")
    p.add_argument("--recipe", help="per-tensor types: inline 'token_embd=q8_0,output=q8_0,*=q4_0' or a file")
    p.add_argument("--tokenizer", help="tokenizer file (llama2.c .bin, tokenizer.model, tokenizer.json); "
                                       "required for llama2.c checkpoints")
    p.add_argument("--name", help="model name stored in the header (default: from the source)")
    p.add_argument("--security-counter", type=int, default=0, help="anti-rollback counter (default 0)")
    p.add_argument("--quiet", action="store_true", help="do not print the per-tensor report")
    sys_group = p.add_mutually_exclusive_group()
    sys_group.add_argument("--system-prompt", metavar="TEXT",
                           help="ChatML models: the system prompt that opens each conversation on the board, "
                                "instead of the checkpoint's default (recorded as metadata chat.system)")
    sys_group.add_argument("--no-system-prompt", action="store_true",
                           help="record no system prompt, even when the checkpoint's template has a default")
    # NPU export (elk.npu): on request, or when --board names a board with an NPU.
    p.add_argument("--npu", action="store_true", help="add an NPU section (int8 .tflite per linear layer)")
    p.add_argument("--board", help="target board; a board with an NPU implies --npu and sets the chunk")
    p.add_argument("--npu-chunk", type=int, help="prefill tokens per NPU call (default: board's, else 32)")
    p.add_argument("--npu-calib", help="calibration text file (paragraphs; default: built-in stories)")
    p.add_argument("--npu-outliers", type=int, default=None,
                   help="most outlier channels per layer kept on the CPU (default cols/64; 0 = none)")
    p.set_defaults(func=_pack)

    p = sub.add_parser("info", help="show an image's header, config, tokenizer and tensor table")
    p.add_argument("image")
    p.add_argument("--json", action="store_true", help="print it as one JSON object")
    p.set_defaults(func=_info)

    p = sub.add_parser("verify", help="check an image's header CRC, payload SHA-256 and structure")
    p.add_argument("image")
    p.add_argument("--key", default=None, help="owner public key: also require a valid signature by it (elk.trust)")
    p.set_defaults(func=_verify)

    p = sub.add_parser("eval", help="compare a (quantized) image with a float32 reference image")
    p.add_argument("image")
    p.add_argument("--ref", required=True, help="float32 image of the same model")
    p.add_argument("--text", default="builtin", help="text FILE to teacher-force, or 'builtin' (default)")
    p.add_argument("--max-tokens", type=int, default=256, help="tokens of the text to score (default 256)")
    p.add_argument("--engine", choices=("auto", "runtime", "reference"), default="auto",
                   help="logits from the C runtime or the numpy reference (default: runtime if built)")
    p.set_defaults(func=_eval)


def _pack(args) -> int:
    from elk.convert.pack import pack, report_lines
    from elk.npu.offload import board_npu, describe, pack_with_npu

    from elk.convert.pack import KEEP

    system = None if args.no_system_prompt else KEEP if args.system_prompt is None else args.system_prompt
    common = dict(quant=args.quant, recipe=args.recipe, tokenizer=args.tokenizer, name=args.name,
                  security_counter=args.security_counter, progress=sys.stderr.isatty(), system_prompt=system)
    npu = args.npu or board_npu(args.board)
    if npu:
        result, npu_table = pack_with_npu(args.src, args.output, board=args.board, chunk=args.npu_chunk,
                                  calib_text=args.npu_calib, max_outliers=args.npu_outliers, **common)
    else:
        result = pack(args.src, args.output, **common)
    lines = report_lines(result)
    print("\n".join(lines[-1:] if args.quiet else lines))
    if npu:
        print(describe(npu_table)[0])  # the head and entry table as written (not the blobs: bounded memory)
    for w in result.warnings:
        print(f"elk: warning: {w}", file=sys.stderr)
    return 0


def _info(args) -> int:
    from elk.convert.pack import info_dict, info_lines

    if args.json:
        import json

        print(json.dumps(info_dict(args.image), indent=1))
        return 0
    print("\n".join(info_lines(args.image)))
    return 0


def _verify(args) -> int:
    from elk.image import verify_image

    report = verify_image(args.image)
    from elk.trust import extend_report  # trailer + signature checks (trust area)

    extend_report(report, args.image, getattr(args, "key", None))
    print("\n".join(report.lines()))
    print(f"{args.image}: {'OK' if report.ok else 'FAILED'}")
    return 0 if report.ok else 2


def _eval(args) -> int:
    from elk.evaluate import evaluate

    result = evaluate(args.image, args.ref, text=args.text, max_tokens=args.max_tokens, engine=args.engine)
    print("\n".join(result.lines()))
    return 0
