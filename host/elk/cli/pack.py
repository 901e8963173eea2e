"""`elk` subcommands of the pack area (pack, info, verify, eval)."""


def register(sub) -> None:
    pass
