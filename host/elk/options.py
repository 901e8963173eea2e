"""Command-line option ranges as argparse types for `elk run` (any command may use them): a value out of
range is one usage line naming the option and exit 2 ("elk run: error: argument --top-p: 2 is outside
(0, 1] (1 = off)"). The same ranges as elk.runtime's API checks and elk-run's parser (docs/runtime.md),
stricter where a command-line value could only be a mistake: -n 0 (nothing to generate) and --threads 0
(leave --threads out for all CPUs) are refused, and a seed must be 0..2^64-1 (the API takes it mod 2^64).
No heavy imports: every `elk` command builds its parser with these."""

from __future__ import annotations

import argparse

INT32_MAX = 2**31 - 1
FLT_MAX = 3.4028234663852886e38  # C takes these as float: larger values would become inf
MAX_THREADS = 64  # the posix worker pool's limit (firmware/platform/posix/threads.c)
SEED_MAX = 2**64 - 1


def cli_int(lo: int, hi: int):
    """argparse type: a whole number in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            v = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text} is not a whole number") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{text} is outside [{lo}, {hi}]")
        return v
    return parse


def cli_float(ok, rule: str):
    """argparse type: a finite float (C takes it as float) for which ok(v) holds."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text} is not a number") from None
        if not (v == v and abs(v) <= FLT_MAX and ok(v)):
            raise argparse.ArgumentTypeError(f"{text} {rule}")
        return v
    return parse


CLI_TYPES = {  # option dest -> argparse type, shared by every command that takes the option
    "max_tokens": cli_int(1, INT32_MAX),
    "temperature": cli_float(lambda v: v >= 0, "must be finite and >= 0 (0 = greedy)"),
    "top_k": cli_int(0, INT32_MAX),
    "top_p": cli_float(lambda v: 0 < v <= 1, "is outside (0, 1] (1 = off)"),
    "repeat_penalty": cli_float(lambda v: v > 0, "must be finite and > 0 (1 = off)"),
    "seed": cli_int(0, SEED_MAX),
    "threads": cli_int(1, MAX_THREADS),
    "ctx": cli_int(1, INT32_MAX),  # the model's seq_len is the upper end, checked when it is open
}
