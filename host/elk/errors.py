"""The one family of errors elk raises. The CLI turns any ElkError into one line and exit code 2."""

from elk import spec


class ElkError(Exception):
    """A user-facing failure: bad input, a missing file, a board that does not answer."""


class FormatError(ElkError):
    """An input file (image, checkpoint, tokenizer, board file) is malformed."""


class RuntimeFailure(ElkError):
    """The C runtime returned an error code."""

    def __init__(self, code: int, detail: str = ""):
        self.code = code
        name, message = code_name(code)
        text = f"{message} ({name})"
        super().__init__(f"{detail}: {text}" if detail else text)


def code_name(code: int) -> tuple[str, str]:
    for name, (value, message) in spec.ERRORS.items():
        if value == code:
            return f"ELK_{name}", message
    return f"ELK_E{code}", "unknown error"
