"""`elk` subcommands of the trust area."""


def register(sub) -> None:
    pass
