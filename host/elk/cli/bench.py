"""`elk` subcommands of the bench area: `elk bench` (speed, bandwidth and memory of an image on this
machine). Argument parsing and printing only; the work is elk.bench.run."""


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure prefill/decode speed, memory bandwidth use and RSS of an image")
    p.add_argument("image", help="model image (.elk)")
    p.add_argument("--threads", "-t", type=int, default=None, help="worker threads (default: all CPUs)")
    p.add_argument("--prompt", "-p", type=int, default=64, help="prompt tokens to prefill (default 64)")
    p.add_argument("--gen", "-n", type=int, default=32, help="tokens to decode (default 32)")
    p.add_argument("--reps", "-r", type=int, default=3, help="repetitions; medians are reported (default 3)")
    p.add_argument("--kernels", default=None, help="force a kernel table (ref, avx2, ...)")
    p.add_argument("--no-probe", action="store_true", help="skip the memory bandwidth probe")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    from elk import bench

    result = bench.run(args.image, threads=args.threads, n_prompt=args.prompt, n_gen=args.gen, reps=args.reps,
                       kernels=args.kernels, probe=not args.no_probe)
    print(result.to_json() if args.json else "\n".join(result.lines()))
    return 0
