"""`elk` subcommands of the bench area."""


def register(sub) -> None:
    pass
