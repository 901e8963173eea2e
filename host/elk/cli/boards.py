"""`elk` subcommands of the boards area."""


def register(sub) -> None:
    pass
