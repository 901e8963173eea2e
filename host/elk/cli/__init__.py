"""The `elk` command: argument parsing and error reporting only; every command calls a library function.

Each area registers its subcommands from its own module (elk/cli/<area>.py) via `register(sub)`.
"""

import argparse
import os
import sys

# elk computes in libelk's own thread pool; numpy's OpenBLAS worker threads (started when numpy
# loads, spinning for a while) would only compete with it for the cores — they showed up in
# `elk bench` profiles. Set before any area imports numpy; an explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from elk.errors import ElkError  # noqa: E402

# Areas in the order their commands appear in `elk --help`.
AREAS = ("pack", "run", "boards", "link", "npu", "bench", "trust")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (the error and where to look), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="elk", description="edge-LLM deployment kit")
    parser.add_argument("--version", action="version", version=f"elk {__import__('elk').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        importlib.import_module(f"elk.cli.{area}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except ElkError as e:
        print(f"elk: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("elk: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
