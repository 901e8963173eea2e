"""`elk` subcommands of the link area: emulate, ports, flash, chat, status, demo. No logic here:
each command calls a library function (elk.emulate, elk.flash, elk.chat, elk.demo)."""

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("emulate", help="run an emulated board behind a pseudo-terminal (prints its port)")
    p.add_argument("--board", default="host", help="board file name (default host; `elk boards` lists them) "
                                                   "or the path of a board .toml")
    p.add_argument("--flash", help="flash file to keep between runs (default: a temporary file)")
    p.add_argument("--flash-mb", type=int, help="emulated flash size in MiB (default: the board file's; "
                                                "rk3588's 64 GB cannot be mapped under qemu-user)")
    p.add_argument("--baud", type=int, help="line rate the board paces to; 0 = unthrottled "
                                            "(default: the board file's console baud)")
    p.add_argument("--threads", type=int, default=1, help="model threads on the board (default 1)")
    p.set_defaults(func=_emulate)

    p = sub.add_parser("ports", help="list serial ports and running emulated boards")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_ports)

    p = sub.add_parser("flash", help="write an image to a board's inactive slot, verify and commit it")
    p.add_argument("image")
    p.add_argument("--port", action="append", required=True, help="serial port; repeat to flash boards in parallel")
    p.add_argument("--baud", type=int, help="rate to flash at (default: the board's fastest)")
    p.add_argument("--connect-baud", type=int, default=115200, help="rate the board listens at (default 115200)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _connect_timeout_arg(p)
    p.set_defaults(func=_flash)

    p = sub.add_parser("chat", help="chat with the model on a board (interactive, or one prompt with -p)")
    p.add_argument("--port", required=True)
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("-p", "--prompt", help="one prompt: print the reply and exit")
    from elk.options import cli_int

    # >= 1 as elk run, /tokens and the console's set: 0 would only prefill the prompt and print nothing
    p.add_argument("-n", "--max-tokens", type=cli_int(1, 2**32 - 1), default=256,
                   help="most tokens per reply, 1 to 4294967295 (default 256)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default 0.8; 0 with -p)")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None,
                   help="random seed, 0 to 2^64-1 (default: drawn at random for the session; said on stderr "
                        "with -p and a temperature above 0, and in the interactive greeting)")
    p.add_argument("--raw", action="store_true", help="send the prompt as is (no chat template)")
    p.add_argument("--stats", action="store_true", help="with -p: print speed figures to stderr")
    _connect_timeout_arg(p)
    from elk.link import REPLY_SILENCE_S, REPLY_TIMEOUT_MAX_S
    from elk.options import cli_float

    p.add_argument("--reply-timeout", type=cli_float(lambda v: 0 < v < REPLY_TIMEOUT_MAX_S,
                                                     f"is outside (0, {REPLY_TIMEOUT_MAX_S:.0f}) seconds"),
                   default=REPLY_SILENCE_S, metavar="SECONDS",
                   help=f"how long the board may stay silent during a reply (default {REPLY_SILENCE_S:g}); a "
                        "long prompt's prefill counts as one silence per 64-token report, or all of it on "
                        "firmware that does not report prefill progress")
    p.set_defaults(func=_chat)

    p = sub.add_parser("status", help="show a board's firmware, slots and running model")
    p.add_argument("--port", required=True)
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--json", action="store_true")
    _connect_timeout_arg(p)
    p.set_defaults(func=_status)

    p = sub.add_parser("demo", help="build, pack, emulate a board, flash it and chat, in one go")
    p.add_argument("--model", help="checkpoint (anything `elk pack` takes; default models/demo/demo.bin)")
    p.add_argument("--tokenizer", help="tokenizer for llama2.c checkpoints")
    p.add_argument("--board", default="host")
    # as elk chat: 0 would build, flash and send the prompt, then print nothing
    p.add_argument("-n", "--max-tokens", type=cli_int(1, 2**32 - 1), default=120,
                   help="most tokens in the reply, 1 to 4294967295 (default 120)")
    p.set_defaults(func=_demo)


def _connect_timeout_arg(p) -> None:
    p.add_argument("--connect-timeout", type=float, metavar="SECONDS",
                   help="how long a board may stay silent before `no answer` (default 3, or "
                        "ELK_CONNECT_TIMEOUT); a board busy checking its image answers and is waited for")


def _emulate(args) -> int:
    from elk.emulate import serve

    return serve(args.board, flash=args.flash, baud=args.baud, threads=args.threads, flash_mb=args.flash_mb)


def _ports(args) -> int:
    from elk.emulate import ports, ports_lines

    listing = ports()
    print(json.dumps(listing, indent=2) if args.json else "\n".join(ports_lines(listing)))
    return 0


def _flash(args) -> int:
    from elk.flash import flash

    results = flash(args.port, args.image, connect_baud=args.connect_baud, baud=args.baud,
                    progress=not args.quiet, check=True, connect_timeout=args.connect_timeout)
    failed = [r for r in results if not r.ok]
    if len(results) == 1 and failed:  # one board: its error is the one line
        print(f"elk: error: {failed[0].port}: {failed[0].error}", file=sys.stderr)
        return 2
    for r in results:
        print(r.summary())
    if failed:
        print(f"elk: error: {len(failed)} of {len(results)} boards failed", file=sys.stderr)
    return 2 if failed else 0


def _chat(args) -> int:
    from elk import chat

    temp = args.temperature if args.temperature is not None else (0.0 if args.prompt is not None else 0.8)
    seed, drawn = chat.choose_seed(args.seed)
    s = chat.Sampling(max_tokens=args.max_tokens, temperature=temp, top_p=args.top_p, top_k=args.top_k,
                      repeat_penalty=args.repeat_penalty, seed=seed, raw=args.raw, seed_drawn=drawn)
    if args.prompt is not None:
        return chat.one_shot(args.port, args.prompt, s, baud=args.baud, stats=args.stats,
                             connect_timeout=args.connect_timeout, reply_timeout=args.reply_timeout)
    return chat.interactive(args.port, s, baud=args.baud, connect_timeout=args.connect_timeout,
                            reply_timeout=args.reply_timeout)


def _status(args) -> int:
    from elk.chat import status

    return status(args.port, baud=args.baud, as_json=args.json, connect_timeout=args.connect_timeout)


def _demo(args) -> int:
    from elk.demo import demo

    return demo(model=args.model, tokenizer=args.tokenizer, board=args.board, max_tokens=args.max_tokens)
