"""`elk` subcommands of the run area (run, tokenize, detokenize)."""


def register(sub) -> None:
    pass
