"""`elk` subcommands of the boards area: boards (list), build (SCons for a board), plan (fit/speed)."""

import json


def register(sub) -> None:
    p = sub.add_parser("boards", help="list the boards in boards/*.toml")
    p.add_argument("--json", action="store_true", help="print a JSON list of board objects")
    p.set_defaults(func=_boards)

    p = sub.add_parser("build", help="build libelk and the programs for a board (scons board=NAME)")
    p.add_argument("--board", default="host", help="board name from `elk boards` (default host)")
    p.add_argument("--mode", default="release", choices=("release", "debug", "asan"))
    p.add_argument("-j", "--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
    p.set_defaults(func=_build)

    p = sub.add_parser("plan", help="will an image fit a board (flash, RAM) and how fast will it run")
    p.add_argument("image")
    p.add_argument("--board", required=True, help="board name from `elk boards`")
    p.add_argument("--ctx", type=int, default=None, help="context length in tokens (default: the model's)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_plan)


def _boards(args) -> int:
    from elk import boards

    all_boards = boards.load_all()
    if args.json:
        print(json.dumps([b.as_dict() for b in all_boards], indent=2))
    else:
        for b in all_boards:
            print(f"{b.name:10} {b.summary()}")
    return 0


def _build(args) -> int:
    from elk import boards

    out = boards.build(args.board, args.mode, args.jobs)
    print(f"built {out}")
    return 0


def _plan(args) -> int:
    from elk import plan

    p = plan.plan(args.image, args.board, args.ctx)
    if args.json:
        print(json.dumps(p.as_dict(), indent=2))
    else:
        print("\n".join(plan.report_lines(p)))
    plan.check_fits(p)  # raises PlanError (exit 2) saying by how much it misses
    return 0
