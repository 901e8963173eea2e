"""`elk` subcommands of the npu area."""


def register(sub) -> None:
    pass
