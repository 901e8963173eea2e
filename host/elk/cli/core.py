"""`elk` subcommands of the core area."""


def register(sub) -> None:
    pass
