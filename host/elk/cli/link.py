"""`elk` subcommands of the link area."""


def register(sub) -> None:
    pass
